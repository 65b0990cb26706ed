//! Durability: calls, rooms and accounts survive a restart, and a `kill -9` in the middle of a
//! burst of writes loses no acknowledged row and leaves no half-written one.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Server;
use serde_json::json;

#[tokio::test]
async fn calls_rooms_and_users_survive_a_restart() {
    let mut s = Server::start();
    let dir = s.data_dir.to_str().expect("path").to_string();
    let mut child = std::process::Command::new(common::BIN)
        .args([
            "user",
            "add",
            "erin",
            "--password-stdin",
            "--data-dir",
            &dir,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn user add");
    if let Some(mut pipe) = child.stdin.take() {
        use std::io::Write;
        pipe.write_all(b"erin-password\n")
            .expect("write the password");
    }
    let out = common::output_within(child, Duration::from_secs(60), "`signalbox user add erin`");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (alice, bob) = (s.client("alice"), s.client("bob"));
    let id = alice.call("bob").await;
    bob.put_empty(&format!("/calls/{id}/accept"))
        .await
        .expect(200);
    let room = alice
        .post(
            "/rooms",
            json!({"name": "Kept", "maxParticipants": 3, "isPrivate": true, "members": ["bob"]}),
        )
        .await
        .expect(201);
    let room_id = room["room"]["id"].as_str().expect("id").to_string();
    bob.post_empty(&format!("/rooms/{room_id}/join"))
        .await
        .expect(200);
    let old_token = s.token("alice");

    s.restart();
    let (alice, bob) = (s.client("alice"), s.client("bob"));
    // Tokens minted before the restart still verify: the secret was persisted.
    s.anonymous()
        .with_token(&old_token)
        .get("/api/me")
        .await
        .expect(200);
    let call = alice.get(&format!("/calls/{id}")).await.expect(200)["callSession"].clone();
    assert_eq!(call["status"], "active");
    let room = bob.get(&format!("/rooms/{room_id}")).await.expect(200)["room"].clone();
    assert_eq!(room["name"], "Kept");
    assert_eq!(room["participantCount"], 1);
    assert_eq!(room["members"], json!(["bob"]));
    s.client("eve")
        .get(&format!("/rooms/{room_id}"))
        .await
        .expect_error(403, "forbidden");
    let login = s
        .anonymous()
        .post(
            "/api/auth/login",
            json!({"username": "erin", "password": "erin-password"}),
        )
        .await
        .expect(200);
    assert_eq!(login["user"]["id"], "erin");
    // And the call can still be finished.
    alice
        .put_empty(&format!("/calls/{id}/hangup"))
        .await
        .expect(200);
    assert_eq!(alice.get("/calls/history").await.expect(200)["total"], 1);
}

#[tokio::test]
async fn kill_9_during_writes_loses_no_acknowledged_row() {
    let mut s = Server::start();
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut writers = Vec::new();
    for w in 0..8 {
        let client = s.client(&format!("writer{w}"));
        let acked = acknowledged.clone();
        writers.push(tokio::spawn(async move {
            for _ in 0..500 {
                let r = client
                    .http
                    .post(format!("{}/calls", client.base))
                    .bearer_auth(client.token.as_deref().unwrap_or_default())
                    .json(&json!({"calleeId": "target", "callType": "audio"}))
                    .send()
                    .await;
                let Ok(r) = r else { return };
                if r.status().as_u16() != 201 {
                    return;
                }
                let Ok(body) = r.json::<serde_json::Value>().await else {
                    return;
                };
                if let Some(id) = body["callSession"]["id"].as_str() {
                    acked.lock().expect("lock").push(id.to_string());
                }
            }
        }));
    }
    // Let the writers get going, then pull the plug.
    common::eventually(
        "some writes to be acknowledged",
        Duration::from_secs(30),
        || {
            let n = acknowledged.lock().expect("lock").len();
            async move { (n >= 50).then_some(()) }
        },
    )
    .await;
    s.kill9();
    // Each writer's next request fails at once (or within the client's 30 s timeout).
    for w in writers {
        let _ = common::within(
            "a writer to stop after the kill",
            Duration::from_secs(40),
            w,
        )
        .await;
    }
    let acked = acknowledged.lock().expect("lock").clone();
    assert!(acked.len() >= 50);

    // The file is consistent, every acknowledged call is there, and no call lacks its rows.
    let db = s.db();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check");
    assert_eq!(check, "ok");
    for id in &acked {
        let n: i64 = db
            .query_row("SELECT COUNT(*) FROM calls WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .expect("q");
        assert_eq!(n, 1, "acknowledged call {id} lost");
    }
    let half: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM calls c WHERE
               (SELECT COUNT(*) FROM call_participants p WHERE p.call_id = c.id) <> 2
               OR NOT EXISTS (SELECT 1 FROM call_events e WHERE e.call_id = c.id AND e.kind = 'created')",
            [],
            |r| r.get(0),
        )
        .expect("q");
    assert_eq!(half, 0, "half-written calls after kill -9");
    drop(db);

    // The server starts again on the same file and serves the data.
    s.restart();
    let first = &acked[0];
    let writer = s.admin().get(&format!("/calls/{first}")).await.expect(200);
    assert_eq!(writer["callSession"]["status"], "ringing");
    let total = s.admin().get("/calls/history").await.expect(200)["total"]
        .as_u64()
        .expect("total");
    assert!(total >= acked.len() as u64);
}
