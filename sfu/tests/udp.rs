//! The SFU's UDP edge with real sockets on 127.0.0.1 (and ::1, and a dual-stack socket): two
//! WebRTC clients (str0m sessions, each
//! on its own UDP socket) join one room through the handle, take the SFU's answers and offers
//! that arrive as notices (in order), and each decodes the other's audio — real datagrams, real
//! DTLS-SRTP.
#![allow(clippy::disallowed_methods)] // clients read the clock, as browsers do

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use signalbox_sfu::{HandleError, Notice, ParticipantId, SfuError, SfuEvent, SfuHandle};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Everything in this test must happen within this much time.
const DEADLINE: Duration = Duration::from_secs(20);

/// SDP from the SFU for one client, as the signaling routes it.
enum FromSfu {
    Answer(String),
    Offer(String),
}

/// Runs one client: joins through `sfu`, takes its answer and answers the offers routed to it,
/// publishes audio every 20 ms, and counts the frames it receives.
async fn client(
    name: &'static str,
    ip: IpAddr,
    sfu: SfuHandle,
    mut offers: mpsc::Receiver<FromSfu>,
    received: Arc<AtomicUsize>,
    stop: Instant,
) {
    let socket = UdpSocket::bind((ip, 0)).await.expect("client socket");
    let addr = socket.local_addr().expect("client address");
    let mut rtc = Rtc::builder().build(Instant::now());
    rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
    let mut change = rtc.sdp_api();
    let mid = change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    let (offer, pending) = change.apply().expect("an offer");
    sfu.negotiate(
        "room",
        ParticipantId(name.into()),
        offer.to_sdp_string(),
        true,
    )
    .await
    .expect("the SFU accepts the join");
    let Some(FromSfu::Answer(answer)) = offers.recv().await else {
        panic!("{name}: the SFU's answer comes first");
    };
    rtc.sdp_api()
        .accept_answer(
            pending,
            SdpAnswer::from_sdp_string(&answer).expect("answer parses"),
        )
        .expect("answer accepted");

    let pt = rtc
        .codec_config()
        .find(|p| p.spec().codec == Codec::Opus)
        .map(|p| p.pt())
        .expect("opus");
    let start = Instant::now();
    let mut next_frame = start;
    let mut connected = false;
    let mut buf = vec![0u8; 2048];
    while Instant::now() < stop {
        let timeout = loop {
            match rtc.poll_output().expect("client session") {
                Output::Timeout(t) => break t,
                Output::Transmit(t) => {
                    socket
                        .send_to(&t.contents, t.destination)
                        .await
                        .expect("client send");
                }
                Output::Event(Event::Connected) => connected = true,
                Output::Event(Event::MediaData(_)) => {
                    received.fetch_add(1, Ordering::Relaxed);
                }
                Output::Event(_) => {}
            }
        };
        let wake = timeout.min(next_frame).min(stop);
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let (n, source) = r.expect("client receive");
                let input = Input::Receive(Instant::now(), Receive {
                    proto: Protocol::Udp,
                    source,
                    destination: addr,
                    contents: (&buf[..n]).try_into().expect("datagram"),
                });
                rtc.handle_input(input).expect("client input");
            }
            Some(FromSfu::Offer(sdp)) = offers.recv() => {
                let offer = SdpOffer::from_sdp_string(&sdp).expect("SFU offer parses");
                let answer = rtc.sdp_api().accept_offer(offer).expect("SFU offer accepted");
                sfu.answer(ParticipantId(name.into()), answer.to_sdp_string())
                    .await
                    .expect("SFU takes the answer");
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                if connected && now >= next_frame {
                    let time = (now - start).into();
                    if let Some(w) = rtc.writer(mid) {
                        w.write(pt, now, time, vec![0x11_u8; 100]).expect("write");
                    }
                    next_frame = now + Duration::from_millis(20);
                } else if now >= next_frame {
                    next_frame = now + Duration::from_millis(20);
                }
                rtc.handle_input(Input::Timeout(now)).expect("client timeout");
            }
        }
    }
}

#[tokio::test]
async fn two_clients_hear_each_other_through_the_sfu_over_real_udp() {
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    two_clients_hear_each_other((ip, 0).into(), [ip, ip]).await;
}

#[tokio::test]
async fn over_ipv6() {
    let ip = IpAddr::V6(Ipv6Addr::LOCALHOST);
    two_clients_hear_each_other((ip, 0).into(), [ip, ip]).await;
}

/// An IPv6 socket that takes IPv4 too (here only 127.0.0.1's, as IPv4-mapped `::ffff:127.0.0.1`,
/// so the test stays on loopback): the senders are seen, and written to, as the IPv4 clients
/// they are.
#[tokio::test]
async fn on_a_dual_stack_socket_ipv4_clients_are_ipv4() {
    let mapped = IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped());
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    two_clients_hear_each_other((mapped, 0).into(), [ip, ip]).await;
}

async fn two_clients_hear_each_other(listen: SocketAddr, client_ips: [IpAddr; 2]) {
    signalbox_sfu::init_crypto();
    let (notices_tx, mut notices) = mpsc::unbounded_channel();
    let (sfu, task) = signalbox_sfu::start(listen, &[], notices_tx)
        .await
        .expect("the SFU starts on loopback");
    let sfu_addr: SocketAddr = sfu.local_addr();
    assert!(sfu_addr.ip().to_canonical().is_loopback() && sfu_addr.port() != 0);

    let stop = Instant::now() + DEADLINE;
    let mut inboxes = HashMap::new();
    let mut counts = HashMap::new();
    let mut clients = Vec::new();
    for (name, ip) in ["alice", "bob"].into_iter().zip(client_ips) {
        let (tx, rx) = mpsc::channel(16);
        inboxes.insert(ParticipantId(name.into()), tx);
        let n = Arc::new(AtomicUsize::new(0));
        counts.insert(name, n.clone());
        clients.push(tokio::spawn(client(name, ip, sfu.clone(), rx, n, stop)));
    }

    // The signaling's part: route the SFU's offers to their participant, note the events.
    let mut connected = Vec::new();
    let heard = |counts: &HashMap<&str, Arc<AtomicUsize>>| {
        counts.values().all(|n| n.load(Ordering::Relaxed) >= 50)
    };
    while !heard(&counts) {
        assert!(
            Instant::now() < stop,
            "not within {DEADLINE:?}: both clients receiving 50 frames (got {:?}; connected: {connected:?})",
            counts.iter().map(|(k, v)| (*k, v.load(Ordering::Relaxed))).collect::<Vec<_>>()
        );
        match tokio::time::timeout(Duration::from_millis(100), notices.recv()).await {
            Ok(Some(Notice::Answer { participant, sdp })) => {
                let inbox = inboxes
                    .get(&participant)
                    .expect("answers go to a participant of the room");
                inbox
                    .send(FromSfu::Answer(sdp))
                    .await
                    .expect("client takes the answer");
            }
            Ok(Some(Notice::Offer { participant, sdp })) => {
                let inbox = inboxes
                    .get(&participant)
                    .expect("offers go to a participant of the room");
                inbox
                    .send(FromSfu::Offer(sdp))
                    .await
                    .expect("client takes the offer");
            }
            Ok(Some(Notice::Event(SfuEvent::Connected(p)))) => connected.push(p),
            Ok(Some(Notice::Event(_))) | Err(_) => {}
            Ok(None) => panic!("the SFU's task ended"),
        }
    }

    // A bad join is refused through the handle, with the reason.
    let refused = sfu
        .negotiate("room", "mallory".into(), "not sdp".into(), true)
        .await;
    assert!(
        matches!(refused, Err(HandleError::Refused(SfuError::BadSdp(_)))),
        "{refused:?}"
    );
    // An offer from someone who has not joined is refused when joining is not allowed.
    let refused = sfu
        .negotiate("room", "mallory".into(), "not sdp".into(), false)
        .await;
    assert!(
        matches!(
            refused,
            Err(HandleError::Refused(SfuError::UnknownParticipant(_)))
        ),
        "{refused:?}"
    );

    for name in ["alice", "bob"] {
        sfu.leave(ParticipantId(name.into())).await.expect("leave");
    }
    drop(sfu);
    for c in clients {
        c.abort();
    }
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the SFU's task ends once every handle is gone")
        .expect("the task did not panic");
}
