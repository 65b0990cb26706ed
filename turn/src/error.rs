//! `TurnError`: why the relay could not start.

use std::net::SocketAddr;

/// Why [`crate::TurnServer::start`] failed.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    #[error("invalid TURN configuration: {0}")]
    Config(String),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot load TLS certificate or key: {0}")]
    Tls(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}
