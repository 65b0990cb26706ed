//! OpenAPI schemas the routes share: the error bodies, the call model's string enums, the reply
//! envelopes the handlers build, and [`document_errors`], the pass that gives every operation its
//! standard error answers (401, 400, 413, 415) with the error schema its path really uses, and
//! optional JSON bodies their object schema.

use std::borrow::Cow;

use serde::Serialize;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, Required, Response, ResponseBuilder};
use utoipa::{PartialSchema, ToSchema};

use crate::http::video;
use crate::signaling::call::{CallStatus, CallType, EndReason, Role};
use crate::views::{Analytics, CallSession, RoomView, VideoCall};

/// What went wrong: a stable machine-readable code and a message naming the field or state.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    /// e.g. `invalid_field`, `invalid_json`, `invalid_id`, `invalid_query`, `unauthorized`,
    /// `invalid_token`, `forbidden`, `not_found`, `call_ended`, `already_active`, `room_full`,
    /// `payload_too_large`, `unsupported_media_type`, `rate_limited`.
    #[schema(min_length = 1)]
    pub code: String,
    pub message: String,
}

/// Every error answer outside seed 000's paths.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

fn const_bool(value: bool) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Boolean)
        .enum_values(Some([value]))
        .into()
}

fn always_false() -> Schema {
    const_bool(false)
}

fn always_true() -> Schema {
    const_bool(true)
}

/// Error answers on seed 000's paths (`/api/video/*`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VideoErrorBody {
    #[schema(schema_with = always_false)]
    pub success: bool,
    pub error: ErrorDetail,
}

/// Documents a call-model enum as a string with exactly the spellings it serializes to.
macro_rules! string_enum_schema {
    ($($ty:ident),+) => {$(
        impl PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some($ty::ALL.iter().map(|v| v.as_str())))
                    .into()
            }
        }
        impl ToSchema for $ty {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($ty))
            }
        }
    )+};
}

string_enum_schema!(CallStatus, CallType, EndReason, Role);

/// `POST /calls`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreatedCall {
    pub call_session: CallSession,
    /// The call's signaling room (the call id for a direct call).
    #[schema(required = true)]
    pub room_id: Option<String>,
}

/// A call.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CallReply {
    pub call_session: CallSession,
}

/// A change to a call: what happened, and the call afterwards.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CallChanged {
    /// e.g. `Call rejected`, `Call ended`, `Audio muted`, `Video unmuted`, `Camera switched`.
    pub message: String,
    pub call_session: CallSession,
}

/// A page of call history.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallHistory {
    pub calls: Vec<CallSession>,
    /// Calls matching the filter, over all pages.
    #[schema(minimum = 0)]
    pub total: u64,
    #[schema(minimum = 1, maximum = 100)]
    pub limit: u32,
    #[schema(minimum = 0)]
    pub offset: u32,
}

/// `GET /calls/:id/analytics`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsReply {
    pub analytics: Analytics,
}

/// An action that has nothing more to show than that it was done.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageReply {
    /// e.g. `Report stored`, `Left room`, `Room deleted`.
    pub message: String,
}

/// A room.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoomReply {
    pub room: RoomView,
}

/// `POST /rooms/:id/join`: the room, your peer id in it, and the room's call.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoomJoined {
    pub room: RoomView,
    #[schema(format = Uuid)]
    pub peer_id: String,
    #[schema(format = Uuid)]
    pub call_id: String,
}

/// Seed 000's success envelope around a call.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VideoCallReply {
    #[schema(schema_with = always_true)]
    pub success: bool,
    pub data: VideoCall,
}

/// The documented pattern of a user id (what [`crate::auth::validate_user_id`] accepts).
pub const USER_ID_PATTERN: &str = "^[A-Za-z0-9._@-]{1,64}$";

/// `members` of `POST /rooms`: null, or at most 100 user ids.
pub fn member_list() -> Schema {
    let id = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(USER_ID_PATTERN));
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .description(Some("User ids admitted to a private room (at most 100)."))
        .items(id)
        .max_items(Some(100))
        .into()
}

const ERROR_BODY: &str = "ErrorBody";
const VIDEO_ERROR_BODY: &str = "VideoErrorBody";

/// The description of a standard error status, used where a route gives none.
fn default_description(status: &str) -> &'static str {
    match status {
        "400" => "Invalid input; the code (`invalid_field`, `invalid_json`, `invalid_id`, `invalid_query`, `invalid_request`) and the message name what is wrong. Nothing changed.",
        "401" => "Missing, malformed or expired bearer token.",
        "403" => "Not allowed for this user. Nothing changed.",
        "404" => "Unknown, or not visible to this user.",
        "409" => "The current state forbids it. Nothing changed.",
        "413" => "The request body is larger than the server accepts (`max_body_bytes`).",
        "415" => "A non-empty body that is not sent as `Content-Type: application/json`.",
        "429" => "Too many requests; retry after `Retry-After` seconds.",
        _ => "Error.",
    }
}

fn error_response(status: &str, description: &str, schema: &str) -> Response {
    let description = if description.is_empty() {
        default_description(status)
    } else {
        description
    };
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(schema)))
            .build(),
    );
    let text = || -> RefOr<Schema> { String::schema() };
    match status {
        "401" => {
            response = response.header(
                "WWW-Authenticate",
                HeaderBuilder::new()
                    .schema(text())
                    .description(Some("`Bearer`"))
                    .build(),
            )
        }
        "429" => {
            response = response.header(
                "Retry-After",
                HeaderBuilder::new()
                    .schema(u64::schema())
                    .description(Some("seconds to wait"))
                    .build(),
            )
        }
        _ => {}
    }
    response.build()
}

fn is_null(schema: &RefOr<Schema>) -> bool {
    matches!(schema, RefOr::T(Schema::Object(o)) if o.schema_type == SchemaType::Type(Type::Null))
}

/// An optional body (`request_body = Option<T>`) may be left out, but when sent it must be the
/// object `T` (`null` is refused like any non-object): document `T`, not `T | null`.
fn object_when_present(op: &mut Operation) {
    let Some(body) = op.request_body.as_mut() else {
        return;
    };
    if body.required == Some(Required::True) {
        return;
    }
    for content in body.content.values_mut() {
        if let Some(RefOr::T(Schema::OneOf(one))) = &content.schema {
            let mut present = one.items.iter().filter(|s| !is_null(s));
            if let (Some(only), None) = (present.next(), present.next()) {
                content.schema = Some(only.clone());
            }
        }
    }
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
        &mut item.head,
        &mut item.options,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

/// Completes every operation's error answers, from what the operation declares:
/// - a bearer-secured operation can answer 401;
/// - one that reads a JSON body can answer 400, 413 and 415;
/// - one with path or query parameters can answer 400 (e.g. `invalid_id` for a non-UUID id);
/// - every 4xx answer without a body gets the error schema of its path: `ErrorBody`, or
///   `VideoErrorBody` under seed 000's `/api/video/`.
///
/// Statuses that depend on the route (403, 404, 409, 429) are declared on the route itself.
pub fn document_errors(doc: &mut OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let schema = if path.starts_with(video::PREFIX) {
            VIDEO_ERROR_BODY
        } else {
            ERROR_BODY
        };
        for op in operations(item) {
            object_when_present(op);
            let mut implied = Vec::new();
            let secured = op.security.as_ref().is_some_and(|reqs| !reqs.is_empty());
            if secured {
                implied.push("401");
            }
            if op.request_body.is_some() {
                implied.extend(["400", "413", "415"]);
            }
            let has_params = op.parameters.as_ref().is_some_and(|ps| {
                ps.iter()
                    .any(|p| matches!(p.parameter_in, ParameterIn::Path | ParameterIn::Query))
            });
            if has_params {
                implied.push("400");
            }
            let responses = &mut op.responses.responses;
            for status in implied {
                responses
                    .entry(status.to_string())
                    .or_insert_with(|| RefOr::T(Response::new("")));
            }
            for (status, response) in responses.iter_mut() {
                let RefOr::T(r) = response else { continue };
                if status.starts_with('4') && r.content.is_empty() {
                    *r = error_response(status, &r.description, schema);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn doc() -> Value {
        let (_, doc) = crate::http::api();
        serde_json::to_value(&doc).expect("openapi json")
    }

    fn responses<'a>(doc: &'a Value, path: &str, method: &str) -> &'a Value {
        &doc["paths"][path][method]["responses"]
    }

    #[test]
    fn secured_operations_document_401_with_the_error_schema() {
        let doc = doc();
        let paths = doc["paths"].as_object().expect("paths");
        for (path, item) in paths {
            for (method, op) in item.as_object().expect("item") {
                if op.get("security").is_none() {
                    continue;
                }
                let r = &op["responses"]["401"];
                let want = if path.starts_with("/api/video/") {
                    "#/components/schemas/VideoErrorBody"
                } else {
                    "#/components/schemas/ErrorBody"
                };
                assert_eq!(
                    r["content"]["application/json"]["schema"]["$ref"], want,
                    "{method} {path}"
                );
            }
        }
    }

    #[test]
    fn json_bodies_document_400_413_415() {
        let doc = doc();
        let r = responses(&doc, "/rooms", "post");
        for status in ["400", "413", "415"] {
            assert!(
                r[status]["content"]["application/json"].is_object(),
                "{status}"
            );
        }
    }

    #[test]
    fn path_ids_are_uuids() {
        let doc = doc();
        let params = &doc["paths"]["/calls/{callId}"]["get"]["parameters"][0];
        assert_eq!(params["schema"]["format"], "uuid");
        assert!(responses(&doc, "/calls/{callId}", "get")["400"].is_object());
    }

    #[test]
    fn enums_list_their_spellings() {
        let doc = doc();
        let call_type = &doc["components"]["schemas"]["CallType"];
        assert_eq!(call_type["enum"], serde_json::json!(["audio", "video"]));
        let status = &doc["components"]["schemas"]["CallStatus"]["enum"];
        assert_eq!(status.as_array().map(Vec::len), Some(CallStatus::ALL.len()));
    }
}
