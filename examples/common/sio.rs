//! A minimal Socket.IO 4 client (Engine.IO v4 over a WebSocket, no long-polling) for the load
//! tools: the handshake up to the namespace's CONNECT answer, events and acks as text frames.
//! Enough for seed 000 signaling against any Socket.IO 4 server (signalbox's `/socket.io/`,
//! Node's `socket.io`). Included with `#[path = "common/sio.rs"] mod sio;` by the tools that
//! speak Socket.IO, so the others do not carry it.
//!
//! Packets (text frames): `0{..}` Engine.IO open, `2` ping (answered with `3`), `40{..}` the
//! namespace's CONNECT (its answer carries the `sid`), `44{..}` CONNECT refused,
//! `42["event",{..}]` an event, `42<id>[..]` an event that wants an ack, `43<id>[..]` an ack.

use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::connect_async_with_config;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{Res, Ws, CONNECT_TIMEOUT};

/// One Socket.IO packet as the load tools see it.
#[derive(Debug)]
pub enum Packet {
    /// Engine.IO ping (`2`): the caller must answer `3` (see [`PONG`]).
    Ping,
    /// `42[name, payload]` (or `42<id>[..]`: the load tools answer no server-side acks).
    Event { name: String, payload: Value },
    /// `43<id>[payload]`.
    Ack { id: u64, payload: Value },
    /// The namespace refused the connection (`44{..}`).
    ConnectError(Value),
    /// Anything else (open, CONNECT answer, noop, close).
    Other,
}

/// The Engine.IO pong, the answer to a ping.
pub const PONG: &str = "3";

/// An event packet's text: `42["name",payload]`, or `42<id>[..]` when it wants an ack.
pub fn event(name: &str, payload: &Value, ack: Option<u64>) -> String {
    let id = ack.map_or(String::new(), |id| id.to_string());
    format!("42{id}{}", json!([name, payload]))
}

/// Splits `<digits><rest>` into the number (if any) and the rest.
fn leading_id(s: &str) -> (Option<u64>, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    (s[..end].parse().ok(), &s[end..])
}

/// Parses one text frame.
pub fn parse(text: &str) -> Packet {
    if text == "2" {
        return Packet::Ping;
    }
    if let Some(rest) = text.strip_prefix("42") {
        let (_, body) = leading_id(rest);
        if let Ok(Value::Array(mut a)) = serde_json::from_str::<Value>(body) {
            if let Some(Value::String(name)) = a.first().cloned() {
                let payload = if a.len() > 1 {
                    a.swap_remove(1)
                } else {
                    Value::Null
                };
                return Packet::Event { name, payload };
            }
        }
    } else if let Some(rest) = text.strip_prefix("43") {
        if let (Some(id), body) = leading_id(rest) {
            if let Ok(Value::Array(mut a)) = serde_json::from_str::<Value>(body) {
                let payload = if a.is_empty() {
                    Value::Null
                } else {
                    a.swap_remove(0)
                };
                return Packet::Ack { id, payload };
            }
        }
    } else if let Some(rest) = text.strip_prefix("44") {
        return Packet::ConnectError(serde_json::from_str(rest).unwrap_or(Value::Null));
    }
    Packet::Other
}

/// The next text frame before `deadline` (WebSocket pings are answered by tungstenite).
pub async fn next_text(ws: &mut Ws, deadline: Instant, what: &str) -> Res<String> {
    use futures_util::StreamExt;
    loop {
        let msg = timeout_at(deadline, ws.next())
            .await
            .map_err(|_| format!("no frame before the deadline (waiting for {what})"))?
            .ok_or_else(|| format!("connection closed (waiting for {what})"))?
            .map_err(|e| format!("read (waiting for {what}): {e}"))?;
        match msg {
            Message::Text(t) => return Ok(t.as_str().to_string()),
            Message::Close(c) => {
                return Err(format!("closed by server: {c:?} (waiting for {what})"))
            }
            _ => continue,
        }
    }
}

/// The next packet before `deadline`, answering Engine.IO pings on the way.
pub async fn next_packet(ws: &mut Ws, deadline: Instant, what: &str) -> Res<Packet> {
    loop {
        let text = next_text(ws, deadline, what).await?;
        match parse(&text) {
            Packet::Ping => send(ws, PONG.to_string()).await?,
            p => return Ok(p),
        }
    }
}

/// Sends one text frame.
pub async fn send(ws: &mut Ws, text: String) -> Res<()> {
    ws.send(Message::text(text))
        .await
        .map_err(|e| format!("send: {e}"))
}

/// Opens `ws://addr/socket.io/?EIO=4&transport=websocket`, reads the Engine.IO open packet,
/// connects to the namespace `/` with `auth: {token}` and waits for its answer; returns the
/// socket and its Socket.IO `sid`. All within [`CONNECT_TIMEOUT`].
pub async fn connect(addr: &str, token: &str) -> Res<(Ws, String)> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    // `true`: TCP_NODELAY on the client side, as for /rtc.
    let (mut ws, _) = timeout_at(deadline, connect_async_with_config(url, None, true))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    let open = next_text(&mut ws, deadline, "the Engine.IO open packet").await?;
    if !open.starts_with('0') {
        return Err(format!("expected the Engine.IO open packet, got {open:?}"));
    }
    send(&mut ws, format!("40{}", json!({ "token": token }))).await?;
    loop {
        let text = next_text(&mut ws, deadline, "the CONNECT answer").await?;
        if text == "2" {
            send(&mut ws, PONG.to_string()).await?;
        } else if let Some(body) = text.strip_prefix("40") {
            let v: Value =
                serde_json::from_str(body).map_err(|e| format!("CONNECT answer: {e}"))?;
            let sid = v["sid"]
                .as_str()
                .ok_or_else(|| format!("CONNECT answer without sid: {text}"))?;
            return Ok((ws, sid.to_string()));
        } else if let Some(body) = text.strip_prefix("44") {
            return Err(format!("connection refused: {body}"));
        } else {
            return Err(format!("expected the CONNECT answer, got {text:?}"));
        }
    }
}
