//! An allocation's permissions (per peer IP, RFC 8656 §9) and channel bindings (§12), each with
//! its own expiry. Lookups on the relay hot path are one hash probe.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Permission lifetime (RFC 8656: 300 s, refreshed by CreatePermission or ChannelBind).
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// Channel binding lifetime (RFC 8656: 600 s, refreshed by ChannelBind).
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// Most permissions one allocation may hold (a bound on per-client state).
pub const MAX_PERMISSIONS: usize = 512;
/// Most channels one allocation may hold.
pub const MAX_CHANNELS: usize = 512;

/// Installed permissions: peer IP → expiry.
#[derive(Debug, Default)]
pub(crate) struct Permissions {
    by_ip: HashMap<IpAddr, Instant>,
}

impl Permissions {
    /// Whether datagrams to/from `ip` may be relayed at `now`.
    pub fn allows(&self, ip: IpAddr, now: Instant) -> bool {
        self.by_ip.get(&ip).is_some_and(|&exp| exp > now)
    }

    /// Whether installing `ips` would exceed [`MAX_PERMISSIONS`].
    pub fn would_overflow(&self, ips: &[IpAddr]) -> bool {
        let new = ips.iter().filter(|ip| !self.by_ip.contains_key(ip)).count();
        self.by_ip.len() + new > MAX_PERMISSIONS
    }

    /// Installs or refreshes a permission.
    pub fn install(&mut self, ip: IpAddr, now: Instant) {
        self.by_ip.insert(ip, now + PERMISSION_LIFETIME);
    }

    pub fn sweep(&mut self, now: Instant) {
        self.by_ip.retain(|_, exp| *exp > now);
    }

    pub fn len(&self) -> usize {
        self.by_ip.len()
    }
}

/// Why a ChannelBind cannot be honoured (→ 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BindConflict {
    /// The channel is bound to another peer.
    ChannelTaken,
    /// The peer is bound to another channel.
    PeerTaken,
    /// [`MAX_CHANNELS`] reached.
    Full,
}

#[derive(Debug, Clone, Copy)]
struct Channel {
    peer: SocketAddr,
    expires: Instant,
}

/// Channel bindings, both directions.
#[derive(Debug, Default)]
pub(crate) struct Channels {
    by_number: HashMap<u16, Channel>,
    by_peer: HashMap<SocketAddr, u16>,
}

impl Channels {
    /// The peer a live channel is bound to.
    pub fn peer(&self, number: u16, now: Instant) -> Option<SocketAddr> {
        self.by_number
            .get(&number)
            .filter(|c| c.expires > now)
            .map(|c| c.peer)
    }

    /// The live channel bound to `peer`.
    pub fn number(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        let n = *self.by_peer.get(&peer)?;
        self.peer(n, now).map(|_| n)
    }

    /// Binds or refreshes `number` ↔ `peer`. Expired bindings do not conflict.
    pub fn bind(
        &mut self,
        number: u16,
        peer: SocketAddr,
        now: Instant,
    ) -> Result<(), BindConflict> {
        if let Some(c) = self.by_number.get(&number) {
            if c.peer != peer && c.expires > now {
                return Err(BindConflict::ChannelTaken);
            }
        }
        if let Some(&n) = self.by_peer.get(&peer) {
            if n != number && self.peer(n, now).is_some() {
                return Err(BindConflict::PeerTaken);
            }
        }
        if !self.by_number.contains_key(&number) && self.by_number.len() >= MAX_CHANNELS {
            self.sweep(now);
            if self.by_number.len() >= MAX_CHANNELS {
                return Err(BindConflict::Full);
            }
        }
        if let Some(old) = self.by_number.insert(
            number,
            Channel {
                peer,
                expires: now + CHANNEL_LIFETIME,
            },
        ) {
            if old.peer != peer {
                self.by_peer.remove(&old.peer);
            }
        }
        if let Some(old_n) = self.by_peer.insert(peer, number) {
            if old_n != number {
                self.by_number.remove(&old_n);
            }
        }
        Ok(())
    }

    pub fn sweep(&mut self, now: Instant) {
        let by_peer = &mut self.by_peer;
        self.by_number.retain(|_, c| {
            let keep = c.expires > now;
            if !keep {
                by_peer.remove(&c.peer);
            }
            keep
        });
    }

    pub fn len(&self) -> usize {
        self.by_number.len()
    }
}

#[cfg(test)]
// Tests start from an arbitrary instant and advance time by hand.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    fn peer(s: &str) -> SocketAddr {
        s.parse().expect("test address parses")
    }

    #[test]
    fn permissions_expire_after_300s() {
        let t0 = Instant::now();
        let mut p = Permissions::default();
        let ip = peer("8.8.8.8:1").ip();
        assert!(!p.allows(ip, t0));
        p.install(ip, t0);
        assert!(p.allows(ip, t0 + Duration::from_secs(299)));
        assert!(!p.allows(ip, t0 + Duration::from_secs(300)));
        p.sweep(t0 + Duration::from_secs(301));
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn channels_bind_both_ways_and_refuse_conflicts() {
        let t0 = Instant::now();
        let mut c = Channels::default();
        let a = peer("8.8.8.8:1000");
        let b = peer("8.8.4.4:1000");
        c.bind(0x4000, a, t0).expect("bind");
        assert_eq!(c.peer(0x4000, t0), Some(a));
        assert_eq!(c.number(a, t0), Some(0x4000));
        c.bind(0x4000, a, t0)
            .expect("rebinding the same pair refreshes");
        assert_eq!(c.bind(0x4000, b, t0), Err(BindConflict::ChannelTaken));
        assert_eq!(c.bind(0x4001, a, t0), Err(BindConflict::PeerTaken));
        let later = t0 + CHANNEL_LIFETIME;
        assert_eq!(c.peer(0x4000, later), None);
        c.bind(0x4000, b, later)
            .expect("expired channel can be rebound");
        assert_eq!(c.number(a, later), None);
        assert_eq!(c.number(b, later), Some(0x4000));
        c.sweep(later + CHANNEL_LIFETIME);
        assert_eq!(c.len(), 0);
    }
}
