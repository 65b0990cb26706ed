//! The SFU: participants grouped in rooms, datagrams demultiplexed to their sessions, media and
//! keyframe requests routed between the participants of one room, and the outputs the IO edge
//! acts on.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::bwe::{Bitrate, BweKind};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::CodecExtra;
use str0m::media::{KeyframeRequestKind, MediaData, MediaKind, Mid, Rid};
use str0m::net::{Protocol, Receive, TcpType, Transmit};
use str0m::{Candidate, Event, IceConnectionState, Input, Output as RtcOutput, Rtc};

use crate::allocation;
use crate::error::SfuError;
use crate::offer;
use crate::participant::{Participant, ParticipantId, Source, View};
use crate::simulcast::{vp8_keyframe_width, Verdict};
use crate::speaker::SpeakerDetector;

/// How long received audio waits for a missing earlier packet before it is forwarded anyway.
pub const REORDER_AUDIO: Duration = Duration::from_millis(100);
/// How long a received video frame waits for missing packets (a NACK round trip or two).
pub const REORDER_VIDEO: Duration = Duration::from_millis(300);
/// What the bandwidth estimate towards a participant starts at, before its feedback says more.
pub const INITIAL_ESTIMATE: Bitrate = Bitrate::kbps(2_500);
/// How often layers are chosen and the active speakers decided.
pub const TICK: Duration = Duration::from_millis(250);

/// How the SFU is reached.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// The addresses participants send to (host candidates in the SFU's answers): the UDP
    /// socket's address, or the external address of a server behind NAT.
    pub candidates: Vec<SocketAddr>,
    /// The addresses participants may connect to over TCP instead (ICE-TCP, RFC 6544: passive
    /// host candidates; the packets arrive with [`Protocol::Tcp`]), for networks without UDP.
    pub tcp_candidates: Vec<SocketAddr>,
}

/// Something for the IO edge to do.
#[derive(Debug)]
pub enum Output {
    /// Send this datagram.
    Transmit(Transmit),
    /// Send this SDP offer to the participant over its signaling; its answer goes to
    /// [`Sfu::accept_answer`].
    Offer {
        participant: ParticipantId,
        sdp: String,
    },
    /// Something happened that the signaling or analytics may want to know.
    Event(SfuEvent),
    /// Nothing more until this time (or the next datagram): call [`Sfu::handle_timeout`] then.
    /// `None`: no session has a timer (no participants); wait for a join or a datagram.
    Timeout(Option<Instant>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum SfuEvent {
    /// The participant's media connection is up (ICE and DTLS done).
    Connected(ParticipantId),
    /// The participant's media connection failed or closed; it stays in the room until the
    /// caller removes it with [`Sfu::leave`] (after a reconnect grace, say).
    Disconnected(ParticipantId),
    /// The participant publishes a track, forwarded to the others of its room.
    TrackPublished {
        participant: ParticipantId,
        mid: String,
        kind: MediaKind,
    },
    /// What one of the participant's tracks carried so far, measured by the SFU (every
    /// [`STATS_INTERVAL`] while media flows).
    TrackStats(TrackStats),
    /// Which layers (by rid) of the simulcast track the participant publishes on `mid` somebody
    /// receives: the publisher may stop sending the others. Sent when that changes.
    LayersWanted {
        participant: ParticipantId,
        mid: String,
        layers: Vec<(String, bool)>,
    },
    /// The room's active speaker changed (or, again, when someone's media connects).
    ActiveSpeaker {
        room: String,
        participant: ParticipantId,
    },
    /// What a subscriber is sent now (every [`STATS_INTERVAL`] while it is sent video).
    Quality(QualitySample),
}

/// A subscriber's reception at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct QualitySample {
    pub participant: ParticipantId,
    /// The bandwidth estimate towards it, if its feedback gave one.
    pub estimate_bps: Option<u64>,
    /// Freezes of its video tracks so far (a gap of [`crate::simulcast::FREEZE_GAP`]).
    pub freezes: u64,
    pub layers: Vec<LayerSample>,
}

/// Which layer of a publisher's video one subscriber track carries.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSample {
    pub publisher: ParticipantId,
    /// The subscriber's mid of the track.
    pub mid: String,
    /// The rid being forwarded (`None`: a track without simulcast, or nothing yet).
    pub layer: Option<String>,
    /// Video is paused for this subscriber (bandwidth, or the tile is hidden).
    pub paused: bool,
    /// The forwarded layer's picture width, when known.
    pub width: Option<u32>,
}

/// Which way a track's media goes, seen from the participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackDirection {
    /// The participant publishes it: the SFU receives it.
    Published,
    /// A copy of another participant's track the SFU sends to this one.
    Received,
}

impl TrackDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            TrackDirection::Published => "published",
            TrackDirection::Received => "received",
        }
    }
}

/// A track's totals since it opened, and its latest loss and round-trip time.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackStats {
    pub participant: ParticipantId,
    pub mid: String,
    pub kind: MediaKind,
    pub direction: TrackDirection,
    pub bytes: u64,
    pub packets: u64,
    /// Fraction 0..=1 of packets lost in the last interval (from RTCP receiver reports).
    pub loss: Option<f32>,
    pub rtt_ms: Option<f64>,
    pub nacks: u64,
    pub keyframe_requests: u64,
}

/// How often each session reports its tracks' figures.
pub const STATS_INTERVAL: Duration = Duration::from_secs(2);

/// The SFU's running totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub participants: u64,
    pub rooms: u64,
    /// Frames (audio and video) written to subscribers.
    pub frames_forwarded: u64,
    /// Keyframe requests (PLI/FIR) sent to publishers.
    pub keyframe_requests: u64,
}

/// What a participant's session produced that concerns other participants.
enum Propagate {
    TrackOpened(ParticipantId, Mid, MediaKind),
    Media(ParticipantId, Box<MediaData>),
    KeyframeWanted(Source, Option<Rid>, KeyframeRequestKind),
    AudioLevel(ParticipantId, i8, Instant),
    /// A participant's media connected: it learns who speaks now.
    Connected(ParticipantId),
}

pub struct Sfu {
    candidates: Vec<Candidate>,
    participants: BTreeMap<ParticipantId, Participant>,
    rooms: HashMap<Arc<str>, BTreeSet<ParticipantId>>,
    /// Remote address → participant, learnt from accepted datagrams: most datagrams skip the
    /// search through every session.
    by_source: HashMap<(Protocol, SocketAddr), ParticipantId>,
    queue: VecDeque<Output>,
    /// The latest time given in (keyframe request pacing).
    now: Option<Instant>,
    speakers: HashMap<Arc<str>, SpeakerDetector>,
    /// When layers are next chosen and speakers decided.
    next_tick: Option<Instant>,
    frames_forwarded: u64,
    keyframe_requests: u64,
}

impl Sfu {
    pub fn new(config: SfuConfig) -> Result<Self, SfuError> {
        let bad = |a: &SocketAddr| SfuError::BadCandidate(a.to_string());
        let udp = config
            .candidates
            .iter()
            .map(|a| Candidate::host(*a, "udp").map_err(|_| bad(a)));
        let tcp = config.tcp_candidates.iter().map(|a| {
            Candidate::builder()
                .tcp()
                .host(*a)
                .tcptype(TcpType::Passive)
                .build()
                .map_err(|_| bad(a))
        });
        let candidates = udp.chain(tcp).collect::<Result<Vec<_>, _>>()?;
        Ok(Sfu {
            candidates,
            participants: BTreeMap::new(),
            rooms: HashMap::new(),
            by_source: HashMap::new(),
            queue: VecDeque::new(),
            now: None,
            speakers: HashMap::new(),
            next_tick: None,
            frames_forwarded: 0,
            keyframe_requests: 0,
        })
    }

    fn participant_mut(&mut self, id: &ParticipantId) -> Result<&mut Participant, SfuError> {
        self.touch(id)
            .ok_or_else(|| SfuError::UnknownParticipant(id.0.clone()))
    }

    /// The participant, marked to be polled next (whatever is done to it may produce output).
    fn touch(&mut self, id: &ParticipantId) -> Option<&mut Participant> {
        let p = self.participants.get_mut(id)?;
        p.dirty = true;
        Some(p)
    }

    /// The participants of `room`, in a stable order.
    pub fn members(&self, room: &str) -> Vec<ParticipantId> {
        self.rooms
            .get(room)
            .map(|m| m.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The running totals.
    pub fn counters(&self) -> Counters {
        Counters {
            participants: self.participants.len() as u64,
            rooms: self.rooms.len() as u64,
            frames_forwarded: self.frames_forwarded,
            keyframe_requests: self.keyframe_requests,
        }
    }

    /// Whether the participant has joined (and not left).
    pub fn contains(&self, participant: &ParticipantId) -> bool {
        self.participants.contains_key(participant)
    }

    /// Whether the participant's media connection is up.
    pub fn is_connected(&self, participant: &ParticipantId) -> bool {
        self.participants
            .get(participant)
            .is_some_and(|p| p.connected)
    }

    /// A participant joins `room` with its offer; returns the SFU's answer. The tracks the others
    /// publish are offered to the newcomer next (an [`Output::Offer`]), and the newcomer's
    /// tracks to them once its session reports them. On an error nothing has changed.
    pub fn join(
        &mut self,
        now: Instant,
        room: &str,
        participant: ParticipantId,
        offer_sdp: &str,
    ) -> Result<String, SfuError> {
        if self.participants.contains_key(&participant) {
            return Err(SfuError::AlreadyJoined(participant.0));
        }
        let offer_sdp = offer::publish_only(offer_sdp, |_| false);
        let offer =
            SdpOffer::from_sdp_string(&offer_sdp).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        self.now = Some(now);
        let mut rtc = Rtc::builder()
            .set_ice_lite(true)
            .set_stats_interval(Some(STATS_INTERVAL))
            // A frame waits this long for a missing packet (NACK/RTX) before later frames go
            // past the gap (and the publisher is asked for a keyframe): str0m's defaults (1 s
            // audio, 2 s video) suit an endpoint's playout, not a forwarder in the middle.
            .set_reordering_timeout_audio(Some(REORDER_AUDIO))
            .set_reordering_timeout_video(Some(REORDER_VIDEO))
            .enable_bwe(Some(INITIAL_ESTIMATE))
            .build(now);
        for c in &self.candidates {
            rtc.add_local_candidate(c.clone());
        }
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| SfuError::Rejected(e.to_string()))?;
        let room: Arc<str> = Arc::from(room);
        let mut newcomer = Participant::new(participant.clone(), Arc::clone(&room), rtc);
        for other in self.members(&room) {
            if let Some(p) = self.participants.get(&other) {
                for t in &p.tracks_in {
                    newcomer.subscribe(
                        Source {
                            participant: other.clone(),
                            mid: t.mid,
                        },
                        t.kind,
                    );
                }
            }
        }
        self.rooms
            .entry(room)
            .or_default()
            .insert(participant.clone());
        self.participants.insert(participant, newcomer);
        Ok(answer.to_sdp_string())
    }

    /// The participant answers the SFU's last offer.
    pub fn accept_answer(
        &mut self,
        participant: &ParticipantId,
        answer_sdp: &str,
    ) -> Result<(), SfuError> {
        let p = self.participant_mut(participant)?;
        let answer =
            SdpAnswer::from_sdp_string(answer_sdp).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        let pending = p.pending.take().ok_or(SfuError::NoOfferPending)?;
        match p.rtc.sdp_api().accept_answer(pending, answer) {
            Ok(()) => {
                p.answered();
                self.request_keyframes_for(participant);
                Ok(())
            }
            Err(e) => {
                // The offer is void: what it carried is offered again.
                p.offer_rolled_back();
                Err(SfuError::Rejected(e.to_string()))
            }
        }
    }

    /// The participant offers a change of its own (a track added, such as a screen share, or an
    /// ICE restart); returns the SFU's answer. An offer of the SFU still waiting for its answer
    /// is dropped and made again afterwards.
    pub fn accept_offer(
        &mut self,
        participant: &ParticipantId,
        offer_sdp: &str,
    ) -> Result<String, SfuError> {
        let p = self.participant_mut(participant)?;
        let offer_sdp = offer::publish_only(offer_sdp, |mid| p.rtc.media(Mid::from(mid)).is_some());
        let offer =
            SdpOffer::from_sdp_string(&offer_sdp).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        let answer = p
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| SfuError::Rejected(e.to_string()))?;
        if p.pending.is_some() {
            p.offer_rolled_back();
        }
        Ok(answer.to_sdp_string())
    }

    /// A candidate the participant trickles (the `candidate` string of an RTCIceCandidate, with or
    /// without its `candidate:` prefix). The SFU is ICE-lite: the candidate is where the
    /// participant may be reached, and connectivity checks still come from the participant.
    pub fn add_remote_candidate(
        &mut self,
        participant: &ParticipantId,
        candidate: &str,
    ) -> Result<(), SfuError> {
        let p = self.participant_mut(participant)?;
        let line = candidate.trim();
        let line = line.strip_prefix("a=").unwrap_or(line);
        let c = Candidate::from_sdp_string(line)
            .map_err(|e| SfuError::BadRemoteCandidate(e.to_string()))?;
        p.rtc.add_remote_candidate(c);
        Ok(())
    }

    /// What the participant shows of the others (tile widths in device pixels, 0 for hidden)
    /// and the most it wants to receive: its video layers are chosen to fit, from the next tick.
    pub fn set_view(
        &mut self,
        participant: &ParticipantId,
        tiles: Vec<(ParticipantId, u32)>,
        max_bitrate: Option<u64>,
    ) -> Result<(), SfuError> {
        let p = self.participant_mut(participant)?;
        p.view = View {
            tiles: tiles.into_iter().collect(),
            max_bitrate,
        };
        // At once: the next poll asks to be woken now.
        self.next_tick = self.now;
        Ok(())
    }

    /// The participant leaves: its session ends and the copies of its tracks are stopped for the
    /// others. Unknown participants are ignored.
    pub fn leave(&mut self, participant: &ParticipantId) {
        let Some(mut gone) = self.participants.remove(participant) else {
            return;
        };
        gone.rtc.disconnect();
        self.by_source.retain(|_, p| p != participant);
        if let Some(members) = self.rooms.get_mut(&gone.room) {
            members.remove(participant);
            if members.is_empty() {
                self.rooms.remove(&gone.room);
                self.speakers.remove(&gone.room);
            }
        }
        if let Some(d) = self.speakers.get_mut(&gone.room) {
            d.remove(participant);
        }
        for other in self.members(&gone.room) {
            if let Some(p) = self.touch(&other) {
                p.unsubscribe_all(participant);
            }
        }
    }

    /// A datagram arrived on the SFU's socket. Returns false when no participant's session
    /// accepts it (the caller may count or drop it; nothing changed).
    pub fn receive(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    ) -> bool {
        self.now = Some(now);
        let Ok(contents) = contents.try_into() else {
            return false;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto,
                source,
                destination,
                contents,
            },
        );
        let known = self
            .by_source
            .get(&(proto, source))
            .filter(|id| {
                self.participants
                    .get(*id)
                    .is_some_and(|p| p.rtc.accepts(&input))
            })
            .cloned();
        let owner = known.or_else(|| {
            self.participants
                .values()
                .find(|p| p.rtc.is_alive() && p.rtc.accepts(&input))
                .map(|p| p.id.clone())
        });
        let Some(owner) = owner else {
            return false;
        };
        let Some(p) = self.touch(&owner) else {
            return false;
        };
        if let Err(e) = p.rtc.handle_input(input) {
            tracing::debug!(participant = %owner, error = %e, "sfu: input refused by the session");
        }
        self.by_source.insert((proto, source), owner);
        true
    }

    /// Time has come: every session whose timer is due runs it, and every [`TICK`] the layers
    /// are chosen and the active speakers decided.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = Some(now);
        if self.next_tick.is_none_or(|t| t <= now) && !self.participants.is_empty() {
            self.next_tick = Some(now + TICK);
            self.tick(now);
        }
        for p in self.participants.values_mut() {
            if p.rtc.is_alive() && p.timeout.is_none_or(|t| t <= now) {
                p.timeout = None;
                p.dirty = true;
                if let Err(e) = p.rtc.handle_input(Input::Timeout(now)) {
                    tracing::debug!(participant = %p.id, error = %e, "sfu: timeout failed");
                }
            }
        }
    }

    /// The next thing to do. Call until it returns [`Output::Timeout`].
    pub fn poll_output(&mut self) -> Output {
        loop {
            if let Some(out) = self.queue.pop_front() {
                return out;
            }
            if !self.drive() {
                let sessions = self.participants.values().filter_map(|p| p.timeout).min();
                let tick = self.next_tick.filter(|_| !self.participants.is_empty());
                return Output::Timeout(sessions.into_iter().chain(tick).min());
            }
        }
    }

    /// Polls every session until each waits for time or input, queueing what it produced and
    /// routing what concerns others. Returns whether anything happened.
    fn drive(&mut self) -> bool {
        let mut progressed = false;
        let mut propagate = Vec::new();
        for (id, p) in self.participants.iter_mut() {
            if !p.dirty {
                continue;
            }
            p.dirty = false;
            if let Some(sdp) = p.negotiate_if_needed() {
                self.queue.push_back(Output::Offer {
                    participant: id.clone(),
                    sdp,
                });
                progressed = true;
            }
            while p.rtc.is_alive() {
                match p.rtc.poll_output() {
                    Ok(RtcOutput::Timeout(t)) => {
                        p.timeout = Some(t);
                        break;
                    }
                    Ok(RtcOutput::Transmit(t)) => {
                        self.queue.push_back(Output::Transmit(t));
                        progressed = true;
                    }
                    Ok(RtcOutput::Event(e)) => {
                        progressed = true;
                        on_event(p, e, &mut self.queue, &mut propagate);
                    }
                    Err(e) => {
                        tracing::debug!(participant = %id, error = %e, "sfu: session failed");
                        p.rtc.disconnect();
                        if p.connected {
                            p.connected = false;
                            self.queue
                                .push_back(Output::Event(SfuEvent::Disconnected(id.clone())));
                        }
                        progressed = true;
                    }
                }
            }
        }
        for item in propagate {
            progressed = true;
            self.route(item);
        }
        progressed
    }

    fn route(&mut self, item: Propagate) {
        match item {
            Propagate::TrackOpened(publisher, mid, kind) => {
                let Some(room) = self
                    .participants
                    .get(&publisher)
                    .map(|p| Arc::clone(&p.room))
                else {
                    return;
                };
                for other in self.members(&room) {
                    if other == publisher {
                        continue;
                    }
                    if let Some(p) = self.touch(&other) {
                        p.subscribe(
                            Source {
                                participant: publisher.clone(),
                                mid,
                            },
                            kind,
                        );
                    }
                }
            }
            Propagate::Media(publisher, data) => self.forward(&publisher, &data),
            Propagate::KeyframeWanted(source, rid, kind) => {
                self.request_keyframe(&source, rid, kind)
            }
            Propagate::Connected(participant) => {
                // `room-active-speaker` is sent when the speaker changes; someone who joins
                // later would not know who speaks until the next change.
                let Some(room) = self.participants.get(&participant).map(|p| &p.room) else {
                    return;
                };
                if let Some(speaker) = self.speakers.get(room).and_then(|d| d.active()) {
                    self.queue.push_back(Output::Event(SfuEvent::ActiveSpeaker {
                        room: room.to_string(),
                        participant: speaker.clone(),
                    }));
                }
            }
            Propagate::AudioLevel(publisher, level, at) => {
                let Some(room) = self.participants.get(&publisher).map(|p| &p.room) else {
                    return;
                };
                if let Some(d) = self.speakers.get_mut(room) {
                    d.level(&publisher, level, at);
                } else {
                    let mut d = SpeakerDetector::default();
                    d.level(&publisher, level, at);
                    self.speakers.insert(Arc::clone(room), d);
                }
            }
        }
    }

    fn request_keyframe(&mut self, source: &Source, rid: Option<Rid>, kind: KeyframeRequestKind) {
        let Some(now) = self.now else { return };
        if let Some(p) = self.touch(&source.participant) {
            if p.request_keyframe(source.mid, rid, kind, now) {
                self.keyframe_requests += 1;
            }
        }
    }

    /// Chooses every subscriber's layers and decides each room's active speaker.
    fn tick(&mut self, now: Instant) {
        for event in allocation::run(&mut self.participants, now) {
            if let SfuEvent::LayersWanted { participant, .. } = &event {
                if let Some(p) = self.participants.get_mut(participant) {
                    p.dirty = true;
                }
            }
            self.queue.push_back(Output::Event(event));
        }
        for p in self.participants.values_mut() {
            // The estimator was told what to probe for.
            p.dirty = true;
        }
        for (room, d) in &mut self.speakers {
            if let Some(participant) = d.decide(now) {
                self.queue.push_back(Output::Event(SfuEvent::ActiveSpeaker {
                    room: room.to_string(),
                    participant,
                }));
            }
        }
    }

    /// Writes one frame of `publisher`'s to every other participant of its room that is sent
    /// that track. Only members of the publisher's own room are looked at.
    fn forward(&mut self, publisher: &ParticipantId, data: &MediaData) {
        let Some(room) = self
            .participants
            .get(publisher)
            .map(|p| Arc::clone(&p.room))
        else {
            return;
        };
        let Some(members) = self.rooms.get(&room) else {
            return;
        };
        let lowest = (data.params.spec().codec.is_video())
            .then(|| self.lowest_layer(publisher, data.mid))
            .flatten();
        let keyframe = data.is_keyframe();
        // str0m queues what is written in the order of this time: the forwarding time keeps
        // frames in the order they are written. With the frame's arrival time instead, a
        // keyframe that arrived earlier than it was written (the first of a layer just turned
        // back on) could be queued ahead of frames of the previous layer, and the subscriber's
        // decoder stayed at the old layer's size (seen in the simulcast browser test).
        let written_at = self.now.unwrap_or(data.network_time);
        let mut keyframes_wanted = Vec::new();
        for other in members {
            if other == publisher {
                continue;
            }
            let Some(p) = self.participants.get_mut(other) else {
                continue;
            };
            let Some((mid, fwd)) = p.forwarded_mut(publisher, data.mid) else {
                continue;
            };
            let time = match lowest {
                // Video: the layer this subscriber is sent, switched on keyframes.
                Some(lowest) => {
                    let was = fwd.current;
                    match fwd.on_frame(data.rid, lowest, keyframe, data.time, data.network_time) {
                        Verdict::Forward(t) => {
                            if fwd.current != was {
                                tracing::debug!(subscriber = %other, %publisher, from = ?was.flatten(), to = ?data.rid, bytes = data.data.len(), width = ?crate::simulcast::vp8_keyframe_width(&data.data), seq = ?data.seq_range, "sfu: layer switched");
                            }
                            t
                        }
                        Verdict::Skip => continue,
                        Verdict::NeedKeyframe(rid) => {
                            keyframes_wanted.push(rid);
                            continue;
                        }
                    }
                }
                None => data.time,
            };
            p.dirty = true;
            let Some(writer) = p.rtc.writer(mid) else {
                continue;
            };
            let Some(pt) = writer.match_params(data.params) else {
                continue;
            };
            match writer.write(pt, written_at, time, Arc::clone(&data.data)) {
                Ok(()) => self.frames_forwarded += 1,
                Err(e) => {
                    tracing::debug!(participant = %other, error = %e, "sfu: forwarding failed")
                }
            }
        }
        keyframes_wanted.sort_unstable_by_key(|r| r.map(|r| r.to_string()));
        keyframes_wanted.dedup();
        let source = Source {
            participant: publisher.clone(),
            mid: data.mid,
        };
        for rid in keyframes_wanted {
            self.request_keyframe(&source, rid, KeyframeRequestKind::Pli);
        }
    }

    /// The lowest layer of a published video track now (`Some(None)`: it has no rids).
    fn lowest_layer(&self, publisher: &ParticipantId, mid: Mid) -> Option<Option<Rid>> {
        let now = self.now?;
        let track = self
            .participants
            .get(publisher)?
            .tracks_in
            .iter()
            .find(|t| t.mid == mid)?;
        let ranked = crate::simulcast::ranked(&track.layers, now);
        Some(ranked.first().and_then(|(rid, _)| *rid))
    }

    /// A subscriber's tracks were just negotiated: ask their publishers for keyframes so the
    /// new tiles show a picture at once.
    fn request_keyframes_for(&mut self, subscriber: &ParticipantId) {
        let Some(p) = self.participants.get(subscriber) else {
            return;
        };
        let sources: Vec<Source> = p
            .tracks_out
            .iter()
            .filter(|t| t.kind == MediaKind::Video && t.open_mid().is_some() && !t.source_gone)
            .map(|t| t.source.clone())
            .collect();
        for s in sources {
            // The layer it will be sent first: the lowest, until the next allocation.
            let rid = self.lowest_layer(&s.participant, s.mid).flatten();
            self.request_keyframe(&s, rid, KeyframeRequestKind::Pli);
        }
    }
}

/// One event of a participant's session.
fn on_event(
    p: &mut Participant,
    e: Event,
    queue: &mut VecDeque<Output>,
    propagate: &mut Vec<Propagate>,
) {
    match e {
        Event::Connected => {
            p.connected = true;
            queue.push_back(Output::Event(SfuEvent::Connected(p.id.clone())));
            propagate.push(Propagate::Connected(p.id.clone()));
        }
        Event::IceConnectionStateChange(IceConnectionState::Disconnected) if p.connected => {
            p.connected = false;
            queue.push_back(Output::Event(SfuEvent::Disconnected(p.id.clone())));
        }
        Event::MediaAdded(added) if added.direction.is_receiving() => {
            p.publish(added.mid, added.kind);
            queue.push_back(Output::Event(SfuEvent::TrackPublished {
                participant: p.id.clone(),
                mid: added.mid.to_string(),
                kind: added.kind,
            }));
            propagate.push(Propagate::TrackOpened(p.id.clone(), added.mid, added.kind));
        }
        Event::MediaData(data) => {
            let at = data.network_time;
            if let Some(track) = p.tracks_in.iter_mut().find(|t| t.mid == data.mid) {
                if track.kind == MediaKind::Video {
                    let width = match data.codec_extra {
                        CodecExtra::Vp8(v) if v.is_keyframe => vp8_keyframe_width(&data.data),
                        _ => None,
                    };
                    track
                        .layer_mut(data.rid, at)
                        .observe(at, data.data.len(), width);
                }
            }
            if let Some(level) = data.ext_vals.audio_level {
                propagate.push(Propagate::AudioLevel(p.id.clone(), level, at));
            }
            if !data.contiguous {
                propagate.push(Propagate::KeyframeWanted(
                    Source {
                        participant: p.id.clone(),
                        mid: data.mid,
                    },
                    data.rid,
                    KeyframeRequestKind::Pli,
                ));
            }
            propagate.push(Propagate::Media(p.id.clone(), Box::new(data)));
        }
        Event::MediaIngressStats(s) => {
            let kind = p.rtc.media(s.mid).map(|m| m.kind());
            if let Some(kind) = kind {
                queue.push_back(Output::Event(SfuEvent::TrackStats(TrackStats {
                    participant: p.id.clone(),
                    mid: s.mid.to_string(),
                    kind,
                    direction: TrackDirection::Published,
                    bytes: s.bytes,
                    packets: s.packets,
                    loss: s.loss,
                    rtt_ms: s.rtt.map(|d| d.as_secs_f64() * 1000.0),
                    nacks: s.nacks,
                    keyframe_requests: s.plis + s.firs,
                })));
            }
        }
        Event::MediaEgressStats(s) => {
            let kind = p.rtc.media(s.mid).map(|m| m.kind());
            if let Some(kind) = kind {
                queue.push_back(Output::Event(SfuEvent::TrackStats(TrackStats {
                    participant: p.id.clone(),
                    mid: s.mid.to_string(),
                    kind,
                    direction: TrackDirection::Received,
                    bytes: s.bytes,
                    packets: s.packets,
                    loss: s.loss,
                    rtt_ms: s.rtt.map(|d| d.as_secs_f64() * 1000.0),
                    nacks: s.nacks,
                    keyframe_requests: s.plis + s.firs,
                })));
            }
        }
        Event::KeyframeRequest(req) => {
            if let Some((source, rid)) = p.source_of(req.mid) {
                propagate.push(Propagate::KeyframeWanted(source.clone(), rid, req.kind));
            }
        }
        Event::EgressBitrateEstimate(
            BweKind::Twcc {
                estimate: bitrate, ..
            }
            | BweKind::Remb {
                estimate: bitrate, ..
            },
        ) => p.estimate_bps = Some(bitrate.as_u64()),
        _ => {}
    }
}
