//! The SFU core with real WebRTC clients (str0m sessions, full ICE, DTLS-SRTP) on a simulated
//! network in memory: no sockets, simulated time. Shows that every track reaches every other
//! participant of its room and nobody else (over UDP or ICE-TCP), that leaving stops the copies,
//! that a subscriber makes the publisher send a keyframe, that packets lost on the way to a
//! subscriber come back by NACK/RTX with no frame missing, and that bad SDP changes nothing.
#![allow(clippy::disallowed_methods)] // the simulation's one start time

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use signalbox_sfu::{Output, ParticipantId, Protocol, Sfu, SfuConfig, SfuError, SfuEvent};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Rid, Simulcast, SimulcastLayer};
use str0m::net::Receive;
use str0m::{Candidate, Event, Input, Output as RtcOutput, Rtc};

const STEP: Duration = Duration::from_millis(1);

fn sfu_addr() -> SocketAddr {
    (Ipv4Addr::new(10, 0, 0, 1), 3479).into()
}

/// A participant's browser, played by a str0m session.
struct Client {
    id: ParticipantId,
    rtc: Rtc,
    addr: SocketAddr,
    /// How it reaches the SFU: UDP, or ICE-TCP (its packets framed on a TCP connection).
    proto: Protocol,
    /// Packets the SFU sent it over the other protocol (must stay 0).
    wrong_proto: usize,
    /// The mid this client publishes on.
    sending: Mid,
    kind: MediaKind,
    pending: Option<SdpPendingOffer>,
    /// mid → the stream (publisher) the SFU labelled it with, from the SFU's offers.
    stream_of_mid: HashMap<String, String>,
    /// Frames received per publisher.
    frames_from: BTreeMap<String, usize>,
    /// Frames whose mid carried no publisher label (must stay 0).
    unlabelled_frames: usize,
    /// The numbers (bytes 10..14) of the video frames received, per publisher.
    numbers_from: BTreeMap<String, std::collections::BTreeSet<u32>>,
    /// The layer (byte 14: its index in `layers`) of the last frame received, per publisher.
    layer_from: BTreeMap<String, u8>,
    /// Simulcast layers this client publishes (rid, frame bytes); empty: one plain stream.
    layers: Vec<(&'static str, usize)>,
    /// Layers the SFU said nobody receives: not sent.
    paused_rids: Vec<String>,
    /// Bytes of video published.
    bytes_published: usize,
    /// The audio level (dBov) its audio frames carry, if any.
    audio_level: Option<i8>,
    /// Frames published so far (each carries its number).
    published: u32,
    /// Every `n`th RTP packet the SFU sends this client is lost on the way (0: none).
    lose_every: usize,
    /// Every `n`th RTP packet this client sends the SFU is lost on the way (0: none).
    lose_every_up: usize,
    rtp_sent: usize,
    rtp_seen: usize,
    rtp_lost: usize,
    keyframe_requests: usize,
    connected: bool,
    offers: Vec<String>,
    timeout: Option<Instant>,
}

impl Client {
    fn new(
        name: &str,
        host: u8,
        kind: MediaKind,
        proto: Protocol,
        layers: Vec<(&'static str, usize)>,
        now: Instant,
    ) -> Client {
        let mut rtc = Rtc::builder().build(now);
        let addr: SocketAddr = (Ipv4Addr::new(10, 0, 0, host), 5000).into();
        rtc.add_local_candidate(Candidate::host(addr, proto).expect("host candidate"));
        let mut change = rtc.sdp_api();
        let simulcast = (!layers.is_empty()).then(|| Simulcast {
            send: layers.iter().map(|(r, _)| SimulcastLayer::new(r)).collect(),
            recv: Vec::new(),
        });
        let sending = change.add_media(kind, Direction::SendRecv, None, None, simulcast);
        let (offer, pending) = change.apply().expect("an offer");
        let mut c = Client {
            id: ParticipantId(name.to_owned()),
            rtc,
            addr,
            proto,
            wrong_proto: 0,
            sending,
            kind,
            pending: Some(pending),
            stream_of_mid: HashMap::new(),
            frames_from: BTreeMap::new(),
            unlabelled_frames: 0,
            numbers_from: BTreeMap::new(),
            layer_from: BTreeMap::new(),
            layers,
            paused_rids: Vec::new(),
            bytes_published: 0,
            audio_level: None,
            published: 0,
            lose_every: 0,
            lose_every_up: 0,
            rtp_sent: 0,
            rtp_seen: 0,
            rtp_lost: 0,
            keyframe_requests: 0,
            connected: false,
            offers: Vec::new(),
            timeout: None,
        };
        c.offers.push(offer.to_sdp_string());
        c
    }

    fn first_offer(&self) -> String {
        self.offers[0].clone()
    }

    fn take_answer(&mut self, answer: &str) {
        let answer = SdpAnswer::from_sdp_string(answer).expect("the SFU's answer parses");
        let pending = self.pending.take().expect("an offer of ours is pending");
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("the SFU's answer is accepted");
    }

    /// Answers an offer of the SFU's, remembering which publisher each mid carries.
    fn answer(&mut self, sdp: &str) -> String {
        self.stream_of_mid.extend(msid_by_mid(sdp));
        let offer = SdpOffer::from_sdp_string(sdp).expect("the SFU's offer parses");
        let answer = self
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .expect("the SFU's offer is accepted");
        answer.to_sdp_string()
    }

    fn frames(&self, from: &str) -> usize {
        self.frames_from.get(from).copied().unwrap_or(0)
    }
}

/// `a=mid` → first field of `a=msid` of each m-section.
fn msid_by_mid(sdp: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for section in sdp.split("\nm=").skip(1) {
        let mut mid = None;
        let mut msid = None;
        for line in section.lines() {
            let line = line.trim_end();
            if let Some(m) = line.strip_prefix("a=mid:") {
                mid = Some(m.to_owned());
            }
            if let Some(m) = line.strip_prefix("a=msid:") {
                msid = m.split_whitespace().next().map(str::to_owned);
            }
        }
        if let (Some(mid), Some(msid)) = (mid, msid) {
            out.insert(mid, msid);
        }
    }
    out
}

/// A VP8-shaped frame of `bytes`: the frame tag (a keyframe or not), the keyframe start code
/// and `width`, then the frame's `number` (bytes 10..14) and `layer` (byte 14).
fn test_frame(bytes: usize, width: u16, key: bool, number: u32, layer: u8) -> Vec<u8> {
    let mut f = vec![0x10_u8; bytes.max(16)];
    f[0] = if key { 0x10 } else { 0x11 };
    f[3..6].copy_from_slice(&[0x9d, 0x01, 0x2a]);
    f[6..8].copy_from_slice(&width.to_le_bytes());
    f[8..10].copy_from_slice(&360u16.to_le_bytes());
    f[10..14].copy_from_slice(&number.to_be_bytes());
    f[14] = layer;
    f
}

/// The SFU and its clients on one simulated network.
/// RTP, not RTCP (RTCP's packet types 192-223 sit where RTP has the marker bit and type).
fn is_rtp(packet: &[u8]) -> bool {
    packet.len() > 12 && packet[0] >> 6 == 2 && !(192..=223).contains(&packet[1])
}

struct Net {
    sfu: Sfu,
    clients: Vec<Client>,
    start: Instant,
    now: Instant,
    events: Vec<SfuEvent>,
    /// Datagrams the SFU sent to an address no client has.
    stray: usize,
    /// Datagrams no session of the SFU accepted.
    refused: usize,
}

impl Net {
    fn new() -> Net {
        signalbox_sfu::init_crypto();
        let start = Instant::now();
        let sfu = Sfu::new(SfuConfig {
            candidates: vec![sfu_addr()],
            tcp_candidates: vec![sfu_addr()],
        })
        .expect("an SFU");
        Net {
            sfu,
            clients: Vec::new(),
            start,
            now: start,
            events: Vec::new(),
            stray: 0,
            refused: 0,
        }
    }

    fn join(&mut self, name: &str, room: &str, kind: MediaKind) {
        self.join_over(name, room, kind, Protocol::Udp);
    }

    fn join_over(&mut self, name: &str, room: &str, kind: MediaKind, proto: Protocol) {
        self.join_with(name, room, kind, proto, Vec::new());
    }

    /// `name` joins publishing video in simulcast `layers` (rid, bytes per frame).
    fn join_simulcast(&mut self, name: &str, room: &str, layers: Vec<(&'static str, usize)>) {
        self.join_with(name, room, MediaKind::Video, Protocol::Udp, layers);
    }

    fn join_with(
        &mut self,
        name: &str,
        room: &str,
        kind: MediaKind,
        proto: Protocol,
        layers: Vec<(&'static str, usize)>,
    ) {
        let host = 10 + self.clients.len() as u8;
        let mut c = Client::new(name, host, kind, proto, layers, self.now);
        let answer = self
            .sfu
            .join(self.now, room, c.id.clone(), &c.first_offer())
            .expect("the SFU accepts the join");
        assert!(
            answer.contains("a=recvonly") && !answer.contains("a=sendrecv"),
            "the SFU only receives on the m-line a participant publishes on:\n{answer}"
        );
        c.take_answer(&answer);
        self.clients.push(c);
    }

    fn client_mut(&mut self, name: &str) -> &mut Client {
        self.clients
            .iter_mut()
            .find(|c| c.id.0 == name)
            .expect("a client of that name")
    }

    fn client(&self, name: &str) -> &Client {
        self.clients
            .iter()
            .find(|c| c.id.0 == name)
            .expect("a client of that name")
    }

    fn leave(&mut self, name: &str) {
        self.sfu.leave(&ParticipantId(name.to_owned()));
        self.clients.retain(|c| c.id.0 != name);
    }

    /// One step of simulated time: the SFU's outputs delivered, every client run once, and the
    /// clients publish a frame every 20 ms once connected.
    fn step(&mut self) {
        self.now += STEP;
        let now = self.now;
        self.sfu.handle_timeout(now);
        loop {
            match self.sfu.poll_output() {
                Output::Timeout(_) => break,
                Output::Transmit(t) => {
                    let Some(c) = self.clients.iter_mut().find(|c| c.addr == t.destination) else {
                        self.stray += 1;
                        continue;
                    };
                    if t.proto != c.proto {
                        c.wrong_proto += 1;
                        continue;
                    }
                    if is_rtp(&t.contents) && c.lose_every > 0 {
                        c.rtp_seen += 1;
                        if c.rtp_seen % c.lose_every == 0 {
                            c.rtp_lost += 1;
                            continue;
                        }
                    }
                    let input = Input::Receive(
                        now,
                        Receive {
                            proto: t.proto,
                            source: t.source,
                            destination: t.destination,
                            contents: (&t.contents[..]).try_into().expect("a datagram"),
                        },
                    );
                    c.rtc
                        .handle_input(input)
                        .expect("the client takes the SFU's datagram");
                }
                Output::Offer { participant, sdp } => {
                    let c = self
                        .clients
                        .iter_mut()
                        .find(|c| c.id == participant)
                        .expect("offers go to clients that are there");
                    c.offers.push(sdp.clone());
                    let answer = c.answer(&sdp);
                    self.sfu
                        .accept_answer(&participant, &answer)
                        .expect("the SFU accepts the client's answer");
                }
                Output::Event(e) => {
                    if let SfuEvent::LayersWanted {
                        participant,
                        layers,
                        ..
                    } = &e
                    {
                        if let Some(c) = self.clients.iter_mut().find(|c| &c.id == participant) {
                            c.paused_rids = layers
                                .iter()
                                .filter(|(_, on)| !on)
                                .map(|(r, _)| r.clone())
                                .collect();
                        }
                    }
                    self.events.push(e)
                }
            }
        }
        let publish = (now - self.start).as_millis() % 20 == 0;
        let mut sent = Vec::new();
        for c in &mut self.clients {
            if c.timeout.is_none_or(|t| t <= now) {
                c.rtc
                    .handle_input(Input::Timeout(now))
                    .expect("client timeout");
            }
            if publish && c.connected {
                let codec = if c.kind == MediaKind::Audio {
                    Codec::Opus
                } else {
                    Codec::Vp8
                };
                let pt = c
                    .rtc
                    .codec_config()
                    .find(|p| p.spec().codec == codec)
                    .map(|p| p.pt())
                    .expect("the codec is configured");
                let media_time = (now - self.start).into();
                if c.layers.is_empty() {
                    let frame = test_frame(120, 640, true, c.published, 0);
                    c.published += 1;
                    if let Some(mut w) = c.rtc.writer(c.sending) {
                        if let Some(level) = c.audio_level {
                            w = w.audio_level(level, level > -60);
                        }
                        w.write(pt, now, media_time, frame)
                            .expect("the client writes a frame");
                    }
                } else {
                    // Every layer every 20 ms, a keyframe every 10th frame; layer i is 160·2^i
                    // px wide.
                    let key = c.published % 10 == 0;
                    for (i, (rid, bytes)) in c.layers.clone().into_iter().enumerate() {
                        if c.paused_rids.iter().any(|p| p == rid) {
                            continue;
                        }
                        let frame = test_frame(bytes, 160 << i, key, c.published, i as u8);
                        c.bytes_published += bytes;
                        if let Some(w) = c.rtc.writer(c.sending) {
                            w.rid(Rid::from(rid))
                                .write(pt, now, media_time, frame)
                                .expect("the client writes a layer's frame");
                        }
                    }
                    c.published += 1;
                }
            }
            loop {
                match c.rtc.poll_output().expect("the client session works") {
                    RtcOutput::Timeout(t) => {
                        c.timeout = Some(t);
                        break;
                    }
                    RtcOutput::Transmit(t) => {
                        if is_rtp(&t.contents) && c.lose_every_up > 0 {
                            c.rtp_sent += 1;
                            if c.rtp_sent % c.lose_every_up == 0 {
                                c.rtp_lost += 1;
                                continue;
                            }
                        }
                        sent.push(t)
                    }
                    RtcOutput::Event(Event::Connected) => c.connected = true,
                    RtcOutput::Event(Event::MediaData(d)) => {
                        match c.stream_of_mid.get(&d.mid.to_string()) {
                            Some(publisher) => {
                                *c.frames_from.entry(publisher.clone()).or_default() += 1;
                                if let Some(n) = d.data.get(10..15) {
                                    let number = u32::from_be_bytes([n[0], n[1], n[2], n[3]]);
                                    c.numbers_from
                                        .entry(publisher.clone())
                                        .or_default()
                                        .insert(number);
                                    c.layer_from.insert(publisher.clone(), n[4]);
                                }
                            }
                            None => c.unlabelled_frames += 1,
                        }
                    }
                    RtcOutput::Event(Event::KeyframeRequest(_)) => c.keyframe_requests += 1,
                    RtcOutput::Event(_) => {}
                }
            }
        }
        for t in sent {
            if !self
                .sfu
                .receive(now, t.proto, t.source, t.destination, &t.contents)
            {
                self.refused += 1;
            }
        }
    }

    /// Steps until `done` holds; panics naming `what` when simulated time passes `limit`.
    fn run_until(&mut self, what: &str, limit: Duration, done: impl Fn(&Net) -> bool) {
        let deadline = self.now + limit;
        while !done(self) {
            assert!(
                self.now < deadline,
                "not within {limit:?} of simulated time: {what}"
            );
            self.step();
        }
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
        }
    }
}

#[test]
fn every_track_reaches_every_other_participant_of_the_room_and_nobody_else() {
    let mut net = Net::new();
    for name in ["alice", "bob", "carol"] {
        net.join(name, "r1", MediaKind::Audio);
    }
    net.join("dave", "r2", MediaKind::Audio);

    net.run_until(
        "alice, bob and carol each receive 25 frames from both others",
        Duration::from_secs(10),
        |n| {
            [
                ("alice", ["bob", "carol"]),
                ("bob", ["alice", "carol"]),
                ("carol", ["alice", "bob"]),
            ]
            .iter()
            .all(|(me, others)| others.iter().all(|o| n.client(me).frames(o) >= 25))
        },
    );
    net.run_for(Duration::from_secs(1));

    for me in ["alice", "bob", "carol"] {
        let c = net.client(me);
        assert_eq!(c.frames(me), 0, "{me} is not sent its own track back");
        assert_eq!(c.frames("dave"), 0, "{me} gets nothing from another room");
        assert_eq!(
            c.unlabelled_frames, 0,
            "every track {me} gets is labelled with its publisher"
        );
    }
    let dave = net.client("dave");
    assert!(dave.connected, "dave's session is up");
    assert!(
        dave.frames_from.is_empty(),
        "dave, alone in r2, is sent nothing: {:?}",
        dave.frames_from
    );
    assert_eq!(
        dave.offers.len(),
        1,
        "dave is never offered another room's tracks"
    );
    assert_eq!(
        net.stray, 0,
        "every datagram of the SFU goes to a participant"
    );
    assert_eq!(net.sfu.members("r1").len(), 3);
    for name in ["alice", "bob", "carol", "dave"] {
        assert!(
            net.sfu.is_connected(&ParticipantId(name.into())),
            "{name} connected"
        );
        assert!(net
            .events
            .contains(&SfuEvent::Connected(ParticipantId(name.into()))));
    }
}

#[test]
fn a_participant_over_ice_tcp_sends_and_receives_like_the_others() {
    let mut net = Net::new();
    net.join("alice", "r1", MediaKind::Audio);
    net.join_over("tom", "r1", MediaKind::Audio, Protocol::Tcp);
    net.run_until(
        "alice (UDP) and tom (ICE-TCP) each receive 25 frames from the other",
        Duration::from_secs(10),
        |n| n.client("alice").frames("tom") >= 25 && n.client("tom").frames("alice") >= 25,
    );
    for name in ["alice", "tom"] {
        let c = net.client(name);
        assert_eq!(
            c.wrong_proto, 0,
            "the SFU answers {name} over the protocol it came in on"
        );
    }
    assert_eq!(net.stray, 0);
}

#[test]
fn a_participant_who_leaves_is_no_longer_forwarded_and_the_others_go_on() {
    let mut net = Net::new();
    for name in ["alice", "bob", "carol"] {
        net.join(name, "r1", MediaKind::Audio);
    }
    net.run_until(
        "alice receives from bob and carol",
        Duration::from_secs(10),
        |n| n.client("alice").frames("bob") >= 10 && n.client("alice").frames("carol") >= 10,
    );
    let offers_before = net.client("alice").offers.len();
    net.leave("carol");
    net.run_until(
        "alice is offered a change stopping carol's track",
        Duration::from_secs(2),
        |n| n.client("alice").offers.len() > offers_before,
    );
    net.run_for(Duration::from_millis(200));
    let (from_carol, from_bob) = (
        net.client("alice").frames("carol"),
        net.client("alice").frames("bob"),
    );
    net.run_for(Duration::from_secs(1));
    assert_eq!(
        net.client("alice").frames("carol"),
        from_carol,
        "nothing of carol's after she left"
    );
    assert!(
        net.client("alice").frames("bob") >= from_bob + 25,
        "bob's audio still reaches alice: {} -> {}",
        from_bob,
        net.client("alice").frames("bob")
    );
    assert_eq!(
        net.sfu.members("r1"),
        vec![ParticipantId("alice".into()), ParticipantId("bob".into())]
    );
    let stop_offer = net
        .client("alice")
        .offers
        .last()
        .cloned()
        .unwrap_or_default();
    assert!(
        stop_offer.contains("a=inactive") || stop_offer.contains("m=audio 0 "),
        "the offer after carol left stops her m-line:\n{stop_offer}"
    );
}

#[test]
fn a_new_subscriber_makes_the_publisher_send_a_keyframe() {
    let mut net = Net::new();
    net.join("alice", "r1", MediaKind::Video);
    net.run_until("alice's session connects", Duration::from_secs(5), |n| {
        n.client("alice").connected
    });
    net.run_for(Duration::from_millis(500));
    let before = net.client("alice").keyframe_requests;
    net.join("bob", "r1", MediaKind::Video);
    net.run_until("bob receives alice's video", Duration::from_secs(10), |n| {
        n.client("bob").frames("alice") >= 5
    });
    assert!(
        net.client("alice").keyframe_requests > before,
        "alice was asked for a keyframe when bob subscribed"
    );
    assert!(
        net.client("alice").frames("bob") >= 1,
        "and alice receives bob's video"
    );
}

/// 5 % of the video RTP on one leg is lost for 4 s (200 frames), then the link is clean: every
/// frame of alice's still reaches bob, the lost packets having come back by NACK and RTX.
fn no_frame_is_missing_with_loss(uplink: bool) {
    let mut net = Net::new();
    net.join("alice", "r1", MediaKind::Video);
    net.join("bob", "r1", MediaKind::Video);
    net.run_until("bob receives alice's video", Duration::from_secs(10), |n| {
        n.client("bob").frames("alice") >= 10
    });
    let (lossy, leg) = if uplink {
        ("alice", "alice to the SFU")
    } else {
        ("bob", "the SFU to bob")
    };
    let set = |net: &mut Net, every| {
        let c = net.client_mut(lossy);
        if uplink {
            c.lose_every_up = every;
        } else {
            c.lose_every = every;
        }
    };
    set(&mut net, 20);
    net.run_for(Duration::from_secs(4));
    set(&mut net, 0);
    net.run_for(Duration::from_secs(1));
    let lost = net.client(lossy).rtp_lost;
    assert!(lost >= 8, "packets were lost from {leg}: {lost}");
    let got = &net.client("bob").numbers_from["alice"];
    let (first, last) = (*got.first().expect("frames"), *got.last().expect("frames"));
    let missing: Vec<u32> = (first..=last).filter(|n| !got.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "{} of alice's frames {first}..={last} never reached bob although the {lost} packets \
         lost from {leg} could have come back by NACK: {missing:?}",
        missing.len()
    );
}

#[test]
fn packets_lost_on_the_way_to_a_subscriber_are_resent_and_no_frame_is_missing() {
    no_frame_is_missing_with_loss(false);
}

#[test]
fn packets_a_publisher_loses_on_the_way_to_the_sfu_are_asked_for_again_and_no_frame_is_missing() {
    no_frame_is_missing_with_loss(true);
}

#[test]
fn bad_sdp_is_refused_and_changes_nothing() {
    let mut net = Net::new();
    net.join("alice", "r1", MediaKind::Audio);
    net.join("bob", "r1", MediaKind::Audio);
    net.run_until("alice receives bob", Duration::from_secs(10), |n| {
        n.client("alice").frames("bob") >= 5
    });

    let now = net.now;
    let err = net
        .sfu
        .join(now, "r1", "mallory".into(), "this is not sdp")
        .expect_err("refused");
    assert!(matches!(err, SfuError::BadSdp(_)), "{err:?}");
    let no_media = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n";
    let err = net
        .sfu
        .join(now, "r1", "mallory".into(), no_media)
        .expect_err("refused");
    assert!(
        matches!(err, SfuError::BadSdp(_) | SfuError::Rejected(_)),
        "{err:?}"
    );
    let offer = net.client("bob").first_offer();
    let err = net
        .sfu
        .join(now, "r2", "bob".into(), &offer)
        .expect_err("refused");
    assert_eq!(err, SfuError::AlreadyJoined("bob".into()));
    let err = net
        .sfu
        .accept_answer(&"alice".into(), "v=0\r\n")
        .expect_err("refused");
    assert!(
        matches!(err, SfuError::BadSdp(_) | SfuError::NoOfferPending),
        "{err:?}"
    );
    let err = net
        .sfu
        .accept_offer(&"nobody".into(), &offer)
        .expect_err("refused");
    assert_eq!(err, SfuError::UnknownParticipant("nobody".into()));
    let err = net
        .sfu
        .add_remote_candidate(&"alice".into(), "candidate:garbage")
        .expect_err("refused");
    assert!(matches!(err, SfuError::BadRemoteCandidate(_)), "{err:?}");
    let err = net
        .sfu
        .add_remote_candidate(
            &"nobody".into(),
            "candidate:1 1 udp 2113929471 10.0.0.10 5000 typ host",
        )
        .expect_err("refused");
    assert_eq!(err, SfuError::UnknownParticipant("nobody".into()));
    net.sfu
        .add_remote_candidate(
            &"alice".into(),
            "candidate:1 1 udp 2113929471 10.0.0.10 5000 typ host",
        )
        .expect("a well-formed trickled candidate is taken");
    // A stranger's datagram is accepted by no session.
    assert!(!net.sfu.receive(
        now,
        Protocol::Udp,
        (Ipv4Addr::new(10, 9, 9, 9), 9).into(),
        sfu_addr(),
        &[0u8; 40]
    ));

    assert_eq!(net.sfu.members("r1").len(), 2, "mallory is not in the room");
    assert!(
        net.sfu.members("r2").is_empty(),
        "bob's second join made no room"
    );
    let before = net.client("alice").frames("bob");
    net.run_for(Duration::from_secs(1));
    assert!(
        net.client("alice").frames("bob") >= before + 25,
        "alice and bob go on undisturbed"
    );
}

fn id(name: &str) -> ParticipantId {
    ParticipantId(name.to_owned())
}

/// Three layers like a browser's: 80, 240 and 600 kbit/s (50 frames a second), 160, 320 and
/// 640 px wide.
fn three_layers() -> Vec<(&'static str, usize)> {
    vec![("q", 200), ("h", 600), ("f", 1500)]
}

impl Net {
    /// The layer index of the last frame `me` received from `from`.
    fn layer(&self, me: &str, from: &str) -> Option<u8> {
        self.client(me).layer_from.get(from).copied()
    }
}

#[test]
fn each_subscriber_gets_the_layer_its_bandwidth_and_tile_allow_and_unused_layers_stop() {
    let mut net = Net::new();
    net.join_simulcast("alice", "r1", three_layers());
    for name in ["bob", "carol", "dave"] {
        net.join(name, "r1", MediaKind::Video);
    }
    net.run_until(
        "bob, carol and dave receive alice's video",
        Duration::from_secs(10),
        |n| {
            ["bob", "carol", "dave"]
                .iter()
                .all(|c| n.client(c).frames("alice") >= 5)
        },
    );
    // bob can take 200 kbit/s; dave shows alice in a 150 px thumbnail; carol anything.
    net.sfu
        .set_view(&id("bob"), Vec::new(), Some(200_000))
        .expect("bob's view");
    net.sfu
        .set_view(&id("dave"), vec![(id("alice"), 150)], None)
        .expect("dave's view");
    net.run_until(
        "carol gets alice's full layer, bob (200 kbit/s) and dave (thumbnail) the lowest",
        Duration::from_secs(10),
        |n| {
            n.layer("carol", "alice") == Some(2)
                && n.layer("bob", "alice") == Some(0)
                && n.layer("dave", "alice") == Some(0)
        },
    );
    // (carol's layer from now on follows the simulated link's bandwidth estimate.)
    net.run_for(Duration::from_secs(3));
    assert_eq!(net.layer("bob", "alice"), Some(0), "bob stays low");
    assert_eq!(net.layer("dave", "alice"), Some(0), "dave stays low");
    let received: Vec<u8> = ["bob", "carol", "dave"]
        .iter()
        .filter_map(|c| net.layer(c, "alice"))
        .collect();
    let unused: Vec<&str> = ["q", "h", "f"]
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !received.contains(&(*i as u8)))
        .map(|(_, r)| r)
        .collect();
    assert!(!unused.is_empty(), "carol on f or h, bob and dave on q");
    assert_eq!(
        net.client("alice").paused_rids,
        unused,
        "alice is told which of her layers nobody receives (they get {received:?})"
    );
    assert!(net.events.iter().any(|e| matches!(e,
        SfuEvent::Quality(q) if q.participant == id("bob")
            && q.layers.iter().any(|l| l.publisher == id("alice") && l.layer.as_deref() == Some("q") && l.width == Some(160)))),
        "bob's quality samples name the layer he gets");

    // bob's limit is lifted: he moves up (after the hold) to the full layer, and the middle
    // layer is still not needed by anyone.
    let before = net.client("bob").numbers_from["alice"].len();
    net.sfu
        .set_view(&id("bob"), Vec::new(), None)
        .expect("bob's view");
    net.run_until(
        "bob gets alice's full layer once his limit is lifted",
        Duration::from_secs(8),
        |n| n.layer("bob", "alice") == Some(2),
    );
    net.run_for(Duration::from_secs(1));
    let numbers = &net.client("bob").numbers_from["alice"];
    let (first, last) = (
        *numbers.first().expect("frames"),
        *numbers.last().expect("frames"),
    );
    let missing: Vec<u32> = (first..=last).filter(|n| !numbers.contains(n)).collect();
    assert_eq!(
        numbers.len() as u32,
        last - first + 1,
        "no frame of alice's is missing for bob across the layer switches ({before} before): {missing:?}"
    );
}

#[test]
fn video_pauses_for_a_subscriber_who_cannot_take_the_lowest_layer_and_resumes() {
    let mut net = Net::new();
    net.join_simulcast("alice", "r1", three_layers());
    net.join("bob", "r1", MediaKind::Video);
    net.run_until("bob receives alice's video", Duration::from_secs(10), |n| {
        n.client("bob").frames("alice") >= 5
    });
    net.sfu
        .set_view(&id("bob"), Vec::new(), Some(30_000))
        .expect("bob's view");
    net.run_for(Duration::from_millis(500));
    let paused_at = net.client("bob").frames("alice");
    net.run_for(Duration::from_secs(2));
    assert_eq!(
        net.client("bob").frames("alice"),
        paused_at,
        "nothing of alice's video reaches bob at 30 kbit/s"
    );
    assert!(
        net.client("alice").frames("bob") > 50,
        "bob still publishes to alice"
    );
    net.sfu
        .set_view(&id("bob"), Vec::new(), Some(150_000))
        .expect("bob's view");
    net.run_until(
        "alice's lowest layer reaches bob again at 150 kbit/s",
        Duration::from_secs(6),
        |n| n.client("bob").frames("alice") > paused_at + 10 && n.layer("bob", "alice") == Some(0),
    );
}

#[test]
fn a_video_without_simulcast_is_forwarded_as_it_is() {
    let mut net = Net::new();
    net.join("alice", "r1", MediaKind::Video);
    net.join("bob", "r1", MediaKind::Video);
    net.sfu
        .set_view(&id("bob"), vec![(id("alice"), 100)], Some(1_000_000))
        .expect("bob's view");
    net.run_until(
        "bob receives alice's one stream",
        Duration::from_secs(10),
        |n| n.client("bob").frames("alice") >= 50,
    );
    assert!(
        !net.events
            .iter()
            .any(|e| matches!(e, SfuEvent::LayersWanted { .. })),
        "no layer hints for a track without layers"
    );
}

#[test]
fn the_active_speaker_follows_who_speaks() {
    let mut net = Net::new();
    for name in ["alice", "bob", "carol"] {
        net.join(name, "r1", MediaKind::Audio);
    }
    net.join("dave", "r2", MediaKind::Audio);
    for (name, level) in [
        ("alice", -20),
        ("bob", -127),
        ("carol", -127),
        ("dave", -127),
    ] {
        net.client_mut(name).audio_level = Some(level);
    }
    let speaker = |n: &Net| {
        n.events.iter().rev().find_map(|e| match e {
            SfuEvent::ActiveSpeaker { room, participant } if room == "r1" => {
                Some(participant.0.clone())
            }
            _ => None,
        })
    };
    net.run_until(
        "alice is r1's active speaker",
        Duration::from_secs(10),
        |n| speaker(n).as_deref() == Some("alice"),
    );
    net.client_mut("alice").audio_level = Some(-127);
    net.client_mut("bob").audio_level = Some(-25);
    net.run_until("bob takes over", Duration::from_secs(5), |n| {
        speaker(n).as_deref() == Some("bob")
    });
    // Someone who joins while bob goes on speaking is told so, though the speaker is unchanged.
    let told = |n: &Net| {
        n.events
            .iter()
            .filter(|e| matches!(e, SfuEvent::ActiveSpeaker { room, participant } if room == "r1" && participant.0 == "bob"))
            .count()
    };
    let before = told(&net);
    net.join("erin", "r1", MediaKind::Audio);
    net.client_mut("erin").audio_level = Some(-127);
    net.run_until(
        "bob named as the speaker again once erin's media connects",
        Duration::from_secs(10),
        |n| told(n) > before,
    );
    assert!(
        !net.events
            .iter()
            .any(|e| matches!(e, SfuEvent::ActiveSpeaker { room, .. } if room == "r2")),
        "silent dave's room has no speaker"
    );
}
