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

use std::cell::RefCell;
use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
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
        let Batch { buf, headers, got } = batch;
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

    /// Sends one datagram without waiting: `WouldBlock` (send buffer full) is an error the
    /// caller counts as a dropped packet.
    pub fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.fd.get_ref().send_to(buf, to)
    }
}
