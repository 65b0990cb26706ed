//! The limits every signaling transport shares (`/rtc` and Socket.IO alike): connection caps
//! per user and in total, checked before a connection is opened ([`ConnectionGate`]), and the
//! per-connection message limits — size and rate — checked before a message is parsed
//! ([`MessageLimits`]). The outbox bound lives with delivery ([`crate::app::delivery`]).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::config::SocketLimits;
use crate::error::Error;
use crate::metrics::{ConnectionMetrics, RefusedLabels, TransportLabels};

/// Largest JSON message accepted (an SDP with many candidates fits easily); larger ones get a
/// `message_too_large` error and change nothing.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Frames above this are a protocol violation: the connection is closed.
pub const MAX_TRANSPORT_BYTES: usize = 1024 * 1024;

/// A signaling transport, for limits and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Rtc,
    SocketIo,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Rtc => "rtc",
            Transport::SocketIo => "socketio",
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: u32,
    per_user: HashMap<String, u32>,
}

/// Counts open signaling connections and refuses those over a cap.
pub struct ConnectionGate {
    /// Replaced on a config reload: caps apply to the next connection, rates to the next
    /// connection's limiter (open connections keep theirs).
    limits: std::sync::RwLock<SocketLimits>,
    counts: Mutex<Counts>,
    metrics: ConnectionMetrics,
}

/// One admitted connection; dropping it frees its place.
pub struct ConnectionSlot {
    gate: Arc<ConnectionGate>,
    user: String,
    transport: Transport,
}

impl ConnectionGate {
    pub fn new(limits: SocketLimits, metrics: ConnectionMetrics) -> Arc<ConnectionGate> {
        Arc::new(ConnectionGate {
            limits: std::sync::RwLock::new(limits),
            counts: Mutex::new(Counts::default()),
            metrics,
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> SocketLimits {
        *self.limits.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the limits (a reloaded configuration).
    pub fn set_limits(&self, limits: SocketLimits) {
        *self.limits.write().unwrap_or_else(|p| p.into_inner()) = limits;
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        // Every critical section leaves the counts consistent; recover a poisoned lock.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a connection of `user`, or says which cap refused it (HTTP 429 /
    /// Socket.IO `connect_error`). Other users are unaffected by one user's cap.
    pub fn admit(
        self: &Arc<Self>,
        user: &str,
        transport: Transport,
    ) -> Result<ConnectionSlot, Error> {
        let mut counts = self.counts();
        let refused = |limit: &'static str, message: String| {
            self.metrics
                .refused
                .get_or_create(&RefusedLabels {
                    transport: transport.as_str(),
                    limit,
                })
                .inc();
            Error::Limit {
                code: "too_many_connections",
                message,
            }
        };
        let limits = self.limits();
        if counts.total >= limits.max_connections {
            return Err(refused(
                "total",
                format!(
                    "the server holds its maximum of {} signaling connections; try again later",
                    limits.max_connections
                ),
            ));
        }
        let mine = counts.per_user.get(user).copied().unwrap_or(0);
        if mine >= limits.max_connections_per_user {
            return Err(refused(
                "per_user",
                format!(
                    "you already hold {mine} signaling connections (at most {}); close one first",
                    limits.max_connections_per_user
                ),
            ));
        }
        counts.total += 1;
        *counts.per_user.entry(user.to_string()).or_default() += 1;
        self.metrics
            .open
            .get_or_create(&TransportLabels {
                transport: transport.as_str(),
            })
            .inc();
        Ok(ConnectionSlot {
            gate: self.clone(),
            user: user.to_string(),
            transport,
        })
    }

    /// Open connections, in total and of one user.
    pub fn open(&self, user: &str) -> (u32, u32) {
        let counts = self.counts();
        (
            counts.total,
            counts.per_user.get(user).copied().unwrap_or(0),
        )
    }

    /// Per-connection message limits with this server's configured rate.
    pub fn message_limits(&self, transport: Transport) -> MessageLimits {
        MessageLimits::new(self.limits(), transport, self.metrics.clone())
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut counts = self.gate.counts();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_user.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_user.remove(&self.user);
            }
        }
        self.gate
            .metrics
            .open
            .get_or_create(&TransportLabels {
                transport: self.transport.as_str(),
            })
            .dec();
    }
}

/// Size and rate limits of one connection's incoming messages.
pub struct MessageLimits {
    limiter: DefaultDirectRateLimiter,
    transport: Transport,
    metrics: ConnectionMetrics,
}

impl MessageLimits {
    fn new(limits: SocketLimits, transport: Transport, metrics: ConnectionMetrics) -> Self {
        let per_second = NonZeroU32::new(limits.rate_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(limits.rate_burst).unwrap_or(NonZeroU32::MIN);
        MessageLimits {
            limiter: RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)),
            transport,
            metrics,
        }
    }

    /// Checks one incoming message of `len` bytes: `message_too_large` or `rate_limited`
    /// (every message counts against the rate, refused ones too, so a flood stays a flood).
    pub fn check(&self, len: usize) -> Result<(), Error> {
        if self.limiter.check().is_err() {
            self.metrics
                .rate_limited
                .get_or_create(&TransportLabels {
                    transport: self.transport.as_str(),
                })
                .inc();
            return Err(Error::RateLimited(1));
        }
        if len > MAX_MESSAGE_BYTES {
            return Err(Error::invalid(
                "message_too_large",
                format!("messages are limited to {MAX_MESSAGE_BYTES} bytes"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: u32, per_user: u32) -> SocketLimits {
        SocketLimits {
            max_connections: total,
            max_connections_per_user: per_user,
            rate_per_second: 1,
            rate_burst: 3,
        }
    }

    #[test]
    fn caps_hold_per_user_and_in_total_and_free_on_drop() {
        let gate = ConnectionGate::new(limits(3, 2), ConnectionMetrics::default());
        let a1 = gate.admit("alice", Transport::Rtc).expect("first");
        let a2 = gate.admit("alice", Transport::SocketIo).expect("second");
        let err = gate
            .admit("alice", Transport::Rtc)
            .err()
            .expect("third refused");
        assert_eq!(err.code(), "too_many_connections");
        let b1 = gate.admit("bob", Transport::Rtc).expect("bob unaffected");
        assert!(
            gate.admit("carol", Transport::Rtc).is_err(),
            "total cap of 3"
        );
        drop(a1);
        assert_eq!(gate.open("alice"), (2, 1));
        let _a3 = gate
            .admit("alice", Transport::Rtc)
            .expect("a place was freed");
        drop((a2, b1));
        assert_eq!(gate.open("bob"), (1, 0));
    }

    #[test]
    fn messages_over_the_rate_or_size_are_refused() {
        let gate = ConnectionGate::new(limits(10, 10), ConnectionMetrics::default());
        let m = gate.message_limits(Transport::Rtc);
        assert_eq!(
            m.check(MAX_MESSAGE_BYTES + 1).map_err(|e| e.code()),
            Err("message_too_large")
        );
        // The burst of 3 is used up (the oversize message counted).
        assert!(m.check(10).is_ok());
        assert!(m.check(10).is_ok());
        assert_eq!(m.check(10).map_err(|e| e.code()), Err("rate_limited"));
    }
}
