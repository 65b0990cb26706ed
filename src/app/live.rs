//! What is happening now, for the admin console (`GET /api/admin/live`): every ringing or active
//! call and every occupied room, with who takes part, over which connections, along which media
//! path, since when, and what the embedded TURN relay is carrying for them. Everything here is
//! read from what the server really holds: call rows in the store, the switchboard's routing
//! (sessions, bound call sides, room peers and topology), the connection registry, and the
//! relay's live allocations, which the transport passes in (the application layer does not own
//! the relay).

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use utoipa::ToSchema;

use crate::app::Signaling;
use crate::clock::{now_ms, rfc3339};
use crate::error::Error;
use crate::signaling::call::{CallStatus, CallType, Role};
use crate::signaling::switchboard::{LiveRoomAt, SessionId};
use crate::signaling::topology::RoomMode;
use crate::store::calls::{self as call_store, CallKind, CallRecord, LiveCalls};
use crate::store::rooms;

/// Calls listed at most (the view is for people, not for export).
pub const MAX_LIVE_CALLS: u32 = 500;

/// An open signaling connection as registered when it opened.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The display name the connection's token carried.
    pub name: Option<String>,
    /// `rtc` or `socketio`.
    pub transport: &'static str,
    /// Epoch milliseconds.
    pub connected_at: i64,
}

/// One allocation of the embedded TURN relay, alive now.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RelayAllocation {
    /// The user id in the TURN REST username.
    pub user_id: String,
    /// `udp`, `tcp` or `tls`: how the client reaches the relay.
    pub transport: String,
    pub client_address: String,
    pub relay_address: String,
    #[schema(format = DateTime)]
    pub opened_at: String,
    /// Payload bytes relayed client → peer so far.
    pub bytes_to_peer: u64,
    /// Payload bytes relayed peer → client so far.
    pub bytes_from_peer: u64,
    pub packets_to_peer: u64,
    pub packets_from_peer: u64,
}

/// The relay's totals and its live allocations.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RelayLive {
    /// Allocations alive now.
    pub allocations: u64,
    /// Allocations created since the server started.
    pub allocations_created: u64,
    /// Payload bytes relayed since the server started.
    pub bytes_to_peer: u64,
    pub bytes_from_peer: u64,
    pub packets_to_peer: u64,
    pub packets_from_peer: u64,
    /// Every live allocation with what it relayed so far.
    pub sessions: Vec<RelayAllocation>,
}

/// One signaling connection of a participant.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionView {
    pub session_id: String,
    /// `rtc` (the native WebSocket) or `socketio`.
    pub transport: String,
    #[schema(format = DateTime)]
    pub connected_at: String,
    /// This connection speaks for the participant's side of the call (1:1 calls: the device
    /// that placed or answered it; rooms: the connection that joined).
    pub in_call: bool,
}

/// What the relay carries for one participant now: the allocations their TURN credentials
/// opened that are alive (a browser in a call keeps one per ICE transport it relays on).
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParticipantRelay {
    pub allocations: u64,
    pub bytes_to_peer: u64,
    pub bytes_from_peer: u64,
}

/// A participant of a live call or room.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LiveParticipant {
    pub user_id: String,
    /// From the built-in account, else from the token of one of their connections.
    #[schema(required = true)]
    pub display_name: Option<String>,
    pub role: Role,
    /// Rooms: the peer id the others address them by.
    #[schema(required = true)]
    pub peer_id: Option<String>,
    /// When they joined (callees: when they accepted); null while ringing.
    #[schema(format = DateTime, required = true)]
    pub joined_at: Option<String>,
    pub audio: bool,
    pub video: bool,
    pub screen: bool,
    /// They have at least one open signaling connection.
    pub connected: bool,
    pub sessions: Vec<SessionView>,
    pub relay: ParticipantRelay,
}

/// Media path of a live call: `p2p` (1:1), `mesh` (a room, everyone to everyone) or `sfu` (a
/// room through the server).
#[derive(Debug, Clone, Copy, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LiveTopology {
    P2p,
    Mesh,
    Sfu,
}

/// A ringing or active 1:1 call.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LiveCall {
    #[schema(format = Uuid)]
    pub id: String,
    pub call_type: CallType,
    /// `ringing` or `active`.
    pub status: CallStatus,
    pub topology: LiveTopology,
    pub caller_id: String,
    #[schema(required = true)]
    pub callee_id: Option<String>,
    #[schema(required = true)]
    pub room_name: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When it was answered: the start of the conversation; null while ringing.
    #[schema(format = DateTime, required = true)]
    pub answered_at: Option<String>,
    /// Whole seconds since it was answered; null while ringing.
    #[schema(required = true, minimum = 0)]
    pub duration: Option<i64>,
    pub participants: Vec<LiveParticipant>,
}

/// An occupied room and its live group call.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LiveRoom {
    #[schema(format = Uuid)]
    pub id: String,
    pub name: String,
    pub owner_id: String,
    pub mode: RoomMode,
    pub max_participants: u32,
    #[schema(format = Uuid)]
    pub call_id: String,
    pub call_type: CallType,
    /// `mesh` or `sfu`: the topology in force now (`mesh` while nobody is connected).
    pub topology: LiveTopology,
    /// When the room call started (its first join).
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime, required = true)]
    pub answered_at: Option<String>,
    #[schema(required = true, minimum = 0)]
    pub duration: Option<i64>,
    pub participants: Vec<LiveParticipant>,
}

/// `GET /api/admin/live`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LiveView {
    /// When this view was taken.
    #[schema(format = DateTime)]
    pub now: String,
    /// Open signaling connections (`/rtc` and Socket.IO).
    pub connections: u64,
    pub calls: Vec<LiveCall>,
    pub rooms: Vec<LiveRoom>,
    /// Null when the embedded relay is off (`no_turn`).
    #[schema(required = true)]
    pub relay: Option<RelayLive>,
}

/// The switchboard's side of the view, copied under its lock.
struct Routing {
    /// user → connected sessions
    sessions: HashMap<String, Vec<SessionId>>,
    /// call id → (caller side, callee side)
    sides: HashMap<String, (Option<SessionId>, Option<SessionId>)>,
    rooms: HashMap<String, LiveRoomAt>,
}

/// Everything a participant row is built from.
struct Context<'a> {
    routing: &'a Routing,
    connections: &'a HashMap<SessionId, Connection>,
    names: &'a HashMap<String, String>,
    relay: &'a [RelayAllocation],
}

impl Context<'_> {
    fn participant(
        &self,
        p: &call_store::Participant,
        peer_id: Option<String>,
        speaking: &[SessionId],
    ) -> LiveParticipant {
        let ids = self
            .routing
            .sessions
            .get(&p.user_id)
            .cloned()
            .unwrap_or_default();
        let sessions: Vec<SessionView> = ids
            .iter()
            .filter_map(|id| {
                let c = self.connections.get(id)?;
                Some(SessionView {
                    session_id: id.to_string(),
                    transport: c.transport.to_string(),
                    connected_at: rfc3339(c.connected_at),
                    in_call: speaking.contains(id),
                })
            })
            .collect();
        let token_name = ids
            .iter()
            .find_map(|id| self.connections.get(id).and_then(|c| c.name.clone()));
        let mut relay = ParticipantRelay::default();
        for a in self.relay.iter().filter(|a| a.user_id == p.user_id) {
            relay.allocations += 1;
            relay.bytes_to_peer += a.bytes_to_peer;
            relay.bytes_from_peer += a.bytes_from_peer;
        }
        LiveParticipant {
            user_id: p.user_id.clone(),
            display_name: self.names.get(&p.user_id).cloned().or(token_name),
            role: p.role,
            peer_id,
            joined_at: p.joined_at.map(rfc3339),
            audio: p.audio,
            video: p.video,
            screen: p.screen,
            connected: !sessions.is_empty(),
            sessions,
            relay,
        }
    }
}

fn topology_of(t: crate::signaling::topology::Topology) -> LiveTopology {
    match t {
        crate::signaling::topology::Topology::Mesh => LiveTopology::Mesh,
        crate::signaling::topology::Topology::Sfu => LiveTopology::Sfu,
    }
}

fn direct_call(call: &CallRecord, ctx: &Context<'_>, now: i64) -> LiveCall {
    let (caller_side, callee_side) = ctx.routing.sides.get(&call.id).copied().unwrap_or_default();
    let participants = call
        .participants
        .iter()
        .filter(|p| p.left_at.is_none())
        .map(|p| {
            let side = match p.role {
                Role::Caller => caller_side,
                _ => callee_side,
            };
            ctx.participant(p, None, &side.into_iter().collect::<Vec<_>>())
        })
        .collect();
    LiveCall {
        id: call.id.clone(),
        call_type: call.call_type,
        status: call.status,
        topology: LiveTopology::P2p,
        caller_id: call.caller_id.clone(),
        callee_id: call.callee_id.clone(),
        room_name: call.room_name.clone(),
        created_at: rfc3339(call.created_at),
        answered_at: call.answered_at.map(rfc3339),
        duration: call.duration_secs(now),
        participants,
    }
}

fn room_call(call: &CallRecord, room: &rooms::Room, ctx: &Context<'_>, now: i64) -> LiveRoom {
    let live = ctx.routing.rooms.get(&room.id);
    let participants = room
        .peers
        .iter()
        .filter_map(|peer| {
            let p = call
                .participants
                .iter()
                .find(|p| p.user_id == peer.user_id)?;
            let speaking: Vec<SessionId> = live
                .map(|r| {
                    r.peers
                        .iter()
                        .filter(|(id, _, _)| *id == peer.peer_id)
                        .map(|(_, s, _)| *s)
                        .collect()
                })
                .unwrap_or_default();
            Some(ctx.participant(p, Some(peer.peer_id.clone()), &speaking))
        })
        .collect();
    LiveRoom {
        id: room.id.clone(),
        name: room.name.clone(),
        owner_id: room.owner_id.clone(),
        mode: room.mode,
        max_participants: room.max_participants,
        call_id: call.id.clone(),
        call_type: call.call_type,
        topology: live
            .map(|r| topology_of(r.topology))
            .unwrap_or(LiveTopology::Mesh),
        created_at: rfc3339(call.created_at),
        answered_at: call.answered_at.map(rfc3339),
        duration: call.duration_secs(now),
        participants,
    }
}

impl Signaling {
    /// The live view; `relay` is the relay's state when it runs.
    pub async fn live(self: &Arc<Self>, relay: Option<RelayLive>) -> Result<LiveView, Error> {
        let LiveCalls {
            calls,
            rooms,
            names,
        } = self.store.live_calls(MAX_LIVE_CALLS).await?;
        let routing = {
            let board = self.board();
            let mut sessions = HashMap::new();
            let mut sides = HashMap::new();
            for call in &calls {
                for p in &call.participants {
                    sessions
                        .entry(p.user_id.clone())
                        .or_insert_with(|| board.sessions_of(&p.user_id));
                }
                if let Some(live) = board.call(&call.id) {
                    sides.insert(call.id.clone(), live.sides());
                }
            }
            let rooms = board
                .live_rooms()
                .into_iter()
                .map(|r| (r.room_id.clone(), r))
                .collect();
            Routing {
                sessions,
                sides,
                rooms,
            }
        };
        let connections = self.connections_lock().clone();
        let ctx = Context {
            routing: &routing,
            connections: &connections,
            names: &names,
            relay: relay.as_ref().map(|r| r.sessions.as_slice()).unwrap_or(&[]),
        };
        let now = now_ms();
        let mut direct = Vec::new();
        let mut group = Vec::new();
        for call in &calls {
            match (call.kind, rooms.get(&call.id)) {
                (CallKind::Room, Some(room)) => group.push(room_call(call, room, &ctx, now)),
                (CallKind::Room, None) => {}
                (CallKind::Direct, _) => direct.push(direct_call(call, &ctx, now)),
            }
        }
        Ok(LiveView {
            now: rfc3339(now),
            connections: u64::try_from(connections.len()).unwrap_or(u64::MAX),
            calls: direct,
            rooms: group,
            relay,
        })
    }
}
