//! `TurnServer`: starts the listeners, relay machinery and sweeper from a [`TurnConfig`], and
//! offers the app its bound addresses, counters, state size and graceful shutdown.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::config::{Family, TurnConfig};
use crate::core::{Core, CoreConfig, Now, StateSize};
use crate::error::TurnError;
use crate::events::UsageEvent;
use crate::io::shard::{self, Shard};
use crate::io::shared::{RelaySettings, Shared};
use crate::io::{relay, tcp, tls, udp};
use crate::nonce::NonceKey;
use crate::stats::{Stats, StatsSnapshot};

/// How often expired allocations, permissions, channels and cached replies are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The addresses the server actually bound (useful with port 0): the IPv4 listener of each
/// transport, and the IPv6 one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LocalAddrs {
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    pub tls: Option<SocketAddr>,
    pub udp6: Option<SocketAddr>,
    pub tcp6: Option<SocketAddr>,
    pub tls6: Option<SocketAddr>,
}

impl LocalAddrs {
    fn set(v4: &mut Option<SocketAddr>, v6: &mut Option<SocketAddr>, addr: SocketAddr) {
        match Family::of(addr.ip()) {
            Family::V4 => *v4 = Some(addr),
            Family::V6 => *v6 = Some(addr),
        }
    }
}

/// A running STUN/TURN server.
pub struct TurnServer {
    shared: Arc<Shared>,
    local: LocalAddrs,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Bounds TCP and TLS client connections, those handed in by the app included.
    stream_limit: Arc<Semaphore>,
    /// The relay shards' threads.
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for TurnServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnServer")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl TurnServer {
    /// Binds every configured listener and starts serving. Must be called inside a tokio
    /// runtime. Usage events go to `events` with `try_send` (dropped, and counted, when full).
    pub async fn start(
        config: TurnConfig,
        events: mpsc::Sender<UsageEvent>,
    ) -> Result<TurnServer, TurnError> {
        validate(&config)?;
        for r in &config.relays {
            if let Some(warning) = relay::buffer_cap_warning(r.bind, config.relay_socket_buffer) {
                tracing::warn!("{warning}");
                break;
            }
        }
        let stats = Arc::new(Stats::default());
        let core = Core::new(
            CoreConfig::from_turn_config(&config),
            NonceKey::random(),
            Arc::clone(&stats),
        );
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        // Bind everything first so a bad address fails `start` without leaving tasks behind.
        // Each UDP listen address gets `relay_thread_count` shards, one `SO_REUSEPORT` socket
        // each.
        let per_address = config.relay_thread_count();
        let mut udp_sockets = Vec::new();
        let mut local = LocalAddrs::default();
        for addr in &config.udp_listen {
            let sockets = udp::bind(*addr, config.listener_socket_buffer, per_address)?;
            if let Some(first) = sockets.first() {
                let bound = first.local_addr()?;
                LocalAddrs::set(&mut local.udp, &mut local.udp6, bound);
            }
            udp_sockets.extend(sockets);
        }
        let shard_count = per_address * config.udp_listen.len().max(1);
        let shards = (0..shard_count)
            .map(|_| Shard::new())
            .collect::<Result<Vec<_>, _>>()?;
        let shared = Arc::new(Shared {
            core: Mutex::new(core),
            stats,
            events,
            relay: RelaySettings {
                v4: config.relay(Family::V4).map(|r| r.bind),
                v6: config.relay(Family::V6).map(|r| r.bind),
                ports: config.relay_ports.clone(),
                buffer: config.relay_socket_buffer,
            },
            held: Default::default(),
            shards: shards.clone(),
            next_shard: AtomicUsize::new(0),
            shutdown: shutdown_rx,
            stream_idle_timeout: config.stream_idle_timeout,
        });

        let mut tcp_listeners = Vec::new();
        for addr in &config.tcp_listen {
            tcp_listeners.push(tcp::bind(*addr).await?);
        }
        let mut tls_listeners = Vec::new();
        if !config.tls_listen.is_empty() {
            let acceptor = match (
                &config.tls_server_config,
                &config.tls_cert_path,
                &config.tls_key_path,
            ) {
                (Some(ready), _, _) => tokio_rustls::TlsAcceptor::from(Arc::clone(ready)),
                (None, Some(cert), Some(key)) => tls::acceptor(cert, key)?,
                _ => {
                    return Err(TurnError::Config(
                        "tls_listen needs tls_server_config or tls_cert_path and tls_key_path"
                            .into(),
                    ))
                }
            };
            for addr in &config.tls_listen {
                tls_listeners.push((tcp::bind(*addr).await?, acceptor.clone()));
            }
        }

        let mut tasks = Vec::new();
        let limit = Arc::new(Semaphore::new(config.max_stream_connections));
        let mut listeners = udp_sockets.into_iter();
        let mut threads = Vec::with_capacity(shards.len());
        for (i, s) in shards.iter().enumerate() {
            let (shared, s, listener) = (Arc::clone(&shared), Arc::clone(s), listeners.next());
            let spawned = std::thread::Builder::new()
                .name(format!("turn-relay-{i}"))
                .spawn(move || shard::run(shared, s, listener));
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    stop_shards(&shards, threads);
                    return Err(e.into());
                }
            }
        }
        for listener in tcp_listeners {
            LocalAddrs::set(&mut local.tcp, &mut local.tcp6, listener.local_addr()?);
            tasks.push(tokio::spawn(tcp::serve(
                Arc::clone(&shared),
                listener,
                None,
                Arc::clone(&limit),
            )));
        }
        for (listener, acceptor) in tls_listeners {
            LocalAddrs::set(&mut local.tls, &mut local.tls6, listener.local_addr()?);
            tasks.push(tokio::spawn(tcp::serve(
                Arc::clone(&shared),
                listener,
                Some(acceptor),
                Arc::clone(&limit),
            )));
        }
        tasks.push(tokio::spawn(sweeper(Arc::clone(&shared))));
        tracing::info!(udp = ?local.udp, tcp = ?local.tcp, tls = ?local.tls, udp6 = ?local.udp6,
            tcp6 = ?local.tcp6, tls6 = ?local.tls6, "TURN server listening");
        Ok(TurnServer {
            shared,
            local,
            shutdown: shutdown_tx,
            tasks,
            stream_limit: limit,
            threads,
        })
    }

    /// A handle through which the app hands the relay client connections it accepted itself
    /// (TURN on the HTTPS port).
    pub fn stream_intake(&self) -> StreamIntake {
        StreamIntake {
            shared: Arc::clone(&self.shared),
            limit: Arc::clone(&self.stream_limit),
        }
    }

    /// The addresses actually bound.
    pub fn local_addrs(&self) -> LocalAddrs {
        self.local
    }

    /// Rotates the TURN REST secrets live (the first signs, all verify); an empty list refuses
    /// every new Allocate, as at start.
    pub fn set_secrets(&self, secrets: Vec<Vec<u8>>) {
        self.shared.core().set_secrets(secrets);
    }

    /// Replaces the allowed peer CIDRs and exact addresses live (a reloaded configuration).
    pub fn set_allowed_peers(&self, cidrs: Vec<ipnet::IpNet>, exact: Vec<SocketAddr>) {
        let policy = crate::peer_policy::PeerPolicy::new(cidrs).with_exact(exact);
        self.shared.core().set_policy(policy);
    }

    /// A snapshot of the server's counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// Allocations alive now and what each has relayed so far (usage events only carry totals
    /// when an allocation closes).
    pub fn live_allocations(&self) -> Vec<crate::LiveAllocation> {
        self.shared.core().live_allocations()
    }

    /// How many entries the relay holds (allocations, permissions, channels, cached replies...).
    pub fn state_size(&self) -> StateSize {
        self.shared.core().state_size()
    }

    /// Stops accepting, ends every allocation (emitting `AllocationClosed`), waits for the
    /// listener tasks and closes the relay sockets.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
        let threads = std::mem::take(&mut self.threads);
        let shards = self.shared.shards.clone();
        let _ = tokio::task::spawn_blocking(move || stop_shards(&shards, threads)).await;
        let events = {
            let mut core = self.shared.core();
            core.close_all(Now::system());
            core.drain_events()
        };
        self.shared.dispatch(events);
        self.shared.held.clear();
        tracing::info!("TURN server stopped");
    }
}

impl Drop for TurnServer {
    /// A server dropped without [`TurnServer::shutdown`] still stops its relay threads (without
    /// waiting for them).
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for s in &self.shared.shards {
            s.stop();
        }
    }
}

/// Takes TURN client connections that arrived on a listener of the app's (one port for HTTPS
/// and TURN): the same connection limit, idle timeout and shutdown as the relay's own TCP and
/// TLS listeners.
#[derive(Clone)]
pub struct StreamIntake {
    shared: Arc<Shared>,
    limit: Arc<Semaphore>,
}

impl std::fmt::Debug for StreamIntake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamIntake").finish_non_exhaustive()
    }
}

impl StreamIntake {
    /// Serves a plain TCP connection whose first bytes (peeked, not read) are a STUN message.
    /// `false` when the relay's connection limit is reached (the connection is closed) or the
    /// relay is shutting down.
    pub fn tcp(&self, conn: tokio::net::TcpStream, client: SocketAddr) -> bool {
        if *self.shared.shutdown.borrow() {
            return false;
        }
        let Ok(permit) = Arc::clone(&self.limit).try_acquire_owned() else {
            return false;
        };
        let Ok(server) = conn.local_addr() else {
            return false;
        };
        let _ = conn.set_nodelay(true);
        tcp::to_shard(
            &self.shared,
            conn,
            canonical(client),
            canonical(server),
            permit,
        );
        true
    }

    /// Serves an established TLS stream (its handshake done by the app) until it ends. Returns
    /// at once, `false`, when the relay's connection limit is reached or it is shutting down.
    pub async fn tls<S>(&self, stream: S, client: SocketAddr, server: SocketAddr) -> bool
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    {
        if *self.shared.shutdown.borrow() {
            return false;
        }
        let Ok(_permit) = Arc::clone(&self.limit).try_acquire_owned() else {
            return false;
        };
        crate::io::stream::serve(
            Arc::clone(&self.shared),
            stream,
            canonical(client),
            canonical(server),
            crate::events::Transport::Tls,
        )
        .await;
        true
    }
}

/// An IPv4-mapped IPv6 address (a dual-stack listener's IPv4 client) as plain IPv4, so the
/// relay sees the family the client really speaks.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Stops the relay shards and waits for their threads.
fn stop_shards(shards: &[Arc<Shard>], threads: Vec<std::thread::JoinHandle<()>>) {
    for s in shards {
        s.stop();
    }
    for t in threads {
        let _ = t.join();
    }
    for s in shards {
        s.clear();
    }
}

fn validate(config: &TurnConfig) -> Result<(), TurnError> {
    if config.udp_listen.is_empty() && config.tcp_listen.is_empty() && config.tls_listen.is_empty()
    {
        return Err(TurnError::Config("no TURN listener configured".into()));
    }
    for (name, addrs) in [
        ("udp_listen", &config.udp_listen),
        ("tcp_listen", &config.tcp_listen),
        ("tls_listen", &config.tls_listen),
    ] {
        if addrs.iter().filter(|a| a.is_ipv4()).count() > 1
            || addrs.iter().filter(|a| a.is_ipv6()).count() > 1
        {
            return Err(TurnError::Config(format!(
                "{name}: at most one address per address family"
            )));
        }
    }
    if config.relays.is_empty() {
        return Err(TurnError::Config(
            "no relay address family configured".into(),
        ));
    }
    for family in [Family::V4, Family::V6] {
        if config
            .relays
            .iter()
            .filter(|r| r.family() == family)
            .count()
            > 1
        {
            return Err(TurnError::Config(format!(
                "more than one {} relay address",
                family.as_str()
            )));
        }
    }
    for r in &config.relays {
        if r.advertised().is_none() {
            return Err(TurnError::Config(format!(
                "the {} relay binds to an unspecified address: set its external address (the \
                 one clients reach relays on)",
                r.family().as_str()
            )));
        }
        if let Some(ext) = r.external {
            if Family::of(ext) != r.family() {
                return Err(TurnError::Config(format!(
                    "external address {ext} is not of the {} family its relay binds to ({})",
                    r.family().as_str(),
                    r.bind
                )));
            }
        }
    }
    if config.relay_ports.is_empty() {
        return Err(TurnError::Config("relay port range is empty".into()));
    }
    if config.secrets.is_empty() {
        tracing::warn!("no TURN secret configured: every Allocate will be refused");
    }
    for addr in &config.allow_peer_addrs {
        if addr.ip().is_unspecified() || addr.port() == 0 {
            tracing::warn!(
                %addr,
                "allow_peer_addrs entry is unspecified or port 0: it only matches that literal \
                 address; give the concrete address clients reach the peer on"
            );
        }
    }
    Ok(())
}

async fn sweeper(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => break,
        }
        let events = {
            let mut core = shared.core();
            core.sweep(Now::system());
            core.drain_events()
        };
        if !events.is_empty() {
            shared.dispatch(events);
        }
    }
}
