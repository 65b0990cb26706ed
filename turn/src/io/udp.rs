//! The UDP client listener: one socket per relay shard, all on the listen address with
//! `SO_REUSEPORT`, so the kernel spreads clients over the shards and keeps each client on one
//! (its 4-tuple picks the socket). The shards read them ([`super::shard`]).
//!
//! With port 0 (tests) there is one socket, without `SO_REUSEPORT`: the kernel may hand a
//! port-0 bind with `SO_REUSEPORT` a port that another reuseport socket of the same user already
//! has, which would join two servers' listeners.

use std::net::SocketAddr;

use super::relay::new_udp_socket;
use crate::error::TurnError;

/// Binds `n` (at least one; one for port 0) listener sockets on `addr` with large buffers.
pub(crate) fn bind(
    addr: SocketAddr,
    buffer: usize,
    n: usize,
) -> Result<Vec<std::net::UdpSocket>, TurnError> {
    let n = if addr.port() == 0 { 1 } else { n.max(1) };
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        let bind_err = |source| TurnError::Bind { addr, source };
        let socket = new_udp_socket(addr, buffer).map_err(bind_err)?;
        if n > 1 {
            socket.set_reuse_port(true).map_err(bind_err)?;
        }
        socket.bind(&addr.into()).map_err(bind_err)?;
        sockets.push(socket.into());
    }
    Ok(sockets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    #[allow(clippy::disallowed_methods)] // a test waits for datagrams
    fn listener_sockets_share_one_port_and_each_client_stays_on_one() {
        // Below the kernel's ephemeral ports, apart from the other tests' (see relay.rs).
        let port = 30400;
        let sockets = bind(SocketAddr::from(([127, 0, 0, 1], port)), 1 << 16, 2).expect("bind");
        assert_eq!(sockets.len(), 2);
        assert_eq!(sockets[1].local_addr().expect("addr").port(), port);
        let single = bind("127.0.0.1:0".parse().expect("addr"), 1 << 16, 2).expect("bind");
        assert_eq!(single.len(), 1, "port 0: one socket, no SO_REUSEPORT");
        let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("client");
        for _ in 0..5 {
            client.send_to(b"x", ("127.0.0.1", port)).expect("send");
        }
        let mut counts = [0usize; 2];
        let mut buf = [0u8; 8];
        let deadline = Instant::now() + Duration::from_secs(5);
        while counts.iter().sum::<usize>() < 5 && Instant::now() < deadline {
            for (i, s) in sockets.iter().enumerate() {
                s.set_nonblocking(true).expect("nonblocking");
                while s.recv_from(&mut buf).is_ok() {
                    counts[i] += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(counts == [5, 0] || counts == [0, 5], "{counts:?}");
    }
}
