//! State shared by every IO task: the locked core, counters, the usage-event sender, relay
//! settings and the shutdown signal. Also turns core lifecycle events into [`UsageEvent`]s.

use std::io;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::relay::{HeldPorts, RelayHandle};
use super::shard::Shard;
use crate::config::Family;
use crate::core::{Core, CoreEvent};
use crate::events::UsageEvent;
use crate::stats::Stats;

/// Relay socket settings: the local address relay sockets of each family bind to (`None`: the
/// server offers no relay of that family).
#[derive(Debug, Clone)]
pub(crate) struct RelaySettings {
    pub v4: Option<IpAddr>,
    pub v6: Option<IpAddr>,
    pub ports: RangeInclusive<u16>,
    pub buffer: usize,
}

pub(crate) struct Shared {
    pub core: Mutex<Core<RelayHandle>>,
    pub stats: Arc<Stats>,
    pub events: mpsc::Sender<UsageEvent>,
    pub relay: RelaySettings,
    /// Ports reserved by EVEN-PORT allocations, held until redeemed or released.
    pub held: HeldPorts,
    /// The relay shards (at least one); TCP/TLS clients' relay sockets go to them in turn.
    pub shards: Vec<Arc<Shard>>,
    pub next_shard: AtomicUsize,
    pub shutdown: watch::Receiver<bool>,
    pub stream_idle_timeout: Duration,
}

impl RelaySettings {
    /// Where relay sockets of `family` bind.
    pub fn bind_ip(&self, family: Family) -> io::Result<IpAddr> {
        match family {
            Family::V4 => self.v4,
            Family::V6 => self.v6,
        }
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                format!("no {} relay configured", family.as_str()),
            )
        })
    }
}

impl Shared {
    /// Locks the core. A panic while holding the lock cannot leave it half-updated in a way
    /// that matters more than stopping the relay would, so a poisoned lock is used as is.
    pub fn core(&self) -> MutexGuard<'_, Core<RelayHandle>> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The shard for the next TCP/TLS client's relay socket.
    pub fn next_shard(&self) -> Arc<Shard> {
        let i = self.next_shard.fetch_add(1, Ordering::Relaxed) % self.shards.len().max(1);
        Arc::clone(&self.shards[i])
    }

    /// Acts on core lifecycle events: stops relay tasks of closed allocations, releases ports
    /// no longer reserved, and reports usage to the app without ever waiting on it.
    pub fn dispatch(&self, events: Vec<CoreEvent<RelayHandle>>) {
        for ev in events {
            let usage = match ev {
                CoreEvent::Opened(info) => {
                    tracing::debug!(user = %info.user, client = %info.client, relay = %info.relay,
                        transport = info.transport.as_str(), "TURN allocation opened");
                    UsageEvent::AllocationOpened {
                        user: info.user,
                        username: info.username,
                        client: info.client,
                        relay: info.relay,
                        transport: info.transport,
                        at: info.opened_at,
                    }
                }
                CoreEvent::Closed {
                    info,
                    usage,
                    relay,
                    second,
                    at,
                } => {
                    relay.stop();
                    if let Some(second) = second {
                        second.stop();
                    }
                    tracing::debug!(user = %info.user, relay = %info.relay,
                        bytes_to_peer = usage.bytes_to_peer, bytes_from_peer = usage.bytes_from_peer,
                        "TURN allocation closed");
                    UsageEvent::AllocationClosed {
                        user: info.user,
                        username: info.username,
                        client: info.client,
                        relay: info.relay,
                        transport: info.transport,
                        at,
                        bytes_to_peer: usage.bytes_to_peer,
                        bytes_from_peer: usage.bytes_from_peer,
                        packets_to_peer: usage.packets_to_peer,
                        packets_from_peer: usage.packets_from_peer,
                    }
                }
                CoreEvent::Unreserved { family, port } => {
                    self.held.release(family, port);
                    continue;
                }
            };
            if self.events.try_send(usage).is_err() {
                Stats::add(&self.stats.dropped_events, 1);
            }
        }
    }
}
