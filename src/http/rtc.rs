//! `GET /rtc`: seed 001's native WebSocket. Authenticates before the upgrade (401 otherwise),
//! sends `welcome`, then turns JSON text frames into [`ClientMessage`]s for the signaling
//! service and writes its events back. Heartbeat: a WebSocket ping every 15 s; a connection
//! silent for 45 s (`heartbeat_timeout`) is closed (1001) and handled as a drop.
//! The shared limits ([`crate::http::gate`]) hold here as on Socket.IO: the per-user and total
//! connection caps refuse the upgrade with 429; an oversize or over-rate frame is answered
//! with an `error` frame (`message_too_large`, `rate_limited`) and the connection stays open.
//! Every frame that carries an `id` gets its `ack` or `error`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

use crate::auth::Principal;
use crate::error::Error;
use crate::http::extract::bearer;
use crate::http::gate::{ConnectionSlot, Transport, MAX_MESSAGE_BYTES, MAX_TRANSPORT_BYTES};
use crate::http::AppState;
use crate::signaling::event::rtc_frame;
use crate::signaling::wire;

/// Per-connection read buffer. tungstenite's default (128 KiB) is zero-filled on the first
/// read, which made every idle connection cost ~134 KiB; 2 KiB keeps it under 8 KiB while
/// larger frames still grow the buffer as needed (see BENCHMARKS.md).
const READ_BUFFER_BYTES: usize = 2 * 1024;

/// Upgrade to the signaling WebSocket (`?token=` or `Authorization: Bearer`).
///
/// A WebSocket handshake (RFC 6455), not a REST call: after `101` the connection carries the
/// JSON frames described in the README's `/rtc` protocol. The token is checked before the
/// upgrade.
#[utoipa::path(get, path = "/rtc", tag = "signaling",
    params(
        ("Connection" = String, Header, description = "must include `upgrade`", example = "Upgrade"),
        ("Upgrade" = String, Header, description = "`websocket` (any case)", example = "websocket"),
        ("Sec-WebSocket-Version" = String, Header, description = "`13`", example = "13"),
        ("Sec-WebSocket-Key" = String, Header, description = "the client's handshake nonce",
            example = "dGhlIHNhbXBsZSBub25jZQ=="),
    ),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "`websocket_required`: not a WebSocket handshake"),
        (status = 401, description = "missing, bad or expired token"),
        (status = 429, description = "`too_many_connections`: max_connections_per_user or max_connections reached"),
    ),
    security(("bearer" = []), ("query_token" = [])))]
pub async fn rtc(
    State(app): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, Error> {
    let token = match query.get("token") {
        Some(t) => t.as_str(),
        None => bearer(
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
        )?,
    };
    let me = app.tokens.verify(token)?;
    let ws = ws.map_err(|e| {
        Error::invalid(
            "websocket_required",
            format!("/rtc is a WebSocket endpoint: {e}"),
        )
    })?;
    let slot = app.gate.admit(&me.id, Transport::Rtc)?;
    Ok(ws
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(MAX_TRANSPORT_BYTES)
        .max_frame_size(MAX_TRANSPORT_BYTES)
        .on_upgrade(move |socket| connection(app, socket, me, slot)))
}

fn error_frame(id: Option<&Value>, e: &Error) -> Message {
    if let Error::Internal(detail) = e {
        tracing::error!(%detail, "internal error in /rtc");
    }
    let mut v = json!({ "type": "error", "code": e.code(), "message": e.to_string() });
    if let Some(id) = id {
        v["id"] = id.clone();
    }
    Message::Text(Utf8Bytes::from(v.to_string()))
}

fn text(s: String) -> Message {
    Message::Text(Utf8Bytes::from(s))
}

/// Frames sent over the rate without an `id` get at most one `rate_limited` error a second, so
/// a flood of them is not answered by a flood.
const UNADDRESSED_ERROR_INTERVAL: Duration = Duration::from_secs(1);

async fn connection(app: AppState, socket: WebSocket, me: Principal, _slot: ConnectionSlot) {
    let signaling = app.signaling.clone();
    let (session, mut outbox) = signaling.open_session(&me, Transport::Rtc.as_str());
    let (mut sink, mut stream) = socket.split();
    let limits = app.gate.message_limits(Transport::Rtc);
    let mut last_heard = crate::clock::monotonic();
    let mut last_unaddressed_error: Option<Instant> = None;
    // Heartbeat: a ping every third of the silence limit (15 s of 45 s by default).
    let silence_limit = app.config.heartbeat_timeout;
    let mut heartbeat = tokio::time::interval(silence_limit / 3);
    heartbeat.reset();

    let welcome = match Box::pin(signaling.welcome(session, &me)).await {
        Ok(w) => text(w.to_rtc_json()),
        Err(e) => error_frame(None, &e),
    };
    let mut open = sink.send(welcome).await.is_ok();

    while open {
        tokio::select! {
            incoming = stream.next() => {
                let Some(Ok(msg)) = incoming else {
                    // Closed, reset, or a frame over the transport limit.
                    if let Some(Err(e)) = incoming {
                        tracing::debug!(error = %e, session, "rtc connection error");
                        if e.to_string().contains("too long") || e.to_string().contains("Space limit") {
                            let _ = sink.send(Message::Close(Some(CloseFrame { code: 1009, reason: "message too big".into() }))).await;
                        }
                    }
                    break;
                };
                last_heard = crate::clock::monotonic();
                let frame = match msg {
                    Message::Text(t) => t,
                    Message::Binary(_) => {
                        let e = Error::invalid("invalid_message", "binary frames are not supported; send JSON text");
                        open = sink.send(error_frame(None, &e)).await.is_ok();
                        continue;
                    }
                    Message::Close(_) => break,
                    Message::Ping(_) | Message::Pong(_) => continue,
                };
                if let Err(e) = limits.check(frame.len()) {
                    // Answer the frame's id when it has one; otherwise rate-limit the errors too.
                    let id = request_id(frame.as_str());
                    let now = crate::clock::monotonic();
                    let throttled = id.is_none() && matches!(e, Error::RateLimited(_));
                    if throttled && last_unaddressed_error.is_some_and(|t| now.duration_since(t) < UNADDRESSED_ERROR_INTERVAL) {
                        continue;
                    }
                    if throttled {
                        last_unaddressed_error = Some(now);
                    }
                    open = sink.send(error_frame(id.as_ref(), &e)).await.is_ok();
                    continue;
                }
                let parsed = wire::parse(frame.as_str());
                let id = parsed.id;
                let result = match parsed.request {
                    // Boxed, so the idle connection holds a pointer, not the operation's state.
                    Ok(request) => Box::pin(signaling.handle(session, &me, request)).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(done) => {
                        let answer = &done.value;
                        let empty = serde_json::Map::new();
                        let body = answer.body.as_object().unwrap_or(&empty);
                        let frame = rtc_frame(answer.kind, body, id.as_ref());
                        open = sink.send(text(frame)).await.is_ok();
                        // The sender has its answer: now the others hear of it.
                        drop(done);
                    }
                    Err(e) => open = sink.send(error_frame(id.as_ref(), &e)).await.is_ok(),
                }
            }
            event = outbox.recv() => {
                match event {
                    Some(event) => open = sink.send(text(event.to_rtc_json())).await.is_ok(),
                    None => {
                        // The service closed our outbox: we were not reading fast enough.
                        let _ = sink.send(Message::Close(Some(CloseFrame { code: 1008, reason: "too slow: events were dropped".into() }))).await;
                        break;
                    }
                }
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() >= silence_limit {
                    let _ = sink.send(Message::Close(Some(CloseFrame { code: 1001, reason: "heartbeat timeout".into() }))).await;
                    break;
                }
                open = sink.send(Message::Ping(Default::default())).await.is_ok();
            }
        }
    }
    signaling.close_session(session);
}

/// The `id` of a frame refused before parsing (over the rate or size), when it is cheap to
/// find: frames over the size limit are not parsed, so they are answered without one.
fn request_id(frame: &str) -> Option<Value> {
    if frame.len() > MAX_MESSAGE_BYTES {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: Option<Value>,
    }
    serde_json::from_str::<IdOnly>(frame)
        .ok()
        .and_then(|f| f.id)
        .filter(|v| v.is_string() || v.is_number())
}
