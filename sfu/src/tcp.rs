//! The SFU's ICE-TCP edge (RFC 6544, passive side): a listener on the SFU's port, one task per
//! accepted connection that cuts the stream into packets (RFC 4571, see [`crate::framing`]) for
//! the SFU's task and writes the packets it is given, and the table of open connections the
//! SFU's task sends through. Connections are bounded in number, in frame size, in the time
//! before their first packet and in idle time; the SFU's task closes one whose first packet no
//! participant's session takes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::framing::{self, Deframer};

/// Connections open at once; more are closed as they are accepted.
pub const CONNECTIONS_MAX: usize = 1024;
/// A connection that sends no whole packet within this time is closed.
const FIRST_PACKET_WITHIN: Duration = Duration::from_secs(10);
/// A connection that sends nothing for this long is closed (ICE consent checks come every few
/// seconds from a live peer).
const IDLE_CLOSE: Duration = Duration::from_secs(30);
/// Packets waiting for one connection's socket; more are dropped, as a full UDP buffer would.
const SEND_QUEUE: usize = 512;
/// Packets from all connections waiting for the SFU's task.
pub const EVENT_QUEUE: usize = 4096;

/// What a connection task tells the SFU's task.
#[derive(Debug)]
pub enum TcpEvent {
    Opened {
        id: u64,
        peer: SocketAddr,
        outbox: mpsc::Sender<Vec<u8>>,
    },
    Packet {
        id: u64,
        peer: SocketAddr,
        packet: Vec<u8>,
    },
    Closed {
        id: u64,
        peer: SocketAddr,
    },
}

/// One open connection, as the SFU's task holds it.
#[derive(Debug)]
struct Connection {
    id: u64,
    outbox: mpsc::Sender<Vec<u8>>,
    /// A participant's session took a packet of it.
    accepted: bool,
}

/// The open connections by peer address (ICE-TCP's 5-tuple: one connection per peer address).
#[derive(Debug, Default)]
pub struct Connections {
    by_peer: HashMap<SocketAddr, Connection>,
}

impl Connections {
    /// Applies a connection's event; returns the packet it carried, if any.
    pub fn apply(&mut self, event: TcpEvent) -> Option<(u64, SocketAddr, Vec<u8>)> {
        match event {
            TcpEvent::Opened { id, peer, outbox } => {
                self.by_peer.insert(
                    peer,
                    Connection {
                        id,
                        outbox,
                        accepted: false,
                    },
                );
                None
            }
            TcpEvent::Packet { id, peer, packet } => Some((id, peer, packet)),
            TcpEvent::Closed { id, peer } => {
                if self.by_peer.get(&peer).is_some_and(|c| c.id == id) {
                    self.by_peer.remove(&peer);
                }
                None
            }
        }
    }

    /// What the SFU made of a packet of connection `id`: a connection whose packets no
    /// session has taken yet is closed at the first one refused.
    pub fn received(&mut self, id: u64, peer: SocketAddr, accepted: bool) {
        let Some(c) = self.by_peer.get_mut(&peer).filter(|c| c.id == id) else {
            return;
        };
        if accepted {
            c.accepted = true;
        } else if !c.accepted {
            tracing::debug!(%peer, "sfu: a TCP connection of no participant; closing it");
            // Dropping its outbox ends the connection's task, which closes the socket.
            self.by_peer.remove(&peer);
        }
    }

    /// Queues `packet` for the connection to `peer`; false when there is none or it is full.
    pub fn send(&self, peer: SocketAddr, packet: &[u8]) -> bool {
        let Some(c) = self.by_peer.get(&peer) else {
            return false;
        };
        let Some(framed) = framing::frame(packet) else {
            return false;
        };
        c.outbox.try_send(framed).is_ok()
    }
}

/// Accepts connections on `listener` until the SFU's task is gone.
pub async fn accept(listener: TcpListener, events: mpsc::Sender<TcpEvent>, frame_max: usize) {
    let open = Arc::new(AtomicUsize::new(0));
    let mut next_id = 0u64;
    loop {
        let (stream, peer) = match listener.accept().await {
            // A dual-stack listener's IPv4 peers as plain IPv4, as the sessions know them.
            Ok((stream, peer)) => (stream, crate::server::canonical(peer)),
            Err(e) => {
                // Out of file descriptors, say: wait a little rather than spin.
                tracing::debug!(error = %e, "sfu: TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if events.is_closed() {
            return;
        }
        if open.load(Ordering::Relaxed) >= CONNECTIONS_MAX {
            tracing::debug!(%peer, "sfu: too many TCP connections; refusing one");
            continue;
        }
        let _ = stream.set_nodelay(true);
        next_id += 1;
        open.fetch_add(1, Ordering::Relaxed);
        let (events, open) = (events.clone(), open.clone());
        tokio::spawn(async move {
            serve(stream, next_id, peer, &events, frame_max).await;
            let _ = events.send(TcpEvent::Closed { id: next_id, peer }).await;
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// One connection: packets read go to the SFU's task, packets it queues are written.
async fn serve(
    mut stream: TcpStream,
    id: u64,
    peer: SocketAddr,
    events: &mpsc::Sender<TcpEvent>,
    frame_max: usize,
) {
    let (tx, mut outbox) = mpsc::channel(SEND_QUEUE);
    if events
        .send(TcpEvent::Opened {
            id,
            peer,
            outbox: tx,
        })
        .await
        .is_err()
    {
        return;
    }
    let (mut reader, mut writer) = stream.split();
    let mut deframer = Deframer::new(frame_max);
    let mut buf = vec![0u8; 4096];
    let mut quiet_until = tokio::time::Instant::now() + FIRST_PACKET_WITHIN;
    loop {
        tokio::select! {
            out = outbox.recv() => {
                let Some(framed) = out else { return };
                if writer.write_all(&framed).await.is_err() {
                    return;
                }
            }
            read = reader.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                deframer.push(&buf[..n]);
                loop {
                    match deframer.next_frame() {
                        Ok(Some(packet)) => {
                            quiet_until = tokio::time::Instant::now() + IDLE_CLOSE;
                            if events.send(TcpEvent::Packet { id, peer, packet }).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "sfu: closing a TCP connection");
                            return;
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(quiet_until) => {
                tracing::debug!(%peer, "sfu: closing a quiet TCP connection");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        (std::net::Ipv4Addr::LOCALHOST, port).into()
    }

    fn opened(c: &mut Connections, id: u64, port: u16) -> mpsc::Receiver<Vec<u8>> {
        let (outbox, rx) = mpsc::channel(4);
        assert!(c
            .apply(TcpEvent::Opened {
                id,
                peer: peer(port),
                outbox
            })
            .is_none());
        rx
    }

    #[test]
    fn packets_go_out_framed_to_the_connection_of_their_peer() {
        let mut c = Connections::default();
        let mut rx = opened(&mut c, 1, 5000);
        assert!(c.send(peer(5000), &[9, 9]));
        assert_eq!(rx.try_recv().ok(), Some(vec![0, 2, 9, 9]));
        assert!(!c.send(peer(5001), &[1]), "no connection to that peer");
    }

    #[test]
    fn a_connection_whose_first_packet_is_refused_is_closed_an_accepted_one_is_kept() {
        let mut c = Connections::default();
        let mut refused = opened(&mut c, 1, 5000);
        c.received(1, peer(5000), false);
        assert!(!c.send(peer(5000), &[1]));
        assert!(
            matches!(
                refused.try_recv(),
                Err(mpsc::error::TryRecvError::Disconnected)
            ),
            "its outbox is dropped: the connection's task ends"
        );
        let _kept = opened(&mut c, 2, 5001);
        c.received(2, peer(5001), true);
        c.received(2, peer(5001), false); // a stray packet later does not end a live session
        assert!(c.send(peer(5001), &[1]));
    }

    #[test]
    fn a_late_close_of_an_old_connection_leaves_the_new_one_of_the_same_peer() {
        let mut c = Connections::default();
        let _old = opened(&mut c, 1, 5000);
        let _new = opened(&mut c, 2, 5000);
        c.apply(TcpEvent::Closed {
            id: 1,
            peer: peer(5000),
        });
        assert!(c.send(peer(5000), &[1]), "connection 2 is still there");
        c.apply(TcpEvent::Closed {
            id: 2,
            peer: peer(5000),
        });
        assert!(!c.send(peer(5000), &[1]));
    }
}
