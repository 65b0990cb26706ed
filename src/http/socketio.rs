//! Seed 000's Socket.IO signaling at `/socket.io/` (socketioxide; websocket and long-polling).
//! Handshake `auth: {token}` (or `?token=`); each socket joins `user:<id>`. Incoming `webrtc:*`
//! events go through the same front door as `/rtc` frames (the connection caps and message
//! limits of [`crate::http::gate`], the parser of [`crate::signaling::wire`]) to the same
//! application layer, and its events are rendered back as `webrtc:*` events, so both kinds of
//! client can call each other.
//!
//! Nothing is lost, nothing is reordered: the connect middleware authenticates, takes a place
//! under the connection caps, opens the session and installs the socket's one event handler
//! *before* socketioxide answers CONNECT, so a client may emit the instant it is connected.
//! The handler runs synchronously in socketioxide's read path: it checks size and rate and
//! queues the event in arrival order for the socket's worker task, which carries events out
//! one at a time (as `/rtc` does) and answers each: its ack, or `{ok:false, error}` (the
//! `webrtc:error` event when the client asked for no ack). Emits fail until socketioxide has
//! sent CONNECT, so the worker starts the socket's writer and answers events only once the
//! namespace's connect handler says the socket is connected; what arrives before waits in order.
//!
//! Mapping (see DESIGN.md): `webrtc:call` ↔ `call-initiate` (+ `webrtc:offer` when the invite
//! carries an SDP); `webrtc:offer` → `call-sdp-update` (a callee's offer while ringing accepts
//! the call first); `webrtc:answer` → `call-answer` (accepts a ringing call) or `call-sdp-update`;
//! `webrtc:ice-candidate` ↔ `ice-candidate`; `webrtc:end-call` ↔ `call-hangup`/`call-reject`.
//! Extra events for Socket.IO clients: `webrtc:call-accepted`, `webrtc:call-ended`,
//! `webrtc:media-state`, `webrtc:error`.

use std::sync::Arc;

use axum::extract::{OriginalUri, Request};
use axum::http::{HeaderValue, Uri};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{json, Value};
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::{AckSender, Event as EventName, SocketRef, TryData};
use socketioxide::handler::{ConnectHandler, FromMessage, FromMessageParts, MessageHandler};
use socketioxide::layer::SocketIoLayer;
use socketioxide::socket::Socket;
use socketioxide::SocketIo;
use tokio::sync::{mpsc, watch};

use crate::auth::Principal;
use crate::error::Error;
use crate::http::gate::{ConnectionSlot, MessageLimits, Transport, MAX_TRANSPORT_BYTES};
use crate::http::AppState;
use crate::signaling::event::Event;
use crate::signaling::switchboard::SessionId;
use crate::signaling::wire::{self, sdp_type};

/// Packets socketioxide may buffer for one socket before an emit fails. It must hold the
/// answers to a whole burst (`socket_rate_burst` acks plus the `rate_limited` errors that
/// arrive with them) while the writer drains; a client that reads nothing is disconnected by
/// the outbox bound instead.
const EMIT_BUFFER_PACKETS: usize = 4096;

/// Read buffer of a Socket.IO WebSocket (engineioxide's default is 4 KiB, which is zero-filled
/// and so resident on every idle socket); frames larger than this still grow it as needed.
const WS_READ_BUFFER_BYTES: usize = 2 * 1024;

/// Gives a `/socket.io/` request a head of its own before engineioxide keeps it for the
/// socket's lifetime (`req_parts`). hyper's parsed header values and URI (and axum's
/// `OriginalUri`) are slices of the connection's read buffer, so keeping them would keep that
/// whole buffer (16 KiB) alive per socket; copies cost a few hundred bytes.
pub async fn own_request_head(req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with("/socket.io") {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let headers = std::mem::take(&mut parts.headers);
    parts.headers.reserve(headers.len());
    for (name, value) in headers.iter() {
        let mut owned = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        owned.set_sensitive(value.is_sensitive());
        parts.headers.append(name.clone(), owned);
    }
    if let Ok(uri) = Uri::try_from(parts.uri.to_string()) {
        parts.uri = uri.clone();
        // axum's copy of the URI would share the buffer too.
        parts.extensions.insert(OriginalUri(uri));
    }
    next.run(Request::from_parts(parts, body)).await
}

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

/// Builds the Socket.IO layer wired to the application layer.
pub fn layer(app: AppState) -> SocketIoLayer {
    let (layer, io) = SocketIo::builder()
        .max_payload(MAX_TRANSPORT_BYTES as u64)
        .max_buffer_size(EMIT_BUFFER_PACKETS)
        .ws_read_buffer_size(WS_READ_BUFFER_BYTES)
        .ping_interval(app.config.heartbeat_timeout / 3)
        .ping_timeout(app.config.heartbeat_timeout * 2 / 3)
        .build_layer();
    let admit = move |s: SocketRef, TryData(auth): TryData<Value>| {
        let app = app.clone();
        async move { open(&app, &s, auth.ok()).map_err(|e| format!("{}: {e}", e.code())) }
    };
    // Everything happens in the middleware, before CONNECT is answered: see the module docs.
    // socketioxide calls this handler once CONNECT is sent and the socket counts as connected:
    // only from then on can it emit, so the socket's worker waits for this signal.
    let connected = |s: SocketRef| async move {
        if let Some(Connected(flag)) = s.extensions.get::<Connected>() {
            let _ = flag.send(true);
        }
    };
    io.ns("/", connected.with(admit));
    layer
}

/// Reads the handshake token (`auth: {token}` or `?token=`).
fn token(s: &SocketRef, auth: Option<Value>) -> Result<String, Error> {
    let from_auth = auth.and_then(|a| a.get("token").and_then(Value::as_str).map(str::to_string));
    let from_query = s.req_parts().uri.query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("token="))
            .map(|t| t.to_string())
    });
    from_auth.or(from_query).ok_or_else(|| Error::Unauthorized {
        code: "unauthorized",
        message: "send auth: {token}".into(),
    })
}

/// Set once socketioxide has sent CONNECT and marked the socket connected (kept in the
/// socket's extensions by [`open`], raised by the namespace's connect handler). Before that an
/// emit fails, so the worker neither emits events nor answers any until it is raised.
#[derive(Clone)]
struct Connected(Arc<watch::Sender<bool>>);

/// One queued event: its name, payload and how to answer it.
struct Incoming {
    name: String,
    data: Result<Value, Error>,
    ack: Answerer,
}

/// Answers one event: through its ack, or with `webrtc:error` when it asked for none.
struct Answerer {
    ack: AckSender,
    wants_ack: bool,
    socket: SocketRef,
    event: String,
}

impl Answerer {
    fn send(self, result: Result<Value, Error>) {
        let body = match result {
            Ok(mut v) => {
                if !v.is_object() {
                    v = json!({});
                }
                v["ok"] = Value::Bool(true);
                v
            }
            Err(e) => {
                if let Error::Internal(detail) = &e {
                    tracing::error!(%detail, "internal error in Socket.IO");
                }
                json!({ "ok": false, "error": { "code": e.code(), "message": e.to_string() } })
            }
        };
        let failed = body["ok"] == Value::Bool(false);
        let sent = if self.wants_ack {
            self.ack.send(&body).map_err(|e| e.to_string())
        } else if failed {
            let mut body = body;
            body["event"] = Value::String(self.event);
            self.socket
                .emit("webrtc:error", &body)
                .map_err(|e| e.to_string())
        } else {
            Ok(())
        };
        if let Err(e) = sent {
            // The emit buffer is full (a client that reads nothing) or the socket is gone:
            // the client cannot be told, so it is disconnected rather than left guessing.
            tracing::warn!(error = %e, "could not answer a Socket.IO event; disconnecting");
            let _ = self.socket.clone().disconnect();
        }
    }
}

/// The socket's one event handler: checks limits and queues events in arrival order. It runs
/// synchronously in socketioxide's read path, so nothing can overtake or miss it.
#[derive(Clone)]
struct Inlet {
    /// Boxed: a channel's first block holds 32 items, so small items keep idle sockets small.
    queue: mpsc::Sender<Box<Incoming>>,
    limits: Arc<MessageLimits>,
}

/// Marks [`Inlet`]'s handler implementation (socketioxide's handler traits are generic over
/// an extractor tuple; this one reads the parts itself).
struct Raw;

impl MessageHandler<LocalAdapter, Raw> for Inlet {
    fn call(
        &self,
        s: Arc<Socket<LocalAdapter>>,
        mut v: socketioxide::handler::Value,
        ack_id: Option<i64>,
    ) {
        let len = v.len();
        let name = EventName::from_message_parts(&s, &mut v, &ack_id)
            .map(|e| e.0)
            .unwrap_or_default();
        let Ok(ack) = AckSender::from_message_parts(&s, &mut v, &ack_id);
        let socket = SocketRef::from(s.clone());
        let answer = Answerer {
            ack,
            wants_ack: ack_id.is_some(),
            socket,
            event: name.clone(),
        };
        if let Err(e) = self.limits.check(len) {
            answer.send(Err(e));
            return;
        }
        let Ok(TryData(data)) = TryData::<Value>::from_message(s, v, ack_id);
        let data =
            data.map_err(|e| Error::invalid("invalid_message", format!("unreadable payload: {e}")));
        let incoming = Box::new(Incoming {
            name,
            data,
            ack: answer,
        });
        if let Err(e) = self.queue.try_send(incoming) {
            // More queued than the burst allows: the worker is behind, so this is over the rate.
            let incoming = match e {
                mpsc::error::TrySendError::Full(i) | mpsc::error::TrySendError::Closed(i) => i,
            };
            incoming.ack.send(Err(Error::RateLimited(1)));
        }
    }
}

/// Admits a connecting socket: authentication, connection caps, session, handler, worker.
fn open(app: &AppState, s: &SocketRef, auth: Option<Value>) -> Result<(), Error> {
    let me = app.tokens.verify(&token(s, auth)?)?;
    let slot = app.gate.admit(&me.id, Transport::SocketIo)?;
    let limits = Arc::new(app.gate.message_limits(Transport::SocketIo));
    let capacity = usize::try_from(app.config.socket_limits.rate_burst)
        .unwrap_or(usize::MAX)
        .saturating_add(16);
    let (queue, events) = mpsc::channel(capacity);
    let (session, outbox) = app
        .signaling
        .open_session(&me, Transport::SocketIo.as_str());
    s.join(format!("user:{}", me.id));
    s.on_fallback(Inlet { queue, limits });
    let (connected_tx, connected) = watch::channel(false);
    s.extensions.insert(Connected(Arc::new(connected_tx)));
    let (closed_tx, closed) = watch::channel(false);
    let closed_tx = Arc::new(closed_tx);
    s.on_disconnect(move || {
        let _ = closed_tx.send(true);
        async {}
    });
    tokio::spawn(work(
        app.clone(),
        s.clone(),
        me,
        session,
        slot,
        Inputs {
            events,
            outbox,
            connected,
            closed,
        },
    ));
    Ok(())
}

/// What a socket's worker listens to.
struct Inputs {
    /// The socket's events, queued by [`Inlet`].
    events: mpsc::Receiver<Box<Incoming>>,
    /// The session's outgoing events, emitted by [`write_events`] once connected.
    outbox: crate::app::Outbox,
    /// See [`Connected`].
    connected: watch::Receiver<bool>,
    /// Raised by the socket's disconnect handler.
    closed: watch::Receiver<bool>,
}

/// Emits the session's events to the socket until its outbox ends.
async fn write_events(socket: SocketRef, mut outbox: crate::app::Outbox) {
    while let Some(event) = outbox.recv().await {
        for (name, payload) in render(&event) {
            if socket.emit(name, &payload).is_err() {
                let _ = socket.clone().disconnect();
                return;
            }
        }
    }
    // The application layer closed the outbox: either the socket is gone, or it was too slow
    // to take its events (it is told by being disconnected).
    let _ = socket.disconnect();
}

/// Once the socket is connected, starts its writer and carries out its events one at a time,
/// in order, until it disconnects. Events that arrive or are delivered before then wait in
/// their queues.
async fn work(
    app: AppState,
    socket: SocketRef,
    me: Principal,
    session: SessionId,
    _slot: ConnectionSlot,
    inputs: Inputs,
) {
    let Inputs {
        mut events,
        outbox,
        mut connected,
        mut closed,
    } = inputs;
    let mut outbox = Some(outbox);
    // Cluster mode: this node holds a session of the user from now on, before any of its
    // events is handled (the `/rtc` transport does the same in its welcome).
    app.signaling.announce(&me.id).await;
    // A socket can also vanish without its disconnect handler (socketioxide drops it when the
    // CONNECT answer cannot be sent): check now and then that it is still connected, so its
    // session and its place under the connection caps are never leaked.
    let period = app.config.heartbeat_timeout;
    let mut liveness = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        let incoming = tokio::select! {
            biased;
            _ = closed.changed() => break,
            _ = liveness.tick() => {
                if socket.connected() {
                    continue;
                }
                break;
            }
            up = connected.wait_for(|up| *up), if outbox.is_some() => {
                if up.is_err() {
                    break;
                }
                if let Some(outbox) = outbox.take() {
                    tokio::spawn(write_events(socket.clone(), outbox));
                }
                continue;
            }
            next = events.recv(), if outbox.is_none() => match next {
                Some(i) => i,
                None => break,
            },
        };
        let Incoming { name, data, ack } = *incoming;
        let request = data.and_then(|data| wire::parse_seed_event(&name, data));
        let result = match request {
            // Boxed, so the idle worker holds a pointer, not the operation's whole state.
            Ok(request) => Box::pin(app.signaling.handle(session, &me, request)).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(done) => {
                ack.send(Ok(done.value.body.clone()));
                // The sender has its answer: now the others hear of it.
                drop(done);
            }
            Err(e) => ack.send(Err(e)),
        }
    }
    app.signaling.close_session(session);
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
