//! Rooms through the embedded SFU, end to end: real `/rtc` WebSockets for the signaling and
//! real WebRTC participants (str0m sessions on UDP loopback sockets) for the media. Three
//! participants of an `sfu` room each receive the others' audio and video, labelled with the
//! publisher's peer id; a second room's media never crosses over; bad SDP and outsiders are
//! refused without disturbing anyone; leaving stops the leaver's tracks. `auto` rooms switch
//! topology at the threshold and back after the delay, and `--no-sfu` keeps every room mesh.
#![allow(clippy::disallowed_methods)] // participants read the clock, as browsers do

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Rtc, Server};
use futures_util::StreamExt;
use serde_json::{json, Value};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// Every wait for media in these tests ends within this much time.
const MEDIA_WAIT: Duration = Duration::from_secs(30);

/// What a participant saw, shared with the test.
#[derive(Debug, Default)]
struct Seen {
    /// Frames received, by (stream id of the track = publisher's peer id, kind).
    frames: HashMap<(String, MediaKind), usize>,
    /// Kinds of the `/rtc` events received, in order.
    events: Vec<String>,
    /// `error` frames received.
    errors: Vec<Value>,
    connected: bool,
    /// SFU offers answered.
    offers: usize,
}

impl Seen {
    fn from(&self, peer: &str, kind: MediaKind) -> usize {
        self.frames
            .get(&(peer.to_string(), kind))
            .copied()
            .unwrap_or(0)
    }
}

struct Participant {
    peer_id: String,
    call_id: String,
    seen: Arc<Mutex<Seen>>,
    leave: mpsc::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Participant {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn create_room(s: &Server, owner: &str, mode: &str) -> String {
    let room = s
        .client(owner)
        .post(
            "/rooms",
            json!({"name": format!("{mode} room"), "maxParticipants": 6, "isPrivate": false, "mode": mode}),
        )
        .await
        .expect(201)["room"]
        .clone();
    assert_eq!(room["mode"], mode, "{room}");
    room["id"].as_str().expect("room id").to_string()
}

/// Joins `room` as `user` over `/rtc`, then connects a WebRTC session to the SFU publishing
/// audio and video, answering the SFU's offers, until told to leave.
async fn join(s: &Server, user: &str, room: &str) -> Participant {
    let mut ws = Rtc::connect(s, user).await;
    let ack = ws
        .request(json!({"type": "room-join", "roomId": room}))
        .await;
    assert_eq!(ack["type"], "ack", "{user} joins: {ack}");
    assert_eq!(ack["topology"], "sfu", "{user} joins an SFU room: {ack}");
    let peer_id = ack["peerId"].as_str().expect("peerId").to_string();
    let call_id = ack["callId"].as_str().expect("callId").to_string();

    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("participant socket");
    let addr = socket.local_addr().expect("participant address");
    let mut rtc = str0m::Rtc::builder().build(Instant::now());
    rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
    let mut change = rtc.sdp_api();
    let audio = change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    let video = change.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
    let (offer, pending) = change.apply().expect("an offer");
    let sent = ws
        .request(json!({
            "type": "call-sdp-update", "callId": call_id, "to": "sfu",
            "sdp": {"type": "offer", "sdp": offer.to_sdp_string()},
        }))
        .await;
    assert_eq!(sent["type"], "ack", "{user}'s offer to the SFU: {sent}");

    let seen = Arc::new(Mutex::new(Seen::default()));
    let (leave, left) = mpsc::channel(1);
    let media = Media {
        rtc,
        socket,
        addr,
        audio,
        video,
        pending: Some(pending),
    };
    let task = tokio::spawn(run(
        ws,
        media,
        call_id.clone(),
        room.to_string(),
        seen.clone(),
        left,
    ));
    Participant {
        peer_id,
        call_id,
        seen,
        leave,
        task,
    }
}

struct Media {
    rtc: str0m::Rtc,
    socket: UdpSocket,
    addr: SocketAddr,
    audio: Mid,
    video: Mid,
    pending: Option<SdpPendingOffer>,
}

/// Drives one participant: its WebSocket (SDP from the SFU) and its media session (publishes a
/// frame on each track every 20 ms once connected; counts what it receives).
async fn run(
    mut ws: Rtc,
    mut m: Media,
    call_id: String,
    room: String,
    seen: Arc<Mutex<Seen>>,
    mut leave: mpsc::Receiver<()>,
) {
    let lock = || seen.lock().unwrap_or_else(|p| p.into_inner());
    let start = Instant::now();
    let mut next_frame = start;
    let mut buf = vec![0u8; 2048];
    let pt = |rtc: &str0m::Rtc, codec: Codec| {
        rtc.codec_config()
            .find(|p| p.spec().codec == codec)
            .map(|p| p.pt())
    };
    loop {
        let timeout = loop {
            match m.rtc.poll_output().expect("participant session") {
                Output::Timeout(t) => break t,
                Output::Transmit(t) => {
                    let _ = m.socket.send_to(&t.contents, t.destination).await;
                }
                Output::Event(Event::Connected) => lock().connected = true,
                Output::Event(Event::MediaData(d)) => {
                    let key = m
                        .rtc
                        .media(d.mid)
                        .map(|media| (media.stream_id().to_string(), media.kind()));
                    if let Some(key) = key {
                        *lock().frames.entry(key).or_default() += 1;
                    }
                }
                Output::Event(_) => {}
            }
        };
        let wake = timeout.min(next_frame);
        tokio::select! {
            _ = leave.recv() => {
                let _ = ws.request(json!({"type": "room-leave", "roomId": room})).await;
                return;
            }
            r = m.socket.recv_from(&mut buf) => {
                let Ok((n, source)) = r else { continue };
                let Ok(contents) = (&buf[..n]).try_into() else { continue };
                let input = Input::Receive(Instant::now(), Receive {
                    proto: Protocol::Udp, source, destination: m.addr, contents,
                });
                let _ = m.rtc.handle_input(input);
            }
            frame = ws.ws.next() => {
                let Some(Ok(Message::Text(text))) = frame else {
                    if matches!(frame, None | Some(Err(_)) | Some(Ok(Message::Close(_)))) { return; }
                    continue;
                };
                let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                let kind = v["type"].as_str().unwrap_or("?").to_string();
                if kind == "error" {
                    lock().errors.push(v.clone());
                }
                if kind == "call-sdp-update" && v["from"] == "sfu" && v["fromPeer"] == "sfu" {
                    let sdp = v["sdp"]["sdp"].as_str().unwrap_or_default();
                    match v["sdp"]["type"].as_str() {
                        Some("answer") => {
                            let answer = SdpAnswer::from_sdp_string(sdp).expect("the SFU's answer parses");
                            let pending = m.pending.take().expect("an answer comes only to an offer");
                            m.rtc.sdp_api().accept_answer(pending, answer).expect("the SFU's answer fits");
                        }
                        Some("offer") => {
                            let offer = SdpOffer::from_sdp_string(sdp).expect("the SFU's offer parses");
                            let answer = m.rtc.sdp_api().accept_offer(offer).expect("the SFU's offer is acceptable");
                            let ack = json!({
                                "type": "call-sdp-update", "callId": call_id, "to": "sfu",
                                "sdp": {"type": "answer", "sdp": answer.to_sdp_string()},
                            });
                            ws.send(ack).await;
                            lock().offers += 1;
                        }
                        other => panic!("unexpected SDP type {other:?} from the SFU: {v}"),
                    }
                }
                lock().events.push(kind);
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                if now >= next_frame {
                    next_frame = now + Duration::from_millis(20);
                    if lock().connected {
                        let time = (now - start).into();
                        for (mid, codec) in [(m.audio, Codec::Opus), (m.video, Codec::Vp8)] {
                            let Some(pt) = pt(&m.rtc, codec) else { continue };
                            if let Some(w) = m.rtc.writer(mid) {
                                let _ = w.write(pt, now, time, vec![0x10_u8; 120]);
                            }
                        }
                    }
                }
                let _ = m.rtc.handle_input(Input::Timeout(now));
            }
        }
    }
}

/// Waits (up to [`MEDIA_WAIT`]) until `done` holds for what `p` has seen.
async fn until(p: &Participant, what: &str, done: impl Fn(&Seen) -> bool) {
    let deadline = Instant::now() + MEDIA_WAIT;
    loop {
        if done(&p.seen()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not within {MEDIA_WAIT:?}: {what} (seen: {:?})",
            p.seen()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn kinds() -> [MediaKind; 2] {
    [MediaKind::Audio, MediaKind::Video]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sfu_room_forwards_every_track_to_the_others_and_to_nobody_else() {
    signalbox_sfu::init_crypto();
    let s = Server::start();
    let room = create_room(&s, "alice", "sfu").await;
    let other_room = create_room(&s, "dave", "sfu").await;

    let mut people = Vec::new();
    for user in ["alice", "bob", "carol"] {
        people.push(join(&s, user, &room).await);
    }
    let dave = join(&s, "dave", &other_room).await;

    // Everyone gets audio and video from each other participant, labelled with its peer id.
    for p in &people {
        for q in people.iter().filter(|q| q.peer_id != p.peer_id) {
            until(
                p,
                &format!("frames from {} on both tracks", q.peer_id),
                |seen| kinds().iter().all(|k| seen.from(&q.peer_id, *k) >= 25),
            )
            .await;
        }
    }
    until(&dave, "dave connected", |seen| seen.connected).await;
    for p in &people {
        let seen = p.seen();
        assert_eq!(
            kinds().map(|k| seen.from(&p.peer_id, k)),
            [0, 0],
            "nobody is sent their own tracks"
        );
        assert_eq!(
            kinds().map(|k| seen.from(&dave.peer_id, k)),
            [0, 0],
            "nothing of another room's arrives"
        );
        assert!(seen.errors.is_empty(), "{:?}", seen.errors);
        assert_eq!(
            seen.frames.len(),
            4,
            "two tracks from each of two others: {seen:?}"
        );
    }
    assert!(
        dave.seen().frames.is_empty(),
        "dave, alone in his room, receives nothing"
    );

    // The server measured every participant's tracks: analytics per participant, and metrics.
    let call = people[0].call_id.clone();
    let alice = s.client("alice");
    let sfu = common::eventually(
        "the SFU's figures for all three in the call's analytics",
        Duration::from_secs(20),
        || async {
            let a = alice
                .get(&format!("/calls/{call}/analytics"))
                .await
                .expect(200);
            let sfu = a["analytics"]["sfu"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let complete = sfu.len() == 3
                && sfu.iter().all(|p| {
                    p["bytesIn"].as_u64() > Some(0)
                        && p["bytesOut"].as_u64() > Some(0)
                        && p["tracks"].as_array().map_or(0, Vec::len) >= 6
                });
            complete.then_some(sfu)
        },
    )
    .await;
    for p in &people {
        let row = sfu
            .iter()
            .find(|r| r["peerId"] == p.peer_id.as_str())
            .unwrap_or_else(|| panic!("no SFU figures for {}: {sfu:?}", p.peer_id));
        let published: Vec<&Value> = row["tracks"]
            .as_array()
            .expect("tracks")
            .iter()
            .filter(|t| t["direction"] == "published")
            .collect();
        assert_eq!(published.len(), 2, "audio and video published: {row}");
        assert!(
            published.iter().all(|t| t["packets"].as_u64() > Some(10)),
            "{row}"
        );
    }
    assert!(
        !sfu.iter().any(|r| r["peerId"] == dave.peer_id.as_str()),
        "another room's participant is not in this call's analytics"
    );
    let metrics = s.metrics().await;
    assert_eq!(
        common::metric(&metrics, "signalbox_sfu_participants"),
        Some(4),
        "{metrics}"
    );
    assert!(
        common::metric(&metrics, "signalbox_sfu_frames_forwarded_total") > Some(100),
        "{metrics}"
    );
    assert!(
        common::metric(&metrics, "signalbox_sfu_bytes_sent_total") > Some(10_000),
        "{metrics}"
    );

    // Bad input changes nothing for the others.
    let mut erin = Rtc::connect(&s, "erin").await;
    let ack = erin
        .request(json!({"type": "room-join", "roomId": room}))
        .await;
    let call_id = ack["callId"].as_str().expect("callId").to_string();
    let garbage = erin
        .request(
            json!({"type": "call-sdp-update", "callId": call_id, "to": "sfu",
            "sdp": {"type": "offer", "sdp": "v=0\r\nthis is not an offer\r\n"}}),
        )
        .await;
    assert_eq!(
        (garbage["type"].as_str(), garbage["code"].as_str()),
        (Some("error"), Some("sdp_rejected")),
        "{garbage}"
    );
    let stray_answer = erin
        .request(
            json!({"type": "call-sdp-update", "callId": call_id, "to": "sfu",
            "sdp": {"type": "answer", "sdp": "v=0\r\n"}}),
        )
        .await;
    assert_eq!(stray_answer["code"], "not_in_sfu", "{stray_answer}");
    let odd = erin
        .request(
            json!({"type": "call-sdp-update", "callId": call_id, "to": "sfu",
            "sdp": {"type": "rollback"}}),
        )
        .await;
    assert_eq!(odd["code"], "invalid_field", "{odd}");
    // Someone outside the room cannot talk to its SFU.
    let mut mallory = Rtc::connect(&s, "mallory").await;
    let outsider = mallory
        .request(
            json!({"type": "call-sdp-update", "callId": call_id, "to": "sfu",
            "sdp": {"type": "offer", "sdp": "v=0\r\n"}}),
        )
        .await;
    assert_eq!(outsider["code"], "not_found", "{outsider}");
    let outsider = mallory
        .request(
            json!({"type": "ice-candidate", "callId": call_id, "to": "sfu",
            "candidate": {"candidate": "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host"}}),
        )
        .await;
    assert_eq!(outsider["code"], "not_found", "{outsider}");
    // Media still flows to everyone after all that.
    let before: Vec<usize> = people
        .iter()
        .map(|p| p.seen().frames.values().sum())
        .collect();
    for (p, b) in people.iter().zip(&before) {
        until(p, "media keeps flowing after the bad input", |seen| {
            seen.frames.values().sum::<usize>() > b + 50
        })
        .await;
    }
    let ack = erin
        .request(json!({"type": "room-leave", "roomId": room}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");

    // Carol leaves: the others are told, their SFU renegotiates, her tracks stop.
    let carol = people.pop().expect("carol");
    let offers_before: Vec<usize> = people.iter().map(|p| p.seen().offers).collect();
    carol.leave.send(()).await.expect("carol's task runs");
    common::within("carol's participant to finish", MEDIA_WAIT, carol.task)
        .await
        .expect("carol's task");
    for (p, offers) in people.iter().zip(&offers_before) {
        until(
            p,
            "room-peer-left and an SFU offer taking carol's tracks away",
            |seen| seen.events.iter().any(|e| e == "room-peer-left") && seen.offers > *offers,
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let frozen: Vec<[usize; 2]> = people
        .iter()
        .map(|p| kinds().map(|k| p.seen().from(&carol.peer_id, k)))
        .collect();
    let others: Vec<usize> = people
        .iter()
        .map(|p| p.seen().frames.values().sum())
        .collect();
    for (p, o) in people.iter().zip(&others) {
        until(p, "media between the two who stayed", |seen| {
            seen.frames.values().sum::<usize>() > o + 50
        })
        .await;
    }
    let after: Vec<[usize; 2]> = people
        .iter()
        .map(|p| kinds().map(|k| p.seen().from(&carol.peer_id, k)))
        .collect();
    assert_eq!(
        frozen, after,
        "nothing of carol's is forwarded once she left"
    );
    for p in people.into_iter().chain([dave]) {
        p.task.abort();
    }
}

#[tokio::test]
async fn auto_rooms_move_to_the_sfu_with_the_third_participant_and_back() {
    let s = Server::start();
    let room = create_room(&s, "alice", "auto").await;
    let mut alice = Rtc::connect(&s, "alice").await;
    let mut bob = Rtc::connect(&s, "bob").await;
    let mut carol = Rtc::connect(&s, "carol").await;
    let a = alice
        .request(json!({"type": "room-join", "roomId": room}))
        .await;
    assert_eq!(a["topology"], "mesh", "{a}");
    let call_id = a["callId"].as_str().expect("callId").to_string();
    let b = bob
        .request(json!({"type": "room-join", "roomId": room}))
        .await;
    assert_eq!(b["topology"], "mesh", "two stay peer-to-peer: {b}");
    alice.expect("room-peer-joined").await;
    // Peer-to-peer: an offer to the SFU is refused, nothing changes.
    let refused = bob
        .request(
            json!({"type": "call-sdp-update", "callId": call_id, "to": "sfu",
            "sdp": {"type": "offer", "sdp": "v=0\r\n"}}),
        )
        .await;
    assert_eq!(refused["code"], "not_in_sfu", "{refused}");

    let c = carol
        .request(json!({"type": "room-join", "roomId": room}))
        .await;
    assert_eq!(
        c["topology"], "sfu",
        "the third moves the room to the SFU: {c}"
    );
    for (name, ws) in [("alice", &mut alice), ("bob", &mut bob)] {
        let t = ws.expect("room-topology").await;
        assert_eq!(
            (
                t["topology"].as_str(),
                t["roomId"].as_str(),
                t["callId"].as_str()
            ),
            (Some("sfu"), Some(room.as_str()), Some(call_id.as_str())),
            "{name}: {t}"
        );
        ws.expect("room-peer-joined").await;
    }
    carol
        .request(json!({"type": "room-leave", "roomId": room}))
        .await;
    // Back to two: on the SFU for the delay (5 s), then mesh again.
    let started = Instant::now();
    for ws in [&mut alice, &mut bob] {
        ws.expect("room-peer-left").await;
        let t = ws
            .expect_within("room-topology", Duration::from_secs(15))
            .await;
        assert_eq!(t["topology"], "mesh", "{t}");
    }
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "the room went back to mesh only after the delay ({:?})",
        started.elapsed()
    );
}

#[tokio::test]
async fn mesh_rooms_and_servers_without_an_sfu_stay_peer_to_peer() {
    let s = Server::start_with(&["--no-turn", "--no-sfu"], &[]);
    let room = create_room(&s, "alice", "sfu").await;
    let mut clients = Vec::new();
    for user in ["alice", "bob", "carol"] {
        let mut ws = Rtc::connect(&s, user).await;
        let ack = ws
            .request(json!({"type": "room-join", "roomId": room}))
            .await;
        assert_eq!(
            ack["topology"], "mesh",
            "no SFU: mesh whatever the mode: {ack}"
        );
        clients.push((ws, ack["callId"].as_str().expect("callId").to_string()));
    }
    let (ws, call_id) = &mut clients[0];
    let refused = ws
        .request(
            json!({"type": "call-sdp-update", "callId": call_id, "to": "sfu",
            "sdp": {"type": "offer", "sdp": "v=0\r\n"}}),
        )
        .await;
    assert_eq!(refused["code"], "unknown_peer", "{refused}");

    // A mesh room on a server with an SFU: three (and more) stay mesh.
    let s = Server::start();
    let room = create_room(&s, "alice", "mesh").await;
    for user in ["alice", "bob", "carol"] {
        let mut ws = Rtc::connect(&s, user).await;
        let ack = ws
            .request(json!({"type": "room-join", "roomId": room}))
            .await;
        assert_eq!(ack["topology"], "mesh", "{ack}");
        clients.push((ws, String::new()));
    }
    // A 1:1 call has no `sfu` peer.
    let call = s.client("alice").call("bob").await;
    let mut alice = Rtc::connect(&s, "alice").await;
    let refused = alice
        .request(json!({"type": "ice-candidate", "callId": call, "to": "sfu",
            "candidate": {"candidate": "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host"}}))
        .await;
    assert_eq!(refused["code"], "unknown_peer", "{refused}");
    // A mode that does not exist is refused.
    s.client("alice")
        .post(
            "/rooms",
            json!({"name": "x", "maxParticipants": 3, "mode": "star"}),
        )
        .await
        .expect_error(400, "invalid_field");
}

#[tokio::test]
async fn aiortc_participants_send_and_decode_video_through_the_sfu() {
    let s = Server::start();
    let room = create_room(&s, "alice", "sfu").await;
    let python = common::interop_dir().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/install-test-deps (it installs tests/interop/requirements.txt, aiortc among them)",
        python.display()
    );
    let child = std::process::Command::new(python)
        .arg(common::interop_dir().join("sfu_aiortc.py"))
        .arg(format!("ws://{}", s.addr))
        .arg(&room)
        .arg(s.token("alice"))
        .arg(s.token("bob"))
        .arg("12")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the aiortc participants");
    let out = tokio::task::spawn_blocking(move || {
        common::output_within(child, Duration::from_secs(120), "the aiortc participants")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "aiortc failed: {stdout}\n{stderr}");
    let report: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no report from aiortc: {stdout}\n{stderr}"));
    let people = report.as_array().expect("two participants");
    assert_eq!(people.len(), 2, "{report}");
    let mut streams = Vec::new();
    for p in people {
        assert_eq!(p["topology"], "sfu", "{report}");
        assert_eq!(p["errors"], json!([]), "{report}");
        // The answer to a participant's own sendrecv m-line shows as a silent remote track
        // too (the SFU never sends on it); the forwarded tracks are the ones with frames.
        let frames: Vec<(&String, &Value)> = p["frames"]
            .as_object()
            .expect("frames")
            .iter()
            .filter(|(_, n)| n.as_u64() > Some(0))
            .collect();
        assert_eq!(frames.len(), 1, "one forwarded video track each: {report}");
        let (stream, decoded) = frames[0];
        assert!(
            uuid_like(stream),
            "the track is labelled with the publisher's peer id: {report}"
        );
        assert!(
            decoded.as_u64() >= Some(30),
            "aiortc decoded the other's video: {report}"
        );
        streams.push(stream.clone());
    }
    assert_ne!(
        streams[0], streams[1],
        "each sees the other's track: {report}"
    );
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}
