//! Batched UDP receives and sends on non-blocking sockets, for the relay shards
//! ([`super::shard`]).
//!
//! Reads take many datagrams per `recvmmsg` into the fixed slots of an [`Arena`]; each slot has
//! headroom in front of its datagram, so a peer datagram is framed as ChannelData or a Data
//! indication in place and sent from where it landed.
//!
//! [`Sender::send`] sends a list of frames, each to its own address, with as few system calls
//! as the kernel allows: one `sendmmsg` for a run of messages, and with UDP GSO
//! (`UDP_SEGMENT`, Linux 4.18+) consecutive frames of one size to one address travel as one
//! message that the kernel splits into datagrams after routing, so the per-datagram cost of the
//! IP stack is paid once per train. The datagrams that arrive are exactly the frames, so GSO
//! changes nothing on the wire; where the kernel refuses a GSO send (no support, a segment over
//! the path MTU) the frames go out one by one as before.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::ops::Range;
use std::os::fd::RawFd;

use nix::errno::Errno;
use nix::sys::socket::{
    recvmmsg, sendmmsg, sockopt, ControlMessage, MsgFlags, MultiHeaders, SockaddrIn, SockaddrIn6,
    SockaddrLike, SockaddrStorage,
};

use crate::config::Family as AddrFamily;

/// Room in front of each datagram for a Data indication header (IPv6 peer).
pub(crate) const HEADROOM: usize = 48;
/// Largest datagram received intact.
const MAX_DATAGRAM: usize = 65_536;
/// One slot: headroom, the datagram, and room for ChannelData padding.
pub(crate) const SLOT: usize = HEADROOM + MAX_DATAGRAM + 16;
/// Most frames one [`Sender::send`] call takes (and most slots of an [`Arena`]).
pub(crate) const MAX_FRAMES: usize = 64;
/// Most datagrams in one GSO train (the kernel's UDP_MAX_SEGMENTS is 64 or more).
const MAX_SEGMENTS: usize = 64;
/// Most payload bytes in one GSO train (one IP datagram before segmentation).
const MAX_TRAIN_BYTES: usize = 65_000;

/// Datagrams received into fixed slots: datagram `i` is at `HEADROOM..HEADROOM + len` of its
/// slot. Slots are used in order until [`Arena::clear`]; several receives (from several
/// sockets) can fill one arena. Each address family has its own receive headers: the kernel
/// shortens a header's address length to the last address it wrote, so an IPv4 receive would
/// truncate the next IPv6 sender's address in the same header.
pub(crate) struct Arena {
    buf: Vec<u8>,
    slots: usize,
    headers: MultiHeaders<SockaddrStorage>,
    headers6: MultiHeaders<SockaddrStorage>,
    /// Slots taken so far (a truncated datagram takes a slot but is not kept).
    used: usize,
    /// Slot, length and sender of each datagram kept.
    got: Vec<(usize, usize, SocketAddr)>,
}

impl Arena {
    /// An arena of `slots` slots (at most [`MAX_FRAMES`]); pages are only touched as datagrams
    /// land in them.
    pub fn new(slots: usize) -> Self {
        let slots = slots.clamp(1, MAX_FRAMES);
        Self {
            buf: vec![0u8; slots * SLOT],
            slots,
            headers: MultiHeaders::preallocate(slots, None),
            headers6: MultiHeaders::preallocate(slots, None),
            used: 0,
            got: Vec::with_capacity(slots),
        }
    }

    /// Forgets every datagram.
    pub fn clear(&mut self) {
        self.used = 0;
        self.got.clear();
    }

    /// Datagrams kept since the last [`Arena::clear`].
    pub fn len(&self) -> usize {
        self.got.len()
    }

    /// Slots still free.
    pub fn free(&self) -> usize {
        self.slots - self.used
    }

    /// Datagram `i` (of [`Arena::len`]) and its sender.
    pub fn datagram(&self, i: usize) -> (&[u8], SocketAddr) {
        let (slot, len, from) = self.got[i];
        let start = slot * SLOT + HEADROOM;
        (&self.buf[start..start + len], from)
    }

    /// Where datagram `i`'s slot starts in [`Arena::bytes`].
    pub fn slot_start(&self, i: usize) -> usize {
        self.got[i].0 * SLOT
    }

    /// Slot `i` (datagram at `HEADROOM..HEADROOM + len`), its length and sender, for framing
    /// in place.
    pub fn slot_mut(&mut self, i: usize) -> (&mut [u8], usize, SocketAddr) {
        let (slot, len, from) = self.got[i];
        (&mut self.buf[slot * SLOT..(slot + 1) * SLOT], len, from)
    }

    /// The whole buffer, for sending frames by their byte ranges.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Receives up to [`Arena::free`] datagrams from `fd` without waiting and keeps them
    /// after those already held. Returns how many slots the receive filled: fewer than were
    /// free means the socket's queue is empty. An error (e.g. an ICMP error of an earlier
    /// send on this socket) is not fatal; `WouldBlock` is `Ok(0)`.
    pub fn recv(&mut self, fd: RawFd, family: AddrFamily) -> io::Result<usize> {
        let free = self.free();
        if free == 0 {
            return Ok(0);
        }
        let Self {
            buf,
            headers,
            headers6,
            used,
            got,
            ..
        } = self;
        let headers = match family {
            AddrFamily::V4 => headers,
            AddrFamily::V6 => headers6,
        };
        let mut slots = buf[*used * SLOT..].chunks_exact_mut(SLOT);
        let slices: [[IoSliceMut<'_>; 1]; MAX_FRAMES] = std::array::from_fn(|_| {
            [IoSliceMut::new(
                slots
                    .next()
                    .map(|s| &mut s[HEADROOM..HEADROOM + MAX_DATAGRAM])
                    .unwrap_or_default(),
            )]
        });
        match recvmmsg(
            fd,
            headers,
            slices[..free].iter(),
            MsgFlags::MSG_DONTWAIT,
            None,
        ) {
            Ok(results) => {
                let first = *used;
                let mut received = 0;
                for (k, r) in results.enumerate() {
                    received += 1;
                    let from = r.address.as_ref().and_then(to_std);
                    if let Some(from) = from {
                        if !r.flags.contains(MsgFlags::MSG_TRUNC) {
                            got.push((first + k, r.bytes, from));
                        }
                    }
                }
                *used += received;
                Ok(received)
            }
            Err(Errno::EAGAIN) => Ok(0),
            Err(e) => Err(io::Error::from(e)),
        }
    }
}

fn to_std(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

/// Whether this kernel takes `UDP_SEGMENT` (UDP GSO) on `fd`'s kind of socket.
pub(crate) fn gso_supported(fd: RawFd) -> bool {
    nix::sys::socket::getsockopt(fd, sockopt::UdpGsoSegment).is_ok()
}

/// One frame to send: a byte range of the caller's buffer and its destination.
pub(crate) type Frame = (Range<usize>, SocketAddr);

/// A socket address type `sendmmsg` takes, one per address family (an IPv4 address is 16
/// bytes where `SockaddrStorage` is 128, and the headers are filled for every call).
trait SockFamily: SockaddrLike + Copy {
    fn of(addr: &SocketAddr) -> Option<Self>;
}

impl SockFamily for SockaddrIn {
    fn of(addr: &SocketAddr) -> Option<Self> {
        match addr {
            SocketAddr::V4(a) => Some(SockaddrIn::from(*a)),
            SocketAddr::V6(_) => None,
        }
    }
}

impl SockFamily for SockaddrIn6 {
    fn of(addr: &SocketAddr) -> Option<Self> {
        match addr {
            SocketAddr::V6(a) => Some(SockaddrIn6::from(*a)),
            SocketAddr::V4(_) => None,
        }
    }
}

/// Message headers for one address family: nix's `recvmmsg` keeps each header's address
/// pointer as it finds it, so headers a send pointed at its own short-lived addresses must
/// never receive; these only send.
struct Headers<S> {
    plain: MultiHeaders<S>,
    /// With room for one `UDP_SEGMENT` control message each.
    gso: MultiHeaders<S>,
}

impl<S: SockFamily> Headers<S> {
    fn new() -> Self {
        Self {
            plain: MultiHeaders::preallocate(MAX_FRAMES, None),
            gso: MultiHeaders::preallocate(MAX_FRAMES, Some(nix::cmsg_space!(u16))),
        }
    }
}

/// Whether and up to which frame size GSO is used; what the kernel refused turns it down.
#[derive(Debug, Clone, Copy)]
struct Gso {
    on: bool,
    /// Frames longer than this go without GSO (lowered when the kernel refuses a size).
    max: usize,
}

/// Sends batches of frames ([`Sender::send`]).
pub(crate) struct Sender {
    v4: Headers<SockaddrIn>,
    v6: Headers<SockaddrIn6>,
    gso: Gso,
}

impl Sender {
    /// A sender that uses GSO when `gso` (see [`gso_supported`]).
    pub fn new(gso: bool) -> Self {
        Self {
            v4: Headers::new(),
            v6: Headers::new(),
            gso: Gso {
                on: gso,
                max: MAX_TRAIN_BYTES,
            },
        }
    }

    /// Sends `frames` (at most [`MAX_FRAMES`]; byte ranges of `buf`, each to its address) from
    /// `fd` without waiting, in order per destination. Returns how many frames went out: one
    /// the kernel refuses (send buffer full, an ICMP error of an earlier send) is dropped and
    /// the rest are still tried, as separate `sendto`s would be.
    pub fn send(&mut self, fd: RawFd, buf: &[u8], frames: &[Frame]) -> usize {
        let frames = &frames[..frames.len().min(MAX_FRAMES)];
        match frames {
            [] => 0,
            [one] => usize::from(send_one(fd, buf, one)),
            [first, ..] => {
                let same_family = frames
                    .iter()
                    .all(|(_, to)| to.is_ipv4() == first.1.is_ipv4());
                if !same_family {
                    return frames.iter().filter(|f| send_one(fd, buf, f)).count();
                }
                // Arrays sized for the batch: they are filled on every call.
                match (first.1.is_ipv4(), frames.len() <= 8) {
                    (true, true) => send_all::<_, 8>(&mut self.v4, &mut self.gso, fd, buf, frames),
                    (true, false) => {
                        send_all::<_, MAX_FRAMES>(&mut self.v4, &mut self.gso, fd, buf, frames)
                    }
                    (false, true) => send_all::<_, 8>(&mut self.v6, &mut self.gso, fd, buf, frames),
                    (false, false) => {
                        send_all::<_, MAX_FRAMES>(&mut self.v6, &mut self.gso, fd, buf, frames)
                    }
                }
            }
        }
    }
}

/// One datagram with `sendto`; whether it went out.
fn send_one(fd: RawFd, buf: &[u8], (range, to): &Frame) -> bool {
    let Some(data) = buf.get(range.clone()) else {
        return false;
    };
    let to = SockaddrStorage::from(*to);
    nix::sys::socket::sendto(fd, data, &to, MsgFlags::MSG_DONTWAIT).is_ok()
}

/// [`Sender::send`] for frames of one family, at most `N` of them.
fn send_all<S: SockFamily, const N: usize>(
    headers: &mut Headers<S>,
    gso: &mut Gso,
    fd: RawFd,
    buf: &[u8],
    frames: &[Frame],
) -> usize {
    let frames = &frames[..frames.len().min(N)];
    let slices: [IoSlice<'_>; N] = std::array::from_fn(|k| {
        IoSlice::new(
            frames
                .get(k)
                .and_then(|(r, _)| buf.get(r.clone()))
                .unwrap_or_default(),
        )
    });
    let mut sent = 0;
    let mut next = 0;
    while next < frames.len() {
        let size = frames[next].0.len();
        if gso.on && size > 0 && size <= gso.max {
            // Trains of one size, up to the next frame of another size.
            let end = next
                + frames[next..]
                    .iter()
                    .take_while(|(r, _)| r.len() == size)
                    .count();
            sent += send_trains::<S, N>(headers, gso, fd, &slices[next..end], &frames[next..end]);
            next = end;
        } else {
            let end = if gso.on { next + 1 } else { frames.len() };
            sent += send_plain::<S, N>(
                &mut headers.plain,
                fd,
                &slices[next..end],
                &frames[next..end],
            );
            next = end;
        }
    }
    sent
}

/// Sends `frames` (all of one size; `slices` are theirs) as GSO trains: consecutive frames to
/// one address form one message. Returns frames sent.
fn send_trains<S: SockFamily, const N: usize>(
    headers: &mut Headers<S>,
    gso: &mut Gso,
    fd: RawFd,
    slices: &[IoSlice<'_>],
    frames: &[Frame],
) -> usize {
    let size = frames.first().map(|(r, _)| r.len()).unwrap_or(0);
    let Ok(segment) = u16::try_from(size) else {
        return send_plain::<S, N>(&mut headers.plain, fd, slices, frames);
    };
    let per_train = (MAX_TRAIN_BYTES / size.max(1)).clamp(1, MAX_SEGMENTS);
    // Messages: (first frame, frame count).
    let mut msgs: [(usize, usize); N] = [(0, 0); N];
    let mut n = 0;
    for (k, (_, to)) in frames.iter().enumerate() {
        if n > 0 {
            let (first, count) = msgs[n - 1];
            if frames[first].1 == *to && count < per_train {
                msgs[n - 1].1 += 1;
                continue;
            }
        }
        if n == N {
            break;
        }
        msgs[n] = (k, 1);
        n += 1;
    }
    let iovs: [&[IoSlice<'_>]; N] = std::array::from_fn(|m| {
        let (first, count) = msgs[m];
        slices.get(first..first + count).unwrap_or_default()
    });
    let addrs: [Option<S>; N] = std::array::from_fn(|m| {
        if m < n {
            S::of(&frames[msgs[m].0].1)
        } else {
            None
        }
    });
    let cmsgs = [ControlMessage::UdpGsoSegments(&segment)];
    let (mut m, mut sent) = (0, 0);
    while m < n && gso.on {
        match sendmmsg(
            fd,
            &mut headers.gso,
            iovs[m..n].iter(),
            &addrs[m..n],
            cmsgs,
            MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(results) => {
                let k = results.count();
                if k == 0 {
                    m += 1;
                    continue;
                }
                sent += msgs[m..m + k].iter().map(|(_, c)| c).sum::<usize>();
                m += k;
            }
            Err(e) => {
                // The error is message `m`'s. GSO refusals (no support on this path, a segment
                // over the MTU) fall back to plain sends of its frames; any other error (send
                // buffer full, ICMP) drops it, as a plain send would.
                let (first, count) = msgs[m];
                match e {
                    Errno::EIO | Errno::ENOPROTOOPT | Errno::EOPNOTSUPP => gso.on = false,
                    Errno::EINVAL | Errno::EMSGSIZE => gso.max = size.saturating_sub(1),
                    _ => {
                        m += 1;
                        continue;
                    }
                }
                sent += send_plain::<S, N>(
                    &mut headers.plain,
                    fd,
                    &slices[first..first + count],
                    &frames[first..first + count],
                );
                m += 1;
                if !gso.on || size > gso.max {
                    break;
                }
            }
        }
    }
    // GSO was turned down mid-way: the rest go plain.
    if m < n {
        let first = msgs[m].0;
        sent += send_plain::<S, N>(&mut headers.plain, fd, &slices[first..], &frames[first..]);
    }
    sent
}

/// One datagram per frame with `sendmmsg`; returns how many went out.
fn send_plain<S: SockFamily, const N: usize>(
    headers: &mut MultiHeaders<S>,
    fd: RawFd,
    slices: &[IoSlice<'_>],
    frames: &[Frame],
) -> usize {
    let n = frames.len().min(slices.len()).min(N);
    let iovs: [&[IoSlice<'_>]; N] =
        std::array::from_fn(|k| slices.get(k..(k + 1).min(n)).unwrap_or_default());
    let addrs: [Option<S>; N] =
        std::array::from_fn(|k| frames.get(k).and_then(|(_, to)| S::of(to)));
    let no_cmsgs: [ControlMessage<'_>; 0] = [];
    let (mut next, mut sent) = (0, 0);
    while next < n {
        match sendmmsg(
            fd,
            headers,
            iovs[next..n].iter(),
            &addrs[next..n],
            no_cmsgs,
            MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(results) => match results.count() {
                0 => next += 1,
                k => {
                    sent += k;
                    next += k;
                }
            },
            // The error is the first datagram's: it is dropped, the others still go.
            Err(_) => next += 1,
        }
    }
    sent
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    fn recv_all(client: &UdpSocket, n: usize) -> Vec<Vec<u8>> {
        let mut buf = [0u8; 2048];
        (0..n)
            .map(|_| {
                let (len, _) = client.recv_from(&mut buf).expect("a datagram within 5 s");
                buf[..len].to_vec()
            })
            .collect()
    }

    fn bound() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s
    }

    fn arena_receive(relay: &UdpSocket, arena: &mut Arena, want: usize) {
        relay.set_nonblocking(true).expect("nonblocking");
        for _ in 0..500 {
            let family = AddrFamily::of(relay.local_addr().expect("addr").ip());
            arena.recv(relay.as_raw_fd(), family).expect("recv");
            if arena.len() >= want {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("only {} of {want} datagrams arrived", arena.len());
    }

    #[test]
    fn frames_framed_in_place_go_out_in_order_with_and_without_gso() {
        for gso in [false, true] {
            if gso && !gso_supported(bound().as_raw_fd()) {
                continue;
            }
            let relay = bound();
            let peer = bound();
            let (a, b) = (bound(), bound());
            let to_relay = relay.local_addr().expect("addr");
            // Equal sizes to `a` (one GSO train), then one of another size, then `b`.
            let texts = ["one..", "two..", "three", "four!", "five", "six..", "seven"];
            for t in texts {
                peer.send_to(t.as_bytes(), to_relay).expect("send");
            }
            let mut arena = Arena::new(8);
            arena_receive(&relay, &mut arena, texts.len());
            let mut frames = Vec::new();
            for i in 0..arena.len() {
                let start = arena.slot_start(i);
                let (buf, n, from) = arena.slot_mut(i);
                assert_eq!(from, peer.local_addr().expect("addr"));
                buf[HEADROOM - 2..HEADROOM].copy_from_slice(b"> ");
                let to = if i < 5 { &a } else { &b };
                frames.push((
                    start + HEADROOM - 2..start + HEADROOM + n,
                    to.local_addr().expect("addr"),
                ));
            }
            let mut sender = Sender::new(gso);
            let sent = sender.send(relay.as_raw_fd(), arena.bytes(), &frames);
            assert_eq!(sent, texts.len(), "gso {gso}: every frame sent");
            let got_a = recv_all(&a, 5);
            let got_b = recv_all(&b, 2);
            let text = |v: &Vec<Vec<u8>>| -> Vec<String> {
                v.iter()
                    .map(|d| String::from_utf8_lossy(d).into_owned())
                    .collect()
            };
            assert_eq!(
                text(&got_a),
                ["> one..", "> two..", "> three", "> four!", "> five"],
                "gso {gso}: each frame its own datagram, in order"
            );
            assert_eq!(text(&got_b), ["> six..", "> seven"], "gso {gso}");
        }
    }

    #[test]
    fn an_arena_fills_from_several_sockets_and_learns_each_sender() {
        let (r1, r2) = (bound(), bound());
        let (p1, p2) = (bound(), bound());
        p1.send_to(b"first", r1.local_addr().expect("addr"))
            .expect("send");
        p2.send_to(b"second", r2.local_addr().expect("addr"))
            .expect("send");
        let mut arena = Arena::new(4);
        arena_receive(&r1, &mut arena, 1);
        arena_receive(&r2, &mut arena, 2);
        assert_eq!(
            arena.datagram(0),
            (&b"first"[..], p1.local_addr().expect("a"))
        );
        assert_eq!(
            arena.datagram(1),
            (&b"second"[..], p2.local_addr().expect("a"))
        );
        assert_eq!(arena.free(), 2);
        arena.clear();
        assert_eq!((arena.len(), arena.free()), (0, 4));
        // A send through another sender does not disturb the arena's receive headers.
        let mut sender = Sender::new(false);
        let frames = [(0..4, p1.local_addr().expect("addr"))];
        assert_eq!(sender.send(r1.as_raw_fd(), b"ping", &frames), 1);
        p1.send_to(b"again", r1.local_addr().expect("addr"))
            .expect("send");
        arena_receive(&r1, &mut arena, 1);
        assert_eq!(
            arena.datagram(0),
            (&b"again"[..], p1.local_addr().expect("a"))
        );
    }

    #[test]
    fn a_long_train_is_split_and_every_datagram_arrives() {
        let relay = bound();
        if !gso_supported(relay.as_raw_fd()) {
            return;
        }
        let client = bound();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        // 64 frames of 1200 bytes: more than one train fits in 65,000 bytes.
        let mut buf = vec![0u8; 64 * 1200];
        for (k, chunk) in buf.chunks_mut(1200).enumerate() {
            chunk.fill(k as u8);
        }
        let to = client.local_addr().expect("addr");
        let frames: Vec<Frame> = (0..64).map(|k| (k * 1200..(k + 1) * 1200, to)).collect();
        let mut sender = Sender::new(true);
        assert_eq!(sender.send(relay.as_raw_fd(), &buf, &frames), 64);
        let mut got = [0u8; 2048];
        for k in 0..64 {
            let (n, _) = client.recv_from(&mut got).expect("a datagram within 5 s");
            assert_eq!(n, 1200);
            assert!(
                got[..n].iter().all(|&b| b == k as u8),
                "datagram {k} in order"
            );
        }
    }
}
