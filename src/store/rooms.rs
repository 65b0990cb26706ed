//! Group rooms: the room itself, its invited members and who is in it now (each with a peer id).
//! A room's live session is a call of kind `room`: created by the first join, ended when the last
//! participant leaves, so group calls show in history and analytics like 1:1 calls. Joins,
//! leaves and the end of a room's session write their webhook events in the same transaction.

use rusqlite::{params, Connection, OptionalExtension};

use crate::auth::Principal;
use crate::error::Error;
use crate::signaling::call::{CallStatus, CallType, EndReason, Role};
use crate::signaling::topology::RoomMode;
use crate::store::calls::{self, CallRecord};
use crate::store::{pg, webhooks, Store};
use crate::webhooks::event as hook;

/// Someone currently in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomPeer {
    pub peer_id: String,
    pub user_id: String,
    pub joined_at: i64,
}

/// A room as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    pub id: String,
    pub name: String,
    pub owner_id: String,
    pub max_participants: u32,
    pub is_private: bool,
    /// Mesh, SFU, or mesh until enough people join.
    pub mode: RoomMode,
    /// The live group call, while anyone is in the room.
    pub call_id: Option<String>,
    pub created_at: i64,
    /// Users named at creation (admitted to a private room).
    pub members: Vec<String>,
    pub peers: Vec<RoomPeer>,
}

impl Room {
    /// Owner, invited members and admins may enter a private room; anyone a public one.
    pub fn admits(&self, p: &Principal) -> bool {
        !self.is_private || p.admin || self.owner_id == p.id || self.members.contains(&p.id)
    }

    pub fn peer_of(&self, user_id: &str) -> Option<&RoomPeer> {
        self.peers.iter().find(|peer| peer.user_id == user_id)
    }
}

/// A room to create.
#[derive(Debug, Clone)]
pub struct NewRoom {
    pub id: String,
    pub name: String,
    pub owner_id: String,
    pub max_participants: u32,
    pub is_private: bool,
    pub mode: RoomMode,
    pub members: Vec<String>,
    pub now: i64,
}

/// Loads a room with members and peers.
pub(super) fn get(conn: &Connection, id: &str) -> Result<Option<Room>, Error> {
    let room = conn
        .query_row(
            "SELECT id, name, owner_id, max_participants, is_private, call_id, created_at, mode
             FROM rooms WHERE id = ?1",
            [id],
            |r| {
                Ok(Room {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    owner_id: r.get(2)?,
                    max_participants: r.get(3)?,
                    is_private: r.get(4)?,
                    call_id: r.get(5)?,
                    created_at: r.get(6)?,
                    // Written only from a RoomMode; anything else reads as the default.
                    mode: RoomMode::parse(&r.get::<_, String>(7)?, "mode").unwrap_or_default(),
                    members: Vec::new(),
                    peers: Vec::new(),
                })
            },
        )
        .optional()?;
    let Some(mut room) = room else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT user_id FROM room_members WHERE room_id = ?1 AND invited = 1 ORDER BY user_id",
    )?;
    room.members = stmt
        .query_map([id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare_cached(
        "SELECT peer_id, user_id, joined_at FROM room_members
         WHERE room_id = ?1 AND peer_id IS NOT NULL ORDER BY joined_at, user_id",
    )?;
    room.peers = stmt
        .query_map([id], |r| {
            Ok(RoomPeer {
                peer_id: r.get(0)?,
                user_id: r.get(1)?,
                joined_at: r.get(2)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(Some(room))
}

/// Loads a room `p` may see: unknown rooms are `NotFound`, private rooms of others `Forbidden`.
pub(super) fn get_visible(conn: &Connection, id: &str, p: &Principal) -> Result<Room, Error> {
    let room = get(conn, id)?.ok_or(Error::NotFound("room"))?;
    if !room.admits(p) {
        return Err(Error::forbidden("this room is private"));
    }
    Ok(room)
}

pub(super) fn create(conn: &mut Connection, new: &NewRoom) -> Result<Room, Error> {
    let tx = super::begin_write(conn)?;
    tx.execute(
        "INSERT INTO rooms (id, name, owner_id, max_participants, is_private, created_at, mode)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            new.id,
            new.name,
            new.owner_id,
            new.max_participants,
            new.is_private,
            new.now,
            new.mode.as_str()
        ],
    )?;
    for member in &new.members {
        tx.execute(
            "INSERT INTO room_members (room_id, user_id, invited) VALUES (?1, ?2, 1)
             ON CONFLICT(room_id, user_id) DO NOTHING",
            params![new.id, member],
        )?;
    }
    let room = get(&tx, &new.id)?.ok_or(Error::NotFound("room"))?;
    tx.commit()?;
    Ok(room)
}

/// The result of a join.
#[derive(Debug, Clone)]
pub struct Joined {
    pub room: Room,
    pub peer_id: String,
    pub call_id: String,
    /// False when the user was already in the room (the join was a no-op).
    pub newly_joined: bool,
}

/// Joining `room`, decided before anything is written (the same rules for both backends):
/// `Ok(joined)` when `p` is in it already (its peer id and the room's call), `Err(room)` handed
/// back to go on with, and the outer error when the room is full.
pub(crate) fn join_step(room: Room, p: &Principal) -> Result<Result<Joined, Room>, Error> {
    if let (Some(peer), Some(call_id)) = (room.peer_of(&p.id), room.call_id.clone()) {
        let peer_id = peer.peer_id.clone();
        return Ok(Ok(Joined {
            room,
            peer_id,
            call_id,
            newly_joined: false,
        }));
    }
    if room.peers.len() >= room.max_participants as usize {
        return Err(Error::conflict(
            "room_full",
            format!(
                "the room is full ({} of {})",
                room.peers.len(),
                room.max_participants
            ),
        ));
    }
    Ok(Err(room))
}

/// Enters a room: admits, checks capacity, assigns a peer id, joins (or starts) the room call.
pub(super) fn join(
    conn: &mut Connection,
    id: &str,
    p: &Principal,
    new_peer_id: &str,
    new_call_id: &str,
    now: i64,
) -> Result<Joined, Error> {
    let tx = super::begin_write(conn)?;
    let room = get_visible(&tx, id, p)?;
    let room = match join_step(room, p)? {
        Ok(already) => return Ok(already),
        Err(room) => room,
    };
    tx.execute(
        "INSERT INTO room_members (room_id, user_id, invited, peer_id, joined_at)
         VALUES (?1, ?2, 0, ?3, ?4)
         ON CONFLICT(room_id, user_id) DO UPDATE SET peer_id = excluded.peer_id, joined_at = excluded.joined_at",
        params![id, p.id, new_peer_id, now],
    )?;
    let live_call = match &room.call_id {
        Some(call_id) => calls::get(&tx, call_id)?.filter(|c| c.status == CallStatus::Active),
        None => None,
    };
    let call_id = match live_call {
        Some(call) => call.id,
        None => {
            tx.execute(
                "INSERT INTO calls (id, kind, call_type, caller_id, room_id, room_name, status, created_at, answered_at)
                 VALUES (?1, 'room', ?2, ?3, ?4, ?5, 'active', ?6, ?6)",
                params![new_call_id, CallType::Video.as_str(), p.id, id, room.name, now],
            )?;
            tx.execute(
                "UPDATE rooms SET call_id = ?2 WHERE id = ?1",
                params![id, new_call_id],
            )?;
            calls::add_event(&tx, new_call_id, now, Some(&p.id), "created", None)?;
            new_call_id.to_string()
        }
    };
    tx.execute(
        "INSERT INTO call_participants (call_id, user_id, role, joined_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(call_id, user_id) DO UPDATE SET joined_at = excluded.joined_at, left_at = NULL",
        params![call_id, p.id, Role::Member.as_str(), now],
    )?;
    let data = serde_json::json!({ "peerId": new_peer_id });
    calls::add_event(&tx, &call_id, now, Some(&p.id), "joined", Some(&data))?;
    let room = get(&tx, id)?.ok_or(Error::NotFound("room"))?;
    let joined = hook::participant_joined(&room, &p.id, new_peer_id, &call_id, room.peers.len());
    webhooks::emit(&tx, &joined, now)?;
    tx.commit()?;
    Ok(Joined {
        room,
        peer_id: new_peer_id.to_string(),
        call_id,
        newly_joined: true,
    })
}

/// What leaving changed.
#[derive(Debug, Clone)]
pub struct Left {
    pub room: Room,
    pub peer_id: String,
    /// The room call, and whether this leave ended it (last one out).
    pub call_id: Option<String>,
    pub call_ended: bool,
}

fn end_room_call(
    tx: &Connection,
    call_id: &str,
    reason: EndReason,
    now: i64,
) -> Result<bool, Error> {
    let ended = tx.execute(
        "UPDATE calls SET status = 'ended', end_reason = ?2, ended_at = ?3
         WHERE id = ?1 AND status = 'active'",
        params![call_id, reason.as_str(), now],
    )?;
    if ended > 0 {
        tx.execute(
            "UPDATE call_participants SET left_at = ?2 WHERE call_id = ?1 AND left_at IS NULL",
            params![call_id, now],
        )?;
        let data = serde_json::json!({ "status": "ended", "reason": reason.as_str() });
        calls::add_event(tx, call_id, now, None, "ended", Some(&data))?;
    }
    Ok(ended > 0)
}

/// When the room call `call_id` began (for `room.finished`).
fn started_at(tx: &Connection, call_id: Option<&str>) -> Result<Option<i64>, Error> {
    let Some(call_id) = call_id else {
        return Ok(None);
    };
    Ok(tx
        .query_row(
            "SELECT answered_at FROM calls WHERE id = ?1",
            [call_id],
            |r| r.get::<_, Option<i64>>(0),
        )
        .optional()?
        .flatten())
}

/// Leaves a room; the last one out ends the room call.
pub(super) fn leave(
    conn: &mut Connection,
    id: &str,
    p: &Principal,
    now: i64,
) -> Result<Left, Error> {
    let tx = super::begin_write(conn)?;
    let room = get_visible(&tx, id, p)?;
    let peer_id = room
        .peer_of(&p.id)
        .map(|peer| peer.peer_id.clone())
        .ok_or_else(|| Error::conflict("not_in_room", "you are not in this room"))?;
    tx.execute(
        "UPDATE room_members SET peer_id = NULL, joined_at = NULL WHERE room_id = ?1 AND user_id = ?2",
        params![id, p.id],
    )?;
    tx.execute(
        "DELETE FROM room_members WHERE room_id = ?1 AND user_id = ?2 AND invited = 0",
        params![id, p.id],
    )?;
    let remaining = room.peers.len().saturating_sub(1);
    let left = hook::participant_left(
        &room,
        &p.id,
        &peer_id,
        room.call_id.as_deref(),
        remaining,
        "left",
    );
    webhooks::emit(&tx, &left, now)?;
    if remaining == 0 {
        let started = started_at(&tx, room.call_id.as_deref())?;
        let finished = hook::room_finished(&room, room.call_id.as_deref(), started, "empty", now);
        webhooks::emit(&tx, &finished, now)?;
    }
    let mut call_ended = false;
    if let Some(call_id) = &room.call_id {
        tx.execute(
            "UPDATE call_participants SET left_at = ?3 WHERE call_id = ?1 AND user_id = ?2",
            params![call_id, p.id, now],
        )?;
        let data = serde_json::json!({ "peerId": peer_id });
        calls::add_event(&tx, call_id, now, Some(&p.id), "left", Some(&data))?;
        if room.peers.len() <= 1 {
            call_ended = end_room_call(&tx, call_id, EndReason::Hangup, now)?;
            tx.execute("UPDATE rooms SET call_id = NULL WHERE id = ?1", [id])?;
        }
    }
    let call_id = room.call_id.clone();
    let room = get(&tx, id)?.ok_or(Error::NotFound("room"))?;
    tx.commit()?;
    Ok(Left {
        call_id,
        room,
        peer_id,
        call_ended,
    })
}

/// Ends a room's live call for an admin (reason `admin`): every peer is out of the room, which
/// stays. Returns the room as it was, with the peers that were in it. A room call that is not
/// the room's live one any more is `call_ended`; nothing changes then.
pub(super) fn end_call_as_admin(
    conn: &mut Connection,
    id: &str,
    call_id: &str,
    p: &Principal,
    now: i64,
) -> Result<Room, Error> {
    if !p.admin {
        return Err(Error::forbidden(
            "only admins end a room's call for everyone",
        ));
    }
    let tx = super::begin_write(conn)?;
    let room = get(&tx, id)?.ok_or(Error::NotFound("room"))?;
    if room.call_id.as_deref() != Some(call_id)
        || !end_room_call(&tx, call_id, EndReason::Admin, now)?
    {
        return Err(Error::conflict(
            "call_ended",
            "the room's call is already over",
        ));
    }
    tx.execute(
        "UPDATE room_members SET peer_id = NULL, joined_at = NULL WHERE room_id = ?1",
        [id],
    )?;
    tx.execute(
        "DELETE FROM room_members WHERE room_id = ?1 AND invited = 0",
        [id],
    )?;
    tx.execute("UPDATE rooms SET call_id = NULL WHERE id = ?1", [id])?;
    tx.commit()?;
    Ok(room)
}

/// Deletes a room (owner or admin); its live call ends with reason `room-closed`.
pub(super) fn delete(
    conn: &mut Connection,
    id: &str,
    p: &Principal,
    now: i64,
) -> Result<Room, Error> {
    let tx = super::begin_write(conn)?;
    let room = get_visible(&tx, id, p)?;
    if room.owner_id != p.id && !p.admin {
        return Err(Error::forbidden(
            "only the room's owner or an admin can delete it",
        ));
    }
    let started = started_at(&tx, room.call_id.as_deref())?;
    for (n, peer) in room.peers.iter().enumerate() {
        let left = hook::participant_left(
            &room,
            &peer.user_id,
            &peer.peer_id,
            room.call_id.as_deref(),
            room.peers.len() - n - 1,
            "room-deleted",
        );
        webhooks::emit(&tx, &left, now)?;
    }
    let finished = hook::room_finished(&room, room.call_id.as_deref(), started, "deleted", now);
    webhooks::emit(&tx, &finished, now)?;
    if let Some(call_id) = &room.call_id {
        end_room_call(&tx, call_id, EndReason::RoomClosed, now)?;
    }
    tx.execute("DELETE FROM rooms WHERE id = ?1", [id])?;
    tx.commit()?;
    Ok(room)
}

/// The room call, when an operation ended it.
fn ended_call(
    conn: &Connection,
    call_id: Option<&str>,
    ended: bool,
) -> Result<Option<CallRecord>, Error> {
    match call_id {
        Some(id) if ended => Ok(calls::get(conn, id)?.filter(|call| call.status.is_final())),
        _ => Ok(None),
    }
}

impl Store {
    /// Creates a room.
    pub async fn create_room(&self, new: NewRoom) -> Result<Room, Error> {
        if let Some(pg) = self.pg() {
            return self.timed(pg::rooms::create_room(pg, new)).await;
        }
        self.run(move |c| create(c, &new)).await
    }

    /// A room `principal` may see, with members and peers.
    pub async fn visible_room(&self, id: &str, principal: &Principal) -> Result<Room, Error> {
        if let Some(pg) = self.pg() {
            return self.timed(pg::rooms::visible_room(pg, id, principal)).await;
        }
        let (id, principal) = (id.to_string(), principal.clone());
        self.run(move |c| get_visible(c, &id, &principal)).await
    }

    /// Enters a room: `new_peer_id` is the peer id if `principal` is not in yet, `new_call_id`
    /// the id of the room call if this join starts it.
    pub async fn join_room(
        &self,
        id: &str,
        principal: &Principal,
        new_peer_id: &str,
        new_call_id: &str,
        now: i64,
    ) -> Result<Joined, Error> {
        if let Some(pg) = self.pg() {
            return self
                .timed(pg::rooms::join_room(
                    pg,
                    id,
                    principal,
                    new_peer_id,
                    new_call_id,
                    now,
                ))
                .await;
        }
        let (id, principal) = (id.to_string(), principal.clone());
        let (peer, call) = (new_peer_id.to_string(), new_call_id.to_string());
        self.run(move |c| join(c, &id, &principal, &peer, &call, now))
            .await
    }

    /// Leaves a room; with the room call when this leave ended it (the last one out).
    pub async fn leave_room(
        &self,
        id: &str,
        principal: &Principal,
        now: i64,
    ) -> Result<(Left, Option<CallRecord>), Error> {
        if let Some(pg) = self.pg() {
            return self
                .timed(pg::rooms::leave_room(pg, id, principal, now))
                .await;
        }
        let (id, principal) = (id.to_string(), principal.clone());
        self.run(move |c| {
            let left = leave(c, &id, &principal, now)?;
            let ended = ended_call(c, left.call_id.as_deref(), left.call_ended)?;
            Ok((left, ended))
        })
        .await
    }

    /// An admin ends a room's live call: the room as it was (with its peers) and the call.
    pub async fn end_room_call(
        &self,
        id: &str,
        call_id: &str,
        principal: &Principal,
        now: i64,
    ) -> Result<(Room, CallRecord), Error> {
        if let Some(pg) = self.pg() {
            return self
                .timed(pg::rooms::end_room_call(pg, id, call_id, principal, now))
                .await;
        }
        let (id, call_id, principal) = (id.to_string(), call_id.to_string(), principal.clone());
        self.run(move |c| {
            let room = end_call_as_admin(c, &id, &call_id, &principal, now)?;
            let call = calls::get(c, &call_id)?.ok_or(Error::NotFound("call"))?;
            Ok((room, call))
        })
        .await
    }

    /// Deletes a room (owner or admin): the room as it was, and its call if that ended.
    pub async fn delete_room(
        &self,
        id: &str,
        principal: &Principal,
        now: i64,
    ) -> Result<(Room, Option<CallRecord>), Error> {
        if let Some(pg) = self.pg() {
            return self
                .timed(pg::rooms::delete_room(pg, id, principal, now))
                .await;
        }
        let (id, principal) = (id.to_string(), principal.clone());
        self.run(move |c| {
            let room = delete(c, &id, &principal, now)?;
            let ended = ended_call(c, room.call_id.as_deref(), true)?;
            Ok((room, ended))
        })
        .await
    }
}
