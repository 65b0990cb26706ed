//! The `/rtc` WebSocket against the real server: authentication before the upgrade, welcome,
//! a whole call with offer/answer/candidates, reject, cancel, multi-device, glare, unreachable
//! callees, REST actions pushed to sockets, reconnect within the grace period, and bad input.
#![allow(clippy::disallowed_methods)] // tests are an edge: they read the clock

mod common;

use std::time::Duration;

use common::{within, Rtc, Server, FRAME_WAIT};
use serde_json::{json, Value};

fn offer() -> Value {
    json!({"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n"})
}
fn answer() -> Value {
    json!({"type": "answer", "sdp": "v=0\r\no=- 3 4 IN IP4 127.0.0.1\r\ns=-\r\n"})
}
fn candidate() -> Value {
    json!({"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host", "sdpMid": "0", "sdpMLineIndex": 0})
}

#[tokio::test]
async fn refuses_missing_bad_and_expired_tokens_before_the_upgrade() {
    let s = Server::start();
    for token in ["", "garbage", &s.token_with("alice", false, -5)] {
        let err = Rtc::connect_token(&s, token).await.err().expect("refused");
        match err {
            tokio_tungstenite::tungstenite::Error::Http(resp) => {
                assert_eq!(resp.status().as_u16(), 401)
            }
            other => panic!("expected HTTP 401, got {other:?}"),
        }
    }
    // The Authorization header works as well as ?token=.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{}/rtc", s.addr)
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", s.token("alice"))
            .parse()
            .expect("header"),
    );
    let (mut ws, _) = within(
        "the /rtc handshake with an Authorization header",
        FRAME_WAIT,
        tokio_tungstenite::connect_async(req),
    )
    .await
    .expect("connect");
    use futures_util::StreamExt;
    let first = within("the welcome frame", FRAME_WAIT, ws.next())
        .await
        .expect("frame")
        .expect("ok");
    assert!(first.to_text().expect("text").contains("\"welcome\""));
}

#[tokio::test]
async fn a_whole_call_offer_answer_candidates_hangup() {
    let s = Server::start();
    let mut alice = Rtc::connect(&s, "alice").await;
    let mut bob = Rtc::connect(&s, "bob").await;
    assert_eq!(alice.welcome["userId"], "alice");
    assert_eq!(alice.welcome["activeCalls"], json!([]));

    let ack = alice
        .request(json!({"type": "call-initiate", "to": "bob", "callType": "video", "sdp": offer()}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let call_id = ack["callId"].as_str().expect("callId").to_string();
    assert!(ack["roomId"].is_string());

    let invite = bob.expect("call-initiate").await;
    assert_eq!(invite["callId"], call_id.as_str());
    assert_eq!(invite["from"], "alice");
    assert_eq!(invite["callType"], "video");
    assert_eq!(invite["sdp"], offer());

    // Early candidates from the caller reach the ringing callee.
    alice
        .request(json!({"type": "ice-candidate", "callId": call_id, "candidate": candidate()}))
        .await;
    assert_eq!(bob.expect("ice-candidate").await["candidate"], candidate());

    let ack = bob
        .request(json!({"type": "call-accept", "callId": call_id}))
        .await;
    assert_eq!(ack["type"], "ack");
    assert_eq!(alice.expect("call-accept").await["from"], "bob");
    bob.request(json!({"type": "call-answer", "callId": call_id, "sdp": answer()}))
        .await;
    let got = alice.expect("call-answer").await;
    assert_eq!(
        (got["from"].clone(), got["sdp"].clone()),
        (json!("bob"), answer())
    );
    bob.request(json!({"type": "ice-candidate", "callId": call_id, "candidate": candidate(), "to": "alice"})).await;
    alice.expect("ice-candidate").await;
    bob.request(json!({"type": "ice-candidate", "callId": call_id, "candidate": null}))
        .await;
    assert_eq!(
        alice.expect("ice-candidate").await["candidate"],
        Value::Null
    );

    // A client cannot speak for someone else: `from` is stamped by the server.
    bob.request(
        json!({"type": "media-state", "callId": call_id, "audio": false, "from": "mallory"}),
    )
    .await;
    let ms = alice.expect("media-state").await;
    assert_eq!(
        (ms["from"].clone(), ms["audio"].clone(), ms["video"].clone()),
        (json!("bob"), json!(false), json!(true))
    );
    alice
        .request(json!({"type": "call-sdp-update", "callId": call_id, "sdp": offer()}))
        .await;
    assert_eq!(bob.expect("call-sdp-update").await["sdp"], offer());
    let ack = alice.request(json!({"type": "call-stats", "callId": call_id, "stats": {"rttMs": 12, "packetLoss": 0}})).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let pong = alice.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");

    alice
        .request(json!({"type": "call-hangup", "callId": call_id}))
        .await;
    assert_eq!(bob.expect("call-hangup").await["from"], "alice");
    assert_eq!(bob.expect("call-ended").await["reason"], "hangup");
    assert_eq!(alice.expect("call-ended").await["reason"], "hangup");

    // History and analytics show the call, the media change and the stats.
    let rest = s.client("bob");
    let call = rest.get(&format!("/calls/{call_id}")).await.expect(200)["callSession"].clone();
    assert_eq!(call["status"], "ended");
    let a = rest
        .get(&format!("/calls/{call_id}/analytics"))
        .await
        .expect(200)["analytics"]
        .clone();
    assert_eq!(a["quality"]["reports"], 1);
    assert_eq!(a["mediaTimeline"][0]["state"], json!({"audio": false}));
    assert_eq!(rest.get("/calls/history").await.expect(200)["total"], 1);
}

#[tokio::test]
async fn reject_cancel_and_answer_accepts() {
    let s = Server::start();
    let mut alice = Rtc::connect(&s, "alice").await;
    let mut bob = Rtc::connect(&s, "bob").await;

    let id = alice
        .request(json!({"type": "call-initiate", "to": "bob", "callType": "audio"}))
        .await["callId"]
        .clone();
    bob.expect("call-initiate").await;
    bob.request(json!({"type": "call-reject", "callId": id, "reason": "busy"}))
        .await;
    let r = alice.expect("call-reject").await;
    assert_eq!(
        (r["from"].clone(), r["reason"].clone()),
        (json!("bob"), json!("busy"))
    );
    assert_eq!(alice.expect("call-ended").await["reason"], "rejected");

    let id = alice
        .request(json!({"type": "call-initiate", "to": "bob", "callType": "audio"}))
        .await["callId"]
        .clone();
    bob.expect("call-ended").await; // the end of the rejected call reached Bob too
    bob.expect("call-initiate").await;
    alice
        .request(json!({"type": "call-hangup", "callId": id}))
        .await;
    assert_eq!(bob.expect("call-hangup").await["callId"], id);
    assert_eq!(bob.expect("call-ended").await["reason"], "cancelled");
    alice.expect("call-ended").await;

    // call-answer on a ringing call accepts it.
    let id = alice
        .request(json!({"type": "call-initiate", "to": "bob", "callType": "video", "sdp": offer()}))
        .await["callId"]
        .clone();
    bob.expect("call-initiate").await;
    bob.request(json!({"type": "call-answer", "callId": id, "sdp": answer()}))
        .await;
    alice.expect("call-accept").await;
    alice.expect("call-answer").await;
    let call = s
        .client("alice")
        .get(&format!("/calls/{}", id.as_str().expect("id")))
        .await
        .expect(200);
    assert_eq!(call["callSession"]["status"], "active");
    // An illegal transition over the socket is an error with the request id, and changes nothing.
    let err = bob
        .request(json!({"type": "call-reject", "callId": id}))
        .await;
    assert_eq!(
        (err["type"].clone(), err["code"].clone()),
        (json!("error"), json!("already_active"))
    );
}

#[tokio::test]
async fn the_first_device_to_accept_wins() {
    let s = Server::start();
    let mut alice = Rtc::connect(&s, "alice").await;
    let mut phone = Rtc::connect(&s, "bob").await;
    let mut laptop = Rtc::connect(&s, "bob").await;
    let id = alice
        .request(json!({"type": "call-initiate", "to": "bob", "callType": "video", "sdp": offer()}))
        .await["callId"]
        .clone();
    phone.expect("call-initiate").await;
    laptop.expect("call-initiate").await;
    laptop
        .request(json!({"type": "call-accept", "callId": id}))
        .await;
    assert_eq!(phone.expect("call-accepted-elsewhere").await["callId"], id);
    alice.expect("call-accept").await;
    let late = phone
        .request(json!({"type": "call-accept", "callId": id}))
        .await;
    assert_eq!(late["code"], "already_active");
    // From now on only the laptop hears the caller.
    alice
        .request(json!({"type": "ice-candidate", "callId": id, "candidate": candidate()}))
        .await;
    laptop.expect("ice-candidate").await;
    phone.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn glare_and_unreachable_callees() {
    let s = Server::start();
    let mut alice = Rtc::connect(&s, "alice").await;
    let mut bob = Rtc::connect(&s, "bob").await;
    let id = alice
        .request(json!({"type": "call-initiate", "to": "bob", "callType": "audio"}))
        .await["callId"]
        .clone();
    bob.expect("call-initiate").await;
    let glare = bob
        .request(json!({"type": "call-initiate", "to": "alice", "callType": "audio"}))
        .await;
    assert_eq!(glare["code"], "call_glare");
    assert!(glare["message"]
        .as_str()
        .expect("message")
        .contains(id.as_str().expect("id")));

    // Nobody connected as carol: the caller is told at once, the call is recorded as missed.
    let ack = alice
        .request(json!({"type": "call-initiate", "to": "carol", "callType": "audio"}))
        .await;
    let carol_call = ack["callId"].as_str().expect("callId").to_string();
    let ended = alice.expect("call-ended").await;
    assert_eq!(
        (ended["callId"].as_str(), ended["reason"].as_str()),
        (Some(carol_call.as_str()), Some("unavailable"))
    );
    let call = s
        .client("alice")
        .get(&format!("/calls/{carol_call}"))
        .await
        .expect(200)["callSession"]
        .clone();
    assert_eq!(
        (call["status"].clone(), call["endReason"].clone()),
        (json!("missed"), json!("unavailable"))
    );
}

#[tokio::test]
async fn rest_actions_reach_connected_clients() {
    let s = Server::start();
    let mut alice = Rtc::connect(&s, "alice").await;
    let mut bob = Rtc::connect(&s, "bob").await;
    let (ra, rb) = (s.client("alice"), s.client("bob"));
    let id = ra.call("bob").await;
    assert_eq!(bob.expect("call-initiate").await["callId"], id.as_str());
    rb.put_empty(&format!("/calls/{id}/accept"))
        .await
        .expect(200);
    assert_eq!(alice.expect("call-accept").await["from"], "bob");
    bob.expect("call-accepted-elsewhere").await;
    rb.put(&format!("/calls/{id}/mute-video"), json!({"mute": true}))
        .await
        .expect(200);
    assert_eq!(alice.expect("media-state").await["video"], false);
    rb.put(
        &format!("/calls/{id}/switch-camera"),
        json!({"camera": "back"}),
    )
    .await
    .expect(200);
    assert_eq!(alice.expect("media-state").await["camera"], "back");
    ra.put_empty(&format!("/calls/{id}/hangup"))
        .await
        .expect(200);
    assert_eq!(bob.expect("call-hangup").await["from"], "alice");
    bob.expect("call-ended").await;
    alice.expect("call-ended").await;

    // Seed 000: a guest joining over REST tells the host's socket.
    let vid = ra.post_empty("/api/video/calls").await.expect(201)["data"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    rb.post_empty(&format!("/api/video/calls/{vid}/join"))
        .await
        .expect(200);
    assert_eq!(alice.expect("call-accept").await["callId"], vid.as_str());
    rb.post_empty(&format!("/api/video/calls/{vid}/end"))
        .await
        .expect(200);
    assert_eq!(alice.expect("call-hangup").await["from"], "bob");
    alice.expect("call-ended").await;
}

#[tokio::test]
async fn a_rest_created_call_can_be_rung_over_the_socket() {
    let s = Server::start();
    let mut alice = Rtc::connect(&s, "alice").await;
    let ra = s.client("alice");
    let vid = ra.post_empty("/api/video/calls").await.expect(201)["data"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let mut bob = Rtc::connect(&s, "bob").await;
    let ack = alice
        .request(json!({"type": "call-initiate", "to": "bob", "callType": "video", "callId": vid}))
        .await;
    assert_eq!(ack["callId"], vid.as_str(), "{ack}");
    assert_eq!(bob.expect("call-initiate").await["callId"], vid.as_str());
    let data = ra.get(&format!("/api/video/calls/{vid}")).await.expect(200)["data"].clone();
    assert_eq!(data["guest_id"], "bob");
    // Someone else's call id cannot be rung.
    let mut eve = Rtc::connect(&s, "eve").await;
    let err = eve
        .request(json!({"type": "call-initiate", "to": "bob", "callId": vid}))
        .await;
    assert_eq!(err["code"], "not_found");
}

#[tokio::test]
async fn reconnect_within_grace_resumes_and_expiry_ends_the_call() {
    let s = Server::start_with(&["--no-turn"], &[("SIGNALBOX_RECONNECT_GRACE", "2s")]);
    let mut alice = Rtc::connect(&s, "alice").await;
    let mut bob = Rtc::connect(&s, "bob").await;
    let id = alice
        .request(json!({"type": "call-initiate", "to": "bob", "callType": "video", "sdp": offer()}))
        .await["callId"]
        .clone();
    bob.expect("call-initiate").await;
    bob.request(json!({"type": "call-answer", "callId": id, "sdp": answer()}))
        .await;
    alice.expect("call-accept").await;
    alice.expect("call-answer").await;

    // Bob's network drops; he reconnects within the grace period and sees the call in welcome.
    drop(bob);
    let mut bob = Rtc::connect(&s, "bob").await;
    let active = bob.welcome["activeCalls"]
        .as_array()
        .expect("activeCalls")
        .clone();
    assert_eq!(active.len(), 1, "{}", bob.welcome);
    assert_eq!(active[0]["id"], id);
    // He resumes with an ICE-restart offer; Alice answers on the new connection.
    bob.request(json!({"type": "call-sdp-update", "callId": id, "sdp": offer()}))
        .await;
    alice.expect("call-sdp-update").await;
    alice
        .request(json!({"type": "call-sdp-update", "callId": id, "sdp": answer()}))
        .await;
    bob.expect("call-sdp-update").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let call = s
        .client("alice")
        .get(&format!("/calls/{}", id.as_str().expect("id")))
        .await
        .expect(200);
    assert_eq!(
        call["callSession"]["status"], "active",
        "resumed call survived the grace period"
    );

    // Alice drops for good: after the grace period the call ends with reason disconnect.
    drop(alice);
    let ended = bob.expect("call-ended").await;
    assert_eq!(ended["reason"], "disconnect");
    let call = s
        .client("bob")
        .get(&format!("/calls/{}", id.as_str().expect("id")))
        .await
        .expect(200);
    assert_eq!(call["callSession"]["endReason"], "disconnect");
}

#[tokio::test]
async fn bad_frames_get_errors_and_the_connection_carries_on() {
    let s = Server::start();
    let mut alice = Rtc::connect(&s, "alice").await;
    let mut bob = Rtc::connect(&s, "bob").await;
    let mut mallory = Rtc::connect(&s, "mallory").await;
    let id = alice
        .request(json!({"type": "call-initiate", "to": "bob", "callType": "audio"}))
        .await["callId"]
        .clone();
    bob.expect("call-initiate").await;

    alice.send_raw("not json".into()).await;
    assert_eq!(alice.expect("error").await["code"], "invalid_json");
    alice
        .send_raw(r#"{"type":"warp-drive","id":"x1"}"#.into())
        .await;
    let e = alice.expect("error").await;
    assert_eq!(
        (e["code"].clone(), e["id"].clone()),
        (json!("unknown_type"), json!("x1"))
    );
    let e = alice.request(json!({"type": "call-accept"})).await;
    assert_eq!(e["code"], "invalid_field");
    assert!(e["message"].as_str().expect("msg").contains("callId"));
    let e = alice
        .request(json!({"type": "call-initiate", "to": 7}))
        .await;
    assert!(
        e["message"].as_str().expect("msg").starts_with("to:"),
        "{e}"
    );
    let e = alice
        .request(json!({"type": "call-sdp-update", "callId": id, "sdp": "v=0"}))
        .await;
    assert_eq!(e["code"], "invalid_field");
    let e = alice
        .request(json!({"type": "ice-candidate", "callId": "not-a-uuid", "candidate": null}))
        .await;
    assert_eq!(
        e["code"], "invalid_id",
        "the same code as REST for a bad id"
    );
    let e = alice
        .request(json!({"type": "call-initiate", "to": "alice"}))
        .await;
    assert_eq!(e["code"], "invalid_field");

    // Someone not in the call cannot signal it, accept it or end it.
    for msg in [
        json!({"type": "ice-candidate", "callId": id, "candidate": candidate()}),
        json!({"type": "call-accept", "callId": id}),
        json!({"type": "call-hangup", "callId": id}),
        json!({"type": "media-state", "callId": id, "audio": false}),
        json!({"type": "call-stats", "callId": id, "stats": {}}),
    ] {
        let e = mallory.request(msg.clone()).await;
        assert_eq!(e["code"], "not_found", "{msg}: {e}");
    }
    bob.expect_silence(Duration::from_millis(300)).await;

    // A large SDP (64 KiB and more) fits; one over the limit is refused without closing.
    let big = json!({"type": "offer", "sdp": format!("v=0\r\n{}", "a=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n".repeat(2000))});
    assert!(big.to_string().len() > 64 * 1024);
    let ok = alice
        .request(json!({"type": "call-sdp-update", "callId": id, "sdp": big}))
        .await;
    assert_eq!(ok["type"], "ack", "{}", ok["message"]);
    assert_eq!(bob.expect("call-sdp-update").await["sdp"], big);
    let huge = json!({"type": "ping", "pad": "x".repeat(300 * 1024)});
    alice.send_raw(huge.to_string()).await;
    assert_eq!(alice.expect("error").await["code"], "message_too_large");

    // A flood is rate limited; the connection and the call carry on.
    // 2000 frames: far over the burst (300) plus what 100/s refills even on a slow machine.
    for _ in 0..2000 {
        alice.send_raw(json!({"type": "ping"}).to_string()).await;
    }
    // One deadline for the whole search: the pongs read on the way do not extend it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut limited = false;
    for _ in 0..2100 {
        let v = alice
            .recv_until(deadline, "a rate_limited error after a flood of 2000 pings")
            .await;
        if v["code"] == "rate_limited" {
            limited = true;
            break;
        }
    }
    assert!(limited, "no rate_limited error after a flood");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Drain what is left of the flood's answers (for 500 ms at most), then signal normally.
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            alice.recv("what is left of the flood's answers").await;
        }
    })
    .await;
    let ok = alice
        .request(json!({"type": "ice-candidate", "callId": id, "candidate": candidate()}))
        .await;
    assert_eq!(ok["type"], "ack", "{ok}");
    bob.expect("ice-candidate").await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_and_handled_as_a_drop() {
    let s = Server::start_with(
        &["--no-turn"],
        &[
            ("SIGNALBOX_HEARTBEAT_TIMEOUT", "3s"),
            ("SIGNALBOX_RECONNECT_GRACE", "1s"),
        ],
    );
    let mut alice = Rtc::connect(&s, "alice").await;
    let mut bob = Rtc::connect(&s, "bob").await;
    let id = alice
        .request(json!({"type": "call-initiate", "to": "bob", "callType": "audio"}))
        .await["callId"]
        .clone();
    bob.expect("call-initiate").await;
    bob.request(json!({"type": "call-accept", "callId": id}))
        .await;
    alice.expect("call-accept").await;

    // Bob stops reading (so his client answers no pings) for longer than the heartbeat timeout.
    // Alice keeps answering pings by reading, and sees the call end after the grace period.
    let ended = alice
        .recv_within(
            Duration::from_secs(20),
            "`call-ended` (reason disconnect) after bob went silent",
        )
        .await;
    assert_eq!(
        (ended["type"].as_str(), ended["reason"].as_str()),
        (Some("call-ended"), Some("disconnect")),
        "{ended}"
    );
    // Bob's socket was closed by the server: a close frame (1001) or, when his client tries to
    // answer the stale pings first, a broken pipe; never another event.
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    // One deadline for the close, however many pings arrive before it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let next = tokio::time::timeout_at(deadline, bob.ws.next());
        match next
            .await
            .expect("bob's socket closed by the server within 10 s")
        {
            Some(Ok(Message::Close(frame))) => {
                assert_eq!(frame.map(|f| u16::from(f.code)), Some(1001));
                break;
            }
            Some(Ok(Message::Text(t))) => {
                assert!(!t.contains("call-ended"), "a closed session got {t}")
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => break,
        }
    }
}
