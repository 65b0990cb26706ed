//! Identity: HS256 bearer tokens (JWT) and argon2id password hashes for built-in accounts.
//!
//! A token carries `sub` (the user id), optional `name`, `iat`, `exp` and optional `admin`.
//! The host application can mint the same tokens with the shared secret, so it keeps its users.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use jsonwebtoken::{
    decode, encode, errors::ErrorKind, Algorithm, DecodingKey, EncodingKey, Header, Validation,
};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Who is making a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    pub id: String,
    /// Display name, if the token or account has one.
    #[schema(required = true)]
    pub name: Option<String>,
    pub admin: bool,
}

/// JWT claims.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub iat: i64,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
}

/// Checks a user id: 1 to 64 characters of letters, digits and `._@-`.
pub fn validate_user_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'));
    if ok {
        Ok(())
    } else {
        Err("must be 1 to 64 characters of letters, digits, '.', '_', '@' or '-'".into())
    }
}

/// Signs and verifies tokens with one secret.
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl Tokens {
    pub fn new(secret: &[u8]) -> Self {
        Tokens {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }

    /// Mints a token for `principal` valid for `ttl_secs` from `now_secs`.
    pub fn mint(
        &self,
        principal: &Principal,
        now_secs: i64,
        ttl_secs: i64,
    ) -> Result<String, Error> {
        let claims = Claims {
            sub: principal.id.clone(),
            name: principal.name.clone(),
            iat: now_secs,
            exp: now_secs.saturating_add(ttl_secs),
            admin: principal.admin,
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| Error::Internal(format!("signing token: {e}")))
    }

    /// Verifies signature and expiry (no leeway) and returns who the token speaks for.
    pub fn verify(&self, token: &str) -> Result<Principal, Error> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data =
            decode::<Claims>(token, &self.decoding, &validation).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => Error::Unauthorized {
                    code: "token_expired",
                    message: "the token has expired".into(),
                },
                _ => Error::Unauthorized {
                    code: "invalid_token",
                    message: "the token is not valid".into(),
                },
            })?;
        let c = data.claims;
        validate_user_id(&c.sub).map_err(|m| Error::Unauthorized {
            code: "invalid_token",
            message: format!("token subject {m}"),
        })?;
        Ok(Principal {
            id: c.sub,
            name: c.name,
            admin: c.admin,
        })
    }
}

/// Hashes a password with argon2id and a random salt (PHC string).
pub fn hash_password(password: &str) -> Result<String, Error> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("hashing password: {e}")))
}

/// Verifies a password against a stored PHC hash.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A fixed hash to verify against for unknown users, so timing does not reveal who exists.
pub fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password("signalbox-no-such-user").unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Principal {
        Principal {
            id: "alice".into(),
            name: Some("Alice".into()),
            admin: false,
        }
    }

    #[test]
    fn token_round_trip() {
        let t = Tokens::new(b"0123456789abcdef0123456789abcdef");
        let now = jsonwebtoken::get_current_timestamp() as i64;
        let token = t.mint(&alice(), now, 60).expect("mint");
        assert_eq!(t.verify(&token).expect("verify"), alice());
    }

    #[test]
    fn expired_wrong_key_and_garbage_are_refused() {
        let t = Tokens::new(b"0123456789abcdef0123456789abcdef");
        let now = jsonwebtoken::get_current_timestamp() as i64;
        let old = t.mint(&alice(), now - 100, 10).expect("mint");
        assert_eq!(t.verify(&old).map_err(|e| e.code()), Err("token_expired"));
        let other = Tokens::new(b"another-secret-another-secret-xx")
            .mint(&alice(), now, 60)
            .expect("mint");
        assert_eq!(t.verify(&other).map_err(|e| e.code()), Err("invalid_token"));
        assert_eq!(
            t.verify("not.a.jwt").map_err(|e| e.code()),
            Err("invalid_token")
        );
    }

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("hunter22").expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("hunter22", &h));
        assert!(!verify_password("hunter23", &h));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn user_ids_are_checked() {
        assert!(validate_user_id("alice.b-1@x_y").is_ok());
        for bad in ["", "a b", "ä", &"x".repeat(65), "a/b"] {
            assert!(validate_user_id(bad).is_err(), "{bad}");
        }
    }
}
