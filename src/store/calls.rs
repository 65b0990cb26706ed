//! Calls, their participants (with media state) and their event timeline. Every change runs in
//! one IMMEDIATE transaction that re-reads the call, applies the pure transition rules of
//! [`crate::signaling::call`], and writes status, timestamps and an event together, so a refused
//! change writes nothing and a crash never leaves half a change. A direct call's webhook events
//! (`call.started`, `call.ended`, `call.missed`) are written in that same transaction.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde_json::Value;

use crate::auth::Principal;
use crate::error::Error;
use crate::signaling::call::{
    self, Action, Actor, CallStatus, CallType, EndReason, Role, Transition,
};
use crate::store::rooms::Room;
use crate::store::{pg, rooms, users, webhooks, Store};
use crate::webhooks::event as hook;

/// Direct (1:1) or group (room) call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    Direct,
    Room,
}

impl CallKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Direct => "direct",
            CallKind::Room => "room",
        }
    }
}

/// One participant of a call and their current media state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    pub user_id: String,
    pub role: Role,
    pub joined_at: Option<i64>,
    pub left_at: Option<i64>,
    pub audio: bool,
    pub video: bool,
    pub screen: bool,
    pub camera: Option<String>,
}

/// A call as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    pub id: String,
    pub kind: CallKind,
    pub call_type: CallType,
    pub caller_id: String,
    pub callee_id: Option<String>,
    pub room_id: Option<String>,
    pub room_name: Option<String>,
    pub status: CallStatus,
    pub end_reason: Option<EndReason>,
    pub created_at: i64,
    pub answered_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub participants: Vec<Participant>,
}

impl CallRecord {
    /// The requester's role, if they take part.
    pub fn role_of(&self, user_id: &str) -> Option<Role> {
        self.participants
            .iter()
            .find(|p| p.user_id == user_id)
            .map(|p| p.role)
    }

    /// Whole seconds between answer and end (or `now` while active).
    pub fn duration_secs(&self, now: i64) -> Option<i64> {
        let start = self.answered_at?;
        let end = self.ended_at.unwrap_or(now);
        Some((end - start).max(0) / 1000)
    }

    /// Who `principal` is on this call; `NotFound` if they may not see it.
    pub fn actor(&self, principal: &Principal) -> Result<Actor, Error> {
        match self.role_of(&principal.id) {
            Some(role) => Ok(Actor::Participant(role)),
            None if principal.admin => Ok(Actor::Admin),
            None => Err(Error::NotFound("call")),
        }
    }
}

/// A new direct call.
#[derive(Debug, Clone)]
pub struct NewCall {
    pub id: String,
    pub call_type: CallType,
    pub caller_id: String,
    pub callee_id: Option<String>,
    pub room_name: Option<String>,
    pub now: i64,
}

/// One entry of a call's timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct CallEvent {
    pub at: i64,
    pub user_id: Option<String>,
    pub kind: String,
    pub data: Option<Value>,
}

pub use crate::signaling::call::MediaChange;

/// What the admin live view needs from the store: the ringing and active calls, the rooms of
/// the room calls among them (by call id), and the display names of their participants.
#[derive(Debug, Clone, Default)]
pub struct LiveCalls {
    pub calls: Vec<CallRecord>,
    pub rooms: HashMap<String, Room>,
    pub names: HashMap<String, String>,
}

/// Filters of `GET /calls/history`.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    /// Only calls this user took part in; `None` for every call (admins).
    pub user_id: Option<String>,
    pub call_type: Option<CallType>,
    pub status: Option<CallStatus>,
    pub limit: u32,
    pub offset: u32,
}

const CALL_COLUMNS: &str =
    "id, kind, call_type, caller_id, callee_id, room_id, room_name, status, \
                            end_reason, created_at, answered_at, ended_at";

fn corrupt(what: &str, value: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("unexpected {what} `{value}` in database").into(),
    )
}

/// A `calls` row as either backend reads it, before its text columns are checked: the one
/// place that knows which values `kind`, `call_type`, `status` and `end_reason` may hold.
pub(crate) struct CallRow {
    pub id: String,
    pub kind: String,
    pub call_type: String,
    pub caller_id: String,
    pub callee_id: Option<String>,
    pub room_id: Option<String>,
    pub room_name: Option<String>,
    pub status: String,
    pub end_reason: Option<String>,
    pub created_at: i64,
    pub answered_at: Option<i64>,
    pub ended_at: Option<i64>,
}

impl CallRow {
    /// The record (without participants), or the column and value that cannot be one.
    pub(crate) fn decode(self) -> Result<CallRecord, (&'static str, String)> {
        let kind = match self.kind.as_str() {
            "direct" => CallKind::Direct,
            "room" => CallKind::Room,
            _ => return Err(("call kind", self.kind)),
        };
        let Some(call_type) = CallType::parse(&self.call_type) else {
            return Err(("call type", self.call_type));
        };
        let Some(status) = CallStatus::parse(&self.status) else {
            return Err(("status", self.status));
        };
        let end_reason = match self.end_reason {
            Some(s) => match EndReason::parse(&s) {
                Some(r) => Some(r),
                None => return Err(("end reason", s)),
            },
            None => None,
        };
        Ok(CallRecord {
            id: self.id,
            kind,
            call_type,
            caller_id: self.caller_id,
            callee_id: self.callee_id,
            room_id: self.room_id,
            room_name: self.room_name,
            status,
            end_reason,
            created_at: self.created_at,
            answered_at: self.answered_at,
            ended_at: self.ended_at,
            participants: Vec::new(),
        })
    }
}

fn row_to_call(r: &rusqlite::Row<'_>) -> rusqlite::Result<CallRecord> {
    CallRow {
        id: r.get("id")?,
        kind: r.get("kind")?,
        call_type: r.get("call_type")?,
        caller_id: r.get("caller_id")?,
        callee_id: r.get("callee_id")?,
        room_id: r.get("room_id")?,
        room_name: r.get("room_name")?,
        status: r.get("status")?,
        end_reason: r.get("end_reason")?,
        created_at: r.get("created_at")?,
        answered_at: r.get("answered_at")?,
        ended_at: r.get("ended_at")?,
    }
    .decode()
    .map_err(|(what, value)| corrupt(what, &value))
}

fn participants(conn: &Connection, call_id: &str) -> rusqlite::Result<Vec<Participant>> {
    let mut stmt = conn.prepare_cached(
        "SELECT user_id, role, joined_at, left_at, audio, video, screen, camera
         FROM call_participants WHERE call_id = ?1
         ORDER BY CASE role WHEN 'caller' THEN 0 WHEN 'callee' THEN 1 ELSE 2 END, joined_at, user_id",
    )?;
    let rows = stmt.query_map([call_id], |r| {
        let role: String = r.get(1)?;
        Ok(Participant {
            user_id: r.get(0)?,
            role: Role::parse(&role).ok_or_else(|| corrupt("role", &role))?,
            joined_at: r.get(2)?,
            left_at: r.get(3)?,
            audio: r.get(4)?,
            video: r.get(5)?,
            screen: r.get(6)?,
            camera: r.get(7)?,
        })
    })?;
    rows.collect()
}

/// Loads a call with its participants.
pub(super) fn get(conn: &Connection, id: &str) -> Result<Option<CallRecord>, Error> {
    let call = conn
        .query_row(
            &format!("SELECT {CALL_COLUMNS} FROM calls WHERE id = ?1"),
            [id],
            row_to_call,
        )
        .optional()?;
    match call {
        Some(mut call) => {
            call.participants = participants(conn, id)?;
            Ok(Some(call))
        }
        None => Ok(None),
    }
}

/// Loads a call `principal` may see; unknown and invisible calls are both `NotFound`.
pub(super) fn get_visible(
    conn: &Connection,
    id: &str,
    principal: &Principal,
) -> Result<CallRecord, Error> {
    let call = get(conn, id)?.ok_or(Error::NotFound("call"))?;
    call.actor(principal)?;
    Ok(call)
}

/// Appends to a call's timeline.
pub(super) fn add_event(
    tx: &Connection,
    call_id: &str,
    at: i64,
    user_id: Option<&str>,
    kind: &str,
    data: Option<&Value>,
) -> Result<(), Error> {
    tx.execute(
        "INSERT INTO call_events (call_id, at, user_id, kind, data) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![call_id, at, user_id, kind, data.map(Value::to_string)],
    )?;
    Ok(())
}

fn insert_participant(
    tx: &Connection,
    call_id: &str,
    user_id: &str,
    role: Role,
    joined_at: Option<i64>,
    video: bool,
) -> Result<(), Error> {
    tx.execute(
        "INSERT INTO call_participants (call_id, user_id, role, joined_at, video)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(call_id, user_id) DO UPDATE SET joined_at = excluded.joined_at, left_at = NULL",
        params![call_id, user_id, role.as_str(), joined_at, video],
    )?;
    Ok(())
}

/// Creates a ringing direct call (callee may be unknown yet: seed 000's host-only call).
pub(super) fn create_direct(conn: &mut Connection, new: &NewCall) -> Result<CallRecord, Error> {
    if new.callee_id.as_deref() == Some(new.caller_id.as_str()) {
        return Err(Error::invalid(
            "invalid_callee",
            "calleeId: you cannot call yourself",
        ));
    }
    let tx = super::begin_write(conn)?;
    let video = new.call_type == CallType::Video;
    let inserted = tx.execute(
        "INSERT INTO calls (id, kind, call_type, caller_id, callee_id, room_id, room_name, status, created_at)
         VALUES (?1, 'direct', ?2, ?3, ?4, ?1, ?5, 'ringing', ?6) ON CONFLICT(id) DO NOTHING",
        params![new.id, new.call_type.as_str(), new.caller_id, new.callee_id, new.room_name, new.now],
    )?;
    if inserted == 0 {
        return Err(Error::conflict(
            "call_exists",
            "a call with this id already exists",
        ));
    }
    insert_participant(
        &tx,
        &new.id,
        &new.caller_id,
        Role::Caller,
        Some(new.now),
        video,
    )?;
    if let Some(callee) = &new.callee_id {
        insert_participant(&tx, &new.id, callee, Role::Callee, None, video)?;
    }
    let data = serde_json::json!({ "callType": new.call_type.as_str(), "calleeId": new.callee_id });
    add_event(
        &tx,
        &new.id,
        new.now,
        Some(&new.caller_id),
        "created",
        Some(&data),
    )?;
    let call = get(&tx, &new.id)?.ok_or(Error::NotFound("call"))?;
    tx.commit()?;
    Ok(call)
}

/// Writes an allowed transition: status, timestamps, participants' join/leave, an event.
fn write_transition(
    tx: &Transaction<'_>,
    call: &CallRecord,
    actor_id: Option<&str>,
    t: Transition,
    now: i64,
) -> Result<(), Error> {
    let reason = t.reason.map(EndReason::as_str);
    if t.to == CallStatus::Active {
        tx.execute(
            "UPDATE calls SET status = 'active', answered_at = ?2 WHERE id = ?1",
            params![call.id, now],
        )?;
        if let Some(user) = actor_id {
            tx.execute(
                "UPDATE call_participants SET joined_at = COALESCE(joined_at, ?3)
                 WHERE call_id = ?1 AND user_id = ?2",
                params![call.id, user, now],
            )?;
        }
        add_event(tx, &call.id, now, actor_id, "accepted", None)?;
        if call.kind == CallKind::Direct {
            webhooks::emit(tx, &hook::call_started(call, now), now)?;
        }
    } else {
        tx.execute(
            "UPDATE calls SET status = ?2, end_reason = ?3, ended_at = ?4 WHERE id = ?1",
            params![call.id, t.to.as_str(), reason, now],
        )?;
        tx.execute(
            "UPDATE call_participants SET left_at = ?2
             WHERE call_id = ?1 AND joined_at IS NOT NULL AND left_at IS NULL",
            params![call.id, now],
        )?;
        let data = serde_json::json!({ "status": t.to.as_str(), "reason": reason });
        add_event(tx, &call.id, now, actor_id, "ended", Some(&data))?;
        if call.kind == CallKind::Direct {
            webhooks::emit(tx, &hook::call_finished(call, t.to, reason, now), now)?;
        }
    }
    Ok(())
}

/// Applies `action` by `principal` (or by the server when `principal` is `None`).
pub(super) fn apply_action(
    conn: &mut Connection,
    id: &str,
    principal: Option<&Principal>,
    action: Action,
    now: i64,
) -> Result<(CallRecord, Transition), Error> {
    let tx = super::begin_write(conn)?;
    let changed = apply_action_in(&tx, id, principal, action, now)?;
    tx.commit()?;
    Ok(changed)
}

/// [`apply_action`]'s rules inside the caller's open write transaction: re-reads the call,
/// checks the transition, writes it; the caller commits.
fn apply_action_in(
    tx: &Transaction<'_>,
    id: &str,
    principal: Option<&Principal>,
    action: Action,
    now: i64,
) -> Result<(CallRecord, Transition), Error> {
    let call = get(tx, id)?.ok_or(Error::NotFound("call"))?;
    let actor = match principal {
        Some(p) => call.actor(p)?,
        None => Actor::System,
    };
    let t = call::transition(call.status, actor, action)?;
    write_transition(tx, &call, principal.map(|p| p.id.as_str()), t, now)?;
    let call = get(tx, id)?.ok_or(Error::NotFound("call"))?;
    Ok((call, t))
}

/// Times out (as the server) the oldest ringing direct calls created at or before `cutoff`, at
/// most `limit`, in one write transaction that selects and applies: SQLite has one writer, so
/// no other sweeper can take the same calls meanwhile.
pub(super) fn expire_ringing(
    conn: &mut Connection,
    cutoff: i64,
    now: i64,
    limit: u32,
) -> Result<Vec<(CallRecord, Transition)>, Error> {
    let tx = super::begin_write(conn)?;
    let ids = {
        let mut stmt = tx.prepare_cached(
            "SELECT id FROM calls WHERE status = 'ringing' AND kind = 'direct' AND created_at <= ?1
             ORDER BY created_at, rowid LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![cutoff, limit], |r| r.get::<_, String>(0))?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    let mut expired = Vec::with_capacity(ids.len());
    for id in ids {
        expired.push(apply_action_in(&tx, &id, None, Action::Timeout, now)?);
    }
    tx.commit()?;
    Ok(expired)
}

/// What joining a direct call as its guest does (see [`guest_join_step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GuestJoin {
    /// The principal already is the call's guest and it is active: nothing to do.
    AlreadyActive,
    /// The principal is the callee already: the call only needs accepting.
    Accept,
    /// The principal becomes the callee (with video for a video call), then accepts.
    AddThenAccept { video: bool },
}

/// Decides, from the call alone, what joining it as its guest does; the same rules for both
/// backends.
pub(crate) fn guest_join_step(
    call: &CallRecord,
    principal: &Principal,
) -> Result<GuestJoin, Error> {
    if call.kind != CallKind::Direct {
        return Err(Error::conflict(
            "not_direct",
            "room calls are joined through their room",
        ));
    }
    if call.caller_id == principal.id {
        return Err(Error::conflict(
            "host_cannot_join",
            "the host cannot join their own call as guest",
        ));
    }
    match call.callee_id.as_deref() {
        Some(guest) if guest == principal.id => {
            if call.status == CallStatus::Active {
                return Ok(GuestJoin::AlreadyActive);
            }
            Ok(GuestJoin::Accept)
        }
        Some(_) => {
            // Someone else is the guest: this user may not even see the call.
            if !principal.admin {
                return Err(Error::NotFound("call"));
            }
            Err(Error::conflict("call_full", "the call already has a guest"))
        }
        None => {
            call::check_media_change(call.status)?;
            Ok(GuestJoin::AddThenAccept {
                video: call.call_type == CallType::Video,
            })
        }
    }
}

/// Seed 000's guest join: the first other user to join a host-only call becomes its callee and
/// the call turns active. Joining again as the same guest returns the call unchanged. The flag
/// says whether this join accepted the call (so callers notify only once).
pub(super) fn join_as_guest(
    conn: &mut Connection,
    id: &str,
    principal: &Principal,
    now: i64,
) -> Result<(CallRecord, bool), Error> {
    let tx = super::begin_write(conn)?;
    let call = get(&tx, id)?.ok_or(Error::NotFound("call"))?;
    match guest_join_step(&call, principal)? {
        GuestJoin::AlreadyActive => return Ok((call, false)),
        GuestJoin::Accept => {}
        GuestJoin::AddThenAccept { video } => {
            tx.execute(
                "UPDATE calls SET callee_id = ?2 WHERE id = ?1",
                params![id, principal.id],
            )?;
            insert_participant(&tx, id, &principal.id, Role::Callee, None, video)?;
        }
    }
    let call = get(&tx, id)?.ok_or(Error::NotFound("call"))?;
    let t = call::transition(
        call.status,
        Actor::Participant(Role::Callee),
        Action::Accept,
    )?;
    write_transition(&tx, &call, Some(&principal.id), t, now)?;
    let call = get(&tx, id)?.ok_or(Error::NotFound("call"))?;
    tx.commit()?;
    Ok((call, true))
}

/// Changes a participant's media state and records it on the timeline.
pub(super) fn set_media(
    conn: &mut Connection,
    id: &str,
    principal: &Principal,
    change: &MediaChange,
    kind: &str,
    now: i64,
) -> Result<CallRecord, Error> {
    let tx = super::begin_write(conn)?;
    let call = get(&tx, id)?.ok_or(Error::NotFound("call"))?;
    if let Actor::Admin = call.actor(principal)? {
        return Err(Error::forbidden(
            "only participants can change their media state",
        ));
    }
    call::check_media_change(call.status)?;
    tx.execute(
        "UPDATE call_participants SET
            audio = COALESCE(?3, audio), video = COALESCE(?4, video),
            screen = COALESCE(?5, screen), camera = COALESCE(?6, camera)
         WHERE call_id = ?1 AND user_id = ?2",
        params![
            id,
            principal.id,
            change.audio,
            change.video,
            change.screen,
            change.camera
        ],
    )?;
    add_event(
        &tx,
        id,
        now,
        Some(&principal.id),
        kind,
        Some(&change.to_json()),
    )?;
    let call = get(&tx, id)?.ok_or(Error::NotFound("call"))?;
    tx.commit()?;
    Ok(call)
}

/// A page of calls, newest first, and the total matching the filter.
pub(super) fn history(
    conn: &Connection,
    f: &HistoryFilter,
) -> Result<(Vec<CallRecord>, u64), Error> {
    let mut clauses = Vec::new();
    let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
    if let Some(user) = &f.user_id {
        args.push(Box::new(user.clone()));
        clauses.push(format!(
            "EXISTS (SELECT 1 FROM call_participants p WHERE p.call_id = calls.id AND p.user_id = ?{})",
            args.len()
        ));
    }
    if let Some(t) = f.call_type {
        args.push(Box::new(t.as_str()));
        clauses.push(format!("call_type = ?{}", args.len()));
    }
    if let Some(s) = f.status {
        args.push(Box::new(s.as_str()));
        clauses.push(format!("status = ?{}", args.len()));
    }
    let filter = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    let params = rusqlite::params_from_iter(args.iter().map(|b| b.as_ref()));
    let total: i64 = conn.query_row(
        &format!("SELECT COUNT(*) FROM calls {filter}"),
        params,
        |r| r.get(0),
    )?;
    let sql = format!(
        "SELECT {CALL_COLUMNS} FROM calls {filter} ORDER BY created_at DESC, rowid DESC LIMIT {} OFFSET {}",
        f.limit, f.offset
    );
    let mut stmt = conn.prepare(&sql)?;
    let params = rusqlite::params_from_iter(args.iter().map(|b| b.as_ref()));
    let mut calls = stmt
        .query_map(params, row_to_call)?
        .collect::<Result<Vec<_>, _>>()?;
    for call in &mut calls {
        call.participants = participants(conn, &call.id)?;
    }
    Ok((calls, u64::try_from(total).unwrap_or(0)))
}

/// A call's timeline, oldest first.
pub(super) fn events(conn: &Connection, call_id: &str) -> Result<Vec<CallEvent>, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT at, user_id, kind, data FROM call_events WHERE call_id = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([call_id], |r| {
        let data: Option<String> = r.get(3)?;
        Ok(CallEvent {
            at: r.get(0)?,
            user_id: r.get(1)?,
            kind: r.get(2)?,
            data: data.and_then(|d| serde_json::from_str(&d).ok()),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// How many calls are in each status (for `/metrics`).
pub(super) fn count_by_status(conn: &Connection) -> Result<Vec<(CallStatus, u64)>, Error> {
    let mut stmt = conn.prepare_cached("SELECT status, COUNT(*) FROM calls GROUP BY status")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (status, n) = row?;
        if let Some(s) = CallStatus::parse(&status) {
            out.push((s, u64::try_from(n).unwrap_or(0)));
        }
    }
    Ok(out)
}

/// Ringing and active calls `user` takes part in, newest first (for `welcome`).
pub(super) fn live_for(conn: &Connection, user: &str) -> Result<Vec<CallRecord>, Error> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {CALL_COLUMNS} FROM calls WHERE status IN ('ringing', 'active') AND EXISTS
           (SELECT 1 FROM call_participants p WHERE p.call_id = calls.id AND p.user_id = ?1 AND p.left_at IS NULL)
         ORDER BY created_at DESC LIMIT 50"
    ))?;
    let mut calls = stmt
        .query_map([user], row_to_call)?
        .collect::<Result<Vec<_>, _>>()?;
    for call in &mut calls {
        call.participants = participants(conn, &call.id)?;
    }
    Ok(calls)
}

/// Every ringing or active call (direct and room), oldest first, at most `limit` (admin view).
pub(super) fn live_all(conn: &Connection, limit: u32) -> Result<Vec<CallRecord>, Error> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {CALL_COLUMNS} FROM calls WHERE status IN ('ringing', 'active')
         ORDER BY created_at, id LIMIT ?1"
    ))?;
    let mut calls = stmt
        .query_map([limit], row_to_call)?
        .collect::<Result<Vec<_>, _>>()?;
    for call in &mut calls {
        call.participants = participants(conn, &call.id)?;
    }
    Ok(calls)
}

/// Makes an existing call (created over REST) ready to ring `callee`: the caller must be
/// `caller`, the call ringing and direct; a host-only call (seed 000) gets `callee` as guest.
pub(super) fn prepare_to_ring(
    conn: &mut Connection,
    id: &str,
    caller: &Principal,
    callee: &str,
) -> Result<CallRecord, Error> {
    let tx = super::begin_write(conn)?;
    let call = get_visible(&tx, id, caller)?;
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
                "UPDATE calls SET callee_id = ?2 WHERE id = ?1",
                params![id, callee],
            )?;
            insert_participant(&tx, id, callee, Role::Callee, None, video)?;
        }
    }
    let call = get(&tx, id)?.ok_or(Error::NotFound("call"))?;
    tx.commit()?;
    Ok(call)
}

/// Every ringing or active call with its rooms and participants' names, read on one connection.
fn live_overview(conn: &Connection, limit: u32) -> Result<LiveCalls, Error> {
    let calls = live_all(conn, limit)?;
    let mut rooms = HashMap::new();
    let mut ids = std::collections::BTreeSet::new();
    for call in &calls {
        ids.extend(call.participants.iter().map(|p| p.user_id.clone()));
        if let (CallKind::Room, Some(room_id)) = (call.kind, &call.room_id) {
            if let Some(room) = rooms::get(conn, room_id)? {
                rooms.insert(call.id.clone(), room);
            }
        }
    }
    let ids: Vec<String> = ids.into_iter().collect();
    let names = users::names(conn, &ids)?;
    Ok(LiveCalls {
        calls,
        rooms,
        names,
    })
}

impl Store {
    /// A call with its participants; `NotFound` if there is none.
    pub async fn call(&self, id: &str) -> Result<CallRecord, Error> {
        if let Some(pg) = self.pg() {
            return self.timed(pg::calls::call(pg, id)).await;
        }
        let id = id.to_string();
        self.run(move |c| get(c, &id)?.ok_or(Error::NotFound("call")))
            .await
    }

    /// A call `principal` may see; unknown and invisible calls are both `NotFound`.
    pub async fn visible_call(&self, id: &str, principal: &Principal) -> Result<CallRecord, Error> {
        if let Some(pg) = self.pg() {
            return self.timed(pg::calls::visible_call(pg, id, principal)).await;
        }
        let (id, principal) = (id.to_string(), principal.clone());
        self.run(move |c| get_visible(c, &id, &principal)).await
    }

    /// Creates a ringing direct call.
    pub async fn create_call(&self, new: NewCall) -> Result<CallRecord, Error> {
        if let Some(pg) = self.pg() {
            return self.timed(pg::calls::create_call(pg, new)).await;
        }
        self.run(move |c| create_direct(c, &new)).await
    }

    /// Applies `action` to a call by `principal` (by the server when `None`), in one
    /// transaction that re-reads the call and checks the transition.
    pub async fn apply_call_action(
        &self,
        id: &str,
        principal: Option<&Principal>,
        action: Action,
        now: i64,
    ) -> Result<(CallRecord, Transition), Error> {
        if let Some(pg) = self.pg() {
            return self
                .timed(pg::calls::apply_call_action(pg, id, principal, action, now))
                .await;
        }
        let (id, principal) = (id.to_string(), principal.cloned());
        self.run(move |c| apply_action(c, &id, principal.as_ref(), action, now))
            .await
    }

    /// Seed 000's guest join; the flag says whether this join accepted the call.
    pub async fn join_call_as_guest(
        &self,
        id: &str,
        principal: &Principal,
        now: i64,
    ) -> Result<(CallRecord, bool), Error> {
        if let Some(pg) = self.pg() {
            return self
                .timed(pg::calls::join_call_as_guest(pg, id, principal, now))
                .await;
        }
        let (id, principal) = (id.to_string(), principal.clone());
        self.run(move |c| join_as_guest(c, &id, &principal, now))
            .await
    }

    /// Changes `principal`'s media state on a call and records it as a `kind` event.
    pub async fn set_call_media(
        &self,
        id: &str,
        principal: &Principal,
        change: MediaChange,
        kind: &str,
        now: i64,
    ) -> Result<CallRecord, Error> {
        if let Some(pg) = self.pg() {
            return self
                .timed(pg::calls::set_call_media(
                    pg, id, principal, change, kind, now,
                ))
                .await;
        }
        let (id, principal, kind) = (id.to_string(), principal.clone(), kind.to_string());
        self.run(move |c| set_media(c, &id, &principal, &change, &kind, now))
            .await
    }

    /// Makes an existing call ready to ring `callee`: the caller must be `caller`, the call
    /// ringing and direct; a host-only call (seed 000) gets `callee` as guest.
    pub async fn prepare_call_to_ring(
        &self,
        id: &str,
        caller: &Principal,
        callee: &str,
    ) -> Result<CallRecord, Error> {
        if let Some(pg) = self.pg() {
            return self
                .timed(pg::calls::prepare_call_to_ring(pg, id, caller, callee))
                .await;
        }
        let (id, caller, callee) = (id.to_string(), caller.clone(), callee.to_string());
        self.run(move |c| prepare_to_ring(c, &id, &caller, &callee))
            .await
    }

    /// A page of calls, newest first, and the total matching the filter.
    pub async fn call_history(
        &self,
        filter: HistoryFilter,
    ) -> Result<(Vec<CallRecord>, u64), Error> {
        if let Some(pg) = self.pg() {
            return self.timed(pg::calls::call_history(pg, filter)).await;
        }
        self.run(move |c| history(c, &filter)).await
    }

    /// How many calls are in each status (for `/metrics`).
    pub async fn call_counts_by_status(&self) -> Result<Vec<(CallStatus, u64)>, Error> {
        if let Some(pg) = self.pg() {
            return self.timed(pg::calls::call_counts_by_status(pg)).await;
        }
        self.run(|c| count_by_status(c)).await
    }

    /// Ends ringing direct calls created at or before `cutoff` as timed out (missed), at most
    /// `limit` per invocation, each in the same transaction that claimed it; on PostgreSQL the
    /// rows are claimed with `FOR UPDATE SKIP LOCKED`, so several nodes sweeping at once never
    /// take the same call.
    ///
    /// Oldest first. Each call gets exactly what [`Store::apply_call_action`] with
    /// [`Action::Timeout`] by the server writes (status `missed`, end reason `timeout`, the
    /// participants' leave times, an `ended` event, the `call.missed` webhook events); the
    /// returned calls are as they are after the change, with their transitions. A call that is
    /// answered or ended meanwhile is not returned. An error rolls the whole batch back.
    pub async fn expire_ringing_before(
        &self,
        cutoff: i64,
        now: i64,
        limit: u32,
    ) -> Result<Vec<(CallRecord, Transition)>, Error> {
        if let Some(pg) = self.pg() {
            return self
                .timed(pg::calls::expire_ringing_before(pg, cutoff, now, limit))
                .await;
        }
        self.run(move |c| expire_ringing(c, cutoff, now, limit))
            .await
    }

    /// Ringing and active calls `user` takes part in, newest first (for `welcome`).
    pub async fn live_calls_for(&self, user: &str) -> Result<Vec<CallRecord>, Error> {
        if let Some(pg) = self.pg() {
            return self.timed(pg::calls::live_calls_for(pg, user)).await;
        }
        let user = user.to_string();
        self.run(move |c| live_for(c, &user)).await
    }

    /// Every ringing or active call (at most `limit`, oldest first), with the rooms of the room
    /// calls and the participants' display names (admin live view).
    pub async fn live_calls(&self, limit: u32) -> Result<LiveCalls, Error> {
        if let Some(pg) = self.pg() {
            return self.timed(pg::calls::live_calls(pg, limit)).await;
        }
        self.run(move |c| live_overview(c, limit)).await
    }
}
