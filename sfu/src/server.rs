//! The SFU's IO edge: one UDP socket for every participant (and the ICE-TCP listener on the same
//! port, see [`crate::tcp`]), one tokio task that owns the sans-IO
//! [`Sfu`] and feeds it datagrams, timers and the signaling's commands, and a handle the
//! signaling uses to negotiate, answer, add candidates and leave. The SDP the SFU sends a
//! participant (its answers and its own offers) and its events go out on one channel, in the
//! order they were made, for the signaling to deliver to the participant's session.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol as SockProto, Socket, Type};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::error::SfuError;
use crate::participant::ParticipantId;
use crate::sfu::{Counters, Output, Sfu, SfuConfig, SfuEvent};
use crate::tcp::{self, Connections, TcpEvent};
use crate::Protocol;

/// Something the signaling must pass on to a participant.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// The SFU's answer to the participant's offer.
    Answer {
        participant: ParticipantId,
        sdp: String,
    },
    /// The SFU's offer (tracks added or stopped): send it to the participant; its answer goes
    /// to [`SfuHandle::answer`].
    Offer {
        participant: ParticipantId,
        sdp: String,
    },
    Event(SfuEvent),
}

enum Command {
    Negotiate {
        room: String,
        participant: ParticipantId,
        offer: String,
        may_join: bool,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Candidate {
        participant: ParticipantId,
        candidate: String,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Answer {
        participant: ParticipantId,
        answer: String,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    View {
        participant: ParticipantId,
        tiles: Vec<(ParticipantId, u32)>,
        max_bitrate: Option<u64>,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Leave {
        participant: ParticipantId,
    },
}

/// The running SFU, as the signaling sees it. Dropping every handle stops the task.
#[derive(Clone)]
pub struct SfuHandle {
    commands: mpsc::Sender<Command>,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
}

/// Totals the task publishes for metrics.
#[derive(Debug, Default)]
struct Shared {
    datagrams_in: AtomicU64,
    bytes_in: AtomicU64,
    datagrams_out: AtomicU64,
    bytes_out: AtomicU64,
    /// Datagrams no participant's session took.
    datagrams_unknown: AtomicU64,
    participants: AtomicU64,
    rooms: AtomicU64,
    frames_forwarded: AtomicU64,
    keyframe_requests: AtomicU64,
}

/// A snapshot of the SFU's socket traffic and totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    pub datagrams_in: u64,
    pub bytes_in: u64,
    pub datagrams_out: u64,
    pub bytes_out: u64,
    pub datagrams_unknown: u64,
    pub counters: Counters,
}

/// Why a call on the handle did not get its answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HandleError {
    #[error(transparent)]
    Refused(#[from] SfuError),
    #[error("the SFU is not running")]
    Stopped,
}

/// The largest datagram read (Ethernet-sized packets plus room; str0m sends at most ~1200).
const DATAGRAM_MAX: usize = 2048;
/// Commands queued for the SFU's task before callers wait.
const COMMAND_QUEUE: usize = 1024;

/// Tries for a port free for both UDP and TCP when `listen` asks for any port.
const BIND_ATTEMPTS: usize = 20;

/// Binds `listen` for UDP and, on the same port, for TCP (ICE-TCP, passive), and starts the
/// SFU's task. `[::]` is dual-stack: one socket for IPv6 and IPv4 participants. Participants
/// are told to send to `advertised` (the external addresses behind NAT, at most one per
/// family, or the address of a concrete `listen`); an unspecified `listen` needs them.
pub async fn start(
    listen: SocketAddr,
    advertised: &[IpAddr],
    notices: mpsc::UnboundedSender<Notice>,
) -> io::Result<(SfuHandle, JoinHandle<()>)> {
    let (socket, listener) = bind(listen).await?;
    let local_addr = socket.local_addr()?;
    let dual = is_dual_stack(listen);
    // Only addresses the socket can take packets for: IPv4 ones on an IPv4 socket, IPv6 ones
    // on an IPv6-only socket, both on a dual-stack one.
    let usable = |ip: &IpAddr| dual || ip.is_ipv6() == local_addr.is_ipv6();
    let mut ips: Vec<IpAddr> = advertised
        .iter()
        .map(|ip| ip.to_canonical())
        .filter(usable)
        .collect();
    if ips.is_empty() && !local_addr.ip().is_unspecified() {
        ips.push(local_addr.ip().to_canonical());
    }
    if ips.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the SFU listens on an unspecified address: an advertised address is needed",
        ));
    }
    // Every packet on these sockets is for one of these addresses (the one of its sender's
    // family), whichever local address it came in on: it is the destination the sessions know.
    let candidates: Vec<SocketAddr> = ips
        .iter()
        .map(|ip| SocketAddr::new(*ip, local_addr.port()))
        .collect();
    let sfu = Sfu::new(SfuConfig {
        candidates: candidates.clone(),
        tcp_candidates: candidates.clone(),
    })
    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let (tcp_tx, tcp_rx) = mpsc::channel(tcp::EVENT_QUEUE);
    tokio::spawn(tcp::accept(listener, tcp_tx, DATAGRAM_MAX));
    let shared = Arc::new(Shared::default());
    let io = Io {
        socket,
        tcp: tcp_rx,
        connections: Connections::default(),
        destinations: candidates,
        dual,
    };
    let task = tokio::spawn(run(sfu, io, rx, notices, shared.clone()));
    Ok((
        SfuHandle {
            commands: tx,
            local_addr,
            shared,
        },
        task,
    ))
}

/// Whether the SFU binds `listen` dual-stack: `[::]`, or an IPv4-mapped IPv6 address (which
/// takes that one IPv4 address's traffic on an IPv6 socket).
fn is_dual_stack(listen: SocketAddr) -> bool {
    match listen.ip() {
        IpAddr::V6(v6) => v6.is_unspecified() || v6.to_ipv4_mapped().is_some(),
        IpAddr::V4(_) => false,
    }
}

/// `addr` with an IPv4-mapped IPv6 address (a dual-stack socket's IPv4 sender) as plain IPv4.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Where to send to `destination` on a dual-stack socket: IPv4 addresses as IPv4-mapped IPv6.
fn on_socket(destination: SocketAddr, dual: bool) -> SocketAddr {
    match destination {
        SocketAddr::V4(v4) if dual => {
            SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
        }
        other => other,
    }
}

/// The TCP listener on `addr` (dual-stack for `[::]`, IPv6-only for another IPv6 address).
fn tcp_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(!is_dual_stack(addr))?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// The UDP socket and the TCP listener on one port (any free one when `listen`'s port is 0).
async fn bind(listen: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..BIND_ATTEMPTS {
        let socket = udp_socket(listen)?;
        let port = socket.local_addr()?.port();
        match tcp_listener(SocketAddr::new(listen.ip(), port)) {
            Ok(listener) => return Ok((socket, listener)),
            Err(e) if listen.port() == 0 && e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no port free for both UDP and TCP")))
}

/// SO_RCVBUF/SO_SNDBUF asked for on the SFU's UDP socket: feedback from hundreds of
/// subscribers arrives in bursts while the one task is busy, and the kernel's default (208 KiB)
/// overflowed at 500 forwarded streams (bench/sfu), losing publishers' packets.
const SOCKET_BUFFER: usize = 4 << 20;
/// Datagrams read from the socket before the SFU's output is sent (one pass over the sessions
/// serves them all).
const READ_BATCH: usize = 64;

/// The UDP socket, non-blocking, with [`SOCKET_BUFFER`]-sized buffers where the kernel allows.
fn udp_socket(listen: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(listen),
        Type::DGRAM,
        Some(SockProto::UDP),
    )?;
    if listen.is_ipv6() {
        socket.set_only_v6(!is_dual_stack(listen))?;
    }
    socket.set_nonblocking(true)?;
    // Best effort: the kernel clamps to net.core.rmem_max / wmem_max.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    // Linux reports twice the size it granted.
    if let Ok(got) = socket.recv_buffer_size() {
        if got < SOCKET_BUFFER {
            tracing::warn!(
                got,
                asked = SOCKET_BUFFER,
                "sfu: UDP receive buffer capped by the kernel; raise net.core.rmem_max and \
                 net.core.wmem_max for large rooms"
            );
        }
    }
    socket.bind(&listen.into())?;
    UdpSocket::from_std(socket.into())
}

/// What the SFU's task reads and writes.
struct Io {
    socket: UdpSocket,
    tcp: mpsc::Receiver<TcpEvent>,
    connections: Connections,
    /// The SFU's candidates, at most one per family: a packet is for the one of its sender's.
    destinations: Vec<SocketAddr>,
    /// The socket is dual-stack: IPv4 peers are written to as IPv4-mapped IPv6.
    dual: bool,
}

impl Io {
    /// The candidate a packet from `source` (canonical) was sent to.
    fn destination_for(&self, source: SocketAddr) -> SocketAddr {
        self.destinations
            .iter()
            .copied()
            .find(|d| d.is_ipv6() == source.is_ipv6())
            .or_else(|| self.destinations.first().copied())
            .unwrap_or(source)
    }
}

impl SfuHandle {
    /// The socket's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The SFU's traffic and totals so far.
    pub fn traffic(&self) -> Traffic {
        let s = &self.shared;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Traffic {
            datagrams_in: get(&s.datagrams_in),
            bytes_in: get(&s.bytes_in),
            datagrams_out: get(&s.datagrams_out),
            bytes_out: get(&s.bytes_out),
            datagrams_unknown: get(&s.datagrams_unknown),
            counters: Counters {
                participants: get(&s.participants),
                rooms: get(&s.rooms),
                frames_forwarded: get(&s.frames_forwarded),
                keyframe_requests: get(&s.keyframe_requests),
            },
        }
    }

    /// The participant's offer: the first joins it to `room` (when `may_join`), later ones
    /// renegotiate (a track added, an ICE restart). The SFU's answer goes out as
    /// [`Notice::Answer`], before any offer the SFU makes next.
    pub async fn negotiate(
        &self,
        room: &str,
        participant: ParticipantId,
        offer: String,
        may_join: bool,
    ) -> Result<(), HandleError> {
        let room = room.to_owned();
        self.ask(|reply| Command::Negotiate {
            room,
            participant,
            offer,
            may_join,
            reply,
        })
        .await
    }

    /// A candidate the participant trickles.
    /// What the participant shows (publisher → tile width in device pixels, 0: hidden) and the
    /// most it wants to receive (bits/s): its video layers are chosen to fit.
    pub async fn view(
        &self,
        participant: ParticipantId,
        tiles: Vec<(ParticipantId, u32)>,
        max_bitrate: Option<u64>,
    ) -> Result<(), HandleError> {
        self.ask(|reply| Command::View {
            participant,
            tiles,
            max_bitrate,
            reply,
        })
        .await
    }

    pub async fn candidate(
        &self,
        participant: ParticipantId,
        candidate: String,
    ) -> Result<(), HandleError> {
        self.ask(|reply| Command::Candidate {
            participant,
            candidate,
            reply,
        })
        .await
    }

    /// The participant's answer to the SFU's last offer.
    pub async fn answer(
        &self,
        participant: ParticipantId,
        answer: String,
    ) -> Result<(), HandleError> {
        self.ask(|reply| Command::Answer {
            participant,
            answer,
            reply,
        })
        .await
    }

    /// The participant leaves its room.
    pub async fn leave(&self, participant: ParticipantId) -> Result<(), HandleError> {
        self.send(Command::Leave { participant }).await
    }

    /// [`SfuHandle::leave`] without waiting: for callers that cannot await. Fails only when
    /// the command queue is full or the SFU stopped.
    pub fn leave_now(&self, participant: ParticipantId) -> Result<(), HandleError> {
        self.commands
            .try_send(Command::Leave { participant })
            .map_err(|_| HandleError::Stopped)
    }

    async fn send(&self, command: Command) -> Result<(), HandleError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| HandleError::Stopped)
    }

    /// Sends the command `make` builds around a reply channel and waits for the SFU's reply.
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, SfuError>>) -> Command,
    ) -> Result<T, HandleError> {
        let (reply, answered) = oneshot::channel();
        self.send(make(reply)).await?;
        Ok(answered.await.map_err(|_| HandleError::Stopped)??)
    }
}

/// The edge's one clock read.
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

async fn run(
    mut sfu: Sfu,
    mut io: Io,
    mut commands: mpsc::Receiver<Command>,
    notices: mpsc::UnboundedSender<Notice>,
    shared: Arc<Shared>,
) {
    let mut buf = vec![0u8; DATAGRAM_MAX];
    let mut wake: Option<Instant> = None;
    loop {
        // Without a timer, wake once a second anyway (nothing is due; it keeps the loop simple).
        let deadline = wake.unwrap_or_else(|| now() + Duration::from_secs(1));
        tokio::select! {
            command = commands.recv() => {
                let Some(command) = command else { break };
                apply(&mut sfu, command, &notices);
            }
            received = io.socket.recv_from(&mut buf) => {
                match received {
                    Ok((n, source)) => {
                        let source = canonical(source);
                        let destination = io.destination_for(source);
                        receive(&mut sfu, &shared, Protocol::Udp, source, destination, &buf[..n]);
                        // And whatever else is queued, before one pass over the sessions.
                        for _ in 1..READ_BATCH {
                            let Ok((n, source)) = io.socket.try_recv_from(&mut buf) else { break };
                            let source = canonical(source);
                            let destination = io.destination_for(source);
                            receive(&mut sfu, &shared, Protocol::Udp, source, destination, &buf[..n]);
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "sfu: receive failed"),
                }
            }
            Some(event) = io.tcp.recv() => {
                if let Some((id, source, packet)) = io.connections.apply(event) {
                    let destination = io.destination_for(source);
                    let accepted = receive(&mut sfu, &shared, Protocol::Tcp, source, destination, &packet);
                    io.connections.received(id, source, accepted);
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => sfu.handle_timeout(now()),
        }
        wake = drain(&mut sfu, &io, &notices, &shared).await;
        let c = sfu.counters();
        shared.participants.store(c.participants, Ordering::Relaxed);
        shared.rooms.store(c.rooms, Ordering::Relaxed);
        shared
            .frames_forwarded
            .store(c.frames_forwarded, Ordering::Relaxed);
        shared
            .keyframe_requests
            .store(c.keyframe_requests, Ordering::Relaxed);
        if notices.is_closed() {
            tracing::debug!("sfu: nobody takes the SFU's notices any more");
        }
    }
}

/// A packet (a UDP datagram, or a frame of an ICE-TCP connection) for the SFU; false when no
/// participant's session took it.
fn receive(
    sfu: &mut Sfu,
    shared: &Shared,
    proto: Protocol,
    source: SocketAddr,
    destination: SocketAddr,
    packet: &[u8],
) -> bool {
    shared.datagrams_in.fetch_add(1, Ordering::Relaxed);
    shared
        .bytes_in
        .fetch_add(packet.len() as u64, Ordering::Relaxed);
    let accepted = sfu.receive(now(), proto, source, destination, packet);
    if !accepted {
        shared.datagrams_unknown.fetch_add(1, Ordering::Relaxed);
        tracing::trace!(%source, ?proto, "sfu: a packet of no participant");
    }
    accepted
}

fn apply(sfu: &mut Sfu, command: Command, notices: &mpsc::UnboundedSender<Notice>) {
    match command {
        Command::Negotiate {
            room,
            participant,
            offer,
            may_join,
            reply,
        } => {
            let answer = if sfu.contains(&participant) {
                sfu.accept_offer(&participant, &offer)
            } else if may_join {
                sfu.join(now(), &room, participant.clone(), &offer)
            } else {
                Err(SfuError::UnknownParticipant(participant.0.clone()))
            };
            // The answer is queued before the reply, so it precedes any offer made afterwards.
            let _ = reply.send(answer.map(|sdp| {
                let _ = notices.send(Notice::Answer { participant, sdp });
            }));
        }
        Command::Candidate {
            participant,
            candidate,
            reply,
        } => {
            let _ = reply.send(sfu.add_remote_candidate(&participant, &candidate));
        }
        Command::Answer {
            participant,
            answer,
            reply,
        } => {
            let _ = reply.send(sfu.accept_answer(&participant, &answer));
        }
        Command::View {
            participant,
            tiles,
            max_bitrate,
            reply,
        } => {
            let _ = reply.send(sfu.set_view(&participant, tiles, max_bitrate));
        }
        Command::Leave { participant } => sfu.leave(&participant),
    }
}

/// Sends what the SFU produced; returns when it wants to be woken.
async fn drain(
    sfu: &mut Sfu,
    io: &Io,
    notices: &mpsc::UnboundedSender<Notice>,
    shared: &Shared,
) -> Option<Instant> {
    loop {
        match sfu.poll_output() {
            Output::Timeout(at) => return at,
            Output::Transmit(t) => {
                let sent = match t.proto {
                    Protocol::Udp => match io
                        .socket
                        .send_to(&t.contents, on_socket(t.destination, io.dual))
                        .await
                    {
                        Ok(_) => true,
                        Err(e) => {
                            tracing::debug!(destination = %t.destination, error = %e, "sfu: send failed");
                            false
                        }
                    },
                    // Queued for the connection's task; dropped when it is full or gone.
                    Protocol::Tcp => io.connections.send(t.destination, &t.contents),
                    _ => false,
                };
                if sent {
                    shared.datagrams_out.fetch_add(1, Ordering::Relaxed);
                    shared
                        .bytes_out
                        .fetch_add(t.contents.len() as u64, Ordering::Relaxed);
                }
            }
            // Unbounded: notices are few (SDP and state changes), and the media loop must
            // never wait for the signaling.
            Output::Offer { participant, sdp } => {
                let _ = notices.send(Notice::Offer { participant, sdp });
            }
            Output::Event(e) => {
                let _ = notices.send(Notice::Event(e));
            }
        }
    }
}

#[cfg(test)]
mod dual_stack_tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn ipv4_peers_of_a_dual_stack_socket_are_ipv4_both_ways() {
        assert_eq!(
            canonical(addr("[::ffff:192.0.2.1]:5000")),
            addr("192.0.2.1:5000")
        );
        assert_eq!(
            canonical(addr("[2001:db8::1]:5000")),
            addr("[2001:db8::1]:5000")
        );
        assert_eq!(
            on_socket(addr("192.0.2.1:5000"), true),
            addr("[::ffff:192.0.2.1]:5000")
        );
        assert_eq!(
            on_socket(addr("192.0.2.1:5000"), false),
            addr("192.0.2.1:5000")
        );
        assert!(is_dual_stack(addr("[::]:3479")));
        assert!(is_dual_stack(addr("[::ffff:127.0.0.1]:0")));
        assert!(!is_dual_stack(addr("[::1]:3479")));
        assert!(!is_dual_stack(addr("0.0.0.0:3479")));
    }
}
