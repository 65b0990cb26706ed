//! The limits that hold on every signaling transport alike: connection caps per user and in
//! total (429 before the `/rtc` upgrade, `connect_error` on Socket.IO, other users unaffected,
//! visible in `/metrics`), and the per-connection rate limit, under which every request still
//! gets an answer — its ack, or a `rate_limited` error — and the connection stays usable.
//! The Socket.IO side is driven by Node's `socket.io-client` (`tests/interop/sio_limits.mjs`).
#![allow(clippy::disallowed_methods)] // tests are an edge: they read the clock

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{eventually, metric, node_script, Rtc, Server};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{self, Message};

/// Runs `sio_limits.mjs` with a hard deadline and returns its JSON summary line.
async fn sio_limits(args: &[&str]) -> Value {
    let node = node_script("sio_limits.mjs");
    let child = tokio::process::Command::new(&node[0])
        .args(&node[1..])
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), child)
        .await
        .expect("sio_limits.mjs did not finish within 90 s")
        .expect("run node");
    assert!(
        out.status.success(),
        "sio_limits.mjs {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("summary line `{line}`: {e}"))
}

/// Tries to open `/rtc` and returns the refusal (status, JSON body) if it was refused.
async fn rtc_refusal(s: &Server, user: &str) -> Option<(u16, Value)> {
    match Rtc::connect_token(s, &s.token(user)).await {
        Ok(_) => None,
        Err(tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Some((resp.status().as_u16(), body))
        }
        Err(e) => panic!("unexpected /rtc error: {e}"),
    }
}

#[tokio::test]
async fn connection_caps_hold_per_user_on_both_transports() {
    let s = Server::start();
    // The default cap: 20 connections per user.
    let mut mine = Vec::new();
    for _ in 0..20 {
        mine.push(Rtc::connect(&s, "alice").await);
    }
    let (status, body) = rtc_refusal(&s, "alice")
        .await
        .expect("the 21st /rtc connection of one user is refused");
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "too_many_connections", "{body}");

    // Another user is unaffected.
    let bob = Rtc::connect(&s, "bob").await;
    // The cap holds across transports: Socket.IO is refused with the reason.
    let sio = sio_limits(&["connect", &s.base, &s.token("alice"), "1"]).await;
    assert_eq!(sio["connected"], 0, "{sio}");
    let reason = sio["refused"][0].as_str().unwrap_or_default();
    assert!(reason.contains("too_many_connections"), "{sio}");
    let sio_bob = sio_limits(&["connect", &s.base, &s.token("bob"), "2"]).await;
    assert_eq!(sio_bob["connected"], 2, "{sio_bob}");

    // Closing one connection frees its place.
    drop(mine.pop());
    eventually(
        "a place for alice after closing one",
        Duration::from_secs(10),
        || async { rtc_refusal(&s, "alice").await.is_none().then_some(()) },
    )
    .await;

    let text = s.metrics().await;
    let refused_rtc = metric(
        &text,
        r#"signalbox_signaling_connections_refused_total{transport="rtc",limit="per_user"}"#,
    );
    let refused_sio = metric(
        &text,
        r#"signalbox_signaling_connections_refused_total{transport="socketio",limit="per_user"}"#,
    );
    assert!(refused_rtc >= Some(1), "{text}");
    assert_eq!(refused_sio, Some(1), "{text}");
    let open = metric(&text, r#"signalbox_signaling_connections{transport="rtc"}"#);
    assert!(
        open >= Some(20),
        "19 of alice's, bob's and the new one: {open:?}"
    );
    drop(bob);
}

#[tokio::test]
async fn the_total_cap_refuses_everyone_once_reached() {
    let s = Server::start_with(&["--no-turn"], &[("SIGNALBOX_MAX_CONNECTIONS", "2")]);
    let _a = Rtc::connect(&s, "alice").await;
    let _b = Rtc::connect(&s, "bob").await;
    let (status, body) = rtc_refusal(&s, "carol")
        .await
        .expect("a third connection is over max_connections = 2");
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (429, json!("too_many_connections"))
    );
    let sio = sio_limits(&["connect", &s.base, &s.token("dave"), "1"]).await;
    assert_eq!(sio["connected"], 0, "{sio}");
    let text = s.metrics().await;
    assert!(
        text.contains(
            r#"signalbox_signaling_connections_refused_total{transport="rtc",limit="total"} 1"#
        ),
        "{text}"
    );
}

#[tokio::test]
async fn a_socketio_burst_gets_an_answer_for_every_event() {
    let s = Server::start();
    let n = 1000;
    let tally = sio_limits(&["flood", &s.base, &s.token("alice"), &n.to_string()]).await;
    assert_eq!(tally["sent"], n, "{tally}");
    assert_eq!(tally["unanswered"], 0, "every emit gets an answer: {tally}");
    let limited = tally["rateLimited"].as_u64().unwrap_or(0);
    assert!(
        limited >= 500,
        "a burst of 1000 is far over the burst of 300: {tally}"
    );
    // What was let through was carried out: an offer to someone you have no call with.
    assert_eq!(
        tally["otherErrors"].as_u64().unwrap_or(0) + tally["ok"].as_u64().unwrap_or(0),
        n - limited,
        "{tally}"
    );
    assert_eq!(tally["codes"], json!({ "no_call": n - limited }), "{tally}");
    // The connection stays usable.
    assert_eq!(tally["after"]["ok"], true, "{tally}");
    let text = s.metrics().await;
    let counted = metric(
        &text,
        r#"signalbox_signaling_rate_limited_total{transport="socketio"}"#,
    );
    assert_eq!(counted, Some(limited), "{text}");
}

#[tokio::test]
async fn every_rtc_frame_with_an_id_is_answered_under_a_flood() {
    let s = Server::start();
    let mut alice = Rtc::connect(&s, "alice").await;
    let n = 1000u64;
    for i in 0..n {
        alice
            .send_raw(json!({"type": "ping", "id": i}).to_string())
            .await;
    }
    let mut answers: HashMap<u64, String> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while (answers.len() as u64) < n {
        let frame = tokio::time::timeout_at(deadline, alice.ws.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "answers to {} of {n} pings within 30 s; waiting for the rest",
                    answers.len()
                )
            })
            .expect("connection open")
            .expect("websocket frame");
        let Message::Text(t) = frame else { continue };
        let v: Value = serde_json::from_str(t.as_str()).expect("json frame");
        let id = v["id"].as_u64().expect("every answer carries its id");
        let kind = match v["type"].as_str() {
            Some("pong") => "pong".to_string(),
            Some("error") => v["code"].as_str().unwrap_or("?").to_string(),
            other => panic!("unexpected answer {other:?}: {v}"),
        };
        assert!(answers.insert(id, kind).is_none(), "id {id} answered twice");
    }
    let limited = answers.values().filter(|k| *k == "rate_limited").count();
    let pongs = answers.values().filter(|k| *k == "pong").count();
    assert_eq!(limited + pongs, n as usize, "{answers:?}");
    assert!(limited >= 500, "{limited} of {n} over the rate");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ok = alice.request(json!({"type": "ping"})).await;
    assert_eq!(ok["type"], "pong", "the connection stays usable: {ok}");
}
