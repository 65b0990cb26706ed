//! The admin API against the real server: `GET /api/admin/live` shows a call between two
//! connected users (participants, connections, media path) and a room in use, and forgets them
//! when they end; an admin ends anyone's call (a room's too, the room staying) and everyone in it
//! hears `call-ended`; built-in
//! accounts are added, listed, reset and removed, and bad input is refused without a change;
//! non-admins get 403 and anonymous callers 401 everywhere.

mod common;

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{eventually, Rtc, Server};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

/// Alice calls Bob over `/rtc` and Bob accepts; returns both sockets and the call id.
async fn active_call(s: &Server) -> (Rtc, Rtc, String) {
    let mut alice = Rtc::connect(s, "alice").await;
    let mut bob = Rtc::connect(s, "bob").await;
    let ack = alice
        .request(json!({"type": "call-initiate", "to": "bob", "callType": "audio"}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let id = ack["callId"].as_str().expect("callId").to_string();
    bob.expect("call-initiate").await;
    let ack = bob
        .request(json!({"type": "call-accept", "callId": id}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    alice.expect("call-accept").await;
    (alice, bob, id)
}

async fn live(s: &Server) -> Value {
    s.admin().get("/api/admin/live").await.expect(200)
}

fn participant<'a>(call: &'a Value, user: &str) -> &'a Value {
    call["participants"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["userId"] == user))
        .unwrap_or_else(|| panic!("{user} is not a participant of {call}"))
}

#[tokio::test]
async fn live_view_shows_a_running_call_until_it_ends() {
    let s = Server::start();
    s.admin()
        .post(
            "/api/admin/users",
            json!({"username": "alice", "password": "correct horse", "name": "Alice"}),
        )
        .await
        .expect(201);
    let (mut alice, mut bob, id) = active_call(&s).await;

    let view = live(&s).await;
    let calls = view["calls"].as_array().expect("calls");
    assert_eq!(calls.len(), 1, "{view}");
    let call = &calls[0];
    assert_eq!(call["id"], id.as_str());
    assert_eq!(call["status"], "active");
    assert_eq!(call["topology"], "p2p");
    assert_eq!(call["callType"], "audio");
    assert_eq!(
        (call["callerId"].as_str(), call["calleeId"].as_str()),
        (Some("alice"), Some("bob"))
    );
    assert!(
        call["answeredAt"].is_string() && call["duration"].as_i64() >= Some(0),
        "{call}"
    );
    let a = participant(call, "alice");
    assert_eq!(a["displayName"], "Alice", "the account's name: {a}");
    assert_eq!(a["role"], "caller");
    for user in ["alice", "bob"] {
        let p = participant(call, user);
        assert_eq!(p["connected"], true, "{p}");
        let sessions = p["sessions"].as_array().expect("sessions");
        assert_eq!(sessions.len(), 1, "{p}");
        assert_eq!(sessions[0]["transport"], "rtc", "{p}");
        assert_eq!(
            sessions[0]["inCall"], true,
            "the socket that placed/answered it: {p}"
        );
    }
    assert_eq!(
        participant(call, "bob")["displayName"],
        Value::Null,
        "no account, no name"
    );
    assert!(
        view["rooms"].as_array().is_some_and(Vec::is_empty),
        "{view}"
    );
    assert!(view["connections"].as_u64() >= Some(2), "{view}");
    assert_eq!(
        view["relay"],
        Value::Null,
        "this server runs with --no-turn: {view}"
    );

    let ack = alice
        .request(json!({"type": "call-hangup", "callId": id}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    bob.expect("call-hangup").await;
    eventually("the ended call to leave the live view", WAIT, || async {
        live(&s).await["calls"]
            .as_array()
            .is_some_and(Vec::is_empty)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_admin_ends_a_call_and_both_sides_hear_it() {
    let s = Server::start();
    let (mut alice, mut bob, id) = active_call(&s).await;
    let ended = s
        .admin()
        .put_empty(&format!("/calls/{id}/hangup"))
        .await
        .expect(200);
    assert_eq!(ended["callSession"]["status"], "ended");
    assert_eq!(ended["callSession"]["endReason"], "admin");
    for (who, socket) in [("alice", &mut alice), ("bob", &mut bob)] {
        let frame = next_of(socket, "call-ended", who).await;
        assert_eq!(frame["callId"], id.as_str(), "{frame}");
        assert_eq!(frame["reason"], "admin", "{frame}");
    }
    let history = s.client("alice").get("/calls/history").await.expect(200);
    assert_eq!(history["calls"][0]["id"], id.as_str());
    assert_eq!(history["calls"][0]["endReason"], "admin");
    assert!(live(&s).await["calls"]
        .as_array()
        .is_some_and(Vec::is_empty));
    // Ending it again changes nothing.
    s.admin()
        .put_empty(&format!("/calls/{id}/hangup"))
        .await
        .expect_error(409, "call_ended");
}

#[tokio::test]
async fn live_view_shows_a_room_in_use() {
    let s = Server::start();
    let room = s
        .client("alice")
        .post("/rooms", json!({"name": "Standup", "mode": "mesh"}))
        .await
        .expect(201)["room"]
        .clone();
    let room_id = room["id"].as_str().expect("room id").to_string();
    let mut alice = Rtc::connect(&s, "alice").await;
    let mut bob = Rtc::connect(&s, "bob").await;
    let mut peer_ids = Vec::new();
    for c in [&mut alice, &mut bob] {
        let ack = c
            .request(json!({"type": "room-join", "roomId": room_id}))
            .await;
        assert_eq!(ack["type"], "ack", "{ack}");
        peer_ids.push(ack["peerId"].as_str().expect("peerId").to_string());
    }
    alice.expect("room-peer-joined").await;

    let view = live(&s).await;
    assert!(
        view["calls"].as_array().is_some_and(Vec::is_empty),
        "room calls are under rooms: {view}"
    );
    let rooms = view["rooms"].as_array().expect("rooms");
    assert_eq!(rooms.len(), 1, "{view}");
    let r = &rooms[0];
    assert_eq!(r["id"], room_id.as_str());
    assert_eq!(r["name"], "Standup");
    assert_eq!(r["mode"], "mesh");
    assert_eq!(r["topology"], "mesh");
    assert!(r["callId"].is_string(), "{r}");
    for (user, peer) in [("alice", &peer_ids[0]), ("bob", &peer_ids[1])] {
        let p = participant(r, user);
        assert_eq!(p["peerId"], peer.as_str(), "{p}");
        assert_eq!(p["sessions"][0]["inCall"], true, "{p}");
    }

    for c in [&mut alice, &mut bob] {
        let ack = c
            .request(json!({"type": "room-leave", "roomId": room_id}))
            .await;
        assert_eq!(ack["type"], "ack", "{ack}");
    }
    eventually("the empty room to leave the live view", WAIT, || async {
        live(&s).await["rooms"]
            .as_array()
            .is_some_and(Vec::is_empty)
            .then_some(())
    })
    .await;
}

/// The next frame of `kind` within `WAIT`, skipping others.
async fn next_of(socket: &mut Rtc, kind: &str, who: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let frame = socket
            .recv_until(deadline, &format!("`{kind}` at {who}"))
            .await;
        if frame["type"] == kind {
            return frame;
        }
    }
}

#[tokio::test]
async fn an_admin_ends_a_room_call_and_the_room_stays() {
    let s = Server::start();
    let room_id = s
        .client("alice")
        .post("/rooms", json!({"name": "Retro", "mode": "mesh"}))
        .await
        .expect(201)["room"]["id"]
        .as_str()
        .expect("room id")
        .to_string();
    let mut alice = Rtc::connect(&s, "alice").await;
    let mut bob = Rtc::connect(&s, "bob").await;
    let mut call_id = String::new();
    for c in [&mut alice, &mut bob] {
        let ack = c
            .request(json!({"type": "room-join", "roomId": room_id}))
            .await;
        assert_eq!(ack["type"], "ack", "{ack}");
        call_id = ack["callId"].as_str().expect("callId").to_string();
    }
    assert_eq!(live(&s).await["rooms"][0]["callId"], call_id.as_str());

    let ended = s
        .admin()
        .put_empty(&format!("/calls/{call_id}/hangup"))
        .await
        .expect(200);
    assert_eq!(ended["callSession"]["status"], "ended");
    assert_eq!(ended["callSession"]["endReason"], "admin");
    for (who, socket) in [("alice", &mut alice), ("bob", &mut bob)] {
        let frame = next_of(socket, "call-ended", who).await;
        assert_eq!(
            (frame["callId"].as_str(), frame["reason"].as_str()),
            (Some(call_id.as_str()), Some("admin")),
            "{frame}"
        );
    }
    let view = live(&s).await;
    assert!(
        view["rooms"].as_array().is_some_and(Vec::is_empty),
        "{view}"
    );
    // The room stays, empty, and a new join starts a new call.
    let room = s
        .client("alice")
        .get(&format!("/rooms/{room_id}"))
        .await
        .expect(200);
    assert_eq!(room["room"]["participantCount"], 0, "{room}");
    assert_eq!(room["room"]["callId"], Value::Null, "{room}");
    let ack = alice
        .request(json!({"type": "room-join", "roomId": room_id}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_ne!(ack["callId"], call_id.as_str(), "a new room call: {ack}");
    s.admin()
        .put_empty(&format!("/calls/{call_id}/hangup"))
        .await
        .expect_error(409, "call_ended");
}

#[tokio::test]
async fn the_admin_api_is_for_admins_only() {
    let s = Server::start();
    let id = s.client("alice").call("bob").await;
    let routes: Vec<(reqwest::Method, String, Option<Value>)> = vec![
        (reqwest::Method::GET, "/api/admin/live".into(), None),
        (reqwest::Method::GET, "/api/admin/users".into(), None),
        (
            reqwest::Method::POST,
            "/api/admin/users".into(),
            Some(json!({"username": "eve", "password": "password123"})),
        ),
        (
            reqwest::Method::DELETE,
            "/api/admin/users/alice".into(),
            None,
        ),
        (
            reqwest::Method::POST,
            "/api/admin/users/alice/password".into(),
            Some(json!({"password": "password123"})),
        ),
        (
            reqwest::Method::GET,
            format!("/api/admin/calls/{id}/quality"),
            None,
        ),
    ];
    for (method, path, body) in routes {
        let user = s
            .client("alice")
            .send(method.clone(), &path, body.clone())
            .await;
        let message = user.expect_error(403, "forbidden");
        assert!(message.contains("admin"), "{method} {path}: {message}");
        s.anonymous()
            .send(method.clone(), &path, body)
            .await
            .expect_error(401, "unauthorized");
    }
    assert_eq!(s.count("users"), 0, "nothing was created");
}

#[tokio::test]
async fn accounts_are_managed_and_bad_input_changes_nothing() {
    let s = Server::start();
    let admin = s.admin();
    let created = admin
        .post(
            "/api/admin/users",
            json!({"username": "carol", "password": "first password", "name": " Carol ", "admin": false}),
        )
        .await
        .expect(201);
    assert_eq!(created["user"]["id"], "carol");
    assert_eq!(created["user"]["name"], "Carol");
    assert_eq!(created["user"]["admin"], false);
    let login = |password: &'static str| s.login("carol", password);
    assert_eq!(
        login("first password").await.expect(200)["user"]["id"],
        "carol"
    );

    // Bad input: a clear 4xx naming the problem, and no change.
    let bad: Vec<(Value, u16, &str, &str)> = vec![
        (
            json!({"username": "bad name", "password": "long enough"}),
            400,
            "invalid_field",
            "username",
        ),
        (
            json!({"username": "", "password": "long enough"}),
            400,
            "invalid_field",
            "username",
        ),
        (
            json!({"username": "dave", "password": "short"}),
            400,
            "invalid_field",
            "password",
        ),
        (
            json!({"username": "dave"}),
            400,
            "invalid_field",
            "password",
        ),
        (
            json!({"username": "dave", "password": "long enough", "name": "   "}),
            400,
            "invalid_field",
            "name",
        ),
        (
            json!({"username": "dave", "password": "long enough", "admin": "yes"}),
            400,
            "invalid_field",
            "admin",
        ),
        (
            json!({"username": "carol", "password": "another password"}),
            409,
            "user_exists",
            "carol",
        ),
    ];
    for (body, status, code, mentions) in bad {
        let message = admin
            .post("/api/admin/users", body.clone())
            .await
            .expect_error(status, code);
        assert!(message.contains(mentions), "{body}: {message}");
    }
    assert_eq!(s.count("users"), 1);
    assert_eq!(
        login("first password").await.expect(200)["user"]["id"],
        "carol"
    );

    let list = admin.get("/api/admin/users").await.expect(200);
    let users = list["users"].as_array().expect("users");
    assert_eq!(users.len(), 1, "{list}");
    assert_eq!(users[0]["id"], "carol");
    assert!(users[0]["createdAt"].is_string(), "{list}");

    // Password reset.
    admin
        .post(
            "/api/admin/users/carol/password",
            json!({"password": "short"}),
        )
        .await
        .expect_error(400, "invalid_field");
    admin
        .post(
            "/api/admin/users/nobody/password",
            json!({"password": "long enough"}),
        )
        .await
        .expect_error(404, "not_found");
    admin
        .post(
            "/api/admin/users/bad%20id/password",
            json!({"password": "long enough"}),
        )
        .await
        .expect_error(400, "invalid_field");
    assert_eq!(
        login("first password").await.expect(200)["user"]["id"],
        "carol"
    );
    admin
        .post(
            "/api/admin/users/carol/password",
            json!({"password": "second password"}),
        )
        .await
        .expect(200);
    login("first password")
        .await
        .expect_error(401, "invalid_credentials");
    assert_eq!(
        login("second password").await.expect(200)["user"]["id"],
        "carol"
    );

    // Removal.
    admin
        .delete("/api/admin/users/nobody")
        .await
        .expect_error(404, "not_found");
    admin
        .delete("/api/admin/users/bad%20id")
        .await
        .expect_error(400, "invalid_field");
    admin
        .delete("/api/admin/users/admin")
        .await
        .expect_error(409, "cannot_remove_self");
    assert_eq!(s.count("users"), 1);
    assert_eq!(
        admin.delete("/api/admin/users/carol").await.expect(200)["message"],
        "User removed"
    );
    assert_eq!(s.count("users"), 0);
    login("second password")
        .await
        .expect_error(401, "invalid_credentials");
}

#[tokio::test]
async fn a_calls_quality_reports_come_as_a_time_series() {
    let s = Server::start();
    let id = s.client("alice").call("bob").await;
    for (rtt, loss) in [(40.0, 0.01), (55.5, 0.0)] {
        s.client("alice")
            .post(
                &format!("/calls/{id}/stats"),
                json!({"stats": {"rttMs": rtt, "packetLoss": loss, "bitrateKbps": 800}}),
            )
            .await
            .expect(202);
    }
    let series = s
        .admin()
        .get(&format!("/api/admin/calls/{id}/quality"))
        .await
        .expect(200);
    assert_eq!(series["callId"], id.as_str());
    let samples = series["samples"].as_array().expect("samples");
    assert_eq!(samples.len(), 2, "{series}");
    assert_eq!(samples[0]["userId"], "alice");
    assert_eq!(samples[0]["rttMs"], 40.0);
    assert_eq!(samples[1]["rttMs"], 55.5);
    assert_eq!(samples[1]["jitterMs"], Value::Null);
    assert_eq!(samples[0]["bitrateKbps"], 800.0);
    s.admin()
        .get("/api/admin/calls/00000000-0000-4000-8000-000000000000/quality")
        .await
        .expect_error(404, "not_found");
    s.admin()
        .get("/api/admin/calls/nope/quality")
        .await
        .expect_error(400, "invalid_id");
}

/// A coturn test tool running until dropped.
struct Tool(Child);

impl Tool {
    fn spawn(name: &str, args: &[String]) -> Tool {
        Tool(
            Command::new(name)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("{name} does not start ({e}): run scripts/install-test-deps (coturn)")
                }),
        )
    }
}

impl Drop for Tool {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn live_view_shows_what_the_relay_carries_for_a_participant() {
    let s = Server::start_with(
        &[
            "--turn-listen",
            "127.0.0.1:0",
            "--relay-ports",
            "52400-52500",
            "--public-host",
            "127.0.0.1",
            "--turn-allow-peer",
            "127.0.0.0/8",
        ],
        &[],
    );
    let (_alice, _bob, id) = active_call(&s).await;
    let ice = s.client("alice").get("/ice-config").await.expect(200);
    let uri = ice["uris"][0].as_str().expect("a turn uri").to_string();
    let port = uri
        .trim_start_matches("turn:127.0.0.1:")
        .trim_end_matches("?transport=udp")
        .to_string();
    let peer_port = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free port")
        .port()
        .to_string();
    let _peer = Tool::spawn(
        "turnutils_peer",
        &["-p", &peer_port, "-L", "127.0.0.1"].map(String::from),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    // 1000 messages 20 ms apart: the allocation stays open for about 20 s.
    let args = [
        "-u",
        ice["username"].as_str().expect("username"),
        "-w",
        ice["password"].as_str().expect("password"),
        "-p",
        &port,
        "-e",
        "127.0.0.1",
        "-r",
        &peer_port,
        "-n",
        "1000",
        "-l",
        "200",
        "127.0.0.1",
    ]
    .map(String::from);
    let _client = Tool::spawn("turnutils_uclient", &args);

    let view = eventually(
        "alice's live allocation relaying bytes in the live view",
        Duration::from_secs(15),
        || async {
            let view = live(&s).await;
            let call = view["calls"].as_array()?.first()?.clone();
            let relay = participant(&call, "alice")["relay"].clone();
            (relay["allocations"].as_u64() >= Some(1) && relay["bytesToPeer"].as_u64() > Some(0))
                .then_some(view)
        },
    )
    .await;
    assert_eq!(view["calls"][0]["id"], id.as_str());
    assert_eq!(
        participant(&view["calls"][0], "bob")["relay"]["allocations"],
        0
    );
    let relay = &view["relay"];
    assert!(relay["allocations"].as_u64() >= Some(1), "{relay}");
    assert!(relay["allocationsCreated"].as_u64() >= Some(1), "{relay}");
    let sessions = relay["sessions"].as_array().expect("sessions");
    let mine = sessions
        .iter()
        .find(|a| a["userId"] == "alice")
        .unwrap_or_else(|| panic!("no allocation of alice in {relay}"));
    assert_eq!(mine["transport"], "udp", "{mine}");
    assert!(
        mine["relayAddress"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{mine}"
    );
    assert!(
        relay["bytesToPeer"].as_u64() >= mine["bytesToPeer"].as_u64(),
        "{relay}"
    );
}
