//! The TCP client listener: accepts connections (bounded by a semaphore) and hands each to
//! [`super::stream::serve`], optionally after a TLS handshake.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use super::shared::Shared;
use super::stream;
use crate::error::TurnError;
use crate::events::Transport;

/// Binds a TCP listener.
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, TurnError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| TurnError::Bind { addr, source })
}

/// Accepts connections until shutdown; with `tls`, each one is TURN over TLS.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limit: Arc<Semaphore>,
) {
    let Ok(local) = listener.local_addr() else {
        return;
    };
    let mut shutdown = shared.shutdown.clone();
    loop {
        let (conn, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "TURN accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            drop(conn); // over the connection limit
            continue;
        };
        let _ = conn.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let server = conn.local_addr().unwrap_or(local);
            match tls {
                None => stream::serve(shared, conn, peer, server, Transport::Tcp).await,
                Some(acceptor) => serve_tls(shared, acceptor, conn, peer, server).await,
            }
        });
    }
}

async fn serve_tls(
    shared: Arc<Shared>,
    acceptor: TlsAcceptor,
    conn: TcpStream,
    peer: SocketAddr,
    server: SocketAddr,
) {
    let timeout = shared.stream_idle_timeout;
    match tokio::time::timeout(timeout, acceptor.accept(conn)).await {
        Ok(Ok(tls)) => stream::serve(shared, tls, peer, server, Transport::Tls).await,
        Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TURN TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TURN TLS handshake timed out"),
    }
}
