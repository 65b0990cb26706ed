//! TURN REST API credentials (draft-uberti-behave-turn-rest-00), compatible with coturn's
//! `use-auth-secret`: username `<unix-expiry>:<userId>`, password
//! `base64(HMAC-SHA1(secret, username))`, long-term key `MD5(username:realm:password)`.
//!
//! Pure functions: the current time is always passed in, so expiry is testable without a clock.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// A username/password pair handed to a WebRTC client for the TURN long-term mechanism.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestCredential {
    /// `<unix-expiry>:<userId>`.
    pub username: String,
    /// `base64(HMAC-SHA1(secret, username))`.
    pub password: String,
    /// Unix seconds after which the relay refuses the credential on Allocate.
    pub expires_at: u64,
}

/// Why a TURN REST username was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    #[error("username is not of the form <unix-expiry>:<user>")]
    Malformed,
    #[error("credential expired at {0}")]
    Expired(u64),
}

/// Mints a credential for `user_id` valid until `now_unix + ttl_secs`, signed with `secret`.
pub fn mint(secret: &[u8], user_id: &str, now_unix: u64, ttl_secs: u64) -> RestCredential {
    let expires_at = now_unix.saturating_add(ttl_secs);
    let username = format!("{expires_at}:{user_id}");
    let password = password_for(secret, &username);
    RestCredential {
        username,
        password,
        expires_at,
    }
}

/// The password a secret yields for a username: `base64(HMAC-SHA1(secret, username))`.
pub fn password_for(secret: &[u8], username: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha1>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Splits a REST username into its expiry and user id, refusing it when expired at `now_unix`.
pub fn check_username(username: &str, now_unix: u64) -> Result<(u64, &str), CredentialError> {
    let (expiry, user) = username.split_once(':').ok_or(CredentialError::Malformed)?;
    let expiry: u64 = expiry.parse().map_err(|_| CredentialError::Malformed)?;
    if expiry <= now_unix {
        return Err(CredentialError::Expired(expiry));
    }
    Ok((expiry, user))
}

/// The long-term credential key of RFC 8489 §9.2.2: `MD5(username ":" realm ":" password)`.
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

/// The keys a REST username may be signed with, one per accepted secret (rotation), in order.
pub fn candidate_keys<'a>(
    secrets: &'a [Vec<u8>],
    username: &'a str,
    realm: &'a str,
) -> impl Iterator<Item = [u8; 16]> + 'a {
    secrets
        .iter()
        .map(move |secret| long_term_key(username, realm, &password_for(secret, username)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_matches_coturn_formula() {
        // Reference value computed with: printf '%s' 1700000000:alice |
        //   openssl dgst -sha1 -hmac s3cret -binary | base64
        let cred = mint(b"s3cret", "alice", 1_699_999_000, 1000);
        assert_eq!(cred.username, "1700000000:alice");
        assert_eq!(cred.expires_at, 1_700_000_000);
        assert_eq!(cred.password, "TtElzSjT0GdnTQ9xdcRNxx96yQs=");
    }

    #[test]
    fn different_secrets_give_different_passwords() {
        assert_ne!(password_for(b"a", "1:u"), password_for(b"b", "1:u"));
    }

    #[test]
    fn username_expiry_is_checked() {
        assert_eq!(check_username("100:bob", 99), Ok((100, "bob")));
        assert_eq!(
            check_username("100:bob", 100),
            Err(CredentialError::Expired(100))
        );
        assert_eq!(check_username("bob", 1), Err(CredentialError::Malformed));
        assert_eq!(check_username("x:bob", 1), Err(CredentialError::Malformed));
        assert_eq!(check_username("5:a:b", 1), Ok((5, "a:b")));
    }

    #[test]
    fn long_term_key_is_md5_of_user_realm_password() {
        // RFC 5769 §2.4 test vector uses SASLprep'd non-ASCII input; this is the plain-ASCII form:
        // printf 'user:realm:pass' | md5sum
        let key = long_term_key("user", "realm", "pass");
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "8493fbc53ba582fb4c044c456bdc40eb");
        let keys: Vec<_> = candidate_keys(&[b"a".to_vec(), b"b".to_vec()], "1:u", "r").collect();
        assert_eq!(keys.len(), 2);
        assert_eq!(
            keys[0],
            long_term_key("1:u", "r", &password_for(b"a", "1:u"))
        );
    }
}
