//! `TurnServer`: starts the listeners, relay machinery and sweeper from a [`TurnConfig`], and
//! offers the app its bound addresses, counters, state size and graceful shutdown.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::config::TurnConfig;
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

/// The addresses the server actually bound (useful with port 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LocalAddrs {
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    pub tls: Option<SocketAddr>,
}

/// A running STUN/TURN server.
pub struct TurnServer {
    shared: Arc<Shared>,
    local: LocalAddrs,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
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
        if let Some(warning) =
            relay::buffer_cap_warning(config.relay_bind_ip, config.relay_socket_buffer)
        {
            tracing::warn!("{warning}");
        }
        let stats = Arc::new(Stats::default());
        let core = Core::new(
            CoreConfig::from_turn_config(&config),
            NonceKey::random(),
            Arc::clone(&stats),
        );
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shard_count = config.relay_thread_count();
        let shards = (0..shard_count)
            .map(|_| Shard::new())
            .collect::<Result<Vec<_>, _>>()?;
        let shared = Arc::new(Shared {
            core: Mutex::new(core),
            stats,
            events,
            relay: RelaySettings {
                bind_ip: config.relay_bind_ip,
                ports: config.relay_ports.clone(),
                buffer: config.relay_socket_buffer,
            },
            held: Default::default(),
            shards: shards.clone(),
            next_shard: AtomicUsize::new(0),
            shutdown: shutdown_rx,
            stream_idle_timeout: config.stream_idle_timeout,
        });

        // Bind everything first so a bad address fails `start` without leaving tasks behind.
        let udp_sockets = match config.udp_listen {
            Some(addr) => udp::bind(addr, config.listener_socket_buffer, shard_count)?,
            None => Vec::new(),
        };
        let tcp_listener = match config.tcp_listen {
            Some(addr) => Some(tcp::bind(addr).await?),
            None => None,
        };
        let tls_listener = match config.tls_listen {
            Some(addr) => {
                let (Some(cert), Some(key)) = (&config.tls_cert_path, &config.tls_key_path) else {
                    return Err(TurnError::Config(
                        "tls_listen needs tls_cert_path and tls_key_path".into(),
                    ));
                };
                Some((tcp::bind(addr).await?, tls::acceptor(cert, key)?))
            }
            None => None,
        };

        let mut local = LocalAddrs::default();
        let mut tasks = Vec::new();
        let limit = Arc::new(Semaphore::new(config.max_stream_connections));
        if let Some(first) = udp_sockets.first() {
            local.udp = Some(first.local_addr()?);
        }
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
        if let Some(listener) = tcp_listener {
            local.tcp = Some(listener.local_addr()?);
            tasks.push(tokio::spawn(tcp::serve(
                Arc::clone(&shared),
                listener,
                None,
                Arc::clone(&limit),
            )));
        }
        if let Some((listener, acceptor)) = tls_listener {
            local.tls = Some(listener.local_addr()?);
            tasks.push(tokio::spawn(tcp::serve(
                Arc::clone(&shared),
                listener,
                Some(acceptor),
                limit,
            )));
        }
        tasks.push(tokio::spawn(sweeper(Arc::clone(&shared))));
        tracing::info!(udp = ?local.udp, tcp = ?local.tcp, tls = ?local.tls, "TURN server listening");
        Ok(TurnServer {
            shared,
            local,
            shutdown: shutdown_tx,
            tasks,
            threads,
        })
    }

    /// The addresses actually bound.
    pub fn local_addrs(&self) -> LocalAddrs {
        self.local
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
    if config.udp_listen.is_none() && config.tcp_listen.is_none() && config.tls_listen.is_none() {
        return Err(TurnError::Config("no TURN listener configured".into()));
    }
    if config.advertised_relay_ip().is_none() {
        return Err(TurnError::Config(
            "relay_bind_ip is unspecified: set external_ip (the address clients reach relays on)"
                .into(),
        ));
    }
    if let Some(ext) = config.external_ip {
        if !config.relay_bind_ip.is_unspecified() && ext.is_ipv6() != config.relay_bind_ip.is_ipv6()
        {
            return Err(TurnError::Config(
                "external_ip and relay_bind_ip differ in address family".into(),
            ));
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
