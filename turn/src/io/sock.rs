//! A UDP socket registered with the reactor for readability only.
//!
//! `tokio::net::UdpSocket` registers every socket for both readable and writable events. On
//! Linux each datagram sent then raises an `EPOLLOUT` edge when its buffer is released
//! (`sock_wfree` → `sk_write_space`), which wakes a worker parked in `epoll_wait` for nothing:
//! one spurious wake-up and context switch per relayed packet. The relay never needs to wait
//! for writability (UDP sends either go out or are dropped, as any UDP relay does when the
//! kernel's send buffer is full), so its sockets are registered for `READABLE` only and sends
//! are plain non-blocking `sendto` calls.

use std::io;
use std::net::{SocketAddr, UdpSocket};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

#[derive(Debug)]
pub(crate) struct Udp {
    fd: AsyncFd<UdpSocket>,
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

    /// Receives one datagram, waiting for one if none is queued. Cancel safe.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        loop {
            let mut guard = self.fd.readable().await?;
            if let Ok(r) = guard.try_io(|s| s.get_ref().recv_from(buf)) {
                return r;
            }
        }
    }

    /// Sends one datagram without waiting: `WouldBlock` (send buffer full) is an error the
    /// caller counts as a dropped packet.
    pub fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.fd.get_ref().send_to(buf, to)
    }
}
