//! The one front door for socket input: `/rtc` JSON text frames ([`parse`]) and seed 000's
//! Socket.IO events ([`parse_seed_event`]) both become a validated [`Request`], with the same
//! checks and the same error codes (`invalid_json`, `invalid_message`, `unknown_type`,
//! `invalid_field`, `invalid_id`) whichever transport they came on. REST path ids go through
//! [`parse_id`] too.

use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::auth::validate_user_id;
use crate::error::Error;
use crate::signaling::call::{room_name, CallType, MediaChange};

/// The `/rtc` messages a client may send (seed 001 plus rooms), as they are on the wire.
/// Every variant may also carry an `id` (see [`Frame`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", rename_all_fields = "camelCase")]
pub enum ClientMessage {
    CallInitiate {
        to: String,
        call_type: Option<CallType>,
        sdp: Option<Value>,
        room_name: Option<String>,
        call_id: Option<String>,
    },
    CallAccept {
        call_id: String,
    },
    CallReject {
        call_id: String,
        reason: Option<String>,
    },
    CallAnswer {
        call_id: String,
        sdp: Value,
    },
    IceCandidate {
        call_id: String,
        /// `null` marks the end of candidates, but the field must be present.
        candidate: Value,
        to: Option<String>,
    },
    CallSdpUpdate {
        call_id: String,
        sdp: Value,
        to: Option<String>,
    },
    CallHangup {
        call_id: String,
    },
    MediaState {
        call_id: String,
        audio: Option<bool>,
        video: Option<bool>,
        screen: Option<bool>,
        camera: Option<String>,
    },
    CallStats {
        call_id: String,
        stats: Value,
    },
    Ping {},
    RoomJoin {
        room_id: String,
    },
    RoomLeave {
        room_id: String,
    },
    SfuLeave {
        call_id: String,
    },
    SfuView {
        call_id: String,
        #[serde(default)]
        tiles: Vec<Tile>,
        max_bitrate: Option<u64>,
    },
}

/// Every message type a `/rtc` client may send.
pub const TYPES: &[&str] = &[
    "call-initiate",
    "call-accept",
    "call-reject",
    "call-answer",
    "ice-candidate",
    "call-sdp-update",
    "call-hangup",
    "media-state",
    "call-stats",
    "ping",
    "room-join",
    "room-leave",
    "sfu-leave",
    "sfu-view",
];

/// Every seed 000 event a Socket.IO client may emit.
pub const SEED_EVENTS: &[&str] = &[
    "webrtc:call",
    "webrtc:offer",
    "webrtc:answer",
    "webrtc:ice-candidate",
    "webrtc:end-call",
];

/// A call invitation (`call-initiate` / `webrtc:call`), validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Invite {
    pub to: String,
    pub call_type: Option<CallType>,
    /// The caller's offer, when it comes with the invitation.
    pub sdp: Option<Value>,
    pub room_name: Option<String>,
    /// An existing call (created over REST) to ring instead of creating one.
    pub existing: Option<String>,
}

/// Which call a request is about: its id, or (seed 000 events may omit `callId`) the live
/// 1:1 call with another user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallRef {
    Id(String),
    With(String),
}

/// What an answer on an already active call is forwarded as: `/rtc`'s `call-answer` stays a
/// `call-answer`; seed 000's `webrtc:answer` is a renegotiation (`call-sdp-update`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerStyle {
    Rtc,
    Seed,
}

/// A socket request after parsing and validation, whichever transport it came on. Ids are
/// canonical UUIDs, SDPs and candidates have their browser shapes, strings are bounded.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Ping,
    Invite(Invite),
    Accept {
        call_id: String,
    },
    Reject {
        call_id: String,
        reason: Option<String>,
    },
    /// An SDP answer: accepts a ringing call when the callee sends it.
    Answer {
        call: CallRef,
        sdp: Value,
        to: Option<String>,
        style: AnswerStyle,
    },
    /// Seed 000's `webrtc:offer`: a callee offering while the call rings accepts it.
    Offer {
        call: CallRef,
        sdp: Value,
        to: Option<String>,
    },
    Candidate {
        call: CallRef,
        candidate: Value,
        to: Option<String>,
    },
    SdpUpdate {
        call_id: String,
        sdp: Value,
        to: Option<String>,
    },
    Hangup {
        call: CallRef,
    },
    Media {
        call_id: String,
        change: MediaChange,
    },
    Stats {
        call_id: String,
        stats: Value,
    },
    RoomJoin {
        room_id: String,
    },
    RoomLeave {
        room_id: String,
    },
    /// The sender's SFU connection in the room call ends (it stays in the room).
    SfuLeave {
        call_id: String,
    },
    /// What the sender shows of the others through the SFU, and the most it wants to receive.
    SfuView {
        call_id: String,
        /// Peer id → tile width in device pixels (0: not shown).
        tiles: Vec<(String, u32)>,
        max_bitrate: Option<u64>,
    },
}

/// One tile of an `sfu-view`: the size in device pixels a peer's video is shown at.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tile {
    pub peer_id: String,
    pub width: u32,
    pub height: u32,
}

/// The most tiles an `sfu-view` may name (rooms hold at most 16 peers).
pub const MAX_TILES: usize = 64;
/// The largest tile side taken (8K).
pub const MAX_TILE_SIDE: u32 = 8192;
/// The range a receive cap must be in, bits/s.
pub const MAX_BITRATE_RANGE: std::ops::RangeInclusive<u64> = 10_000..=1_000_000_000;

/// A parsed `/rtc` frame: the request id to echo (if any) and the request or why it was refused.
#[derive(Debug)]
pub struct Frame {
    pub id: Option<Value>,
    pub request: Result<Request, Error>,
}

/// Checks that an id is a UUID and returns its canonical form; the error names the field.
pub fn parse_id(raw: &str, name: &str) -> Result<String, Error> {
    Uuid::parse_str(raw)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| Error::invalid("invalid_id", format!("{name}: `{raw}` is not a UUID")))
}

/// Checks a user id field.
pub fn user_field(value: &str, field: &str) -> Result<String, Error> {
    validate_user_id(value)
        .map(|_| value.to_string())
        .map_err(|m| Error::invalid("invalid_field", format!("{field}: {m}")))
}

fn serde_error(e: serde_path_to_error::Error<serde_json::Error>) -> Error {
    let path = e.path().to_string();
    let field = path.split_once('.').map(|(_, f)| f).unwrap_or("");
    let inner = e.into_inner();
    if field.is_empty() || field == "?" {
        Error::invalid("invalid_field", inner.to_string())
    } else {
        Error::invalid("invalid_field", format!("{field}: {inner}"))
    }
}

/// Parses one `/rtc` text frame.
pub fn parse(text: &str) -> Frame {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return Frame {
                id: None,
                request: Err(Error::invalid(
                    "invalid_json",
                    format!("the frame is not JSON: {e}"),
                )),
            }
        }
    };
    let Value::Object(mut map) = value else {
        return Frame {
            id: None,
            request: Err(Error::invalid(
                "invalid_message",
                "a frame must be a JSON object",
            )),
        };
    };
    let id = map.remove("id").filter(|v| v.is_string() || v.is_number());
    let request = match map.remove("type") {
        None => Err(Error::invalid("invalid_message", "type: missing")),
        Some(Value::String(t)) if !TYPES.contains(&t.as_str()) => Err(Error::invalid(
            "unknown_type",
            format!("type: `{t}` is not a known message type"),
        )),
        Some(Value::String(t)) => {
            // Externally tagged form `{"<type>": {fields}}`, so the error path names the field.
            let tagged = Value::Object([(t, Value::Object(map))].into_iter().collect());
            serde_path_to_error::deserialize(tagged)
                .map_err(serde_error)
                .and_then(validate)
        }
        Some(_) => Err(Error::invalid("invalid_message", "type: must be a string")),
    };
    Frame { id, request }
}

fn bounded(value: Option<String>, field: &str, max: usize) -> Result<Option<String>, Error> {
    match value {
        Some(v) if v.chars().count() > max => Err(Error::invalid(
            "invalid_field",
            format!("{field}: at most {max} characters"),
        )),
        other => Ok(other),
    }
}

fn optional_user(to: Option<String>, field: &str) -> Result<Option<String>, Error> {
    to.map(|t| user_field(&t, field)).transpose()
}

fn invite(
    to: String,
    call_type: Option<CallType>,
    sdp: Option<Value>,
    room: Option<String>,
    existing: Option<String>,
    room_field: &str,
) -> Result<Invite, Error> {
    let to = user_field(&to, "to")?;
    if let Some(sdp) = &sdp {
        check_sdp(sdp, "sdp")?;
    }
    Ok(Invite {
        to,
        call_type,
        sdp,
        room_name: room_name(room, room_field)?,
        existing: existing.map(|id| parse_id(&id, "callId")).transpose()?,
    })
}

/// An `sfu-view`'s tiles as peer id → width, checked.
fn view_tiles(tiles: Vec<Tile>) -> Result<Vec<(String, u32)>, Error> {
    if tiles.len() > MAX_TILES {
        return Err(Error::invalid(
            "invalid_field",
            format!("tiles: at most {MAX_TILES}"),
        ));
    }
    tiles
        .into_iter()
        .map(|t| {
            if t.width > MAX_TILE_SIDE || t.height > MAX_TILE_SIDE {
                return Err(Error::invalid(
                    "invalid_field",
                    format!("tiles: width and height must be 0..={MAX_TILE_SIDE}"),
                ));
            }
            Ok((user_field(&t.peer_id, "tiles.peerId")?, t.width))
        })
        .collect()
}

/// Checks what serde cannot: id formats, SDP and candidate shapes, string bounds.
fn validate(msg: ClientMessage) -> Result<Request, Error> {
    let id = |raw: String| parse_id(&raw, "callId");
    Ok(match msg {
        ClientMessage::Ping {} => Request::Ping,
        ClientMessage::CallInitiate {
            to,
            call_type,
            sdp,
            room_name,
            call_id,
        } => Request::Invite(invite(to, call_type, sdp, room_name, call_id, "roomName")?),
        ClientMessage::CallAccept { call_id } => Request::Accept {
            call_id: id(call_id)?,
        },
        ClientMessage::CallReject { call_id, reason } => Request::Reject {
            call_id: id(call_id)?,
            reason: reason.map(|r| r.chars().take(200).collect()),
        },
        ClientMessage::CallAnswer { call_id, sdp } => {
            check_sdp(&sdp, "sdp")?;
            Request::Answer {
                call: CallRef::Id(id(call_id)?),
                sdp,
                to: None,
                style: AnswerStyle::Rtc,
            }
        }
        ClientMessage::IceCandidate {
            call_id,
            candidate,
            to,
        } => {
            check_candidate(&candidate)?;
            Request::Candidate {
                call: CallRef::Id(id(call_id)?),
                candidate,
                to: optional_user(to, "to")?,
            }
        }
        ClientMessage::CallSdpUpdate { call_id, sdp, to } => {
            check_sdp(&sdp, "sdp")?;
            Request::SdpUpdate {
                call_id: id(call_id)?,
                sdp,
                to: optional_user(to, "to")?,
            }
        }
        ClientMessage::CallHangup { call_id } => Request::Hangup {
            call: CallRef::Id(id(call_id)?),
        },
        ClientMessage::MediaState {
            call_id,
            audio,
            video,
            screen,
            camera,
        } => {
            let change = MediaChange {
                audio,
                video,
                screen,
                camera: bounded(camera, "camera", 200)?,
            };
            if change.is_empty() {
                return Err(Error::invalid(
                    "invalid_field",
                    "media-state needs at least one of audio, video, screen, camera",
                ));
            }
            Request::Media {
                call_id: id(call_id)?,
                change,
            }
        }
        ClientMessage::CallStats { call_id, stats } => {
            if !stats.is_object() {
                return Err(Error::invalid("invalid_field", "stats: must be an object"));
            }
            Request::Stats {
                call_id: id(call_id)?,
                stats,
            }
        }
        ClientMessage::RoomJoin { room_id } => Request::RoomJoin {
            room_id: parse_id(&room_id, "roomId")?,
        },
        ClientMessage::RoomLeave { room_id } => Request::RoomLeave {
            room_id: parse_id(&room_id, "roomId")?,
        },
        ClientMessage::SfuLeave { call_id } => Request::SfuLeave {
            call_id: id(call_id)?,
        },
        ClientMessage::SfuView {
            call_id,
            tiles,
            max_bitrate,
        } => Request::SfuView {
            call_id: id(call_id)?,
            tiles: view_tiles(tiles)?,
            max_bitrate: match max_bitrate {
                Some(b) if !MAX_BITRATE_RANGE.contains(&b) => {
                    return Err(Error::invalid(
                        "invalid_field",
                        format!(
                            "maxBitrate: must be null or {}..={} bits/s",
                            MAX_BITRATE_RANGE.start(),
                            MAX_BITRATE_RANGE.end()
                        ),
                    ))
                }
                b => b,
            },
        },
    })
}

/// Seed 000's payloads, as they are on the wire (unknown fields are ignored, as Socket.IO
/// servers do).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SeedPayload {
    to: Option<String>,
    call_id: Option<String>,
    call_type: Option<CallType>,
    #[serde(rename = "room_name")]
    room_name: Option<String>,
    sdp: Option<Value>,
    /// Present (possibly `null`) on `webrtc:ice-candidate`.
    #[serde(default, deserialize_with = "present")]
    candidate: Option<Value>,
}

/// Distinguishes a field set to `null` (`Some(Null)`) from a missing one (`None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Parses one seed 000 Socket.IO event (`webrtc:*`) and its payload.
pub fn parse_seed_event(event: &str, data: Value) -> Result<Request, Error> {
    if !SEED_EVENTS.contains(&event) {
        return Err(Error::invalid(
            "unknown_type",
            format!("`{event}` is not a known event"),
        ));
    }
    let Value::Object(map) = data else {
        return Err(Error::invalid(
            "invalid_message",
            "the payload must be an object",
        ));
    };
    let p: SeedPayload = serde_path_to_error::deserialize(Value::Object(map)).map_err(|e| {
        let path = e.path().to_string();
        Error::invalid("invalid_field", format!("{path}: {}", e.into_inner()))
    })?;
    let to = optional_user(p.to, "to")?;
    let call = || -> Result<CallRef, Error> {
        match (&p.call_id, &to) {
            (Some(id), _) => Ok(CallRef::Id(parse_id(id, "callId")?)),
            (None, Some(to)) => Ok(CallRef::With(to.clone())),
            (None, None) => Err(Error::invalid(
                "invalid_field",
                "callId: missing (or give `to`, the other side of a live call)",
            )),
        }
    };
    let sdp = || -> Result<Value, Error> {
        let sdp = p.sdp.clone().unwrap_or(Value::Null);
        check_sdp(&sdp, "sdp")?;
        Ok(sdp)
    };
    Ok(match event {
        "webrtc:call" => {
            let callee = to
                .clone()
                .ok_or_else(|| Error::invalid("invalid_field", "to: missing"))?;
            Request::Invite(invite(
                callee,
                p.call_type,
                None,
                p.room_name.clone(),
                p.call_id.clone(),
                "room_name",
            )?)
        }
        "webrtc:offer" => Request::Offer {
            call: call()?,
            sdp: sdp()?,
            to,
        },
        "webrtc:answer" => Request::Answer {
            call: call()?,
            sdp: sdp()?,
            to,
            style: AnswerStyle::Seed,
        },
        "webrtc:ice-candidate" => {
            let candidate = p.candidate.clone().unwrap_or(Value::Null);
            check_candidate(&candidate)?;
            Request::Candidate {
                call: call()?,
                candidate,
                to,
            }
        }
        _ => Request::Hangup { call: call()? },
    })
}

/// Checks an `RTCSessionDescriptionInit`: `{type: offer|answer|pranswer|rollback, sdp: string}`.
pub fn check_sdp(sdp: &Value, field: &str) -> Result<(), Error> {
    let kind = sdp.get("type").and_then(Value::as_str);
    let ok_type = matches!(kind, Some("offer" | "answer" | "pranswer" | "rollback"));
    let ok_sdp = kind == Some("rollback") || sdp.get("sdp").is_some_and(Value::is_string);
    if ok_type && ok_sdp {
        Ok(())
    } else {
        Err(Error::invalid(
            "invalid_field",
            format!("{field}: must be a session description {{type: offer|answer|pranswer|rollback, sdp: string}}"),
        ))
    }
}

/// The SDP's type (`offer`, `answer`, …).
pub fn sdp_type(sdp: &Value) -> &str {
    sdp.get("type").and_then(Value::as_str).unwrap_or("")
}

/// Checks an `RTCIceCandidateInit` (an object with a string `candidate`) or `null`.
pub fn check_candidate(c: &Value) -> Result<(), Error> {
    match c {
        Value::Null => Ok(()),
        Value::Object(m) if m.get("candidate").is_some_and(Value::is_string) => Ok(()),
        _ => Err(Error::invalid(
            "invalid_field",
            "candidate: must be an RTCIceCandidateInit object or null",
        )),
    }
}

/// A JSON object from fields (helper for building event bodies).
pub fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CALL: &str = "5f0c8a52-3b1e-4c8e-9a57-0d2b8f6c1e11";

    #[test]
    fn parses_every_type_with_its_id() {
        let f = parse(
            r#"{"type":"call-initiate","id":7,"to":"bob","callType":"audio","sdp":{"type":"offer","sdp":"v=0"}}"#,
        );
        assert_eq!(f.id, Some(json!(7)));
        match f.request.expect("valid") {
            Request::Invite(Invite {
                to, call_type, sdp, ..
            }) => {
                assert_eq!(to, "bob");
                assert_eq!(call_type, Some(CallType::Audio));
                assert!(sdp.is_some());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse(r#"{"type":"ping"}"#).request.expect("ping"),
            Request::Ping
        );
        let f = parse(&format!(
            r#"{{"type":"ice-candidate","callId":"{}","candidate":null}}"#,
            CALL.to_uppercase()
        ));
        assert_eq!(
            f.request.expect("candidate"),
            Request::Candidate {
                call: CallRef::Id(CALL.into()),
                candidate: Value::Null,
                to: None
            },
            "ids come out canonical"
        );
    }

    #[test]
    fn bad_frames_say_what_is_wrong() {
        let code = |t: &str| parse(t).request.expect_err("invalid").code();
        assert_eq!(code("nope"), "invalid_json");
        assert_eq!(code("[1]"), "invalid_message");
        assert_eq!(code(r#"{"to":"bob"}"#), "invalid_message");
        assert_eq!(code(r#"{"type":"call-teleport"}"#), "unknown_type");
        assert_eq!(code(r#"{"type":5}"#), "invalid_message");
        assert_eq!(code(r#"{"type":"call-accept","callId":"x"}"#), "invalid_id");
        assert_eq!(code(r#"{"type":"room-join","roomId":"x"}"#), "invalid_id");
        assert_eq!(
            code(r#"{"type":"call-initiate","to":"a b"}"#),
            "invalid_field"
        );
        let err = parse(r#"{"type":"call-accept","id":"a1"}"#);
        assert_eq!(
            err.id,
            Some(json!("a1")),
            "the id is echoed even when the message is refused"
        );
        assert!(err
            .request
            .expect_err("missing")
            .to_string()
            .contains("callId"));
        let err = parse(r#"{"type":"call-initiate","to":42}"#)
            .request
            .expect_err("type");
        assert!(err.to_string().starts_with("to:"), "{err}");
        let err = parse(&format!(r#"{{"type":"ice-candidate","callId":"{CALL}"}}"#))
            .request
            .expect_err("missing candidate");
        assert!(err.to_string().contains("candidate"), "{err}");
        let err = parse(&format!(r#"{{"type":"media-state","callId":"{CALL}"}}"#))
            .request
            .expect_err("empty media change");
        assert_eq!(err.code(), "invalid_field");
    }

    #[test]
    fn numeric_ids_are_echoed_exactly() {
        // Found by fuzz/fuzz_targets/rtc_wire.rs: serde_json's default float parsing is not
        // correctly rounded, so a numeric id with an exponent (or past u64) came back as a
        // neighbouring number and the client could not match the answer to its request.
        for raw in [
            "1.1111111111113113e+75",
            "1111111111111111111111",
            "1.1111111111111111e21",
            "0.30000000000000004",
            "7",
        ] {
            let exact: f64 = raw.parse().expect("a number");
            let f = parse(&format!(r#"{{"type":"ping","id":{raw}}}"#));
            let id = f.id.expect("a numeric id is echoed");
            assert_eq!(id.as_f64(), Some(exact), "{raw} is echoed as {id}");
            let echoed: Value = serde_json::from_str(&id.to_string()).expect("JSON");
            assert_eq!(echoed, id, "{raw}: the echo reads back as the same number");
        }
    }

    #[test]
    fn seed_events_share_the_checks_and_codes() {
        let r = parse_seed_event("webrtc:call", json!({"to": "bob", "room_name": "r"}));
        assert!(matches!(r, Ok(Request::Invite(Invite { ref to, .. })) if to == "bob"));
        let r = parse_seed_event(
            "webrtc:offer",
            json!({"to": "bob", "sdp": {"type": "offer", "sdp": "v=0"}}),
        );
        assert!(matches!(r, Ok(Request::Offer { call: CallRef::With(ref u), .. }) if u == "bob"));
        let r = parse_seed_event(
            "webrtc:ice-candidate",
            json!({"callId": CALL, "candidate": null}),
        );
        assert!(matches!(
            r,
            Ok(Request::Candidate {
                candidate: Value::Null,
                ..
            })
        ));
        let code = |e: &str, v: Value| parse_seed_event(e, v).expect_err("invalid").code();
        assert_eq!(
            code("webrtc:end-call", json!({"callId": "nope"})),
            "invalid_id"
        );
        assert_eq!(code("webrtc:end-call", json!({})), "invalid_field");
        assert_eq!(code("webrtc:call", json!({})), "invalid_field");
        assert_eq!(code("webrtc:call", json!({"to": 5})), "invalid_field");
        assert_eq!(
            code("webrtc:offer", json!({"to": "bob", "sdp": "v=0"})),
            "invalid_field"
        );
        assert_eq!(code("webrtc:call", json!("bob")), "invalid_message");
        assert_eq!(code("webrtc:teleport", json!({})), "unknown_type");
    }

    #[test]
    fn sdp_and_candidates_are_checked() {
        assert!(check_sdp(&json!({"type": "offer", "sdp": "v=0"}), "sdp").is_ok());
        assert!(check_sdp(&json!({"type": "rollback"}), "sdp").is_ok());
        assert!(check_sdp(&json!({"type": "offer"}), "sdp").is_err());
        assert!(check_sdp(&json!("v=0"), "sdp").is_err());
        assert!(
            check_candidate(&json!({"candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host"}))
                .is_ok()
        );
        assert!(check_candidate(&Value::Null).is_ok());
        assert!(check_candidate(&json!(5)).is_err());
    }
}
