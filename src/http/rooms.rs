//! Seed 001's room endpoints: create, get, join (→ `{room, peerId}`), leave, delete.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::app::rooms::CreateRoom as NewRoom;
use crate::app::Origin;
use crate::error::Error;
use crate::http::extract::{parse_id, user_id_field, ApiJson, Auth};
use crate::http::schema::{MessageReply, RoomJoined, RoomReply};
use crate::http::AppState;
use crate::signaling::topology::RoomMode;
use crate::views;

/// Bounds of `maxParticipants` (a mesh call beyond a dozen peers is not usable anyway).
pub const MAX_PARTICIPANTS: u32 = 16;
const DEFAULT_PARTICIPANTS: u32 = 8;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateRoom {
    /// 1 to 100 characters, not all whitespace (stored trimmed).
    #[schema(min_length = 1, max_length = 100, pattern = "\\S")]
    #[serde(deserialize_with = "crate::http::extract::display_name")]
    name: String,
    /// 2..=16, default 8.
    #[schema(minimum = 2, maximum = 16)]
    #[serde(
        default,
        deserialize_with = "crate::http::extract::optional_whole_number"
    )]
    max_participants: Option<u32>,
    /// Private rooms admit only the owner, `members` and admins.
    is_private: Option<bool>,
    /// User ids admitted to a private room (at most 100).
    #[schema(schema_with = crate::http::schema::member_list)]
    members: Option<Vec<String>>,
    /// `auto` (default): peer-to-peer for two, through the server's SFU from `sfu_threshold`
    /// participants on; `mesh`: always peer-to-peer; `sfu`: always through the SFU.
    mode: Option<RoomMode>,
}

/// Create a group room.
#[utoipa::path(post, path = "/rooms", tag = "rooms", request_body = CreateRoom,
    responses((status = 201, description = "The new room", body = RoomReply)),
    security(("bearer" = [])))]
pub async fn create_room(
    State(app): State<AppState>,
    Auth(me): Auth,
    ApiJson(body): ApiJson<CreateRoom>,
) -> Result<(StatusCode, Json<Value>), Error> {
    let name = body.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(Error::invalid(
            "invalid_field",
            "name: must be 1 to 100 characters",
        ));
    }
    let max = body.max_participants.unwrap_or(DEFAULT_PARTICIPANTS);
    if !(2..=MAX_PARTICIPANTS).contains(&max) {
        return Err(Error::invalid(
            "invalid_field",
            format!("maxParticipants: must be between 2 and {MAX_PARTICIPANTS}"),
        ));
    }
    let members = body.members.unwrap_or_default();
    if members.len() > 100 {
        return Err(Error::invalid(
            "invalid_field",
            "members: at most 100 users",
        ));
    }
    let members = members
        .iter()
        .enumerate()
        .map(|(i, m)| user_id_field(m, &format!("members[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let new = NewRoom {
        name,
        max_participants: max,
        is_private: body.is_private.unwrap_or(false),
        mode: body.mode.unwrap_or_default(),
        members,
    };
    let room = app.signaling.create_room(&me, new).await?.value;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "room": views::room(&room) })),
    ))
}

/// A room (private rooms: owner, members and admins only).
#[utoipa::path(get, path = "/rooms/{roomId}", tag = "rooms",
    params(("roomId" = Uuid, Path, description = "room id (UUID)")),
    responses(
        (status = 200, description = "The room", body = RoomReply),
        (status = 403, description = "A private room you are not admitted to."),
        (status = 404),
    ),
    security(("bearer" = [])))]
pub async fn get_room(
    State(app): State<AppState>,
    Auth(me): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let id = parse_id(&id, "roomId")?;
    let room = app.store.visible_room(&id, &me).await?;
    Ok(Json(json!({ "room": views::room(&room) })))
}

/// Enter a room; answers your peer id (409 when full, 403 for a private room you are not in).
#[utoipa::path(post, path = "/rooms/{roomId}/join", tag = "rooms",
    params(("roomId" = Uuid, Path, description = "room id (UUID)")),
    responses(
        (status = 200, description = "You are in the room", body = RoomJoined),
        (status = 403, description = "A private room you are not admitted to."),
        (status = 404),
        (status = 409, description = "`room_full`. Nothing changed."),
    ),
    security(("bearer" = [])))]
pub async fn join_room(
    State(app): State<AppState>,
    Auth(me): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let id = parse_id(&id, "roomId")?;
    let joined = app
        .signaling
        .join_room(Origin::Rest, &me, &id)
        .await?
        .value
        .joined;
    Ok(Json(
        json!({ "room": views::room(&joined.room), "peerId": joined.peer_id, "callId": joined.call_id }),
    ))
}

/// Leave a room.
#[utoipa::path(post, path = "/rooms/{roomId}/leave", tag = "rooms",
    params(("roomId" = Uuid, Path, description = "room id (UUID)")),
    responses(
        (status = 200, description = "`Left room`", body = MessageReply),
        (status = 403, description = "A private room you are not admitted to."),
        (status = 404),
        (status = 409, description = "`not_in_room`. Nothing changed."),
    ),
    security(("bearer" = [])))]
pub async fn leave_room(
    State(app): State<AppState>,
    Auth(me): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let id = parse_id(&id, "roomId")?;
    app.signaling.leave_room(&me, &id).await?.then.send();
    Ok(Json(json!({ "message": "Left room" })))
}

/// Delete a room (owner or admin); a call in it ends.
#[utoipa::path(delete, path = "/rooms/{roomId}", tag = "rooms",
    params(("roomId" = Uuid, Path, description = "room id (UUID)")),
    responses(
        (status = 200, description = "`Room deleted`", body = MessageReply),
        (status = 403, description = "Only the owner or an admin deletes a room."),
        (status = 404),
    ),
    security(("bearer" = [])))]
pub async fn delete_room(
    State(app): State<AppState>,
    Auth(me): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let id = parse_id(&id, "roomId")?;
    app.signaling.delete_room(&me, &id).await?.then.send();
    Ok(Json(json!({ "message": "Room deleted" })))
}
