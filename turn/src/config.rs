//! `TurnConfig`: everything the relay needs to start, with the embedded defaults of DESIGN.md.
//!
//! The app fills this from its own layered config; nothing here reads files or the environment.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

/// Configuration of a [`crate::TurnServer`].
#[derive(Debug, Clone)]
pub struct TurnConfig {
    /// STUN/TURN over UDP (`turn:host?transport=udp`). `None` disables it.
    pub udp_listen: Option<SocketAddr>,
    /// STUN/TURN over TCP (`turn:host?transport=tcp`), RFC 4571-style framing. `None` disables it.
    pub tcp_listen: Option<SocketAddr>,
    /// TURN over TLS (`turns:`). Needs `tls_cert_path` and `tls_key_path`.
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain for `tls_listen`.
    pub tls_cert_path: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for `tls_listen`.
    pub tls_key_path: Option<PathBuf>,
    /// Local address relay sockets bind to. When it is unspecified (`0.0.0.0`/`::`),
    /// `external_ip` must be set, since clients need a concrete relayed address.
    pub relay_bind_ip: IpAddr,
    /// Address advertised in XOR-RELAYED-ADDRESS when the server sits behind a 1:1 NAT.
    pub external_ip: Option<IpAddr>,
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
            udp_listen: Some(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 3478))),
            tcp_listen: Some(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 3478))),
            tls_listen: None,
            tls_cert_path: None,
            tls_key_path: None,
            relay_bind_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            external_ip: None,
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

    /// The IP written into XOR-RELAYED-ADDRESS, if one can be known.
    pub fn advertised_relay_ip(&self) -> Option<IpAddr> {
        match self.external_ip {
            Some(ip) => Some(ip),
            None if !self.relay_bind_ip.is_unspecified() => Some(self.relay_bind_ip),
            None => None,
        }
    }
}
