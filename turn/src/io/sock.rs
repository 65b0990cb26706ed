//! A UDP socket registered with the reactor for readability only, read in batches.
//!
//! `tokio::net::UdpSocket` registers every socket for both readable and writable events. On
//! Linux each datagram sent then raises an `EPOLLOUT` edge when its buffer is released
//! (`sock_wfree` → `sk_write_space`), which wakes a worker parked in `epoll_wait` for nothing:
//! one spurious wake-up and context switch per relayed packet. The relay never needs to wait
//! for writability (UDP sends either go out or are dropped, as any UDP relay does when the
//! kernel's send buffer is full), so its sockets are registered for `READABLE` only and sends
//! are plain non-blocking `sendto` calls.
//!
//! Reads take up to [`BATCH`] datagrams per `recvmmsg` into a per-thread [`Batch`], which the
//! caller processes without awaiting (one core lock per batch). A short batch means the queue
//! was empty, so readiness is cleared without the extra `EAGAIN` read; tokio only clears it if
//! no new edge arrived since it was observed, so no datagram is left waiting.
//!
//! Datagrams framed in place in a batch and bound for one address leave with one `sendmmsg`
//! ([`Udp::send_batch`]) instead of a `sendto` each.

use std::cell::RefCell;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::ops::Range;
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{
    recvmmsg, sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage,
};
use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use tokio::io::Interest;

/// Datagrams taken per `recvmmsg`.
pub(crate) const BATCH: usize = 16;
/// Room in front of each datagram for a Data indication header (IPv6 peer).
pub(crate) const HEADROOM: usize = 48;
/// Largest datagram received intact.
const MAX_DATAGRAM: usize = 65_536;
/// One slot: headroom, the datagram, and room for ChannelData padding.
pub(crate) const SLOT: usize = HEADROOM + MAX_DATAGRAM + 16;

#[derive(Debug)]
pub(crate) struct Udp {
    fd: AsyncFd<UdpSocket>,
}

/// Datagrams from one `recvmmsg`: datagram `i` is at `HEADROOM..HEADROOM + len` of slot `i`.
pub(crate) struct Batch {
    buf: Vec<u8>,
    headers: MultiHeaders<SockaddrStorage>,
    /// For `sendmmsg` only: nix's `recvmmsg` keeps each header's address pointer as it finds
    /// it, so headers a send pointed at its own (short-lived) addresses must never receive.
    send_headers: MultiHeaders<SockaddrStorage>,
    /// Slot, length and sender of each datagram kept (truncated ones are skipped).
    got: Vec<(usize, usize, SocketAddr)>,
}

thread_local! {
    static BATCH_BUF: RefCell<Option<Batch>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's batch buffer (allocated on first use; pages are only touched
/// as datagrams land in them). `f` must not await, nor call `with_batch` again.
pub(crate) fn with_batch<T>(f: impl FnOnce(&mut Batch) -> T) -> T {
    BATCH_BUF.with(|cell| {
        let mut slot = cell.borrow_mut();
        let batch = slot.get_or_insert_with(|| Batch {
            buf: vec![0u8; BATCH * SLOT],
            headers: MultiHeaders::preallocate(BATCH, None),
            send_headers: MultiHeaders::preallocate(BATCH, None),
            got: Vec::with_capacity(BATCH),
        });
        f(batch)
    })
}

impl Batch {
    /// Datagrams received by the last [`Udp::recv_batch`].
    pub fn len(&self) -> usize {
        self.got.len()
    }

    /// Datagram `i` (of [`Batch::len`]) and its sender.
    pub fn datagram(&self, i: usize) -> (&[u8], SocketAddr) {
        let (slot, len, from) = self.got[i];
        let start = slot * SLOT + HEADROOM;
        (&self.buf[start..start + len], from)
    }

    /// Slot `i` (datagram at `HEADROOM..HEADROOM + len`), its length and sender, for framing
    /// in place.
    pub fn slot_mut(&mut self, i: usize) -> (&mut [u8], usize, SocketAddr) {
        let (slot, len, from) = self.got[i];
        (&mut self.buf[slot * SLOT..(slot + 1) * SLOT], len, from)
    }
}

fn to_std(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

impl Udp {
    /// Registers a non-blocking std socket (must be called inside a tokio runtime).
    pub fn new(socket: UdpSocket) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        // Deprecated in tokio 1.54 in favour of the `unsafe` `register_with_interest`, because
        // a generic `T: AsRawFd` could close or swap its fd while registered. Here `T` is an
        // owned `std::net::UdpSocket` that is never exposed mutably, so its fd lives exactly
        // as long as the registration (the crate forbids `unsafe`).
        #[allow(deprecated)]
        let fd = AsyncFd::with_interest(socket, Interest::READABLE)?;
        Ok(Self { fd })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.fd.get_ref().local_addr()
    }

    /// Waits until the socket may have datagrams. Cancel safe.
    pub async fn ready(&self) -> io::Result<AsyncFdReadyGuard<'_, UdpSocket>> {
        self.fd.readable().await
    }

    /// Receives up to [`BATCH`] datagrams into `batch` (possibly none); clears readiness when
    /// the queue is drained. An error (e.g. an ICMP error from an earlier send) is not fatal.
    pub fn recv_batch(
        &self,
        mut guard: AsyncFdReadyGuard<'_, UdpSocket>,
        batch: &mut Batch,
    ) -> io::Result<()> {
        let Batch {
            buf, headers, got, ..
        } = batch;
        got.clear();
        let mut slots = buf.chunks_exact_mut(SLOT);
        let slices: [[IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| {
            [IoSliceMut::new(
                slots
                    .next()
                    .map(|s| &mut s[HEADROOM..HEADROOM + MAX_DATAGRAM])
                    .unwrap_or_default(),
            )]
        });
        let fd = self.fd.get_ref().as_raw_fd();
        match recvmmsg(fd, headers, slices.iter(), MsgFlags::MSG_DONTWAIT, None) {
            Ok(results) => {
                let mut received = 0;
                for (slot, r) in results.enumerate() {
                    received += 1;
                    let from = r.address.as_ref().and_then(to_std);
                    if let Some(from) = from {
                        if !r.flags.contains(MsgFlags::MSG_TRUNC) {
                            got.push((slot, r.bytes, from));
                        }
                    }
                }
                if received < BATCH {
                    guard.clear_ready();
                }
                Ok(())
            }
            Err(Errno::EAGAIN) => {
                guard.clear_ready();
                Ok(())
            }
            Err(e) => Err(io::Error::from(e)),
        }
    }

    /// Sends `frames` of `batch` (datagram index, byte range in its slot; at most [`BATCH`]) to
    /// `to`, as few `sendmmsg` calls as the kernel allows, without waiting. Returns how many
    /// went out: one that fails (send buffer full, an ICMP error of an earlier send) is
    /// skipped and the rest are still tried, as separate `sendto`s would be.
    pub fn send_batch(
        &self,
        batch: &mut Batch,
        frames: &[(usize, Range<usize>)],
        to: SocketAddr,
    ) -> usize {
        let Batch {
            buf,
            send_headers,
            got,
            ..
        } = batch;
        let frames = &frames[..frames.len().min(BATCH)];
        let slices: [[IoSlice<'_>; 1]; BATCH] = std::array::from_fn(|k| {
            let frame = frames.get(k).and_then(|(i, r)| {
                let base = got.get(*i)?.0 * SLOT;
                buf.get(base + r.start..base + r.end)
            });
            [IoSlice::new(frame.unwrap_or_default())]
        });
        let addrs: [Option<SockaddrStorage>; BATCH] = [Some(SockaddrStorage::from(to)); BATCH];
        let fd = self.fd.get_ref().as_raw_fd();
        let no_cmsgs: [ControlMessage<'_>; 0] = [];
        let (mut next, mut sent) = (0, 0);
        while next < frames.len() {
            let rest = next..frames.len();
            match sendmmsg(
                fd,
                send_headers,
                slices[rest.clone()].iter(),
                &addrs[rest],
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

    /// Sends one datagram without waiting: `WouldBlock` (send buffer full) is an error the
    /// caller counts as a dropped packet.
    pub fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.fd.get_ref().send_to(buf, to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_batch_goes_out_with_one_call_in_order_and_framed_in_place() {
        let relay = Udp::new(UdpSocket::bind("127.0.0.1:0").expect("bind")).expect("register");
        let peer = UdpSocket::bind("127.0.0.1:0").expect("bind peer");
        let client = UdpSocket::bind("127.0.0.1:0").expect("bind client");
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let to_relay = relay.local_addr().expect("addr");
        for text in ["one", "two", "three"] {
            peer.send_to(text.as_bytes(), to_relay).expect("send");
        }
        let mut sent = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while sent < 3 {
            let guard = tokio::time::timeout_at(deadline, relay.ready())
                .await
                .expect("the three datagrams reach the relay socket within 5 s")
                .expect("ready");
            sent += with_batch(|batch| {
                relay.recv_batch(guard, batch).expect("recv");
                // Frame each in place: a two-byte prefix in the headroom.
                let mut frames = Vec::new();
                for i in 0..batch.len() {
                    let (buf, n, _) = batch.slot_mut(i);
                    buf[HEADROOM - 2..HEADROOM].copy_from_slice(b"> ");
                    frames.push((i, HEADROOM - 2..HEADROOM + n));
                }
                relay.send_batch(batch, &frames, client.local_addr().expect("addr"))
            });
        }
        assert_eq!(sent, 3, "every framed datagram sent");
        let mut buf = [0u8; 64];
        let mut received = Vec::new();
        for _ in 0..3 {
            let (n, from) = client.recv_from(&mut buf).expect("a datagram within 5 s");
            assert_eq!(from, to_relay, "sent from the relay socket");
            received.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        assert_eq!(received, ["> one", "> two", "> three"]);
        // Receiving after a send still learns each sender's own address (the send's headers
        // are not the receive's).
        client.send_to(b"back", to_relay).expect("send");
        let guard = tokio::time::timeout_at(deadline, relay.ready())
            .await
            .expect("the client's datagram reaches the relay socket within 5 s")
            .expect("ready");
        let from = with_batch(|batch| {
            relay.recv_batch(guard, batch).expect("recv");
            (batch.len() == 1).then(|| batch.datagram(0).1)
        });
        assert_eq!(from, Some(client.local_addr().expect("addr")));
    }
}
