//! Relay sockets: binding them in the configured port range with large buffers, holding the
//! ports that EVEN-PORT allocations reserve, handing each new socket to a relay shard
//! ([`super::shard`], which reads it), and framing peer datagrams for the client (as
//! ChannelData or a Data indication, in place around the received payload).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::{Range, RangeInclusive};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::mpsc;

use super::shard::{Command, Shard};
use super::shared::Shared;
use super::sock::HEADROOM;
use crate::config::Family;
use crate::core::message::{data_indication_header_len, write_channel_data, write_data_indication};
use crate::core::{AllocRef, PeerOutput, PortChoice, RelayBinder};
use crate::peer_policy::normalise;

/// One allocation's relay socket, read by the shard it belongs to.
#[derive(Debug)]
pub(crate) struct RelaySocket {
    /// Non-blocking; sends to peers go straight out of it from whichever thread has them.
    pub socket: std::net::UdpSocket,
    pub family: Family,
    shard: Arc<Shard>,
    token: u64,
}

/// What the core holds for each allocation.
pub(crate) type RelayHandle = Arc<RelaySocket>;

impl RelaySocket {
    /// Takes the socket out of its shard (it closes when the last handle drops).
    pub fn stop(&self) {
        self.shard.command(Command::Remove(self.token));
    }
}

/// Where datagrams from an allocation's peers go.
#[derive(Debug)]
pub(crate) enum Sink {
    /// To this UDP client, through the listener socket of the shard that reads the relay socket
    /// (the one the client's datagrams arrive on).
    Udp(SocketAddr),
    /// To this TCP client, a connection the same shard serves (frames padded to 4 bytes).
    Conn(u64),
    /// Through a TLS connection's writer queue on tokio (frames padded to 4 bytes).
    Stream(mpsc::Sender<Vec<u8>>),
}

/// A relay socket as its shard keeps it: the allocation it serves and where its peers'
/// datagrams go.
#[derive(Debug)]
pub(crate) struct Entry {
    pub token: u64,
    pub relay: RelayHandle,
    pub alloc: AllocRef,
    pub sink: Sink,
    pub framer: Framer,
}

/// Who asks for a relay socket.
pub(crate) enum Target<'a> {
    /// A UDP client of `shard`'s listener: the socket joins that shard (on its own thread,
    /// which is the caller's, so the entry is `added` once the batch is done).
    Shard {
        shard: &'a Arc<Shard>,
        client: SocketAddr,
        added: &'a mut Vec<Entry>,
    },
    /// A TCP client served by `shard` (token `conn`): the socket joins that shard too.
    Conn {
        shard: &'a Arc<Shard>,
        conn: u64,
        added: &'a mut Vec<Entry>,
    },
    /// A TLS connection (on tokio): the socket joins one of the shards in turn.
    Stream(&'a mpsc::Sender<Vec<u8>>),
}

/// The shell's [`RelayBinder`]: binds a socket and hands it to a shard.
pub(crate) struct Binder<'a> {
    pub shared: &'a Arc<Shared>,
    pub target: Target<'a>,
}

impl RelayBinder<RelayHandle> for Binder<'_> {
    fn bind(
        &mut self,
        alloc: AllocRef,
        family: Family,
        port: PortChoice,
    ) -> io::Result<(SocketAddr, RelayHandle)> {
        let s = &self.shared.relay;
        let bind_ip = s.bind_ip(family)?;
        let socket = match port {
            // The socket held since the reservation; bound afresh only if none is held.
            PortChoice::Exact(p) => match self.shared.held.take(family, p) {
                Some(held) => held,
                None => bind_in_range(bind_ip, &s.ports, port, s.buffer)?.0,
            },
            _ => {
                let (socket, next) = bind_in_range(bind_ip, &s.ports, port, s.buffer)?;
                if let Some(next) = next {
                    self.shared.held.hold(next)?;
                }
                socket
            }
        };
        socket.set_nonblocking(true)?;
        let local = socket.local_addr()?;
        let shard = match &self.target {
            Target::Shard { shard, .. } | Target::Conn { shard, .. } => Arc::clone(shard),
            Target::Stream(_) => self.shared.next_shard(),
        };
        let token = shard.token();
        let relay = Arc::new(RelaySocket {
            socket,
            family,
            shard: Arc::clone(&shard),
            token,
        });
        let fd = relay.socket.as_raw_fd();
        let (sink, pad) = match &self.target {
            Target::Shard { client, .. } => (Sink::Udp(*client), false),
            Target::Conn { conn, .. } => (Sink::Conn(*conn), true),
            Target::Stream(tx) => (Sink::Stream((*tx).clone()), true),
        };
        let entry = Entry {
            token,
            relay: Arc::clone(&relay),
            alloc,
            sink,
            framer: Framer::new(pad),
        };
        match &mut self.target {
            Target::Shard { added, .. } | Target::Conn { added, .. } => {
                // Its events are only read after this batch, by this thread, once it is added.
                shard.register(fd, token)?;
                added.push(entry);
            }
            Target::Stream(_) => {
                // Queued before it can raise an event, so the shard always knows the token.
                shard.command(Command::Add(entry));
                if let Err(e) = shard.register(fd, token) {
                    shard.command(Command::Remove(token));
                    return Err(e);
                }
            }
        }
        Ok((local, relay))
    }
}

/// Per-socket state for framing Data indications.
#[derive(Debug)]
pub(crate) struct Framer {
    pad: bool,
    tid_seed: [u8; 12],
    counter: u32,
}

impl Framer {
    /// `pad`: ChannelData padded to 4 bytes (stream transports).
    pub fn new(pad: bool) -> Self {
        Self {
            pad,
            tid_seed: rand::random(),
            counter: 0,
        }
    }

    /// Frames the `n`-byte datagram at `HEADROOM` of `slot` as the core decided (`Channel` or
    /// `Indication`), in place; returns the frame's range in `slot`, or `None` when it cannot
    /// be framed (too large) or is not to be sent.
    pub fn frame(
        &mut self,
        slot: &mut [u8],
        n: usize,
        peer: SocketAddr,
        verdict: PeerOutput,
    ) -> Option<Range<usize>> {
        match verdict {
            PeerOutput::Channel(ch) => {
                let start = HEADROOM - 4;
                write_channel_data(&mut slot[start..], ch, n, self.pad)
                    .map(|len| start..start + len)
            }
            PeerOutput::Indication => {
                let peer = SocketAddr::new(normalise(peer.ip()), peer.port());
                let start = HEADROOM - data_indication_header_len(peer.is_ipv6());
                self.counter = self.counter.wrapping_add(1);
                self.tid_seed[8..].copy_from_slice(&self.counter.to_be_bytes());
                write_data_indication(&mut slot[start..], peer, n, self.tid_seed)
                    .map(|len| start..start + len)
            }
            PeerOutput::Drop | PeerOutput::Gone => None,
        }
    }
}

/// Relay ports reserved by EVEN-PORT allocations (RFC 8656 §7.2), each held by a bound socket
/// so that no other socket, ours or another process's, can take it before its
/// RESERVATION-TOKEN is redeemed. The core decides when a reservation ends: an Allocate with
/// the token takes the socket ([`PortChoice::Exact`]); an expired one is released on
/// [`crate::core::CoreEvent::Unreserved`].
#[derive(Debug, Default)]
pub(crate) struct HeldPorts {
    sockets: Mutex<HashMap<(Family, u16), std::net::UdpSocket>>,
}

impl HeldPorts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(Family, u16), std::net::UdpSocket>> {
        self.sockets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds `socket` for its family and port.
    pub fn hold(&self, socket: std::net::UdpSocket) -> io::Result<()> {
        let local = socket.local_addr()?;
        self.lock()
            .insert((Family::of(local.ip()), local.port()), socket);
        Ok(())
    }

    /// The socket held for `port` of `family`, if any, no longer held.
    pub fn take(&self, family: Family, port: u16) -> Option<std::net::UdpSocket> {
        self.lock().remove(&(family, port))
    }

    /// Closes the socket held for `port` of `family`, so the port is free again.
    pub fn release(&self, family: Family, port: u16) {
        drop(self.take(family, port));
    }

    /// Closes every held socket.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// How many ports are held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Binds a UDP socket on `ip` at a free port of `ports` (starting at a random one), or at
/// exactly the reserved port. For EVEN-PORT with the R bit the port is even and port + 1 is
/// bound as well (the second socket, to hold for the reservation): a port whose neighbour is
/// taken is skipped, so the reservation can always be redeemed.
pub(crate) fn bind_in_range(
    ip: IpAddr,
    ports: &RangeInclusive<u16>,
    choice: PortChoice,
    buffer: usize,
) -> io::Result<(std::net::UdpSocket, Option<std::net::UdpSocket>)> {
    if let PortChoice::Exact(port) = choice {
        return Ok((bind_port(ip, port, buffer)?.into(), None));
    }
    let (lo, hi) = (u32::from(*ports.start()), u32::from(*ports.end()));
    if lo > hi {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "empty relay port range",
        ));
    }
    let (even_port, reserve_next) = match choice {
        PortChoice::Even { reserve_next } => (true, reserve_next),
        _ => (false, false),
    };
    let span = hi - lo + 1;
    let first = rand::random_range(0..span);
    for i in 0..span {
        let Ok(port) = u16::try_from(lo + (first + i) % span) else {
            continue;
        };
        if even_port && (port % 2 == 1 || (reserve_next && u32::from(port) == hi)) {
            continue;
        }
        let socket = match bind_port(ip, port, buffer) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(e),
        };
        if !reserve_next {
            return Ok((socket.into(), None));
        }
        // `port < hi`, so `port + 1` is in range.
        match bind_port(ip, port + 1, buffer) {
            Ok(next) => return Ok((socket.into(), Some(next.into()))),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "relay port range exhausted",
    ))
}

/// A relay socket bound at `ip:port`.
fn bind_port(ip: IpAddr, port: u16, buffer: usize) -> io::Result<Socket> {
    let addr = SocketAddr::new(ip, port);
    let socket = new_udp_socket(addr, buffer)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// A non-blocking UDP socket of `addr`'s family with the buffer sizes asked for.
pub(crate) fn new_udp_socket(addr: SocketAddr, buffer: usize) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // One family per socket: an IPv6 relay (or listener) never sees IPv4 traffic as
        // IPv4-mapped addresses, and the IPv4 one can take the same port.
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    // Best effort: the kernel clamps to net.core.{r,w}mem_max (see `buffer_cap_warning`).
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    Ok(socket)
}

/// A warning when the kernel gives UDP sockets smaller buffers than asked for.
pub(crate) fn buffer_cap_warning(ip: IpAddr, buffer: usize) -> Option<String> {
    let socket = new_udp_socket(SocketAddr::new(ip, 0), buffer).ok()?;
    let got = socket.recv_buffer_size().ok()?;
    // Linux reports twice the usable size it granted.
    (got < buffer).then(|| {
        format!(
            "UDP socket buffers capped at {got} bytes (asked {buffer}); raise net.core.rmem_max and \
             net.core.wmem_max for heavy relay loads"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Ranges below the kernel's ephemeral ports (32768-60999 by default), so no port-0 bind
    // elsewhere takes one mid-test, and apart from the integration tests' 31000-31999.
    fn local_port(s: &std::net::UdpSocket) -> u16 {
        s.local_addr().expect("addr").port()
    }

    #[test]
    fn relay_ports_come_from_the_range_even_and_exact_on_request() {
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let range = 30100..=30110;
        let mut held = Vec::new();
        for _ in 0..11 {
            let (s, next) =
                bind_in_range(ip, &range, PortChoice::Any, 1 << 16).expect("a free port");
            assert!(range.contains(&local_port(&s)));
            assert!(next.is_none());
            held.push(s);
        }
        let err = bind_in_range(ip, &range, PortChoice::Any, 1 << 16).expect_err("range exhausted");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        drop(held);
        let (even, next) = bind_in_range(
            ip,
            &range,
            PortChoice::Even {
                reserve_next: false,
            },
            1 << 16,
        )
        .expect("even port");
        assert_eq!(local_port(&even) % 2, 0);
        assert!(next.is_none(), "no reservation without the R bit");
        drop(even);
        for _ in 0..20 {
            let (even, next) =
                bind_in_range(ip, &range, PortChoice::Even { reserve_next: true }, 1 << 16)
                    .expect("even port");
            let port = local_port(&even);
            assert_eq!(port % 2, 0);
            assert_ne!(port, 30110, "never the last port when reserving the next");
            let next = next.expect("port + 1 bound with it");
            assert_eq!(local_port(&next), port + 1);
        }
        let (exact, next) =
            bind_in_range(ip, &range, PortChoice::Exact(30105), 1 << 16).expect("exact port");
        assert_eq!((local_port(&exact), next.is_none()), (30105, true));
        let (lo, hi) = (5, 4);
        assert!(bind_in_range(ip, &(lo..=hi), PortChoice::Any, 1 << 16).is_err());
    }

    #[test]
    fn an_even_port_is_never_chosen_when_its_neighbour_is_taken() {
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        // 30200 and 30202 are even; 30201 is taken by someone else, so only 30202 (+ 30203)
        // can be reserved, and after that nothing.
        let other = std::net::UdpSocket::bind((ip, 30201)).expect("bind 30201");
        let range = 30200..=30203;
        for _ in 0..10 {
            let (even, next) =
                bind_in_range(ip, &range, PortChoice::Even { reserve_next: true }, 1 << 16)
                    .expect("the pair 30202/30203");
            assert_eq!(local_port(&even), 30202);
            assert_eq!(next.as_ref().map(local_port), Some(30203));
        }
        let (_even, _next) =
            bind_in_range(ip, &range, PortChoice::Even { reserve_next: true }, 1 << 16)
                .expect("the pair 30202/30203");
        let err = bind_in_range(ip, &range, PortChoice::Even { reserve_next: true }, 1 << 16)
            .expect_err("no free pair left");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        drop(other);
    }

    #[test]
    fn a_held_port_is_nobody_elses_until_redeemed_or_released() {
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let range = 30300..=30301;
        let held = HeldPorts::default();
        let (rtp, next) =
            bind_in_range(ip, &range, PortChoice::Even { reserve_next: true }, 1 << 16)
                .expect("the pair 30300/30301");
        assert_eq!(local_port(&rtp), 30300);
        held.hold(next.expect("port + 1")).expect("held");
        assert_eq!(held.len(), 1);
        // While held, no other bind gets the port: not ours in the range, not an exact one,
        // not another process's.
        let err = bind_in_range(ip, &(30301..=30301), PortChoice::Any, 1 << 16)
            .expect_err("30301 is held");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(bind_in_range(ip, &range, PortChoice::Exact(30301), 1 << 16).is_err());
        assert!(std::net::UdpSocket::bind((ip, 30301)).is_err());
        // Redeeming hands over that very socket, once.
        let redeemed = held.take(Family::V4, 30301).expect("the held socket");
        assert_eq!(local_port(&redeemed), 30301);
        assert!(held.take(Family::V4, 30301).is_none());
        drop(redeemed);
        // A reservation that ends unredeemed (the core's `Unreserved`) frees the port.
        let again = bind_in_range(ip, &(30301..=30301), PortChoice::Any, 1 << 16)
            .expect("30301 free after the redeemed socket closed")
            .0;
        held.hold(again).expect("held");
        assert!(std::net::UdpSocket::bind((ip, 30301)).is_err());
        held.release(Family::V4, 30301);
        assert_eq!(held.len(), 0);
        std::net::UdpSocket::bind((ip, 30301)).expect("30301 free once released");
        drop(rtp);
    }
}
