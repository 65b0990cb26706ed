//! Rooms through the embedded SFU, end to end: real `/rtc` WebSockets for the signaling and
//! real WebRTC participants (str0m sessions on UDP loopback sockets) for the media. Three
//! participants of an `sfu` room each receive the others' audio and video, labelled with the
//! publisher's peer id; a second room's media never crosses over; bad SDP and outsiders are
//! refused without disturbing anyone; leaving stops the leaver's tracks. `auto` rooms switch
//! topology at the threshold and back after the delay, and `--no-sfu` keeps every room mesh. A
//! participant without UDP reaches the SFU over ICE-TCP on the same port; one whose media fails
//! leaves the room after the reconnect grace.
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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
    leave: mpsc::Sender<Cmd>,
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
    join_over(s, user, room, Protocol::Udp).await
}

/// [`join`] over UDP, or over ICE-TCP only: the session then has no UDP socket at all and
/// connects to the SFU's passive TCP candidate once its answer names it.
async fn join_over(s: &Server, user: &str, room: &str, proto: Protocol) -> Participant {
    let mut ws = Rtc::connect(s, user).await;
    let ack = ws
        .request(json!({"type": "room-join", "roomId": room}))
        .await;
    assert_eq!(ack["type"], "ack", "{user} joins: {ack}");
    assert_eq!(ack["topology"], "sfu", "{user} joins an SFU room: {ack}");
    let peer_id = ack["peerId"].as_str().expect("peerId").to_string();
    let call_id = ack["callId"].as_str().expect("callId").to_string();

    let mut rtc = str0m::Rtc::builder().build(Instant::now());
    let link = if proto == Protocol::Udp {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("participant socket");
        let addr = socket.local_addr().expect("participant address");
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
        Link::Udp { socket, addr }
    } else {
        Link::TcpPending
    };
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
        link,
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
    link: Link,
    audio: Mid,
    video: Mid,
    pending: Option<SdpPendingOffer>,
}

/// How a participant's session reaches the SFU.
enum Link {
    Udp {
        socket: UdpSocket,
        addr: SocketAddr,
    },
    /// ICE-TCP, before the SFU's answer said where to connect.
    TcpPending,
    /// ICE-TCP: packets framed (RFC 4571) on one connection; a task reads them.
    Tcp {
        write: tokio::net::tcp::OwnedWriteHalf,
        read: mpsc::Receiver<Vec<u8>>,
        addr: SocketAddr,
        sfu: SocketAddr,
    },
}

impl Link {
    async fn send(&mut self, t: &str0m::net::Transmit) {
        match self {
            Link::Udp { socket, .. } => {
                let _ = socket.send_to(&t.contents, t.destination).await;
            }
            Link::Tcp { write, sfu, .. } if t.proto == Protocol::Tcp && t.destination == *sfu => {
                let len = u16::try_from(t.contents.len()).expect("a packet fits a frame");
                let mut framed = len.to_be_bytes().to_vec();
                framed.extend_from_slice(&t.contents);
                let _ = write.write_all(&framed).await;
            }
            _ => {}
        }
    }

    /// The next packet: (protocol, source, destination, bytes); `None` when the link is gone.
    async fn recv(
        &mut self,
        buf: &mut [u8],
    ) -> Option<(Protocol, SocketAddr, SocketAddr, Vec<u8>)> {
        match self {
            Link::Udp { socket, addr } => {
                let (n, source) = socket.recv_from(buf).await.ok()?;
                Some((Protocol::Udp, source, *addr, buf[..n].to_vec()))
            }
            Link::TcpPending => std::future::pending().await,
            Link::Tcp {
                read, addr, sfu, ..
            } => {
                let packet = read.recv().await?;
                Some((Protocol::Tcp, *sfu, *addr, packet))
            }
        }
    }

    /// ICE-TCP: connects to the SFU's passive TCP candidate in `answer` and offers the
    /// connection's address as this session's one candidate.
    async fn connect_tcp(&mut self, rtc: &mut str0m::Rtc, answer: &str) {
        if !matches!(self, Link::TcpPending) {
            return;
        }
        let sfu: SocketAddr = answer
            .lines()
            .filter_map(|l| l.strip_prefix("a=candidate:"))
            .find(|c| c.contains(" tcp ") && c.contains("tcptype passive"))
            .and_then(|c| {
                let f: Vec<&str> = c.split_whitespace().collect();
                format!("{}:{}", f.get(4)?, f.get(5)?).parse().ok()
            })
            .unwrap_or_else(|| panic!("the SFU's answer offers a passive TCP candidate: {answer}"));
        let stream = tokio::net::TcpStream::connect(sfu)
            .await
            .expect("a TCP connection to the SFU");
        let addr = stream.local_addr().expect("the connection's address");
        rtc.add_local_candidate(Candidate::host(addr, "tcp").expect("a TCP candidate"));
        let (mut reader, write) = stream.into_split();
        let (tx, read) = mpsc::channel(256);
        tokio::spawn(async move {
            loop {
                let Ok(len) = reader.read_u16().await else {
                    return;
                };
                let mut packet = vec![0u8; usize::from(len)];
                if reader.read_exact(&mut packet).await.is_err() || tx.send(packet).await.is_err() {
                    return;
                }
            }
        });
        *self = Link::Tcp {
            write,
            read,
            addr,
            sfu,
        };
    }
}

/// Drives one participant: its WebSocket (SDP from the SFU) and its media session (publishes a
/// frame on each track every 20 ms once connected; counts what it receives).
async fn run(
    mut ws: Rtc,
    mut m: Media,
    call_id: String,
    room: String,
    seen: Arc<Mutex<Seen>>,
    mut leave: mpsc::Receiver<Cmd>,
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
                Output::Transmit(t) => m.link.send(&t).await,
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
            cmd = leave.recv() => {
                if let Some(Cmd::Silence) = cmd {
                    // The media session dies (its socket closes); the signaling stays up.
                    drop(m);
                    silent(ws, seen.clone(), leave).await;
                    return;
                }
                let _ = ws.request(json!({"type": "room-leave", "roomId": room})).await;
                return;
            }
            r = m.link.recv(&mut buf) => {
                let Some((proto, source, destination, packet)) = r else { return };
                let Ok(contents) = (&packet[..]).try_into() else { continue };
                let input = Input::Receive(Instant::now(), Receive {
                    proto, source, destination, contents,
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
                            m.link.connect_tcp(&mut m.rtc, sdp).await;
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

/// What a participant's task is told to do.
enum Cmd {
    /// Leave the room (`room-leave`) and stop.
    Leave,
    /// Stop all media, keep the WebSocket open and reading.
    Silence,
}

/// A participant whose media is gone: reads its WebSocket until told to stop.
async fn silent(mut ws: Rtc, seen: Arc<Mutex<Seen>>, mut stop: mpsc::Receiver<Cmd>) {
    loop {
        tokio::select! {
            _ = stop.recv() => return,
            frame = ws.ws.next() => {
                let Some(Ok(Message::Text(text))) = frame else {
                    if matches!(frame, None | Some(Err(_)) | Some(Ok(Message::Close(_)))) { return; }
                    continue;
                };
                if let Ok(v) = serde_json::from_str::<Value>(text.as_str()) {
                    let kind = v["type"].as_str().unwrap_or("?").to_string();
                    seen.lock().unwrap_or_else(|p| p.into_inner()).events.push(kind);
                }
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
                        && p["quality"].as_array().is_some_and(|q| !q.is_empty())
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
        // What it was sent over time: the two others' video, each on the one layer they send.
        let sample = row["quality"]
            .as_array()
            .and_then(|q| q.last())
            .expect("quality samples");
        let layers = sample["layers"].as_array().expect("layers");
        assert_eq!(layers.len(), 2, "{sample}");
        for l in layers {
            assert!(
                people
                    .iter()
                    .any(|q| q.peer_id != p.peer_id && l["fromPeerId"] == q.peer_id.as_str()),
                "{sample}"
            );
            assert_eq!(l["layer"], Value::Null, "no simulcast: no rid {sample}");
            assert_eq!(l["paused"], false, "{sample}");
        }
        assert!(sample["freezes"].as_u64().is_some(), "{sample}");
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
    // A view before any offer: erin has no SFU connection yet; bad views are refused.
    let early = erin
        .request(json!({"type": "sfu-view", "callId": call_id, "tiles": [], "maxBitrate": null}))
        .await;
    assert_eq!(early["code"], "not_in_sfu", "{early}");
    for (bad, why) in [
        (
            json!({"type": "sfu-view", "callId": call_id, "maxBitrate": 5}),
            "a cap below 10 kbit/s",
        ),
        (
            json!({"type": "sfu-view", "callId": call_id, "tiles": [{"peerId": "", "width": 1, "height": 1}]}),
            "an empty peer id",
        ),
        (
            json!({"type": "sfu-view", "callId": call_id, "tiles": [{"peerId": "x", "width": 100000, "height": 1}]}),
            "a tile wider than 8192",
        ),
        (
            json!({"type": "sfu-view", "callId": call_id, "tiles": "big"}),
            "tiles not a list",
        ),
    ] {
        let refused = erin.request(bad).await;
        assert_eq!(refused["type"], "error", "{why}: {refused}");
        assert_eq!(refused["code"], "invalid_field", "{why}: {refused}");
    }
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
    carol
        .leave
        .send(Cmd::Leave)
        .await
        .expect("carol's task runs");
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
        // aiortc offers its track sendrecv; the SFU answers recvonly, so the only remote
        // track each gets is the other's (no silent one on its own m-line).
        let frames: Vec<(&String, &Value)> =
            p["frames"].as_object().expect("frames").iter().collect();
        assert_eq!(frames.len(), 1, "one remote video track each: {report}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_whose_media_fails_leaves_the_room_after_the_grace() {
    signalbox_sfu::init_crypto();
    let s = Server::start_with(&["--no-turn"], &[("SIGNALBOX_RECONNECT_GRACE", "2s")]);
    let room = create_room(&s, "alice", "sfu").await;
    let alice = join(&s, "alice", &room).await;
    let bob = join(&s, "bob", &room).await;
    for (p, q) in [(&alice, &bob), (&bob, &alice)] {
        until(p, "media both ways", |seen| {
            kinds().iter().all(|k| seen.from(&q.peer_id, *k) >= 10)
        })
        .await;
    }
    // Bob's media dies while his WebSocket stays: he is removed once the SFU has noticed and
    // the grace has passed; Alice is told.
    bob.leave.send(Cmd::Silence).await.expect("bob's task runs");
    until(
        &alice,
        "room-peer-left for bob, whose media failed",
        |seen| seen.events.iter().any(|e| e == "room-peer-left"),
    )
    .await;
    let r = s
        .client("alice")
        .get(&format!("/rooms/{room}"))
        .await
        .expect(200);
    let peers: Vec<&str> = r["room"]["participants"]
        .as_array()
        .expect("participants")
        .iter()
        .filter_map(|p| p["peerId"].as_str())
        .collect();
    assert_eq!(peers, vec![alice.peer_id.as_str()], "{r}");
    alice.task.abort();
    bob.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_without_udp_reaches_the_sfu_over_ice_tcp() {
    signalbox_sfu::init_crypto();
    let s = Server::start_with(&["--no-turn"], &[]);
    let room = create_room(&s, "alice", "sfu").await;
    let alice = join(&s, "alice", &room).await;
    let tom = join_over(&s, "tom", &room, Protocol::Tcp).await;
    for (p, q, what) in [
        (
            &alice,
            &tom,
            "alice (UDP) receives tom's audio and video (ICE-TCP)",
        ),
        (
            &tom,
            &alice,
            "tom (ICE-TCP) receives alice's audio and video (UDP)",
        ),
    ] {
        until(p, what, |seen| {
            kinds().iter().all(|k| seen.from(&q.peer_id, *k) >= 25)
        })
        .await;
    }
    assert!(tom.seen().errors.is_empty(), "{:?}", tom.seen().errors);
    alice.task.abort();
    tom.task.abort();
}
