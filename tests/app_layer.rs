//! The application layer seen from outside: whichever transport a change comes on (REST,
//! `/rtc`, Socket.IO), it is persisted and delivered the same way. One leave path: the last
//! peer to leave a room — by `room-leave`, by hanging up the room call, over REST, or by
//! dropping — ends the room call in the database and every connected participant hears
//! `call-ended`.

mod common;

use std::time::Duration;

use common::{eventually, Rtc, Server};
use serde_json::{json, Value};

async fn room(s: &Server) -> String {
    s.client("alice")
        .post("/rooms", json!({"name": "Standup", "maxParticipants": 4}))
        .await
        .expect(201)["room"]["id"]
        .as_str()
        .expect("room id")
        .to_string()
}

async fn join(c: &mut Rtc, room_id: &str) -> Value {
    let ack = c
        .request(json!({"type": "room-join", "roomId": room_id}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    ack
}

fn call_status(s: &Server, call_id: &str) -> (String, Option<String>) {
    s.db()
        .query_row(
            "SELECT status, end_reason FROM calls WHERE id = ?1",
            [call_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("the room call row")
}

#[tokio::test]
async fn the_last_peer_out_ends_the_room_call_on_every_path() {
    let s = Server::start();

    // 1. Over /rtc: room-leave by the last peer ends the call; its participant is told.
    let room_id = room(&s).await;
    let mut alice = Rtc::connect(&s, "alice").await;
    let mut bob = Rtc::connect(&s, "bob").await;
    let call_id = join(&mut alice, &room_id).await["callId"]
        .as_str()
        .expect("callId")
        .to_string();
    join(&mut bob, &room_id).await;
    alice.expect("room-peer-joined").await;
    let left = alice
        .request(json!({"type": "room-leave", "roomId": room_id}))
        .await;
    assert_eq!(left["type"], "ack", "{left}");
    assert_eq!(bob.expect("room-peer-left").await["userId"], "alice");
    assert_eq!(call_status(&s, &call_id).0, "active", "bob is still in");
    let left = bob
        .request(json!({"type": "room-leave", "roomId": room_id}))
        .await;
    assert_eq!(left["type"], "ack", "{left}");
    let ended = bob.expect("call-ended").await;
    assert_eq!(ended["callId"], call_id.as_str(), "{ended}");
    assert_eq!(call_status(&s, &call_id).0, "ended");

    // 2. Over /rtc by hanging up the room call: the same path.
    let call_id = join(&mut alice, &room_id).await["callId"]
        .as_str()
        .expect("callId")
        .to_string();
    let hung = alice
        .request(json!({"type": "call-hangup", "callId": call_id}))
        .await;
    assert_eq!(hung["type"], "ack", "{hung}");
    assert_eq!(alice.expect("call-ended").await["callId"], call_id.as_str());
    assert_eq!(call_status(&s, &call_id).0, "ended");

    // 3. Over REST: the live peers are told and the last one out ends the call.
    let call_id = join(&mut alice, &room_id).await["callId"]
        .as_str()
        .expect("callId")
        .to_string();
    join(&mut bob, &room_id).await;
    alice.expect("room-peer-joined").await;
    s.client("bob")
        .post_empty(&format!("/rooms/{room_id}/leave"))
        .await
        .expect(200);
    assert_eq!(alice.expect("room-peer-left").await["userId"], "bob");
    s.client("alice")
        .post_empty(&format!("/rooms/{room_id}/leave"))
        .await
        .expect(200);
    assert_eq!(alice.expect("call-ended").await["callId"], call_id.as_str());
    assert_eq!(call_status(&s, &call_id).0, "ended");

    // 4. By dropping: the remaining peer is told at once, the call ends with the last drop.
    let call_id = join(&mut alice, &room_id).await["callId"]
        .as_str()
        .expect("callId")
        .to_string();
    join(&mut bob, &room_id).await;
    alice.expect("room-peer-joined").await;
    drop(bob);
    assert_eq!(alice.expect("room-peer-left").await["userId"], "bob");
    drop(alice);
    eventually(
        "the room call to end after its last peer dropped",
        Duration::from_secs(10),
        || async { (call_status(&s, &call_id).0 == "ended").then_some(()) },
    )
    .await;
    let peers: i64 = s
        .db()
        .query_row(
            "SELECT COUNT(*) FROM room_members WHERE room_id = ?1 AND peer_id IS NOT NULL",
            [&room_id],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(peers, 0, "nobody is left in the room");
}

#[tokio::test]
async fn a_rest_change_reaches_socket_clients_without_transport_code() {
    let s = Server::start();
    let mut bob = Rtc::connect(&s, "bob").await;
    // Created over REST: bob's socket rings.
    let call_id = s.client("alice").call("bob").await;
    let invite = bob.expect("call-initiate").await;
    assert_eq!(invite["callId"], call_id.as_str());
    // Accepted over /rtc, muted over REST, ended over REST: each reaches the other side.
    let mut alice = Rtc::connect(&s, "alice").await;
    let ack = bob
        .request(json!({"type": "call-accept", "callId": call_id}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(alice.expect("call-accept").await["from"], "bob");
    s.client("bob")
        .put(
            &format!("/calls/{call_id}/mute-audio"),
            json!({"mute": true}),
        )
        .await
        .expect(200);
    let media = alice.expect("media-state").await;
    assert_eq!(
        (media["from"].clone(), media["audio"].clone()),
        (json!("bob"), json!(false))
    );
    s.client("alice")
        .put_empty(&format!("/calls/{call_id}/hangup"))
        .await
        .expect(200);
    assert_eq!(bob.expect("call-hangup").await["from"], "alice");
    assert_eq!(bob.expect("call-ended").await["reason"], "hangup");
}
