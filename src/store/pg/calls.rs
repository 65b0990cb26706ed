//! Calls, participants and timelines on PostgreSQL (see [`crate::store::calls`]). Every change
//! locks the call's row (`FOR UPDATE`) in its transaction, re-reads it, applies the same pure
//! transition rules, and writes the new status compare-and-set (`WHERE id = $1 AND status = …`,
//! checking the row count), so accept, reject, cancel and timeout arriving on different nodes
//! at once have exactly one winner; the others get the answer SQLite gives to the loser. The
//! ring-timeout sweeper claims its calls with `FOR UPDATE SKIP LOCKED`, so sweepers on several
//! nodes never take the same call.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::auth::Principal;
use crate::error::Error;
use crate::signaling::call::{
    self, Action, Actor, CallStatus, CallType, EndReason, Role, Transition,
};
use crate::store::calls::{
    guest_join_step, CallEvent, CallKind, CallRecord, CallRow, GuestJoin, HistoryFilter, LiveCalls,
    MediaChange, NewCall, Participant,
};
use crate::store::pg::{corrupt, rooms, unsigned, users, webhooks, Db, Pg};
use crate::webhooks::event as hook;

const CALL_COLUMNS: &str = "id, kind, call_type, caller_id, callee_id, room_id, room_name, \
                            status, end_reason, created_at, answered_at, ended_at";

fn row_to_call(r: &Row) -> Result<CallRecord, Error> {
    CallRow {
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
        call_type: r.try_get("call_type")?,
        caller_id: r.try_get("caller_id")?,
        callee_id: r.try_get("callee_id")?,
        room_id: r.try_get("room_id")?,
        room_name: r.try_get("room_name")?,
        status: r.try_get("status")?,
        end_reason: r.try_get("end_reason")?,
        created_at: r.try_get("created_at")?,
        answered_at: r.try_get("answered_at")?,
        ended_at: r.try_get("ended_at")?,
    }
    .decode()
    .map_err(|(what, value)| corrupt(what, &value))
}

async fn participants<C: Db>(c: &C, call_id: &str) -> Result<Vec<Participant>, Error> {
    let rows = c
        .query(
            "SELECT user_id, role, joined_at, left_at, audio, video, screen, camera
             FROM call_participants WHERE call_id = $1
             ORDER BY CASE role WHEN 'caller' THEN 0 WHEN 'callee' THEN 1 ELSE 2 END,
                      joined_at NULLS FIRST, user_id",
            &[&call_id],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let role: String = r.try_get(1)?;
            Ok(Participant {
                user_id: r.try_get(0)?,
                role: Role::parse(&role).ok_or_else(|| corrupt("role", &role))?,
                joined_at: r.try_get(2)?,
                left_at: r.try_get(3)?,
                audio: r.try_get(4)?,
                video: r.try_get(5)?,
                screen: r.try_get(6)?,
                camera: r.try_get(7)?,
            })
        })
        .collect()
}

async fn with_participants<C: Db>(c: &C, rows: Vec<Row>) -> Result<Vec<CallRecord>, Error> {
    let mut calls = rows
        .iter()
        .map(row_to_call)
        .collect::<Result<Vec<_>, _>>()?;
    for call in &mut calls {
        call.participants = participants(c, &call.id).await?;
    }
    Ok(calls)
}

/// Loads a call with its participants.
pub(crate) async fn get<C: Db>(c: &C, id: &str) -> Result<Option<CallRecord>, Error> {
    let row = c
        .query_opt(
            &format!("SELECT {CALL_COLUMNS} FROM calls WHERE id = $1"),
            &[&id],
        )
        .await?;
    match row {
        Some(row) => {
            let mut call = row_to_call(&row)?;
            call.participants = participants(c, id).await?;
            Ok(Some(call))
        }
        None => Ok(None),
    }
}

/// Locks a call's row for the rest of the transaction, then loads it.
pub(crate) async fn lock<C: Db>(c: &C, id: &str) -> Result<Option<CallRecord>, Error> {
    let locked = c
        .query_opt("SELECT id FROM calls WHERE id = $1 FOR UPDATE", &[&id])
        .await?;
    match locked {
        Some(_) => get(c, id).await,
        None => Ok(None),
    }
}

/// Loads a call `principal` may see; unknown and invisible calls are both `NotFound`.
pub(crate) async fn get_visible<C: Db>(
    c: &C,
    id: &str,
    principal: &Principal,
) -> Result<CallRecord, Error> {
    let call = get(c, id).await?.ok_or(Error::NotFound("call"))?;
    call.actor(principal)?;
    Ok(call)
}

/// Appends to a call's timeline.
pub(crate) async fn add_event<C: Db>(
    c: &C,
    call_id: &str,
    at: i64,
    user_id: Option<&str>,
    kind: &str,
    data: Option<&Value>,
) -> Result<(), Error> {
    c.execute(
        "INSERT INTO call_events (call_id, at, user_id, kind, data) VALUES ($1, $2, $3, $4, $5)",
        &[&call_id, &at, &user_id, &kind, &data.map(Value::to_string)],
    )
    .await?;
    Ok(())
}

async fn insert_participant<C: Db>(
    c: &C,
    call_id: &str,
    user_id: &str,
    role: Role,
    joined_at: Option<i64>,
    video: bool,
) -> Result<(), Error> {
    c.execute(
        "INSERT INTO call_participants (call_id, user_id, role, joined_at, video)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (call_id, user_id) DO UPDATE SET joined_at = excluded.joined_at, left_at = NULL",
        &[&call_id, &user_id, &role.as_str(), &joined_at, &video],
    )
    .await?;
    Ok(())
}

pub async fn create_call(pg: &Pg, new: NewCall) -> Result<CallRecord, Error> {
    if new.callee_id.as_deref() == Some(new.caller_id.as_str()) {
        return Err(Error::invalid(
            "invalid_callee",
            "calleeId: you cannot call yourself",
        ));
    }
    let mut conn = pg.conn().await?;
    let tx = conn.transaction().await?;
    let video = new.call_type == CallType::Video;
    let inserted = tx
        .execute(
            "INSERT INTO calls (id, kind, call_type, caller_id, callee_id, room_id, room_name, status, created_at)
             VALUES ($1, 'direct', $2, $3, $4, $1, $5, 'ringing', $6) ON CONFLICT (id) DO NOTHING",
            &[&new.id, &new.call_type.as_str(), &new.caller_id, &new.callee_id, &new.room_name, &new.now],
        )
        .await?;
    if inserted == 0 {
        return Err(Error::conflict(
            "call_exists",
            "a call with this id already exists",
        ));
    }
    insert_participant(
        &*tx,
        &new.id,
        &new.caller_id,
        Role::Caller,
        Some(new.now),
        video,
    )
    .await?;
    if let Some(callee) = &new.callee_id {
        insert_participant(&*tx, &new.id, callee, Role::Callee, None, video).await?;
    }
    let data = serde_json::json!({ "callType": new.call_type.as_str(), "calleeId": new.callee_id });
    add_event(
        &*tx,
        &new.id,
        new.now,
        Some(&new.caller_id),
        "created",
        Some(&data),
    )
    .await?;
    let call = get(&*tx, &new.id).await?.ok_or(Error::NotFound("call"))?;
    tx.commit().await?;
    Ok(call)
}

/// Writes an allowed transition compare-and-set on the status `call` was read with.
async fn write_transition<C: Db>(
    c: &C,
    call: &CallRecord,
    actor_id: Option<&str>,
    t: Transition,
    now: i64,
) -> Result<(), Error> {
    let reason = t.reason.map(EndReason::as_str);
    let from = call.status.as_str();
    let changed = if t.to == CallStatus::Active {
        c.execute(
            "UPDATE calls SET status = 'active', answered_at = $2 WHERE id = $1 AND status = $3",
            &[&call.id, &now, &from],
        )
        .await?
    } else {
        c.execute(
            "UPDATE calls SET status = $2, end_reason = $3, ended_at = $4
             WHERE id = $1 AND status = $5",
            &[&call.id, &t.to.as_str(), &reason, &now, &from],
        )
        .await?
    };
    if changed == 0 {
        // Another node changed the call since it was read: this action lost the race.
        return Err(Error::conflict(
            "call_changed",
            "the call changed meanwhile; nothing was done",
        ));
    }
    if t.to == CallStatus::Active {
        if let Some(user) = actor_id {
            c.execute(
                "UPDATE call_participants SET joined_at = COALESCE(joined_at, $3)
                 WHERE call_id = $1 AND user_id = $2",
                &[&call.id, &user, &now],
            )
            .await?;
        }
        add_event(c, &call.id, now, actor_id, "accepted", None).await?;
        if call.kind == CallKind::Direct {
            webhooks::emit(c, &hook::call_started(call, now), now).await?;
        }
    } else {
        c.execute(
            "UPDATE call_participants SET left_at = $2
             WHERE call_id = $1 AND joined_at IS NOT NULL AND left_at IS NULL",
            &[&call.id, &now],
        )
        .await?;
        let data = serde_json::json!({ "status": t.to.as_str(), "reason": reason });
        add_event(c, &call.id, now, actor_id, "ended", Some(&data)).await?;
        if call.kind == CallKind::Direct {
            webhooks::emit(c, &hook::call_finished(call, t.to, reason, now), now).await?;
        }
    }
    Ok(())
}

pub async fn call(pg: &Pg, id: &str) -> Result<CallRecord, Error> {
    let c = pg.conn().await?;
    get(&**c, id).await?.ok_or(Error::NotFound("call"))
}

pub async fn visible_call(pg: &Pg, id: &str, principal: &Principal) -> Result<CallRecord, Error> {
    let c = pg.conn().await?;
    get_visible(&**c, id, principal).await
}

pub async fn apply_call_action(
    pg: &Pg,
    id: &str,
    principal: Option<&Principal>,
    action: Action,
    now: i64,
) -> Result<(CallRecord, Transition), Error> {
    let mut conn = pg.conn().await?;
    let tx = conn.transaction().await?;
    let changed = apply_action_in(&*tx, id, principal, action, now).await?;
    tx.commit().await?;
    Ok(changed)
}

/// [`apply_call_action`]'s rules inside the caller's open transaction: locks and re-reads the
/// call, checks the transition, writes it compare-and-set; the caller commits.
async fn apply_action_in<C: Db>(
    c: &C,
    id: &str,
    principal: Option<&Principal>,
    action: Action,
    now: i64,
) -> Result<(CallRecord, Transition), Error> {
    let call = lock(c, id).await?.ok_or(Error::NotFound("call"))?;
    let actor = match principal {
        Some(p) => call.actor(p)?,
        None => Actor::System,
    };
    let t = call::transition(call.status, actor, action)?;
    write_transition(c, &call, principal.map(|p| p.id.as_str()), t, now).await?;
    let call = get(c, id).await?.ok_or(Error::NotFound("call"))?;
    Ok((call, t))
}

/// Claims the oldest ringing direct calls created at or before `cutoff` (at most `limit`) with
/// `FOR UPDATE SKIP LOCKED`, so a call whose row another transaction holds (another node's
/// sweeper, or a user's accept of it) is passed by, not waited for; then times each out as the
/// server through the same code as [`apply_call_action`], all in one transaction. A row changed
/// and committed by someone else after this statement's snapshot is re-checked against the
/// `WHERE` before it is locked, so every claimed call is still ringing.
pub async fn expire_ringing_before(
    pg: &Pg,
    cutoff: i64,
    now: i64,
    limit: u32,
) -> Result<Vec<(CallRecord, Transition)>, Error> {
    let mut conn = pg.conn().await?;
    let tx = conn.transaction().await?;
    let rows = tx
        .query(
            "SELECT id FROM calls WHERE status = 'ringing' AND kind = 'direct' AND created_at <= $1
             ORDER BY created_at, rowid LIMIT $2 FOR UPDATE SKIP LOCKED",
            &[&cutoff, &i64::from(limit)],
        )
        .await?;
    let mut expired = Vec::with_capacity(rows.len());
    for row in &rows {
        let id: String = row.try_get(0)?;
        expired.push(apply_action_in(&*tx, &id, None, Action::Timeout, now).await?);
    }
    tx.commit().await?;
    Ok(expired)
}

pub async fn join_call_as_guest(
    pg: &Pg,
    id: &str,
    principal: &Principal,
    now: i64,
) -> Result<(CallRecord, bool), Error> {
    let mut conn = pg.conn().await?;
    let tx = conn.transaction().await?;
    let call = lock(&*tx, id).await?.ok_or(Error::NotFound("call"))?;
    match guest_join_step(&call, principal)? {
        GuestJoin::AlreadyActive => return Ok((call, false)),
        GuestJoin::Accept => {}
        GuestJoin::AddThenAccept { video } => {
            tx.execute(
                "UPDATE calls SET callee_id = $2 WHERE id = $1",
                &[&id, &principal.id],
            )
            .await?;
            insert_participant(&*tx, id, &principal.id, Role::Callee, None, video).await?;
        }
    }
    let call = get(&*tx, id).await?.ok_or(Error::NotFound("call"))?;
    let t = call::transition(
        call.status,
        Actor::Participant(Role::Callee),
        Action::Accept,
    )?;
    write_transition(&*tx, &call, Some(&principal.id), t, now).await?;
    let call = get(&*tx, id).await?.ok_or(Error::NotFound("call"))?;
    tx.commit().await?;
    Ok((call, true))
}

pub async fn set_call_media(
    pg: &Pg,
    id: &str,
    principal: &Principal,
    change: MediaChange,
    kind: &str,
    now: i64,
) -> Result<CallRecord, Error> {
    let mut conn = pg.conn().await?;
    let tx = conn.transaction().await?;
    let call = lock(&*tx, id).await?.ok_or(Error::NotFound("call"))?;
    if let Actor::Admin = call.actor(principal)? {
        return Err(Error::forbidden(
            "only participants can change their media state",
        ));
    }
    call::check_media_change(call.status)?;
    tx.execute(
        "UPDATE call_participants SET
            audio = COALESCE($3, audio), video = COALESCE($4, video),
            screen = COALESCE($5, screen), camera = COALESCE($6, camera)
         WHERE call_id = $1 AND user_id = $2",
        &[
            &id,
            &principal.id,
            &change.audio,
            &change.video,
            &change.screen,
            &change.camera,
        ],
    )
    .await?;
    add_event(
        &*tx,
        id,
        now,
        Some(&principal.id),
        kind,
        Some(&change.to_json()),
    )
    .await?;
    let call = get(&*tx, id).await?.ok_or(Error::NotFound("call"))?;
    tx.commit().await?;
    Ok(call)
}

pub async fn prepare_call_to_ring(
    pg: &Pg,
    id: &str,
    caller: &Principal,
    callee: &str,
) -> Result<CallRecord, Error> {
    let mut conn = pg.conn().await?;
    let tx = conn.transaction().await?;
    let call = lock(&*tx, id).await?.ok_or(Error::NotFound("call"))?;
    call.actor(caller)?;
    if call.caller_id != caller.id || call.kind != CallKind::Direct {
        return Err(Error::forbidden(
            "only the caller of a direct call can ring it",
        ));
    }
    if call.status != CallStatus::Ringing {
        return Err(Error::conflict(
            "call_ended",
            format!("the call is already {}", call.status),
        ));
    }
    match call.callee_id.as_deref() {
        Some(c) if c == callee => {}
        Some(_) => {
            return Err(Error::conflict(
                "callee_mismatch",
                "the call was created for another callee",
            ))
        }
        None => {
            let video = call.call_type == CallType::Video;
            tx.execute(
                "UPDATE calls SET callee_id = $2 WHERE id = $1",
                &[&id, &callee],
            )
            .await?;
            insert_participant(&*tx, id, callee, Role::Callee, None, video).await?;
        }
    }
    let call = get(&*tx, id).await?.ok_or(Error::NotFound("call"))?;
    tx.commit().await?;
    Ok(call)
}

pub async fn call_history(pg: &Pg, filter: HistoryFilter) -> Result<(Vec<CallRecord>, u64), Error> {
    let c = pg.conn().await?;
    let mut clauses = Vec::new();
    let mut args: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    if let Some(user) = &filter.user_id {
        args.push(Box::new(user.clone()));
        clauses.push(format!(
            "EXISTS (SELECT 1 FROM call_participants p WHERE p.call_id = calls.id AND p.user_id = ${})",
            args.len()
        ));
    }
    if let Some(t) = filter.call_type {
        args.push(Box::new(t.as_str()));
        clauses.push(format!("call_type = ${}", args.len()));
    }
    if let Some(s) = filter.status {
        args.push(Box::new(s.as_str()));
        clauses.push(format!("status = ${}", args.len()));
    }
    let filter_sql = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    let params: Vec<&(dyn ToSql + Sync)> = args
        .iter()
        .map(|b| b.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let total: i64 = c
        .query_one(&format!("SELECT COUNT(*) FROM calls {filter_sql}"), &params)
        .await?
        .try_get(0)?;
    let sql = format!(
        "SELECT {CALL_COLUMNS} FROM calls {filter_sql} ORDER BY created_at DESC, rowid DESC LIMIT {} OFFSET {}",
        filter.limit, filter.offset
    );
    let rows = c.query(&sql, &params).await?;
    let calls = with_participants(&**c, rows).await?;
    Ok((calls, unsigned(total)))
}

/// A call's timeline, oldest first.
pub(crate) async fn events<C: Db>(c: &C, call_id: &str) -> Result<Vec<CallEvent>, Error> {
    let rows = c
        .query(
            "SELECT at, user_id, kind, data FROM call_events WHERE call_id = $1 ORDER BY id",
            &[&call_id],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let data: Option<String> = r.try_get(3)?;
            Ok(CallEvent {
                at: r.try_get(0)?,
                user_id: r.try_get(1)?,
                kind: r.try_get(2)?,
                data: data.and_then(|d| serde_json::from_str(&d).ok()),
            })
        })
        .collect()
}

pub async fn call_counts_by_status(pg: &Pg) -> Result<Vec<(CallStatus, u64)>, Error> {
    let c = pg.conn().await?;
    let rows = c
        .query("SELECT status, COUNT(*) FROM calls GROUP BY status", &[])
        .await?;
    let mut out = Vec::new();
    for r in rows {
        let status: String = r.try_get(0)?;
        if let Some(s) = CallStatus::parse(&status) {
            out.push((s, unsigned(r.try_get::<_, i64>(1)?)));
        }
    }
    Ok(out)
}

pub async fn live_calls_for(pg: &Pg, user: &str) -> Result<Vec<CallRecord>, Error> {
    let c = pg.conn().await?;
    let rows = c
        .query(
            &format!(
                "SELECT {CALL_COLUMNS} FROM calls WHERE status IN ('ringing', 'active') AND EXISTS
                   (SELECT 1 FROM call_participants p WHERE p.call_id = calls.id AND p.user_id = $1 AND p.left_at IS NULL)
                 ORDER BY created_at DESC LIMIT 50"
            ),
            &[&user],
        )
        .await?;
    with_participants(&**c, rows).await
}

pub async fn live_calls(pg: &Pg, limit: u32) -> Result<LiveCalls, Error> {
    let c = pg.conn().await?;
    let rows = c
        .query(
            &format!(
                "SELECT {CALL_COLUMNS} FROM calls WHERE status IN ('ringing', 'active')
                 ORDER BY created_at, id LIMIT $1"
            ),
            &[&i64::from(limit)],
        )
        .await?;
    let calls = with_participants(&**c, rows).await?;
    let mut rooms = HashMap::new();
    let mut ids = BTreeSet::new();
    for call in &calls {
        ids.extend(call.participants.iter().map(|p| p.user_id.clone()));
        if let (CallKind::Room, Some(room_id)) = (call.kind, &call.room_id) {
            if let Some(room) = rooms::get(&**c, room_id).await? {
                rooms.insert(call.id.clone(), room);
            }
        }
    }
    let ids: Vec<String> = ids.into_iter().collect();
    let names = users::names(&**c, &ids).await?;
    Ok(LiveCalls {
        calls,
        rooms,
        names,
    })
}
