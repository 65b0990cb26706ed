//! Seed 001's call endpoints: create, accept, reject, hang up, mute, switch camera, get,
//! history, analytics, and stats reports.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use utoipa::ToSchema;

use crate::app::calls::CreateCall as NewCall;
use crate::app::Origin;
use crate::clock::now_ms;
use crate::error::Error;
use crate::http::extract::{parse_id, user_id_field, ApiJson, Auth};
use crate::http::schema::{
    AnalyticsReply, CallChanged, CallHistory, CallReply, CreatedCall, MessageReply,
};
use crate::http::AppState;
use crate::signaling::call::MediaChange;
use crate::signaling::call::{self, Action, CallStatus, CallType};
use crate::store::calls::{CallRecord, HistoryFilter};
use crate::views;

/// Largest page of `GET /calls/history`.
pub const MAX_HISTORY_LIMIT: u32 = 100;
const DEFAULT_HISTORY_LIMIT: u32 = 20;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateCall {
    /// Must be the token's user (admins may create calls for others). Defaults to it.
    #[schema(pattern = "^[A-Za-z0-9._@-]{1,64}$")]
    caller_id: Option<String>,
    /// The user to ring; not yourself.
    #[schema(pattern = "^[A-Za-z0-9._@-]{1,64}$")]
    callee_id: String,
    /// `audio` or `video` (default `video`).
    call_type: Option<CallType>,
    /// At most 100 characters; blank means none.
    #[schema(max_length = 100)]
    room_name: Option<String>,
}

/// Start a call to a user; it rings until accepted, rejected, cancelled or timed out.
#[utoipa::path(post, path = "/calls", tag = "calls", request_body = CreateCall,
    responses(
        (status = 201, description = "The ringing call", body = CreatedCall),
        (status = 400, description = "Invalid input, or `invalid_callee` when calleeId is the caller. Nothing changed."),
        (status = 403, description = "callerId is another user and you are not an admin."),
        (status = 409, description = "`call_exists`: a call with the generated id exists (retry)."),
    ),
    security(("bearer" = [])))]
pub async fn create_call(
    State(app): State<AppState>,
    Auth(me): Auth,
    ApiJson(body): ApiJson<CreateCall>,
) -> Result<(StatusCode, Json<Value>), Error> {
    let caller_id = match body.caller_id {
        Some(id) => user_id_field(&id, "callerId")?,
        None => me.id.clone(),
    };
    let new = NewCall {
        caller_id,
        callee_id: Some(user_id_field(&body.callee_id, "calleeId")?),
        call_type: body.call_type.unwrap_or(CallType::Video),
        room_name: call::room_name(body.room_name, "roomName")?,
    };
    let call = app.signaling.create_call(&me, new).await?.value;
    let body =
        json!({ "callSession": views::call_session(&call, now_ms()), "roomId": call.room_id });
    Ok((StatusCode::CREATED, Json(body)))
}

async fn act(
    app: &AppState,
    me: crate::auth::Principal,
    raw_id: &str,
    action: Action,
) -> Result<CallRecord, Error> {
    let id = parse_id(raw_id, "callId")?;
    let done = match action {
        Action::Accept => app.signaling.accept(Origin::Rest, &me, &id).await?,
        Action::Reject => app.signaling.reject(&me, &id, None).await?,
        _ => app.signaling.hangup(&me, &id).await?,
    };
    Ok(done.value)
}

/// Accept a ringing call (callee only).
#[utoipa::path(put, path = "/calls/{callId}/accept", tag = "calls",
    params(("callId" = Uuid, Path, description = "call id (UUID)")),
    responses(
        (status = 200, description = "The call, now active", body = CallReply),
        (status = 403, description = "Only the callee accepts."),
        (status = 404),
        (status = 409, description = "`already_active` or `call_ended`. Nothing changed."),
    ),
    security(("bearer" = [])))]
pub async fn accept_call(
    State(app): State<AppState>,
    Auth(me): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let call = act(&app, me, &id, Action::Accept).await?;
    Ok(Json(
        json!({ "callSession": views::call_session(&call, now_ms()) }),
    ))
}

/// Reject a ringing call (callee only).
#[utoipa::path(put, path = "/calls/{callId}/reject", tag = "calls",
    params(("callId" = Uuid, Path, description = "call id (UUID)")),
    responses(
        (status = 200, description = "`Call rejected` and the call", body = CallChanged),
        (status = 403, description = "Only the callee rejects (the caller hangs up to cancel)."),
        (status = 404),
        (status = 409, description = "`already_active` or `call_ended`. Nothing changed."),
    ),
    security(("bearer" = [])))]
pub async fn reject_call(
    State(app): State<AppState>,
    Auth(me): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let call = act(&app, me, &id, Action::Reject).await?;
    Ok(Json(
        json!({ "message": "Call rejected", "callSession": views::call_session(&call, now_ms()) }),
    ))
}

/// End a call: cancels it while ringing (caller), rejects it (callee), or ends it when active.
/// An admin ends any call for everyone (reason `admin`); a room's call ends with every peer
/// leaving, and the room stays.
#[utoipa::path(put, path = "/calls/{callId}/hangup", tag = "calls",
    params(("callId" = Uuid, Path, description = "call id (UUID)")),
    responses(
        (status = 200, description = "`Call ended` and the call", body = CallChanged),
        (status = 403, description = "Not allowed to leave this room call."),
        (status = 404),
        (status = 409, description = "`call_ended` or `not_in_room`. Nothing changed."),
    ),
    security(("bearer" = [])))]
pub async fn hangup_call(
    State(app): State<AppState>,
    Auth(me): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let call = act(&app, me, &id, Action::Hangup).await?;
    Ok(Json(
        json!({ "message": "Call ended", "callSession": views::call_session(&call, now_ms()) }),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct Mute {
    /// true to mute, false to unmute.
    mute: bool,
}

async fn media(
    app: &AppState,
    me: crate::auth::Principal,
    raw_id: &str,
    change: MediaChange,
    kind: &'static str,
) -> Result<CallRecord, Error> {
    let id = parse_id(raw_id, "callId")?;
    Ok(app.signaling.media(&me, &id, change, kind).await?.value)
}

/// Applies a mute change and answers `{message: "<what> muted|unmuted", callSession}`.
async fn mute(
    app: &AppState,
    me: crate::auth::Principal,
    raw_id: &str,
    change: MediaChange,
    muted: bool,
    what: &str,
) -> Result<Json<Value>, Error> {
    let call = media(app, me, raw_id, change, "media").await?;
    let message = format!("{what} {}", if muted { "muted" } else { "unmuted" });
    Ok(Json(
        json!({ "message": message, "callSession": views::call_session(&call, now_ms()) }),
    ))
}

/// Mute or unmute your microphone in a call.
#[utoipa::path(put, path = "/calls/{callId}/mute-audio", tag = "calls", request_body = Mute,
    params(("callId" = Uuid, Path, description = "call id (UUID)")),
    responses(
        (status = 200, description = "`Audio muted` or `Audio unmuted`, and the call", body = CallChanged),
        (status = 403, description = "Admins who are not participants have no media."),
        (status = 404),
        (status = 409, description = "`call_ended`. Nothing changed."),
    ),
    security(("bearer" = [])))]
pub async fn mute_audio(
    State(app): State<AppState>,
    Auth(me): Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Mute>,
) -> Result<Json<Value>, Error> {
    let change = MediaChange {
        audio: Some(!body.mute),
        ..Default::default()
    };
    mute(&app, me, &id, change, body.mute, "Audio").await
}

/// Turn your camera off or on in a call.
#[utoipa::path(put, path = "/calls/{callId}/mute-video", tag = "calls", request_body = Mute,
    params(("callId" = Uuid, Path, description = "call id (UUID)")),
    responses(
        (status = 200, description = "`Video muted` or `Video unmuted`, and the call", body = CallChanged),
        (status = 403, description = "Admins who are not participants have no media."),
        (status = 404),
        (status = 409, description = "`call_ended`. Nothing changed."),
    ),
    security(("bearer" = [])))]
pub async fn mute_video(
    State(app): State<AppState>,
    Auth(me): Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Mute>,
) -> Result<Json<Value>, Error> {
    let change = MediaChange {
        video: Some(!body.mute),
        ..Default::default()
    };
    mute(&app, me, &id, change, body.mute, "Video").await
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SwitchCamera {
    /// The camera now in use (e.g. `front`, `back`, or a device label); optional.
    #[schema(max_length = 200)]
    camera: Option<String>,
}

/// Record a camera switch during a call.
#[utoipa::path(put, path = "/calls/{callId}/switch-camera", tag = "calls",
    request_body(content = Option<SwitchCamera>, description = "Optional: an empty body records a switch without naming the camera."),
    params(("callId" = Uuid, Path, description = "call id (UUID)")),
    responses(
        (status = 200, description = "`Camera switched` and the call", body = CallChanged),
        (status = 403, description = "Admins who are not participants have no camera."),
        (status = 404),
        (status = 409, description = "`call_ended`. Nothing changed."),
    ),
    security(("bearer" = [])))]
pub async fn switch_camera(
    State(app): State<AppState>,
    Auth(me): Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SwitchCamera>,
) -> Result<Json<Value>, Error> {
    let camera = match body.camera {
        Some(c) if c.chars().count() > 200 => {
            return Err(Error::invalid(
                "invalid_field",
                "camera: at most 200 characters",
            ))
        }
        Some(c) => c,
        None => "switched".to_string(),
    };
    let change = MediaChange {
        camera: Some(camera),
        ..Default::default()
    };
    let call = media(&app, me, &id, change, "camera-switched").await?;
    Ok(Json(
        json!({ "message": "Camera switched", "callSession": views::call_session(&call, now_ms()) }),
    ))
}

/// A call you take part in (admins: any call).
#[utoipa::path(get, path = "/calls/{callId}", tag = "calls",
    params(("callId" = Uuid, Path, description = "call id (UUID)")),
    responses((status = 200, description = "The call", body = CallReply), (status = 404)),
    security(("bearer" = [])))]
pub async fn get_call(
    State(app): State<AppState>,
    Auth(me): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let id = parse_id(&id, "callId")?;
    let call = app.store.visible_call(&id, &me).await?;
    Ok(Json(
        json!({ "callSession": views::call_session(&call, now_ms()) }),
    ))
}

fn query_number(q: &HashMap<String, String>, name: &str, default: u32) -> Result<u32, Error> {
    match q.get(name) {
        None => Ok(default),
        Some(v) => v.trim().parse::<u32>().map_err(|_| {
            Error::invalid(
                "invalid_query",
                format!("{name}: `{v}` is not a non-negative whole number"),
            )
        }),
    }
}

/// Your calls, newest first (admins: every call, or `userId=`'s).
#[utoipa::path(get, path = "/calls/history", tag = "calls",
    params(
        ("limit" = Option<u32>, Query, format = Int64, minimum = 1, maximum = 4294967295.0,
            description = "page size (default 20; values above 100 are capped to 100)"),
        ("offset" = Option<u32>, Query, format = Int64, minimum = 0, maximum = 4294967295.0,
            description = "calls to skip"),
        ("type" = Option<CallType>, Query, description = "only audio or only video calls"),
        ("status" = Option<CallStatus>, Query, description = "only calls in this status"),
        ("userId" = Option<String>, Query, pattern = "^[A-Za-z0-9._@-]{1,64}$",
            description = "another user's history (admins only; others may name only themselves)"),
    ),
    responses(
        (status = 200, description = "Newest first", body = CallHistory),
        (status = 403, description = "userId is another user and you are not an admin."),
    ),
    security(("bearer" = [])))]
pub async fn history(
    State(app): State<AppState>,
    Auth(me): Auth,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, Error> {
    let Query(q) = query.map_err(|e| Error::invalid("invalid_query", e.body_text()))?;
    let limit = query_number(&q, "limit", DEFAULT_HISTORY_LIMIT)?;
    if limit == 0 {
        return Err(Error::invalid("invalid_query", "limit: must be at least 1"));
    }
    let limit = limit.min(MAX_HISTORY_LIMIT);
    let offset = query_number(&q, "offset", 0)?;
    let call_type = match q.get("type") {
        Some(t) => Some(CallType::parse(t).ok_or_else(|| {
            Error::invalid(
                "invalid_query",
                format!("type: `{t}` is not audio or video"),
            )
        })?),
        None => None,
    };
    let status = match q.get("status") {
        Some(s) => Some(CallStatus::parse(s).ok_or_else(|| {
            let all: Vec<_> = CallStatus::ALL.iter().map(|s| s.as_str()).collect();
            Error::invalid(
                "invalid_query",
                format!("status: `{s}` is not one of {}", all.join(", ")),
            )
        })?),
        None => None,
    };
    let user_id = match (q.get("userId"), me.admin) {
        (Some(u), true) => Some(user_id_field(u, "userId")?),
        (None, true) => None,
        (Some(u), false) if *u != me.id => {
            return Err(Error::forbidden(
                "only admins can read another user's history",
            ))
        }
        (_, false) => Some(me.id.clone()),
    };
    let filter = HistoryFilter {
        user_id,
        call_type,
        status,
        limit,
        offset,
    };
    let (calls, total) = app.store.call_history(filter).await?;
    let now = now_ms();
    Ok(Json(json!({
        "calls": calls.iter().map(|c| views::call_session(c, now)).collect::<Vec<_>>(),
        "total": total,
        "limit": limit,
        "offset": offset,
    })))
}

/// Duration, setup time, participants, media timeline, quality and relay usage of a call.
#[utoipa::path(get, path = "/calls/{callId}/analytics", tag = "calls",
    params(("callId" = Uuid, Path, description = "call id (UUID)")),
    responses((status = 200, description = "The call's analytics", body = AnalyticsReply), (status = 404)),
    security(("bearer" = [])))]
pub async fn call_analytics(
    State(app): State<AppState>,
    Auth(me): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let id = parse_id(&id, "callId")?;
    let now = now_ms();
    let live = app.relay.as_ref().map(|r| r.live()).unwrap_or_default();
    let mut stored = app.store.call_analytics(&id, &me, now).await?;
    crate::relay::apply_live(&mut stored.relay, &live);
    let body = views::analytics(
        &stored.call,
        &stored.events,
        &stored.quality,
        &stored.relay,
        &stored.sfu,
        &stored.sfu_quality,
        now,
    );
    Ok(Json(json!({ "analytics": body })))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct StatsReport {
    /// A client getStats summary: `rttMs`, `jitterMs`, `packetLoss`, `bitrateKbps`, anything else.
    #[schema(value_type = Object)]
    stats: Value,
}

/// Store a quality report for a call you take part in (what `call-stats` does on sockets).
#[utoipa::path(post, path = "/calls/{callId}/stats", tag = "calls", request_body = StatsReport,
    params(("callId" = Uuid, Path, description = "call id (UUID)")),
    responses(
        (status = 202, description = "`Report stored`", body = MessageReply),
        (status = 403, description = "Only participants report stats."),
        (status = 404),
    ),
    security(("bearer" = [])))]
pub async fn post_stats(
    State(app): State<AppState>,
    Auth(me): Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<StatsReport>,
) -> Result<(StatusCode, Json<Value>), Error> {
    let id = parse_id(&id, "callId")?;
    app.signaling
        .report_stats(&me, &id, body.stats)
        .await?
        .then
        .send();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "message": "Report stored" })),
    ))
}
