//! The TCP client listener: accepts connections (bounded by a semaphore) and hands each plain
//! TCP one to a relay shard ([`super::shard`]), each TLS one after its handshake to
//! [`super::stream::serve`] on tokio.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use std::os::fd::AsRawFd;

use super::shard::{Command, Conn};
use super::shared::Shared;
use super::stream;
use crate::core::{FiveTuple, Now};
use crate::error::TurnError;
use crate::events::Transport;

/// Binds a TCP listener.
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, TurnError> {
    let bind_err = |source| TurnError::Bind { addr, source };
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(bind_err)?;
    if addr.is_ipv6() {
        // One family per listener: IPv4 clients come in on the IPv4 one (if configured), so a
        // client's address is never an IPv4-mapped IPv6 one.
        socket2::SockRef::from(&socket)
            .set_only_v6(true)
            .map_err(bind_err)?;
    }
    socket.set_reuseaddr(true).map_err(bind_err)?;
    socket.bind(addr).map_err(bind_err)?;
    socket.listen(1024).map_err(bind_err)
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
        let server = conn.local_addr().unwrap_or(local);
        let Some(acceptor) = tls.clone() else {
            to_shard(&shared, conn, peer, server, permit);
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let _permit = permit;
            serve_tls(shared, acceptor, conn, peer, server).await
        });
    }
}

/// Hands a plain TCP connection to the next relay shard.
pub(crate) fn to_shard(
    shared: &Shared,
    conn: TcpStream,
    client: SocketAddr,
    server: SocketAddr,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    // Leaves tokio's reactor; stays non-blocking.
    let Ok(stream) = conn.into_std() else {
        return;
    };
    let tuple = FiveTuple {
        client,
        server,
        transport: Transport::Tcp,
    };
    let shard = shared.next_shard();
    let token = shard.token();
    let fd = stream.as_raw_fd();
    // Queued before it can raise an event, so the shard always knows the token.
    shard.command(Command::AddConn(Conn::new(
        token,
        stream,
        tuple,
        permit,
        Now::system().instant,
    )));
    if let Err(e) = shard.register(fd, token) {
        tracing::debug!(error = %e, "TURN TCP connection not served");
        shard.command(Command::Remove(token));
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
