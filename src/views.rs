//! The JSON shapes of calls and rooms, shared by REST and the sockets: seed 001's camelCase `callSession` and `room`, and seed
//! 000's snake_case call object. One place, so every endpoint shows the same fields. Each shape is
//! a typed struct whose OpenAPI schema is derived from the same definition that serializes it.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::clock::rfc3339;
use crate::signaling::call::{CallStatus, CallType, EndReason, Role};
use crate::signaling::topology::RoomMode;
use crate::store::analytics::{QualitySummary, RelaySession, SfuQuality, SfuTrack};
use crate::store::calls::{CallEvent, CallKind, CallRecord, Participant};
use crate::store::rooms::Room;

fn time(ms: Option<i64>) -> Option<String> {
    ms.map(rfc3339)
}

fn at(ms: i64) -> String {
    rfc3339(ms)
}

/// Serializes a view; the view types hold only strings, numbers and JSON, so this cannot fail.
fn to_json<T: Serialize>(view: &T) -> Value {
    serde_json::to_value(view).unwrap_or(Value::Null)
}

/// One participant of a call and their media state.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = Participant)]
pub struct ParticipantView {
    pub user_id: String,
    pub role: Role,
    /// When they joined (callees: when they accepted); null before.
    #[schema(format = DateTime, required = true)]
    pub joined_at: Option<String>,
    #[schema(format = DateTime, required = true)]
    pub left_at: Option<String>,
    /// Microphone on.
    pub audio: bool,
    /// Camera on.
    pub video: bool,
    /// Sharing their screen.
    pub screen: bool,
    /// The camera in use after a switch (`front`, `back`, a label), if reported.
    #[schema(required = true)]
    pub camera: Option<String>,
}

fn participant(p: &Participant) -> ParticipantView {
    ParticipantView {
        user_id: p.user_id.clone(),
        role: p.role,
        joined_at: time(p.joined_at),
        left_at: time(p.left_at),
        audio: p.audio,
        video: p.video,
        screen: p.screen,
        camera: p.camera.clone(),
    }
}

/// Direct (1:1) or room (group) call.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = CallKind)]
pub enum CallKindView {
    Direct,
    Room,
}

impl From<CallKind> for CallKindView {
    fn from(k: CallKind) -> Self {
        match k {
            CallKind::Direct => CallKindView::Direct,
            CallKind::Room => CallKindView::Room,
        }
    }
}

/// Seed 001's `callSession`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CallSession {
    #[schema(format = Uuid)]
    pub id: String,
    pub kind: CallKindView,
    pub caller_id: String,
    /// Null for a room call, or a seed 000 call nobody joined yet.
    #[schema(required = true)]
    pub callee_id: Option<String>,
    pub call_type: CallType,
    pub status: CallStatus,
    #[schema(required = true)]
    pub end_reason: Option<EndReason>,
    #[schema(required = true)]
    pub room_id: Option<String>,
    #[schema(required = true)]
    pub room_name: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime, required = true)]
    pub answered_at: Option<String>,
    #[schema(format = DateTime, required = true)]
    pub ended_at: Option<String>,
    /// Whole seconds since it was answered (until it ended); null if never answered.
    #[schema(required = true, minimum = 0)]
    pub duration: Option<i64>,
    pub participants: Vec<ParticipantView>,
}

fn call_session_view(c: &CallRecord, now: i64) -> CallSession {
    CallSession {
        id: c.id.clone(),
        kind: c.kind.into(),
        caller_id: c.caller_id.clone(),
        callee_id: c.callee_id.clone(),
        call_type: c.call_type,
        status: c.status,
        end_reason: c.end_reason,
        room_id: c.room_id.clone(),
        room_name: c.room_name.clone(),
        created_at: at(c.created_at),
        answered_at: time(c.answered_at),
        ended_at: time(c.ended_at),
        duration: c.duration_secs(now),
        participants: c.participants.iter().map(participant).collect(),
    }
}

/// Seed 001's `callSession`.
pub fn call_session(c: &CallRecord, now: i64) -> Value {
    to_json(&call_session_view(c, now))
}

/// Seed 000's status of a call: `ringing → pending`, `active → active`, every end `→ ended`.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VideoCallStatus {
    Pending,
    Active,
    Ended,
}

impl From<CallStatus> for VideoCallStatus {
    fn from(s: CallStatus) -> Self {
        match s {
            CallStatus::Ringing => VideoCallStatus::Pending,
            CallStatus::Active => VideoCallStatus::Active,
            _ => VideoCallStatus::Ended,
        }
    }
}

/// Seed 000's call object.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VideoCall {
    #[schema(format = Uuid)]
    pub id: String,
    pub host_id: String,
    /// Null until a guest joins.
    #[schema(required = true)]
    pub guest_id: Option<String>,
    pub status: VideoCallStatus,
    #[schema(required = true)]
    pub room_name: Option<String>,
    pub call_type: CallType,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime, required = true)]
    pub started_at: Option<String>,
    #[schema(format = DateTime, required = true)]
    pub ended_at: Option<String>,
    #[schema(required = true)]
    pub end_reason: Option<EndReason>,
}

/// Seed 000's call object.
pub fn video_call(c: &CallRecord) -> Value {
    to_json(&VideoCall {
        id: c.id.clone(),
        host_id: c.caller_id.clone(),
        guest_id: c.callee_id.clone(),
        status: c.status.into(),
        room_name: c.room_name.clone(),
        call_type: c.call_type,
        created_at: at(c.created_at),
        started_at: time(c.answered_at),
        ended_at: time(c.ended_at),
        end_reason: c.end_reason,
    })
}

/// Someone in a room, with the peer id others address them by.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = RoomPeer)]
pub struct RoomPeerView {
    #[schema(format = Uuid)]
    pub peer_id: String,
    pub user_id: String,
    #[schema(format = DateTime)]
    pub joined_at: String,
}

/// Seed 001's `room`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = Room)]
pub struct RoomView {
    #[schema(format = Uuid)]
    pub id: String,
    pub name: String,
    pub owner_id: String,
    #[schema(minimum = 2, maximum = 16)]
    pub max_participants: u32,
    pub is_private: bool,
    pub mode: RoomMode,
    /// Users admitted to a private room (besides the owner and admins).
    pub members: Vec<String>,
    pub participants: Vec<RoomPeerView>,
    #[schema(minimum = 0)]
    pub participant_count: usize,
    /// The room's live group call, while anyone is in it.
    #[schema(format = Uuid, required = true)]
    pub call_id: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// Seed 001's `room`.
pub fn room(r: &Room) -> Value {
    to_json(&RoomView {
        id: r.id.clone(),
        name: r.name.clone(),
        owner_id: r.owner_id.clone(),
        max_participants: r.max_participants,
        is_private: r.is_private,
        mode: r.mode,
        members: r.members.clone(),
        participants: r
            .peers
            .iter()
            .map(|p| RoomPeerView {
                peer_id: p.peer_id.clone(),
                user_id: p.user_id.clone(),
                joined_at: at(p.joined_at),
            })
            .collect(),
        participant_count: r.peers.len(),
        call_id: r.call_id.clone(),
        created_at: at(r.created_at),
    })
}

/// One entry of a call's timeline.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TimelineEntry {
    #[schema(format = DateTime)]
    pub at: String,
    /// Who caused it; null for the server (timeouts, disconnects).
    #[schema(required = true)]
    pub user_id: Option<String>,
    /// `created`, `accepted`, `joined`, `left`, `media`, `camera-switched`, `ended`, …
    pub event: String,
    /// Details of the event, if any.
    #[schema(value_type = Option<Object>, required = true)]
    pub data: Option<Value>,
}

/// One media change (mute, camera) of a call.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MediaEntry {
    #[schema(format = DateTime)]
    pub at: String,
    #[schema(required = true)]
    pub user_id: Option<String>,
    /// `media` or `camera-switched`.
    pub event: String,
    /// The changed fields (`audio`, `video`, `screen`, `camera`).
    #[schema(value_type = Option<Object>, required = true)]
    pub state: Option<Value>,
}

/// Averages of the participants' quality reports (null without reports).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = Quality)]
pub struct QualityView {
    #[schema(minimum = 0)]
    pub reports: u64,
    #[schema(required = true)]
    pub avg_rtt_ms: Option<f64>,
    #[schema(required = true)]
    pub max_rtt_ms: Option<f64>,
    #[schema(required = true)]
    pub avg_jitter_ms: Option<f64>,
    #[schema(required = true)]
    pub avg_packet_loss: Option<f64>,
    #[schema(required = true)]
    pub avg_bitrate_kbps: Option<f64>,
}

/// One TURN allocation of a participant during the call.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = RelaySession)]
pub struct RelaySessionView {
    pub user_id: String,
    /// `udp`, `tcp` or `tls`.
    pub transport: String,
    pub relay_address: String,
    #[schema(format = DateTime)]
    pub opened_at: String,
    /// Null while the allocation is open.
    #[schema(format = DateTime, required = true)]
    pub closed_at: Option<String>,
    #[schema(minimum = 0)]
    pub bytes_to_peer: u64,
    #[schema(minimum = 0)]
    pub bytes_from_peer: u64,
}

/// TURN relay usage of the participants during the call.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = Relay)]
pub struct RelayView {
    #[schema(minimum = 0)]
    pub allocations: usize,
    #[schema(minimum = 0)]
    pub bytes_to_peer: u64,
    #[schema(minimum = 0)]
    pub bytes_from_peer: u64,
    #[schema(minimum = 0)]
    pub packets_to_peer: u64,
    #[schema(minimum = 0)]
    pub packets_from_peer: u64,
    pub sessions: Vec<RelaySessionView>,
}

/// One track of a room participant, as the SFU measured it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = SfuTrack)]
pub struct SfuTrackView {
    pub mid: String,
    /// `audio` or `video`.
    pub kind: String,
    /// `published`: the participant sends it; `received`: a copy of another's track sent to it.
    pub direction: String,
    #[schema(minimum = 0)]
    pub bytes: u64,
    #[schema(minimum = 0)]
    pub packets: u64,
    /// Fraction 0..=1 of packets lost (latest RTCP report).
    #[schema(required = true)]
    pub packet_loss: Option<f64>,
    #[schema(required = true)]
    pub rtt_ms: Option<f64>,
    #[schema(minimum = 0)]
    pub nacks: u64,
    #[schema(minimum = 0)]
    pub keyframe_requests: u64,
}

/// A room participant's media through the SFU.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = SfuParticipant)]
pub struct SfuParticipantView {
    pub user_id: String,
    #[schema(format = Uuid)]
    pub peer_id: String,
    #[schema(minimum = 0)]
    pub bytes_in: u64,
    #[schema(minimum = 0)]
    pub bytes_out: u64,
    #[schema(minimum = 0)]
    pub packets_in: u64,
    #[schema(minimum = 0)]
    pub packets_out: u64,
    pub tracks: Vec<SfuTrackView>,
    /// What the participant was sent over time (every 2 s while it received video).
    pub quality: Vec<QualitySampleView>,
}

/// What the SFU sent a participant at one moment.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QualitySampleView {
    #[schema(format = DateTime)]
    pub at: String,
    /// The bandwidth estimate towards the participant, if its feedback gave one.
    #[schema(required = true)]
    pub estimate_kbps: Option<f64>,
    /// Freezes of the video it was sent so far (0.7 s or more without a frame).
    #[schema(minimum = 0)]
    pub freezes: u64,
    pub layers: Vec<LayerSampleView>,
}

/// Which layer of one publisher's video a participant was sent.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LayerSampleView {
    pub from_peer_id: String,
    pub mid: String,
    /// The simulcast layer (rid) forwarded; null for a video without simulcast (or none yet).
    #[schema(required = true)]
    pub layer: Option<String>,
    /// Video paused for this participant (not enough bandwidth, or the tile is hidden).
    pub paused: bool,
    #[schema(required = true)]
    pub width: Option<u32>,
}

/// `GET /calls/:id/analytics`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Analytics {
    #[schema(format = Uuid)]
    pub call_id: String,
    pub call_type: CallType,
    pub status: CallStatus,
    #[schema(required = true)]
    pub end_reason: Option<EndReason>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime, required = true)]
    pub answered_at: Option<String>,
    #[schema(format = DateTime, required = true)]
    pub ended_at: Option<String>,
    /// Whole seconds answered; null if never answered.
    #[schema(required = true, minimum = 0)]
    pub duration: Option<i64>,
    /// Seconds from creation to answer; null if never answered.
    #[schema(required = true, minimum = 0)]
    pub setup_time: Option<f64>,
    pub participants: Vec<ParticipantView>,
    pub media_timeline: Vec<MediaEntry>,
    pub timeline: Vec<TimelineEntry>,
    pub quality: QualityView,
    pub relay: RelayView,
    /// Room calls through the SFU: per participant, measured by the server (`bytesIn` is what
    /// the participant published, `bytesOut` what it was sent).
    pub sfu: Vec<SfuParticipantView>,
}

/// `GET /calls/:id/analytics`.
pub fn analytics(
    c: &CallRecord,
    events: &[CallEvent],
    quality: &QualitySummary,
    relay: &[RelaySession],
    sfu: &[SfuTrack],
    sfu_quality: &[SfuQuality],
    now: i64,
) -> Value {
    let timeline = events
        .iter()
        .map(|e| TimelineEntry {
            at: at(e.at),
            user_id: e.user_id.clone(),
            event: e.kind.clone(),
            data: e.data.clone(),
        })
        .collect();
    let media_timeline = events
        .iter()
        .filter(|e| matches!(e.kind.as_str(), "media" | "camera-switched"))
        .map(|e| MediaEntry {
            at: at(e.at),
            user_id: e.user_id.clone(),
            event: e.kind.clone(),
            state: e.data.clone(),
        })
        .collect();
    let sum = |f: fn(&RelaySession) -> u64| relay.iter().map(f).sum::<u64>();
    to_json(&Analytics {
        call_id: c.id.clone(),
        call_type: c.call_type,
        status: c.status,
        end_reason: c.end_reason,
        created_at: at(c.created_at),
        answered_at: time(c.answered_at),
        ended_at: time(c.ended_at),
        duration: c.duration_secs(now),
        setup_time: c
            .answered_at
            .map(|a| (a - c.created_at).max(0) as f64 / 1000.0),
        participants: c.participants.iter().map(participant).collect(),
        media_timeline,
        timeline,
        quality: QualityView {
            reports: quality.reports,
            avg_rtt_ms: quality.avg_rtt_ms,
            max_rtt_ms: quality.max_rtt_ms,
            avg_jitter_ms: quality.avg_jitter_ms,
            avg_packet_loss: quality.avg_packet_loss,
            avg_bitrate_kbps: quality.avg_bitrate_kbps,
        },
        relay: RelayView {
            allocations: relay.len(),
            bytes_to_peer: sum(|s| s.bytes_to_peer),
            bytes_from_peer: sum(|s| s.bytes_from_peer),
            packets_to_peer: sum(|s| s.packets_to_peer),
            packets_from_peer: sum(|s| s.packets_from_peer),
            sessions: relay
                .iter()
                .map(|s| RelaySessionView {
                    user_id: s.user_id.clone(),
                    transport: s.transport.clone(),
                    relay_address: s.relay_addr.clone(),
                    opened_at: at(s.opened_at),
                    closed_at: time(s.closed_at),
                    bytes_to_peer: s.bytes_to_peer,
                    bytes_from_peer: s.bytes_from_peer,
                })
                .collect(),
        },
        sfu: sfu_participants(sfu, sfu_quality),
    })
}

/// Groups the SFU's track rows by participant (rows come ordered by user and peer).
fn sfu_participants(rows: &[SfuTrack], samples: &[SfuQuality]) -> Vec<SfuParticipantView> {
    let mut out: Vec<SfuParticipantView> = Vec::new();
    for t in rows {
        let fresh = out
            .last()
            .is_none_or(|p| p.peer_id != t.peer_id || p.user_id != t.user_id);
        if fresh {
            out.push(SfuParticipantView {
                user_id: t.user_id.clone(),
                peer_id: t.peer_id.clone(),
                bytes_in: 0,
                bytes_out: 0,
                packets_in: 0,
                packets_out: 0,
                tracks: Vec::new(),
                quality: samples
                    .iter()
                    .filter(|q| q.peer_id == t.peer_id)
                    .map(|q| QualitySampleView {
                        at: at(q.at),
                        estimate_kbps: q.estimate_kbps,
                        freezes: q.freezes,
                        layers: serde_json::from_str(&q.layers).unwrap_or_default(),
                    })
                    .collect(),
            });
        }
        let Some(p) = out.last_mut() else { continue };
        if t.direction == "published" {
            p.bytes_in += t.bytes;
            p.packets_in += t.packets;
        } else {
            p.bytes_out += t.bytes;
            p.packets_out += t.packets;
        }
        p.tracks.push(SfuTrackView {
            mid: t.mid.clone(),
            kind: t.kind.clone(),
            direction: t.direction.clone(),
            bytes: t.bytes,
            packets: t.packets,
            packet_loss: t.loss,
            rtt_ms: t.rtt_ms,
            nacks: t.nacks,
            keyframe_requests: t.keyframe_requests,
        });
    }
    out
}
