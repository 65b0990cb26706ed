//! The webhook events and their JSON bodies: `{"id", "event", "createdAt", …fields}`, ids in
//! camelCase as in the REST API, times in Unix milliseconds. Each event also has an ordering
//! key (`call:<id>` or `room:<id>`): the events of one key are delivered in the order they
//! happened. Pure: the caller passes the time and the event id.

use serde_json::{json, Map, Value};

use crate::signaling::call::CallStatus;
use crate::store::calls::CallRecord;
use crate::store::rooms::Room;

/// Every event name a receiver can get.
pub const NAMES: &[&str] = &[
    "call.started",
    "call.ended",
    "call.missed",
    "room.participant_joined",
    "room.participant_left",
    "room.finished",
];

/// One event, before it is given an id and written to the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEvent {
    /// One of [`NAMES`].
    pub name: &'static str,
    /// Events of the same key are delivered in order.
    pub key: String,
    /// The event's own fields (next to `id`, `event` and `createdAt`).
    pub fields: Map<String, Value>,
}

impl WebhookEvent {
    fn new(name: &'static str, key: String, fields: Value) -> WebhookEvent {
        let fields = match fields {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        WebhookEvent { name, key, fields }
    }

    /// The raw JSON body POSTed (and signed): `id`, `event`, `createdAt`, then the fields.
    pub fn body(&self, id: &str, created_at: i64) -> String {
        let mut body = Map::new();
        body.insert("id".into(), id.into());
        body.insert("event".into(), self.name.into());
        body.insert("createdAt".into(), created_at.into());
        for (k, v) in &self.fields {
            body.insert(k.clone(), v.clone());
        }
        Value::Object(body).to_string()
    }
}

fn call_key(id: &str) -> String {
    format!("call:{id}")
}

fn room_key(id: &str) -> String {
    format!("room:{id}")
}

/// A direct call was accepted at `now` (`call` as it was before).
pub fn call_started(call: &CallRecord, now: i64) -> WebhookEvent {
    WebhookEvent::new(
        "call.started",
        call_key(&call.id),
        json!({
            "callId": call.id,
            "callerId": call.caller_id,
            "calleeId": call.callee_id,
            "callType": call.call_type.as_str(),
            "roomName": call.room_name,
            "startedAt": now,
        }),
    )
}

/// A direct call reached the final `status` at `now` for `reason` (`call` as it was before):
/// `call.missed` when nobody answered in time or nobody could be rung, else `call.ended`.
pub fn call_finished(
    call: &CallRecord,
    status: CallStatus,
    reason: Option<&str>,
    now: i64,
) -> WebhookEvent {
    let name = if status == CallStatus::Missed {
        "call.missed"
    } else {
        "call.ended"
    };
    let duration = call.answered_at.map(|a| (now - a).max(0) / 1000);
    WebhookEvent::new(
        name,
        call_key(&call.id),
        json!({
            "callId": call.id,
            "callerId": call.caller_id,
            "calleeId": call.callee_id,
            "callType": call.call_type.as_str(),
            "roomName": call.room_name,
            "status": status.as_str(),
            "reason": reason,
            "startedAt": call.answered_at,
            "endedAt": now,
            "duration": duration,
        }),
    )
}

/// `user` entered `room` as `peer_id`; `participants` are in it now, this one included.
pub fn participant_joined(
    room: &Room,
    user: &str,
    peer_id: &str,
    call_id: &str,
    participants: usize,
) -> WebhookEvent {
    WebhookEvent::new(
        "room.participant_joined",
        room_key(&room.id),
        json!({
            "roomId": room.id,
            "roomName": room.name,
            "userId": user,
            "peerId": peer_id,
            "callId": call_id,
            "participants": participants,
        }),
    )
}

/// `user` left `room` (`reason`: `left`, or `room-deleted`); `participants` remain.
pub fn participant_left(
    room: &Room,
    user: &str,
    peer_id: &str,
    call_id: Option<&str>,
    participants: usize,
    reason: &str,
) -> WebhookEvent {
    WebhookEvent::new(
        "room.participant_left",
        room_key(&room.id),
        json!({
            "roomId": room.id,
            "roomName": room.name,
            "userId": user,
            "peerId": peer_id,
            "callId": call_id,
            "participants": participants,
            "reason": reason,
        }),
    )
}

/// The room's session is over: its last participant left (`reason` `empty`) or it was deleted
/// (`deleted`). `started_at` is when its call began, if it had one.
pub fn room_finished(
    room: &Room,
    call_id: Option<&str>,
    started_at: Option<i64>,
    reason: &str,
    now: i64,
) -> WebhookEvent {
    WebhookEvent::new(
        "room.finished",
        room_key(&room.id),
        json!({
            "roomId": room.id,
            "roomName": room.name,
            "ownerId": room.owner_id,
            "callId": call_id,
            "reason": reason,
            "startedAt": started_at,
            "endedAt": now,
            "duration": started_at.map(|s| (now - s).max(0) / 1000),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signaling::call::CallType;
    use crate::store::calls::CallKind;

    fn call() -> CallRecord {
        CallRecord {
            id: "c1".into(),
            kind: CallKind::Direct,
            call_type: CallType::Audio,
            caller_id: "alice".into(),
            callee_id: Some("bob".into()),
            room_id: None,
            room_name: None,
            status: CallStatus::Active,
            end_reason: None,
            created_at: 1_000,
            answered_at: Some(2_000),
            ended_at: None,
            participants: Vec::new(),
        }
    }

    #[test]
    fn the_body_starts_with_id_event_and_time() {
        let e = call_started(&call(), 2_000);
        let body: Value = serde_json::from_str(&e.body("ev-1", 2_001)).expect("json");
        assert_eq!(body["id"], "ev-1");
        assert_eq!(body["event"], "call.started");
        assert_eq!(body["createdAt"], 2_001);
        assert_eq!(body["callId"], "c1");
        assert_eq!(body["calleeId"], "bob");
        assert_eq!(e.key, "call:c1");
    }

    #[test]
    fn a_missed_call_is_call_missed_and_an_ended_one_has_its_duration() {
        let mut ringing = call();
        ringing.answered_at = None;
        let missed = call_finished(&ringing, CallStatus::Missed, Some("timeout"), 9_000);
        assert_eq!(missed.name, "call.missed");
        assert_eq!(missed.fields["duration"], Value::Null);
        let ended = call_finished(&call(), CallStatus::Ended, Some("hangup"), 65_000);
        assert_eq!(ended.name, "call.ended");
        assert_eq!(ended.fields["duration"], 63);
        assert_eq!(ended.fields["status"], "ended");
        assert_eq!(ended.fields["reason"], "hangup");
        for e in [missed, ended] {
            assert!(NAMES.contains(&e.name));
        }
    }
}
