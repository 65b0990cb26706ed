//! Seed 000's Socket.IO signaling at `/socket.io/` (socketioxide; websocket and long-polling).
//! Handshake `auth: {token}` (or `?token=`); each socket joins `user:<id>`. Incoming `webrtc:*`
//! events are mapped onto the same signaling service as `/rtc`, and service events are
//! rendered back as `webrtc:*` events, so both kinds of client can call each other.
//!
//! Mapping (see DESIGN.md): `webrtc:call` ↔ `call-initiate` (+ `webrtc:offer` when the invite
//! carries an SDP); `webrtc:offer` → `call-sdp-update` (a callee's offer while ringing accepts
//! the call first); `webrtc:answer` → `call-answer` (accepts a ringing call) or `call-sdp-update`;
//! `webrtc:ice-candidate` ↔ `ice-candidate`; `webrtc:end-call` ↔ `call-hangup`/`call-reject`.
//! Extra events for Socket.IO clients: `webrtc:call-accepted`, `webrtc:call-ended`,
//! `webrtc:media-state`, `webrtc:error`.

use std::sync::Arc;

use serde_json::{json, Value};
use socketioxide::extract::{AckSender, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;
use socketioxide::SocketIo;

use crate::auth::Principal;
use crate::error::Error;
use crate::http::rtc::MAX_MESSAGE_BYTES;
use crate::http::AppState;
use crate::signaling::event::Event;
use crate::signaling::service::{Invite, Signaling};
use crate::signaling::switchboard::SessionId;
use crate::signaling::wire::{check_candidate, check_sdp, sdp_type};

/// Renders a service event as Socket.IO events (name, payload).
pub fn render(e: &Event) -> Vec<(&'static str, Value)> {
    let body = Value::Object(e.body.clone());
    let from = e.get("from").cloned().unwrap_or(Value::Null);
    let call_id = e.get("callId").cloned().unwrap_or(Value::Null);
    match e.kind {
        "call-initiate" => {
            let mut out = vec![(
                "webrtc:incoming-call",
                json!({ "from": from, "callId": call_id, "callType": e.get("callType"), "room_name": e.get("roomName"), "fromName": e.get("fromName") }),
            )];
            if let Some(sdp) = e.get("sdp").filter(|s| !s.is_null()) {
                out.push((
                    "webrtc:offer",
                    json!({ "from": from, "callId": call_id, "sdp": sdp }),
                ));
            }
            out
        }
        "call-answer" => vec![(
            "webrtc:answer",
            json!({ "from": from, "callId": call_id, "sdp": e.get("sdp") }),
        )],
        "call-sdp-update" => {
            let sdp = e.get("sdp").cloned().unwrap_or(Value::Null);
            let name = if sdp_type(&sdp) == "answer" {
                "webrtc:answer"
            } else {
                "webrtc:offer"
            };
            let mut payload = json!({ "from": from, "callId": call_id, "sdp": sdp });
            if let Some(p) = e.get("fromPeer") {
                payload["fromPeer"] = p.clone();
            }
            vec![(name, payload)]
        }
        "ice-candidate" => {
            let mut payload =
                json!({ "from": from, "callId": call_id, "candidate": e.get("candidate") });
            if let Some(p) = e.get("fromPeer") {
                payload["fromPeer"] = p.clone();
            }
            vec![("webrtc:ice-candidate", payload)]
        }
        "call-hangup" | "call-reject" => {
            vec![(
                "webrtc:end-call",
                json!({ "from": from, "callId": call_id, "reason": e.get("reason") }),
            )]
        }
        "call-accept" => vec![("webrtc:call-accepted", body)],
        "call-ended" => vec![("webrtc:call-ended", body)],
        "call-accepted-elsewhere" => vec![("webrtc:call-accepted-elsewhere", body)],
        "media-state" => vec![("webrtc:media-state", body)],
        "room-peer-joined" => vec![("webrtc:room-peer-joined", body)],
        "room-peer-left" => vec![("webrtc:room-peer-left", body)],
        _ => Vec::new(),
    }
}

/// Builds the Socket.IO layer wired to the signaling service.
pub fn layer(app: AppState) -> SocketIoLayer {
    let (layer, io) = SocketIo::builder()
        .max_payload(MAX_MESSAGE_BYTES as u64)
        .ping_interval(app.config.heartbeat_timeout / 3)
        .ping_timeout(app.config.heartbeat_timeout * 2 / 3)
        .build_layer();
    let connect_app = app.clone();
    let on_connect = move |s: SocketRef| {
        let app = connect_app.clone();
        async move { connected(app, s) }
    };
    let authenticate = move |s: SocketRef, TryData(auth): TryData<Value>| {
        let app = app.clone();
        async move {
            let from_auth = auth
                .ok()
                .and_then(|a| a.get("token").and_then(Value::as_str).map(str::to_string));
            let from_query = s.req_parts().uri.query().and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("token="))
                    .map(|t| t.to_string())
            });
            let token = from_auth
                .or(from_query)
                .ok_or_else(|| "unauthorized: send auth: {token}".to_string())?;
            let me = app
                .tokens
                .verify(&token)
                .map_err(|e| format!("{}: {e}", e.code()))?;
            s.extensions.insert(me);
            Ok::<(), String>(())
        }
    };
    io.ns("/", on_connect.with(authenticate));
    layer
}

fn reply(ack: Option<AckSender>, s: &SocketRef, event: &str, result: Result<Value, Error>) {
    let body = match &result {
        Ok(v) => {
            let mut v = v.clone();
            if !v.is_object() {
                v = json!({});
            }
            v["ok"] = Value::Bool(true);
            v
        }
        Err(e) => json!({ "ok": false, "error": { "code": e.code(), "message": e.to_string() } }),
    };
    match (ack, result) {
        (Some(ack), _) => {
            let _ = ack.send(&body);
        }
        (None, Err(_)) => {
            let mut body = body;
            body["event"] = Value::String(event.to_string());
            let _ = s.emit("webrtc:error", &body);
        }
        (None, Ok(_)) => {}
    }
}

fn string(v: &Value, key: &str) -> Result<Option<String>, Error> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Error::invalid(
            "invalid_field",
            format!("{key}: must be a string"),
        )),
    }
}

fn required(v: &Value, key: &str) -> Result<String, Error> {
    string(v, key)?.ok_or_else(|| Error::invalid("invalid_field", format!("{key}: missing")))
}

/// Finds the call a seed 000 event is about: `callId` when given, else the live call with `to`.
fn call_for(sig: &Signaling, me: &Principal, data: &Value) -> Result<String, Error> {
    if let Some(id) = string(data, "callId")? {
        return Ok(id);
    }
    let to = required(data, "to")?;
    sig.live_call_with(&me.id, &to).ok_or_else(|| {
        Error::conflict(
            "no_call",
            format!("no call with `{to}`: send webrtc:call first"),
        )
    })
}

async fn on_event(
    sig: Arc<Signaling>,
    session: SessionId,
    me: Principal,
    event: &'static str,
    data: Value,
) -> Result<Value, Error> {
    if !data.is_object() {
        return Err(Error::invalid(
            "invalid_message",
            "the payload must be an object",
        ));
    }
    if data.to_string().len() > MAX_MESSAGE_BYTES {
        return Err(Error::invalid("message_too_large", "payload too large"));
    }
    let to = string(&data, "to")?;
    let reply = match event {
        "webrtc:call" => {
            let to = required(&data, "to")?;
            let call_type = match string(&data, "callType")? {
                Some(t) => Some(crate::signaling::call::CallType::parse(&t).ok_or_else(|| {
                    Error::invalid("invalid_field", "callType: must be audio or video")
                })?),
                None => None,
            };
            let room_name = string(&data, "room_name")?;
            let existing = string(&data, "callId")?;
            let invite = Invite {
                to,
                call_type,
                sdp: None,
                room_name,
                existing,
            };
            sig.initiate(session, &me, invite).await?
        }
        "webrtc:offer" => {
            let sdp = data.get("sdp").cloned().unwrap_or(Value::Null);
            check_sdp(&sdp, "sdp")?;
            let id = call_for(&sig, &me, &data)?;
            sig.offer(session, &me, &id, sdp, to.as_deref()).await?
        }
        "webrtc:answer" => {
            let sdp = data.get("sdp").cloned().unwrap_or(Value::Null);
            check_sdp(&sdp, "sdp")?;
            let id = call_for(&sig, &me, &data)?;
            sig.answer(session, &me, &id, sdp, to.as_deref(), "call-sdp-update")
                .await?
        }
        "webrtc:ice-candidate" => {
            let candidate = data.get("candidate").cloned().unwrap_or(Value::Null);
            check_candidate(&candidate)?;
            let id = call_for(&sig, &me, &data)?;
            sig.candidate(session, &me, &id, candidate, to.as_deref())
                .await?
        }
        "webrtc:end-call" => {
            let id = call_for(&sig, &me, &data)?;
            sig.hangup(&me, &id).await?
        }
        _ => {
            return Err(Error::invalid(
                "unknown_type",
                format!("`{event}` is not a known event"),
            ))
        }
    };
    let mut body = reply.body;
    if let Some(id) = body.get("callId").cloned() {
        body["callId"] = id;
    }
    sig.dispatch(reply.then);
    Ok(body)
}

fn connected(app: AppState, s: SocketRef) {
    let Some(me) = s.extensions.get::<Principal>() else {
        let _ = s.disconnect();
        return;
    };
    s.join(format!("user:{}", me.id));
    let sig = app.signaling.clone();
    let (session, mut outbox) = sig.open_session(&me.id);

    let writer = s.clone();
    tokio::spawn(async move {
        while let Some(event) = outbox.recv().await {
            for (name, payload) in render(&event) {
                if writer.emit(name, &payload).is_err() {
                    break;
                }
            }
        }
    });

    for event in [
        "webrtc:call",
        "webrtc:offer",
        "webrtc:answer",
        "webrtc:ice-candidate",
        "webrtc:end-call",
    ] {
        let (sig, me) = (sig.clone(), me.clone());
        s.on(
            event,
            move |s: SocketRef, TryData(data): TryData<Value>, ack: AckSender| {
                let (sig, me) = (sig.clone(), me.clone());
                async move {
                    let result = match data {
                        Ok(data) => on_event(sig, session, me, event, data).await,
                        Err(e) => Err(Error::invalid(
                            "invalid_message",
                            format!("unreadable payload: {e}"),
                        )),
                    };
                    reply(Some(ack), &s, event, result);
                }
            },
        );
    }
    let closing = sig.clone();
    s.on_disconnect(move || {
        let sig = closing.clone();
        async move { sig.close_session(session).await }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtc_events_map_to_seed_000_events() {
        let invite = Event::new(
            "call-initiate",
            json!({"callId": "c", "from": "a", "callType": "video", "sdp": {"type": "offer", "sdp": "v=0"}}),
        );
        let names: Vec<_> = render(&invite).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["webrtc:incoming-call", "webrtc:offer"]);
        let update = Event::new(
            "call-sdp-update",
            json!({"callId": "c", "from": "a", "sdp": {"type": "answer", "sdp": "v=0"}}),
        );
        assert_eq!(render(&update)[0].0, "webrtc:answer");
        let hangup = Event::new("call-hangup", json!({"callId": "c", "from": "a"}));
        assert_eq!(
            render(&hangup)[0],
            (
                "webrtc:end-call",
                json!({"from": "a", "callId": "c", "reason": null})
            )
        );
        assert!(render(&Event::new("welcome", json!({}))).is_empty());
    }
}
