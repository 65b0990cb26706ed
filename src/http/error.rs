//! How an [`Error`] becomes an HTTP response: the status and `{"error":{"code","message"}}`.
//! Seed 000's paths wrap the same body as `{"success":false,"error":{…}}` (see `video.rs`).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::error::Error;

pub fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::Invalid { code, .. } if *code == "payload_too_large" => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        Error::Invalid { code, .. } if *code == "unsupported_media_type" => {
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        }
        Error::Invalid { code, .. } if *code == "method_not_allowed" => {
            StatusCode::METHOD_NOT_ALLOWED
        }
        Error::Invalid { .. } => StatusCode::BAD_REQUEST,
        Error::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
        Error::Forbidden(_) => StatusCode::FORBIDDEN,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Conflict { .. } => StatusCode::CONFLICT,
        Error::RateLimited(_) | Error::Limit { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = status_of(&self);
        if let Error::Internal(detail) = &self {
            tracing::error!(%detail, "internal error");
        }
        if let Error::Unavailable(detail) = &self {
            tracing::warn!(%detail, "database unavailable");
        }
        let body = json!({ "error": { "code": self.code(), "message": self.to_string() } });
        let mut response = (status, Json(body)).into_response();
        match &self {
            Error::RateLimited(secs) => {
                if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                    response.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
            Error::Unauthorized { .. } => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}
