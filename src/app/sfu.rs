//! The application's side of the SFU: a room peer's messages to the reserved peer `sfu` (its
//! offers, answers and candidates, and `sfu-leave`) become commands on the SFU's handle, and what
//! the SFU sends back (its answers and offers, in order) is delivered to the peer's session as
//! `call-sdp-update` from `sfu`. A peer's SFU connection ends when it leaves the room.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use signalbox_sfu::{
    HandleError, MediaKind, Notice, ParticipantId, QualitySample, SfuError, SfuEvent, SfuHandle,
    TrackStats,
};
use tokio::sync::mpsc;

use crate::app::{Done, Signaling};
use crate::auth::Principal;
use crate::clock::now_ms;
use crate::error::Error;
use crate::signaling::event::Event;
use crate::signaling::switchboard::{Output, SessionId};
use crate::signaling::topology::{Topology, TopologyPolicy};
use crate::signaling::wire::sdp_type;
use crate::store::analytics::{SfuQuality, SfuTrack};
use crate::store::calls::CallKind;

/// How often the SFU's track figures are written to the database.
const STATS_FLUSH: Duration = Duration::from_secs(2);

/// The reserved peer id of the SFU inside every room.
pub const SFU_PEER: &str = "sfu";

/// Where a peer speaking to the SFU is.
struct SfuPeer {
    room_id: String,
    peer_id: String,
    topology: Topology,
}

fn refused(e: HandleError) -> Error {
    match e {
        HandleError::Stopped => Error::Internal("the SFU is not running".into()),
        HandleError::Refused(e) => match e {
            SfuError::BadSdp(m) | SfuError::Rejected(m) => Error::invalid(
                "sdp_rejected",
                format!("sdp: the SFU cannot use this session description: {m}"),
            ),
            SfuError::BadRemoteCandidate(m) => Error::invalid(
                "invalid_field",
                format!("candidate: not an ICE candidate the SFU can use: {m}"),
            ),
            SfuError::UnknownParticipant(_) => Error::conflict(
                "not_in_sfu",
                "you have no SFU connection in this room: send your offer first",
            ),
            SfuError::NoOfferPending => Error::conflict(
                "no_offer_pending",
                "sdp: the SFU has no offer waiting for an answer",
            ),
            SfuError::AlreadyJoined(_) | SfuError::BadCandidate(_) => {
                Error::Internal(format!("sfu: {e}"))
            }
        },
    }
}

impl Signaling {
    /// Gives signaling the running SFU: rooms follow `policy` from now on.
    pub fn attach_sfu(&self, handle: SfuHandle, policy: TopologyPolicy) {
        if self.sfu.set(handle).is_ok() {
            self.board().set_topology(policy);
        }
    }

    fn sfu(&self) -> Result<&SfuHandle, Error> {
        self.sfu.get().ok_or_else(|| {
            Error::invalid(
                "unknown_peer",
                "to: this server runs no SFU (rooms are peer-to-peer)",
            )
        })
    }

    /// The room peer `session` speaks for in the room call `call_id`. Calls `me` is not in
    /// are not found, whatever they are.
    async fn sfu_peer(
        &self,
        me: &Principal,
        call_id: &str,
        session: SessionId,
    ) -> Result<SfuPeer, Error> {
        let live = {
            let board = self.board();
            board
                .peer_of(call_id, session)
                .map(|(room_id, peer_id)| SfuPeer {
                    topology: board.room_topology(&room_id),
                    room_id,
                    peer_id,
                })
        };
        if let Some(peer) = live {
            return Ok(peer);
        }
        let call = self.store.visible_call(call_id, me).await?;
        match (call.kind, call.role_of(&me.id)) {
            (_, None) => Err(Error::NotFound("call")),
            (CallKind::Direct, Some(_)) => Err(Error::invalid(
                "unknown_peer",
                "to: `sfu` is a peer of rooms only, not of 1:1 calls",
            )),
            (CallKind::Room, Some(_)) => Err(Error::conflict(
                "not_joined",
                "join the room (room-join) on this connection before talking to its SFU",
            )),
        }
    }

    /// A session description for the SFU: an offer joins (in a room on the SFU) or
    /// renegotiates; an answer answers the SFU's last offer. The SFU's answer arrives as an
    /// event, before any offer of its own that follows.
    pub(crate) async fn sfu_sdp(
        self: &Arc<Self>,
        session: SessionId,
        me: &Principal,
        call_id: &str,
        sdp: Value,
    ) -> Result<Done<()>, Error> {
        let sfu = self.sfu()?.clone();
        let peer = self.sfu_peer(me, call_id, session).await?;
        let text = sdp
            .get("sdp")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let participant = ParticipantId(peer.peer_id);
        match sdp_type(&sdp) {
            "offer" => {
                let may_join = peer.topology == Topology::Sfu;
                sfu.negotiate(&peer.room_id, participant, text, may_join)
                    .await
                    .map_err(|e| match e {
                        HandleError::Refused(SfuError::UnknownParticipant(_)) => Error::conflict(
                            "not_in_sfu",
                            "this room is peer-to-peer (mesh) now: send offers to its peers,                              not to `sfu`",
                        ),
                        e => refused(e),
                    })?
            }
            "answer" => sfu.answer(participant, text).await.map_err(refused)?,
            other => {
                return Err(Error::invalid(
                    "invalid_field",
                    format!("sdp: the SFU takes an offer or an answer, not `{other}`"),
                ))
            }
        }
        Ok(self.done((), Vec::new()))
    }

    /// An ICE candidate for the SFU (`null`, the end of candidates, needs nothing).
    pub(crate) async fn sfu_candidate(
        self: &Arc<Self>,
        session: SessionId,
        me: &Principal,
        call_id: &str,
        candidate: Value,
    ) -> Result<Done<()>, Error> {
        let sfu = self.sfu()?.clone();
        let peer = self.sfu_peer(me, call_id, session).await?;
        let line = candidate
            .get("candidate")
            .and_then(Value::as_str)
            .unwrap_or_default();
        // Browsers end each generation of candidates with an empty one.
        if !line.trim().is_empty() {
            sfu.candidate(ParticipantId(peer.peer_id), line.to_string())
                .await
                .map_err(refused)?;
        }
        Ok(self.done((), Vec::new()))
    }

    /// `sfu-leave`: the peer's SFU connection ends (it stays in the room).
    pub(crate) async fn sfu_leave(
        self: &Arc<Self>,
        session: SessionId,
        me: &Principal,
        call_id: &str,
    ) -> Result<Done<()>, Error> {
        let sfu = self.sfu()?.clone();
        let peer = self.sfu_peer(me, call_id, session).await?;
        sfu.leave(ParticipantId(peer.peer_id))
            .await
            .map_err(refused)?;
        Ok(self.done((), Vec::new()))
    }

    /// `sfu-view`: what the peer shows of the others (peer id → tile width) and the most it
    /// wants to receive; the SFU fits the layers it sends to that.
    pub(crate) async fn sfu_view(
        self: &Arc<Self>,
        session: SessionId,
        me: &Principal,
        call_id: &str,
        tiles: Vec<(String, u32)>,
        max_bitrate: Option<u64>,
    ) -> Result<Done<()>, Error> {
        let sfu = self.sfu()?.clone();
        let peer = self.sfu_peer(me, call_id, session).await?;
        let tiles = tiles
            .into_iter()
            .map(|(p, w)| (ParticipantId(p), w))
            .collect();
        sfu.view(ParticipantId(peer.peer_id), tiles, max_bitrate)
            .await
            .map_err(refused)?;
        Ok(self.done((), Vec::new()))
    }

    /// A peer is gone from its room: its SFU connection ends too.
    pub(crate) fn sfu_forget(&self, peer_id: String) {
        if let Some(sfu) = self.sfu.get() {
            if sfu.leave_now(ParticipantId(peer_id)).is_err() {
                tracing::warn!("sfu: the command queue is full; a departed peer stays connected");
            }
        }
    }

    /// Delivers what the SFU sends participants, in the order it made it, until the SFU stops;
    /// stores the figures it measures on tracks, in batches.
    pub async fn run_sfu_notices(self: Arc<Self>, mut notices: mpsc::UnboundedReceiver<Notice>) {
        let mut figures: HashMap<(String, String), SfuTrack> = HashMap::new();
        let mut samples: Vec<SfuQuality> = Vec::new();
        let mut flush = tokio::time::interval(STATS_FLUSH);
        loop {
            let notice = tokio::select! {
                n = notices.recv() => n,
                _ = flush.tick() => {
                    self.store_figures(&mut figures).await;
                    self.store_quality(&mut samples).await;
                    continue;
                }
            };
            let Some(notice) = notice else { break };
            match notice {
                Notice::Answer { participant, sdp } => {
                    self.deliver_sfu_sdp(&participant, "answer", sdp)
                }
                Notice::Offer { participant, sdp } => {
                    self.deliver_sfu_sdp(&participant, "offer", sdp)
                }
                Notice::Event(SfuEvent::Connected(p)) => {
                    tracing::debug!(peer = %p, "sfu: media connected");
                    self.lost().remove(&p.0);
                }
                Notice::Event(SfuEvent::Disconnected(p)) => self.sfu_media_lost(p),
                Notice::Event(SfuEvent::TrackPublished {
                    participant,
                    mid,
                    kind,
                }) => {
                    tracing::debug!(peer = %participant, %mid, ?kind, "sfu: track published");
                }
                Notice::Event(SfuEvent::TrackStats(t)) => {
                    if let Some(row) = self.figure_row(t) {
                        figures.insert((row.peer_id.clone(), row.mid.clone()), row);
                    }
                }
                Notice::Event(SfuEvent::Quality(q)) => samples.extend(self.quality_row(q)),
                Notice::Event(SfuEvent::LayersWanted {
                    participant,
                    mid,
                    layers,
                }) => self.deliver_layers(&participant, mid, layers),
                Notice::Event(SfuEvent::ActiveSpeaker { room, participant }) => {
                    self.deliver_speaker(&room, &participant)
                }
            }
        }
        self.store_figures(&mut figures).await;
        self.store_quality(&mut samples).await;
    }

    /// Tells a publisher which layers of its track on `mid` somebody receives (`sfu-layers`).
    fn deliver_layers(
        self: &Arc<Self>,
        publisher: &ParticipantId,
        mid: String,
        layers: Vec<(String, bool)>,
    ) {
        let Some((session, call_id)) = self.board().room_peer_anywhere(&publisher.0) else {
            return;
        };
        let layers: Vec<Value> = layers
            .into_iter()
            .map(|(rid, active)| json!({ "rid": rid, "active": active }))
            .collect();
        let event = Event::new(
            "sfu-layers",
            json!({ "callId": call_id, "from": SFU_PEER, "mid": mid, "layers": layers }),
        );
        self.dispatch(vec![Output::Deliver {
            to: session,
            event: Arc::new(event),
        }]);
    }

    /// Tells everyone in the room who speaks now (`room-active-speaker`).
    fn deliver_speaker(self: &Arc<Self>, room_id: &str, speaker: &ParticipantId) {
        let Some((call_id, peers)) = self.board().room_sessions(room_id) else {
            return;
        };
        let Some(user_id) = peers
            .iter()
            .find(|(p, _, _)| *p == speaker.0)
            .map(|(_, _, u)| u.clone())
        else {
            return;
        };
        let event = Arc::new(Event::new(
            "room-active-speaker",
            json!({ "roomId": room_id, "callId": call_id, "peerId": speaker.0, "userId": user_id }),
        ));
        let out = peers
            .into_iter()
            .map(|(_, session, _)| Output::Deliver {
                to: session,
                event: Arc::clone(&event),
            })
            .collect();
        self.dispatch(out);
    }

    /// The stored form of a quality sample, for a participant still in its room.
    fn quality_row(&self, q: QualitySample) -> Option<SfuQuality> {
        let (_, call_id) = self.board().room_peer_anywhere(&q.participant.0)?;
        let layers: Vec<Value> = q
            .layers
            .iter()
            .map(|l| {
                json!({
                    "fromPeerId": l.publisher.0,
                    "mid": l.mid,
                    "layer": l.layer,
                    "paused": l.paused,
                    "width": l.width,
                })
            })
            .collect();
        Some(SfuQuality {
            call_id,
            peer_id: q.participant.0,
            at: now_ms(),
            estimate_kbps: q.estimate_bps.map(|b| b as f64 / 1000.0),
            freezes: q.freezes,
            layers: Value::Array(layers).to_string(),
        })
    }

    async fn store_quality(&self, samples: &mut Vec<SfuQuality>) {
        if samples.is_empty() {
            return;
        }
        let rows = std::mem::take(samples);
        if let Err(e) = self.store.insert_sfu_quality(rows).await {
            tracing::warn!(error = %e, "storing the SFU's quality samples failed");
        }
    }

    fn lost(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.sfu_lost.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A peer's SFU media connection failed (its signaling may still be up): unless it comes
    /// back (an ICE restart) within the grace period, the peer leaves its room, as a dropped
    /// connection does.
    fn sfu_media_lost(self: &Arc<Self>, peer: ParticipantId) {
        tracing::info!(%peer, "sfu: media connection lost");
        let failure = {
            let n = self.sfu_failures.fetch_add(1, Ordering::Relaxed);
            self.lost().insert(peer.0.clone(), n);
            n
        };
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(this.grace).await;
            let still = {
                let mut lost = this.lost();
                let same = lost.get(&peer.0) == Some(&failure);
                if same {
                    lost.remove(&peer.0);
                }
                same
            };
            if !still {
                return;
            }
            let Some((room_id, user)) = this.board().room_and_user_of_peer(&peer.0) else {
                return;
            };
            tracing::info!(%peer, %room_id, "sfu: media did not come back; the peer leaves");
            if let Err(e) = this.leave_room_as(user, &room_id).await {
                tracing::debug!(error = %e, "sfu: leaving after lost media");
            }
        });
    }

    /// The stored form of a track's figures, for a participant still in its room.
    fn figure_row(&self, t: TrackStats) -> Option<SfuTrack> {
        let board = self.board();
        let (session, call_id) = board.room_peer_anywhere(&t.participant.0)?;
        let user_id = board.user_of(session)?.to_string();
        Some(SfuTrack {
            call_id,
            peer_id: t.participant.0,
            mid: t.mid,
            user_id,
            kind: match t.kind {
                MediaKind::Audio => "audio",
                MediaKind::Video => "video",
            }
            .to_string(),
            direction: t.direction.as_str().to_string(),
            bytes: t.bytes,
            packets: t.packets,
            loss: t.loss.map(f64::from).filter(|l| l.is_finite()),
            rtt_ms: t.rtt_ms.filter(|r| r.is_finite()),
            nacks: t.nacks,
            keyframe_requests: t.keyframe_requests,
            updated_at: now_ms(),
        })
    }

    async fn store_figures(&self, figures: &mut HashMap<(String, String), SfuTrack>) {
        if figures.is_empty() {
            return;
        }
        let rows: Vec<SfuTrack> = figures.drain().map(|(_, v)| v).collect();
        if let Err(e) = self.store.upsert_sfu_tracks(rows).await {
            tracing::warn!(error = %e, "storing the SFU's track figures failed");
        }
    }

    fn deliver_sfu_sdp(self: &Arc<Self>, participant: &ParticipantId, kind: &str, sdp: String) {
        let target = self.board().room_peer_anywhere(&participant.0);
        let Some((session, call_id)) = target else {
            // Left meanwhile: its SFU session is being removed.
            return;
        };
        let event = Event::new(
            "call-sdp-update",
            json!({
                "callId": call_id,
                "from": SFU_PEER,
                "fromPeer": SFU_PEER,
                "sdp": { "type": kind, "sdp": sdp },
            }),
        );
        self.dispatch(vec![Output::Deliver {
            to: session,
            event: Arc::new(event),
        }]);
    }
}
