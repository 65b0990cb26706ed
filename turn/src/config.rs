//! `TurnConfig`: everything the relay needs to start, with the embedded defaults of DESIGN.md.
//!
//! The app fills this from its own layered config; nothing here reads files or the environment.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::peer_policy::normalise;

/// An IP address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The family of `ip`, an IPv4-mapped IPv6 address counting as IPv4.
    pub fn of(ip: IpAddr) -> Family {
        match normalise(ip) {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// The relay family an Allocate without REQUESTED-ADDRESS-FAMILY gets (RFC 8656 §7.2 says
/// IPv4; coturn's `allocation-default-address-family` offers the same three choices). When the
/// server has no relay of that family, the family it has is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DefaultFamily {
    #[default]
    Ipv4,
    Ipv6,
    /// The family the client reached the server over.
    SameAsClient,
}

impl DefaultFamily {
    /// Parses `ipv4`, `ipv6` or `keep` (the client's family).
    pub fn parse(s: &str) -> Option<DefaultFamily> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ipv4" => Some(DefaultFamily::Ipv4),
            "ipv6" => Some(DefaultFamily::Ipv6),
            "keep" => Some(DefaultFamily::SameAsClient),
            _ => None,
        }
    }
}

/// Relay sockets of one address family: the local address they bind to, and the address
/// written into XOR-RELAYED-ADDRESS when the server sits behind a 1:1 NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayIp {
    /// When it is unspecified (`0.0.0.0`/`::`), `external` must be set, since clients need a
    /// concrete relayed address.
    pub bind: IpAddr,
    pub external: Option<IpAddr>,
}

impl RelayIp {
    /// Relays bound and advertised on `ip`.
    pub fn on(ip: IpAddr) -> RelayIp {
        RelayIp {
            bind: ip,
            external: None,
        }
    }

    pub fn family(&self) -> Family {
        Family::of(self.bind)
    }

    /// The IP written into XOR-RELAYED-ADDRESS, if one can be known.
    pub fn advertised(&self) -> Option<IpAddr> {
        match self.external {
            Some(ip) => Some(ip),
            None if !self.bind.is_unspecified() => Some(self.bind),
            None => None,
        }
    }
}
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Configuration of a [`crate::TurnServer`].
#[derive(Debug, Clone)]
pub struct TurnConfig {
    /// STUN/TURN over UDP (`turn:host?transport=udp`), at most one address per family (an IPv6
    /// one is bound IPv6-only). Empty disables it.
    pub udp_listen: Vec<SocketAddr>,
    /// STUN/TURN over TCP (`turn:host?transport=tcp`), RFC 4571-style framing, at most one
    /// address per family. Empty disables it.
    pub tcp_listen: Vec<SocketAddr>,
    /// TURN over TLS (`turns:`), at most one address per family. Needs `tls_cert_path` and
    /// `tls_key_path`.
    pub tls_listen: Vec<SocketAddr>,
    /// PEM certificate chain for `tls_listen`.
    pub tls_cert_path: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for `tls_listen`.
    pub tls_key_path: Option<PathBuf>,
    /// A ready TLS configuration for `tls_listen`, used instead of the two files: lets the
    /// embedding app swap certificates live (its own certificate resolver) and share them with
    /// its HTTPS listener.
    pub tls_server_config: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// The relay families the server offers, at most one entry per family: REQUESTED-ADDRESS-FAMILY
    /// picks one, ADDITIONAL-ADDRESS-FAMILY asks for both (RFC 8656 §7.2).
    pub relays: Vec<RelayIp>,
    /// The family of an allocation that names none.
    pub default_family: DefaultFamily,
    /// Ports relay sockets are bound from (inclusive).
    pub relay_ports: RangeInclusive<u16>,
    /// REALM of the long-term credential mechanism.
    pub realm: String,
    /// TURN REST API shared secrets; the first one signs new credentials, all are accepted
    /// (rotation). An empty list refuses every Allocate.
    pub secrets: Vec<Vec<u8>>,
    /// Peer CIDRs allowed even though they fall in a denied special range (e.g. `127.0.0.0/8`
    /// in tests, a LAN in a private deployment). Wins over the built-in deny list.
    pub allow_peers: Vec<ipnet::IpNet>,
    /// Exact transport addresses (IP and port) a client may reach even when private or
    /// loopback, e.g. the server's own SFU (`127.0.0.1:PORT` in tests, a LAN `IP:3479`).
    /// Unlike an `allow_peers` entry, only that one port of the IP is opened: permissions are
    /// still installed per IP (RFC 8656), but Send indications, ChannelBind and datagrams from
    /// the peer are checked against the full address. IPv4-mapped IPv6 forms match the IPv4
    /// entry. Give the concrete address peers use, not an unspecified one (`0.0.0.0:3479`).
    pub allow_peer_addrs: Vec<SocketAddr>,
    /// Concurrent allocations one user id may hold (486 beyond it).
    pub user_quota: u32,
    /// Concurrent allocations on the whole server (508 beyond it).
    pub total_quota: u32,
    /// Optional cap on each allocation's relayed bitrate, each direction; excess is dropped.
    pub max_bitrate_bps: Option<u64>,
    /// SO_RCVBUF/SO_SNDBUF asked for on each relay socket.
    pub relay_socket_buffer: usize,
    /// SO_RCVBUF/SO_SNDBUF asked for on the UDP listener.
    pub listener_socket_buffer: usize,
    /// Relay threads: each serves its own `SO_REUSEPORT` socket of the UDP listener and the relay
    /// sockets of the allocations made through it (plus a share of the TCP/TLS clients'). 0 =
    /// one per CPU core, at most 8.
    pub relay_threads: usize,
    /// Maximum simultaneous TCP + TLS client connections.
    pub max_stream_connections: usize,
    /// How long a TCP/TLS client may stay connected without an allocation (and how long the
    /// TLS handshake may take).
    pub stream_idle_timeout: Duration,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            udp_listen: vec![SocketAddr::from((Ipv4Addr::UNSPECIFIED, 3478))],
            tcp_listen: vec![SocketAddr::from((Ipv4Addr::UNSPECIFIED, 3478))],
            tls_listen: Vec::new(),
            tls_cert_path: None,
            tls_key_path: None,
            tls_server_config: None,
            relays: vec![RelayIp::on(IpAddr::V4(Ipv4Addr::UNSPECIFIED))],
            default_family: DefaultFamily::Ipv4,
            relay_ports: 49152..=65535,
            realm: "signalbox".to_owned(),
            secrets: Vec::new(),
            allow_peers: Vec::new(),
            allow_peer_addrs: Vec::new(),
            user_quota: 10,
            total_quota: 1000,
            max_bitrate_bps: None,
            relay_socket_buffer: 1 << 20,
            listener_socket_buffer: 4 << 20,
            relay_threads: 0,
            max_stream_connections: 10_000,
            stream_idle_timeout: Duration::from_secs(60),
        }
    }
}

impl TurnConfig {
    /// The number of relay threads to run ([`TurnConfig::relay_threads`] with 0 resolved).
    pub fn relay_thread_count(&self) -> usize {
        match self.relay_threads {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(8),
            n => n,
        }
    }

    /// The relay sockets of `family`, if the server offers that family.
    pub fn relay(&self, family: Family) -> Option<&RelayIp> {
        self.relays.iter().find(|r| r.family() == family)
    }
}
