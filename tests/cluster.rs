//! Cluster mode with real parts: two or three signalbox nodes on one PostgreSQL and one Redis
//! (the tests' own, on loopback ports in temp dirs), real `/rtc` clients and Node's
//! `socket.io-client`. A call rings, is accepted, signals and ends across nodes; a user on two
//! nodes rings on both and the first accept wins; a node killed while its call rings leaves the
//! call missed for the callee on the other node; a client that reconnects to another node within
//! the grace keeps its call; a Redis outage degrades the nodes, and calls across nodes work
//! again once it is back.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::postgres::Postgres;
use common::redis::Redis;
use common::{eventually, node_script, Rtc, Server};
use serde_json::{json, Value};

const JWT_SECRET: &str = "cluster-test-jwt-secret-0123456789abcdef";
const TURN_SECRET: &str = "cluster-test-turn-secret-0123456789";

/// One PostgreSQL, one Redis and `n` nodes named `a`, `b`, `c`, … on them.
struct Cluster {
    nodes: Vec<Server>,
    _dirs: Vec<tempfile::TempDir>,
    redis: Redis,
    _pg: Postgres,
}

fn node_env(ring_timeout: &str, grace: &str) -> Vec<(String, String)> {
    vec![
        ("SIGNALBOX_LOGIN_RATE_PER_MINUTE".into(), "3".into()),
        ("SIGNALBOX_JWT_SECRET".into(), JWT_SECRET.into()),
        ("SIGNALBOX_TURN_SECRET".into(), TURN_SECRET.into()),
        ("SIGNALBOX_RING_TIMEOUT".into(), ring_timeout.into()),
        ("SIGNALBOX_RECONNECT_GRACE".into(), grace.into()),
    ]
}

async fn start_cluster(n: usize, ring_timeout: &str, grace: &str) -> Cluster {
    let pg = Postgres::start();
    let db = pg.fresh_database("cluster");
    let redis = Redis::start();
    let env = node_env(ring_timeout, grace);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut nodes = Vec::new();
    let mut dirs = Vec::new();
    for i in 0..n {
        let name = ((b'a' + i as u8) as char).to_string();
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        // The shared secret, where the test helpers read it to mint tokens.
        std::fs::write(data.join("jwt-secret"), JWT_SECRET).expect("jwt-secret");
        let redis_url = redis.url();
        let args = [
            "--database-url",
            &db,
            "--redis-url",
            &redis_url,
            "--node-name",
            &name,
            "--turn-listen",
            "127.0.0.1:0",
            "--public-host",
            "127.0.0.1",
            "--no-sfu",
        ];
        nodes.push(Server::start_in(&data, &args, &env));
        dirs.push(dir);
    }
    let cluster = Cluster {
        nodes,
        _dirs: dirs,
        redis,
        _pg: pg,
    };
    for node in &cluster.nodes {
        cluster_formed(node, n).await;
    }
    cluster
}

/// `/healthz` of `node`.
async fn health(node: &Server) -> Option<Value> {
    let r = node
        .http
        .get(format!("{}/healthz", node.base))
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

/// Waits until `node` sees `n` live nodes with Redis up.
async fn cluster_formed(node: &Server, n: usize) {
    eventually(
        &format!("{} to see {n} live nodes with Redis up", node.base),
        Duration::from_secs(20),
        || async {
            let h = health(node).await?;
            (h["status"] == "ok" && h["cluster"]["redis"] == "ok" && h["cluster"]["nodes"] == n)
                .then_some(())
        },
    )
    .await;
}

async fn call_status(node: &Server, user: &str, call_id: &str) -> String {
    node.client(user)
        .get(&format!("/calls/{call_id}"))
        .await
        .expect(200)["callSession"]["status"]
        .as_str()
        .unwrap_or("?")
        .to_string()
}

fn candidate(n: u32) -> Value {
    json!({"candidate": format!("candidate:{n} 1 udp 2122260223 127.0.0.1 5000{n} typ host"), "sdpMid": "0"})
}

/// alice on `a` calls bob on `b` (and on `a` as a second device): both of bob's devices ring,
/// the accept on `b` wins everywhere, candidates cross in both directions to the accepting
/// device only, the hang-up reaches every device, and every node shows the call and history.
/// `/ice-config` lists the relays of both nodes, each node's own first.
#[tokio::test]
async fn a_call_across_nodes_rings_every_device_signals_and_ends_everywhere() {
    let c = start_cluster(2, "45s", "20s").await;
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    let mut alice = Rtc::connect(a, "alice").await;
    let mut bob_b = Rtc::connect(b, "bob").await;
    let mut bob_a = Rtc::connect(a, "bob").await;

    let ack = alice
        .request(
            json!({"type": "call-initiate", "to": "bob", "callType": "video",
            "sdp": {"type": "offer", "sdp": "v=0\r\n"}}),
        )
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let call_id = ack["callId"].as_str().expect("callId").to_string();
    let invite = bob_b.expect("call-initiate").await;
    assert_eq!(
        (invite["callId"].as_str(), invite["from"].as_str()),
        (Some(call_id.as_str()), Some("alice"))
    );
    assert_eq!(invite["sdp"]["type"], "offer", "{invite}");
    assert_eq!(
        bob_a.expect("call-initiate").await["callId"],
        call_id.as_str()
    );

    let ack = bob_b
        .request(json!({"type": "call-accept", "callId": call_id}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(alice.expect("call-accept").await["from"], "bob");
    assert_eq!(
        bob_a.expect("call-accepted-elsewhere").await["callId"],
        call_id.as_str()
    );
    // The second accept, on the other node, loses.
    let late = bob_a
        .request(json!({"type": "call-accept", "callId": call_id}))
        .await;
    assert_eq!(late["type"], "error", "{late}");

    alice
        .request(json!({"type": "ice-candidate", "callId": call_id, "candidate": candidate(1)}))
        .await;
    assert_eq!(
        bob_b.expect("ice-candidate").await["candidate"],
        candidate(1)
    );
    bob_b
        .request(json!({"type": "ice-candidate", "callId": call_id, "candidate": candidate(2)}))
        .await;
    let got = alice.expect("ice-candidate").await;
    assert_eq!(
        (got["from"].as_str(), &got["candidate"]),
        (Some("bob"), &candidate(2))
    );
    // bob's other device is not part of the media path.
    bob_a.expect_silence(Duration::from_millis(300)).await;

    alice
        .request(json!({"type": "call-hangup", "callId": call_id}))
        .await;
    assert_eq!(bob_b.expect("call-hangup").await["from"], "alice");
    assert_eq!(bob_b.expect("call-ended").await["reason"], "hangup");
    assert_eq!(bob_a.expect("call-ended").await["callId"], call_id.as_str());
    assert_eq!(alice.expect("call-ended").await["callId"], call_id.as_str());

    for node in [a, b] {
        assert_eq!(call_status(node, "bob", &call_id).await, "ended");
        let h = node.client("alice").get("/calls/history").await.expect(200);
        assert_eq!(h["calls"][0]["id"], call_id.as_str(), "{h}");
    }

    // Both relays, with the asking node's first, and one credential for both.
    let ice_a = a.client("alice").get("/ice-config").await.expect(200);
    let ice_b = b.client("alice").get("/ice-config").await.expect(200);
    let udp = |v: &Value| -> Vec<String> {
        v["uris"]
            .as_array()
            .expect("uris")
            .iter()
            .filter_map(|u| u.as_str())
            .filter(|u| u.starts_with("turn:") && u.ends_with("transport=udp"))
            .map(str::to_string)
            .collect()
    };
    let (ua, ub) = (udp(&ice_a), udp(&ice_b));
    assert_eq!(ua.len(), 2, "{ice_a}");
    assert_eq!(
        (ua[0].clone(), ua[1].clone()),
        (ub[1].clone(), ub[0].clone()),
        "{ice_a} {ice_b}"
    );
}

/// A Socket.IO caller (Node's socket.io-client) on `a` calls a `/rtc` callee on `b`. Login
/// attempts are counted by both nodes together (3 a minute per client here).
#[tokio::test]
async fn a_socketio_caller_on_one_node_calls_an_rtc_callee_on_another() {
    let c = start_cluster(2, "45s", "20s").await;
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    for (node, status) in [(a, 401), (b, 401), (a, 401), (b, 429)] {
        let r = node.login("nobody", "wrong").await;
        assert_eq!(
            r.status.as_u16(),
            status,
            "login attempt on {}: {:?}",
            node.base,
            r.body
        );
    }
    let mut bob = Rtc::connect(b, "bob").await;
    let cmd = node_script("sio_caller.mjs");
    let client = tokio::process::Command::new(&cmd[0])
        .args(&cmd[1..])
        .args([a.base.as_str(), &a.token("alice"), "bob", "websocket"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // Its complaints go straight to the test's output (shown when the test fails).
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start the socket.io-client caller");
    let invite = bob
        .recv_within(
            Duration::from_secs(60),
            "`call-initiate` from the Socket.IO caller on a",
        )
        .await;
    let invite = Rtc::expect_kind(invite, "call-initiate");
    assert_eq!(invite["from"], "alice");
    let call_id = invite["callId"].as_str().expect("callId").to_string();
    bob.request(json!({"type": "call-accept", "callId": call_id}))
        .await;
    let offer = bob.expect("call-sdp-update").await;
    assert_eq!(offer["sdp"]["type"], "offer", "{offer}");
    assert!(bob.expect("ice-candidate").await["candidate"]["candidate"].is_string());
    let answer = json!({"type": "answer", "sdp": "v=0\r\no=- 3 4 IN IP4 127.0.0.1\r\ns=rtc\r\n"});
    let ack = bob
        .request(json!({"type": "call-answer", "callId": call_id, "sdp": answer}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    bob.request(json!({"type": "ice-candidate", "callId": call_id, "to": "alice", "candidate": candidate(3)}))
        .await;
    assert_eq!(bob.expect("call-hangup").await["from"], "alice");
    assert_eq!(bob.expect("call-ended").await["reason"], "hangup");
    let out = tokio::time::timeout(Duration::from_secs(60), client.wait_with_output())
        .await
        .expect("the Socket.IO caller exits within 60 s")
        .expect("wait for the Socket.IO caller");
    assert!(
        out.status.success(),
        "the Socket.IO caller failed ({}): see its stderr above",
        out.status
    );
    assert_eq!(call_status(b, "bob", &call_id).await, "ended");
}

/// The node a ringing call was placed on is killed (SIGKILL): the callee on the other node
/// still hears `call-ended` and the call is `missed`, within the ring timeout and a sweep.
#[tokio::test]
async fn a_node_killed_while_its_call_rings_leaves_the_call_missed_for_the_callee() {
    let mut c = start_cluster(2, "4s", "20s").await;
    let mut alice = Rtc::connect(&c.nodes[0], "alice").await;
    let mut bob = Rtc::connect(&c.nodes[1], "bob").await;
    let ack = alice
        .request(json!({"type": "call-initiate", "to": "bob", "callType": "audio"}))
        .await;
    let call_id = ack["callId"].as_str().expect("callId").to_string();
    assert_eq!(
        bob.expect("call-initiate").await["callId"],
        call_id.as_str()
    );
    c.nodes[0].kill9();
    // Ring timeout 4 s, a one-second sweep, and margin for a busy machine.
    let ended = bob
        .recv_within(Duration::from_secs(15), "`call-ended` after node a died")
        .await;
    let ended = Rtc::expect_kind(ended, "call-ended");
    assert_eq!(ended["callId"], call_id.as_str());
    assert_eq!(ended["reason"], "timeout", "{ended}");
    assert_eq!(call_status(&c.nodes[1], "bob", &call_id).await, "missed");
}

/// bob's connection to `b` drops during a call; he reconnects to `a` within the grace period
/// and speaks on the call again: it goes on past the grace, on both nodes.
#[tokio::test]
async fn a_client_reconnecting_to_another_node_within_the_grace_keeps_its_call() {
    let c = start_cluster(2, "45s", "3s").await;
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    let mut alice = Rtc::connect(a, "alice").await;
    let mut bob = Rtc::connect(b, "bob").await;
    let ack = alice
        .request(json!({"type": "call-initiate", "to": "bob", "callType": "video"}))
        .await;
    let call_id = ack["callId"].as_str().expect("callId").to_string();
    bob.expect("call-initiate").await;
    bob.request(json!({"type": "call-accept", "callId": call_id}))
        .await;
    alice.expect("call-accept").await;
    drop(bob);

    let mut bob = Rtc::connect(a, "bob").await;
    let calls = bob.welcome["activeCalls"].as_array().expect("activeCalls");
    assert!(
        calls
            .iter()
            .any(|c| c["id"] == call_id.as_str() && c["status"] == "active"),
        "{}",
        bob.welcome
    );
    bob.request(json!({"type": "ice-candidate", "callId": call_id, "candidate": candidate(4)}))
        .await;
    assert_eq!(
        alice.expect("ice-candidate").await["candidate"],
        candidate(4)
    );
    // Past the grace period (3 s) and a sweep: nothing ended.
    alice.expect_silence(Duration::from_secs(5)).await;
    for node in [a, b] {
        assert_eq!(call_status(node, "alice", &call_id).await, "active");
    }
    alice
        .request(json!({"type": "ice-candidate", "callId": call_id, "candidate": candidate(5)}))
        .await;
    assert_eq!(bob.expect("ice-candidate").await["candidate"], candidate(5));
}

/// Redis is killed mid-run: the nodes report it (`/healthz` degraded, the metric at 0) and
/// still carry calls between their own users; once Redis is back, within seconds the cluster
/// forms again and a call across nodes rings.
#[tokio::test]
async fn after_a_redis_restart_calls_across_nodes_work_again() {
    let mut c = start_cluster(2, "45s", "20s").await;
    let mut bob = Rtc::connect(&c.nodes[1], "bob").await;
    c.redis.stop();
    let a = &c.nodes[0];
    eventually(
        "node a to report Redis unavailable",
        Duration::from_secs(15),
        || async {
            let h = health(a).await?;
            (h["status"] == "degraded" && h["cluster"]["redis"] == "unavailable").then_some(())
        },
    )
    .await;
    assert_eq!(
        common::metric(&a.metrics().await, "signalbox_cluster_redis_up"),
        Some(0)
    );
    // Local users still call each other.
    let mut alice = Rtc::connect(a, "alice").await;
    let mut carol = Rtc::connect(a, "carol").await;
    let ack = alice
        .request(json!({"type": "call-initiate", "to": "carol", "callType": "audio"}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(carol.expect("call-initiate").await["from"], "alice");
    alice
        .request(json!({"type": "call-hangup", "callId": ack["callId"]}))
        .await;

    c.redis.start_again();
    for node in &c.nodes {
        cluster_formed(node, 2).await;
    }
    assert_eq!(
        common::metric(&c.nodes[0].metrics().await, "signalbox_cluster_redis_up"),
        Some(1)
    );
    // bob stayed connected to b through the outage; his presence is back with b's heartbeat.
    // Within seconds a call from a rings him (each try that finds him unreachable ends at once
    // as `unavailable`, and the next one is placed).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut tries = 0;
    loop {
        tries += 1;
        let ack = alice
            .request(json!({"type": "call-initiate", "to": "bob", "callType": "audio"}))
            .await;
        assert_eq!(ack["type"], "ack", "{ack}");
        let rung = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                let v = bob.recv("`call-initiate` after Redis came back").await;
                if v["type"] == "call-initiate" {
                    return v;
                }
            }
        })
        .await;
        if let Ok(invite) = rung {
            assert_eq!(invite["callId"], ack["callId"]);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no call from a rang bob on b within 20 s of Redis being back ({tries} tries)"
        );
        // This try is over (ended as unavailable, or still ringing nowhere): hang it up.
        alice
            .request(json!({"type": "call-hangup", "callId": ack["callId"]}))
            .await;
    }
}
