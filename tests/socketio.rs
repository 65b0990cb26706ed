//! Socket.IO interop with third-party clients (Node's `socket.io-client`, Python's
//! `python-socketio`) over websocket and long-polling, calling a native `/rtc` client: the
//! cross-protocol call exchanges offer, answer and candidates, hangs up, and shows in history
//! and analytics. The clients are installed by `scripts/deps/interop.sh`.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::{Rtc, Server};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

fn client_command(kind: &str) -> Vec<String> {
    let dir = interop_dir();
    match kind {
        "node" => {
            assert!(
                dir.join("node_modules/socket.io-client").is_dir(),
                "socket.io-client is not installed: run scripts/install-test-deps"
            );
            vec![
                "node".into(),
                dir.join("sio_caller.mjs").display().to_string(),
            ]
        }
        _ => {
            let python = dir.join(".venv/bin/python");
            assert!(
                python.is_file(),
                "python-socketio is not installed: run scripts/install-test-deps"
            );
            vec![
                python.display().to_string(),
                dir.join("sio_caller.py").display().to_string(),
            ]
        }
    }
}

/// A Socket.IO caller (alice) calls a /rtc callee (bob) through one server.
async fn cross_protocol_call(kind: &str, transport: &str) {
    let s = Server::start();
    let mut bob = Rtc::connect(&s, "bob").await;
    let cmd = client_command(kind);
    let mut child = tokio::process::Command::new(&cmd[0])
        .args(&cmd[1..])
        .args([&s.base, &s.token("alice"), "bob", transport])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the Socket.IO client");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();

    // The client process (Node or Python) may take a while to start on a busy machine.
    let invite = Rtc::expect_kind(
        bob.recv_within(Duration::from_secs(60)).await,
        "call-initiate",
    );
    assert_eq!(invite["from"], "alice");
    let call_id = invite["callId"].as_str().expect("callId").to_string();
    let printed = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("CALL line")
        .expect("read");
    assert_eq!(printed, Some(format!("CALL {call_id}")));

    bob.request(json!({"type": "call-accept", "callId": call_id}))
        .await;
    let offer = bob.expect("call-sdp-update").await;
    assert_eq!(
        (offer["from"].as_str(), offer["sdp"]["type"].as_str()),
        (Some("alice"), Some("offer"))
    );
    let cand = bob.expect("ice-candidate").await;
    assert!(cand["candidate"]["candidate"].is_string(), "{cand}");
    let answer = json!({"type": "answer", "sdp": "v=0\r\no=- 3 4 IN IP4 127.0.0.1\r\ns=rtc\r\n"});
    let ack = bob
        .request(json!({"type": "call-answer", "callId": call_id, "sdp": answer}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    bob.request(json!({"type": "ice-candidate", "callId": call_id, "to": "alice",
        "candidate": {"candidate": "candidate:2 1 udp 2122260223 127.0.0.1 50001 typ host", "sdpMid": "0"}})).await;
    assert_eq!(bob.expect("call-hangup").await["from"], "alice");
    assert_eq!(bob.expect("call-ended").await["reason"], "hangup");

    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("client exits")
        .expect("wait");
    assert!(
        out.status.success(),
        "{kind}/{transport} client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let rest = s.client("bob");
    let call = rest.get(&format!("/calls/{call_id}")).await.expect(200)["callSession"].clone();
    assert_eq!(
        (call["status"].as_str(), call["callerId"].as_str()),
        (Some("ended"), Some("alice"))
    );
    let h = s.client("alice").get("/calls/history").await.expect(200);
    assert_eq!(h["calls"][0]["id"], call_id.as_str());
    let a = rest
        .get(&format!("/calls/{call_id}/analytics"))
        .await
        .expect(200)["analytics"]
        .clone();
    assert!(a["duration"].as_i64().is_some(), "{a}");
    let events: Vec<&str> = a["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter_map(|e| e["event"].as_str())
        .collect();
    assert_eq!(events, vec!["created", "accepted", "ended"]);
}

#[tokio::test]
async fn node_socket_io_client_over_websocket_calls_an_rtc_client() {
    cross_protocol_call("node", "websocket").await;
}

#[tokio::test]
async fn node_socket_io_client_over_polling_calls_an_rtc_client() {
    cross_protocol_call("node", "polling").await;
}

#[tokio::test]
async fn python_socketio_client_over_websocket_calls_an_rtc_client() {
    cross_protocol_call("python", "websocket").await;
}

#[tokio::test]
async fn python_socketio_client_over_polling_calls_an_rtc_client() {
    cross_protocol_call("python", "polling").await;
}
