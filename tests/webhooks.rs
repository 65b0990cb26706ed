//! Webhooks against the real server and a real HTTP receiver on 127.0.0.1 (a small axum app in
//! the test): every event arrives signed (the HMAC is checked here, independently of the
//! server's code), in order per call or room, also from a receiver that fails at first, and
//! also when it was queued while the receiver was down and signalbox was restarted meanwhile.
//! The admin endpoint shows the attempts.
#![allow(clippy::disallowed_methods)] // tests are an edge: they read the clock

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use common::{eventually, within, Rtc, Server};
use hmac::{Hmac, Mac};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

const SECRET: &str = "webhook-test-secret-0123456789";
/// How long one event may take to arrive (retries on the 1 s, 2 s … schedule included).
const EVENT_WAIT: Duration = Duration::from_secs(20);

/// One accepted POST.
#[derive(Debug)]
struct Hook {
    body: Value,
}

struct ReceiverState {
    /// Answer 500 to this many requests first.
    fail_first: usize,
    requests: AtomicUsize,
    tx: mpsc::UnboundedSender<Result<Hook, String>>,
}

/// A webhook receiver on loopback that checks every signature and hands over the bodies.
struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
    rx: mpsc::UnboundedReceiver<Result<Hook, String>>,
    seen: HashSet<String>,
}

fn expected_signature(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("hmac key");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    raw: Bytes,
) -> StatusCode {
    let n = state.requests.fetch_add(1, Ordering::SeqCst);
    if n < state.fail_first {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let checked = (|| {
        let signature = headers
            .get("x-signalbox-signature")
            .and_then(|v| v.to_str().ok())
            .ok_or("no X-Signalbox-Signature header")?;
        if signature != expected_signature(&raw) {
            return Err(format!("bad signature {signature}"));
        }
        let ct = headers.get("content-type").and_then(|v| v.to_str().ok());
        if ct != Some("application/json") {
            return Err(format!("content-type {ct:?}"));
        }
        let body: Value = serde_json::from_slice(&raw).map_err(|e| format!("not JSON: {e}"))?;
        Ok(Hook { body })
    })();
    let ok = checked.is_ok();
    let _ = state.tx.send(checked.map_err(|e: String| e));
    if ok {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::BAD_REQUEST
    }
}

impl Receiver {
    async fn start(fail_first: usize) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Receiver::serve(listener, fail_first)
    }

    fn serve(listener: TcpListener, fail_first: usize) -> Receiver {
        Receiver::serve_tls(listener, fail_first, None)
    }

    /// Serves HTTPS with `tls` when given (then the URL is `https://`).
    fn serve_tls(listener: TcpListener, fail_first: usize, tls: Option<TlsAcceptor>) -> Receiver {
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(ReceiverState {
            fail_first,
            requests: AtomicUsize::new(0),
            tx,
        });
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(state.clone());
        let scheme = if tls.is_some() { "https" } else { "http" };
        match tls {
            None => {
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app).await;
                });
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    while let Ok((tcp, _)) = listener.accept().await {
                        let (acceptor, app) = (acceptor.clone(), app.clone());
                        tokio::spawn(async move {
                            let Ok(stream) = acceptor.accept(tcp).await else {
                                return;
                            };
                            let _ = auto::Builder::new(TokioExecutor::new())
                                .serve_connection(
                                    TokioIo::new(stream),
                                    TowerToHyperService::new(app),
                                )
                                .await;
                        });
                    }
                });
            }
        }
        Receiver {
            url: format!("{scheme}://{addr}/hook"),
            state,
            rx,
            seen: HashSet::new(),
        }
    }

    /// The next event body, signature checked, within `EVENT_WAIT`.
    async fn next(&mut self, what: &str) -> Value {
        let hook = within(format!("the webhook {what}"), EVENT_WAIT, self.rx.recv())
            .await
            .expect("receiver channel");
        let body = match hook {
            Ok(hook) => hook.body,
            Err(e) => panic!("the webhook {what} was malformed: {e}"),
        };
        let id = body["id"].as_str().expect("event id").to_string();
        assert!(self.seen.insert(id), "event delivered twice: {body}");
        assert!(body["createdAt"].as_i64().is_some(), "createdAt: {body}");
        body
    }

    /// The next events, which must be `names` in this order.
    async fn expect(&mut self, names: &[&str]) -> Vec<Value> {
        let mut out = Vec::new();
        for name in names {
            let body = self.next(&format!("`{name}`")).await;
            assert_eq!(body["event"], *name, "events out of order: {body}");
            out.push(body);
        }
        out
    }

    fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }
}

fn start_server(url: &str) -> Server {
    start_server_env(url, &[])
}

fn start_server_env(url: &str, env: &[(&str, &str)]) -> Server {
    let mut all = vec![
        ("SIGNALBOX_WEBHOOK_SECRET", SECRET),
        ("SIGNALBOX_RING_TIMEOUT", "2s"),
    ];
    all.extend_from_slice(env);
    Server::start_with(&["--no-turn", "--no-sfu", "--webhook-url", url], &all)
}

#[tokio::test]
async fn a_calls_events_arrive_in_order_and_signed_and_a_missed_call_is_reported() {
    let mut hooks = Receiver::start(0).await;
    let s = start_server(&hooks.url);

    // Over /rtc: invite, accept, hang up.
    let mut alice = Rtc::connect(&s, "alice").await;
    let mut bob = Rtc::connect(&s, "bob").await;
    let call_id = alice
        .request(json!({"type": "call-initiate", "to": "bob", "callType": "audio"}))
        .await["callId"]
        .as_str()
        .expect("call id")
        .to_string();
    bob.expect("call-initiate").await;
    bob.request(json!({"type": "call-accept", "callId": call_id}))
        .await;
    alice.expect("call-accept").await;
    alice
        .request(json!({"type": "call-hangup", "callId": call_id}))
        .await;
    let events = hooks.expect(&["call.started", "call.ended"]).await;
    for e in &events {
        assert_eq!(e["callId"], call_id.as_str());
        assert_eq!(e["callerId"], "alice");
        assert_eq!(e["calleeId"], "bob");
        assert_eq!(e["callType"], "audio");
    }
    let ended = &events[1];
    assert_eq!(ended["status"], "ended");
    assert_eq!(ended["reason"], "hangup");
    assert!(
        ended["duration"].as_i64().is_some_and(|d| d >= 0),
        "{ended}"
    );
    assert!(events[0]["createdAt"].as_i64() <= ended["createdAt"].as_i64());

    // Over REST, nobody answers: the 2 s ring timeout makes it missed.
    let missed_id = s.client("alice").call("carol").await;
    let missed = &hooks.expect(&["call.missed"]).await[0];
    assert_eq!(missed["callId"], missed_id.as_str());
    assert_eq!(missed["calleeId"], "carol");
    assert_eq!(missed["status"], "missed");
    assert_eq!(missed["reason"], "timeout");
    assert_eq!(missed["duration"], Value::Null);
}

#[tokio::test]
async fn a_receiver_that_fails_at_first_still_gets_every_event_in_order() {
    let mut hooks = Receiver::start(2).await;
    let s = start_server(&hooks.url);
    let (alice, bob) = (s.client("alice"), s.client("bob"));
    let id = alice.call("bob").await;
    bob.put_empty(&format!("/calls/{id}/accept"))
        .await
        .expect(200);
    alice
        .put_empty(&format!("/calls/{id}/hangup"))
        .await
        .expect(200);
    // call.ended was ready at once but waits for call.started, which needs three attempts.
    hooks.expect(&["call.started", "call.ended"]).await;
    assert_eq!(hooks.requests(), 4, "two refused attempts, then one each");

    // The admin sees the attempts, newest first.
    let list = s.delivered_webhooks(2, EVENT_WAIT).await;
    let admin = s.admin();
    assert_eq!(list[0]["event"], "call.ended");
    assert_eq!(list[0]["attempts"], 1);
    assert_eq!(list[1]["event"], "call.started");
    assert_eq!(list[1]["attempts"], 3);
    assert_eq!(list[1]["lastStatus"], 204);
    assert_eq!(list[1]["url"], hooks.url.as_str());
    assert_eq!(list[1]["lastError"], Value::Null);
    assert_eq!(list[1]["nextAttemptAt"], Value::Null);
    assert!(list[1]["deliveredAt"].as_i64() >= list[1]["createdAt"].as_i64());
    let keys: HashSet<&str> = list[1]
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    let expected: HashSet<&str> = [
        "id",
        "event",
        "url",
        "status",
        "attempts",
        "lastError",
        "lastStatus",
        "createdAt",
        "deliveredAt",
        "nextAttemptAt",
    ]
    .into();
    assert_eq!(keys, expected);
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("signalbox_webhook_deliveries{status=\"delivered\"} 2")
            && metrics.contains("signalbox_webhook_deliveries{status=\"pending\"} 0"),
        "{metrics}"
    );
    let one = admin
        .get("/api/admin/webhooks/deliveries?limit=1")
        .await
        .expect(200);
    assert_eq!(one["deliveries"].as_array().map(Vec::len), Some(1));
    admin
        .get("/api/admin/webhooks/deliveries?limit=zero")
        .await
        .expect_error(400, "invalid_query");

    // Only admins.
    alice
        .get("/api/admin/webhooks/deliveries")
        .await
        .expect_error(403, "forbidden");
    s.anonymous()
        .get("/api/admin/webhooks/deliveries")
        .await
        .expect_error(401, "unauthorized");
}

#[tokio::test]
async fn an_event_queued_while_the_receiver_is_down_survives_a_restart() {
    // A port with nobody listening: the receiver is down.
    let reserved = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = reserved.local_addr().expect("addr");
    drop(reserved);
    let url = format!("http://{addr}/hook");
    let mut s = start_server(&url);
    let (alice, bob) = (s.client("alice"), s.client("bob"));
    let id = alice.call("bob").await;
    bob.put_empty(&format!("/calls/{id}/accept"))
        .await
        .expect(200);

    // The attempt failed and is waiting for its retry.
    let admin = s.admin();
    let failed = eventually("a failed attempt of call.started", EVENT_WAIT, || {
        let admin = admin.clone();
        async move {
            let body = admin
                .get("/api/admin/webhooks/deliveries")
                .await
                .expect(200);
            let d = body["deliveries"].get(0).cloned()?;
            (d["attempts"].as_u64() >= Some(1)).then_some(d)
        }
    })
    .await;
    assert_eq!(failed["event"], "call.started");
    assert_eq!(failed["status"], "pending");
    assert_eq!(failed["lastStatus"], Value::Null);
    assert!(
        failed["lastError"].as_str().is_some_and(|e| !e.is_empty()),
        "{failed}"
    );
    assert!(failed["nextAttemptAt"].as_i64().is_some(), "{failed}");

    // signalbox goes away (SIGKILL) and comes back on the same data directory; the receiver
    // comes up meanwhile.
    s.restart();
    let listener = TcpListener::bind(addr)
        .await
        .expect("bind the receiver's port again");
    let mut hooks = Receiver::serve(listener, 0);
    let started = &hooks.expect(&["call.started"]).await[0];
    assert_eq!(started["callId"], id.as_str());

    // The call goes on after the restart.
    s.client("alice")
        .put_empty(&format!("/calls/{id}/hangup"))
        .await
        .expect(200);
    let ended = &hooks.expect(&["call.ended"]).await[0];
    assert_eq!(ended["callId"], id.as_str());
}

#[tokio::test]
async fn room_events_report_joins_leaves_and_the_end_of_the_room() {
    let mut hooks = Receiver::start(0).await;
    let s = start_server(&hooks.url);
    let (alice, bob) = (s.client("alice"), s.client("bob"));
    let room = alice
        .post(
            "/rooms",
            json!({"name": "Team", "maxParticipants": 4, "isPrivate": false}),
        )
        .await
        .expect(201)["room"]
        .clone();
    let id = room["id"].as_str().expect("room id").to_string();

    let a = alice
        .post_empty(&format!("/rooms/{id}/join"))
        .await
        .expect(200);
    bob.post_empty(&format!("/rooms/{id}/join"))
        .await
        .expect(200);
    bob.post_empty(&format!("/rooms/{id}/leave"))
        .await
        .expect(200);
    alice
        .post_empty(&format!("/rooms/{id}/leave"))
        .await
        .expect(200);
    let e = hooks
        .expect(&[
            "room.participant_joined",
            "room.participant_joined",
            "room.participant_left",
            "room.participant_left",
            "room.finished",
        ])
        .await;
    assert!(e.iter().all(|x| x["roomId"] == id.as_str()), "{e:?}");
    let who: Vec<&str> = e[..4].iter().filter_map(|x| x["userId"].as_str()).collect();
    assert_eq!(who, ["alice", "bob", "bob", "alice"]);
    let counts: Vec<i64> = e[..4]
        .iter()
        .filter_map(|x| x["participants"].as_i64())
        .collect();
    assert_eq!(counts, [1, 2, 1, 0]);
    assert_eq!(e[0]["peerId"], a["peerId"]);
    assert_eq!(e[2]["reason"], "left");
    let call_id = e[0]["callId"].clone();
    assert!(call_id.is_string(), "{}", e[0]);
    assert_eq!(e[4]["reason"], "empty");
    assert_eq!(e[4]["callId"], call_id);
    assert!(e[4]["duration"].as_i64().is_some(), "{}", e[4]);

    // Deleting a room with someone in it: they leave, and the room is finished.
    alice
        .post_empty(&format!("/rooms/{id}/join"))
        .await
        .expect(200);
    alice.delete(&format!("/rooms/{id}")).await.expect(200);
    let e = hooks
        .expect(&[
            "room.participant_joined",
            "room.participant_left",
            "room.finished",
        ])
        .await;
    assert_eq!(e[1]["userId"], "alice");
    assert_eq!(e[1]["reason"], "room-deleted");
    assert_eq!(e[2]["reason"], "deleted");
    assert_eq!(e[2]["roomId"], id.as_str());
}

#[tokio::test]
async fn an_https_receiver_trusted_through_the_system_ca_store_gets_the_events() {
    let dir = tempfile::tempdir().expect("tmp");
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("cert");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, certified.cert.pem()).expect("write the CA file");
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(certified.cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                certified.signing_key.serialize_der(),
            )),
        )
        .expect("server config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mut hooks = Receiver::serve_tls(listener, 0, Some(TlsAcceptor::from(Arc::new(config))));
    assert!(hooks.url.starts_with("https://"), "{}", hooks.url);
    // SSL_CERT_FILE replaces the system's CA bundle for the server's HTTP client.
    let s = start_server_env(
        &hooks.url,
        &[("SSL_CERT_FILE", ca_file.to_str().expect("path"))],
    );
    let (alice, bob) = (s.client("alice"), s.client("bob"));
    let id = alice.call("bob").await;
    bob.put_empty(&format!("/calls/{id}/accept"))
        .await
        .expect(200);
    assert_eq!(
        hooks.expect(&["call.started"]).await[0]["callId"],
        id.as_str()
    );
}

#[test]
fn a_bad_webhook_url_stops_the_start_with_a_message_naming_the_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let child = std::process::Command::new(common::BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--no-turn", "--no-sfu"])
        .arg("--data-dir")
        .arg(tmp.path())
        .args(["--webhook-url", "ftp://example.invalid/hook"])
        .env("SIGNALBOX_WEBHOOK_SECRET", SECRET)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start signalbox");
    let out = common::output_within(child, Duration::from_secs(30), "signalbox with a bad URL");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("webhook_urls") && err.contains("ftp://"),
        "{err}"
    );
}
