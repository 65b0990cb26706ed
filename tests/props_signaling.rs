//! Property tests of the sans-IO call core: random sequences of connect, disconnect, ring,
//! accept (from several devices of the callee at once, and over REST), reject, forward, hang up,
//! room join/leave/forward and ticks with time passed in, run through the [`Switchboard`] and
//! [`transition`] the way the signaling service does (the call status lives in a small model
//! of the database). Checked after every step: nothing panics; a call has one winner (one
//! accept succeeds, `call-accepted-elsewhere` goes to exactly the callee's other devices);
//! nothing reaches a session that is dropped, or whose user is not a participant of the 1:1
//! call or not in the room; forwarded messages are stamped with their sender; routing follows
//! the session that last spoke for a side; rings and dropped sessions end on time.
#![allow(clippy::disallowed_methods)] // a test is an edge: it reads the clock once, then passes time in

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use signalbox::signaling::call::{transition, Action, Actor, CallStatus, Role};
use signalbox::signaling::event::Event;
use signalbox::signaling::switchboard::{Output, SessionId, Switchboard};
use signalbox::signaling::topology::RoomMode;

const RING_SECS: u64 = 45;
const GRACE_SECS: u64 = 20;
const USERS: [&str; 3] = ["alice", "bob", "carol"];
const ROOMS: [&str; 2] = ["r0", "r1"];
const KINDS: [&str; 4] = [
    "call-answer",
    "ice-candidate",
    "call-sdp-update",
    "media-state",
];

#[derive(Debug, Clone)]
enum Op {
    Connect {
        user: usize,
    },
    /// Drops the n-th connected session (modulo their number).
    Disconnect {
        s: usize,
    },
    Ring {
        s: usize,
        callee: usize,
    },
    /// The n-th session accepts the n-th call (the callee's devices race; others are refused).
    Accept {
        s: usize,
        call: usize,
    },
    /// The callee accepts over REST (no session).
    AcceptRest {
        call: usize,
    },
    Reject {
        s: usize,
        call: usize,
    },
    Hangup {
        s: usize,
        call: usize,
    },
    /// `to`: 0 none, 1 the other side, 2 someone else.
    Forward {
        s: usize,
        call: usize,
        kind: usize,
        to: u8,
    },
    RoomJoin {
        s: usize,
        room: usize,
    },
    RoomLeave {
        s: usize,
        room: usize,
    },
    RoomForward {
        s: usize,
        room: usize,
        to: usize,
    },
    Tick(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let s = 0..8usize;
    let call = 0..6usize;
    prop_oneof![
        3 => (0..USERS.len()).prop_map(|user| Op::Connect { user }),
        2 => s.clone().prop_map(|s| Op::Disconnect { s }),
        3 => (s.clone(), 0..USERS.len()).prop_map(|(s, callee)| Op::Ring { s, callee }),
        4 => (s.clone(), call.clone()).prop_map(|(s, call)| Op::Accept { s, call }),
        1 => call.clone().prop_map(|call| Op::AcceptRest { call }),
        1 => (s.clone(), call.clone()).prop_map(|(s, call)| Op::Reject { s, call }),
        1 => (s.clone(), call.clone()).prop_map(|(s, call)| Op::Hangup { s, call }),
        4 => (s.clone(), call, 0..KINDS.len(), 0..3u8)
            .prop_map(|(s, call, kind, to)| Op::Forward { s, call, kind, to }),
        2 => (s.clone(), 0..ROOMS.len()).prop_map(|(s, room)| Op::RoomJoin { s, room }),
        1 => (s.clone(), 0..ROOMS.len()).prop_map(|(s, room)| Op::RoomLeave { s, room }),
        2 => (s, 0..ROOMS.len(), 0..USERS.len())
            .prop_map(|(s, room, to)| Op::RoomForward { s, room, to }),
        3 => prop_oneof![0..3u64, 15..25u64, 40..50u64].prop_map(Op::Tick),
    ]
}

/// A 1:1 call as the database and the documented routing rules see it.
#[derive(Debug, Clone)]
struct ModelCall {
    id: String,
    caller: String,
    callee: String,
    status: CallStatus,
    rang_at: u64,
    /// The session speaking for each side, if any (caller, callee).
    caller_bound: Option<SessionId>,
    callee_bound: Option<SessionId>,
    accepts: usize,
}

#[derive(Debug, Clone)]
struct ModelSession {
    user: String,
    dropped_at: Option<u64>,
}

struct World {
    board: Switchboard,
    start: Instant,
    t: u64,
    next_session: SessionId,
    sessions: BTreeMap<SessionId, ModelSession>,
    calls: Vec<ModelCall>,
    /// room → user → the session bound to the user's peer
    rooms: BTreeMap<String, BTreeMap<String, SessionId>>,
}

fn body(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn peer_id(room: &str, user: &str) -> String {
    format!("{room}-{user}")
}

fn room_call(room: &str) -> String {
    format!("call-{room}")
}

fn deliveries(out: &[Output]) -> Vec<(SessionId, &'static str, &Event)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Deliver { to, event } => Some((*to, event.kind, event.as_ref())),
            _ => None,
        })
        .collect()
}

fn str_field<'a>(e: &'a Event, key: &str) -> Option<&'a str> {
    e.get(key).and_then(Value::as_str)
}

impl World {
    fn new() -> Self {
        World {
            board: Switchboard::new(
                Duration::from_secs(RING_SECS),
                Duration::from_secs(GRACE_SECS),
            ),
            start: Instant::now(),
            t: 0,
            next_session: 1,
            sessions: BTreeMap::new(),
            calls: Vec::new(),
            rooms: BTreeMap::new(),
        }
    }

    fn now(&self) -> Instant {
        self.start + Duration::from_secs(self.t)
    }

    fn connected(&self) -> Vec<SessionId> {
        self.sessions
            .iter()
            .filter(|(_, s)| s.dropped_at.is_none())
            .map(|(id, _)| *id)
            .collect()
    }

    fn connected_of(&self, user: &str) -> BTreeSet<SessionId> {
        self.sessions
            .iter()
            .filter(|(_, s)| s.dropped_at.is_none() && s.user == user)
            .map(|(id, _)| *id)
            .collect()
    }

    fn is_connected(&self, s: SessionId) -> bool {
        self.sessions
            .get(&s)
            .is_some_and(|x| x.dropped_at.is_none())
    }

    /// The n-th connected session and its user.
    fn pick(&self, n: usize) -> Option<(SessionId, String)> {
        let c = self.connected();
        let s = *c.get(n % c.len().max(1))?;
        Some((s, self.sessions[&s].user.clone()))
    }

    /// Where a message to `user`'s side of `call` must go: the bound session while it is
    /// connected, else every connected session of the user.
    fn side(&self, call: &ModelCall, user: &str) -> BTreeSet<SessionId> {
        let bound = if user == call.caller {
            call.caller_bound
        } else {
            call.callee_bound
        };
        match bound {
            Some(s) if self.is_connected(s) => BTreeSet::from([s]),
            _ => self.connected_of(user),
        }
    }

    fn live_call(&self, n: usize) -> Option<usize> {
        if self.calls.is_empty() {
            return None;
        }
        // Prefer recent calls so that most operations hit something live.
        let i = self.calls.len() - 1 - (n % self.calls.len().min(3));
        Some(i)
    }

    fn role(call: &ModelCall, user: &str) -> Option<Role> {
        if user == call.caller {
            Some(Role::Caller)
        } else if user == call.callee {
            Some(Role::Callee)
        } else {
            None
        }
    }

    /// Carries out switchboard outputs as the service does: deliveries are checked by the
    /// caller; expiries go through `transition` and end the call.
    fn run_outputs(&mut self, out: Vec<Output>) -> Vec<Output> {
        let mut all = Vec::new();
        for o in out {
            if let Output::Expire { call_id, action } = &o {
                let i = self.calls.iter().position(|c| &c.id == call_id);
                let then = match i
                    .map(|i| (i, transition(self.calls[i].status, Actor::System, *action)))
                {
                    Some((i, Ok(t))) => {
                        self.calls[i].status = t.to;
                        let c = &self.calls[i];
                        let reason = t.reason.map(|r| r.as_str()).unwrap_or("hangup");
                        self.board
                            .ended(&c.id, &[c.caller.clone(), c.callee.clone()], reason, None)
                    }
                    _ => self.board.ended(call_id, &[], "", None),
                };
                all.extend(self.run_outputs(then));
            }
            all.push(o);
        }
        all
    }

    fn apply(&mut self, op: &Op) -> Vec<Output> {
        match *op {
            Op::Connect { user } => {
                let s = self.next_session;
                self.next_session += 1;
                self.board.connect(s, USERS[user]);
                self.sessions.insert(
                    s,
                    ModelSession {
                        user: USERS[user].into(),
                        dropped_at: None,
                    },
                );
                Vec::new()
            }
            Op::Disconnect { s } => {
                let Some((s, user)) = self.pick(s) else {
                    return Vec::new();
                };
                let t = self.t;
                if let Some(x) = self.sessions.get_mut(&s) {
                    x.dropped_at = Some(t);
                }
                let out = self.board.disconnect(s, self.now());
                // Its rooms are left at once: the peers it speaks for leave.
                let mut left = Vec::new();
                for (room, members) in &mut self.rooms {
                    if members.get(&user) == Some(&s) {
                        members.remove(&user);
                        left.push(room.clone());
                    }
                }
                for o in &out {
                    if let Output::RoomLeft { room_id, user: u } = o {
                        assert_eq!(u, &user, "RoomLeft names the dropped session's user");
                        assert!(
                            left.contains(room_id),
                            "{user} left {room_id} although another session speaks for them"
                        );
                    }
                }
                for (to, kind, e) in deliveries(&out) {
                    assert_eq!(kind, "room-peer-left", "a drop only announces room leaves");
                    let room = str_field(e, "roomId").unwrap_or_default();
                    assert!(left.iter().any(|r| r == room));
                    assert_eq!(str_field(e, "userId"), Some(user.as_str()));
                    assert!(to != s);
                }
                self.run_outputs(out)
            }
            Op::Ring { s, callee } => {
                let Some((s, caller)) = self.pick(s) else {
                    return Vec::new();
                };
                let callee = USERS[callee].to_string();
                if callee == caller || self.board.ringing_from(&callee, &caller).is_some() {
                    return Vec::new(); // refused by the service (self-call, glare)
                }
                let id = format!("c{}", self.calls.len());
                let mut call = ModelCall {
                    id: id.clone(),
                    caller: caller.clone(),
                    callee: callee.clone(),
                    status: CallStatus::Ringing,
                    rang_at: self.t,
                    caller_bound: Some(s),
                    callee_bound: None,
                    accepts: 0,
                };
                if !self.board.reachable(&callee) {
                    let t = transition(call.status, Actor::System, Action::Unavailable)
                        .expect("an unreachable callee makes the call missed");
                    call.status = t.to;
                    self.calls.push(call);
                    return self
                        .board
                        .ended(&id, &[caller, callee], "unavailable", None);
                }
                let invite = Event::new("call-initiate", json!({"callId": id, "from": caller}));
                let out = self
                    .board
                    .ring(&id, &caller, &callee, Some(s), invite, self.now());
                let got: BTreeSet<SessionId> = deliveries(&out).iter().map(|d| d.0).collect();
                assert_eq!(
                    got,
                    self.connected_of(&callee),
                    "the invite rings every device"
                );
                self.calls.push(call);
                out
            }
            Op::Accept { s, call } => {
                let Some((s, user)) = self.pick(s) else {
                    return Vec::new();
                };
                self.accept(Some(s), &user, call)
            }
            Op::AcceptRest { call } => {
                let Some(i) = self.live_call(call) else {
                    return Vec::new();
                };
                let callee = self.calls[i].callee.clone();
                self.accept(None, &callee, call)
            }
            Op::Reject { s, call } => self.end(s, call, Action::Reject, "call-reject"),
            Op::Hangup { s, call } => self.end(s, call, Action::Hangup, "call-hangup"),
            Op::Forward { s, call, kind, to } => {
                let (Some((s, user)), Some(i)) = (self.pick(s), self.live_call(call)) else {
                    return Vec::new();
                };
                let c = self.calls[i].clone();
                if self.board.call(&c.id).is_none() {
                    assert!(
                        c.status.is_final(),
                        "a live call is known to the switchboard"
                    );
                    return Vec::new();
                }
                let role = Self::role(&c, &user);
                let other = if role == Some(Role::Caller) {
                    c.callee.clone()
                } else {
                    c.caller.clone()
                };
                let to = match to {
                    0 => None,
                    1 => Some(other.clone()),
                    _ => Some("mallory".to_string()),
                };
                let kind = KINDS[kind];
                let res =
                    self.board
                        .forward(&c.id, s, &user, to.as_deref(), kind, body(json!({"n": 1})));
                match (role, res) {
                    (None, Err(e)) => {
                        assert_eq!(e.code(), "not_found", "outsiders cannot signal");
                        Vec::new()
                    }
                    (Some(_), Err(e)) => {
                        assert_eq!(e.code(), "invalid_field");
                        assert_eq!(to.as_deref(), Some("mallory"));
                        Vec::new()
                    }
                    (Some(r), Ok(out)) => {
                        assert_ne!(to.as_deref(), Some("mallory"), "a wrong `to` is refused");
                        // The sender's session now speaks for its side.
                        if r == Role::Caller {
                            self.calls[i].caller_bound = Some(s);
                        } else if c.status == CallStatus::Active {
                            self.calls[i].callee_bound = Some(s);
                        }
                        let want = self.side(&self.calls[i], &other);
                        let got: BTreeSet<SessionId> =
                            deliveries(&out).iter().map(|d| d.0).collect();
                        assert_eq!(got, want, "{kind} from {user} goes to the other side");
                        for (_, k, e) in deliveries(&out) {
                            assert_eq!(k, kind);
                            assert_eq!(
                                str_field(e, "from"),
                                Some(user.as_str()),
                                "from is stamped"
                            );
                            assert_eq!(str_field(e, "callId"), Some(c.id.as_str()));
                        }
                        out
                    }
                    (None, Ok(out)) => panic!("an outsider's message was forwarded: {out:?}"),
                }
            }
            Op::RoomJoin { s, room } => {
                let Some((s, user)) = self.pick(s) else {
                    return Vec::new();
                };
                let room = ROOMS[room];
                let members = self.rooms.entry(room.to_string()).or_default();
                let rejoin = members.contains_key(&user);
                let others: BTreeSet<SessionId> = members
                    .iter()
                    .filter(|(u, _)| **u != user)
                    .map(|(_, s)| *s)
                    .collect();
                let want_peers: BTreeSet<(String, String)> = members
                    .keys()
                    .filter(|u| **u != user)
                    .map(|u| (peer_id(room, u), u.clone()))
                    .collect();
                members.insert(user.clone(), s);
                let now = self.now();
                let (peers, _, out) = self.board.room_join(
                    room,
                    &room_call(room),
                    &peer_id(room, &user),
                    s,
                    RoomMode::Auto,
                    now,
                );
                assert_eq!(
                    peers.into_iter().collect::<BTreeSet<_>>(),
                    want_peers,
                    "the join lists the peers already there"
                );
                let got: BTreeSet<SessionId> = deliveries(&out).iter().map(|d| d.0).collect();
                if rejoin {
                    assert!(got.is_empty(), "a rejoin announces nothing");
                } else {
                    assert_eq!(got, others, "every other peer hears of the join");
                }
                out
            }
            Op::RoomLeave { s, room } => {
                let Some((_, user)) = self.pick(s) else {
                    return Vec::new();
                };
                let room = ROOMS[room];
                let Some(members) = self.rooms.get_mut(room) else {
                    return Vec::new();
                };
                if members.remove(&user).is_none() {
                    return Vec::new(); // the database refuses a leave by a non-member
                }
                let want: BTreeSet<SessionId> = members.values().copied().collect();
                let now = self.now();
                let out = self.board.room_leave(room, &peer_id(room, &user), now);
                let got: BTreeSet<SessionId> = deliveries(&out).iter().map(|d| d.0).collect();
                assert_eq!(got, want, "the others hear of the leave");
                out
            }
            Op::RoomForward { s, room, to } => {
                let Some((s, user)) = self.pick(s) else {
                    return Vec::new();
                };
                let room = ROOMS[room];
                let target_user = USERS[to];
                let members = self.rooms.get(room).cloned().unwrap_or_default();
                let res = self.board.forward_in_room(
                    &room_call(room),
                    s,
                    Some(&peer_id(room, target_user)),
                    "ice-candidate",
                    body(json!({})),
                );
                let speaks = members.get(&user) == Some(&s);
                match (speaks, members.get(target_user), res) {
                    (true, Some(&target), Ok(out)) => {
                        let got: Vec<SessionId> = deliveries(&out).iter().map(|d| d.0).collect();
                        assert_eq!(got, vec![target], "delivered to the addressed peer only");
                        for (_, _, e) in deliveries(&out) {
                            assert_eq!(str_field(e, "from"), Some(user.as_str()));
                            assert_eq!(
                                str_field(e, "fromPeer"),
                                Some(peer_id(room, &user).as_str())
                            );
                        }
                        out
                    }
                    (true, None, Err(e)) => {
                        assert_eq!(e.code(), "unknown_peer");
                        Vec::new()
                    }
                    (false, _, Err(e)) => {
                        assert_eq!(e.code(), "not_found", "only a member's session speaks");
                        Vec::new()
                    }
                    (speaks, target, res) => panic!(
                        "room forward by {user} on {s} (speaks: {speaks}) \
                         to {target_user} ({target:?}): {res:?}"
                    ),
                }
            }
            Op::Tick(secs) => {
                self.t += secs;
                let now = self.now();
                let out = self.board.tick(now);
                // Model the grace expiry: sessions dropped for the grace period stop speaking
                // for their calls; a ringing caller still connected elsewhere keeps ringing.
                let t = self.t;
                let expired: Vec<(SessionId, String)> = self
                    .sessions
                    .iter()
                    .filter(|(_, s)| s.dropped_at.is_some_and(|d| t - d >= GRACE_SECS))
                    .map(|(id, s)| (*id, s.user.clone()))
                    .collect();
                let mut must_end = BTreeSet::new();
                for (sid, user) in &expired {
                    let elsewhere = !self.connected_of(user).is_empty();
                    for c in &mut self.calls {
                        if c.status.is_final() {
                            continue;
                        }
                        let bound = if *user == c.caller {
                            &mut c.caller_bound
                        } else if *user == c.callee {
                            &mut c.callee_bound
                        } else {
                            continue;
                        };
                        if *bound == Some(*sid) {
                            *bound = None;
                            if c.status == CallStatus::Active || !elsewhere {
                                must_end.insert(c.id.clone());
                            }
                        }
                    }
                    self.sessions.remove(sid);
                }
                let out = self.run_outputs(out);
                for c in &self.calls {
                    if must_end.contains(&c.id) {
                        assert!(c.status.is_final(), "{} outlived its dropped session", c.id);
                    }
                    if c.status == CallStatus::Ringing {
                        assert!(
                            c.rang_at + RING_SECS > t,
                            "{} still rings past the ring timeout",
                            c.id
                        );
                    }
                }
                out
            }
        }
    }

    fn accept(&mut self, session: Option<SessionId>, user: &str, call: usize) -> Vec<Output> {
        let Some(i) = self.live_call(call) else {
            return Vec::new();
        };
        let c = self.calls[i].clone();
        let Some(role) = Self::role(&c, user) else {
            return Vec::new(); // not a participant: the database says not found
        };
        let Ok(t) = transition(c.status, Actor::Participant(role), Action::Accept) else {
            return Vec::new(); // refused: already active, ended, or not the callee
        };
        assert_eq!(role, Role::Callee, "only the callee accepts");
        self.calls[i].status = t.to;
        self.calls[i].accepts += 1;
        assert_eq!(self.calls[i].accepts, 1, "one accept wins");
        if session.is_some() {
            self.calls[i].callee_bound = session;
        }
        self.board.adopt(&c.id, &c.caller, &c.callee, false);
        let out = self.board.accepted(&c.id, session);
        let mut elsewhere = BTreeSet::new();
        let mut accepted = BTreeSet::new();
        for (to, kind, e) in deliveries(&out) {
            assert_eq!(str_field(e, "callId"), Some(c.id.as_str()));
            match kind {
                "call-accept" => {
                    accepted.insert(to);
                }
                "call-accepted-elsewhere" => {
                    elsewhere.insert(to);
                }
                other => panic!("accepting sent {other}"),
            }
        }
        let mut losers = self.connected_of(&c.callee);
        if let Some(s) = session {
            losers.remove(&s);
        }
        assert_eq!(elsewhere, losers, "exactly the other devices stop ringing");
        assert_eq!(
            accepted,
            self.side(&self.calls[i], &c.caller),
            "the caller is told"
        );
        out
    }

    fn end(&mut self, s: usize, call: usize, action: Action, notice: &'static str) -> Vec<Output> {
        let (Some((_, user)), Some(i)) = (self.pick(s), self.live_call(call)) else {
            return Vec::new();
        };
        let c = self.calls[i].clone();
        let Some(role) = Self::role(&c, &user) else {
            return Vec::new();
        };
        let Ok(t) = transition(c.status, Actor::Participant(role), action) else {
            return Vec::new();
        };
        self.calls[i].status = t.to;
        let other = if role == Role::Caller {
            &c.callee
        } else {
            &c.caller
        };
        let want_notice = self.side(&c, other);
        let reason = t.reason.map(|r| r.as_str()).unwrap_or("hangup");
        let event = Event::new(notice, json!({"callId": c.id, "from": user}));
        let out = self.board.ended(
            &c.id,
            &[c.caller.clone(), c.callee.clone()],
            reason,
            Some((&user, event)),
        );
        let got: BTreeSet<SessionId> = deliveries(&out)
            .iter()
            .filter(|d| d.1 == notice)
            .map(|d| d.0)
            .collect();
        assert_eq!(got, want_notice, "{notice} goes to the other side");
        let ended: BTreeSet<SessionId> = deliveries(&out)
            .iter()
            .filter(|d| d.1 == "call-ended")
            .map(|d| d.0)
            .collect();
        let mut everyone = self.connected_of(&c.caller);
        everyone.extend(self.connected_of(&c.callee));
        assert_eq!(ended, everyone, "call-ended reaches every device of both");
        assert!(
            self.board.call(&c.id).is_none(),
            "an ended call is forgotten"
        );
        out
    }

    /// Invariants over every delivery of a step.
    fn check(&self, out: &[Output]) {
        for (to, kind, e) in deliveries(out) {
            assert!(
                self.is_connected(to),
                "{kind} delivered to dropped session {to}"
            );
            let user = self.sessions[&to].user.as_str();
            assert_eq!(self.board.user_of(to), Some(user));
            if let Some(room) = str_field(e, "roomId") {
                assert!(kind.starts_with("room-peer-"), "{kind}");
                let members = self.rooms.get(room).cloned().unwrap_or_default();
                assert_eq!(
                    members.get(user),
                    Some(&to),
                    "{kind} to {user}, not in {room}"
                );
                continue;
            }
            let id = str_field(e, "callId").expect("every event names its call or room");
            if let Some(room) = ROOMS.iter().find(|r| room_call(r) == id) {
                let members = self.rooms.get(*room).cloned().unwrap_or_default();
                assert_eq!(
                    members.get(user),
                    Some(&to),
                    "{kind} to {user}, not in {room}"
                );
                continue;
            }
            let c = self
                .calls
                .iter()
                .find(|c| c.id == id)
                .expect("a known call");
            assert!(
                user == c.caller || user == c.callee,
                "{kind} of {id} delivered to {user}, who is not in the call"
            );
        }
        for u in USERS {
            let mut got = self.board.sessions_of(u);
            got.sort_unstable();
            let want: Vec<SessionId> = self.connected_of(u).into_iter().collect();
            assert_eq!(got, want, "connected sessions of {u}");
        }
    }
}

/// 256 cases per `cargo test` (well under a second); `PROPTEST_CASES=N` for a deeper run.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn calls_have_one_winner_and_reach_only_their_participants(
        ops in prop::collection::vec(op(), 1..100)
    ) {
        let mut w = World::new();
        for op in &ops {
            let out = w.apply(op);
            w.check(&out);
        }
    }
}
