//! One participant of an SFU room: its str0m session, the tracks it publishes, the tracks it is
//! sent (each a copy of another participant's track) and the state of the SDP negotiation that
//! adds and removes them.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::SdpPendingOffer;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Rid};
use str0m::Rtc;

use crate::layers::{Budget, Hold};
use crate::simulcast::{Forwarding, LayerIn};

/// Who a participant is to the caller (its signaling session, say). Also the stream id the
/// participant's tracks carry to the others (`a=msid`), so a client can put each on its tile.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ParticipantId(pub String);

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for ParticipantId {
    fn from(s: &str) -> Self {
        ParticipantId(s.to_owned())
    }
}

/// A track a participant publishes: media the SFU receives on `mid`.
#[derive(Debug)]
pub(crate) struct TrackIn {
    pub mid: Mid,
    pub kind: MediaKind,
    /// Its layers (one per rid with simulcast, else one without a rid), as they appear.
    pub layers: Vec<LayerIn>,
    /// When a keyframe was asked for before any layer had been seen.
    pub last_keyframe_request: Option<Instant>,
}

impl TrackIn {
    /// The layer `rid`, recorded at `now` if it is new.
    pub fn layer_mut(&mut self, rid: Option<Rid>, now: Instant) -> &mut LayerIn {
        let i = match self.layers.iter().position(|l| l.rid == rid) {
            Some(i) => i,
            None => {
                self.layers.push(LayerIn::new(rid, now));
                self.layers.len() - 1
            }
        };
        &mut self.layers[i]
    }
}

/// Which published track a forwarded track copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Source {
    pub participant: ParticipantId,
    pub mid: Mid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TrackOutState {
    /// To be added in the next offer.
    ToOpen,
    /// Offered as `mid`, answer awaited.
    Negotiating(Mid),
    /// Negotiated: media is forwarded on `mid`.
    Open(Mid),
    /// To be stopped in the next offer (its publisher left).
    ToStop(Mid),
    /// Offered stopped, answer awaited.
    NegotiatingStop(Mid),
}

/// A track the SFU sends to this participant.
#[derive(Debug)]
pub(crate) struct TrackOut {
    pub source: Source,
    pub kind: MediaKind,
    pub state: TrackOutState,
    /// The publisher has left: the track is stopped at the next negotiation.
    pub source_gone: bool,
    /// Which of the source's layers is sent (video).
    pub fwd: Forwarding,
    /// Holds back upgrades of the layer.
    pub hold: Hold,
}

impl TrackOut {
    pub fn open_mid(&self) -> Option<Mid> {
        match self.state {
            TrackOutState::Open(m) => Some(m),
            _ => None,
        }
    }
}

/// The shortest time between two keyframe requests for one layer of a publisher's track.
pub(crate) const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// What the participant shows of the others, and how much it can take in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// Publisher → width in device pixels of the tile showing its video (0: not shown).
    /// Publishers not named: any size.
    pub tiles: HashMap<ParticipantId, u32>,
    /// The most the participant wants to receive, in bits per second.
    pub max_bitrate: Option<u64>,
}

pub(crate) struct Participant {
    pub id: ParticipantId,
    pub room: Arc<str>,
    pub rtc: Rtc,
    pub tracks_in: Vec<TrackIn>,
    pub tracks_out: Vec<TrackOut>,
    /// The SFU's offer the participant has not answered yet.
    pub pending: Option<SdpPendingOffer>,
    pub connected: bool,
    /// When str0m last asked to be woken.
    pub timeout: Option<Instant>,
    /// Something was given to the session (input, a frame to forward, SDP, a subscription)
    /// since it was last polled: only such sessions are polled, so a datagram costs the work
    /// of the sessions it concerns, not of every participant on the server.
    pub dirty: bool,
    pub view: View,
    /// The latest estimate of the bandwidth towards the participant (TWCC or REMB).
    pub estimate_bps: Option<u64>,
    /// The bitrate the bandwidth estimator was last told to probe for.
    pub desired_bps: u64,
    /// Its video budget from the estimate.
    pub budget: Budget,
    /// When the next quality sample is due.
    pub next_quality: Option<Instant>,
}

impl Participant {
    pub fn new(id: ParticipantId, room: Arc<str>, rtc: Rtc) -> Self {
        Participant {
            id,
            room,
            rtc,
            tracks_in: Vec::new(),
            tracks_out: Vec::new(),
            pending: None,
            connected: false,
            timeout: None,
            dirty: true,
            view: View::default(),
            estimate_bps: None,
            desired_bps: 0,
            budget: Budget::default(),
            next_quality: None,
        }
    }

    /// Records a track the participant publishes.
    pub fn publish(&mut self, mid: Mid, kind: MediaKind) {
        if self.tracks_in.iter().all(|t| t.mid != mid) {
            self.tracks_in.push(TrackIn {
                mid,
                kind,
                layers: Vec::new(),
                last_keyframe_request: None,
            });
        }
    }

    /// Starts sending a copy of another participant's track (negotiated at the next offer).
    pub fn subscribe(&mut self, source: Source, kind: MediaKind) {
        if self.tracks_out.iter().all(|t| t.source != source) {
            self.tracks_out.push(TrackOut {
                source,
                kind,
                state: TrackOutState::ToOpen,
                source_gone: false,
                fwd: Forwarding::default(),
                hold: Hold::default(),
            });
        }
    }

    /// Stops the copies of every track `publisher` published (it left the room).
    pub fn unsubscribe_all(&mut self, publisher: &ParticipantId) {
        for t in &mut self.tracks_out {
            if &t.source.participant == publisher {
                t.source_gone = true;
            }
        }
        // Never offered: nothing to take back.
        self.tracks_out
            .retain(|t| !(t.source_gone && t.state == TrackOutState::ToOpen));
    }

    /// The mid this participant is sent `publisher`'s track `mid` on, once negotiated, and
    /// which of its layers is forwarded.
    pub fn forwarded_mut(
        &mut self,
        publisher: &ParticipantId,
        mid: Mid,
    ) -> Option<(Mid, &mut Forwarding)> {
        let t = self.tracks_out.iter_mut().find(|t| {
            !t.source_gone && &t.source.participant == publisher && t.source.mid == mid
        })?;
        Some((t.open_mid()?, &mut t.fwd))
    }

    /// The published track a forwarded `mid` copies, and the layer of it being sent.
    pub fn source_of(&self, mid: Mid) -> Option<(&Source, Option<Rid>)> {
        self.tracks_out
            .iter()
            .find(|t| t.open_mid() == Some(mid) && !t.source_gone)
            .map(|t| (&t.source, t.fwd.current.flatten()))
    }

    /// Builds the SFU's next offer to this participant when tracks are to be added or stopped
    /// and no offer is already waiting for its answer. Returns the SDP text.
    pub fn negotiate_if_needed(&mut self) -> Option<String> {
        // Called on every pass over the sessions: nothing to offer is the common case.
        let due = |t: &TrackOut| match t.state {
            TrackOutState::ToOpen | TrackOutState::ToStop(_) => true,
            TrackOutState::Open(_) => t.source_gone,
            _ => false,
        };
        if self.pending.is_some() || !self.tracks_out.iter().any(due) {
            return None;
        }
        for t in &mut self.tracks_out {
            if let TrackOutState::Open(m) = t.state {
                if t.source_gone {
                    t.state = TrackOutState::ToStop(m);
                }
            }
        }
        let mut change = self.rtc.sdp_api();
        let mut offered = Vec::new();
        for (i, t) in self.tracks_out.iter().enumerate() {
            match t.state {
                TrackOutState::ToOpen => {
                    let stream = t.source.participant.0.clone();
                    let mid =
                        change.add_media(t.kind, Direction::SendOnly, Some(stream), None, None);
                    offered.push((i, TrackOutState::Negotiating(mid)));
                }
                TrackOutState::ToStop(m) => {
                    change.stop_media(m);
                    offered.push((i, TrackOutState::NegotiatingStop(m)));
                }
                _ => {}
            }
        }
        if !change.has_changes() {
            return None;
        }
        let (offer, pending) = change.apply()?;
        for (i, state) in offered {
            self.tracks_out[i].state = state;
        }
        self.pending = Some(pending);
        Some(offer.to_sdp_string())
    }

    /// The SFU's offer was answered: offered tracks are open, stopped ones are gone.
    pub fn answered(&mut self) {
        for t in &mut self.tracks_out {
            if let TrackOutState::Negotiating(m) = t.state {
                t.state = TrackOutState::Open(m);
            }
        }
        self.tracks_out
            .retain(|t| !matches!(t.state, TrackOutState::NegotiatingStop(_)));
    }

    /// The participant's own offer crossed the SFU's (str0m drops the SFU's pending offer when
    /// it accepts one): what was being offered is offered again next time.
    pub fn offer_rolled_back(&mut self) {
        self.pending = None;
        for t in &mut self.tracks_out {
            t.state = match t.state {
                TrackOutState::Negotiating(_) => TrackOutState::ToOpen,
                TrackOutState::NegotiatingStop(m) => TrackOutState::ToStop(m),
                s => s,
            };
        }
    }

    /// Asks the participant for a keyframe of layer `rid` of the track it publishes on `mid`, at
    /// most once per [`KEYFRAME_REQUEST_INTERVAL`]. Returns whether a request went out.
    pub fn request_keyframe(
        &mut self,
        mid: Mid,
        rid: Option<Rid>,
        kind: KeyframeRequestKind,
        now: Instant,
    ) -> bool {
        let Some(track) = self.tracks_in.iter_mut().find(|t| t.mid == mid) else {
            return false;
        };
        // Paced per layer; before any layer has been seen, per track.
        let no_layers = track.layers.is_empty();
        let last = match track.layers.iter_mut().find(|l| l.rid == rid) {
            Some(layer) => &mut layer.last_keyframe_request,
            None if no_layers => &mut track.last_keyframe_request,
            None => return false,
        };
        if let Some(last) = *last {
            if now.saturating_duration_since(last) < KEYFRAME_REQUEST_INTERVAL {
                return false;
            }
        }
        let Some(mut writer) = self.rtc.writer(mid) else {
            return false;
        };
        let kind = if writer.is_request_keyframe_possible(kind) {
            kind
        } else if writer.is_request_keyframe_possible(KeyframeRequestKind::Pli) {
            KeyframeRequestKind::Pli
        } else {
            return false;
        };
        if writer.request_keyframe(rid, kind).is_err() {
            return false;
        }
        *last = Some(now);
        true
    }
}
