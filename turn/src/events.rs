//! Usage events the relay reports to the app: one when an allocation opens, one when it closes
//! with its traffic totals. Sent with `try_send` so a slow receiver never stalls relaying.

use std::net::SocketAddr;
use std::time::SystemTime;

/// The client-facing transport of an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// Lower-case name, as used in `turn:` URIs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// Traffic relayed by one allocation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes_to_peer: u64,
    pub bytes_from_peer: u64,
    pub packets_to_peer: u64,
    pub packets_from_peer: u64,
}

/// An allocation alive now and what it has relayed so far (see `TurnServer::live_allocations`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveAllocation {
    /// The user id part of the REST username.
    pub user: String,
    pub username: String,
    pub client: SocketAddr,
    pub relay: SocketAddr,
    pub transport: Transport,
    pub opened_at: SystemTime,
    pub usage: Usage,
}

/// An allocation's lifecycle as the app sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageEvent {
    AllocationOpened {
        /// The user id part of the REST username.
        user: String,
        /// The full REST username `<expiry>:<user>`.
        username: String,
        /// The client's transport address as seen by the server.
        client: SocketAddr,
        /// The relayed transport address handed to the client.
        relay: SocketAddr,
        transport: Transport,
        at: SystemTime,
    },
    AllocationClosed {
        user: String,
        username: String,
        client: SocketAddr,
        relay: SocketAddr,
        transport: Transport,
        at: SystemTime,
        bytes_to_peer: u64,
        bytes_from_peer: u64,
        packets_to_peer: u64,
        packets_from_peer: u64,
    },
}
