//! The live side of calls, sans-IO: who is connected on which sessions, which session speaks
//! for each side of a live call, who is in which room under which peer id, ring deadlines and
//! disconnect grace. Inputs are method calls with `now` passed in; outputs are [`Output`]s
//! (deliver this event to that session; this call must end for this reason) that the shell
//! carries out. Call *status* lives in the database and changes only through
//! [`crate::signaling::call::transition`]; this type only routes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::error::Error;
use crate::signaling::call::Action;
use crate::signaling::event::Event;
use crate::signaling::remote::{Remote, WireEvent};
use crate::signaling::topology::{Decision, RoomMode, Topology, TopologyPolicy};

/// A connection (a `/rtc` WebSocket or a Socket.IO socket).
pub type SessionId = u64;

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send `event` to `to`.
    Deliver { to: SessionId, event: Arc<Event> },
    /// End the call for a server reason (timeout, disconnect); the shell persists the
    /// transition and then reports it with [`Switchboard::ended`].
    Expire { call_id: String, action: Action },
    /// A dropped connection's peer left a room; the shell persists the leave.
    RoomLeft { room_id: String, user: String },
    /// A peer is gone from its room: its SFU connection (if any) ends.
    SfuLeave { peer_id: String },
    /// Cluster mode: tell the other nodes holding sessions of `users` about this change.
    Relay { users: Vec<String>, remote: Remote },
}

/// A side of a call that speaks from another node (cluster mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSide {
    pub node: String,
    /// When that node was last seen missing from the registry: after the grace period the
    /// call ends as if the side's connection had dropped.
    lost_at: Option<Instant>,
}

#[derive(Debug)]
struct Session {
    user: String,
    /// Set when the connection dropped; the session lingers for the grace period.
    dropped_at: Option<Instant>,
    /// Rooms this session is in, as (room id, peer id).
    rooms: Vec<(String, String)>,
}

/// A 1:1 call being rung or in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveCall {
    pub id: String,
    pub caller: String,
    pub callee: String,
    pub active: bool,
    ring_deadline: Option<Instant>,
    caller_session: Option<SessionId>,
    callee_session: Option<SessionId>,
    caller_remote: Option<RemoteSide>,
    callee_remote: Option<RemoteSide>,
}

impl LiveCall {
    /// The sessions speaking for the caller's and the callee's side, once bound.
    pub fn sides(&self) -> (Option<SessionId>, Option<SessionId>) {
        (self.caller_session, self.callee_session)
    }

    /// The nodes the caller's and the callee's side speak from, when another node's.
    pub fn remote_sides(&self) -> (Option<&str>, Option<&str>) {
        (
            self.caller_remote.as_ref().map(|r| r.node.as_str()),
            self.callee_remote.as_ref().map(|r| r.node.as_str()),
        )
    }

    fn new(id: &str, caller: &str, callee: &str, active: bool) -> LiveCall {
        LiveCall {
            id: id.to_string(),
            caller: caller.to_string(),
            callee: callee.to_string(),
            active,
            ring_deadline: None,
            caller_session: None,
            callee_session: None,
            caller_remote: None,
            callee_remote: None,
        }
    }

    /// Binds `user`'s side to a local session.
    fn bind_local(&mut self, user: &str, session: SessionId) {
        if user == self.caller {
            self.caller_session = Some(session);
            self.caller_remote = None;
        } else {
            self.callee_session = Some(session);
            self.callee_remote = None;
        }
    }

    /// Binds `user`'s side to another node.
    fn bind_remote(&mut self, user: &str, node: &str) {
        let side = Some(RemoteSide {
            node: node.to_string(),
            lost_at: None,
        });
        if user == self.caller {
            self.caller_session = None;
            self.caller_remote = side;
        } else {
            self.callee_session = None;
            self.callee_remote = side;
        }
    }

    fn remote_of(&self, user: &str) -> Option<&RemoteSide> {
        if user == self.caller {
            self.caller_remote.as_ref()
        } else {
            self.callee_remote.as_ref()
        }
    }
}

/// A room peer: its peer id, session and user.
pub type RoomPeerAt = (String, SessionId, String);

/// A live room as the switchboard routes it (for the admin view).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRoomAt {
    pub room_id: String,
    pub call_id: String,
    pub topology: Topology,
    pub peers: Vec<RoomPeerAt>,
}

#[derive(Debug, Default)]
struct LiveRoom {
    call_id: String,
    /// peer id → (session, user)
    peers: BTreeMap<String, (SessionId, String)>,
    mode: RoomMode,
    topology: Topology,
    /// When an `auto` room that dropped below the threshold goes back to mesh.
    downgrade_at: Option<Instant>,
}

impl LiveRoom {
    /// Tells every peer the room's new topology.
    fn announce_topology(&self, room_id: &str, out: &mut Vec<Output>) {
        let event = Arc::new(Event::new(
            "room-topology",
            json!({ "roomId": room_id, "callId": self.call_id, "topology": self.topology.as_str() }),
        ));
        for (s, _) in self.peers.values() {
            deliver(out, *s, &event);
        }
    }

    /// Applies the policy after the peer count changed; announces a change to the peers.
    fn retopologise(
        &mut self,
        room_id: &str,
        policy: &TopologyPolicy,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        match policy.decide(self.mode, self.peers.len(), self.topology) {
            Decision::Now(t) => {
                self.downgrade_at = None;
                if t != self.topology {
                    self.topology = t;
                    self.announce_topology(room_id, out);
                }
            }
            Decision::DowngradeLater => {
                self.downgrade_at
                    .get_or_insert(now + policy.downgrade_delay);
            }
        }
    }
}

/// The routing state.
#[derive(Debug)]
pub struct Switchboard {
    ring_timeout: Duration,
    grace: Duration,
    sessions: HashMap<SessionId, Session>,
    by_user: HashMap<String, Vec<SessionId>>,
    calls: HashMap<String, LiveCall>,
    rooms: HashMap<String, LiveRoom>,
    topology: TopologyPolicy,
    /// This node's name in cluster mode: changes to calls are then also emitted as
    /// [`Output::Relay`] for the other nodes.
    node: Option<String>,
}

fn deliver(out: &mut Vec<Output>, to: SessionId, event: &Arc<Event>) {
    out.push(Output::Deliver {
        to,
        event: event.clone(),
    });
}

impl Switchboard {
    pub fn new(ring_timeout: Duration, grace: Duration) -> Self {
        Switchboard {
            ring_timeout,
            grace,
            sessions: HashMap::new(),
            by_user: HashMap::new(),
            calls: HashMap::new(),
            rooms: HashMap::new(),
            topology: TopologyPolicy::default(),
            node: None,
        }
    }

    /// Cluster mode: this node is `node`, and call changes are relayed to the others.
    pub fn set_node(&mut self, node: &str) {
        self.node = Some(node.to_string());
    }

    /// Users with a session here, connected or within its grace period (cluster presence).
    pub fn users(&self) -> Vec<String> {
        self.by_user.keys().cloned().collect()
    }

    fn relay(&self, out: &mut Vec<Output>, users: Vec<String>, remote: Remote) {
        if self.node.is_some() && !users.is_empty() {
            out.push(Output::Relay { users, remote });
        }
    }

    /// Sets how room topologies are decided (the default has no SFU: every room is mesh).
    pub fn with_topology(mut self, policy: TopologyPolicy) -> Self {
        self.topology = policy;
        self
    }

    /// Changes how room topologies are decided, for rooms as their peers come and go.
    pub fn set_topology(&mut self, policy: TopologyPolicy) {
        self.topology = policy;
    }

    /// A new connection for `user`.
    pub fn connect(&mut self, session: SessionId, user: &str) {
        self.sessions.insert(
            session,
            Session {
                user: user.to_string(),
                dropped_at: None,
                rooms: Vec::new(),
            },
        );
        self.by_user
            .entry(user.to_string())
            .or_default()
            .push(session);
    }

    /// Connected (not dropped) sessions of a user.
    pub fn sessions_of(&self, user: &str) -> Vec<SessionId> {
        self.by_user
            .get(user)
            .map(|ids| {
                ids.iter()
                    .copied()
                    .filter(|id| {
                        self.sessions
                            .get(id)
                            .is_some_and(|s| s.dropped_at.is_none())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// True while the user has any session, connected or within its grace period.
    pub fn reachable(&self, user: &str) -> bool {
        self.by_user.get(user).is_some_and(|ids| !ids.is_empty())
    }

    pub fn user_of(&self, session: SessionId) -> Option<&str> {
        self.sessions.get(&session).map(|s| s.user.as_str())
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn call(&self, call_id: &str) -> Option<&LiveCall> {
        self.calls.get(call_id)
    }

    /// A connection dropped: its rooms are left at once (mesh peers cannot use a dead peer);
    /// its calls wait for the grace period (see [`Switchboard::tick`]).
    pub fn disconnect(&mut self, session: SessionId, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        let Some(s) = self.sessions.get_mut(&session) else {
            return out;
        };
        s.dropped_at = Some(now);
        let user = s.user.clone();
        let rooms = std::mem::take(&mut s.rooms);
        for (room_id, peer_id) in rooms {
            // A rejoin from another device of the user took the peer over: it stays.
            let speaks = self
                .rooms
                .get(&room_id)
                .and_then(|r| r.peers.get(&peer_id))
                .is_some_and(|(s, _)| *s == session);
            if !speaks {
                continue;
            }
            out.extend(self.remove_peer(&room_id, &peer_id, now));
            out.push(Output::RoomLeft {
                room_id,
                user: user.clone(),
            });
        }
        let has_calls = self
            .calls
            .values()
            .any(|c| c.caller_session == Some(session) || c.callee_session == Some(session));
        if !has_calls {
            self.forget(session);
        }
        out
    }

    fn forget(&mut self, session: SessionId) {
        if let Some(s) = self.sessions.remove(&session) {
            if let Some(ids) = self.by_user.get_mut(&s.user) {
                ids.retain(|id| *id != session);
                if ids.is_empty() {
                    self.by_user.remove(&s.user);
                }
            }
        }
    }

    /// A ringing call between `a` (as callee) and `b` (as caller), for glare detection.
    pub fn ringing_from(&self, caller: &str, callee: &str) -> Option<&LiveCall> {
        self.calls
            .values()
            .find(|c| !c.active && c.caller == caller && c.callee == callee)
    }

    /// The live call between two users, newest wins when there are several.
    pub fn call_between(&self, a: &str, b: &str) -> Option<&LiveCall> {
        self.calls
            .values()
            .find(|c| (c.caller == a && c.callee == b) || (c.caller == b && c.callee == a))
    }

    /// Starts ringing: `invite` goes to every connected session of the callee.
    pub fn ring(
        &mut self,
        call_id: &str,
        caller: &str,
        callee: &str,
        caller_session: Option<SessionId>,
        invite: Event,
        now: Instant,
    ) -> Vec<Output> {
        let mut call = LiveCall::new(call_id, caller, callee, false);
        call.ring_deadline = Some(now + self.ring_timeout);
        call.caller_session = caller_session;
        self.calls.insert(call_id.to_string(), call);
        let mut out = Vec::new();
        let remote = Remote::Ring {
            call_id: call_id.to_string(),
            caller: caller.to_string(),
            callee: callee.to_string(),
            invite: WireEvent::of(&invite),
        };
        let invite = Arc::new(invite);
        for s in self.sessions_of(callee) {
            deliver(&mut out, s, &invite);
        }
        self.relay(&mut out, vec![callee.to_string()], remote);
        out
    }

    /// Registers a call known only to the database (created over REST, or before a restart).
    pub fn adopt(&mut self, call_id: &str, caller: &str, callee: &str, active: bool) {
        self.calls
            .entry(call_id.to_string())
            .or_insert_with(|| LiveCall::new(call_id, caller, callee, active));
    }

    /// Sessions that should receive what `user`'s side of a call is sent: the session bound to
    /// that side, or every connected session of the user while none is bound.
    fn side_sessions(&self, call: &LiveCall, user: &str) -> Vec<SessionId> {
        if call.remote_of(user).is_some() {
            // That side speaks from another node, which delivers to it.
            return Vec::new();
        }
        let bound = if user == call.caller {
            call.caller_session
        } else {
            call.callee_session
        };
        match bound {
            Some(s)
                if self
                    .sessions
                    .get(&s)
                    .is_some_and(|x| x.dropped_at.is_none()) =>
            {
                vec![s]
            }
            _ => self.sessions_of(user),
        }
    }

    /// The callee accepted (on `session`, or over REST when `None`): the caller is told, the
    /// callee's other devices stop ringing with `call-accepted-elsewhere`.
    pub fn accepted(&mut self, call_id: &str, session: Option<SessionId>) -> Vec<Output> {
        let mut out = Vec::new();
        let Some(call) = self.calls.get_mut(call_id) else {
            return out;
        };
        call.active = true;
        call.ring_deadline = None;
        if let Some(session) = session {
            let callee = call.callee.clone();
            call.bind_local(&callee, session);
        }
        let call = call.clone();
        self.tell_accepted(&call, session, &mut out);
        let remote = Remote::Accepted {
            call_id: call.id.clone(),
            caller: call.caller.clone(),
            callee: call.callee.clone(),
        };
        self.relay(&mut out, vec![call.caller, call.callee], remote);
        out
    }

    /// `call-accept` to the caller's side; `call-accepted-elsewhere` to the callee's sessions
    /// here other than `accepting` (the one that accepted, when it is on this node).
    fn tell_accepted(&self, call: &LiveCall, accepting: Option<SessionId>, out: &mut Vec<Output>) {
        let accept = Arc::new(Event::new(
            "call-accept",
            json!({ "callId": call.id, "from": call.callee }),
        ));
        for s in self.side_sessions(call, &call.caller) {
            deliver(out, s, &accept);
        }
        let elsewhere = Arc::new(Event::new(
            "call-accepted-elsewhere",
            json!({ "callId": call.id }),
        ));
        for s in self.sessions_of(&call.callee) {
            if Some(s) != accepting {
                deliver(out, s, &elsewhere);
            }
        }
    }

    /// Forwards a signaling message (`call-answer`, `ice-candidate`, `call-sdp-update`,
    /// `media-state`, `call-hangup`, `call-reject`) from `user` on `session` to the other side of
    /// a 1:1 call. The sender's session becomes the one speaking for its side (this is how a
    /// reconnected client resumes a call). `to`, when given, must name the other user.
    pub fn forward(
        &mut self,
        call_id: &str,
        session: SessionId,
        user: &str,
        to: Option<&str>,
        kind: &'static str,
        mut body: serde_json::Map<String, Value>,
    ) -> Result<Vec<Output>, Error> {
        let call = self.calls.get_mut(call_id).ok_or(Error::NotFound("call"))?;
        let from_caller = user == call.caller;
        let other = if from_caller {
            call.callee.clone()
        } else if user == call.callee {
            call.caller.clone()
        } else {
            return Err(Error::NotFound("call"));
        };
        if let Some(to) = to {
            if to != other {
                return Err(Error::invalid(
                    "invalid_field",
                    format!("to: `{to}` is not the other side of this call"),
                ));
            }
        }
        // Only an accepted message moves its side to the sender's session.
        if from_caller || call.active {
            call.bind_local(user, session);
        }
        body.insert("callId".into(), Value::String(call.id.clone()));
        body.insert("from".into(), Value::String(user.to_string()));
        let event = Event { kind, body };
        let call = self.calls.get(call_id).ok_or(Error::NotFound("call"))?;
        let mut out = Vec::new();
        let remote = self.node.as_ref().map(|_| Remote::Forward {
            call_id: call.id.clone(),
            caller: call.caller.clone(),
            callee: call.callee.clone(),
            active: call.active,
            from: user.to_string(),
            event: WireEvent::of(&event),
        });
        let event = Arc::new(event);
        for s in self.side_sessions(call, &other) {
            deliver(&mut out, s, &event);
        }
        if let Some(remote) = remote {
            // Both users: the other side's node delivers, the sender's other nodes learn that
            // its side now speaks from here.
            self.relay(&mut out, vec![other, user.to_string()], remote);
        }
        Ok(out)
    }

    /// A call reached a final status: `notice` (e.g. `call-hangup`) goes to the other side of
    /// `actor`, then `call-ended` to every session of every participant, and the call is dropped.
    pub fn ended(
        &mut self,
        call_id: &str,
        participants: &[String],
        reason: &str,
        notice: Option<(&str, Event)>,
    ) -> Vec<Output> {
        let remote = self.node.as_ref().map(|_| Remote::Ended {
            call_id: call_id.to_string(),
            participants: participants.to_vec(),
            reason: reason.to_string(),
            notice: notice
                .as_ref()
                .map(|(actor, e)| (actor.to_string(), WireEvent::of(e))),
        });
        let mut out = self.end_here(call_id, participants, reason, notice);
        if let Some(remote) = remote {
            self.relay(&mut out, participants.to_vec(), remote);
        }
        out
    }

    /// [`Switchboard::ended`] for this node's sessions only.
    fn end_here(
        &mut self,
        call_id: &str,
        participants: &[String],
        reason: &str,
        notice: Option<(&str, Event)>,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        let live = self.calls.remove(call_id);
        if let (Some((actor, notice)), Some(call)) = (notice, &live) {
            let other = if actor == call.caller {
                &call.callee
            } else {
                &call.caller
            };
            let notice = Arc::new(notice);
            for s in self.side_sessions(call, other) {
                deliver(&mut out, s, &notice);
            }
        }
        let ended = Arc::new(Event::new(
            "call-ended",
            json!({ "callId": call_id, "reason": reason }),
        ));
        for user in participants {
            for s in self.sessions_of(user) {
                deliver(&mut out, s, &ended);
            }
        }
        self.forget_dropped();
        out
    }

    /// Sends an event to every connected session of a user (REST-originated changes).
    pub fn notify(&self, user: &str, event: Event) -> Vec<Output> {
        let remote = self.node.as_ref().map(|_| Remote::Notify {
            user: user.to_string(),
            event: WireEvent::of(&event),
        });
        let mut out = self.notify_here(user, event);
        if let Some(remote) = remote {
            self.relay(&mut out, vec![user.to_string()], remote);
        }
        out
    }

    fn notify_here(&self, user: &str, event: Event) -> Vec<Output> {
        let event = Arc::new(event);
        let mut out = Vec::new();
        for s in self.sessions_of(user) {
            deliver(&mut out, s, &event);
        }
        out
    }

    /// Applies what node `node` reported about a call: deliveries to this node's sessions,
    /// and the call's sides rebound to that node where it now speaks from. Never relays.
    pub fn apply_remote(&mut self, node: &str, remote: Remote, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        match remote {
            Remote::Ring {
                call_id,
                caller,
                callee,
                invite,
            } => {
                let Some(invite) = invite.into_event() else {
                    return out;
                };
                let ring_timeout = self.ring_timeout;
                let call = self
                    .calls
                    .entry(call_id.clone())
                    .or_insert_with(|| LiveCall::new(&call_id, &caller, &callee, false));
                if call.active {
                    return out;
                }
                call.ring_deadline.get_or_insert(now + ring_timeout);
                call.bind_remote(&caller, node);
                let invite = Arc::new(invite);
                for s in self.sessions_of(&callee) {
                    deliver(&mut out, s, &invite);
                }
            }
            Remote::Accepted {
                call_id,
                caller,
                callee,
            } => {
                let call = self
                    .calls
                    .entry(call_id.clone())
                    .or_insert_with(|| LiveCall::new(&call_id, &caller, &callee, true));
                call.active = true;
                call.ring_deadline = None;
                call.bind_remote(&callee, node);
                let call = call.clone();
                self.tell_accepted(&call, None, &mut out);
            }
            Remote::Forward {
                call_id,
                caller,
                callee,
                active,
                from,
                event,
            } => {
                let Some(event) = event.into_event() else {
                    return out;
                };
                if from != caller && from != callee {
                    return out;
                }
                let call = self
                    .calls
                    .entry(call_id.clone())
                    .or_insert_with(|| LiveCall::new(&call_id, &caller, &callee, active));
                if active {
                    call.active = true;
                    call.ring_deadline = None;
                }
                if from == call.caller || call.active {
                    call.bind_remote(&from, node);
                }
                let other = if from == call.caller {
                    call.callee.clone()
                } else {
                    call.caller.clone()
                };
                let call = call.clone();
                let event = Arc::new(event);
                for s in self.side_sessions(&call, &other) {
                    deliver(&mut out, s, &event);
                }
            }
            Remote::Ended {
                call_id,
                participants,
                reason,
                notice,
            } => {
                let notice = notice.and_then(|(actor, e)| Some((actor, e.into_event()?)));
                let notice = notice.as_ref().map(|(a, e)| (a.as_str(), e.clone()));
                out = self.end_here(&call_id, &participants, &reason, notice);
            }
            Remote::Notify { user, event } => {
                if let Some(event) = event.into_event() {
                    out = self.notify_here(&user, event);
                }
            }
        }
        out
    }

    /// The nodes the registry lists as alive: sides speaking from any other node count as
    /// lost from `now` (their calls end after the grace period unless the node comes back or
    /// the side speaks again from somewhere else).
    pub fn nodes_alive(&mut self, alive: &HashSet<String>, now: Instant) {
        for call in self.calls.values_mut() {
            for side in [&mut call.caller_remote, &mut call.callee_remote]
                .into_iter()
                .flatten()
            {
                if alive.contains(&side.node) {
                    side.lost_at = None;
                } else {
                    side.lost_at.get_or_insert(now);
                }
            }
        }
    }

    /// `session` entered a room as `peer_id`: the others get `room-topology` when the join
    /// moved the room to the SFU, then `room-peer-joined`. Returns the peers already there as
    /// (peer id, user) and the topology in force.
    pub fn room_join(
        &mut self,
        room_id: &str,
        call_id: &str,
        peer_id: &str,
        session: SessionId,
        mode: RoomMode,
        now: Instant,
    ) -> (Vec<(String, String)>, Topology, Vec<Output>) {
        let mut out = Vec::new();
        let Some(user) = self.user_of(session).map(str::to_string) else {
            return (Vec::new(), Topology::Mesh, out);
        };
        let policy = self.topology;
        let room = self.rooms.entry(room_id.to_string()).or_default();
        room.call_id = call_id.to_string();
        room.mode = mode;
        let existing: Vec<(String, String)> = room
            .peers
            .iter()
            .filter(|(p, _)| p.as_str() != peer_id)
            .map(|(p, (_, u))| (p.clone(), u.clone()))
            .collect();
        let sessions: Vec<SessionId> = room
            .peers
            .iter()
            .filter(|(p, _)| p.as_str() != peer_id)
            .map(|(_, (s, _))| *s)
            .collect();
        let rejoin = room
            .peers
            .insert(peer_id.to_string(), (session, user.clone()))
            .is_some();
        // The newcomer learns the topology from its ack: only the others are told.
        let mut announced = Vec::new();
        room.retopologise(room_id, &policy, now, &mut announced);
        out.extend(
            announced
                .into_iter()
                .filter(|o| !matches!(o, Output::Deliver { to, .. } if *to == session)),
        );
        let topology = room.topology;
        if let Some(s) = self.sessions.get_mut(&session) {
            if !s.rooms.iter().any(|(r, _)| r == room_id) {
                s.rooms.push((room_id.to_string(), peer_id.to_string()));
            }
        }
        if !rejoin {
            let joined = Arc::new(Event::new(
                "room-peer-joined",
                json!({ "roomId": room_id, "peerId": peer_id, "userId": user }),
            ));
            for s in sessions {
                deliver(&mut out, s, &joined);
            }
        }
        (existing, topology, out)
    }

    fn remove_peer(&mut self, room_id: &str, peer_id: &str, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        let policy = self.topology;
        let Some(room) = self.rooms.get_mut(room_id) else {
            return out;
        };
        let Some((_, user)) = room.peers.remove(peer_id) else {
            return out;
        };
        out.push(Output::SfuLeave {
            peer_id: peer_id.to_string(),
        });
        let left = Arc::new(Event::new(
            "room-peer-left",
            json!({ "roomId": room_id, "peerId": peer_id, "userId": user }),
        ));
        for (s, _) in room.peers.values() {
            deliver(&mut out, *s, &left);
        }
        if room.peers.is_empty() {
            self.rooms.remove(room_id);
        } else {
            room.retopologise(room_id, &policy, now, &mut out);
        }
        out
    }

    /// A peer left a room (explicitly or over REST): the others get `room-peer-left`.
    pub fn room_leave(&mut self, room_id: &str, peer_id: &str, now: Instant) -> Vec<Output> {
        for s in self.sessions.values_mut() {
            s.rooms.retain(|(r, p)| !(r == room_id && p == peer_id));
        }
        self.remove_peer(room_id, peer_id, now)
    }

    /// The topology in force in a live room (mesh for a room nobody is in).
    pub fn room_topology(&self, room_id: &str) -> Topology {
        self.rooms
            .get(room_id)
            .map(|r| r.topology)
            .unwrap_or_default()
    }

    /// Where a room peer is, whichever its room: its session and its room's call id.
    pub fn room_peer_anywhere(&self, peer_id: &str) -> Option<(SessionId, String)> {
        self.rooms
            .values()
            .find_map(|r| r.peers.get(peer_id).map(|(s, _)| (*s, r.call_id.clone())))
    }

    /// A room's call id and the sessions of its peers.
    pub fn room_sessions(&self, room_id: &str) -> Option<(String, Vec<RoomPeerAt>)> {
        let room = self.rooms.get(room_id)?;
        let peers = room
            .peers
            .iter()
            .map(|(p, (s, u))| (p.clone(), *s, u.clone()))
            .collect();
        Some((room.call_id.clone(), peers))
    }

    /// The room a peer is in and the user it speaks for.
    pub fn room_and_user_of_peer(&self, peer_id: &str) -> Option<(String, String)> {
        self.rooms.iter().find_map(|(id, r)| {
            r.peers
                .get(peer_id)
                .map(|(_, user)| (id.clone(), user.clone()))
        })
    }

    /// Where a room peer is: its session and its room's call id.
    pub fn room_peer(&self, room_id: &str, peer_id: &str) -> Option<(SessionId, &str)> {
        let room = self.rooms.get(room_id)?;
        room.peers
            .get(peer_id)
            .map(|(s, _)| (*s, room.call_id.as_str()))
    }

    /// The room's peer bound to `session`, if any.
    pub fn peer_of(&self, room_call_id: &str, session: SessionId) -> Option<(String, String)> {
        let room = self.rooms.iter().find(|(_, r)| r.call_id == room_call_id)?;
        room.1
            .peers
            .iter()
            .find(|(_, (s, _))| *s == session)
            .map(|(p, _)| (room.0.clone(), p.clone()))
    }

    /// Forwards a message inside a room's mesh from the sender's peer to peer `to`.
    pub fn forward_in_room(
        &self,
        call_id: &str,
        session: SessionId,
        to: Option<&str>,
        kind: &'static str,
        mut body: serde_json::Map<String, Value>,
    ) -> Result<Vec<Output>, Error> {
        let (room_id, from_peer) = self
            .peer_of(call_id, session)
            .ok_or(Error::NotFound("call"))?;
        let to = to.ok_or_else(|| {
            Error::invalid("invalid_field", "to: the peer id is required inside a room")
        })?;
        let room = self.rooms.get(&room_id).ok_or(Error::NotFound("call"))?;
        let (target, _) = room.peers.get(to).ok_or_else(|| {
            Error::invalid("unknown_peer", format!("to: no peer `{to}` in this room"))
        })?;
        let from = self.user_of(session).unwrap_or_default().to_string();
        body.insert("callId".into(), Value::String(call_id.to_string()));
        body.insert("from".into(), Value::String(from));
        body.insert("fromPeer".into(), Value::String(from_peer));
        let mut out = Vec::new();
        deliver(&mut out, *target, &Arc::new(Event { kind, body }));
        Ok(out)
    }

    /// Every live room with its peers, for the admin view.
    pub fn live_rooms(&self) -> Vec<LiveRoomAt> {
        self.rooms
            .iter()
            .map(|(id, r)| LiveRoomAt {
                room_id: id.clone(),
                call_id: r.call_id.clone(),
                topology: r.topology,
                peers: r
                    .peers
                    .iter()
                    .map(|(p, (s, u))| (p.clone(), *s, u.clone()))
                    .collect(),
            })
            .collect()
    }

    /// Is this call a room call the switchboard knows?
    pub fn is_room_call(&self, call_id: &str) -> bool {
        self.rooms.values().any(|r| r.call_id == call_id)
    }

    /// Advances time: ringing calls past their deadline expire (`Timeout`); sessions dropped
    /// longer than the grace period end the calls they spoke for (`Disconnect`) and are removed.
    pub fn tick(&mut self, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        let policy = self.topology;
        for (id, room) in self.rooms.iter_mut() {
            if room.downgrade_at.is_some_and(|d| now >= d) {
                room.downgrade_at = None;
                if let Decision::DowngradeLater =
                    policy.decide(room.mode, room.peers.len(), room.topology)
                {
                    room.topology = Topology::Mesh;
                    room.announce_topology(id, &mut out);
                }
            }
        }
        let grace = self.grace;
        for call in self.calls.values_mut() {
            if call.ring_deadline.is_some_and(|d| now >= d) {
                call.ring_deadline = None;
                out.push(Output::Expire {
                    call_id: call.id.clone(),
                    action: Action::Timeout,
                });
            }
            // A side on a node gone from the registry for the grace period: its connection is
            // as good as dropped (a ringing call is left to its ring deadline).
            let lost = |r: &Option<RemoteSide>| {
                r.as_ref()
                    .and_then(|r| r.lost_at)
                    .is_some_and(|t| now.duration_since(t) >= grace)
            };
            if call.active && (lost(&call.caller_remote) || lost(&call.callee_remote)) {
                call.caller_remote = None;
                call.callee_remote = None;
                out.push(Output::Expire {
                    call_id: call.id.clone(),
                    action: Action::Disconnect,
                });
            }
        }
        let expired: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                s.dropped_at
                    .is_some_and(|t| now.duration_since(t) >= self.grace)
            })
            .map(|(id, _)| *id)
            .collect();
        for session in expired {
            let user = self.user_of(session).unwrap_or_default().to_string();
            let others = self.sessions_of(&user);
            for call in self.calls.values_mut() {
                let mine = if call.caller == user {
                    &mut call.caller_session
                } else if call.callee == user {
                    &mut call.callee_session
                } else {
                    continue;
                };
                if *mine != Some(session) {
                    continue;
                }
                // A ringing caller whose user is still connected elsewhere keeps ringing.
                if !call.active && !others.is_empty() {
                    *mine = None;
                    continue;
                }
                *mine = None;
                out.push(Output::Expire {
                    call_id: call.id.clone(),
                    action: Action::Disconnect,
                });
            }
            self.forget(session);
        }
        out
    }

    /// Removes dropped sessions no call refers to any more.
    fn forget_dropped(&mut self) {
        let idle: Vec<SessionId> =
            self.sessions
                .iter()
                .filter(|(id, s)| {
                    s.dropped_at.is_some()
                        && !self.calls.values().any(|c| {
                            c.caller_session == Some(**id) || c.callee_session == Some(**id)
                        })
                })
                .map(|(id, _)| *id)
                .collect();
        for id in idle {
            self.forget(id);
        }
    }
}

#[cfg(test)]
// Tests start from an arbitrary instant and advance time by hand.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use crate::signaling::call::{transition, Actor, CallStatus, EndReason, Role};

    const RING: Duration = Duration::from_secs(45);
    const GRACE: Duration = Duration::from_secs(20);

    fn board() -> Switchboard {
        Switchboard::new(RING, GRACE)
    }

    fn invite(call: &str) -> Event {
        Event::new(
            "call-initiate",
            json!({ "callId": call, "from": "alice", "callType": "video" }),
        )
    }

    fn delivered(out: &[Output]) -> Vec<(SessionId, &'static str)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Deliver { to, event } => Some((*to, event.kind)),
                _ => None,
            })
            .collect()
    }

    fn body(v: Value) -> serde_json::Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        }
    }

    #[test]
    fn ring_accept_answer_hangup() {
        let now = Instant::now();
        let mut b = board();
        b.connect(1, "alice");
        b.connect(2, "bob");
        let out = b.ring("c1", "alice", "bob", Some(1), invite("c1"), now);
        assert_eq!(delivered(&out), vec![(2, "call-initiate")]);
        // Pure rules: the callee may accept a ringing call.
        let t = transition(
            CallStatus::Ringing,
            Actor::Participant(Role::Callee),
            Action::Accept,
        )
        .expect("accept");
        assert_eq!(t.to, CallStatus::Active);
        assert_eq!(
            delivered(&b.accepted("c1", Some(2))),
            vec![(1, "call-accept")]
        );
        let out = b
            .forward(
                "c1",
                2,
                "bob",
                None,
                "call-answer",
                body(json!({"sdp": {"type": "answer"}})),
            )
            .expect("fwd");
        assert_eq!(delivered(&out), vec![(1, "call-answer")]);
        if let Output::Deliver { event, .. } = &out[0] {
            assert_eq!(
                event.get("from"),
                Some(&json!("bob")),
                "from is stamped by the server"
            );
        }
        let out = b
            .forward(
                "c1",
                1,
                "alice",
                Some("bob"),
                "ice-candidate",
                body(json!({"candidate": null})),
            )
            .expect("fwd");
        assert_eq!(delivered(&out), vec![(2, "ice-candidate")]);
        let notice = Event::new("call-hangup", json!({"callId": "c1", "from": "alice"}));
        let out = b.ended(
            "c1",
            &["alice".into(), "bob".into()],
            "hangup",
            Some(("alice", notice)),
        );
        assert_eq!(
            delivered(&out),
            vec![(2, "call-hangup"), (1, "call-ended"), (2, "call-ended")]
        );
        assert!(b.call("c1").is_none());
    }

    #[test]
    fn reject_and_caller_cancel_while_ringing() {
        let now = Instant::now();
        let mut b = board();
        b.connect(1, "alice");
        b.connect(2, "bob");
        b.ring("c1", "alice", "bob", Some(1), invite("c1"), now);
        let t = transition(
            CallStatus::Ringing,
            Actor::Participant(Role::Callee),
            Action::Reject,
        )
        .expect("reject");
        assert_eq!(t.reason, Some(EndReason::Rejected));
        let out = b.ended(
            "c1",
            &["alice".into(), "bob".into()],
            "rejected",
            Some(("bob", Event::new("call-reject", json!({})))),
        );
        assert_eq!(delivered(&out)[0], (1, "call-reject"));

        b.ring("c2", "alice", "bob", Some(1), invite("c2"), now);
        let t = transition(
            CallStatus::Ringing,
            Actor::Participant(Role::Caller),
            Action::Hangup,
        )
        .expect("cancel");
        assert_eq!(
            (t.to, t.reason),
            (CallStatus::Cancelled, Some(EndReason::Cancelled))
        );
        let out = b.ended(
            "c2",
            &["alice".into(), "bob".into()],
            "cancelled",
            Some(("alice", Event::new("call-hangup", json!({})))),
        );
        assert_eq!(
            delivered(&out),
            vec![(2, "call-hangup"), (1, "call-ended"), (2, "call-ended")]
        );
    }

    #[test]
    fn ringing_times_out() {
        let now = Instant::now();
        let mut b = board();
        b.connect(1, "alice");
        b.connect(2, "bob");
        b.ring("c1", "alice", "bob", Some(1), invite("c1"), now);
        assert!(b.tick(now + RING - Duration::from_millis(1)).is_empty());
        let out = b.tick(now + RING);
        assert_eq!(
            out,
            vec![Output::Expire {
                call_id: "c1".into(),
                action: Action::Timeout
            }]
        );
        assert!(b.tick(now + RING * 2).is_empty(), "expires once");
        let t = transition(CallStatus::Ringing, Actor::System, Action::Timeout).expect("timeout");
        assert_eq!(t.to, CallStatus::Missed);
        // Once answered, the deadline is gone.
        b.ring("c2", "alice", "bob", Some(1), invite("c2"), now);
        b.accepted("c2", Some(2));
        assert!(b.tick(now + RING * 3).is_empty());
    }

    #[test]
    fn glare_is_detected() {
        let now = Instant::now();
        let mut b = board();
        b.connect(1, "alice");
        b.connect(2, "bob");
        b.ring("c1", "alice", "bob", Some(1), invite("c1"), now);
        // Bob calls Alice at the same moment: the shell sees the ringing call the other way.
        assert_eq!(
            b.ringing_from("alice", "bob").map(|c| c.id.as_str()),
            Some("c1")
        );
        assert!(b.ringing_from("bob", "alice").is_none());
    }

    #[test]
    fn first_device_to_accept_wins() {
        let now = Instant::now();
        let mut b = board();
        b.connect(1, "alice");
        b.connect(2, "bob");
        b.connect(3, "bob");
        let out = b.ring("c1", "alice", "bob", Some(1), invite("c1"), now);
        assert_eq!(
            delivered(&out),
            vec![(2, "call-initiate"), (3, "call-initiate")]
        );
        let out = b.accepted("c1", Some(3));
        assert_eq!(
            delivered(&out),
            vec![(1, "call-accept"), (2, "call-accepted-elsewhere")]
        );
        // From now on only device 3 hears from the caller.
        let out = b
            .forward("c1", 1, "alice", None, "ice-candidate", body(json!({})))
            .expect("fwd");
        assert_eq!(delivered(&out), vec![(3, "ice-candidate")]);
        // The database refuses the second accept (already_active); the pure rule says so too.
        assert!(transition(
            CallStatus::Active,
            Actor::Participant(Role::Callee),
            Action::Accept
        )
        .is_err());
    }

    #[test]
    fn outsiders_cannot_signal_a_call() {
        let now = Instant::now();
        let mut b = board();
        b.connect(1, "alice");
        b.connect(2, "bob");
        b.connect(9, "mallory");
        b.ring("c1", "alice", "bob", Some(1), invite("c1"), now);
        let err = b
            .forward("c1", 9, "mallory", None, "ice-candidate", body(json!({})))
            .expect_err("outsider");
        assert_eq!(err.code(), "not_found");
        let err = b
            .forward(
                "c1",
                1,
                "alice",
                Some("mallory"),
                "ice-candidate",
                body(json!({})),
            )
            .expect_err("wrong to");
        assert_eq!(err.code(), "invalid_field");
    }

    // Found by tests/props_signaling.rs: a message refused for a wrong `to` still moved the
    // caller's side to the sending session, so the call-accept went to that device.
    #[test]
    fn a_refused_message_does_not_move_its_side() {
        let now = Instant::now();
        let mut b = board();
        b.connect(1, "alice");
        b.connect(2, "alice");
        b.connect(3, "bob");
        b.ring("c1", "alice", "bob", Some(1), invite("c1"), now);
        let err = b
            .forward(
                "c1",
                2,
                "alice",
                Some("mallory"),
                "ice-candidate",
                body(json!({})),
            )
            .expect_err("wrong to");
        assert_eq!(err.code(), "invalid_field");
        assert_eq!(
            delivered(&b.accepted("c1", Some(3))),
            vec![(1, "call-accept")],
            "the caller's device that rang is still the one told"
        );
    }

    #[test]
    fn reconnect_within_grace_resumes_and_expiry_ends_with_disconnect() {
        let now = Instant::now();
        let mut b = board();
        b.connect(1, "alice");
        b.connect(2, "bob");
        b.ring("c1", "alice", "bob", Some(1), invite("c1"), now);
        b.accepted("c1", Some(2));
        // Bob's connection drops; within the grace period nothing ends.
        assert!(b.disconnect(2, now).is_empty());
        assert!(b.reachable("bob"));
        assert!(b.tick(now + GRACE - Duration::from_millis(1)).is_empty());
        // Bob reconnects on session 3 and speaks for the call (e.g. an ICE-restart offer).
        b.connect(3, "bob");
        let out = b
            .forward("c1", 3, "bob", None, "call-sdp-update", body(json!({})))
            .expect("resume");
        assert_eq!(delivered(&out), vec![(1, "call-sdp-update")]);
        let out = b
            .forward("c1", 1, "alice", None, "call-sdp-update", body(json!({})))
            .expect("reply");
        assert_eq!(delivered(&out), vec![(3, "call-sdp-update")]);
        assert!(
            b.tick(now + GRACE).is_empty(),
            "resumed call survives the old session's expiry"
        );

        // Alice drops and does not come back: the call ends with reason disconnect.
        b.disconnect(1, now + GRACE);
        let out = b.tick(now + GRACE * 2);
        assert_eq!(
            out,
            vec![Output::Expire {
                call_id: "c1".into(),
                action: Action::Disconnect
            }]
        );
        let t =
            transition(CallStatus::Active, Actor::System, Action::Disconnect).expect("disconnect");
        assert_eq!(
            (t.to, t.reason),
            (CallStatus::Ended, Some(EndReason::Disconnect))
        );
        let out = b.ended("c1", &["alice".into(), "bob".into()], "disconnect", None);
        assert_eq!(delivered(&out), vec![(3, "call-ended")]);
        assert!(!b.reachable("alice"));
        assert_eq!(
            b.session_count(),
            1,
            "expired sessions are forgotten; only bob's new one remains"
        );
    }

    // Found by tests/props_signaling.rs: the first device's drop removed the peer that the
    // second device had taken over, announced room-peer-left and made the shell persist a leave.
    #[test]
    fn a_room_peer_taken_over_by_another_device_survives_the_first_one_dropping() {
        let mut b = board();
        b.connect(1, "alice");
        b.connect(2, "carol");
        b.connect(3, "carol");
        b.room_join("r1", "rc", "pa", 1, RoomMode::Auto, Instant::now());
        b.room_join("r1", "rc", "pc", 2, RoomMode::Auto, Instant::now());
        let (peers, _, out) = b.room_join("r1", "rc", "pc", 3, RoomMode::Auto, Instant::now());
        assert_eq!(peers, vec![("pa".to_string(), "alice".to_string())]);
        assert!(out.is_empty(), "a rejoin announces nothing");
        assert!(
            b.disconnect(2, Instant::now()).is_empty(),
            "the old device leaves nothing"
        );
        let out = b
            .forward_in_room("rc", 1, Some("pc"), "ice-candidate", body(json!({})))
            .expect("carol is still in the room");
        assert_eq!(delivered(&out), vec![(3, "ice-candidate")]);
        let out = b.disconnect(3, Instant::now());
        assert!(out.contains(&Output::RoomLeft {
            room_id: "r1".into(),
            user: "carol".into()
        }));
        assert_eq!(delivered(&out), vec![(1, "room-peer-left")]);
    }

    #[test]
    fn rooms_announce_joins_leaves_and_route_by_peer() {
        let mut b = board();
        b.connect(1, "alice");
        b.connect(2, "bob");
        b.connect(3, "carol");
        let (peers, _, out) = b.room_join("r1", "rc", "pa", 1, RoomMode::Auto, Instant::now());
        assert!(peers.is_empty() && out.is_empty());
        let (peers, _, out) = b.room_join("r1", "rc", "pb", 2, RoomMode::Auto, Instant::now());
        assert_eq!(peers, vec![("pa".to_string(), "alice".to_string())]);
        assert_eq!(delivered(&out), vec![(1, "room-peer-joined")]);
        let (peers, _, out) = b.room_join("r1", "rc", "pc", 3, RoomMode::Auto, Instant::now());
        assert_eq!(peers.len(), 2);
        assert_eq!(delivered(&out).len(), 2);

        let out = b
            .forward_in_room(
                "rc",
                3,
                Some("pa"),
                "call-sdp-update",
                body(json!({"sdp": {}})),
            )
            .expect("fwd");
        assert_eq!(delivered(&out), vec![(1, "call-sdp-update")]);
        if let Output::Deliver { event, .. } = &out[0] {
            assert_eq!(event.get("fromPeer"), Some(&json!("pc")));
            assert_eq!(event.get("from"), Some(&json!("carol")));
        }
        assert_eq!(
            b.forward_in_room("rc", 3, None, "ice-candidate", body(json!({})))
                .expect_err("no to")
                .code(),
            "invalid_field"
        );
        assert_eq!(
            b.forward_in_room("rc", 3, Some("zz"), "ice-candidate", body(json!({})))
                .expect_err("bad peer")
                .code(),
            "unknown_peer"
        );
        b.connect(4, "mallory");
        assert_eq!(
            b.forward_in_room("rc", 4, Some("pa"), "ice-candidate", body(json!({})))
                .expect_err("outsider")
                .code(),
            "not_found"
        );

        let out = b.room_leave("r1", "pb", Instant::now());
        let mut got = delivered(&out);
        got.sort();
        assert_eq!(got, vec![(1, "room-peer-left"), (3, "room-peer-left")]);
        // A dropped connection leaves its rooms at once.
        let out = b.disconnect(3, Instant::now());
        assert!(out.contains(&Output::RoomLeft {
            room_id: "r1".into(),
            user: "carol".into()
        }));
        assert_eq!(delivered(&out), vec![(1, "room-peer-left")]);
    }

    #[test]
    fn auto_rooms_move_to_the_sfu_at_the_threshold_and_back_after_the_delay() {
        let policy = TopologyPolicy {
            sfu: true,
            threshold: 3,
            downgrade_delay: Duration::from_secs(5),
        };
        let mut b = board().with_topology(policy);
        let t0 = Instant::now();
        for (s, u) in [(1, "alice"), (2, "bob"), (3, "carol")] {
            b.connect(s, u);
        }
        let (_, t, out) = b.room_join("r1", "rc", "pa", 1, RoomMode::Auto, t0);
        assert_eq!((t, out.len()), (Topology::Mesh, 0));
        let (_, t, _) = b.room_join("r1", "rc", "pb", 2, RoomMode::Auto, t0);
        assert_eq!(t, Topology::Mesh, "two stay peer-to-peer");
        let (_, t, out) = b.room_join("r1", "rc", "pc", 3, RoomMode::Auto, t0);
        assert_eq!(t, Topology::Sfu, "the third join moves the room to the SFU");
        // The two already there hear of the topology first, then of the newcomer.
        let got = delivered(&out);
        assert_eq!(
            got,
            vec![
                (1, "room-topology"),
                (2, "room-topology"),
                (1, "room-peer-joined"),
                (2, "room-peer-joined")
            ]
        );
        if let Output::Deliver { event, .. } = &out[0] {
            assert_eq!(event.get("topology"), Some(&json!("sfu")));
            assert_eq!(event.get("callId"), Some(&json!("rc")));
        }
        // Down to two: still on the SFU until the delay has passed.
        let out = b.room_leave("r1", "pc", t0);
        assert!(out.contains(&Output::SfuLeave {
            peer_id: "pc".into()
        }));
        assert_eq!(b.room_topology("r1"), Topology::Sfu);
        assert!(delivered(&b.tick(t0 + Duration::from_secs(4))).is_empty());
        let got = delivered(&b.tick(t0 + Duration::from_secs(5)));
        assert_eq!(got, vec![(1, "room-topology"), (2, "room-topology")]);
        assert_eq!(b.room_topology("r1"), Topology::Mesh);

        // A rise above the threshold during the delay cancels the downgrade.
        let t1 = t0 + Duration::from_secs(10);
        b.room_join("r1", "rc", "pc", 3, RoomMode::Auto, t1);
        b.room_leave("r1", "pc", t1);
        let (_, t, _) = b.room_join(
            "r1",
            "rc",
            "pc",
            3,
            RoomMode::Auto,
            t1 + Duration::from_secs(1),
        );
        assert_eq!(t, Topology::Sfu);
        assert!(delivered(&b.tick(t1 + Duration::from_secs(30))).is_empty());
        assert_eq!(b.room_topology("r1"), Topology::Sfu);
    }

    #[test]
    fn without_an_sfu_every_room_is_mesh() {
        let mut b = board();
        for (s, u) in [(1, "alice"), (2, "bob"), (3, "carol")] {
            b.connect(s, u);
        }
        for (s, p) in [(1, "pa"), (2, "pb"), (3, "pc")] {
            let (_, t, out) = b.room_join("r1", "rc", p, s, RoomMode::Sfu, Instant::now());
            assert_eq!(t, Topology::Mesh);
            assert!(delivered(&out)
                .iter()
                .all(|(_, k)| *k == "room-peer-joined"));
        }
    }
}

#[cfg(test)]
// Tests start from an arbitrary instant and advance time by hand.
#[allow(clippy::disallowed_methods)]
mod cluster_tests {
    //! Two switchboards standing for two nodes, their relays carried by hand.
    use super::*;

    const RING: Duration = Duration::from_secs(45);
    const GRACE: Duration = Duration::from_secs(20);

    fn node(name: &str) -> Switchboard {
        let mut b = Switchboard::new(RING, GRACE);
        b.set_node(name);
        b
    }

    fn delivered(out: &[Output]) -> Vec<(SessionId, &'static str)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Deliver { to, event } => Some((*to, event.kind)),
                _ => None,
            })
            .collect()
    }

    /// The relays in `out`, as (users, message).
    fn relays(out: &[Output]) -> Vec<(Vec<String>, Remote)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Relay { users, remote } => Some((users.clone(), remote.clone())),
                _ => None,
            })
            .collect()
    }

    /// Carries every relay in `out` from `from` to `to`; what `to` delivered.
    fn carry(out: &[Output], from: &str, to: &mut Switchboard, now: Instant) -> Vec<Output> {
        let mut got = Vec::new();
        for (_, remote) in relays(out) {
            let applied = to.apply_remote(from, remote, now);
            assert!(relays(&applied).is_empty(), "applying never relays again");
            got.extend(applied);
        }
        got
    }

    fn invite() -> Event {
        Event::new("call-initiate", json!({ "callId": "c1", "from": "alice" }))
    }

    fn candidate() -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        m.insert("candidate".into(), json!({ "candidate": "candidate:1" }));
        m
    }

    /// alice (session 1) on a; bob on b (session 7) and on a (session 2).
    fn ringing(now: Instant) -> (Switchboard, Switchboard) {
        let (mut a, mut b) = (node("a"), node("b"));
        a.connect(1, "alice");
        a.connect(2, "bob");
        b.connect(7, "bob");
        let out = a.ring("c1", "alice", "bob", Some(1), invite(), now);
        assert_eq!(delivered(&out), vec![(2, "call-initiate")]);
        assert_eq!(relays(&out)[0].0, vec!["bob".to_string()]);
        let got = carry(&out, "a", &mut b, now);
        assert_eq!(delivered(&got), vec![(7, "call-initiate")]);
        (a, b)
    }

    /// Accepted on b (session 7), carried to a.
    fn accepted(now: Instant) -> (Switchboard, Switchboard) {
        let (mut a, mut b) = ringing(now);
        let out = b.accepted("c1", Some(7));
        assert!(
            delivered(&out).is_empty(),
            "nobody else of the call is on b"
        );
        let got = carry(&out, "b", &mut a, now);
        assert_eq!(
            delivered(&got),
            vec![(1, "call-accept"), (2, "call-accepted-elsewhere")]
        );
        (a, b)
    }

    #[test]
    fn one_node_relays_nothing() {
        let mut b = Switchboard::new(RING, GRACE);
        b.connect(1, "alice");
        let out = b.ring("c1", "alice", "bob", Some(1), invite(), Instant::now());
        assert!(relays(&out).is_empty());
    }

    #[test]
    fn signaling_crosses_to_the_accepting_device_only() {
        let now = Instant::now();
        let (mut a, mut b) = accepted(now);
        // alice's candidate: nothing local on a (bob's side speaks from b), b delivers to 7.
        let out = a
            .forward("c1", 1, "alice", None, "ice-candidate", candidate())
            .expect("forward");
        assert!(delivered(&out).is_empty(), "{out:?}");
        let (users, _) = &relays(&out)[0];
        assert_eq!(users, &vec!["bob".to_string(), "alice".to_string()]);
        assert_eq!(
            delivered(&carry(&out, "a", &mut b, now)),
            vec![(7, "ice-candidate")]
        );
        // bob's answer goes back to alice's bound session.
        let out = b
            .forward("c1", 7, "bob", None, "call-answer", candidate())
            .expect("forward");
        assert!(delivered(&out).is_empty());
        assert_eq!(
            delivered(&carry(&out, "b", &mut a, now)),
            vec![(1, "call-answer")]
        );
    }

    #[test]
    fn the_end_reaches_every_session_on_every_node() {
        let now = Instant::now();
        let (mut a, mut b) = accepted(now);
        let parts = vec!["alice".to_string(), "bob".to_string()];
        let notice = Event::new("call-hangup", json!({ "callId": "c1", "from": "alice" }));
        let out = a.ended("c1", &parts, "hangup", Some(("alice", notice)));
        assert_eq!(delivered(&out), vec![(1, "call-ended"), (2, "call-ended")]);
        assert_eq!(
            delivered(&carry(&out, "a", &mut b, now)),
            vec![(7, "call-hangup"), (7, "call-ended")]
        );
        assert!(a.call("c1").is_none() && b.call("c1").is_none());
    }

    #[test]
    fn a_lost_node_ends_active_calls_after_the_grace_unless_it_comes_back() {
        let now = Instant::now();
        let (mut a, _) = accepted(now);
        let only_a: HashSet<String> = ["a".to_string()].into();
        let both: HashSet<String> = ["a".to_string(), "b".to_string()].into();
        a.nodes_alive(&only_a, now);
        assert!(a.tick(now + GRACE / 2).is_empty());
        // b is back before the grace ran out: nothing ends.
        a.nodes_alive(&both, now + GRACE / 2);
        assert!(a.tick(now + GRACE * 2).is_empty());
        // Lost again, for the whole grace period.
        a.nodes_alive(&only_a, now + GRACE * 2);
        let out = a.tick(now + GRACE * 3);
        assert!(
            out.iter().any(|o| matches!(
                o,
                Output::Expire {
                    action: Action::Disconnect,
                    ..
                }
            )),
            "{out:?}"
        );
    }

    #[test]
    fn a_reconnect_on_another_node_keeps_the_call_past_the_grace() {
        let now = Instant::now();
        let (mut a, mut b) = accepted(now);
        // bob's connection to b drops; he comes back on a (session 3) and speaks.
        assert!(b.disconnect(7, now).is_empty());
        a.connect(3, "bob");
        let out = a
            .forward("c1", 3, "bob", None, "ice-candidate", candidate())
            .expect("forward");
        assert_eq!(delivered(&out), vec![(1, "ice-candidate")]);
        // b learns that bob's side speaks from a: its grace for session 7 ends nothing.
        let got = carry(&out, "a", &mut b, now);
        assert!(delivered(&got).is_empty());
        let out = b.tick(now + GRACE * 2);
        assert!(
            !out.iter().any(|o| matches!(o, Output::Expire { .. })),
            "{out:?}"
        );
        assert_eq!(
            b.call("c1").map(|c| c.remote_sides()),
            Some((Some("a"), Some("a")))
        );
    }

    #[test]
    fn foreign_event_names_from_the_bus_are_not_delivered() {
        let now = Instant::now();
        let (_, mut b) = ringing(now);
        let out = b.apply_remote(
            "a",
            Remote::Notify {
                user: "bob".into(),
                event: WireEvent {
                    kind: "shutdown".into(),
                    body: serde_json::Map::new(),
                },
            },
            now,
        );
        assert!(out.is_empty());
    }
}
