//! Socket.IO interop with third-party clients (Node's `socket.io-client`, Python's
//! `python-socketio`) over websocket and long-polling, calling a native `/rtc` client: the
//! cross-protocol call exchanges offer, answer and candidates, hangs up, and shows in history
//! and analytics; and a client that emits the instant it is connected never loses that first
//! event. The clients are installed by `scripts/deps/interop.sh`.

mod common;

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{interop_dir, node_script, within, Rtc, Server};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

fn client_command(kind: &str) -> Vec<String> {
    let dir = interop_dir();
    match kind {
        "node" => node_script("sio_caller.mjs"),
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

/// A client script running as a child process: killed when dropped (a failing test included),
/// its stdout read line by line, its stderr collected and printed if the test fails.
struct Script {
    name: String,
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
    stderr_done: tokio::task::JoinHandle<()>,
}

impl Script {
    fn spawn(name: &str, cmd: &[String], args: &[&str]) -> Script {
        let mut child = tokio::process::Command::new(&cmd[0])
            .args(&cmd[1..])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({}): {e}", cmd[0]));
        let (Some(stdout), Some(mut pipe)) = (child.stdout.take(), child.stderr.take()) else {
            panic!("{name}: no stdout/stderr pipes");
        };
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let stderr_done = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        Script {
            name: name.to_string(),
            child,
            stdout: BufReader::new(stdout).lines(),
            stderr,
            stderr_done,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The next stdout line within `limit` (absolute: nothing else the script does extends it).
    async fn line(&mut self, limit: Duration, what: &str) -> String {
        match tokio::time::timeout(limit, self.stdout.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => panic!(
                "{} closed its stdout before printing {what}; stderr: {}",
                self.name,
                self.stderr()
            ),
            Ok(Err(e)) => panic!("reading {}'s stdout: {e}", self.name),
            Err(_) => panic!(
                "timed out after {limit:?} waiting for {} to print {what}; stderr: {}",
                self.name,
                self.stderr()
            ),
        }
    }

    /// Waits for the script to exit (killed past `limit`); returns its status and its stderr.
    async fn exit(&mut self, limit: Duration) -> (std::process::ExitStatus, String) {
        let status = match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.expect("wait for the script"),
            Err(_) => panic!(
                "timed out after {limit:?} waiting for {} to exit; stderr: {}",
                self.name,
                self.stderr()
            ),
        };
        // Its stderr reaches EOF with it.
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.stderr_done).await;
        (status, self.stderr())
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {} stderr ---\n{}", self.name, self.stderr());
        }
    }
}

/// A Socket.IO caller (alice) calls a /rtc callee (bob) through one server.
async fn cross_protocol_call(kind: &str, transport: &str) {
    let s = Server::start();
    let mut bob = Rtc::connect(&s, "bob").await;
    let cmd = client_command(kind);
    let token = s.token("alice");
    let mut client = Script::spawn(
        &format!("the {kind}/{transport} Socket.IO client"),
        &cmd,
        &[&s.base, &token, "bob", transport],
    );

    // The client process (Node or Python) may take a while to start on a busy machine; if it
    // exits instead (its first event lost, say), fail at once with what it printed.
    let awaited = format!("`call-initiate` from the {kind}/{transport} client");
    let invite = tokio::select! {
        v = bob.recv_within(Duration::from_secs(60), &awaited) => Rtc::expect_kind(v, "call-initiate"),
        status = client.child.wait() => panic!(
            "the {kind}/{transport} client exited ({status:?}) before bob was rung; stderr: {}",
            client.stderr()
        ),
    };
    assert_eq!(invite["from"], "alice");
    let call_id = invite["callId"].as_str().expect("callId").to_string();
    let printed = client.line(Duration::from_secs(10), "`CALL <id>`").await;
    assert_eq!(printed, format!("CALL {call_id}"));

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

    let (status, stderr) = client.exit(Duration::from_secs(60)).await;
    assert!(
        status.success(),
        "{kind}/{transport} client failed ({status}): {stderr}"
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

/// Busy-looping threads that keep the CPU loaded until dropped: on a loaded machine the gap
/// between the server's CONNECT answer and its connect handler widens.
struct CpuLoad {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CpuLoad {
    fn start(threads: usize) -> CpuLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        CpuLoad { stop, threads }
    }
}

impl Drop for CpuLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A Socket.IO client that emits the instant the CONNECT answer arrives gets that event handled:
/// 4 clients in parallel × 250 connect-and-emit cycles (`tests/interop/sio_first_event.mjs`)
/// with one core kept busy, and every `webrtc:call` is acked `ok` and recorded. The call goes to
/// a user with no connection, so it ends at once as missed and no callee is needed. An event the
/// server drops is never acked; the script gives each ack 10 s (the slowest real ack seen on the
/// busy 2-core machine took 2 s) and stops early once 3 are lost.
#[tokio::test]
async fn an_event_emitted_the_instant_a_socket_io_client_connects_is_never_lost() {
    const WORKERS: u64 = 4;
    const CYCLES: u64 = 250;
    let s = Server::start();
    let token = s.token("alice");
    let cmd = node_script("sio_first_event.mjs");
    let load = CpuLoad::start(1);
    let (workers, cycles) = (WORKERS.to_string(), CYCLES.to_string());
    // The script stops itself after 60 s whatever happens, and is killed 15 s later if not.
    let mut script = Script::spawn(
        "sio_first_event.mjs",
        &cmd,
        &[
            &s.base, &token, "nobody", &workers, &cycles, "10000", "60000", "3",
        ],
    );
    let line = script
        .line(Duration::from_secs(75), "its counts (a JSON line)")
        .await;
    drop(load);
    let (status, stderr) = script.exit(Duration::from_secs(10)).await;
    let counts: Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("unreadable counts {line:?} ({e}); stderr: {stderr}"));
    let n = |key: &str| counts[key].as_u64().unwrap_or(u64::MAX);
    assert_eq!(
        n("lost"),
        0,
        "{} of {} events emitted on `connect` got no ack: {counts}",
        n("lost"),
        n("sent")
    );
    assert_eq!(
        (n("refused"), n("connectErrors"), n("closedBeforeConnect")),
        (0, 0, 0),
        "(refused, connect errors, disconnected before CONNECT): {counts}; stderr: {stderr}"
    );
    assert_eq!(counts["timedOut"], false, "unfinished in 60 s: {counts}");
    assert_eq!(
        (n("sent"), n("acked")),
        (WORKERS * CYCLES, WORKERS * CYCLES),
        "(sent, acked): {counts}"
    );
    assert!(status.success(), "{status}: {stderr}");
    // The server agrees: one call per emit, each ended as missed.
    let history = within(
        "alice's call history",
        Duration::from_secs(30),
        s.client("alice").get("/calls/history?limit=1"),
    )
    .await
    .expect(200);
    assert_eq!(history["total"], WORKERS * CYCLES, "{history}");
}
