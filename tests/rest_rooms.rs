//! Seed 001's room endpoints: capacity, privacy, peers, the room call, ownership.

mod common;

use common::Server;
use serde_json::json;

#[tokio::test]
async fn rooms_admit_up_to_capacity_and_track_peers_and_the_room_call() {
    let s = Server::start();
    let (alice, bob, carol) = (s.client("alice"), s.client("bob"), s.client("carol"));

    let room = alice
        .post(
            "/rooms",
            json!({"name": "Team", "maxParticipants": 2, "isPrivate": false}),
        )
        .await
        .expect(201)["room"]
        .clone();
    let id = room["id"].as_str().expect("id").to_string();
    assert_eq!(room["name"], "Team");
    assert_eq!(room["maxParticipants"], 2);
    assert_eq!(room["isPrivate"], false);
    assert_eq!(room["ownerId"], "alice");
    assert_eq!(
        bob.get(&format!("/rooms/{id}")).await.expect(200)["room"]["id"],
        id.as_str()
    );

    let a = alice
        .post_empty(&format!("/rooms/{id}/join"))
        .await
        .expect(200);
    let peer_a = a["peerId"].as_str().expect("peer").to_string();
    assert_eq!(a["room"]["participantCount"], 1);
    // Joining twice returns the same peer.
    assert_eq!(
        alice
            .post_empty(&format!("/rooms/{id}/join"))
            .await
            .expect(200)["peerId"],
        peer_a.as_str()
    );
    let b = bob
        .post_empty(&format!("/rooms/{id}/join"))
        .await
        .expect(200);
    assert_ne!(b["peerId"], peer_a.as_str());
    assert_eq!(b["callId"], a["callId"], "one call for the room");
    let call_id = a["callId"].as_str().expect("call").to_string();

    // Full: 409 and nothing changes.
    let members_before = s.count("room_members");
    carol
        .post_empty(&format!("/rooms/{id}/join"))
        .await
        .expect_error(409, "room_full");
    assert_eq!(s.count("room_members"), members_before);

    // The room call shows in the participants' history, not in carol's.
    let call = bob.get(&format!("/calls/{call_id}")).await.expect(200)["callSession"].clone();
    assert_eq!(call["kind"], "room");
    assert_eq!(call["status"], "active");
    carol
        .get(&format!("/calls/{call_id}"))
        .await
        .expect_error(404, "not_found");

    assert_eq!(
        alice
            .post_empty(&format!("/rooms/{id}/leave"))
            .await
            .expect(200)["message"],
        "Left room"
    );
    alice
        .post_empty(&format!("/rooms/{id}/leave"))
        .await
        .expect_error(409, "not_in_room");
    let c = carol
        .post_empty(&format!("/rooms/{id}/join"))
        .await
        .expect(200);
    assert_eq!(
        c["callId"],
        call_id.as_str(),
        "the call goes on while someone is in"
    );
    bob.post_empty(&format!("/rooms/{id}/leave"))
        .await
        .expect(200);
    // Hanging up the room call is leaving the room; the last one out ends the call.
    carol
        .put_empty(&format!("/calls/{call_id}/hangup"))
        .await
        .expect(200);
    let call = alice.get(&format!("/calls/{call_id}")).await.expect(200)["callSession"].clone();
    assert_eq!(call["status"], "ended");
    assert_eq!(call["participants"].as_array().expect("p").len(), 3);
    assert_eq!(
        alice.get(&format!("/rooms/{id}")).await.expect(200)["room"]["participantCount"],
        0
    );

    // Only the owner (or an admin) deletes.
    bob.delete(&format!("/rooms/{id}"))
        .await
        .expect_error(403, "forbidden");
    assert_eq!(
        alice.delete(&format!("/rooms/{id}")).await.expect(200)["message"],
        "Room deleted"
    );
    alice
        .get(&format!("/rooms/{id}"))
        .await
        .expect_error(404, "not_found");
    // History outlives the room.
    assert_eq!(
        bob.get(&format!("/calls/{call_id}")).await.expect(200)["callSession"]["status"],
        "ended"
    );
}

#[tokio::test]
async fn private_rooms_admit_owner_members_and_admins_only() {
    let s = Server::start();
    let (alice, bob, eve) = (s.client("alice"), s.client("bob"), s.client("eve"));
    let room = alice
        .post(
            "/rooms",
            json!({"name": "Secret", "maxParticipants": 4, "isPrivate": true, "members": ["bob"]}),
        )
        .await
        .expect(201)["room"]
        .clone();
    let id = room["id"].as_str().expect("id");
    assert_eq!(room["members"], json!(["bob"]));

    eve.get(&format!("/rooms/{id}"))
        .await
        .expect_error(403, "forbidden");
    eve.post_empty(&format!("/rooms/{id}/join"))
        .await
        .expect_error(403, "forbidden");
    eve.delete(&format!("/rooms/{id}"))
        .await
        .expect_error(403, "forbidden");
    alice
        .post_empty(&format!("/rooms/{id}/join"))
        .await
        .expect(200);
    bob.post_empty(&format!("/rooms/{id}/join"))
        .await
        .expect(200);
    s.admin()
        .post_empty(&format!("/rooms/{id}/join"))
        .await
        .expect(200);
    assert_eq!(
        alice.get(&format!("/rooms/{id}")).await.expect(200)["room"]["participantCount"],
        3
    );

    // An admin may delete any room; the live call ends with reason room-closed.
    let call_id = alice.get(&format!("/rooms/{id}")).await.expect(200)["room"]["callId"]
        .as_str()
        .expect("call")
        .to_string();
    s.admin().delete(&format!("/rooms/{id}")).await.expect(200);
    let call = bob.get(&format!("/calls/{call_id}")).await.expect(200)["callSession"].clone();
    assert_eq!(call["endReason"], "room-closed");
}

#[tokio::test]
async fn room_input_is_validated() {
    let s = Server::start();
    let alice = s.client("alice");
    for (body, field) in [
        (json!({"maxParticipants": 3}), "name"),
        (json!({"name": ""}), "name"),
        (
            json!({"name": "x", "maxParticipants": 1}),
            "maxParticipants",
        ),
        (
            json!({"name": "x", "maxParticipants": 500}),
            "maxParticipants",
        ),
        (
            json!({"name": "x", "maxParticipants": "two"}),
            "maxParticipants",
        ),
        (json!({"name": "x", "isPrivate": "yes"}), "isPrivate"),
        (
            json!({"name": "x", "members": ["ok", "not ok"]}),
            "members[1]",
        ),
    ] {
        let r = alice.post("/rooms", body.clone()).await;
        assert_eq!(r.status.as_u16(), 400, "{body}: {}", r.body);
        let msg = r.body["error"]["message"].as_str().expect("message");
        assert!(msg.contains(field), "{body}: {msg}");
    }
    assert_eq!(s.count("rooms"), 0);
    // JSON does not tell 4 from 4.0 (nor does the OpenAPI's `integer`); the name is stored trimmed.
    let room = alice
        .post("/rooms", json!({"name": " Team ", "maxParticipants": 4.0}))
        .await
        .expect(201)["room"]
        .clone();
    assert_eq!(room["maxParticipants"], 4);
    assert_eq!(room["name"], "Team");
    alice
        .get("/rooms/nope")
        .await
        .expect_error(400, "invalid_id");
    alice
        .post_empty("/rooms/00000000-0000-4000-8000-000000000000/join")
        .await
        .expect_error(404, "not_found");
}
