//! What one node of a cluster tells the others about a 1:1 call, sans-IO: the [`Remote`]
//! messages the switchboard emits (as [`crate::signaling::switchboard::Output::Relay`]) after a
//! local change, and applies (through `Switchboard::apply_remote`) when another node reports one.
//! Each carries what a node that never saw the call needs to route it: the two users and, for
//! signaling, whether the call was accepted. The JSON shape is the bus format between nodes.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::signaling::event::Event;

/// An event as it crosses the bus: its name and body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireEvent {
    pub kind: String,
    pub body: Map<String, Value>,
}

impl WireEvent {
    pub fn of(event: &Event) -> WireEvent {
        WireEvent {
            kind: event.kind.to_string(),
            body: event.body.clone(),
        }
    }

    /// Back into an event. Its name must be one this server sends; anything else is refused
    /// (`None`) so a foreign message cannot make a node send arbitrary event names.
    pub fn into_event(self) -> Option<Event> {
        let kind = known_kind(&self.kind)?;
        Some(Event {
            kind,
            body: self.body,
        })
    }
}

/// The event names that cross nodes, as the static names events carry.
fn known_kind(kind: &str) -> Option<&'static str> {
    const KINDS: &[&str] = &[
        "call-initiate",
        "call-accept",
        "call-answer",
        "ice-candidate",
        "call-sdp-update",
        "media-state",
        "call-hangup",
        "call-reject",
        "call-ended",
        "call-accepted-elsewhere",
    ];
    KINDS.iter().copied().find(|k| *k == kind)
}

/// A change to a live call that another node may have sessions for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Remote {
    /// A call started ringing: the callee's sessions there get `invite`.
    Ring {
        call_id: String,
        caller: String,
        callee: String,
        invite: WireEvent,
    },
    /// The callee accepted on the sending node.
    Accepted {
        call_id: String,
        caller: String,
        callee: String,
    },
    /// `from` sent a signaling message on the sending node: its side of the call now speaks
    /// from there, and the other side's sessions get `event`.
    Forward {
        call_id: String,
        caller: String,
        callee: String,
        active: bool,
        from: String,
        event: WireEvent,
    },
    /// The call reached a final status; `notice` (with its actor) goes to the other side.
    Ended {
        call_id: String,
        participants: Vec<String>,
        reason: String,
        notice: Option<(String, WireEvent)>,
    },
    /// An event for every session of `user` (REST-originated changes, media state).
    Notify { user: String, event: WireEvent },
}

/// A message on the bus: which node sent it, and what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub node: String,
    #[serde(flatten)]
    pub remote: Remote,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_through_json() {
        let event = Event::new(
            "ice-candidate",
            json!({ "callId": "c1", "candidate": null }),
        );
        let env = Envelope {
            node: "a".into(),
            remote: Remote::Forward {
                call_id: "c1".into(),
                caller: "alice".into(),
                callee: "bob".into(),
                active: true,
                from: "alice".into(),
                event: WireEvent::of(&event),
            },
        };
        let text = serde_json::to_string(&env).expect("json");
        assert!(text.contains(r#""type":"forward""#), "{text}");
        let back: Envelope = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, env);
    }

    #[test]
    fn only_known_event_names_come_back() {
        let ok = WireEvent {
            kind: "call-ended".into(),
            body: Map::new(),
        };
        assert_eq!(ok.into_event().map(|e| e.kind), Some("call-ended"));
        let foreign = WireEvent {
            kind: "admin-shutdown".into(),
            body: Map::new(),
        };
        assert!(foreign.into_event().is_none());
    }
}
