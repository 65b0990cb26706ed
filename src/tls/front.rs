//! The HTTPS listener, which is also a TURN port: each accepted connection is looked at before
//! anything is read from it. A TLS ClientHello offering `stun.turn` is TURN over TLS; one
//! offering `http/1.1` or `h2` is HTTPS (REST, the `/rtc` WebSocket, Socket.IO); one offering
//! no ALPN is decided by its first decrypted bytes (a STUN header: TURN, else HTTPS); an ACME
//! `acme-tls/1` validation gets the challenge certificate. A connection starting with a STUN
//! header instead of TLS is TURN over plain TCP. One port (443) then carries everything but
//! the relayed media, which networks that let only 443 out still let through.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::ConnectInfo;
use axum::{Extension, Router};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use signalbox_turn::StreamIntake;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::LazyConfigAcceptor;

use super::rewind::Rewind;
use super::sniff::{self, FirstBytes, TlsRoute};
use super::Tls;
use crate::metrics::ProtocolLabels;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// How long a client may take to send its first bytes and finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The body of the answer to plain HTTP on the TLS port.
const PLAIN_HTTP_BODY: &str =
    r#"{"error":{"code":"tls_required","message":"this port speaks HTTPS: use https://"}}"#;

fn plain_http_answer() -> String {
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{PLAIN_HTTP_BODY}",
        PLAIN_HTTP_BODY.len()
    )
}

/// What the HTTPS listener serves.
#[derive(Clone)]
pub struct Front {
    pub router: Router,
    pub tls: Arc<Tls>,
    /// The relay, when it runs: TURN clients on this port go there.
    pub turn: Option<StreamIntake>,
    /// Counts connections by what they spoke.
    pub counts: Family<ProtocolLabels, Counter>,
}

impl Front {
    fn count(&self, protocol: &'static str) {
        self.counts
            .get_or_create(&ProtocolLabels { protocol })
            .inc();
    }
}

/// Accepts connections until `stop` changes, routing each as the module says.
pub async fn serve(listener: TcpListener, front: Front, mut stop: watch::Receiver<bool>) {
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let _ = tcp.set_nodelay(true);
        let front = front.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
            if let Err(why) = connection(front, tcp, peer, deadline).await {
                tracing::debug!(%peer, "connection on the HTTPS port closed: {why}");
            }
        });
    }
}

/// Peeks until the first bytes tell what the connection speaks (or `deadline` passes).
async fn first_bytes(tcp: &TcpStream, deadline: Instant) -> Result<FirstBytes, String> {
    let mut buf = [0u8; sniff::STUN_PREFIX];
    loop {
        let n = tokio::time::timeout_at(deadline, tcp.peek(&mut buf))
            .await
            .map_err(|_| "no first bytes before the deadline".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before sending anything".into());
        }
        match sniff::classify(&buf[..n]) {
            FirstBytes::NeedMore => {
                // Fewer bytes than needed so far; peek returns at once while they are there.
                tokio::time::sleep(Duration::from_millis(5)).await;
                if Instant::now() >= deadline {
                    return Err("too few first bytes before the deadline".into());
                }
            }
            known => return Ok(known),
        }
    }
}

async fn connection(
    front: Front,
    mut tcp: TcpStream,
    peer: SocketAddr,
    deadline: Instant,
) -> Result<(), String> {
    let first = match first_bytes(&tcp, deadline).await {
        Ok(first) => first,
        Err(e) => {
            front.count("refused");
            return Err(e);
        }
    };
    match first {
        FirstBytes::Tls => {}
        FirstBytes::Stun => {
            front.count("turn_tcp");
            let Some(turn) = &front.turn else {
                return Err("TURN over TCP, but the relay is off".into());
            };
            if !turn.tcp(tcp, peer) {
                return Err("TURN over TCP refused: connection limit or shutdown".into());
            }
            return Ok(());
        }
        FirstBytes::Other | FirstBytes::NeedMore => {
            front.count("refused");
            let _ =
                tokio::time::timeout_at(deadline, tcp.write_all(plain_http_answer().as_bytes()))
                    .await;
            let _ = tcp.shutdown().await;
            return Err("neither TLS nor STUN".into());
        }
    }
    let local = tcp.local_addr().map_err(|e| e.to_string())?;
    let handshake = tls_handshake(&front, tcp, deadline).await;
    if handshake.is_err() {
        front.count("refused");
    }
    let (route, mut stream) = handshake?;
    match route {
        TlsRoute::Http => {
            front.count("https");
            serve_http(front.router, stream, peer).await
        }
        TlsRoute::Turn => {
            front.count("turn_tls");
            serve_turn(front.turn.as_ref(), stream, peer, local).await
        }
        TlsRoute::AcmeChallenge => {
            front.count("acme_challenge");
            // The validation is the handshake itself (RFC 8737); nothing follows.
            let _ = stream.shutdown().await;
            Ok(())
        }
        TlsRoute::Sniff => {
            let (what, first) = match inner_first_bytes(&mut stream, deadline).await {
                Ok(found) => found,
                Err(e) => {
                    front.count("refused");
                    return Err(e);
                }
            };
            let stream = Rewind::new(first, stream);
            match what {
                FirstBytes::Stun => {
                    front.count("turn_tls");
                    serve_turn(front.turn.as_ref(), stream, peer, local).await
                }
                _ => {
                    front.count("https");
                    serve_http(front.router, stream, peer).await
                }
            }
        }
    }
}

/// Reads the ClientHello, picks the configuration its ALPN ids call for, and completes the
/// handshake.
async fn tls_handshake(
    front: &Front,
    tcp: TcpStream,
    deadline: Instant,
) -> Result<(TlsRoute, tokio_rustls::server::TlsStream<TcpStream>), String> {
    let start = tokio::time::timeout_at(
        deadline,
        LazyConfigAcceptor::new(tokio_rustls::rustls::server::Acceptor::default(), tcp),
    )
    .await
    .map_err(|_| "ClientHello not received before the deadline".to_string())?
    .map_err(|e| format!("bad ClientHello: {e}"))?;
    let route = sniff::route(start.client_hello().alpn());
    let config = match route {
        TlsRoute::Http => Arc::clone(&front.tls.http),
        TlsRoute::Turn => Arc::clone(&front.tls.turn),
        TlsRoute::AcmeChallenge => Arc::clone(&front.tls.challenge),
        TlsRoute::Sniff => Arc::clone(&front.tls.any),
    };
    let stream = tokio::time::timeout_at(deadline, start.into_stream(config))
        .await
        .map_err(|_| "TLS handshake not finished before the deadline".to_string())?
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    Ok((route, stream))
}

/// Reads the first decrypted bytes until they tell STUN from anything else.
async fn inner_first_bytes<S: AsyncRead + Unpin>(
    stream: &mut S,
    deadline: Instant,
) -> Result<(FirstBytes, Vec<u8>), String> {
    let mut first = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .map_err(|_| "nothing sent inside TLS before the deadline".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed right after the TLS handshake".into());
        }
        first.extend_from_slice(&chunk[..n]);
        match sniff::inner(&first) {
            FirstBytes::NeedMore => continue,
            what => return Ok((what, first)),
        }
    }
}

async fn serve_http<S>(router: Router, stream: S, peer: SocketAddr) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service =
        TowerToHyperService::new(router.layer(Extension(ConnectInfo::<SocketAddr>(peer))));
    Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .await
        .map_err(|e| format!("HTTPS connection ended with an error: {e}"))
}

async fn serve_turn<S>(
    turn: Option<&StreamIntake>,
    stream: S,
    peer: SocketAddr,
    local: SocketAddr,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let Some(turn) = turn else {
        return Err("TURN over TLS, but the relay is off".into());
    };
    if turn.tls(stream, peer, local).await {
        Ok(())
    } else {
        Err("TURN over TLS refused: connection limit or shutdown".into())
    }
}
