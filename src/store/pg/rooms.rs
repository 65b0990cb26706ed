//! Group rooms on PostgreSQL (see [`crate::store::rooms`]). Every change locks the room's row
//! first, so joins and leaves of one room on different nodes take turns, like SQLite's writer.

use crate::auth::Principal;
use crate::error::Error;
use crate::signaling::call::{CallStatus, CallType, EndReason, Role};
use crate::signaling::topology::RoomMode;
use crate::store::calls::CallRecord;
use crate::store::pg::{calls, unsigned, webhooks, Db, Pg};
use crate::store::rooms::{join_step, Joined, Left, NewRoom, Room, RoomPeer};
use crate::webhooks::event as hook;

/// Loads a room with members and peers.
pub(crate) async fn get<C: Db>(c: &C, id: &str) -> Result<Option<Room>, Error> {
    let row = c
        .query_opt(
            "SELECT id, name, owner_id, max_participants, is_private, call_id, created_at, mode
             FROM rooms WHERE id = $1",
            &[&id],
        )
        .await?;
    let Some(r) = row else {
        return Ok(None);
    };
    let mut room = Room {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        owner_id: r.try_get(2)?,
        max_participants: unsigned(r.try_get::<_, i64>(3)?),
        is_private: r.try_get(4)?,
        call_id: r.try_get(5)?,
        created_at: r.try_get(6)?,
        mode: RoomMode::parse(&r.try_get::<_, String>(7)?, "mode").unwrap_or_default(),
        members: Vec::new(),
        peers: Vec::new(),
    };
    room.members = c
        .query(
            "SELECT user_id FROM room_members WHERE room_id = $1 AND invited ORDER BY user_id",
            &[&id],
        )
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    room.peers = c
        .query(
            "SELECT peer_id, user_id, joined_at FROM room_members
             WHERE room_id = $1 AND peer_id IS NOT NULL ORDER BY joined_at, user_id",
            &[&id],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(RoomPeer {
                peer_id: r.try_get(0)?,
                user_id: r.try_get(1)?,
                joined_at: r.try_get(2)?,
            })
        })
        .collect::<Result<_, Error>>()?;
    Ok(Some(room))
}

/// Locks a room's row for the rest of the transaction, then loads it.
async fn lock<C: Db>(c: &C, id: &str) -> Result<Option<Room>, Error> {
    match c
        .query_opt("SELECT id FROM rooms WHERE id = $1 FOR UPDATE", &[&id])
        .await?
    {
        Some(_) => get(c, id).await,
        None => Ok(None),
    }
}

fn visible(room: Option<Room>, p: &Principal) -> Result<Room, Error> {
    let room = room.ok_or(Error::NotFound("room"))?;
    if !room.admits(p) {
        return Err(Error::forbidden("this room is private"));
    }
    Ok(room)
}

pub async fn create_room(pg: &Pg, new: NewRoom) -> Result<Room, Error> {
    let mut conn = pg.conn().await?;
    let tx = conn.transaction().await?;
    tx.execute(
        "INSERT INTO rooms (id, name, owner_id, max_participants, is_private, created_at, mode)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &new.id,
            &new.name,
            &new.owner_id,
            &i64::from(new.max_participants),
            &new.is_private,
            &new.now,
            &new.mode.as_str(),
        ],
    )
    .await?;
    for member in &new.members {
        tx.execute(
            "INSERT INTO room_members (room_id, user_id, invited) VALUES ($1, $2, TRUE)
             ON CONFLICT (room_id, user_id) DO NOTHING",
            &[&new.id, member],
        )
        .await?;
    }
    let room = get(&*tx, &new.id).await?.ok_or(Error::NotFound("room"))?;
    tx.commit().await?;
    Ok(room)
}

pub async fn visible_room(pg: &Pg, id: &str, principal: &Principal) -> Result<Room, Error> {
    let c = pg.conn().await?;
    visible(get(&**c, id).await?, principal)
}

pub async fn join_room(
    pg: &Pg,
    id: &str,
    p: &Principal,
    new_peer_id: &str,
    new_call_id: &str,
    now: i64,
) -> Result<Joined, Error> {
    let mut conn = pg.conn().await?;
    let tx = conn.transaction().await?;
    let room = visible(lock(&*tx, id).await?, p)?;
    let room = match join_step(room, p)? {
        Ok(already) => return Ok(already),
        Err(room) => room,
    };
    tx.execute(
        "INSERT INTO room_members (room_id, user_id, invited, peer_id, joined_at)
         VALUES ($1, $2, FALSE, $3, $4)
         ON CONFLICT (room_id, user_id) DO UPDATE SET peer_id = excluded.peer_id, joined_at = excluded.joined_at",
        &[&id, &p.id, &new_peer_id, &now],
    )
    .await?;
    let live_call = match &room.call_id {
        Some(call_id) => calls::get(&*tx, call_id)
            .await?
            .filter(|c| c.status == CallStatus::Active),
        None => None,
    };
    let call_id = match live_call {
        Some(call) => call.id,
        None => {
            tx.execute(
                "INSERT INTO calls (id, kind, call_type, caller_id, room_id, room_name, status, created_at, answered_at)
                 VALUES ($1, 'room', $2, $3, $4, $5, 'active', $6, $6)",
                &[&new_call_id, &CallType::Video.as_str(), &p.id, &id, &room.name, &now],
            )
            .await?;
            tx.execute(
                "UPDATE rooms SET call_id = $2 WHERE id = $1",
                &[&id, &new_call_id],
            )
            .await?;
            calls::add_event(&*tx, new_call_id, now, Some(&p.id), "created", None).await?;
            new_call_id.to_string()
        }
    };
    tx.execute(
        "INSERT INTO call_participants (call_id, user_id, role, joined_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (call_id, user_id) DO UPDATE SET joined_at = excluded.joined_at, left_at = NULL",
        &[&call_id, &p.id, &Role::Member.as_str(), &now],
    )
    .await?;
    let data = serde_json::json!({ "peerId": new_peer_id });
    calls::add_event(&*tx, &call_id, now, Some(&p.id), "joined", Some(&data)).await?;
    let room = get(&*tx, id).await?.ok_or(Error::NotFound("room"))?;
    let joined = hook::participant_joined(&room, &p.id, new_peer_id, &call_id, room.peers.len());
    webhooks::emit(&*tx, &joined, now).await?;
    tx.commit().await?;
    Ok(Joined {
        room,
        peer_id: new_peer_id.to_string(),
        call_id,
        newly_joined: true,
    })
}

/// Ends a room call compare-and-set on `active`; whether this did it.
async fn finish_room_call<C: Db>(
    c: &C,
    call_id: &str,
    reason: EndReason,
    now: i64,
) -> Result<bool, Error> {
    let ended = c
        .execute(
            "UPDATE calls SET status = 'ended', end_reason = $2, ended_at = $3
             WHERE id = $1 AND status = 'active'",
            &[&call_id, &reason.as_str(), &now],
        )
        .await?;
    if ended > 0 {
        c.execute(
            "UPDATE call_participants SET left_at = $2 WHERE call_id = $1 AND left_at IS NULL",
            &[&call_id, &now],
        )
        .await?;
        let data = serde_json::json!({ "status": "ended", "reason": reason.as_str() });
        calls::add_event(c, call_id, now, None, "ended", Some(&data)).await?;
    }
    Ok(ended > 0)
}

async fn started_at<C: Db>(c: &C, call_id: Option<&str>) -> Result<Option<i64>, Error> {
    let Some(call_id) = call_id else {
        return Ok(None);
    };
    let row = c
        .query_opt("SELECT answered_at FROM calls WHERE id = $1", &[&call_id])
        .await?;
    Ok(match row {
        Some(r) => r.try_get::<_, Option<i64>>(0)?,
        None => None,
    })
}

async fn ended_call<C: Db>(
    c: &C,
    call_id: Option<&str>,
    ended: bool,
) -> Result<Option<CallRecord>, Error> {
    match call_id {
        Some(id) if ended => Ok(calls::get(c, id)
            .await?
            .filter(|call| call.status.is_final())),
        _ => Ok(None),
    }
}

pub async fn leave_room(
    pg: &Pg,
    id: &str,
    p: &Principal,
    now: i64,
) -> Result<(Left, Option<CallRecord>), Error> {
    let mut conn = pg.conn().await?;
    let tx = conn.transaction().await?;
    let room = visible(lock(&*tx, id).await?, p)?;
    let peer_id = room
        .peer_of(&p.id)
        .map(|peer| peer.peer_id.clone())
        .ok_or_else(|| Error::conflict("not_in_room", "you are not in this room"))?;
    tx.execute(
        "UPDATE room_members SET peer_id = NULL, joined_at = NULL WHERE room_id = $1 AND user_id = $2",
        &[&id, &p.id],
    )
    .await?;
    tx.execute(
        "DELETE FROM room_members WHERE room_id = $1 AND user_id = $2 AND NOT invited",
        &[&id, &p.id],
    )
    .await?;
    let remaining = room.peers.len().saturating_sub(1);
    let left = hook::participant_left(
        &room,
        &p.id,
        &peer_id,
        room.call_id.as_deref(),
        remaining,
        "left",
    );
    webhooks::emit(&*tx, &left, now).await?;
    if remaining == 0 {
        let started = started_at(&*tx, room.call_id.as_deref()).await?;
        let finished = hook::room_finished(&room, room.call_id.as_deref(), started, "empty", now);
        webhooks::emit(&*tx, &finished, now).await?;
    }
    let mut call_ended = false;
    if let Some(call_id) = &room.call_id {
        tx.execute(
            "UPDATE call_participants SET left_at = $3 WHERE call_id = $1 AND user_id = $2",
            &[call_id, &p.id, &now],
        )
        .await?;
        let data = serde_json::json!({ "peerId": peer_id });
        calls::add_event(&*tx, call_id, now, Some(&p.id), "left", Some(&data)).await?;
        if room.peers.len() <= 1 {
            call_ended = finish_room_call(&*tx, call_id, EndReason::Hangup, now).await?;
            tx.execute("UPDATE rooms SET call_id = NULL WHERE id = $1", &[&id])
                .await?;
        }
    }
    let call_id = room.call_id.clone();
    let room = get(&*tx, id).await?.ok_or(Error::NotFound("room"))?;
    let ended = ended_call(&*tx, call_id.as_deref(), call_ended).await?;
    tx.commit().await?;
    let left = Left {
        call_id,
        room,
        peer_id,
        call_ended,
    };
    Ok((left, ended))
}

pub async fn end_room_call(
    pg: &Pg,
    id: &str,
    call_id: &str,
    p: &Principal,
    now: i64,
) -> Result<(Room, CallRecord), Error> {
    if !p.admin {
        return Err(Error::forbidden(
            "only admins end a room's call for everyone",
        ));
    }
    let mut conn = pg.conn().await?;
    let tx = conn.transaction().await?;
    let room = lock(&*tx, id).await?.ok_or(Error::NotFound("room"))?;
    if room.call_id.as_deref() != Some(call_id)
        || !finish_room_call(&*tx, call_id, EndReason::Admin, now).await?
    {
        return Err(Error::conflict(
            "call_ended",
            "the room's call is already over",
        ));
    }
    tx.execute(
        "UPDATE room_members SET peer_id = NULL, joined_at = NULL WHERE room_id = $1",
        &[&id],
    )
    .await?;
    tx.execute(
        "DELETE FROM room_members WHERE room_id = $1 AND NOT invited",
        &[&id],
    )
    .await?;
    tx.execute("UPDATE rooms SET call_id = NULL WHERE id = $1", &[&id])
        .await?;
    let call = calls::get(&*tx, call_id)
        .await?
        .ok_or(Error::NotFound("call"))?;
    tx.commit().await?;
    Ok((room, call))
}

pub async fn delete_room(
    pg: &Pg,
    id: &str,
    p: &Principal,
    now: i64,
) -> Result<(Room, Option<CallRecord>), Error> {
    let mut conn = pg.conn().await?;
    let tx = conn.transaction().await?;
    let room = visible(lock(&*tx, id).await?, p)?;
    if room.owner_id != p.id && !p.admin {
        return Err(Error::forbidden(
            "only the room's owner or an admin can delete it",
        ));
    }
    let started = started_at(&*tx, room.call_id.as_deref()).await?;
    for (n, peer) in room.peers.iter().enumerate() {
        let left = hook::participant_left(
            &room,
            &peer.user_id,
            &peer.peer_id,
            room.call_id.as_deref(),
            room.peers.len() - n - 1,
            "room-deleted",
        );
        webhooks::emit(&*tx, &left, now).await?;
    }
    let finished = hook::room_finished(&room, room.call_id.as_deref(), started, "deleted", now);
    webhooks::emit(&*tx, &finished, now).await?;
    if let Some(call_id) = &room.call_id {
        finish_room_call(&*tx, call_id, EndReason::RoomClosed, now).await?;
    }
    tx.execute("DELETE FROM rooms WHERE id = $1", &[&id])
        .await?;
    let ended = ended_call(&*tx, room.call_id.as_deref(), true).await?;
    tx.commit().await?;
    Ok((room, ended))
}
