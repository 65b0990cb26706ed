//! Relay shards: the threads that carry every UDP datagram.
//!
//! Each shard is one thread with its own epoll set holding its UDP listener socket (one per
//! shard, all bound to the listen address with `SO_REUSEPORT`, so the kernel keeps each client
//! on one shard) and the relay sockets of the allocations made through it (and a share of the
//! TCP/TLS clients' relay sockets). A pass of the loop, after one `epoll_wait`:
//! - the listener: up to [`MAX_FRAMES`] datagrams per `recvmmsg` go through the core under one
//!   lock; ChannelData payloads go straight out of their relay sockets, those of one socket in
//!   one [`Sender::send`] (GSO trains where a client sent several of one size);
//! - every relay socket that is readable: its datagrams are read into one arena, the core
//!   judges all of them under one lock, each is framed in place, and all that go to UDP
//!   clients leave through the listener with one [`Sender::send`] (across allocations).
//!
//! - every readable TCP client connection (accepted on tokio, then handed to a shard in turn):
//!   the frames of one read go through the core under one lock, like a listener batch;
//!   replies and peer datagrams for it are appended to its output buffer, written once per
//!   pass (and when the socket is writable again if the kernel took only part).
//!
//! So a datagram costs no task wake-up, no cross-thread hand-off and no allocation, and the
//! system calls are shared by everything that arrived together. TLS connections stay on the
//! tokio runtime (rustls); datagrams for them are queued to their writer tasks.
//!
//! Other threads talk to a shard through [`Shard::command`] (add a TCP connection or a TLS
//! client's relay socket, remove a closed allocation's), which wakes it through a socket pair
//! in its epoll set.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{
    epoll_create1, epoll_ctl, epoll_wait, EpollCreateFlags, EpollEvent, EpollFlags, EpollOp,
};

use tokio::sync::OwnedSemaphorePermit;

use super::framing::{next_frame, Next};
use super::relay::{Binder, Entry, RelayHandle, Sink, Target};
use super::shared::Shared;
use super::sock::{gso_supported, Arena, Frame, Sender, HEADROOM, MAX_FRAMES};
use crate::config::Family;
use crate::core::{AllocRef, ClientOutput, FiveTuple, Now, Payload, PeerOutput};
use crate::events::Transport;
use crate::stats::Stats;

/// epoll token of the wake-up socket.
const WAKE: u64 = 0;
/// epoll token of the listener.
const LISTENER: u64 = 1;
/// Events taken per `epoll_wait`.
const EVENTS: usize = 256;
/// Listener batches read per pass before the relay sockets get their turn.
const LISTENER_BATCHES: usize = 4;
/// Largest frame on a stream: a 64 KiB STUN body plus header, or ChannelData with padding.
const MAX_FRAME: usize = 65_535 + 20 + 4;
/// Bytes of relayed data queued for a TCP client that does not read before more is dropped.
const OUT_LIMIT: usize = 4 << 20;
/// Queued bytes past which a TCP client that does not read is disconnected (replies included).
const OUT_HARD_LIMIT: usize = 8 << 20;
/// How often idle TCP connections are looked for.
const IDLE_SCAN: Duration = Duration::from_secs(1);

/// What other threads ask of a shard.
#[derive(Debug)]
pub(crate) enum Command {
    /// Start reading this relay socket (already in the epoll set).
    Add(Entry),
    /// Serve this TCP connection (already in the epoll set).
    AddConn(Conn),
    /// Stop reading this relay socket (or connection) and let it close.
    Remove(u64),
}

/// A TCP client connection a shard serves: frames read from it go through the core; replies
/// and relayed frames are appended to `out` and written once per pass.
#[derive(Debug)]
pub(crate) struct Conn {
    token: u64,
    stream: std::net::TcpStream,
    tuple: FiveTuple,
    buf: Vec<u8>,
    filled: usize,
    out: Vec<u8>,
    /// Queued in the pass's list of connections to write.
    dirty: bool,
    /// Waiting for EPOLLOUT (the kernel took only part of `out`).
    blocked: bool,
    last_read: Instant,
    _permit: OwnedSemaphorePermit,
}

impl Conn {
    /// A connection accepted on `tuple` (`stream` non-blocking), holding `permit`.
    pub fn new(
        token: u64,
        stream: std::net::TcpStream,
        tuple: FiveTuple,
        permit: OwnedSemaphorePermit,
        now: Instant,
    ) -> Self {
        Self {
            token,
            stream,
            tuple,
            buf: vec![0u8; 2 * MAX_FRAME],
            filled: 0,
            out: Vec::new(),
            dirty: false,
            blocked: false,
            last_read: now,
            _permit: permit,
        }
    }
}

/// An epoll descriptor, closed on drop.
#[derive(Debug)]
struct Epoll(RawFd);

impl Drop for Epoll {
    fn drop(&mut self) {
        let _ = nix::unistd::close(self.0);
    }
}

/// The part of a shard other threads see.
#[derive(Debug)]
pub(crate) struct Shard {
    epoll: Epoll,
    wake_rx: UnixDatagram,
    wake_tx: UnixDatagram,
    commands: Mutex<Vec<Command>>,
    has_commands: AtomicBool,
    next_token: AtomicU64,
    stop: AtomicBool,
}

impl Shard {
    pub fn new() -> io::Result<Arc<Self>> {
        let epoll = Epoll(epoll_create1(EpollCreateFlags::EPOLL_CLOEXEC).map_err(io::Error::from)?);
        let (wake_rx, wake_tx) = UnixDatagram::pair()?;
        wake_rx.set_nonblocking(true)?;
        wake_tx.set_nonblocking(true)?;
        let shard = Self {
            epoll,
            wake_rx,
            wake_tx,
            commands: Mutex::new(Vec::new()),
            has_commands: AtomicBool::new(false),
            next_token: AtomicU64::new(LISTENER + 1),
            stop: AtomicBool::new(false),
        };
        shard.register(shard.wake_rx.as_raw_fd(), WAKE)?;
        Ok(Arc::new(shard))
    }

    /// A token for a new relay socket.
    pub fn token(&self) -> u64 {
        self.next_token.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds `fd` to the epoll set (level-triggered reads).
    pub fn register(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = EpollEvent::new(EpollFlags::EPOLLIN, token);
        epoll_ctl(self.epoll.0, EpollOp::EpollCtlAdd, fd, &mut ev).map_err(io::Error::from)
    }

    fn deregister(&self, fd: RawFd) {
        let _ = epoll_ctl(self.epoll.0, EpollOp::EpollCtlDel, fd, None);
    }

    /// Queues `c` and wakes the shard.
    pub fn command(&self, c: Command) {
        self.commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(c);
        self.has_commands.store(true, Ordering::Release);
        self.wake();
    }

    fn wake(&self) {
        // A full socket pair means a wake-up is pending anyway.
        let _ = self.wake_tx.send(&[0]);
    }

    /// Asks the shard's thread to end (it drops its relay sockets).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.wake();
    }

    /// Drops queued commands (after the thread ended: they may hold relay sockets).
    pub fn clear(&self) {
        self.commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// Runs a shard until [`Shard::stop`]. `listener` is its share of the UDP listener (none when
/// the server has no UDP listener: then it only reads TCP/TLS clients' relay sockets).
pub(crate) fn run(shared: Arc<Shared>, shard: Arc<Shard>, listener: Option<std::net::UdpSocket>) {
    let listener = listener.and_then(|l| {
        let ready = l
            .local_addr()
            .and_then(|local| {
                l.set_nonblocking(true)?;
                shard.register(l.as_raw_fd(), LISTENER)?;
                Ok(local)
            })
            .map_err(|e| tracing::error!(error = %e, "TURN relay shard cannot serve its listener"));
        ready.ok().map(|local| (l, local))
    });
    let gso = listener
        .as_ref()
        .map(|(l, _)| gso_supported(l.as_raw_fd()))
        .unwrap_or(false);
    let mut w = Worker {
        shared,
        shard,
        listener,
        entries: HashMap::new(),
        from_clients: Arena::new(MAX_FRAMES),
        from_peers: Arena::new(MAX_FRAMES),
        owners: Vec::with_capacity(MAX_FRAMES),
        to_clients: Vec::with_capacity(MAX_FRAMES),
        sender: Sender::new(gso),
        added: Vec::new(),
        gone: Vec::new(),
        outs: Vec::with_capacity(MAX_FRAMES),
        frames: Vec::with_capacity(MAX_FRAMES),
        conns: HashMap::new(),
        dirty: Vec::new(),
        conn_frames: Vec::new(),
        idle_timeout: Duration::ZERO,
        last_idle_scan: Now::system().instant,
    };
    w.idle_timeout = w.shared.stream_idle_timeout;
    let mut events = [EpollEvent::empty(); EVENTS];
    let mut ready: Vec<u64> = Vec::with_capacity(EVENTS);
    let mut conn_ready: Vec<(u64, EpollFlags)> = Vec::with_capacity(EVENTS);
    loop {
        // With TCP connections, wake at least every IDLE_SCAN to close idle ones.
        let timeout = if w.conns.is_empty() { -1 } else { 1000 };
        let n = match epoll_wait(w.shard.epoll.0, &mut events, timeout) {
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "TURN relay shard: epoll_wait failed");
                break;
            }
        };
        if w.shard.stop.load(Ordering::Acquire) {
            break;
        }
        if w.shard.has_commands.swap(false, Ordering::Acquire) {
            w.apply_commands();
        }
        let now = Now::system();
        let mut listener_ready = false;
        ready.clear();
        conn_ready.clear();
        for ev in &events[..n] {
            match ev.data() {
                WAKE => w.drain_wake(),
                LISTENER => listener_ready = true,
                token if w.conns.contains_key(&token) => conn_ready.push((token, ev.events())),
                token => ready.push(token),
            }
        }
        if listener_ready {
            w.read_listener(now);
        }
        for &(token, flags) in &conn_ready {
            w.conn_ready(token, flags, now);
        }
        if !ready.is_empty() {
            w.read_relays(&ready, now);
        }
        w.write_conns(now);
        if !w.conns.is_empty() && now.instant.duration_since(w.last_idle_scan) >= IDLE_SCAN {
            w.close_idle(now);
        }
    }
}

/// A shard thread's own state.
struct Worker {
    shared: Arc<Shared>,
    shard: Arc<Shard>,
    listener: Option<(std::net::UdpSocket, SocketAddr)>,
    entries: HashMap<u64, Entry>,
    from_clients: Arena,
    from_peers: Arena,
    /// The entry each run of `from_peers` datagrams came from: (token, its allocation, first,
    /// end).
    owners: Vec<(u64, AllocRef, usize, usize)>,
    to_clients: Vec<Frame>,
    sender: Sender,
    /// Relay sockets made during a client batch, entered once it is done.
    added: Vec<Entry>,
    /// Entries whose allocation is gone, removed after a batch.
    gone: Vec<u64>,
    /// The core's answers to a client batch, and the payloads of one relay socket.
    outs: Vec<ClientOutput<RelayHandle>>,
    frames: Vec<Frame>,
    /// TCP connections, and those with output to write this pass.
    conns: HashMap<u64, Conn>,
    dirty: Vec<u64>,
    /// Frames of one read from a connection: (start in its buffer, length).
    conn_frames: Vec<(usize, usize)>,
    idle_timeout: Duration,
    last_idle_scan: Instant,
}

impl Worker {
    fn apply_commands(&mut self) {
        let commands = std::mem::take(
            &mut *self
                .shard
                .commands
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for c in commands {
            match c {
                Command::Add(e) => {
                    self.entries.insert(e.token, e);
                }
                Command::AddConn(c) => {
                    self.conns.insert(c.token, c);
                }
                Command::Remove(token) => self.remove(token),
            }
        }
    }

    fn remove(&mut self, token: u64) {
        if let Some(e) = self.entries.remove(&token) {
            self.shard.deregister(e.relay.socket.as_raw_fd());
        } else if let Some(c) = self.conns.remove(&token) {
            self.shard.deregister(c.stream.as_raw_fd());
        }
    }

    fn drain_wake(&self) {
        let mut b = [0u8; 64];
        while self.shard.wake_rx.recv(&mut b).is_ok() {}
    }

    /// Reads client datagrams from the listener and acts on them, a batch at a time.
    fn read_listener(&mut self, now: Now) {
        let Some((fd, family)) = self
            .listener
            .as_ref()
            .map(|(l, local)| (l.as_raw_fd(), Family::of(local.ip())))
        else {
            return;
        };
        for _ in 0..LISTENER_BATCHES {
            self.from_clients.clear();
            // An error is an ICMP port unreachable from an earlier reply, etc.
            let filled = self.from_clients.recv(fd, family).unwrap_or(0);
            if self.from_clients.len() > 0 {
                self.client_batch(now);
            }
            if filled < MAX_FRAMES {
                break; // the queue is empty
            }
        }
    }

    /// Runs a batch of client datagrams through the core under one lock, then sends what it
    /// decided: replies on the listener, payloads out of relay sockets.
    fn client_batch(&mut self, now: Now) {
        let Worker {
            shared,
            shard,
            listener,
            from_clients,
            sender,
            added,
            entries,
            outs,
            frames,
            ..
        } = self;
        let Some((listener, local)) = listener else {
            return;
        };
        let n = from_clients.len();
        outs.clear();
        let events = {
            let mut core = shared.core();
            for i in 0..n {
                let (data, from) = from_clients.datagram(i);
                let tuple = FiveTuple {
                    client: from,
                    server: *local,
                    transport: Transport::Udp,
                };
                let mut binder = super::relay::Binder {
                    shared,
                    target: super::relay::Target::Shard {
                        shard,
                        client: from,
                        added,
                    },
                };
                outs.push(core.handle_client(tuple, data, now, &mut binder));
            }
            if core.has_events() {
                core.drain_events()
            } else {
                Vec::new()
            }
        };
        if !events.is_empty() {
            shared.dispatch(events);
        }
        for e in added.drain(..) {
            entries.insert(e.token, e);
        }
        // ChannelData payloads by relay socket (stable, so each flow keeps its order). A batch
        // with Send indications (rare) goes out datagram by datagram in arrival order instead,
        // so a client mixing both keeps its order too.
        let owned = outs.iter().any(|o| {
            matches!(
                o,
                ClientOutput::Relay {
                    payload: Payload::Owned(_),
                    ..
                }
            )
        });
        let mut relayed: [usize; MAX_FRAMES] = [0; MAX_FRAMES];
        let mut k = 0;
        for (i, out) in outs.iter().enumerate() {
            match out {
                ClientOutput::Nothing => {}
                ClientOutput::Reply(bytes) => {
                    let _ = listener.send_to(bytes, from_clients.datagram(i).1);
                }
                ClientOutput::Relay {
                    relay,
                    peer,
                    payload,
                } if owned => {
                    let data = match payload {
                        Payload::Input(r) => from_clients.datagram(i).0.get(r.clone()),
                        Payload::Owned(v) => Some(v.as_slice()),
                    };
                    if data.is_none_or(|d| relay.socket.send_to(d, *peer).is_err()) {
                        Stats::add(&shared.stats.dropped_packets, 1);
                    }
                }
                ClientOutput::Relay { .. } => {
                    relayed[k] = i;
                    k += 1;
                }
            }
        }
        let relay_of = |i: usize| match &outs[i] {
            ClientOutput::Relay { relay, .. } => Arc::as_ptr(relay) as usize,
            _ => 0,
        };
        if k > 1 {
            relayed[..k].sort_by_key(|&i| relay_of(i));
        }
        let mut start = 0;
        while start < k {
            let this = relay_of(relayed[start]);
            let end = start
                + relayed[start..k]
                    .iter()
                    .take_while(|&&i| relay_of(i) == this)
                    .count();
            frames.clear();
            let mut socket = None;
            for &i in &relayed[start..end] {
                if let ClientOutput::Relay {
                    relay,
                    peer,
                    payload: Payload::Input(r),
                } = &outs[i]
                {
                    let base = from_clients.slot_start(i) + HEADROOM;
                    frames.push((base + r.start..base + r.end, *peer));
                    socket = Some(relay);
                }
            }
            if let Some(relay) = socket {
                let sent = sender.send(relay.socket.as_raw_fd(), from_clients.bytes(), frames);
                Stats::add(&shared.stats.dropped_packets, (frames.len() - sent) as u64);
            }
            start = end;
        }
        outs.clear();
    }

    /// Reads every ready relay socket into one arena, then judges, frames and sends them.
    fn read_relays(&mut self, ready: &[u64], now: Now) {
        for &token in ready {
            let Some(e) = self.entries.get(&token) else {
                continue;
            };
            let (fd, family, alloc) = (e.relay.socket.as_raw_fd(), e.relay.family, e.alloc);
            if self.from_peers.free() == 0 {
                self.peer_batch(now);
            }
            let first = self.from_peers.len();
            // ICMP errors from earlier sends surface here on Linux; they are not fatal. A socket
            // with more queued than the arena took stays readable and comes again next pass.
            let _ = self.from_peers.recv(fd, family);
            let end = self.from_peers.len();
            if end > first {
                self.owners.push((token, alloc, first, end));
            }
        }
        self.peer_batch(now);
    }

    /// Asks the core about the datagrams in `from_peers` under one lock, frames each in place
    /// and sends those for UDP clients through the listener together.
    fn peer_batch(&mut self, now: Now) {
        let Worker {
            shared,
            listener,
            entries,
            from_peers,
            owners,
            to_clients,
            sender,
            gone,
            conns,
            dirty,
            ..
        } = self;
        if owners.is_empty() {
            from_peers.clear();
            return;
        }
        let mut verdicts = [PeerOutput::Drop; MAX_FRAMES];
        {
            let mut core = shared.core();
            for &(_, alloc, first, end) in owners.iter() {
                for (i, verdict) in verdicts.iter_mut().enumerate().take(end).skip(first) {
                    let (data, peer) = from_peers.datagram(i);
                    *verdict = core.handle_peer(alloc, peer, data.len(), now.instant);
                }
            }
        }
        to_clients.clear();
        for &(token, _, first, end) in owners.iter() {
            let Some(e) = entries.get_mut(&token) else {
                continue;
            };
            for (i, &verdict) in verdicts.iter().enumerate().take(end).skip(first) {
                if verdict == PeerOutput::Gone {
                    gone.push(token);
                    break;
                }
                if verdict == PeerOutput::Drop {
                    continue;
                }
                let base = from_peers.slot_start(i);
                let (slot, n, peer) = from_peers.slot_mut(i);
                let Some(range) = e.framer.frame(slot, n, peer, verdict) else {
                    Stats::add(&shared.stats.dropped_packets, 1);
                    continue;
                };
                match &e.sink {
                    Sink::Udp(client) => {
                        to_clients.push((base + range.start..base + range.end, *client))
                    }
                    Sink::Conn(conn) => {
                        let queued = conns
                            .get_mut(conn)
                            .is_some_and(|c| queue_data(c, &slot[range], dirty));
                        if !queued {
                            Stats::add(&shared.stats.dropped_packets, 1);
                        }
                    }
                    Sink::Stream(tx) => {
                        if tx.try_send(slot[range].to_vec()).is_err() {
                            Stats::add(&shared.stats.dropped_packets, 1);
                        }
                    }
                }
            }
        }
        if !to_clients.is_empty() {
            let sent = match listener {
                Some((l, _)) => sender.send(l.as_raw_fd(), from_peers.bytes(), to_clients),
                None => 0,
            };
            Stats::add(
                &shared.stats.dropped_packets,
                (to_clients.len() - sent) as u64,
            );
        }
        owners.clear();
        from_peers.clear();
        while let Some(token) = self.gone.pop() {
            self.remove(token);
        }
    }

    /// A TCP connection is readable (or writable again, or closed by the peer).
    fn conn_ready(&mut self, token: u64, flags: EpollFlags, now: Now) {
        if flags.contains(EpollFlags::EPOLLOUT) {
            self.write_conn(token, now);
        }
        if flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR) {
            self.read_conn(token, now);
        }
    }

    /// Reads what a connection has (one read per pass; the socket stays readable if more is
    /// queued) and runs its complete frames through the core under one lock.
    fn read_conn(&mut self, token: u64, now: Now) {
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        let filled = c.filled;
        match c.stream.read(&mut c.buf[filled..]) {
            Ok(0) => return self.close_conn(token, now),
            Ok(n) => {
                c.filled += n;
                c.last_read = now.instant;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
            Err(_) => return self.close_conn(token, now),
        }
        // Complete frames, up to the first incomplete (or invalid) one.
        self.conn_frames.clear();
        let mut start = 0;
        let mut invalid = false;
        loop {
            match next_frame(&c.buf[start..c.filled]) {
                Next::Incomplete => break,
                Next::Invalid => {
                    invalid = true;
                    break;
                }
                Next::Frame(f) => {
                    self.conn_frames.push((start, f.len));
                    start += f.consumed;
                }
            }
        }
        self.conn_batch(token, now);
        if invalid {
            Stats::add(&self.shared.stats.bad_packets, 1);
            return self.close_conn(token, now);
        }
        if let Some(c) = self.conns.get_mut(&token) {
            c.buf.copy_within(start..c.filled, 0);
            c.filled -= start;
        }
    }

    /// Runs the frames in `conn_frames` of connection `token` through the core and acts on the
    /// answers (replies queued to the connection, payloads sent from relay sockets).
    fn conn_batch(&mut self, token: u64, now: Now) {
        let Worker {
            shared,
            shard,
            sender,
            added,
            entries,
            outs,
            frames,
            conns,
            dirty,
            conn_frames,
            ..
        } = self;
        let Some(c) = conns.get_mut(&token) else {
            return;
        };
        if conn_frames.is_empty() {
            return;
        }
        outs.clear();
        let events = {
            let mut core = shared.core();
            for &(start, len) in conn_frames.iter() {
                let mut binder = Binder {
                    shared,
                    target: Target::Conn {
                        shard,
                        conn: token,
                        added,
                    },
                };
                outs.push(core.handle_client(
                    c.tuple,
                    &c.buf[start..start + len],
                    now,
                    &mut binder,
                ));
            }
            if core.has_events() {
                core.drain_events()
            } else {
                Vec::new()
            }
        };
        if !events.is_empty() {
            shared.dispatch(events);
        }
        for e in added.drain(..) {
            entries.insert(e.token, e);
        }
        for (k, out) in outs.drain(..).enumerate() {
            match out {
                ClientOutput::Nothing => {}
                ClientOutput::Reply(bytes) => queue_reply(c, &bytes, dirty),
                ClientOutput::Relay {
                    relay,
                    peer,
                    payload,
                } => {
                    let data = match &payload {
                        Payload::Input(r) => {
                            let start = conn_frames[k].0;
                            c.buf.get(start + r.start..start + r.end)
                        }
                        Payload::Owned(v) => Some(v.as_slice()),
                    };
                    let Some(data) = data else {
                        continue;
                    };
                    frames.clear();
                    frames.push((0..data.len(), peer));
                    if sender.send(relay.socket.as_raw_fd(), data, frames) == 0 {
                        Stats::add(&shared.stats.dropped_packets, 1);
                    }
                }
            }
        }
    }

    /// Writes the output of every connection that got some this pass.
    fn write_conns(&mut self, now: Now) {
        while let Some(token) = self.dirty.pop() {
            if let Some(c) = self.conns.get_mut(&token) {
                c.dirty = false;
                if c.blocked {
                    continue; // written when the socket is writable again
                }
            }
            self.write_conn(token, now);
        }
    }

    /// Writes as much of a connection's output as the kernel takes; waits for EPOLLOUT for
    /// the rest.
    fn write_conn(&mut self, token: u64, now: Now) {
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        let mut written = 0;
        let failed = loop {
            if written == c.out.len() {
                break false;
            }
            match c.stream.write(&c.out[written..]) {
                Ok(0) => break true,
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break true,
            }
        };
        if failed || c.out.len() - written > OUT_HARD_LIMIT {
            return self.close_conn(token, now);
        }
        c.out.drain(..written);
        let blocked = !c.out.is_empty();
        if blocked != c.blocked {
            c.blocked = blocked;
            let flags = if blocked {
                EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT
            } else {
                EpollFlags::EPOLLIN
            };
            let mut ev = EpollEvent::new(flags, token);
            let fd = c.stream.as_raw_fd();
            if epoll_ctl(self.shard.epoll.0, EpollOp::EpollCtlMod, fd, &mut ev).is_err() {
                self.close_conn(token, now);
            }
        }
    }

    /// Closes a TCP connection; its allocation (if any) ends now (RFC 8656 §3.1).
    fn close_conn(&mut self, token: u64, now: Now) {
        let Some(c) = self.conns.remove(&token) else {
            return;
        };
        self.shard.deregister(c.stream.as_raw_fd());
        let events = {
            let mut core = self.shared.core();
            core.close_tuple(c.tuple, now);
            core.drain_events()
        };
        self.shared.dispatch(events);
    }

    /// Closes connections that have sent nothing for the idle timeout and hold no allocation.
    fn close_idle(&mut self, now: Now) {
        self.last_idle_scan = now.instant;
        let idle: Vec<u64> = {
            let core = self.shared.core();
            self.conns
                .values()
                .filter(|c| now.instant.duration_since(c.last_read) >= self.idle_timeout)
                .filter(|c| core.relay_of(&c.tuple).is_none())
                .map(|c| c.token)
                .collect()
        };
        for token in idle {
            self.close_conn(token, now);
        }
    }
}

/// Queues relayed `data` for a TCP client; `false` (dropped) when it does not read.
fn queue_data(c: &mut Conn, data: &[u8], dirty: &mut Vec<u64>) -> bool {
    if c.out.len() + data.len() > OUT_LIMIT {
        return false;
    }
    c.out.extend_from_slice(data);
    mark_dirty(c, dirty);
    true
}

/// Queues a reply for a TCP client (the connection closes at [`OUT_HARD_LIMIT`]).
fn queue_reply(c: &mut Conn, data: &[u8], dirty: &mut Vec<u64>) {
    c.out.extend_from_slice(data);
    mark_dirty(c, dirty);
}

fn mark_dirty(c: &mut Conn, dirty: &mut Vec<u64>) {
    if !c.dirty {
        c.dirty = true;
        dirty.push(c.token);
    }
}
