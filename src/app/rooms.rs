//! Room operations of the application layer: create, join, leave and delete, shared by REST, `/rtc`
//! and Socket.IO. There is one leave path: an explicit leave (REST or socket), hanging up a room
//! call, and a dropped connection all go through [`Signaling::leave_room`], which persists the
//! leave, tells the remaining peers, and ends the room call with its last peer.

use std::sync::Arc;

use uuid::Uuid;

use crate::app::{Done, Origin, Signaling};
use crate::auth::Principal;
use crate::clock::{monotonic, now_ms};
use crate::error::Error;
use crate::signaling::topology::{RoomMode, Topology};
use crate::store::calls::CallRecord;
use crate::store::rooms::{Joined, Left, NewRoom, Room};

/// A join: what the store recorded, and (for a socket session) the peers already connected,
/// as (peer id, user id).
pub struct RoomJoin {
    pub joined: Joined,
    pub peers: Vec<(String, String)>,
    /// The topology in force after the join (mesh for a REST join: no live peer).
    pub topology: Topology,
}

/// A room to create (validated by the transport).
#[derive(Debug, Clone)]
pub struct CreateRoom {
    pub name: String,
    pub max_participants: u32,
    pub is_private: bool,
    pub mode: RoomMode,
    pub members: Vec<String>,
}

impl Signaling {
    /// Creates a room owned by `me`.
    pub async fn create_room(
        self: &Arc<Self>,
        me: &Principal,
        new: CreateRoom,
    ) -> Result<Done<Room>, Error> {
        let record = NewRoom {
            id: Uuid::new_v4().to_string(),
            name: new.name,
            owner_id: me.id.clone(),
            max_participants: new.max_participants,
            is_private: new.is_private,
            mode: new.mode,
            members: new.members,
            now: now_ms(),
        };
        let room = self.store.create_room(record).await?;
        Ok(self.done(room, Vec::new()))
    }

    /// Enters a room. A socket session becomes a live peer: the others get `room-peer-joined`.
    pub async fn join_room(
        self: &Arc<Self>,
        origin: Origin,
        me: &Principal,
        room_id: &str,
    ) -> Result<Done<RoomJoin>, Error> {
        let (peer, call) = (Uuid::new_v4().to_string(), Uuid::new_v4().to_string());
        let joined = self
            .store
            .join_room(room_id, me, &peer, &call, now_ms())
            .await?;
        let (peers, topology, out) = match origin.session() {
            Some(session) => self.board().room_join(
                &joined.room.id,
                &joined.call_id,
                &joined.peer_id,
                session,
                joined.room.mode,
                monotonic(),
            ),
            None => (Vec::new(), Topology::Mesh, Vec::new()),
        };
        Ok(self.done(
            RoomJoin {
                joined,
                peers,
                topology,
            },
            out,
        ))
    }

    /// [`Signaling::leave_room`] for a server reason (a dropped socket, media that did not come
    /// back): `user` leaves and everyone who must hear of it is told.
    pub(crate) async fn leave_room_as(
        self: &Arc<Self>,
        user: String,
        room_id: &str,
    ) -> Result<(), Error> {
        let me = Principal {
            id: user,
            name: None,
            admin: false,
        };
        self.leave_room(&me, room_id)
            .await
            .map(|done| done.then.send())
    }

    /// Leaves a room: the remaining peers get `room-peer-left`; the last one out ends the room
    /// call (`call-ended` to its participants).
    pub async fn leave_room(
        self: &Arc<Self>,
        me: &Principal,
        room_id: &str,
    ) -> Result<Done<Left>, Error> {
        let (left, ended) = self.store.leave_room(room_id, me, now_ms()).await?;
        let mut out = self
            .board()
            .room_leave(&left.room.id, &left.peer_id, monotonic());
        if let Some(call) = &ended {
            out.extend(self.ended(call, &me.id, "call-hangup", None, None));
        }
        Ok(self.done(left, out))
    }

    /// An admin ends a room's live call: every peer leaves (`room-peer-left`, their SFU
    /// connections close) and the participants get `call-ended` with reason `admin`; the room
    /// stays for the next join.
    pub async fn end_room_call(
        self: &Arc<Self>,
        me: &Principal,
        room_id: &str,
        call_id: &str,
    ) -> Result<Done<CallRecord>, Error> {
        let (room, call) = self
            .store
            .end_room_call(room_id, call_id, me, now_ms())
            .await?;
        let mut out = Vec::new();
        {
            let mut board = self.board();
            for peer in &room.peers {
                out.extend(board.room_leave(&room.id, &peer.peer_id, monotonic()));
            }
        }
        out.extend(self.ended(&call, &me.id, "call-hangup", None, None));
        Ok(self.done(call, out))
    }

    /// Deletes a room (owner or admin): every peer leaves and its call ends (`room-closed`).
    pub async fn delete_room(
        self: &Arc<Self>,
        me: &Principal,
        room_id: &str,
    ) -> Result<Done<Room>, Error> {
        let (room, ended) = self.store.delete_room(room_id, me, now_ms()).await?;
        let mut out = Vec::new();
        {
            let mut board = self.board();
            for peer in &room.peers {
                out.extend(board.room_leave(&room.id, &peer.peer_id, monotonic()));
            }
        }
        if let Some(call) = &ended {
            out.extend(self.ended(call, &me.id, "call-hangup", None, None));
        }
        Ok(self.done(room, out))
    }
}
