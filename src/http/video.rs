//! Seed 000's REST endpoints under `/api/video/calls`, with the `{success, data}` envelope.
//! Errors get `{"success":false,"error":{…}}` from [`envelope`], applied to these paths.

use axum::body::{to_bytes, Body};
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::app::calls::CreateCall;
use crate::error::Error;
use crate::http::extract::{parse_id, ApiJson, Auth};
use crate::http::schema::VideoCallReply;
use crate::http::AppState;
use crate::signaling::call::CallType;
use crate::store::calls;
use crate::views;

pub const PREFIX: &str = "/api/video/";

fn ok(call: &calls::CallRecord) -> Json<Value> {
    Json(json!({ "success": true, "data": views::video_call(call) }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateVideoCall {
    /// At most 100 characters; blank means none.
    #[schema(max_length = 100)]
    room_name: Option<String>,
    /// `audio` or `video` (default `video`).
    call_type: Option<CallType>,
}

/// Create a call as its host; a guest joins it later.
#[utoipa::path(post, path = "/api/video/calls", tag = "video (seed 000)",
    request_body(content = Option<CreateVideoCall>, description = "Optional: an empty body creates a video call without a room name."),
    responses(
        (status = 201, description = "The call, status `pending`", body = VideoCallReply),
        (status = 409, description = "`call_exists`: a call with the generated id exists (retry)."),
    ),
    security(("bearer" = [])))]
pub async fn create(
    State(app): State<AppState>,
    Auth(me): Auth,
    ApiJson(body): ApiJson<CreateVideoCall>,
) -> Result<(StatusCode, Json<Value>), Error> {
    let room_name = crate::signaling::call::room_name(body.room_name, "room_name")?;
    let new = CreateCall {
        caller_id: me.id.clone(),
        callee_id: None,
        call_type: body.call_type.unwrap_or(CallType::Video),
        room_name,
    };
    let call = app.signaling.create_call(&me, new).await?.value;
    Ok((StatusCode::CREATED, ok(&call)))
}

/// Join a call as its guest; the call becomes active.
#[utoipa::path(post, path = "/api/video/calls/{callId}/join", tag = "video (seed 000)",
    params(("callId" = Uuid, Path, description = "call id (UUID)")),
    responses(
        (status = 200, description = "The call, status `active`", body = VideoCallReply),
        (status = 404, description = "Unknown, or another user is its guest."),
        (status = 409, description = "`host_cannot_join`, `not_direct`, `call_ended`. Nothing changed."),
    ),
    security(("bearer" = [])))]
pub async fn join(
    State(app): State<AppState>,
    Auth(me): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let id = parse_id(&id, "callId")?;
    let call = app.signaling.join_as_guest(&me, &id).await?.value;
    Ok(ok(&call))
}

/// End a call you take part in; status becomes `ended`.
#[utoipa::path(post, path = "/api/video/calls/{callId}/end", tag = "video (seed 000)",
    params(("callId" = Uuid, Path, description = "call id (UUID)")),
    responses(
        (status = 200, description = "The call, status `ended`", body = VideoCallReply),
        (status = 404),
        (status = 409, description = "`call_ended`. Nothing changed."),
    ),
    security(("bearer" = [])))]
pub async fn end(
    State(app): State<AppState>,
    Auth(me): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let id = parse_id(&id, "callId")?;
    let call = app.signaling.hangup(&me, &id).await?.value;
    Ok(ok(&call))
}

/// A call you take part in.
#[utoipa::path(get, path = "/api/video/calls/{callId}", tag = "video (seed 000)",
    params(("callId" = Uuid, Path, description = "call id (UUID)")),
    responses((status = 200, description = "The call", body = VideoCallReply), (status = 404)),
    security(("bearer" = [])))]
pub async fn get(
    State(app): State<AppState>,
    Auth(me): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let id = parse_id(&id, "callId")?;
    let call = app.store.visible_call(&id, &me).await?;
    Ok(ok(&call))
}

/// Wraps error bodies on seed 000 paths as `{"success":false,"error":{…}}`.
pub async fn envelope(req: Request, next: Next) -> Response {
    let wrap = req.uri().path().starts_with(PREFIX);
    let response = next.run(req).await;
    if !wrap || response.status().is_success() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let error = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v.get("error").cloned())
        .unwrap_or_else(|| json!({ "code": "error", "message": String::from_utf8_lossy(&bytes) }));
    let body = json!({ "success": false, "error": error }).to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body))
}
