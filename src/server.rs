//! `signalbox serve`: opens the store, resolves secrets, binds the listeners, runs the HTTP
//! server and background sweepers, and shuts down gracefully on SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::http::{self, App, AppState};
use crate::metrics::Metrics;
use crate::relay::{Relay, RelayMetrics};
use crate::store::Store;

/// Resolves when the process is asked to stop.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Builds the application state from a validated config: secrets, store, the relay (unless
/// `no_turn`), metrics.
pub async fn build_app(
    config: Config,
    tls: Option<Arc<crate::tls::Tls>>,
) -> anyhow::Result<AppState> {
    let secrets = crate::secrets::resolve(
        &config.data_dir,
        config.jwt_secret.as_deref(),
        &config.turn.secrets,
    )
    .with_context(|| format!("preparing data directory {}", config.data_dir.display()))?;
    let store = Store::from_config(&config)
        .await
        .map_err(|e| anyhow::anyhow!("{e}: {e:?}"))
        .with_context(|| match &config.database_url {
            Some(_) => "opening the PostgreSQL database (database_url)".to_string(),
            None => format!("opening the database in {}", config.data_dir.display()),
        })?;
    let sfu = crate::sfu::start(&config).await?;
    if let Some((sfu, _)) = &sfu {
        println!(
            "signalbox sfu listening on udp {} (advertised {})",
            sfu.handle.local_addr(),
            sfu.advertised
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let relay = if config.turn.enabled {
        // Relay-only participants reach the SFU through the relay, whatever its address.
        let own_peers: Vec<SocketAddr> = sfu
            .iter()
            .flat_map(|(s, _)| s.advertised.iter().copied())
            .collect();
        let relay_tls = tls.as_ref().map(|t| t.relay_config());
        let relay = Relay::start(&config, &secrets, store.clone(), &own_peers, relay_tls).await?;
        let a = relay.addrs;
        let show = |x: Option<SocketAddr>| x.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
        println!(
            "signalbox turn listening on udp {} tcp {} tls {}",
            show(a.udp),
            show(a.tcp),
            show(a.tls)
        );
        if a.udp6.is_some() || a.tcp6.is_some() || a.tls6.is_some() {
            println!(
                "signalbox turn listening on udp {} tcp {} tls {} (IPv6)",
                show(a.udp6),
                show(a.tcp6),
                show(a.tls6)
            );
        }
        Some(relay)
    } else {
        None
    };
    let mut collectors: Vec<Box<dyn prometheus_client::collector::Collector>> = Vec::new();
    if let Some(r) = &relay {
        collectors.push(Box::new(RelayMetrics(r.clone())));
    }
    if let Some((s, _)) = &sfu {
        collectors.push(Box::new(crate::sfu::SfuMetrics(s.handle.clone())));
    }
    // The receivers of new events; this also fails what was pending for removed URLs.
    let urls = config.webhooks.urls.clone();
    let orphaned = store
        .set_webhook_endpoints(urls)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("preparing the webhook outbox")?;
    if orphaned > 0 {
        tracing::warn!(
            orphaned,
            "pending webhook deliveries to URLs no longer in webhook_urls were marked failed"
        );
    }
    let cluster = match &config.redis_url {
        Some(url) => {
            let node = config
                .node_name
                .clone()
                .unwrap_or_else(crate::cluster::keys::random_node_name);
            let cluster = crate::cluster::Cluster::new(url, node)
                .map_err(|e| anyhow::anyhow!("{e}"))
                .context("preparing cluster mode (redis_url)")?;
            collectors.push(Box::new(crate::cluster::ClusterMetrics(cluster.clone())));
            Some(cluster)
        }
        None => None,
    };
    let metrics = Metrics::new(store.latency_histogram(), collectors);
    let app = Arc::new(App::new(config, store, secrets, metrics, relay, tls));
    if let Some(cluster) = cluster {
        app.signaling.attach_cluster(cluster);
    }
    if let Some((sfu, notices)) = sfu {
        crate::sfu::attach(&app.signaling, &app.config, &sfu, notices);
    }
    Ok(app)
}

/// Binds the HTTP listener. An unspecified IPv6 address (`[::]`, the default) takes IPv4
/// clients too (dual-stack, whatever `net.ipv6.bindv6only` says); on a host without IPv6 it
/// falls back to `0.0.0.0` with a warning.
fn bind_http(listen: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let dual = listen.ip() == std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);
    let listen = if dual && !crate::host_addr::ipv6_available() {
        tracing::warn!("this host has no IPv6: HTTP listens on IPv4 only");
        SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, listen.port()))
    } else {
        listen
    };
    let socket = Socket::new(Domain::for_address(listen), Type::STREAM, None)?;
    if listen.is_ipv6() {
        socket.set_only_v6(!dual)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&listen.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Reads the configuration again (for SIGHUP): the file, the environment, the flags.
pub type Reload = Box<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// On every SIGHUP: reads the configuration again and applies what can change live; logs what
/// was applied and what needs a restart. A configuration that does not parse changes nothing.
async fn reload_on_hangup(app: AppState, reload: Reload) {
    #[cfg(unix)]
    {
        let Ok(mut hangups) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP: configuration reload is off");
            return;
        };
        while hangups.recv().await.is_some() {
            let outcome = match reload() {
                Ok(new) => crate::reload::apply(&app, &new).await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(c) => {
                    let list = |v: &[&str]| {
                        if v.is_empty() {
                            "nothing".to_string()
                        } else {
                            v.join(", ")
                        }
                    };
                    tracing::info!(
                        applied = %list(&c.live),
                        needs_restart = %list(&c.restart),
                        "configuration reloaded"
                    );
                    if !c.restart.is_empty() {
                        tracing::warn!(
                            "configuration reload: {} changed but take effect only after a restart",
                            c.restart.join(", ")
                        );
                    }
                }
                Err(e) => tracing::error!("configuration reload refused, nothing changed: {e}"),
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (app, reload);
    }
}

/// Starts the webhook delivery worker. It runs even without `webhook_urls` (it then has
/// nothing to deliver), so a config reload can turn webhooks on.
fn start_webhooks(
    app: &AppState,
    stop: watch::Receiver<bool>,
) -> Result<Option<tokio::task::JoinHandle<()>>, crate::error::Error> {
    let hooks = &app.config.webhooks;
    let settings = crate::webhooks::worker::Settings {
        secret: hooks
            .secret
            .as_ref()
            .map(|s| s.as_bytes().to_vec())
            .unwrap_or_default(),
        timeout: hooks.timeout,
        policy: crate::webhooks::RetryPolicy {
            max_age: hooks.max_age,
            ..Default::default()
        },
    };
    let worker = crate::webhooks::worker::Worker::new(app.store.clone(), settings)?;
    app.signaling.attach_webhooks(worker.waker());
    app.signaling.set_webhooks_on(!hooks.urls.is_empty());
    app.live.attach_webhooks(worker.live_settings());
    if !hooks.urls.is_empty() {
        tracing::info!(urls = ?hooks.urls, "webhooks on");
    }
    Ok(Some(tokio::spawn(worker.run(stop))))
}

/// Joins the cluster when `redis_url` is set: this node's relays (on `public_host`) go into
/// the registry for the other nodes' `/ice-config`, and the heartbeat, inbox and publisher start.
fn start_cluster(
    app: &AppState,
    tls: &Option<Arc<crate::tls::Tls>>,
    local: SocketAddr,
    stop: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let Some(cluster) = app.signaling.cluster() else {
        return Vec::new();
    };
    if let (Some(host), Some(relay)) = (&app.config.public_host, &app.relay) {
        let front = tls.as_ref().map(|_| local.port());
        let ports = crate::http::ice::relay_ports(&relay.addrs, host, front);
        let (stun, turn) = crate::http::ice::relay_uris(host, Some(ports));
        cluster.set_relays(stun, turn);
    } else if app.relay.is_some() {
        tracing::warn!(
            "cluster mode without public_host: the other nodes cannot offer this node's relay"
        );
    }
    println!("signalbox cluster node {}", cluster.node());
    cluster.start(app.signaling.clone(), stop)
}

/// Runs the server until a shutdown signal; SIGHUP reloads the configuration with `reload`.
pub async fn run(config: Config, reload: Reload) -> anyhow::Result<()> {
    let listen = config.listen;
    let tls = match (&config.tls, &config.acme) {
        (Some(files), _) => Some(Arc::new(crate::tls::Tls::from_files(files)?)),
        // The certificate comes from ACME, started once the HTTPS port is bound.
        (None, Some(_)) => Some(Arc::new(crate::tls::Tls::new(
            crate::tls::certs::CertStore::new(),
        )?)),
        (None, None) => None,
    };
    let app = build_app(config, tls.clone()).await?;
    let listener =
        bind_http(listen).with_context(|| format!("binding the HTTP listener on {listen}"))?;
    let local: SocketAddr = listener.local_addr()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    // ACME before the server says it is ready: a CA file that does not load or an HTTP-01
    // port that cannot be bound fails the start, not a running service.
    if let (Some(acme), Some(tls)) = (&app.config.acme, &tls) {
        let (dir, port) = (&app.config.data_dir, local.port());
        crate::tls::acme::start(acme, dir, &tls.certs, port, stop_rx.clone()).await?;
    }
    // A stable line on stdout that scripts and tests wait for.
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!(
        "signalbox {} listening on {scheme}://{local}",
        env!("CARGO_PKG_VERSION")
    );
    tracing::info!(%local, data_dir = %app.config.data_dir.display(), "signalbox started");

    let webhooks = match start_webhooks(&app, stop_rx.clone()) {
        Ok(worker) => worker,
        Err(e) => anyhow::bail!("{e}"),
    };
    let timers = tokio::spawn(app.signaling.clone().run_timers(stop_rx.clone()));
    let cluster_tasks = start_cluster(&app, &tls, local, stop_rx.clone());
    let reloader = tokio::spawn(reload_on_hangup(app.clone(), reload));
    let router = http::router(app.clone());
    // Tell systemd (Type=notify) that we are ready; a no-op outside systemd.
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::debug!(error = %e, "sd_notify READY failed");
    }
    match tls {
        Some(tls) => {
            let _ = app.front_port.set(local.port());
            if let Some(files) = &tls.files {
                tokio::spawn(Arc::clone(files).watch(stop_rx.clone()));
            }
            let front = crate::tls::front::Front {
                router,
                tls,
                turn: app.relay.as_ref().and_then(|r| r.stream_intake()),
                counts: app.metrics.tls_port_connections.clone(),
            };
            let (stop_https, stopped) = watch::channel(false);
            let server = tokio::spawn(crate::tls::front::serve(listener, front, stopped));
            shutdown_signal().await;
            let _ = stop_https.send(true);
            let _ = server.await;
        }
        None => axum::serve(
            // Signaling messages are small and latency-bound: no Nagle delay.
            listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            }),
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("HTTP server failed")?,
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    let _ = stop_tx.send(true);
    reloader.abort();
    let _ = timers.await;
    for task in cluster_tasks {
        let _ = task.await;
    }
    if let Some(worker) = webhooks {
        let _ = worker.await;
    }
    if let Some(relay) = &app.relay {
        relay.shutdown().await;
    }
    tracing::info!("signalbox stopped");
    Ok(())
}
