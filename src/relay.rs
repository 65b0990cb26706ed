//! The app's side of the embedded STUN/TURN relay: maps our configuration onto
//! `signalbox_turn::TurnConfig`, starts the relay inside `serve`, stores its usage events
//! (allocation opened/closed with bytes and packets) for call analytics, and exports its
//! counters to Prometheus.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use signalbox_turn::config::{Family, RelayIp};
use signalbox_turn::{
    LiveAllocation, LocalAddrs, StatsSnapshot, StreamIntake, TurnConfig, TurnServer, UsageEvent,
};
use tokio::sync::mpsc;
use tokio_rustls::rustls::ServerConfig;

use crate::app::live::{RelayAllocation, RelayLive};
use crate::config::Config;
use crate::host_addr;
use crate::secrets::Secrets;
use crate::store::analytics::RelaySession;
use crate::store::Store;

/// The running relay.
pub struct Relay {
    server: Mutex<Option<TurnServer>>,
    pub addrs: LocalAddrs,
    /// Where TURN clients accepted on the HTTPS port go.
    intake: StreamIntake,
    /// Addresses of this server the relay always reaches (the SFU's), kept across reloads.
    own_peers: Vec<SocketAddr>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Relay {{ {:?} }}", self.addrs)
    }
}

/// Where relay sockets bind and which address they advertise, for each family the TURN server
/// listens on (`listen`): the listener's IP, advertised by the rules of
/// [`host_addr::advertised`]. A family with nothing to advertise (IPv6 without a route) offers
/// no relays.
pub fn relay_ips(
    config: &Config,
    listen: &[SocketAddr],
    route: impl Fn(Family) -> Option<IpAddr>,
) -> Vec<RelayIp> {
    let public_ip = host_addr::public_ip(config.public_host.as_deref());
    listen
        .iter()
        .filter_map(|l| {
            let bind = l.ip();
            let family = Family::of(bind);
            let ip = host_addr::advertised(
                family,
                bind,
                &config.turn.external_ip,
                public_ip,
                &route,
                "TURN relays are",
            )?;
            Some(RelayIp {
                bind,
                external: (ip != bind).then_some(ip),
            })
        })
        .collect()
}

/// The listen addresses to bind: without IPv6 on this host, the IPv6 half of a dual-stack
/// default is dropped (with a warning) rather than failing the start.
fn usable(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    if host_addr::ipv6_available() || addrs.iter().all(SocketAddr::is_ipv4) {
        return addrs.to_vec();
    }
    tracing::warn!("this host has no IPv6: TURN listens on IPv4 only");
    addrs.iter().copied().filter(SocketAddr::is_ipv4).collect()
}

/// Maps our configuration onto the relay's. `own_peers` are addresses of this server that
/// relay-only clients must reach although they may be private or loopback (the SFU's).
/// With `tls` (the app's certificate, see [`crate::tls::Tls::relay_config`]) the relay also
/// listens for TURN over TLS.
pub fn turn_config(
    config: &Config,
    secrets: &Secrets,
    own_peers: &[SocketAddr],
    tls: Option<Arc<ServerConfig>>,
) -> anyhow::Result<TurnConfig> {
    let t = &config.turn;
    let tls_listen = match &tls {
        Some(_) => usable(&t.tls_listen),
        None => Vec::new(),
    };
    let listen = usable(&t.listen);
    Ok(TurnConfig {
        relays: relay_ips(config, &listen, host_addr::default_route_ip),
        udp_listen: listen.clone(),
        tcp_listen: listen,
        tls_listen,
        tls_server_config: tls,
        default_family: t.default_relay_family,
        relay_ports: t.relay_ports.0..=t.relay_ports.1,
        realm: t.realm.clone(),
        secrets: secrets.turn.clone(),
        allow_peers: t.allow_peers.clone(),
        allow_peer_addrs: own_peers.to_vec(),
        user_quota: t.user_quota,
        total_quota: t.total_quota,
        max_bitrate_bps: t.max_bitrate,
        ..TurnConfig::default()
    })
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn session(e: &UsageEvent) -> RelaySession {
    match e {
        UsageEvent::AllocationOpened {
            user,
            username,
            client,
            relay,
            transport,
            at,
        } => RelaySession {
            user_id: user.clone(),
            username: username.clone(),
            transport: transport.as_str().to_string(),
            client_addr: client.to_string(),
            relay_addr: relay.to_string(),
            opened_at: millis(*at),
            ..RelaySession::default()
        },
        UsageEvent::AllocationClosed {
            user,
            username,
            client,
            relay,
            transport,
            at,
            bytes_to_peer,
            bytes_from_peer,
            packets_to_peer,
            packets_from_peer,
        } => RelaySession {
            user_id: user.clone(),
            username: username.clone(),
            transport: transport.as_str().to_string(),
            client_addr: client.to_string(),
            relay_addr: relay.to_string(),
            opened_at: millis(*at),
            closed_at: Some(millis(*at)),
            bytes_to_peer: *bytes_to_peer,
            bytes_from_peer: *bytes_from_peer,
            packets_to_peer: *packets_to_peer,
            packets_from_peer: *packets_from_peer,
        },
    }
}

/// Stores usage events until the relay's sender is dropped.
async fn record_usage(store: Store, mut events: mpsc::Receiver<UsageEvent>) {
    while let Some(event) = events.recv().await {
        let opened = matches!(event, UsageEvent::AllocationOpened { .. });
        let s = session(&event);
        let result = if opened {
            store.relay_opened(s).await
        } else {
            store.relay_closed(s).await
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "storing relay usage failed");
        }
    }
}

impl Relay {
    /// Starts the relay and the task storing its usage.
    pub async fn start(
        config: &Config,
        secrets: &Secrets,
        store: Store,
        own_peers: &[SocketAddr],
        tls: Option<Arc<ServerConfig>>,
    ) -> anyhow::Result<Arc<Relay>> {
        let turn = turn_config(config, secrets, own_peers, tls)?;
        let (tx, rx) = mpsc::channel(4096);
        let server = TurnServer::start(turn, tx)
            .await
            .context("starting the STUN/TURN relay")?;
        tokio::spawn(record_usage(store, rx));
        let addrs = server.local_addrs();
        Ok(Arc::new(Relay {
            intake: server.stream_intake(),
            server: Mutex::new(Some(server)),
            addrs,
            own_peers: own_peers.to_vec(),
        }))
    }

    /// Takes TURN connections the HTTPS listener accepted (one port for both).
    pub fn stream_intake(&self) -> Option<StreamIntake> {
        Some(self.intake.clone())
    }

    /// Allocations alive now with their usage so far.
    pub fn live(&self) -> Vec<LiveAllocation> {
        self.server
            .lock()
            .ok()
            .and_then(|s| s.as_ref().map(TurnServer::live_allocations))
            .unwrap_or_default()
    }

    /// Totals and live allocations, for the admin view.
    pub fn live_view(&self) -> RelayLive {
        let stats = self.stats().unwrap_or_default();
        let sessions = self
            .live()
            .into_iter()
            .map(|a| RelayAllocation {
                user_id: a.user,
                transport: a.transport.as_str().to_string(),
                client_address: a.client.to_string(),
                relay_address: a.relay.to_string(),
                opened_at: crate::clock::rfc3339(millis(a.opened_at)),
                bytes_to_peer: a.usage.bytes_to_peer,
                bytes_from_peer: a.usage.bytes_from_peer,
                packets_to_peer: a.usage.packets_to_peer,
                packets_from_peer: a.usage.packets_from_peer,
            })
            .collect();
        RelayLive {
            allocations: stats.allocations_active,
            allocations_created: stats.allocations_total,
            bytes_to_peer: stats.bytes_to_peer,
            bytes_from_peer: stats.bytes_from_peer,
            packets_to_peer: stats.packets_to_peer,
            packets_from_peer: stats.packets_from_peer,
            sessions,
        }
    }

    pub fn stats(&self) -> Option<StatsSnapshot> {
        self.server.lock().ok()?.as_ref().map(TurnServer::stats)
    }

    /// Rotates the TURN REST secrets (a reloaded `turn_secret`).
    pub fn set_secrets(&self, secrets: Vec<Vec<u8>>) {
        if let Ok(Some(s)) = self.server.lock().as_deref() {
            s.set_secrets(secrets);
        }
    }

    /// Replaces the allowed peer CIDRs (a reloaded `turn_allow_peer`); this server's own
    /// addresses stay reachable.
    pub fn set_allowed_peers(&self, cidrs: Vec<ipnet::IpNet>) {
        if let Ok(Some(s)) = self.server.lock().as_deref() {
            s.set_allowed_peers(cidrs, self.own_peers.clone());
        }
    }

    /// Stops relaying; open allocations are reported closed (and stored).
    pub async fn shutdown(&self) {
        let server = self.server.lock().ok().and_then(|mut s| s.take());
        if let Some(server) = server {
            server.shutdown().await;
        }
    }
}

/// Fills stored sessions that are still open with what their allocation relayed so far
/// (stored rows only get totals when an allocation closes).
pub fn apply_live(sessions: &mut [RelaySession], live: &[LiveAllocation]) {
    for s in sessions.iter_mut().filter(|s| s.closed_at.is_none()) {
        let found = live.iter().find(|a| {
            a.username == s.username
                && a.client.to_string() == s.client_addr
                && a.relay.to_string() == s.relay_addr
        });
        if let Some(a) = found {
            s.bytes_to_peer = a.usage.bytes_to_peer;
            s.bytes_from_peer = a.usage.bytes_from_peer;
            s.packets_to_peer = a.usage.packets_to_peer;
            s.packets_from_peer = a.usage.packets_from_peer;
        }
    }
}

/// Exports the relay's counters on each scrape.
#[derive(Debug)]
pub struct RelayMetrics(pub Arc<Relay>);

impl Collector for RelayMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(s) = self.0.stats() else {
            return Ok(());
        };
        let gauge = ConstGauge::new(i64::try_from(s.allocations_active).unwrap_or(i64::MAX));
        gauge.encode(encoder.encode_descriptor(
            "turn_allocations",
            "TURN allocations alive now",
            None,
            gauge.metric_type(),
        )?)?;
        let counters: [(&str, &str, u64); 10] = [
            (
                "turn_allocations_created",
                "TURN allocations ever created",
                s.allocations_total,
            ),
            (
                "turn_bytes_to_peer",
                "Payload bytes relayed client to peer",
                s.bytes_to_peer,
            ),
            (
                "turn_bytes_from_peer",
                "Payload bytes relayed peer to client",
                s.bytes_from_peer,
            ),
            (
                "turn_packets_to_peer",
                "Packets relayed client to peer",
                s.packets_to_peer,
            ),
            (
                "turn_packets_from_peer",
                "Packets relayed peer to client",
                s.packets_from_peer,
            ),
            (
                "turn_auth_failures",
                "TURN requests refused for credentials (401)",
                s.auth_failures,
            ),
            (
                "turn_denied_peers",
                "Peers refused by the relay's peer policy (403)",
                s.denied_peers,
            ),
            (
                "turn_bad_packets",
                "Malformed datagrams and frames",
                s.bad_packets,
            ),
            (
                "turn_dropped_packets",
                "Valid packets not relayed",
                s.dropped_packets,
            ),
            (
                "turn_quota_rejections",
                "Allocations refused by quota (486/508)",
                s.quota_rejections,
            ),
        ];
        for (name, help, value) in counters {
            let c = ConstCounter::new(value);
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Layers;

    fn config(env: &[(&str, &str)]) -> Config {
        let mut l = Layers::default();
        l.apply_env(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Config::from_layers(&l).expect("config")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    /// (bind, advertised) of each family offered.
    fn relays(c: &Config, fallback: impl Fn(Family) -> Option<IpAddr>) -> Vec<(IpAddr, IpAddr)> {
        relay_ips(c, &c.turn.listen, fallback)
            .iter()
            .map(|r| (r.bind, r.advertised().expect("advertised")))
            .collect()
    }

    #[test]
    fn relay_addresses_follow_the_configuration() {
        let none = |_| None;
        let c = config(&[("SIGNALBOX_TURN_LISTEN", "127.0.0.1:3478")]);
        assert_eq!(relays(&c, none), [(ip("127.0.0.1"), ip("127.0.0.1"))]);
        let c = config(&[("SIGNALBOX_TURN_LISTEN", "127.0.0.1:3478,[::1]:3478")]);
        assert_eq!(
            relays(&c, none),
            [(ip("127.0.0.1"), ip("127.0.0.1")), (ip("::1"), ip("::1"))]
        );
        // The default listens on both families; external addresses go to their own family.
        let c = config(&[("SIGNALBOX_TURN_EXTERNAL_IP", "203.0.113.7,2001:db8::7")]);
        assert_eq!(
            relays(&c, none),
            [
                (ip("0.0.0.0"), ip("203.0.113.7")),
                (ip("::"), ip("2001:db8::7"))
            ]
        );
        let c = config(&[("SIGNALBOX_PUBLIC_HOST", "198.51.100.20")]);
        assert_eq!(
            relays(&c, none),
            [(ip("0.0.0.0"), ip("198.51.100.20"))],
            "no IPv6 route, no IPv6 relays"
        );
        let c = config(&[("SIGNALBOX_PUBLIC_HOST", "calls.example.com")]);
        assert_eq!(
            relays(&c, none),
            [(ip("0.0.0.0"), ip("127.0.0.1"))],
            "no route: IPv4 loopback"
        );
        let route = |f| {
            Some(match f {
                Family::V4 => ip("192.0.2.10"),
                Family::V6 => ip("2001:db8::10"),
            })
        };
        assert_eq!(
            relays(&c, route),
            [
                (ip("0.0.0.0"), ip("192.0.2.10")),
                (ip("::"), ip("2001:db8::10"))
            ]
        );
        let c = config(&[("SIGNALBOX_TURN_LISTEN", "0.0.0.0:3478")]);
        assert_eq!(relays(&c, route), [(ip("0.0.0.0"), ip("192.0.2.10"))]);
    }

    #[test]
    fn listen_lists_take_one_address_per_family() {
        let c = config(&[]);
        assert_eq!(
            c.turn.listen,
            [
                "0.0.0.0:3478".parse::<SocketAddr>().expect("addr"),
                "[::]:3478".parse().expect("addr")
            ],
            "[::] is both families"
        );
        let mut l = Layers::default();
        l.apply_env([(
            "SIGNALBOX_TURN_LISTEN".to_string(),
            "[::]:3478,10.0.0.1:3478".to_string(),
        )]);
        assert!(Config::from_layers(&l).is_err(), "two IPv4 addresses");
        let mut l = Layers::default();
        l.apply_env([(
            "SIGNALBOX_TURN_EXTERNAL_IP".to_string(),
            "203.0.113.7,203.0.113.8".to_string(),
        )]);
        assert!(Config::from_layers(&l).is_err(), "two IPv4 external IPs");
        let mut l = Layers::default();
        l.apply_env([(
            "SIGNALBOX_TURN_DEFAULT_RELAY_FAMILY".to_string(),
            "ipv5".to_string(),
        )]);
        assert!(Config::from_layers(&l).is_err());
    }

    #[test]
    fn open_sessions_get_live_usage() {
        let open = RelaySession {
            username: "9:alice".into(),
            client_addr: "127.0.0.1:5000".into(),
            relay_addr: "127.0.0.1:50000".into(),
            ..RelaySession::default()
        };
        let closed = RelaySession {
            closed_at: Some(1),
            bytes_to_peer: 7,
            ..open.clone()
        };
        let mut sessions = vec![open, closed];
        let live = vec![LiveAllocation {
            user: "alice".into(),
            username: "9:alice".into(),
            client: "127.0.0.1:5000".parse().expect("addr"),
            relay: "127.0.0.1:50000".parse().expect("addr"),
            transport: signalbox_turn::Transport::Udp,
            opened_at: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
            usage: signalbox_turn::Usage {
                bytes_to_peer: 100,
                bytes_from_peer: 200,
                packets_to_peer: 1,
                packets_from_peer: 2,
            },
        }];
        apply_live(&mut sessions, &live);
        assert_eq!(
            (sessions[0].bytes_to_peer, sessions[0].bytes_from_peer),
            (100, 200)
        );
        assert_eq!(
            sessions[1].bytes_to_peer, 7,
            "closed sessions keep their stored totals"
        );
    }

    #[test]
    fn turn_config_maps_every_setting() {
        let c = config(&[
            ("SIGNALBOX_TURN_LISTEN", "127.0.0.1:0"),
            ("SIGNALBOX_RELAY_PORTS", "50000-50010"),
            ("SIGNALBOX_TURN_ALLOW_PEER", "127.0.0.0/8"),
            ("SIGNALBOX_TURN_USER_QUOTA", "3"),
            ("SIGNALBOX_TURN_MAX_BITRATE", "1000000"),
        ]);
        let secrets = Secrets {
            jwt: vec![1],
            turn: vec![b"s1".to_vec(), b"s2".to_vec()],
        };
        let sfu: SocketAddr = "127.0.0.1:3479".parse().expect("addr");
        let t = turn_config(&c, &secrets, &[sfu], None).expect("config");
        assert_eq!(t.udp_listen, ["127.0.0.1:0".parse().expect("addr")]);
        assert_eq!(t.tcp_listen, t.udp_listen);
        assert!(t.tls_listen.is_empty(), "no certificate, no TLS");
        assert_eq!(t.relay_ports, 50000..=50010);
        assert_eq!(t.allow_peers.len(), 1);
        assert_eq!(
            t.allow_peer_addrs,
            vec![sfu],
            "the SFU is reachable through the relay"
        );
        assert_eq!(t.user_quota, 3);
        assert_eq!(t.max_bitrate_bps, Some(1_000_000));
        assert_eq!(t.secrets.len(), 2);
    }
}
