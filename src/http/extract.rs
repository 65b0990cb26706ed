//! Request extractors whose failures are our JSON errors: the bearer token ([`Auth`]), JSON
//! bodies that name the offending field ([`ApiJson`]), and UUID path ids ([`parse_id`]).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;

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

/// serde `deserialize_with` for a required display name: 1 to 100 characters as sent, not all
/// whitespace (the documented `minLength`/`maxLength`/`pattern`), so the limits apply to exactly
/// what the client sent.
pub fn display_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    use serde::de::Error as _;
    let s = String::deserialize(d)?;
    if s.trim().is_empty() || s.chars().count() > 100 {
        return Err(D::Error::custom(
            "must be 1 to 100 characters, not all whitespace",
        ));
    }
    Ok(s)
}

/// serde `deserialize_with` for an optional whole number. JSON (and the JSON Schema `integer`
/// the OpenAPI documents) does not tell `15` from `15.0`, so an integral float is that number;
/// fractions, negatives and values past `u32::MAX` are refused.
pub fn optional_whole_number<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<u32>, D::Error> {
    use serde::de::Error as _;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    let whole = match (n.as_u64(), n.as_f64()) {
        (Some(u), _) => u32::try_from(u).ok(),
        (None, Some(f)) if f.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&f) => {
            Some(f as u32)
        }
        _ => None,
    };
    whole.map(Some).ok_or_else(|| {
        D::Error::custom(format!(
            "`{n}` is not a whole number between 0 and {}",
            u32::MAX
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Room {
        #[serde(deserialize_with = "display_name")]
        name: String,
        #[serde(default, deserialize_with = "optional_whole_number")]
        max_participants: Option<u32>,
    }

    fn room(json: &str) -> Result<Room, Error> {
        parse(json.as_bytes())
    }

    fn refusal(json: &str) -> String {
        match room(json) {
            Err(Error::Invalid { code, message }) => {
                assert_eq!(code, "invalid_field", "{json}");
                message
            }
            other => panic!("{json} should be refused, got {other:?}"),
        }
    }

    #[test]
    fn names_are_limited_as_sent() {
        let r = room(&format!(r#"{{"name":" {} "}}"#, "é".repeat(98))).expect("100 chars");
        assert_eq!(r.name.chars().count(), 100);
        assert!(refusal(&format!(r#"{{"name":"{}"}}"#, "x".repeat(101))).starts_with("name:"));
        assert!(refusal(&format!(r#"{{"name":" {} "}}"#, "x".repeat(99))).starts_with("name:"));
        assert!(refusal(r#"{"name":" \t\u3000 "}"#).starts_with("name:"));
        assert!(refusal(r#"{"name":""}"#).starts_with("name:"));
        assert!(refusal(r#"{"name":7}"#).starts_with("name:"));
    }

    #[test]
    fn whole_numbers_may_be_written_as_floats() {
        let n = |json: &str| room(json).map(|r| r.max_participants).ok().flatten();
        assert_eq!(n(r#"{"name":"r","maxParticipants":4}"#), Some(4));
        assert_eq!(n(r#"{"name":"r","maxParticipants":4.0}"#), Some(4));
        assert_eq!(n(r#"{"name":"r","maxParticipants":4e0}"#), Some(4));
        assert_eq!(
            room(r#"{"name":"r","maxParticipants":null}"#)
                .expect("null")
                .max_participants,
            None
        );
        assert_eq!(
            room(r#"{"name":"r"}"#).expect("absent").max_participants,
            None
        );
        for bad in ["4.5", "-1", "-1.0", "4294967296", "1e20", "\"4\"", "true"] {
            let msg = refusal(&format!(r#"{{"name":"r","maxParticipants":{bad}}}"#));
            assert!(msg.starts_with("maxParticipants:"), "{bad}: {msg}");
        }
    }
}
