//! Call operations of the application layer, one per thing a user can do to a 1:1 call, shared
//! by REST, `/rtc` and Socket.IO: create or ring, accept, reject, hang up, join as seed 000's
//! guest, media state, quality reports, and the signaling messages (answer, offer, candidate,
//! renegotiation) routed to the other side. Each persists first (through the pure transition
//! rules in [`crate::signaling::call`]) and then decides its deliveries.

use std::sync::Arc;

use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::app::sfu::SFU_PEER;
use crate::app::{participants, Done, Origin, Signaling};
use crate::auth::Principal;
use crate::clock::now_ms;
use crate::error::Error;
use crate::signaling::call::{Action, CallStatus, CallType, MediaChange};
use crate::signaling::event::Event;
use crate::signaling::switchboard::{Output, SessionId};
use crate::signaling::wire::{object, CallRef, Invite};
use crate::store::calls::{CallKind, CallRecord, NewCall};

/// A call created over REST (`POST /calls`, `POST /api/video/calls`).
#[derive(Debug, Clone)]
pub struct CreateCall {
    pub caller_id: String,
    /// `None` for seed 000's host-only call that a guest joins later.
    pub callee_id: Option<String>,
    pub call_type: CallType,
    pub room_name: Option<String>,
}

impl Signaling {
    /// The call `raw` names, if `me` may signal it: a participant, and not over yet. Makes sure
    /// the switchboard knows it (calls created over REST or before a restart).
    async fn live_call(&self, id: &str, me: &Principal) -> Result<CallRecord, Error> {
        let call = self.store.visible_call(id, me).await?;
        if call.role_of(&me.id).is_none() {
            return Err(Error::NotFound("call"));
        }
        if call.status.is_final() {
            return Err(Error::conflict(
                "call_ended",
                format!("the call is already {}", call.status),
            ));
        }
        if let (CallKind::Direct, Some(callee)) = (call.kind, &call.callee_id) {
            self.board().adopt(
                &call.id,
                &call.caller_id,
                callee,
                call.status == CallStatus::Active,
            );
        }
        Ok(call)
    }

    /// Resolves a [`CallRef`] to a call id.
    pub fn resolve(&self, me: &Principal, call: &CallRef) -> Result<String, Error> {
        match call {
            CallRef::Id(id) => Ok(id.clone()),
            CallRef::With(other) => self
                .board()
                .call_between(&me.id, other)
                .map(|c| c.id.clone())
                .ok_or_else(|| {
                    Error::conflict(
                        "no_call",
                        format!("no call with `{other}`: send webrtc:call first"),
                    )
                }),
        }
    }

    /// Starts ringing `call` at its callee's sessions.
    fn ring(
        &self,
        call: &CallRecord,
        caller: &Principal,
        sdp: Option<Value>,
        from: Option<SessionId>,
    ) -> Vec<Output> {
        let Some(callee) = &call.callee_id else {
            return Vec::new();
        };
        let invite = Event::new(
            "call-initiate",
            json!({
                "callId": call.id,
                "from": call.caller_id,
                "fromName": caller.name,
                "callType": call.call_type.as_str(),
                "sdp": sdp,
                "roomName": call.room_name,
            }),
        );
        self.board().ring(
            &call.id,
            &call.caller_id,
            callee,
            from,
            invite,
            crate::clock::monotonic(),
        )
    }

    /// Creates a call over REST; a direct call starts ringing at once.
    pub async fn create_call(
        self: &Arc<Self>,
        me: &Principal,
        new: CreateCall,
    ) -> Result<Done<CallRecord>, Error> {
        if new.caller_id != me.id && !me.admin {
            return Err(Error::forbidden("callerId must be your own user id"));
        }
        let record = NewCall {
            id: Uuid::new_v4().to_string(),
            call_type: new.call_type,
            caller_id: new.caller_id.clone(),
            callee_id: new.callee_id,
            room_name: new.room_name,
            now: now_ms(),
        };
        let call = self.store.create_call(record).await?;
        let caller = Principal {
            id: new.caller_id,
            name: if call.caller_id == me.id {
                me.name.clone()
            } else {
                None
            },
            admin: false,
        };
        let out = if call.status == CallStatus::Ringing {
            self.ring(&call, &caller, None, None)
        } else {
            Vec::new()
        };
        Ok(self.done(call, out))
    }

    /// Starts (or rings an existing) 1:1 call from `me` on a socket: `call-initiate` /
    /// `webrtc:call`. A callee with no connection makes the call missed at once.
    pub async fn invite(
        self: &Arc<Self>,
        session: SessionId,
        me: &Principal,
        invite: Invite,
    ) -> Result<Done<CallRecord>, Error> {
        let Invite {
            to,
            call_type,
            sdp,
            room_name,
            existing,
        } = invite;
        if to == me.id {
            return Err(Error::invalid(
                "invalid_field",
                "to: you cannot call yourself",
            ));
        }
        if let Some(glare) = self.board().ringing_from(&to, &me.id) {
            return Err(Error::conflict(
                "call_glare",
                format!(
                    "{to} is already calling you (call {}): accept that call instead",
                    glare.id
                ),
            ));
        }
        let now = now_ms();
        let call = match existing {
            Some(id) => self.store.prepare_call_to_ring(&id, me, &to).await?,
            None => {
                let new = NewCall {
                    id: Uuid::new_v4().to_string(),
                    call_type: call_type.unwrap_or(CallType::Video),
                    caller_id: me.id.clone(),
                    callee_id: Some(to.clone()),
                    room_name,
                    now,
                };
                self.store.create_call(new).await?
            }
        };
        if !self.reachable_anywhere(&to).await {
            // Nobody to ring: the call is recorded as missed, and the caller told at once.
            let (ended, _) = self
                .store
                .apply_call_action(&call.id, None, Action::Unavailable, now)
                .await?;
            let out = self
                .board()
                .ended(&ended.id, &participants(&ended), "unavailable", None);
            return Ok(self.done(ended, out));
        }
        let out = self.ring(&call, me, sdp, Some(session));
        Ok(self.done(call, out))
    }

    /// Accepts a ringing call (callee): the caller is told, the callee's other devices stop
    /// ringing with `call-accepted-elsewhere`.
    pub async fn accept(
        self: &Arc<Self>,
        origin: Origin,
        me: &Principal,
        id: &str,
    ) -> Result<Done<CallRecord>, Error> {
        let (call, _) = self
            .store
            .apply_call_action(id, Some(me), Action::Accept, now_ms())
            .await?;
        let out = self.accepted(&call, origin.session());
        Ok(self.done(call, out))
    }

    fn accepted(&self, call: &CallRecord, session: Option<SessionId>) -> Vec<Output> {
        let mut board = self.board();
        if let Some(callee) = &call.callee_id {
            board.adopt(&call.id, &call.caller_id, callee, false);
        }
        board.accepted(&call.id, session)
    }

    /// Seed 000's guest join: the first other user to join a host's call accepts it.
    pub async fn join_as_guest(
        self: &Arc<Self>,
        me: &Principal,
        id: &str,
    ) -> Result<Done<CallRecord>, Error> {
        // One transaction decides and reports whether this join accepted the call.
        let (call, accepted) = self.store.join_call_as_guest(id, me, now_ms()).await?;
        let out = if accepted {
            self.accepted(&call, None)
        } else {
            Vec::new()
        };
        Ok(self.done(call, out))
    }

    /// Rejects a ringing call (callee); `reason` is the callee's own words, if any.
    pub async fn reject(
        self: &Arc<Self>,
        me: &Principal,
        id: &str,
        reason: Option<String>,
    ) -> Result<Done<CallRecord>, Error> {
        self.end(me, id, Action::Reject, "call-reject", reason)
            .await
    }

    /// Hangs up: leaves the room for a room call (the room call ends with its last peer; an admin
    /// outside the room ends it for everyone), else cancels (caller, ringing), rejects (callee,
    /// ringing) or ends the call (an admin: for both sides).
    pub async fn hangup(
        self: &Arc<Self>,
        me: &Principal,
        id: &str,
    ) -> Result<Done<CallRecord>, Error> {
        let call = self.store.visible_call(id, me).await?;
        if call.kind == CallKind::Room && call.role_of(&me.id).is_some() {
            let room_id = call.room_id.clone().ok_or(Error::NotFound("room"))?;
            let left = self.leave_room(me, &room_id).await?;
            let call = self.store.call(id).await?;
            return Ok(Done {
                value: call,
                then: left.then,
            });
        }
        if call.kind == CallKind::Room && me.admin && !call.status.is_final() {
            // An admin outside the room ends its call for everyone; the room stays.
            let room_id = call.room_id.clone().ok_or(Error::NotFound("room"))?;
            return self.end_room_call(me, &room_id, id).await;
        }
        self.end(me, id, Action::Hangup, "call-hangup", None).await
    }

    /// Applies an ending action; `notice` goes to the other side, `call-ended` to everyone.
    async fn end(
        self: &Arc<Self>,
        me: &Principal,
        id: &str,
        action: Action,
        notice: &'static str,
        words: Option<String>,
    ) -> Result<Done<CallRecord>, Error> {
        let (call, t) = self
            .store
            .apply_call_action(id, Some(me), action, now_ms())
            .await?;
        let out = self.ended(&call, &me.id, notice, words, t.reason.map(|r| r.as_str()));
        Ok(self.done(call, out))
    }

    /// The deliveries of a call that reached a final status through `actor`.
    pub(crate) fn ended(
        &self,
        call: &CallRecord,
        actor: &str,
        notice: &'static str,
        words: Option<String>,
        reason: Option<&str>,
    ) -> Vec<Output> {
        let reason = reason
            .or(call.end_reason.map(|r| r.as_str()))
            .unwrap_or("hangup");
        let words = words.map(Value::String).unwrap_or_else(|| reason.into());
        let event = Event::new(
            notice,
            json!({ "callId": call.id, "from": actor, "reason": words }),
        );
        self.board()
            .ended(&call.id, &participants(call), reason, Some((actor, event)))
    }

    /// Changes `me`'s media state (mute, camera, screen); the other participants are told.
    pub async fn media(
        self: &Arc<Self>,
        me: &Principal,
        id: &str,
        change: MediaChange,
        kind: &'static str,
    ) -> Result<Done<CallRecord>, Error> {
        let call = self
            .store
            .set_call_media(id, me, change, kind, now_ms())
            .await?;
        let Some(p) = call.participants.iter().find(|p| p.user_id == me.id) else {
            return Ok(self.done(call, Vec::new()));
        };
        let event = Event::new(
            "media-state",
            json!({ "callId": call.id, "from": me.id, "audio": p.audio, "video": p.video, "screen": p.screen, "camera": p.camera }),
        );
        let out = {
            let board = self.board();
            call.participants
                .iter()
                .filter(|other| other.user_id != me.id && other.left_at.is_none())
                .flat_map(|other| board.notify(&other.user_id, event.clone()))
                .collect()
        };
        Ok(self.done(call, out))
    }

    /// Stores a participant's quality report (a client getStats summary).
    pub async fn report_stats(
        self: &Arc<Self>,
        me: &Principal,
        id: &str,
        stats: Value,
    ) -> Result<Done<()>, Error> {
        if !stats.is_object() {
            return Err(Error::invalid("invalid_field", "stats: must be an object"));
        }
        self.store
            .add_quality_report(id, me, now_ms(), stats)
            .await?;
        Ok(self.done((), Vec::new()))
    }

    /// Routes a signaling message to the other side (1:1) or the addressed peer (room), without
    /// touching the database while the call is live.
    async fn route(
        &self,
        session: SessionId,
        me: &Principal,
        id: &str,
        to: Option<&str>,
        kind: &'static str,
        body: Map<String, Value>,
    ) -> Result<Vec<Output>, Error> {
        {
            let mut board = self.board();
            if board.is_room_call(id) {
                return board.forward_in_room(id, session, to, kind, body);
            }
            if board.call(id).is_some() {
                return board.forward(id, session, &me.id, to, kind, body);
            }
        }
        let call = self.live_call(id, me).await?;
        if call.kind == CallKind::Room {
            return self.board().forward_in_room(id, session, to, kind, body);
        }
        self.board().forward(id, session, &me.id, to, kind, body)
    }

    /// An ICE candidate (or its end, `null`) for the other side.
    pub async fn candidate(
        self: &Arc<Self>,
        session: SessionId,
        me: &Principal,
        id: &str,
        candidate: Value,
        to: Option<&str>,
    ) -> Result<Done<()>, Error> {
        if to == Some(SFU_PEER) {
            return self.sfu_candidate(session, me, id, candidate).await;
        }
        let out = self
            .route(
                session,
                me,
                id,
                to,
                "ice-candidate",
                object(json!({ "candidate": candidate })),
            )
            .await?;
        Ok(self.done((), out))
    }

    /// A renegotiation (offer or answer: screen share, ICE restart) for the other side.
    pub async fn sdp_update(
        self: &Arc<Self>,
        session: SessionId,
        me: &Principal,
        id: &str,
        sdp: Value,
        to: Option<&str>,
    ) -> Result<Done<()>, Error> {
        if to == Some(SFU_PEER) {
            return self.sfu_sdp(session, me, id, sdp).await;
        }
        let out = self
            .route(
                session,
                me,
                id,
                to,
                "call-sdp-update",
                object(json!({ "sdp": sdp })),
            )
            .await?;
        Ok(self.done((), out))
    }

    /// An SDP answer: accepts a ringing call first (the callee answering is accepting), then
    /// goes to the caller as `call-answer`; on an active call it is forwarded as
    /// `on_active` (`call-answer` on `/rtc`, a renegotiation for seed 000).
    pub async fn answer(
        self: &Arc<Self>,
        session: SessionId,
        me: &Principal,
        id: &str,
        sdp: Value,
        to: Option<&str>,
        on_active: &'static str,
    ) -> Result<Done<()>, Error> {
        let call = self.live_call(id, me).await?;
        let mut done = self.done((), Vec::new());
        let kind = if call.status == CallStatus::Ringing
            && call.callee_id.as_deref() == Some(me.id.as_str())
        {
            let accepted = self.accept(Origin::Session(session), me, id).await?;
            done.then.absorb(accepted.then);
            "call-answer"
        } else if call.status == CallStatus::Ringing {
            return Err(Error::conflict(
                "not_ringing_you",
                "only the callee answers a ringing call",
            ));
        } else {
            on_active
        };
        done.then.extend(
            self.route(session, me, id, to, kind, object(json!({ "sdp": sdp })))
                .await?,
        );
        Ok(done)
    }

    /// Seed 000's `webrtc:offer`: a callee offering while the call rings is accepting it; the
    /// other side gets `call-sdp-update`.
    pub async fn offer(
        self: &Arc<Self>,
        session: SessionId,
        me: &Principal,
        id: &str,
        sdp: Value,
        to: Option<&str>,
    ) -> Result<Done<()>, Error> {
        let call = self.live_call(id, me).await?;
        let mut done = self.done((), Vec::new());
        if call.status == CallStatus::Ringing && call.callee_id.as_deref() == Some(me.id.as_str()) {
            let accepted = self.accept(Origin::Session(session), me, id).await?;
            done.then.absorb(accepted.then);
        }
        done.then.extend(
            self.route(
                session,
                me,
                id,
                to,
                "call-sdp-update",
                object(json!({ "sdp": sdp })),
            )
            .await?,
        );
        Ok(done)
    }
}
