//! The call model: statuses, end reasons, roles and the one transition function every transport
//! (REST, `/rtc`, Socket.IO) goes through. Pure: no IO, no clock.
//!
//! `ringing → active → ended`, or `ringing → rejected | missed | cancelled`. A refused transition
//! is an [`Error::Conflict`] (or `Forbidden` for the wrong participant) and changes nothing.

use serde::{Deserialize, Serialize};

use crate::error::Error;

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $(#[serde(rename = $s)] $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),+ }
            }

            /// Parses the wire/database spelling.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// Where a call is in its life.
    CallStatus {
        Ringing = "ringing",
        Active = "active",
        Ended = "ended",
        Rejected = "rejected",
        Missed = "missed",
        Cancelled = "cancelled",
    }
);

string_enum!(
    /// Audio-only or video.
    CallType { Audio = "audio", Video = "video" }
);

string_enum!(
    /// Why a call stopped.
    EndReason {
        Hangup = "hangup",
        Rejected = "rejected",
        Timeout = "timeout",
        Disconnect = "disconnect",
        Cancelled = "cancelled",
        Unavailable = "unavailable",
        Admin = "admin",
        RoomClosed = "room-closed",
    }
);

string_enum!(
    /// A participant's part in a call.
    Role { Caller = "caller", Callee = "callee", Member = "member" }
);

impl CallStatus {
    /// True once the call can no longer change.
    pub fn is_final(self) -> bool {
        !matches!(self, CallStatus::Ringing | CallStatus::Active)
    }

    /// Seed 000's view: `ringing → pending`, `active → active`, every end state `→ ended`.
    pub fn seed000(self) -> &'static str {
        match self {
            CallStatus::Ringing => "pending",
            CallStatus::Active => "active",
            _ => "ended",
        }
    }
}

/// Who is acting on a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    Participant(Role),
    /// An admin who is not a participant (moderation).
    Admin,
    /// The server itself (ring timeout, disconnect grace expiry).
    System,
}

/// What someone asks of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Accept,
    Reject,
    Hangup,
    /// The ring timeout passed.
    Timeout,
    /// A participant's connection was gone for longer than the grace period.
    Disconnect,
    /// Nobody could be reached to ring.
    Unavailable,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Accept => "accept",
            Action::Reject => "reject",
            Action::Hangup => "hang up",
            Action::Timeout => "time out",
            Action::Disconnect => "disconnect",
            Action::Unavailable => "mark unavailable",
        }
    }
}

/// The outcome of an allowed transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub to: CallStatus,
    /// Set when the call reaches a final status.
    pub reason: Option<EndReason>,
}

fn to(status: CallStatus, reason: Option<EndReason>) -> Result<Transition, Error> {
    Ok(Transition { to: status, reason })
}

/// Decides whether `actor` may apply `action` to a call in `status`, and what follows.
pub fn transition(status: CallStatus, actor: Actor, action: Action) -> Result<Transition, Error> {
    use Action as A;
    use CallStatus as S;
    use Role as R;
    if status.is_final() {
        return Err(Error::conflict(
            "call_ended",
            format!("cannot {} a call that is already {status}", action.verb()),
        ));
    }
    match (status, actor, action) {
        (S::Ringing, Actor::Participant(R::Callee), A::Accept) => to(S::Active, None),
        (S::Active, _, A::Accept) => Err(Error::conflict(
            "already_active",
            "the call was already accepted",
        )),
        (_, _, A::Accept) => Err(Error::forbidden("only the callee can accept a call")),

        (S::Ringing, Actor::Participant(R::Callee), A::Reject) => {
            to(S::Rejected, Some(EndReason::Rejected))
        }
        (S::Active, _, A::Reject) => Err(Error::conflict(
            "already_active",
            "an active call cannot be rejected; hang up instead",
        )),
        (_, _, A::Reject) => Err(Error::forbidden(
            "only the callee can reject a call; the caller hangs up to cancel",
        )),

        (S::Ringing, Actor::Participant(R::Caller), A::Hangup) => {
            to(S::Cancelled, Some(EndReason::Cancelled))
        }
        (S::Ringing, Actor::Participant(R::Callee), A::Hangup) => {
            to(S::Rejected, Some(EndReason::Rejected))
        }
        (S::Ringing, Actor::Admin, A::Hangup) => to(S::Cancelled, Some(EndReason::Admin)),
        (S::Active, Actor::Admin, A::Hangup) => to(S::Ended, Some(EndReason::Admin)),
        (S::Active, Actor::Participant(_), A::Hangup) => to(S::Ended, Some(EndReason::Hangup)),
        (S::Ringing, Actor::Participant(R::Member), A::Hangup) => {
            to(S::Cancelled, Some(EndReason::Cancelled))
        }

        (S::Ringing, Actor::System, A::Timeout) => to(S::Missed, Some(EndReason::Timeout)),
        (S::Ringing, Actor::System, A::Unavailable) => to(S::Missed, Some(EndReason::Unavailable)),
        (S::Ringing, Actor::System, A::Disconnect) => to(S::Cancelled, Some(EndReason::Disconnect)),
        (S::Active, Actor::System, A::Disconnect) => to(S::Ended, Some(EndReason::Disconnect)),
        (S::Active, Actor::System, A::Timeout | A::Unavailable) => {
            Err(Error::conflict("already_active", "the call was answered"))
        }
        (_, _, A::Timeout | A::Unavailable | A::Disconnect) => {
            Err(Error::forbidden("only the server ends calls this way"))
        }
        (_, Actor::System, A::Hangup) => to(
            if status == S::Active {
                S::Ended
            } else {
                S::Cancelled
            },
            Some(EndReason::Hangup),
        ),
        // Final statuses returned above; kept for exhaustiveness.
        (_, _, A::Hangup) => Err(Error::conflict("call_ended", "the call is over")),
    }
}

/// An optional room name: at most 100 characters; blank means none.
pub fn room_name(name: Option<String>, field: &str) -> Result<Option<String>, Error> {
    match name {
        Some(n) if n.chars().count() > 100 => Err(Error::invalid(
            "invalid_field",
            format!("{field}: at most 100 characters"),
        )),
        Some(n) if n.trim().is_empty() => Ok(None),
        other => Ok(other),
    }
}

/// A requested change of media state; `None` fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaChange {
    pub audio: Option<bool>,
    pub video: Option<bool>,
    pub screen: Option<bool>,
    pub camera: Option<String>,
}

impl MediaChange {
    pub fn is_empty(&self) -> bool {
        self.audio.is_none()
            && self.video.is_none()
            && self.screen.is_none()
            && self.camera.is_none()
    }

    /// The change as a JSON object of the fields it sets (for the call's event log).
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        if let Some(v) = self.audio {
            m.insert("audio".into(), v.into());
        }
        if let Some(v) = self.video {
            m.insert("video".into(), v.into());
        }
        if let Some(v) = self.screen {
            m.insert("screen".into(), v.into());
        }
        if let Some(v) = &self.camera {
            m.insert("camera".into(), v.clone().into());
        }
        serde_json::Value::Object(m)
    }
}

/// Media changes (mute, camera switch) are allowed while the call is ringing or active.
pub fn check_media_change(status: CallStatus) -> Result<(), Error> {
    if status.is_final() {
        Err(Error::conflict(
            "call_ended",
            format!("the call is already {status}"),
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action as A;
    use CallStatus as S;

    const CALLER: Actor = Actor::Participant(Role::Caller);
    const CALLEE: Actor = Actor::Participant(Role::Callee);

    fn ok(s: S, a: Actor, act: A) -> (S, Option<EndReason>) {
        let t = transition(s, a, act).expect("allowed");
        (t.to, t.reason)
    }

    #[test]
    fn ring_accept_hangup() {
        assert_eq!(ok(S::Ringing, CALLEE, A::Accept), (S::Active, None));
        assert_eq!(
            ok(S::Active, CALLER, A::Hangup),
            (S::Ended, Some(EndReason::Hangup))
        );
        assert_eq!(
            ok(S::Active, CALLEE, A::Hangup),
            (S::Ended, Some(EndReason::Hangup))
        );
    }

    #[test]
    fn reject_cancel_timeout_unavailable() {
        assert_eq!(
            ok(S::Ringing, CALLEE, A::Reject),
            (S::Rejected, Some(EndReason::Rejected))
        );
        assert_eq!(
            ok(S::Ringing, CALLEE, A::Hangup),
            (S::Rejected, Some(EndReason::Rejected))
        );
        assert_eq!(
            ok(S::Ringing, CALLER, A::Hangup),
            (S::Cancelled, Some(EndReason::Cancelled))
        );
        assert_eq!(
            ok(S::Ringing, Actor::System, A::Timeout),
            (S::Missed, Some(EndReason::Timeout))
        );
        assert_eq!(
            ok(S::Ringing, Actor::System, A::Unavailable),
            (S::Missed, Some(EndReason::Unavailable))
        );
    }

    #[test]
    fn disconnect_ends_with_reason_disconnect() {
        assert_eq!(
            ok(S::Active, Actor::System, A::Disconnect),
            (S::Ended, Some(EndReason::Disconnect))
        );
        assert_eq!(
            ok(S::Ringing, Actor::System, A::Disconnect),
            (S::Cancelled, Some(EndReason::Disconnect))
        );
    }

    #[test]
    fn admin_can_end_any_live_call() {
        assert_eq!(
            ok(S::Active, Actor::Admin, A::Hangup),
            (S::Ended, Some(EndReason::Admin))
        );
        assert!(transition(S::Ringing, Actor::Admin, A::Accept).is_err());
    }

    #[test]
    fn wrong_participant_is_forbidden() {
        assert_eq!(
            transition(S::Ringing, CALLER, A::Accept).map_err(|e| e.code()),
            Err("forbidden")
        );
        assert_eq!(
            transition(S::Ringing, CALLER, A::Reject).map_err(|e| e.code()),
            Err("forbidden")
        );
        assert_eq!(
            transition(S::Ringing, CALLEE, A::Timeout).map_err(|e| e.code()),
            Err("forbidden")
        );
    }

    #[test]
    fn every_final_status_refuses_everything() {
        for &s in S::ALL.iter().filter(|s| s.is_final()) {
            for act in [
                A::Accept,
                A::Reject,
                A::Hangup,
                A::Timeout,
                A::Disconnect,
                A::Unavailable,
            ] {
                for actor in [CALLER, CALLEE, Actor::Admin, Actor::System] {
                    let err = transition(s, actor, act).expect_err("final");
                    assert_eq!(err.code(), "call_ended", "{s} {act:?}");
                }
            }
            assert!(check_media_change(s).is_err());
        }
    }

    #[test]
    fn active_calls_cannot_be_accepted_rejected_or_time_out() {
        for act in [A::Accept, A::Reject] {
            assert_eq!(
                transition(S::Active, CALLEE, act).map_err(|e| e.code()),
                Err("already_active")
            );
        }
        assert_eq!(
            transition(S::Active, Actor::System, A::Timeout).map_err(|e| e.code()),
            Err("already_active")
        );
        assert!(check_media_change(S::Active).is_ok());
    }

    #[test]
    fn seed000_view_maps_statuses() {
        assert_eq!(S::Ringing.seed000(), "pending");
        assert_eq!(S::Active.seed000(), "active");
        for s in [S::Ended, S::Rejected, S::Missed, S::Cancelled] {
            assert_eq!(s.seed000(), "ended");
        }
    }

    #[test]
    fn spellings_round_trip() {
        for &s in S::ALL {
            assert_eq!(S::parse(s.as_str()), Some(s));
        }
        assert_eq!(CallType::parse("video"), Some(CallType::Video));
        assert_eq!(CallType::parse("fax"), None);
    }
}
