//! Seed 001 call endpoints against the real server: the happy path, every refused transition,
//! other users' calls, history paging and filters, analytics, and the ring timeout.

mod common;

use std::time::Duration;

use common::{eventually, Server};
use serde_json::json;

#[tokio::test]
async fn call_rings_is_accepted_muted_and_hung_up() {
    let s = Server::start();
    let (alice, bob) = (s.client("alice"), s.client("bob"));

    let created = alice
        .post("/calls", json!({"callerId": "alice", "calleeId": "bob", "callType": "audio", "roomName": "standup"}))
        .await
        .expect(201);
    let call = &created["callSession"];
    let id = call["id"].as_str().expect("id");
    assert_eq!(call["status"], "ringing");
    assert_eq!(call["callerId"], "alice");
    assert_eq!(call["calleeId"], "bob");
    assert_eq!(call["callType"], "audio");
    assert_eq!(call["roomName"], "standup");
    assert_eq!(created["roomId"], call["roomId"]);
    assert!(created["roomId"].is_string());

    // The callee sees it; accepting makes it active.
    assert_eq!(
        bob.get(&format!("/calls/{id}")).await.expect(200)["callSession"]["status"],
        "ringing"
    );
    let accepted = bob
        .put_empty(&format!("/calls/{id}/accept"))
        .await
        .expect(200);
    assert_eq!(accepted["callSession"]["status"], "active");
    assert!(accepted["callSession"]["answeredAt"].is_string());

    let muted = alice
        .put(&format!("/calls/{id}/mute-audio"), json!({"mute": true}))
        .await
        .expect(200);
    assert_eq!(muted["message"], "Audio muted");
    let me = muted["callSession"]["participants"]
        .as_array()
        .expect("participants")
        .iter()
        .find(|p| p["userId"] == "alice")
        .expect("alice")
        .clone();
    assert_eq!(me["audio"], false);
    assert_eq!(
        alice
            .put(&format!("/calls/{id}/mute-audio"), json!({"mute": false}))
            .await
            .expect(200)["message"],
        "Audio unmuted"
    );
    assert_eq!(
        bob.put(&format!("/calls/{id}/mute-video"), json!({"mute": true}))
            .await
            .expect(200)["message"],
        "Video muted"
    );
    assert_eq!(
        bob.put(&format!("/calls/{id}/mute-video"), json!({"mute": false}))
            .await
            .expect(200)["message"],
        "Video unmuted"
    );
    let switched = bob
        .put(
            &format!("/calls/{id}/switch-camera"),
            json!({"camera": "back"}),
        )
        .await
        .expect(200);
    assert_eq!(switched["message"], "Camera switched");
    // switch-camera needs no body at all.
    bob.put_empty(&format!("/calls/{id}/switch-camera"))
        .await
        .expect(200);

    let ended = alice
        .put_empty(&format!("/calls/{id}/hangup"))
        .await
        .expect(200);
    assert_eq!(ended["message"], "Call ended");
    assert_eq!(ended["callSession"]["status"], "ended");
    assert_eq!(ended["callSession"]["endReason"], "hangup");

    // Once ended, everything is refused with 409 and nothing changes.
    let before = s.count("call_events");
    for path in ["accept", "reject", "hangup"] {
        bob.put_empty(&format!("/calls/{id}/{path}"))
            .await
            .expect_error(409, "call_ended");
    }
    bob.put(&format!("/calls/{id}/mute-audio"), json!({"mute": true}))
        .await
        .expect_error(409, "call_ended");
    assert_eq!(
        s.count("call_events"),
        before,
        "refused actions wrote events"
    );
    assert_eq!(
        bob.get(&format!("/calls/{id}")).await.expect(200)["callSession"]["status"],
        "ended"
    );

    // The analytics show the whole call.
    let a = alice
        .get(&format!("/calls/{id}/analytics"))
        .await
        .expect(200)["analytics"]
        .clone();
    assert_eq!(a["status"], "ended");
    assert!(a["duration"].as_i64().expect("duration") >= 0);
    assert!(a["setupTime"].as_f64().expect("setup time") >= 0.0);
    assert_eq!(a["participants"].as_array().expect("participants").len(), 2);
    for p in a["participants"].as_array().expect("participants") {
        assert!(p["joinedAt"].is_string() && p["leftAt"].is_string(), "{p}");
    }
    let media = a["mediaTimeline"].as_array().expect("media timeline");
    assert_eq!(media.len(), 6, "{media:?}");
    assert_eq!(media[0]["state"], json!({"audio": false}));
    assert_eq!(a["quality"]["reports"], 0);
    assert_eq!(a["relay"]["allocations"], 0);
}

#[tokio::test]
async fn reject_cancel_and_wrong_participant() {
    let s = Server::start();
    let (alice, bob) = (s.client("alice"), s.client("bob"));

    let id = alice.call("bob").await;
    // The caller cannot accept or reject their own call.
    alice
        .put_empty(&format!("/calls/{id}/accept"))
        .await
        .expect_error(403, "forbidden");
    alice
        .put_empty(&format!("/calls/{id}/reject"))
        .await
        .expect_error(403, "forbidden");
    let r = bob
        .put_empty(&format!("/calls/{id}/reject"))
        .await
        .expect(200);
    assert_eq!(r["message"], "Call rejected");
    assert_eq!(r["callSession"]["status"], "rejected");
    bob.put_empty(&format!("/calls/{id}/accept"))
        .await
        .expect_error(409, "call_ended");

    let id = alice.call("bob").await;
    let c = alice
        .put_empty(&format!("/calls/{id}/hangup"))
        .await
        .expect(200);
    assert_eq!(c["callSession"]["status"], "cancelled");
    assert_eq!(c["callSession"]["endReason"], "cancelled");

    let id = alice.call("bob").await;
    bob.put_empty(&format!("/calls/{id}/accept"))
        .await
        .expect(200);
    bob.put_empty(&format!("/calls/{id}/accept"))
        .await
        .expect_error(409, "already_active");
    bob.put_empty(&format!("/calls/{id}/reject"))
        .await
        .expect_error(409, "already_active");
    // Bob hangs up an active call: ended.
    assert_eq!(
        bob.put_empty(&format!("/calls/{id}/hangup"))
            .await
            .expect(200)["callSession"]["status"],
        "ended"
    );
}

#[tokio::test]
async fn other_users_calls_are_invisible_and_admins_see_all() {
    let s = Server::start();
    let (alice, mallory) = (s.client("alice"), s.client("mallory"));
    let id = alice.call("bob").await;

    let calls_before = s.count("calls");
    let events_before = s.count("call_events");
    for reply in [
        mallory.get(&format!("/calls/{id}")).await,
        mallory.put_empty(&format!("/calls/{id}/accept")).await,
        mallory.put_empty(&format!("/calls/{id}/hangup")).await,
        mallory
            .put(&format!("/calls/{id}/mute-audio"), json!({"mute": true}))
            .await,
        mallory.get(&format!("/calls/{id}/analytics")).await,
        mallory.get(&format!("/api/video/calls/{id}")).await,
    ] {
        assert_eq!(reply.status.as_u16(), 404, "{}", reply.body);
    }
    assert_eq!(
        (s.count("calls"), s.count("call_events")),
        (calls_before, events_before)
    );
    assert_eq!(mallory.get("/calls/history").await.expect(200)["total"], 0);
    mallory
        .get("/calls/history?userId=alice")
        .await
        .expect_error(403, "forbidden");

    // Creating a call in someone else's name is refused.
    mallory
        .post(
            "/calls",
            json!({"callerId": "alice", "calleeId": "bob", "callType": "video"}),
        )
        .await
        .expect_error(403, "forbidden");

    let admin = s.admin();
    assert_eq!(
        admin.get(&format!("/calls/{id}")).await.expect(200)["callSession"]["id"],
        id.as_str()
    );
    assert_eq!(admin.get("/calls/history").await.expect(200)["total"], 1);
    assert_eq!(
        admin.get("/calls/history?userId=mallory").await.expect(200)["total"],
        0
    );
    // Admins cannot accept for the callee, but can end a call.
    admin
        .put_empty(&format!("/calls/{id}/accept"))
        .await
        .expect_error(403, "forbidden");
    let ended = admin
        .put_empty(&format!("/calls/{id}/hangup"))
        .await
        .expect(200);
    assert_eq!(ended["callSession"]["endReason"], "admin");
}

#[tokio::test]
async fn history_pages_filters_and_bounds() {
    let s = Server::start();
    let (alice, bob) = (s.client("alice"), s.client("bob"));
    let mut ids = Vec::new();
    for i in 0..5 {
        let t = if i % 2 == 0 { "audio" } else { "video" };
        let b = alice
            .post("/calls", json!({"calleeId": "bob", "callType": t}))
            .await
            .expect(201);
        ids.push(b["callSession"]["id"].as_str().expect("id").to_string());
    }
    bob.put_empty(&format!("/calls/{}/reject", ids[0]))
        .await
        .expect(200);

    let h = alice.get("/calls/history").await.expect(200);
    assert_eq!(h["total"], 5);
    assert_eq!(h["limit"], 20);
    assert_eq!(h["offset"], 0);
    let got: Vec<_> = h["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .map(|c| c["id"].as_str().expect("id").to_string())
        .collect();
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(got, newest_first, "newest first");

    let page = bob.get("/calls/history?limit=2&offset=1").await.expect(200);
    assert_eq!(page["total"], 5);
    assert_eq!(page["calls"].as_array().expect("calls").len(), 2);
    assert_eq!(page["calls"][0]["id"], newest_first[1].as_str());

    assert_eq!(
        alice.get("/calls/history?type=audio").await.expect(200)["total"],
        3
    );
    assert_eq!(
        alice
            .get("/calls/history?status=rejected")
            .await
            .expect(200)["total"],
        1
    );
    assert_eq!(
        alice
            .get("/calls/history?status=ringing&type=video")
            .await
            .expect(200)["total"],
        2
    );

    // Limit is bounded; bad parameters name themselves.
    assert_eq!(
        alice.get("/calls/history?limit=100000").await.expect(200)["limit"],
        100
    );
    for (q, field) in [
        ("limit=abc", "limit"),
        ("limit=0", "limit"),
        ("offset=-1", "offset"),
        ("type=fax", "type"),
        ("status=done", "status"),
    ] {
        let msg = alice
            .get(&format!("/calls/history?{q}"))
            .await
            .expect_error(400, "invalid_query");
        assert!(msg.starts_with(field), "{q}: {msg}");
    }
}

#[tokio::test]
async fn stats_reports_fill_the_quality_summary() {
    let s = Server::start();
    let (alice, bob) = (s.client("alice"), s.client("bob"));
    let id = alice.call("bob").await;
    bob.put_empty(&format!("/calls/{id}/accept"))
        .await
        .expect(200);
    alice
        .post(
            &format!("/calls/{id}/stats"),
            json!({"stats": {"rttMs": 40, "jitterMs": 4, "packetLoss": 0.01, "bitrateKbps": 900}}),
        )
        .await
        .expect(202);
    bob.post(
        &format!("/calls/{id}/stats"),
        json!({"stats": {"rttMs": 60, "jitterMs": 6, "packetLoss": 0.03, "bitrateKbps": 1100}}),
    )
    .await
    .expect(202);
    bob.post(&format!("/calls/{id}/stats"), json!({"stats": 5}))
        .await
        .expect_error(400, "invalid_field");
    s.client("eve")
        .post(&format!("/calls/{id}/stats"), json!({"stats": {}}))
        .await
        .expect_error(404, "not_found");

    let q = alice
        .get(&format!("/calls/{id}/analytics"))
        .await
        .expect(200)["analytics"]["quality"]
        .clone();
    assert_eq!(q["reports"], 2);
    assert_eq!(q["avgRttMs"], 50.0);
    assert_eq!(q["maxRttMs"], 60.0);
    assert_eq!(q["avgJitterMs"], 5.0);
    assert_eq!(q["avgBitrateKbps"], 1000.0);
    assert!((q["avgPacketLoss"].as_f64().expect("loss") - 0.02).abs() < 1e-9);
}

#[tokio::test]
async fn ringing_times_out_to_missed() {
    let s = Server::start_with(&["--no-turn"], &[("SIGNALBOX_RING_TIMEOUT", "1s")]);
    let alice = s.client("alice");
    let id = alice.call("bob").await;
    let call = eventually("the call to be missed", Duration::from_secs(15), || {
        let alice = alice.clone();
        let id = id.clone();
        async move {
            let c = alice.get(&format!("/calls/{id}")).await.expect(200)["callSession"].clone();
            (c["status"] == "missed").then_some(c)
        }
    })
    .await;
    assert_eq!(call["endReason"], "timeout");
    s.client("bob")
        .put_empty(&format!("/calls/{id}/accept"))
        .await
        .expect_error(409, "call_ended");
}
