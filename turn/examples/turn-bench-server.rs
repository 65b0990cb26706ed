//! A standalone signalbox-turn server for interop checks and `bench/turn/`: no app, just the
//! relay with REST credentials.
//!
//! ```text
//! turn-bench-server --listen 127.0.0.1:3478 --relay-ip 127.0.0.1 --relay-ports 50000-50999 \
//!     --secret north --allow-peer 127.0.0.0/8 [--tls-listen ADDR --cert PEM --key PEM] [--threads N]
//!     [--user-quota N] [--total-quota N]
//! ```
//! `--listen` serves UDP and TCP on the same address. `--threads N` runs N relay threads
//! (`TurnConfig::relay_threads`) and N tokio workers for TCP/TLS. Stops on SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;

use signalbox_turn::config::RelayIp;
use signalbox_turn::{TurnConfig, TurnServer};

fn usage() -> ExitCode {
    eprintln!(
        "usage: turn-bench-server --listen ADDR --relay-ip IP --relay-ports MIN-MAX --secret S \
         [--allow-peer CIDR]... [--realm R] [--tls-listen ADDR --cert PEM --key PEM] [--threads N] \
         [--user-quota N] [--total-quota N]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut config = TurnConfig::default();
    let mut threads = 1usize;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let Some(value) = args.next() else {
            return usage();
        };
        let ok = match flag.as_str() {
            "--listen" => value
                .parse::<SocketAddr>()
                .map(|a| {
                    config.udp_listen = vec![a];
                    config.tcp_listen = vec![a];
                })
                .is_ok(),
            "--tls-listen" => value.parse().map(|a| config.tls_listen = vec![a]).is_ok(),
            "--cert" => {
                config.tls_cert_path = Some(value.into());
                true
            }
            "--key" => {
                config.tls_key_path = Some(value.into());
                true
            }
            "--relay-ip" => value
                .parse()
                .map(|ip| config.relays = vec![RelayIp::on(ip)])
                .is_ok(),
            "--relay-ports" => match value.split_once('-') {
                Some((lo, hi)) => match (lo.parse(), hi.parse()) {
                    (Ok(lo), Ok(hi)) => {
                        config.relay_ports = lo..=hi;
                        true
                    }
                    _ => false,
                },
                None => false,
            },
            "--secret" => {
                config.secrets.push(value.into_bytes());
                true
            }
            "--allow-peer" => value
                .parse()
                .map(|net| config.allow_peers.push(net))
                .is_ok(),
            "--realm" => {
                config.realm = value;
                true
            }
            "--threads" => value.parse().map(|n| threads = n).is_ok(),
            "--user-quota" => value.parse().map(|n| config.user_quota = n).is_ok(),
            "--total-quota" => value.parse().map(|n| config.total_quota = n).is_ok(),
            _ => false,
        };
        if !ok {
            return usage();
        }
    }
    config.relay_threads = threads.max(1);
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let server = match TurnServer::start(config, tx).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(1);
            }
        };
        eprintln!("listening {:?}", server.local_addrs());
        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("cannot watch SIGTERM: {e}");
                    return ExitCode::from(1);
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("stats {:?}", server.stats());
        server.shutdown().await;
        drain.abort();
        ExitCode::SUCCESS
    })
}
