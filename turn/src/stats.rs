//! Server-wide counters (lock-free atomics) and their point-in-time snapshot for metrics.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Live counters, shared by the core and the IO tasks.
#[derive(Debug, Default)]
pub struct Stats {
    pub allocations_active: AtomicU64,
    pub allocations_total: AtomicU64,
    pub bytes_to_peer: AtomicU64,
    pub bytes_from_peer: AtomicU64,
    pub packets_to_peer: AtomicU64,
    pub packets_from_peer: AtomicU64,
    pub auth_failures: AtomicU64,
    pub denied_peers: AtomicU64,
    pub bad_packets: AtomicU64,
    pub dropped_packets: AtomicU64,
    pub dropped_events: AtomicU64,
    pub quota_rejections: AtomicU64,
}

/// A snapshot of [`Stats`], as returned by [`crate::TurnServer::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Allocations alive now.
    pub allocations_active: u64,
    /// Allocations ever created.
    pub allocations_total: u64,
    /// Payload bytes relayed client → peer.
    pub bytes_to_peer: u64,
    /// Payload bytes relayed peer → client.
    pub bytes_from_peer: u64,
    pub packets_to_peer: u64,
    pub packets_from_peer: u64,
    /// Requests carrying credentials that were refused (401), stale nonces excluded.
    pub auth_failures: u64,
    /// Peer addresses refused by the peer policy (403) or unpermitted inbound datagrams.
    pub denied_peers: u64,
    /// Datagrams or frames that were not valid STUN/ChannelData or were malformed.
    pub bad_packets: u64,
    /// Valid packets not relayed: no permission or channel, bandwidth cap, full queues.
    pub dropped_packets: u64,
    /// Usage events dropped because the app's receiver was full.
    pub dropped_events: u64,
    /// Allocations refused for a user or total quota (486/508).
    pub quota_rejections: u64,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            allocations_active: self.allocations_active.load(Relaxed),
            allocations_total: self.allocations_total.load(Relaxed),
            bytes_to_peer: self.bytes_to_peer.load(Relaxed),
            bytes_from_peer: self.bytes_from_peer.load(Relaxed),
            packets_to_peer: self.packets_to_peer.load(Relaxed),
            packets_from_peer: self.packets_from_peer.load(Relaxed),
            auth_failures: self.auth_failures.load(Relaxed),
            denied_peers: self.denied_peers.load(Relaxed),
            bad_packets: self.bad_packets.load(Relaxed),
            dropped_packets: self.dropped_packets.load(Relaxed),
            dropped_events: self.dropped_events.load(Relaxed),
            quota_rejections: self.quota_rejections.load(Relaxed),
        }
    }
}
