//! Fuzzes the socket front door (`signaling::wire`): the `/rtc` frame parser (`parse`) and the
//! Socket.IO event parser (`parse_seed_event`). No input may panic, and what they return keeps
//! the promises the transports rely on:
//! - the echoed `id` is exactly the frame's `id` when that is a string or a number, else none;
//! - a refusal is an `Invalid` error with one of the documented codes (the right one for a
//!   frame that is not JSON, not an object, or has a missing/unknown `type`), a non-empty
//!   message, and an error frame that serializes;
//! - an accepted request is the kind its `type`/event names; its ids are canonical UUIDs, its
//!   user ids valid, its SDPs and candidates pass `check_sdp`/`check_candidate`, its strings
//!   are within their bounds, and it is a fixed point: written back to the wire and parsed
//!   again, it comes out identical.
//!
//! Input: the whole input is parsed as a `/rtc` frame. When it contains a newline, the first
//! line is also taken as a Socket.IO event name and the rest, when it is JSON, as its payload.
//! Set `RTC_WIRE_TRACE=1` to print what each input parses to when replaying it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};
use signalbox::auth::validate_user_id;
use signalbox::error::Error;
use signalbox::signaling::wire::{
    check_candidate, check_sdp, parse, parse_id, parse_seed_event, sdp_type, AnswerStyle, CallRef,
    Invite, Request, SEED_EVENTS, TYPES,
};

/// AddressSanitizer options built in, so a plain `cargo fuzz run rtc_wire` works. The signalbox
/// crate links SQLite, whose C amalgamation cc compiles with gcc's `-fsanitize=address`; gcc
/// registers its two function-local `static const aiOff[]` tables (internal linkage, so no ODR
/// applies) in a way LLVM's runtime reports as an `odr-violation` at start-up. Only that check
/// is turned off; every other ASan check stays on.
#[no_mangle]
pub extern "C" fn __asan_default_options() -> *const std::ffi::c_char {
    c"detect_odr_violation=0".as_ptr()
}

/// The codes the module documents for refused input.
const CODES: &[&str] = &[
    "invalid_json",
    "invalid_message",
    "unknown_type",
    "invalid_field",
    "invalid_id",
];

/// Which transport a request came on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Via {
    Rtc,
    Seed,
}

fn check_refusal(e: &Error, id: Option<&Value>) {
    let Error::Invalid { code, message } = e else {
        panic!("input is refused as invalid, not {e:?}");
    };
    assert!(CODES.contains(code), "undocumented code {code}");
    assert_eq!(e.code(), *code);
    assert!(!message.is_empty(), "an error says what is wrong");
    // The error frame /rtc sends (http::rtc::error_frame) and the Socket.IO ack body.
    let mut frame = json!({ "type": "error", "code": e.code(), "message": e.to_string() });
    if let Some(id) = id {
        frame["id"] = id.clone();
    }
    let back: Value = serde_json::from_str(&frame.to_string()).expect("error frames are JSON");
    assert_eq!(back, frame);
}

/// Ids come out canonical: lower-case hyphenated UUIDs (checked here independently of the
/// parser's own `parse_id`, which must also accept them unchanged).
fn check_uuid(id: &str) {
    let canonical = id.len() == 36
        && id.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_digit() || ('a'..='f').contains(&c),
        });
    assert!(canonical, "id {id:?} is not a canonical UUID");
    assert_eq!(parse_id(id, "id").as_deref(), Ok(id));
}

fn check_user(u: &str) {
    assert_eq!(validate_user_id(u), Ok(()), "user id {u:?}");
}

fn check_session_description(sdp: &Value) {
    assert!(check_sdp(sdp, "sdp").is_ok(), "accepted SDP {sdp}");
    let kind = sdp_type(sdp);
    assert!(
        matches!(kind, "offer" | "answer" | "pranswer" | "rollback"),
        "accepted SDP type {sdp}"
    );
    assert!(
        kind == "rollback" || sdp.get("sdp").is_some_and(Value::is_string),
        "an SDP other than a rollback has its text: {sdp}"
    );
}

/// `to` is the request's `to` field, `None` for a request without one (hangup).
fn check_call(call: &CallRef, to: Option<Option<&String>>, from: Via) {
    match call {
        CallRef::Id(id) => check_uuid(id),
        CallRef::With(u) => {
            assert_eq!(from, Via::Seed, "/rtc always names the call");
            check_user(u);
            if let Some(to) = to {
                assert_eq!(to, Some(u), "a call named by peer is the `to` one");
            }
        }
    }
}

/// The field promises of an accepted request.
fn check_request(req: &Request, from: Via) {
    let to_ok = |to: &Option<String>| to.iter().for_each(|t| check_user(t));
    match req {
        Request::Ping | Request::RoomJoin { .. } | Request::RoomLeave { .. } => {
            assert_eq!(from, Via::Rtc)
        }
        Request::Invite(Invite {
            to,
            sdp,
            room_name,
            existing,
            ..
        }) => {
            check_user(to);
            if let Some(sdp) = sdp {
                assert_eq!(from, Via::Rtc, "webrtc:call carries no SDP");
                check_session_description(sdp);
            }
            if let Some(r) = room_name {
                assert!(r.chars().count() <= 100, "room name bound");
                assert!(!r.trim().is_empty(), "a blank room name is no room name");
            }
            existing.iter().for_each(|c| check_uuid(c));
        }
        Request::Accept { call_id } | Request::SfuLeave { call_id } => {
            assert_eq!(from, Via::Rtc);
            check_uuid(call_id);
        }
        Request::SfuView {
            call_id,
            tiles,
            max_bitrate,
        } => {
            assert_eq!(from, Via::Rtc);
            check_uuid(call_id);
            assert!(
                tiles.len() <= signalbox::signaling::wire::MAX_TILES,
                "tile count bound"
            );
            for (peer, width) in tiles {
                check_user(peer);
                assert!(
                    *width <= signalbox::signaling::wire::MAX_TILE_SIDE,
                    "tile side bound"
                );
            }
            assert!(
                max_bitrate
                    .is_none_or(|b| signalbox::signaling::wire::MAX_BITRATE_RANGE.contains(&b)),
                "a receive cap in range"
            );
        }
        Request::Stats { call_id, stats } => {
            assert_eq!(from, Via::Rtc);
            check_uuid(call_id);
            assert!(stats.is_object(), "stats are an object");
        }
        Request::Reject { call_id, reason } => {
            assert_eq!(from, Via::Rtc);
            check_uuid(call_id);
            assert!(reason.as_ref().is_none_or(|r| r.chars().count() <= 200));
        }
        Request::Answer {
            call,
            sdp,
            to,
            style,
        } => {
            check_call(call, Some(to.as_ref()), from);
            check_session_description(sdp);
            to_ok(to);
            let expected = match from {
                Via::Rtc => AnswerStyle::Rtc,
                Via::Seed => AnswerStyle::Seed,
            };
            assert_eq!(*style, expected);
            if from == Via::Rtc {
                assert_eq!(*to, None, "call-answer has no `to`");
            }
        }
        Request::Offer { call, sdp, to } => {
            assert_eq!(from, Via::Seed, "only webrtc:offer is an Offer");
            check_call(call, Some(to.as_ref()), from);
            check_session_description(sdp);
            to_ok(to);
        }
        Request::Candidate {
            call,
            candidate,
            to,
        } => {
            check_call(call, Some(to.as_ref()), from);
            assert!(check_candidate(candidate).is_ok(), "candidate {candidate}");
            assert!(
                candidate.is_null() || candidate.get("candidate").is_some_and(Value::is_string),
                "a candidate is null or an RTCIceCandidateInit: {candidate}"
            );
            to_ok(to);
        }
        Request::SdpUpdate { call_id, sdp, to } => {
            assert_eq!(from, Via::Rtc);
            check_uuid(call_id);
            check_session_description(sdp);
            to_ok(to);
        }
        Request::Hangup { call } => check_call(call, None, from),
        Request::Media { call_id, change } => {
            assert_eq!(from, Via::Rtc);
            check_uuid(call_id);
            assert!(!change.is_empty(), "a media change changes something");
            assert!(change
                .camera
                .as_ref()
                .is_none_or(|c| c.chars().count() <= 200));
        }
    }
}

/// An object of the given fields, leaving out the absent ones.
fn fields(pairs: &[(&str, Option<Value>)]) -> Map<String, Value> {
    pairs
        .iter()
        .filter_map(|(k, v)| v.clone().map(|v| ((*k).to_string(), v)))
        .collect()
}

fn s(v: &Option<String>) -> Option<Value> {
    v.clone().map(Value::String)
}

fn call_id(call: &CallRef) -> Option<Value> {
    match call {
        CallRef::Id(id) => Some(Value::String(id.clone())),
        CallRef::With(_) => None,
    }
}

/// An accepted `/rtc` request written back as a frame.
fn to_rtc(req: &Request) -> Value {
    let id = |c: &str| Some(Value::String(c.to_string()));
    let (kind, body) = match req {
        Request::Ping => ("ping", Map::new()),
        Request::Invite(i) => (
            "call-initiate",
            fields(&[
                ("to", id(&i.to)),
                ("callType", i.call_type.map(|t| t.as_str().into())),
                ("sdp", i.sdp.clone()),
                ("roomName", s(&i.room_name)),
                ("callId", s(&i.existing)),
            ]),
        ),
        Request::Accept { call_id } => ("call-accept", fields(&[("callId", id(call_id))])),
        Request::Reject { call_id, reason } => (
            "call-reject",
            fields(&[("callId", id(call_id)), ("reason", s(reason))]),
        ),
        Request::Answer { call, sdp, .. } => (
            "call-answer",
            fields(&[("callId", call_id(call)), ("sdp", Some(sdp.clone()))]),
        ),
        Request::Candidate {
            call,
            candidate,
            to,
        } => (
            "ice-candidate",
            fields(&[
                ("callId", call_id(call)),
                ("candidate", Some(candidate.clone())),
                ("to", s(to)),
            ]),
        ),
        Request::SdpUpdate { call_id, sdp, to } => (
            "call-sdp-update",
            fields(&[
                ("callId", id(call_id)),
                ("sdp", Some(sdp.clone())),
                ("to", s(to)),
            ]),
        ),
        Request::Hangup { call } => ("call-hangup", fields(&[("callId", call_id(call))])),
        Request::Media { call_id, change } => (
            "media-state",
            fields(&[
                ("callId", id(call_id)),
                ("audio", change.audio.map(Value::Bool)),
                ("video", change.video.map(Value::Bool)),
                ("screen", change.screen.map(Value::Bool)),
                ("camera", s(&change.camera)),
            ]),
        ),
        Request::Stats { call_id, stats } => (
            "call-stats",
            fields(&[("callId", id(call_id)), ("stats", Some(stats.clone()))]),
        ),
        Request::RoomJoin { room_id } => ("room-join", fields(&[("roomId", id(room_id))])),
        Request::RoomLeave { room_id } => ("room-leave", fields(&[("roomId", id(room_id))])),
        Request::SfuLeave { call_id } => ("sfu-leave", fields(&[("callId", id(call_id))])),
        Request::SfuView {
            call_id,
            tiles,
            max_bitrate,
        } => {
            // Height is not kept; the width alone sizes a tile.
            let tiles = tiles
                .iter()
                .map(|(peer, width)| serde_json::json!({"peerId": peer, "width": width, "height": 0}))
                .collect();
            (
                "sfu-view",
                fields(&[
                    ("callId", id(call_id)),
                    ("tiles", Some(Value::Array(tiles))),
                    ("maxBitrate", max_bitrate.map(Value::from)),
                ]),
            )
        }
        Request::Offer { .. } => unreachable!("checked: /rtc makes no Offer"),
    };
    let mut frame = body;
    frame.insert("type".into(), kind.into());
    Value::Object(frame)
}

/// An accepted Socket.IO request written back as an event and its payload.
fn to_seed(req: &Request) -> (&'static str, Value) {
    let (event, body) = match req {
        Request::Invite(i) => (
            "webrtc:call",
            fields(&[
                ("to", Some(Value::String(i.to.clone()))),
                ("callType", i.call_type.map(|t| t.as_str().into())),
                ("room_name", s(&i.room_name)),
                ("callId", s(&i.existing)),
            ]),
        ),
        Request::Offer { call, sdp, to } => (
            "webrtc:offer",
            fields(&[
                ("callId", call_id(call)),
                ("sdp", Some(sdp.clone())),
                ("to", s(to)),
            ]),
        ),
        Request::Answer { call, sdp, to, .. } => (
            "webrtc:answer",
            fields(&[
                ("callId", call_id(call)),
                ("sdp", Some(sdp.clone())),
                ("to", s(to)),
            ]),
        ),
        Request::Candidate {
            call,
            candidate,
            to,
        } => (
            "webrtc:ice-candidate",
            fields(&[
                ("callId", call_id(call)),
                ("candidate", Some(candidate.clone())),
                ("to", s(to)),
            ]),
        ),
        Request::Hangup { call } => {
            let to = match call {
                CallRef::With(u) => Some(Value::String(u.clone())),
                CallRef::Id(_) => None,
            };
            (
                "webrtc:end-call",
                fields(&[("callId", call_id(call)), ("to", to)]),
            )
        }
        other => unreachable!("checked: no Socket.IO event makes {other:?}"),
    };
    (event, Value::Object(body))
}

/// The `/rtc` type an accepted request answers to.
fn rtc_type(req: &Request) -> &'static str {
    match req {
        Request::Ping => "ping",
        Request::Invite(_) => "call-initiate",
        Request::Accept { .. } => "call-accept",
        Request::Reject { .. } => "call-reject",
        Request::Answer { .. } => "call-answer",
        Request::Candidate { .. } => "ice-candidate",
        Request::SdpUpdate { .. } => "call-sdp-update",
        Request::Hangup { .. } => "call-hangup",
        Request::Media { .. } => "media-state",
        Request::Stats { .. } => "call-stats",
        Request::RoomJoin { .. } => "room-join",
        Request::RoomLeave { .. } => "room-leave",
        Request::SfuLeave { .. } => "sfu-leave",
        Request::SfuView { .. } => "sfu-view",
        Request::Offer { .. } => "(offer)",
    }
}

/// The Socket.IO event an accepted request answers to.
fn seed_event(req: &Request) -> &'static str {
    match req {
        Request::Invite(_) => "webrtc:call",
        Request::Offer { .. } => "webrtc:offer",
        Request::Answer { .. } => "webrtc:answer",
        Request::Candidate { .. } => "webrtc:ice-candidate",
        Request::Hangup { .. } => "webrtc:end-call",
        _ => "(not an event)",
    }
}

fn trace() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("RTC_WIRE_TRACE").is_some())
}

fn fuzz_rtc(text: &str) {
    let frame = parse(text);
    if trace() {
        eprintln!("/rtc: {frame:?}");
    }
    let value: Result<Value, _> = serde_json::from_str(text);
    let expected_id = value
        .as_ref()
        .ok()
        .and_then(|v| v.get("id"))
        .filter(|v| v.is_string() || v.is_number());
    assert_eq!(
        frame.id.as_ref(),
        expected_id,
        "the frame's own string or number id is echoed, nothing else"
    );
    // The refusals decided before any field is looked at.
    let kind = match &value {
        Err(_) => Err("invalid_json"),
        Ok(Value::Object(m)) => match m.get("type") {
            Some(Value::String(t)) if TYPES.contains(&t.as_str()) => Ok(t.as_str()),
            Some(Value::String(_)) => Err("unknown_type"),
            _ => Err("invalid_message"),
        },
        Ok(_) => Err("invalid_message"),
    };
    match (&frame.request, kind) {
        (Err(e), Err(code)) => {
            check_refusal(e, frame.id.as_ref());
            assert_eq!(e.code(), code, "{e}");
        }
        (Ok(req), Err(code)) => panic!("accepted {req:?}, expected {code}"),
        (Err(e), Ok(_)) => {
            check_refusal(e, frame.id.as_ref());
            assert!(
                matches!(e.code(), "invalid_field" | "invalid_id"),
                "a known type is refused for its fields: {e:?}"
            );
        }
        (Ok(req), Ok(t)) => {
            assert_eq!(rtc_type(req), t, "the request is the type the frame names");
            check_request(req, Via::Rtc);
            let again = parse(&to_rtc(req).to_string());
            assert_eq!(
                again.request.as_ref(),
                Ok(req),
                "accepted requests are fixed points"
            );
        }
    }
}

fn fuzz_seed(event: &str, payload: Value) {
    let known = SEED_EVENTS.contains(&event);
    let object = payload.is_object();
    let parsed = parse_seed_event(event, payload);
    if trace() {
        eprintln!("{event}: {parsed:?}");
    }
    match parsed {
        Err(e) => {
            check_refusal(&e, None);
            let expected: &[&str] = match (known, object) {
                (false, _) => &["unknown_type"],
                (true, false) => &["invalid_message"],
                (true, true) => &["invalid_field", "invalid_id"],
            };
            assert!(expected.contains(&e.code()), "{event}: {e:?}");
        }
        Ok(req) => {
            assert!(known && object, "accepted {event}");
            assert_eq!(seed_event(&req), event, "the request is the event's kind");
            check_request(&req, Via::Seed);
            let (event, payload) = to_seed(&req);
            let again = parse_seed_event(event, payload);
            assert_eq!(
                again.as_ref(),
                Ok(&req),
                "accepted requests are fixed points"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    fuzz_rtc(text);
    if let Some((event, payload)) = text.split_once('\n') {
        if let Ok(payload) = serde_json::from_str::<Value>(payload) {
            fuzz_seed(event, payload);
        }
    }
});
