//! The signaling shell: sessions and their outboxes, the [`Switchboard`] behind a mutex, and the
//! store. Every transport (`/rtc`, Socket.IO, REST) calls in here, so a Socket.IO client can call
//! a `/rtc` client and a REST hang-up reaches both. Status changes go to the database first
//! (through the pure transition rules); routing and deliveries follow.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::auth::{validate_user_id, Principal};
use crate::clock::now_ms;
use crate::error::Error;
use crate::signaling::call::{Action, CallStatus, CallType};
use crate::signaling::event::Event;
use crate::signaling::switchboard::{Output, SessionId, Switchboard};
use crate::signaling::wire::{check_candidate, check_sdp, ClientMessage};
use crate::store::calls::{self, CallKind, CallRecord, MediaChange, NewCall};
use crate::store::{analytics, rooms, Store};
use crate::views;

/// Events a session may have queued before it counts as stuck and is disconnected.
pub const OUTBOX_CAPACITY: usize = 1024;

/// What a handled client message answers: an `ack` (or `pong`) for the sender, and deliveries
/// to carry out after the answer went out (so the sender sees its ack first).
#[derive(Debug)]
pub struct Reply {
    pub kind: &'static str,
    pub body: Value,
    pub then: Vec<Output>,
}

fn ack(body: Value, then: Vec<Output>) -> Reply {
    Reply {
        kind: "ack",
        body,
        then,
    }
}

/// A call invitation (`call-initiate` / `webrtc:call`).
#[derive(Debug, Clone)]
pub struct Invite {
    pub to: String,
    pub call_type: Option<CallType>,
    /// The caller's offer, when it comes with the invitation.
    pub sdp: Option<Value>,
    pub room_name: Option<String>,
    /// An existing call (created over REST) to ring instead of creating one.
    pub existing: Option<String>,
}

/// A change made over REST that connected clients must hear about.
pub enum RestChange<'a> {
    Created,
    Accepted,
    /// The call reached a final status; `notice` is the seed event (`call-hangup`/`call-reject`).
    Ended {
        actor: &'a str,
        notice: &'static str,
    },
    Media {
        actor: &'a str,
    },
    RoomLeft {
        room_id: &'a str,
        peer_id: &'a str,
    },
}

/// The shared signaling state.
pub struct Signaling {
    board: Mutex<Switchboard>,
    outboxes: Mutex<HashMap<SessionId, mpsc::Sender<Arc<Event>>>>,
    store: Store,
    next_session: AtomicU64,
    ring_timeout: Duration,
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn call_id(raw: &str) -> Result<String, Error> {
    Uuid::parse_str(raw)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| Error::invalid("invalid_field", format!("callId: `{raw}` is not a UUID")))
}

fn participants(call: &CallRecord) -> Vec<String> {
    call.participants
        .iter()
        .map(|p| p.user_id.clone())
        .collect()
}

impl Signaling {
    pub fn new(store: Store, ring_timeout: Duration, grace: Duration) -> Arc<Signaling> {
        Arc::new(Signaling {
            board: Mutex::new(Switchboard::new(ring_timeout, grace)),
            outboxes: Mutex::new(HashMap::new()),
            store,
            next_session: AtomicU64::new(1),
            ring_timeout,
        })
    }

    fn board(&self) -> MutexGuard<'_, Switchboard> {
        // A panic while holding the lock cannot leave the switchboard half-updated in a way
        // worse than refusing all signaling, so recover the guard.
        self.board.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn outboxes(&self) -> MutexGuard<'_, HashMap<SessionId, mpsc::Sender<Arc<Event>>>> {
        self.outboxes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connected sessions (for metrics and tests).
    pub fn session_count(&self) -> usize {
        self.outboxes().len()
    }

    /// Registers a new connection of `user`; events for it arrive on the receiver.
    pub fn open_session(&self, user: &str) -> (SessionId, mpsc::Receiver<Arc<Event>>) {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(OUTBOX_CAPACITY);
        self.outboxes().insert(id, tx);
        self.board().connect(id, user);
        (id, rx)
    }

    /// The `welcome` event: who you are and your ringing or active calls.
    pub async fn welcome(&self, session: SessionId, me: &Principal) -> Result<Event, Error> {
        let user = me.id.clone();
        let live = self.store.run(move |c| calls::live_for(c, &user)).await?;
        let now = now_ms();
        Ok(Event::new(
            "welcome",
            json!({
                "userId": me.id,
                "sessionId": session.to_string(),
                "activeCalls": live.iter().map(|c| views::call_session(c, now)).collect::<Vec<_>>(),
            }),
        ))
    }

    /// The connection is gone: rooms are left now, calls after the grace period.
    pub async fn close_session(self: &Arc<Self>, session: SessionId) {
        self.outboxes().remove(&session);
        let outputs = self.board().disconnect(session, Instant::now());
        self.dispatch(outputs);
    }

    /// Carries out switchboard outputs: deliveries now, persistence in the background.
    pub fn dispatch(self: &Arc<Self>, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Deliver { to, event } => self.deliver(to, event),
                Output::Expire { call_id, action } => {
                    let this = self.clone();
                    tokio::spawn(async move { this.expire(call_id, action).await });
                }
                Output::RoomLeft { room_id, user } => {
                    let this = self.clone();
                    tokio::spawn(async move { this.persist_room_leave(room_id, user).await });
                }
            }
        }
    }

    fn deliver(&self, to: SessionId, event: Arc<Event>) {
        let mut outboxes = self.outboxes();
        let Some(tx) = outboxes.get(&to) else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(event) {
            // A client that reads nothing must not make the server buffer without bound:
            // closing its outbox ends its connection.
            tracing::warn!(session = to, "outbox full; disconnecting a stuck client");
            outboxes.remove(&to);
        }
    }

    async fn expire(self: Arc<Self>, call_id: String, action: Action) {
        let now = now_ms();
        let id = call_id.clone();
        let result = self
            .store
            .run(move |c| calls::apply_action(c, &id, None, action, now))
            .await;
        let outputs = match result {
            Ok((call, t)) => {
                let reason = t.reason.map(|r| r.as_str()).unwrap_or("hangup");
                tracing::info!(call = %call.id, %reason, "call ended by the server");
                self.board()
                    .ended(&call.id, &participants(&call), reason, None)
            }
            // Already answered or ended meanwhile: just forget the live state.
            Err(_) => self.board().ended(&call_id, &[], "", None),
        };
        self.dispatch(outputs);
    }

    async fn persist_room_leave(self: Arc<Self>, room_id: String, user: String) {
        let now = now_ms();
        let principal = Principal {
            id: user,
            name: None,
            admin: false,
        };
        if let Err(e) = self
            .store
            .run(move |c| rooms::leave(c, &room_id, &principal, now))
            .await
        {
            if !matches!(e, Error::Conflict { .. } | Error::NotFound(_)) {
                tracing::warn!(error = %e, "persisting a room leave failed");
            }
        }
    }

    /// Runs time-driven work every second until `stop`: ring deadlines, disconnect grace, and
    /// ringing calls in the database older than the ring timeout (e.g. created over REST).
    pub async fn run_timers(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let timeout_ms = i64::try_from(self.ring_timeout.as_millis()).unwrap_or(i64::MAX);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let outputs = self.board().tick(Instant::now());
            self.dispatch(outputs);
            let cutoff = now_ms() - timeout_ms;
            match self
                .store
                .run(move |c| calls::ringing_before(c, cutoff))
                .await
            {
                Ok(ids) => {
                    for id in ids {
                        self.clone().expire(id, Action::Timeout).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "ring timeout sweep failed"),
            }
        }
    }

    /// Makes sure a database call the user may signal is known to the switchboard.
    async fn live_call(&self, id: &str, me: &Principal) -> Result<CallRecord, Error> {
        let (id2, me2) = (id.to_string(), me.clone());
        let call = self
            .store
            .run(move |c| calls::get_visible(c, &id2, &me2))
            .await?;
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

    /// Routes a signaling message, without touching the database when the call is live.
    async fn route(
        &self,
        session: SessionId,
        me: &Principal,
        raw_id: &str,
        to: Option<&str>,
        kind: &'static str,
        body: Map<String, Value>,
    ) -> Result<Vec<Output>, Error> {
        let id = call_id(raw_id)?;
        {
            let mut board = self.board();
            if board.is_room_call(&id) {
                return board.forward_in_room(&id, session, to, kind, body);
            }
            if board.call(&id).is_some() {
                return board.forward(&id, session, &me.id, to, kind, body);
            }
        }
        let call = self.live_call(&id, me).await?;
        if call.kind == CallKind::Room {
            return self.board().forward_in_room(&id, session, to, kind, body);
        }
        self.board().forward(&id, session, &me.id, to, kind, body)
    }

    async fn accept(
        &self,
        session: Option<SessionId>,
        me: &Principal,
        id: &str,
    ) -> Result<(CallRecord, Vec<Output>), Error> {
        let (id2, me2, now) = (id.to_string(), me.clone(), now_ms());
        let (call, _) = self
            .store
            .run(move |c| calls::apply_action(c, &id2, Some(&me2), Action::Accept, now))
            .await?;
        let mut board = self.board();
        if let Some(callee) = &call.callee_id {
            board.adopt(&call.id, &call.caller_id, callee, false);
        }
        let out = board.accepted(&call.id, session);
        Ok((call, out))
    }

    async fn end(
        &self,
        me: &Principal,
        id: &str,
        action: Action,
        notice: Event,
    ) -> Result<Vec<Output>, Error> {
        let (id2, me2, now) = (id.to_string(), me.clone(), now_ms());
        let (call, t) = self
            .store
            .run(move |c| calls::apply_action(c, &id2, Some(&me2), action, now))
            .await?;
        let reason = t.reason.map(|r| r.as_str()).unwrap_or("hangup");
        Ok(self.board().ended(
            &call.id,
            &participants(&call),
            reason,
            Some((&me.id, notice)),
        ))
    }

    /// Starts (or rings an existing) 1:1 call from `me`. Shared by `/rtc` `call-initiate` and
    /// Socket.IO `webrtc:call`.
    pub async fn initiate(
        &self,
        session: SessionId,
        me: &Principal,
        invite: Invite,
    ) -> Result<Reply, Error> {
        let Invite {
            to,
            call_type,
            sdp,
            room_name,
            existing,
        } = invite;
        let to = to.as_str();
        validate_user_id(to).map_err(|m| Error::invalid("invalid_field", format!("to: {m}")))?;
        if to == me.id {
            return Err(Error::invalid(
                "invalid_field",
                "to: you cannot call yourself",
            ));
        }
        if let Some(sdp) = &sdp {
            check_sdp(sdp, "sdp")?;
        }
        let room_name = crate::signaling::call::room_name(room_name, "roomName")?;
        if let Some(glare) = self.board().ringing_from(to, &me.id) {
            return Err(Error::conflict(
                "call_glare",
                format!(
                    "{to} is already calling you (call {}): accept that call instead",
                    glare.id
                ),
            ));
        }
        let now = now_ms();
        let call = match existing.as_deref() {
            Some(raw) => {
                let (id, me2, to2) = (call_id(raw)?, me.clone(), to.to_string());
                self.store
                    .run(move |c| calls::prepare_to_ring(c, &id, &me2, &to2))
                    .await?
            }
            None => {
                let new = NewCall {
                    id: Uuid::new_v4().to_string(),
                    call_type: call_type.unwrap_or(CallType::Video),
                    caller_id: me.id.clone(),
                    callee_id: Some(to.to_string()),
                    room_name,
                    now,
                };
                self.store
                    .run(move |c| calls::create_direct(c, &new))
                    .await?
            }
        };
        let reply = json!({ "callId": call.id, "roomId": call.room_id });
        let reachable = self.board().reachable(to);
        if !reachable {
            // Nobody to ring: the call is recorded as missed, and the caller told at once.
            let id = call.id.clone();
            let (ended, _) = self
                .store
                .run(move |c| calls::apply_action(c, &id, None, Action::Unavailable, now))
                .await?;
            let then = self
                .board()
                .ended(&ended.id, &participants(&ended), "unavailable", None);
            return Ok(ack(reply, then));
        }
        let invite = Event::new(
            "call-initiate",
            json!({
                "callId": call.id,
                "from": me.id,
                "fromName": me.name,
                "callType": call.call_type.as_str(),
                "sdp": sdp,
                "roomName": call.room_name,
            }),
        );
        let then = self
            .board()
            .ring(&call.id, &me.id, to, Some(session), invite, Instant::now());
        Ok(ack(reply, then))
    }

    /// Handles one `/rtc` client message from `me` on `session`.
    pub async fn handle(
        &self,
        session: SessionId,
        me: &Principal,
        msg: ClientMessage,
    ) -> Result<Reply, Error> {
        match msg {
            ClientMessage::Ping {} => Ok(Reply {
                kind: "pong",
                body: json!({}),
                then: Vec::new(),
            }),
            ClientMessage::CallInitiate {
                to,
                call_type,
                sdp,
                room_name,
                call_id: existing,
            } => {
                let invite = Invite {
                    to,
                    call_type,
                    sdp,
                    room_name,
                    existing,
                };
                self.initiate(session, me, invite).await
            }
            ClientMessage::CallAccept { call_id: raw } => {
                let id = call_id(&raw)?;
                let (call, then) = self.accept(Some(session), me, &id).await?;
                Ok(ack(json!({ "callId": call.id }), then))
            }
            ClientMessage::CallReject {
                call_id: raw,
                reason,
            } => {
                let id = call_id(&raw)?;
                let reason = reason.map(|r| r.chars().take(200).collect::<String>());
                let notice = Event::new(
                    "call-reject",
                    json!({ "callId": id, "from": me.id, "reason": reason }),
                );
                let then = self.end(me, &id, Action::Reject, notice).await?;
                Ok(ack(json!({ "callId": id }), then))
            }
            ClientMessage::CallAnswer { call_id: raw, sdp } => {
                check_sdp(&sdp, "sdp")?;
                self.answer(session, me, &raw, sdp, None, "call-answer")
                    .await
            }
            ClientMessage::IceCandidate {
                call_id: raw,
                candidate,
                to,
            } => {
                check_candidate(&candidate)?;
                let then = self
                    .route(
                        session,
                        me,
                        &raw,
                        to.as_deref(),
                        "ice-candidate",
                        object(json!({ "candidate": candidate })),
                    )
                    .await?;
                Ok(ack(json!({}), then))
            }
            ClientMessage::CallSdpUpdate {
                call_id: raw,
                sdp,
                to,
            } => {
                check_sdp(&sdp, "sdp")?;
                let then = self
                    .route(
                        session,
                        me,
                        &raw,
                        to.as_deref(),
                        "call-sdp-update",
                        object(json!({ "sdp": sdp })),
                    )
                    .await?;
                Ok(ack(json!({}), then))
            }
            ClientMessage::CallHangup { call_id: raw } => self.hangup(me, &raw).await,
            ClientMessage::MediaState {
                call_id: raw,
                audio,
                video,
                screen,
                camera,
            } => {
                let change = MediaChange {
                    audio,
                    video,
                    screen,
                    camera,
                };
                if change.is_empty() {
                    return Err(Error::invalid(
                        "invalid_field",
                        "media-state needs at least one of audio, video, screen, camera",
                    ));
                }
                if change
                    .camera
                    .as_ref()
                    .is_some_and(|c| c.chars().count() > 200)
                {
                    return Err(Error::invalid(
                        "invalid_field",
                        "camera: at most 200 characters",
                    ));
                }
                let id = call_id(&raw)?;
                let then = self.media(me, &id, change).await?;
                Ok(ack(json!({ "callId": id }), then))
            }
            ClientMessage::CallStats {
                call_id: raw,
                stats,
            } => {
                if !stats.is_object() {
                    return Err(Error::invalid("invalid_field", "stats: must be an object"));
                }
                let (id, me2, now) = (call_id(&raw)?, me.clone(), now_ms());
                self.store
                    .run(move |c| {
                        let call = calls::get_visible(c, &id, &me2)?;
                        if call.role_of(&me2.id).is_none() {
                            return Err(Error::NotFound("call"));
                        }
                        analytics::add_report(c, &id, &me2.id, now, &stats)
                    })
                    .await?;
                Ok(ack(json!({}), Vec::new()))
            }
            ClientMessage::RoomJoin { room_id } => self.room_join(session, me, &room_id).await,
            ClientMessage::RoomLeave { room_id } => {
                let (room_id, me2, now) = (
                    crate::http::extract::parse_id(&room_id, "roomId")?,
                    me.clone(),
                    now_ms(),
                );
                let left = self
                    .store
                    .run(move |c| rooms::leave(c, &room_id, &me2, now))
                    .await?;
                let then = self.board().room_leave(&left.room.id, &left.peer_id);
                Ok(ack(json!({ "roomId": left.room.id }), then))
            }
        }
    }

    /// An SDP answer: accepts a ringing call first (the callee answering is accepting), then
    /// goes to the caller as `call-answer`; on an active call it is a renegotiation
    /// (`call-sdp-update`). `to` is checked against the other side.
    pub async fn answer(
        &self,
        session: SessionId,
        me: &Principal,
        raw: &str,
        sdp: Value,
        to: Option<&str>,
        renegotiation_kind: &'static str,
    ) -> Result<Reply, Error> {
        let id = call_id(raw)?;
        let call = self.live_call(&id, me).await?;
        let mut then = Vec::new();
        let kind = if call.status == CallStatus::Ringing
            && call.callee_id.as_deref() == Some(me.id.as_str())
        {
            let (_, out) = self.accept(Some(session), me, &id).await?;
            then.extend(out);
            "call-answer"
        } else if call.status == CallStatus::Ringing {
            return Err(Error::conflict(
                "not_ringing_you",
                "only the callee answers a ringing call",
            ));
        } else {
            renegotiation_kind
        };
        then.extend(
            self.route(session, me, &id, to, kind, object(json!({ "sdp": sdp })))
                .await?,
        );
        Ok(ack(json!({ "callId": id }), then))
    }

    /// The live 1:1 call between two users, if any (seed 000 events may omit `callId`).
    pub fn live_call_with(&self, me: &str, other: &str) -> Option<String> {
        self.board().call_between(me, other).map(|c| c.id.clone())
    }

    /// An SDP offer on an existing call (seed 000 `webrtc:offer`): a callee offering while the
    /// call rings is accepting it; the other side gets `call-sdp-update`.
    pub async fn offer(
        &self,
        session: SessionId,
        me: &Principal,
        raw: &str,
        sdp: Value,
        to: Option<&str>,
    ) -> Result<Reply, Error> {
        let id = call_id(raw)?;
        let call = self.live_call(&id, me).await?;
        let mut then = Vec::new();
        if call.status == CallStatus::Ringing && call.callee_id.as_deref() == Some(me.id.as_str()) {
            let (_, out) = self.accept(Some(session), me, &id).await?;
            then.extend(out);
        }
        then.extend(
            self.route(
                session,
                me,
                &id,
                to,
                "call-sdp-update",
                object(json!({ "sdp": sdp })),
            )
            .await?,
        );
        Ok(ack(json!({ "callId": id }), then))
    }

    /// An ICE candidate on an existing call (seed 000 `webrtc:ice-candidate`).
    pub async fn candidate(
        &self,
        session: SessionId,
        me: &Principal,
        raw: &str,
        candidate: Value,
        to: Option<&str>,
    ) -> Result<Reply, Error> {
        let then = self
            .route(
                session,
                me,
                raw,
                to,
                "ice-candidate",
                object(json!({ "candidate": candidate })),
            )
            .await?;
        Ok(ack(json!({ "callId": call_id(raw)? }), then))
    }

    /// Hangs up: leaves the room for a room call, else ends the call (cancel/reject/end).
    pub async fn hangup(&self, me: &Principal, raw: &str) -> Result<Reply, Error> {
        let id = call_id(raw)?;
        let call = self.live_call(&id, me).await?;
        if call.kind == CallKind::Room {
            let room_id = call.room_id.clone().ok_or(Error::NotFound("room"))?;
            let (me2, now) = (me.clone(), now_ms());
            let left = self
                .store
                .run(move |c| rooms::leave(c, &room_id, &me2, now))
                .await?;
            let then = self.board().room_leave(&left.room.id, &left.peer_id);
            return Ok(ack(json!({ "callId": id }), then));
        }
        let notice = Event::new("call-hangup", json!({ "callId": id, "from": me.id }));
        let then = self.end(me, &id, Action::Hangup, notice).await?;
        Ok(ack(json!({ "callId": id }), then))
    }

    async fn media(
        &self,
        me: &Principal,
        id: &str,
        change: MediaChange,
    ) -> Result<Vec<Output>, Error> {
        let (id2, me2, ch, now) = (id.to_string(), me.clone(), change.clone(), now_ms());
        let call = self
            .store
            .run(move |c| calls::set_media(c, &id2, &me2, &ch, "media", now))
            .await?;
        Ok(self.media_outputs(&call, &me.id))
    }

    fn media_outputs(&self, call: &CallRecord, actor: &str) -> Vec<Output> {
        let Some(p) = call.participants.iter().find(|p| p.user_id == actor) else {
            return Vec::new();
        };
        let event = Event::new(
            "media-state",
            json!({ "callId": call.id, "from": actor, "audio": p.audio, "video": p.video, "screen": p.screen, "camera": p.camera }),
        );
        let board = self.board();
        call.participants
            .iter()
            .filter(|other| other.user_id != actor && other.left_at.is_none())
            .flat_map(|other| board.notify(&other.user_id, event.clone()))
            .collect()
    }

    async fn room_join(
        &self,
        session: SessionId,
        me: &Principal,
        raw: &str,
    ) -> Result<Reply, Error> {
        let room_id = crate::http::extract::parse_id(raw, "roomId")?;
        let (me2, now) = (me.clone(), now_ms());
        let (peer, call) = (Uuid::new_v4().to_string(), Uuid::new_v4().to_string());
        let joined = self
            .store
            .run(move |c| rooms::join(c, &room_id, &me2, &peer, &call, now))
            .await?;
        let (peers, then) =
            self.board()
                .room_join(&joined.room.id, &joined.call_id, &joined.peer_id, session);
        let body = json!({
            "room": views::room(&joined.room),
            "peerId": joined.peer_id,
            "callId": joined.call_id,
            "peers": peers.iter().map(|(p, u)| json!({ "peerId": p, "userId": u })).collect::<Vec<_>>(),
        });
        Ok(ack(body, then))
    }

    /// Tells connected clients about a change made over REST.
    pub fn rest_changed(self: &Arc<Self>, call: &CallRecord, change: RestChange<'_>) {
        let outputs = match change {
            RestChange::Created => match &call.callee_id {
                Some(callee) if call.status == CallStatus::Ringing => {
                    let invite = Event::new(
                        "call-initiate",
                        json!({ "callId": call.id, "from": call.caller_id, "callType": call.call_type.as_str(), "sdp": null, "roomName": call.room_name }),
                    );
                    self.board().ring(
                        &call.id,
                        &call.caller_id,
                        callee,
                        None,
                        invite,
                        Instant::now(),
                    )
                }
                _ => Vec::new(),
            },
            RestChange::Accepted => {
                let mut board = self.board();
                if let Some(callee) = &call.callee_id {
                    board.adopt(&call.id, &call.caller_id, callee, false);
                }
                board.accepted(&call.id, None)
            }
            RestChange::Ended { actor, notice } => {
                let reason = call.end_reason.map(|r| r.as_str()).unwrap_or("hangup");
                let event = Event::new(
                    notice,
                    json!({ "callId": call.id, "from": actor, "reason": reason }),
                );
                self.board()
                    .ended(&call.id, &participants(call), reason, Some((actor, event)))
            }
            RestChange::Media { actor } => self.media_outputs(call, actor),
            RestChange::RoomLeft { room_id, peer_id } => self.board().room_leave(room_id, peer_id),
        };
        self.dispatch(outputs);
    }
}
