//! The JSON shapes of calls and rooms, shared by REST and the sockets: seed 001's camelCase `callSession` and `room`, and seed
//! 000's snake_case call object. One place, so every endpoint shows the same fields.

use serde_json::{json, Value};

use crate::clock::rfc3339;
use crate::store::analytics::{QualitySummary, RelaySession};
use crate::store::calls::{CallEvent, CallRecord, Participant};
use crate::store::rooms::Room;

fn time(ms: Option<i64>) -> Value {
    ms.map(|m| Value::String(rfc3339(m))).unwrap_or(Value::Null)
}

fn participant(p: &Participant) -> Value {
    json!({
        "userId": p.user_id,
        "role": p.role.as_str(),
        "joinedAt": time(p.joined_at),
        "leftAt": time(p.left_at),
        "audio": p.audio,
        "video": p.video,
        "screen": p.screen,
        "camera": p.camera,
    })
}

/// Seed 001's `callSession`.
pub fn call_session(c: &CallRecord, now: i64) -> Value {
    json!({
        "id": c.id,
        "kind": c.kind.as_str(),
        "callerId": c.caller_id,
        "calleeId": c.callee_id,
        "callType": c.call_type.as_str(),
        "status": c.status.as_str(),
        "endReason": c.end_reason.map(|r| r.as_str()),
        "roomId": c.room_id,
        "roomName": c.room_name,
        "createdAt": time(Some(c.created_at)),
        "answeredAt": time(c.answered_at),
        "endedAt": time(c.ended_at),
        "duration": c.duration_secs(now),
        "participants": c.participants.iter().map(participant).collect::<Vec<_>>(),
    })
}

/// Seed 000's call object.
pub fn video_call(c: &CallRecord) -> Value {
    json!({
        "id": c.id,
        "host_id": c.caller_id,
        "guest_id": c.callee_id,
        "status": c.status.seed000(),
        "room_name": c.room_name,
        "call_type": c.call_type.as_str(),
        "created_at": time(Some(c.created_at)),
        "started_at": time(c.answered_at),
        "ended_at": time(c.ended_at),
        "end_reason": c.end_reason.map(|r| r.as_str()),
    })
}

/// Seed 001's `room`.
pub fn room(r: &Room) -> Value {
    json!({
        "id": r.id,
        "name": r.name,
        "ownerId": r.owner_id,
        "maxParticipants": r.max_participants,
        "isPrivate": r.is_private,
        "members": r.members,
        "participants": r.peers.iter().map(|p| json!({
            "peerId": p.peer_id,
            "userId": p.user_id,
            "joinedAt": time(Some(p.joined_at)),
        })).collect::<Vec<_>>(),
        "participantCount": r.peers.len(),
        "callId": r.call_id,
        "createdAt": time(Some(r.created_at)),
    })
}

/// `GET /calls/:id/analytics`.
pub fn analytics(
    c: &CallRecord,
    events: &[CallEvent],
    quality: &QualitySummary,
    relay: &[RelaySession],
    now: i64,
) -> Value {
    let timeline: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({
                "at": time(Some(e.at)),
                "userId": e.user_id,
                "event": e.kind,
                "data": e.data,
            })
        })
        .collect();
    let media: Vec<Value> = events
        .iter()
        .filter(|e| matches!(e.kind.as_str(), "media" | "camera-switched"))
        .map(|e| json!({ "at": time(Some(e.at)), "userId": e.user_id, "event": e.kind, "state": e.data }))
        .collect();
    let sum = |f: fn(&RelaySession) -> u64| relay.iter().map(f).sum::<u64>();
    json!({
        "callId": c.id,
        "callType": c.call_type.as_str(),
        "status": c.status.as_str(),
        "endReason": c.end_reason.map(|r| r.as_str()),
        "createdAt": time(Some(c.created_at)),
        "answeredAt": time(c.answered_at),
        "endedAt": time(c.ended_at),
        "duration": c.duration_secs(now),
        "setupTime": c.answered_at.map(|a| (a - c.created_at).max(0) as f64 / 1000.0),
        "participants": c.participants.iter().map(participant).collect::<Vec<_>>(),
        "mediaTimeline": media,
        "timeline": timeline,
        "quality": {
            "reports": quality.reports,
            "avgRttMs": quality.avg_rtt_ms,
            "maxRttMs": quality.max_rtt_ms,
            "avgJitterMs": quality.avg_jitter_ms,
            "avgPacketLoss": quality.avg_packet_loss,
            "avgBitrateKbps": quality.avg_bitrate_kbps,
        },
        "relay": {
            "allocations": relay.len(),
            "bytesToPeer": sum(|s| s.bytes_to_peer),
            "bytesFromPeer": sum(|s| s.bytes_from_peer),
            "packetsToPeer": sum(|s| s.packets_to_peer),
            "packetsFromPeer": sum(|s| s.packets_from_peer),
            "sessions": relay.iter().map(|s| json!({
                "userId": s.user_id,
                "transport": s.transport,
                "relayAddress": s.relay_addr,
                "openedAt": time(Some(s.opened_at)),
                "closedAt": time(s.closed_at),
                "bytesToPeer": s.bytes_to_peer,
                "bytesFromPeer": s.bytes_from_peer,
            })).collect::<Vec<_>>(),
        },
    })
}
