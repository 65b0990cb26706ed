//! Stateless NONCEs: `<issue time, 16 hex digits><HMAC-SHA1(key, time || client address), 20 hex>`.
//!
//! The server keeps no table: a nonce proves by its MAC that this server issued it to this client
//! transport address, and its embedded time tells whether it is stale. So unauthenticated traffic
//! costs a MAC and allocates nothing.

use std::fmt::Write as _;
use std::net::SocketAddr;

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// How long a nonce stays valid; past it a request gets 438 Stale Nonce and a fresh one.
pub const NONCE_TTL_SECS: u64 = 600;

const TIME_HEX: usize = 16;
const MAC_BYTES: usize = 10;
const NONCE_LEN: usize = TIME_HEX + 2 * MAC_BYTES;

/// What a received nonce turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    Valid,
    /// Issued by us to this client, but too old (or from the future).
    Stale,
    /// Not one of ours, or for another client address.
    Invalid,
}

/// The secret key nonces are signed with (random per process).
#[derive(Clone)]
pub struct NonceKey([u8; 32]);

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceKey(..)")
    }
}

impl NonceKey {
    pub fn new(key: [u8; 32]) -> Self {
        Self(key)
    }

    /// A key from the OS random generator.
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// A fresh nonce for `client` at `now_unix`.
    pub fn issue(&self, client: SocketAddr, now_unix: u64) -> String {
        let mut out = String::with_capacity(NONCE_LEN);
        let _ = write!(out, "{now_unix:016x}");
        for b in self.mac(now_unix, client) {
            let _ = write!(out, "{b:02x}");
        }
        out
    }

    /// Checks a nonce a client sent back.
    pub fn check(&self, nonce: &str, client: SocketAddr, now_unix: u64) -> NonceCheck {
        if nonce.len() != NONCE_LEN || !nonce.is_ascii() {
            return NonceCheck::Invalid;
        }
        let (time_hex, mac_hex) = nonce.split_at(TIME_HEX);
        let Ok(issued) = u64::from_str_radix(time_hex, 16) else {
            return NonceCheck::Invalid;
        };
        let expected = self.mac(issued, client);
        let mut got = [0u8; MAC_BYTES];
        for (i, slot) in got.iter_mut().enumerate() {
            let Some(pair) = mac_hex.get(2 * i..2 * i + 2) else {
                return NonceCheck::Invalid;
            };
            let Ok(b) = u8::from_str_radix(pair, 16) else {
                return NonceCheck::Invalid;
            };
            *slot = b;
        }
        // Constant-time comparison.
        if got
            .iter()
            .zip(expected.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            != 0
        {
            return NonceCheck::Invalid;
        }
        if issued > now_unix.saturating_add(5) || now_unix.saturating_sub(issued) >= NONCE_TTL_SECS
        {
            return NonceCheck::Stale;
        }
        NonceCheck::Valid
    }

    fn mac(&self, issued: u64, client: SocketAddr) -> [u8; MAC_BYTES] {
        let mut mac = match Hmac::<Sha1>::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        mac.update(&issued.to_be_bytes());
        match client {
            SocketAddr::V4(a) => mac.update(&a.ip().octets()),
            SocketAddr::V6(a) => mac.update(&a.ip().octets()),
        }
        mac.update(&client.port().to_be_bytes());
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; MAC_BYTES];
        out.copy_from_slice(&full[..MAC_BYTES]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address parses")
    }

    #[test]
    fn fresh_nonce_is_valid_for_its_client_only() {
        let key = NonceKey::new([7; 32]);
        let n = key.issue(addr("1.2.3.4:5000"), 1000);
        assert_eq!(n.len(), NONCE_LEN);
        assert_eq!(key.check(&n, addr("1.2.3.4:5000"), 1000), NonceCheck::Valid);
        assert_eq!(key.check(&n, addr("1.2.3.4:5000"), 1599), NonceCheck::Valid);
        assert_eq!(
            key.check(&n, addr("1.2.3.4:5001"), 1000),
            NonceCheck::Invalid
        );
        assert_eq!(
            key.check(&n, addr("1.2.3.5:5000"), 1000),
            NonceCheck::Invalid
        );
    }

    #[test]
    fn old_nonce_is_stale() {
        let key = NonceKey::new([7; 32]);
        let n = key.issue(addr("[::1]:9"), 1000);
        assert_eq!(key.check(&n, addr("[::1]:9"), 1600), NonceCheck::Stale);
        assert_eq!(key.check(&n, addr("[::1]:9"), 900), NonceCheck::Stale);
    }

    #[test]
    fn forged_or_garbage_nonces_are_invalid() {
        let key = NonceKey::new([7; 32]);
        let other = NonceKey::new([8; 32]);
        let c = addr("1.2.3.4:5000");
        assert_eq!(
            key.check(&other.issue(c, 1000), c, 1000),
            NonceCheck::Invalid
        );
        assert_eq!(key.check("", c, 1000), NonceCheck::Invalid);
        assert_eq!(
            key.check(&"z".repeat(NONCE_LEN), c, 1000),
            NonceCheck::Invalid
        );
        assert_eq!(
            key.check(&"é".repeat(NONCE_LEN / 2), c, 1000),
            NonceCheck::Invalid
        );
        let mut tampered = key.issue(c, 1000);
        tampered.replace_range(0..1, "1");
        assert_eq!(key.check(&tampered, c, 1000), NonceCheck::Invalid);
    }
}
