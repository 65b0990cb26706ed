//! Group rooms over `/rtc`: three peers join, every pair exchanges offer/answer/candidates
//! addressed by peer id, one leaves and the others are told, a dropped connection leaves too.

mod common;

use common::{Rtc, Server};
use serde_json::{json, Value};

fn sdp(kind: &str, who: &str) -> Value {
    json!({"type": kind, "sdp": format!("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns={who}\r\n")})
}

#[tokio::test]
async fn three_peers_mesh_and_leave() {
    let s = Server::start();
    let room = s
        .client("alice")
        .post(
            "/rooms",
            json!({"name": "Mesh", "maxParticipants": 3, "isPrivate": false, "mode": "mesh"}),
        )
        .await
        .expect(201)["room"]
        .clone();
    let room_id = room["id"].as_str().expect("id").to_string();
    let mut peers: Vec<(String, String)> = Vec::new();
    let mut clients: Vec<Rtc> = Vec::new();
    for user in ["alice", "bob", "carol"] {
        let mut c = Rtc::connect(&s, user).await;
        let ack = c
            .request(json!({"type": "room-join", "roomId": room_id}))
            .await;
        assert_eq!(ack["type"], "ack", "{ack}");
        // The newcomer learns who is already there.
        let existing: Vec<&str> = ack["peers"]
            .as_array()
            .expect("peers")
            .iter()
            .filter_map(|p| p["peerId"].as_str())
            .collect();
        assert_eq!(existing.len(), peers.len(), "{ack}");
        for (pid, _) in &peers {
            assert!(existing.contains(&pid.as_str()), "{ack}");
        }
        let peer_id = ack["peerId"].as_str().expect("peerId").to_string();
        let call_id = ack["callId"].as_str().expect("callId").to_string();
        // Everyone already there is told.
        for other in clients.iter_mut() {
            let j = other.expect("room-peer-joined").await;
            assert_eq!(
                (j["peerId"].as_str(), j["userId"].as_str()),
                (Some(peer_id.as_str()), Some(user))
            );
        }
        peers.push((peer_id, call_id));
        clients.push(c);
    }
    let call_id = peers[0].1.clone();
    assert!(
        peers.iter().all(|(_, c)| *c == call_id),
        "one call for the room"
    );

    // Every pair: the later joiner offers, the earlier one answers, both trickle a candidate.
    for late in 1..3 {
        for early in 0..late {
            let (to_early, to_late) = (peers[early].0.clone(), peers[late].0.clone());
            clients[late].request(json!({"type": "call-sdp-update", "callId": call_id, "to": to_early, "sdp": sdp("offer", "o")})).await;
            let got = clients[early].expect("call-sdp-update").await;
            assert_eq!(
                (got["fromPeer"].as_str(), got["sdp"]["type"].as_str()),
                (Some(to_late.as_str()), Some("offer"))
            );
            clients[early].request(json!({"type": "call-sdp-update", "callId": call_id, "to": to_late, "sdp": sdp("answer", "a")})).await;
            let got = clients[late].expect("call-sdp-update").await;
            assert_eq!(
                (got["fromPeer"].as_str(), got["sdp"]["type"].as_str()),
                (Some(to_early.as_str()), Some("answer"))
            );
            let cand =
                json!({"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0"});
            clients[late].request(json!({"type": "ice-candidate", "callId": call_id, "to": to_early, "candidate": cand})).await;
            assert_eq!(
                clients[early].expect("ice-candidate").await["fromPeer"],
                to_late.as_str()
            );
            clients[early].request(json!({"type": "ice-candidate", "callId": call_id, "to": to_late, "candidate": cand})).await;
            assert_eq!(
                clients[late].expect("ice-candidate").await["fromPeer"],
                to_early.as_str()
            );
        }
    }

    // Addressing a peer that is not in the room, or omitting `to`, is an error.
    let e = clients[0]
        .request(
            json!({"type": "ice-candidate", "callId": call_id, "to": "nobody", "candidate": null}),
        )
        .await;
    assert_eq!(e["code"], "unknown_peer");
    let e = clients[0]
        .request(json!({"type": "ice-candidate", "callId": call_id, "candidate": null}))
        .await;
    assert_eq!(e["code"], "invalid_field");
    // An outsider cannot signal into the room.
    let mut eve = Rtc::connect(&s, "eve").await;
    let e = eve.request(json!({"type": "call-sdp-update", "callId": call_id, "to": peers[0].0, "sdp": sdp("offer", "x")})).await;
    assert_eq!(e["code"], "not_found");
    // The room is full.
    let e = eve
        .request(json!({"type": "room-join", "roomId": room_id}))
        .await;
    assert_eq!(e["code"], "room_full");

    // Bob leaves: Alice and Carol are told.
    clients[1]
        .request(json!({"type": "room-leave", "roomId": room_id}))
        .await;
    for i in [0, 2] {
        let left = clients[i].expect("room-peer-left").await;
        assert_eq!(
            (left["peerId"].as_str(), left["userId"].as_str()),
            (Some(peers[1].0.as_str()), Some("bob"))
        );
    }
    // Carol's connection drops: Alice is told, and the REST view agrees.
    let carol = clients.pop().expect("carol");
    drop(carol);
    let left = clients[0].expect("room-peer-left").await;
    assert_eq!(left["userId"], "carol");
    let r = common::eventually(
        "carol to be out of the room",
        std::time::Duration::from_secs(10),
        || {
            let alice = s.client("alice");
            let room_id = room_id.clone();
            async move {
                let room =
                    alice.get(&format!("/rooms/{room_id}")).await.expect(200)["room"].clone();
                (room["participantCount"] == 1).then_some(room)
            }
        },
    )
    .await;
    assert_eq!(r["participants"][0]["userId"], "alice");

    // The last one out ends the room call; it is in history with all three participants.
    clients[0]
        .request(json!({"type": "room-leave", "roomId": room_id}))
        .await;
    let call = s
        .client("alice")
        .get(&format!("/calls/{call_id}"))
        .await
        .expect(200)["callSession"]
        .clone();
    assert_eq!(call["status"], "ended");
    assert_eq!(
        call["participants"].as_array().expect("participants").len(),
        3
    );
}
