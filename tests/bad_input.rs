//! Every kind of bad request gets the right status and a JSON error naming the problem, and
//! leaves the database exactly as it was.
#![allow(clippy::disallowed_methods)] // tests are an edge: they read the clock

mod common;

use common::Server;
use reqwest::Method;
use serde_json::json;

fn snapshot(s: &Server) -> Vec<i64> {
    [
        "calls",
        "call_participants",
        "call_events",
        "rooms",
        "room_members",
        "call_reports",
    ]
    .iter()
    .map(|t| s.count(t))
    .collect()
}

/// method, path, content type, body, expected status, error code, a word the message must contain.
type Case = (
    Method,
    String,
    Option<&'static str>,
    Vec<u8>,
    u16,
    &'static str,
    &'static str,
);

#[tokio::test]
async fn malformed_bodies_name_the_field_and_change_nothing() {
    let s = Server::start();
    let alice = s.client("alice");
    let id = alice.call("bob").await;
    let before = snapshot(&s);

    let cases: Vec<Case> = vec![
        (
            Method::POST,
            "/calls".into(),
            Some("application/json"),
            b"{\"calleeId\":".to_vec(),
            400,
            "invalid_json",
            "JSON",
        ),
        (
            Method::POST,
            "/calls".into(),
            Some("application/json"),
            b"[1,2]".to_vec(),
            400,
            "invalid_json",
            "object",
        ),
        (
            Method::POST,
            "/calls".into(),
            Some("application/json"),
            br#"{"callType":"video"}"#.to_vec(),
            400,
            "invalid_field",
            "calleeId",
        ),
        (
            Method::POST,
            "/calls".into(),
            Some("application/json"),
            br#"{"calleeId":42}"#.to_vec(),
            400,
            "invalid_field",
            "calleeId",
        ),
        (
            Method::POST,
            "/calls".into(),
            Some("application/json"),
            br#"{"calleeId":"bob","callType":"hologram"}"#.to_vec(),
            400,
            "invalid_field",
            "callType",
        ),
        (
            Method::POST,
            "/calls".into(),
            Some("application/json"),
            br#"{"calleeId":"bob","roomName":["x"]}"#.to_vec(),
            400,
            "invalid_field",
            "roomName",
        ),
        (
            Method::POST,
            "/calls".into(),
            Some("application/json"),
            br#"{"calleeId":"no spaces allowed"}"#.to_vec(),
            400,
            "invalid_field",
            "calleeId",
        ),
        (
            Method::POST,
            "/calls".into(),
            Some("application/json"),
            br#"{"calleeId":"alice"}"#.to_vec(),
            400,
            "invalid_callee",
            "yourself",
        ),
        (
            Method::POST,
            "/calls".into(),
            Some("text/plain"),
            br#"{"calleeId":"bob"}"#.to_vec(),
            415,
            "unsupported_media_type",
            "Content-Type",
        ),
        (
            Method::PUT,
            format!("/calls/{id}/mute-audio"),
            Some("application/json"),
            br#"{"mute":"yes"}"#.to_vec(),
            400,
            "invalid_field",
            "mute",
        ),
        (
            Method::PUT,
            format!("/calls/{id}/mute-audio"),
            Some("application/json"),
            b"{}".to_vec(),
            400,
            "invalid_field",
            "mute",
        ),
        (
            Method::PUT,
            format!("/calls/{id}/switch-camera"),
            Some("application/json"),
            br#"{"camera":false}"#.to_vec(),
            400,
            "invalid_field",
            "camera",
        ),
        (
            Method::POST,
            "/rooms".into(),
            Some("application/json"),
            format!(r#"{{"name":"  {}  "}}"#, "x".repeat(100)).into_bytes(),
            400,
            "invalid_field",
            "name",
        ),
        (
            Method::POST,
            "/rooms".into(),
            Some("application/json"),
            br#"{"name":" \t "}"#.to_vec(),
            400,
            "invalid_field",
            "name",
        ),
        (
            Method::POST,
            "/rooms".into(),
            Some("application/json"),
            br#"{"name":"r","maxParticipants":2.5}"#.to_vec(),
            400,
            "invalid_field",
            "maxParticipants",
        ),
        (
            Method::POST,
            "/rooms".into(),
            Some("application/json"),
            br#"{"name":"r","maxParticipants":-3}"#.to_vec(),
            400,
            "invalid_field",
            "maxParticipants",
        ),
        (
            Method::POST,
            "/api/video/calls".into(),
            Some("application/json"),
            b"null".to_vec(),
            400,
            "invalid_json",
            "object",
        ),
        (
            Method::PUT,
            "/calls/123/accept".into(),
            None,
            vec![],
            400,
            "invalid_id",
            "callId",
        ),
        (
            Method::GET,
            "/calls/'%20OR%201=1".into(),
            None,
            vec![],
            400,
            "invalid_id",
            "callId",
        ),
        (
            Method::GET,
            "/calls/%FF".into(),
            None,
            vec![],
            400,
            "invalid_request",
            "UTF-8",
        ),
        (
            Method::GET,
            "/api/video/calls/%FF%FE".into(),
            None,
            vec![],
            400,
            "invalid_request",
            "UTF-8",
        ),
        (
            Method::PUT,
            "/calls/00000000-0000-4000-8000-000000000000/accept".into(),
            None,
            vec![],
            404,
            "not_found",
            "call",
        ),
        (
            Method::GET,
            "/calls/00000000-0000-4000-8000-000000000000/analytics".into(),
            None,
            vec![],
            404,
            "not_found",
            "call",
        ),
        (
            Method::GET,
            "/no/such/route".into(),
            None,
            vec![],
            404,
            "not_found",
            "route",
        ),
        (
            Method::PATCH,
            format!("/calls/{id}"),
            None,
            vec![],
            405,
            "method_not_allowed",
            "Method",
        ),
    ];
    for (method, path, ct, body, status, code, mention) in cases {
        let r = alice.raw(method.clone(), &path, ct, body.clone()).await;
        let what = format!("{method} {path} {}", String::from_utf8_lossy(&body));
        assert_eq!(r.status.as_u16(), status, "{what}: {}", r.body);
        assert_eq!(r.body["error"]["code"], code, "{what}: {}", r.body);
        let msg = r.body["error"]["message"].as_str().expect("message");
        assert!(
            msg.contains(mention),
            "{what}: message `{msg}` should mention `{mention}`"
        );
    }
    assert_eq!(
        snapshot(&s),
        before,
        "a refused request changed the database"
    );
    assert_eq!(
        alice.get(&format!("/calls/{id}")).await.expect(200)["callSession"]["status"],
        "ringing"
    );
}

/// Sends a raw HTTP/1.1 POST and returns (status, body) as a browser or curl would see them:
/// the server answers 413 before reading the whole body, so write errors are expected.
fn raw_post(
    addr: std::net::SocketAddr,
    path: &str,
    token: &str,
    body: &[u8],
) -> (u16, serde_json::Value) {
    use std::io::Write;
    use std::time::{Duration, Instant};
    // 10 s for the whole exchange: before each write or read the socket timeout is cut to what
    // is left, so a server that reads or answers a trickle at a time cannot extend it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let left = || deadline.saturating_duration_since(Instant::now());
    let mut stream = std::net::TcpStream::connect_timeout(&addr, left()).expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    for chunk in request.chunks(16 * 1024) {
        let budget = left();
        if budget.is_zero() || stream.set_write_timeout(Some(budget)).is_err() {
            break;
        }
        // The server may answer and close before reading it all: write errors are expected.
        if stream.write_all(chunk).is_err() {
            break;
        }
    }
    let response =
        common::read_to_end_by(&mut stream, deadline, &format!("the answer to POST {path}"));
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let json = text
        .split("\r\n\r\n")
        .nth(1)
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or_default();
    (status, json)
}

#[tokio::test]
async fn oversize_bodies_get_413() {
    let s = Server::start_with(&["--no-turn"], &[("SIGNALBOX_MAX_BODY_BYTES", "4096")]);
    let token = s.token("alice");
    let before = snapshot(&s);
    let big = format!(
        "{{\"calleeId\":\"bob\",\"roomName\":\"{}\"}}",
        "x".repeat(10_000)
    );
    let (status, body) = raw_post(s.addr, "/calls", &token, big.as_bytes());
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");
    let (status, body) = raw_post(s.addr, "/api/video/calls", &token, &vec![b' '; 100_000]);
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["success"], false);
    assert_eq!(snapshot(&s), before);
    // The server is fine afterwards.
    s.client("alice").call("bob").await;
}

#[tokio::test]
async fn missing_bad_and_expired_tokens_are_401() {
    let s = Server::start();
    let expired = s.token_with("alice", false, -10);
    let foreign = {
        let t = signalbox::auth::Tokens::new(b"not-the-server-secret-not-the-server-secret");
        let p = signalbox::auth::Principal {
            id: "alice".into(),
            name: None,
            admin: true,
        };
        t.mint(&p, signalbox::clock::now_ms() / 1000, 3600)
            .expect("mint")
    };
    let anon = s.anonymous();
    let before = snapshot(&s);
    for (client, code) in [
        (anon.clone(), "unauthorized"),
        (anon.with_token("garbage"), "invalid_token"),
        (anon.with_token(&expired), "token_expired"),
        (anon.with_token(&foreign), "invalid_token"),
    ] {
        for path in ["/calls/history", "/ice-config", "/api/me"] {
            let r = client.get(path).await;
            assert_eq!(r.status.as_u16(), 401, "{path}: {}", r.body);
            assert_eq!(r.body["error"]["code"], code, "{path}: {}", r.body);
            assert_eq!(
                r.headers.get("www-authenticate").map(|v| v.as_bytes()),
                Some(&b"Bearer"[..])
            );
        }
        let r = client.post("/calls", json!({"calleeId": "bob"})).await;
        assert_eq!(r.status.as_u16(), 401);
    }
    // A token whose subject is not a valid user id is refused too.
    let weird = s.token_with("bad user", false, 60);
    assert_eq!(
        anon.with_token(&weird).get("/api/me").await.status.as_u16(),
        401
    );
    let r = s
        .anonymous()
        .raw(Method::GET, "/api/me", None, vec![])
        .await;
    assert_eq!(r.status.as_u16(), 401);
    assert_eq!(snapshot(&s), before);
    // Public endpoints stay public.
    anon.get("/healthz").await.expect(200);
}
