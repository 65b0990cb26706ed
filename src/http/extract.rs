//! Request extractors whose failures are our JSON errors: the bearer token ([`Auth`]), JSON
//! bodies that name the offending field ([`ApiJson`]), and UUID path ids ([`parse_id`]).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, StatusCode};
use serde::de::DeserializeOwned;

use crate::auth::Principal;
use crate::error::Error;
use crate::http::AppState;

/// The authenticated caller of a request (`Authorization: Bearer <jwt>`).
pub struct Auth(pub Principal);

/// Reads the bearer token from an Authorization header value.
pub fn bearer(value: Option<&str>) -> Result<&str, Error> {
    let missing = || Error::Unauthorized {
        code: "unauthorized",
        message: "missing bearer token: send `Authorization: Bearer <token>`".into(),
    };
    let value = value.ok_or_else(missing)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(missing());
    }
    Ok(token.trim())
}

impl<S> FromRequestParts<S> for Auth
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let principal = state.tokens.verify(bearer(header)?)?;
        Ok(Auth(principal))
    }
}

/// A JSON body; errors name the field (`calleeId: invalid type …`). An empty body reads as `{}`.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|ct| {
                let mime = ct
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            });
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return parse(b"{}").map(ApiJson);
        }
        if is_json != Some(true) {
            return Err(Error::invalid(
                "unsupported_media_type",
                "send the body as JSON with `Content-Type: application/json`",
            ));
        }
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(Error::invalid(
                "invalid_json",
                "the body must be a JSON object",
            ));
        }
        parse(&bytes).map(ApiJson)
    }
}

fn body_error(e: BytesRejection) -> Error {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Error::invalid(
            "payload_too_large",
            "the request body is larger than allowed",
        )
    } else {
        Error::invalid(
            "invalid_body",
            format!("could not read the request body: {e}"),
        )
    }
}

/// Parses JSON, naming the path of the first bad field.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            Error::invalid(
                "invalid_json",
                format!("the body is not valid JSON: {inner}"),
            )
        } else if path == "." {
            Error::invalid("invalid_field", format!("body: {inner}"))
        } else {
            Error::invalid("invalid_field", format!("{path}: {inner}"))
        }
    })
}

pub use crate::signaling::wire::{parse_id, user_field as user_id_field};
