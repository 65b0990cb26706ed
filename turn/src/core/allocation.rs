//! One allocation (RFC 8656 §2.2): who owns it, its relayed address, lifetime, permissions,
//! channels, optional bandwidth cap and traffic counters.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use super::bandwidth::TokenBucket;
use super::permissions::{Channels, Permissions};
use crate::config::Family;
use crate::events::Usage;

/// Lifetime granted when the client asks for none (or less than this).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);
/// Longest lifetime granted, whatever the client asks.
pub const MAX_LIFETIME: Duration = Duration::from_secs(3600);

/// The lifetime to grant for a requested one (Allocate, or Refresh with a non-zero value).
pub fn grant_lifetime(requested: Option<Duration>) -> Duration {
    requested
        .unwrap_or(DEFAULT_LIFETIME)
        .clamp(DEFAULT_LIFETIME, MAX_LIFETIME)
}

/// An allocation and its relay handle `R` (the IO shell's socket; a fake in tests).
#[derive(Debug)]
pub(crate) struct Allocation<R> {
    /// Unique per server run: tells a stale relay task from the current owner of a 5-tuple.
    pub id: u64,
    pub relay: R,
    /// The relayed transport address as advertised to the client.
    pub relay_addr: SocketAddr,
    /// A dual allocation's relay of the other family (ADDITIONAL-ADDRESS-FAMILY).
    pub second: Option<Relayed<R>>,
    pub user: String,
    pub username: String,
    /// The long-term key the allocation was authenticated with.
    pub key: [u8; 16],
    pub expires: Instant,
    pub opened_at: SystemTime,
    /// Transaction id and answer of the Allocate that created it (retransmissions).
    pub allocate_tid: [u8; 12],
    pub allocate_reply: Vec<u8>,
    pub permissions: Permissions,
    pub channels: Channels,
    pub usage: Usage,
    pub limit_to_peer: Option<TokenBucket>,
    pub limit_from_peer: Option<TokenBucket>,
}

/// A relay socket and the relayed transport address advertised for it.
#[derive(Debug)]
pub(crate) struct Relayed<R> {
    pub relay: R,
    pub addr: SocketAddr,
}

impl<R> Allocation<R> {
    /// Whether the allocation has a relayed address of `family`.
    pub fn serves(&self, family: Family) -> bool {
        Family::of(self.relay_addr.ip()) == family
            || self
                .second
                .as_ref()
                .is_some_and(|s| Family::of(s.addr.ip()) == family)
    }

    /// The relay socket that sends to `peer`: the one of the peer's family.
    pub fn relay_towards(&self, peer: SocketAddr) -> &R {
        match &self.second {
            Some(s) if s.addr.is_ipv6() == peer.is_ipv6() => &s.relay,
            _ => &self.relay,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_default_and_cap() {
        assert_eq!(grant_lifetime(None), DEFAULT_LIFETIME);
        assert_eq!(
            grant_lifetime(Some(Duration::from_secs(30))),
            DEFAULT_LIFETIME
        );
        assert_eq!(
            grant_lifetime(Some(Duration::from_secs(1200))),
            Duration::from_secs(1200)
        );
        assert_eq!(
            grant_lifetime(Some(Duration::from_secs(99_999))),
            MAX_LIFETIME
        );
    }
}
