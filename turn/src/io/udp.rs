//! The UDP client listener: every datagram goes through the core; replies go back on the same
//! socket, relayed payloads out of the allocation's relay socket.

use std::net::SocketAddr;
use std::sync::Arc;

use super::relay::{new_udp_socket, Binder, SinkRef};
use super::shared::Shared;
use super::sock::Udp;
use crate::core::{ClientOutput, FiveTuple, Now, Payload};
use crate::error::TurnError;
use crate::events::Transport;
use crate::stats::Stats;

/// Binds the UDP listener with large socket buffers.
pub(crate) fn bind(addr: SocketAddr, buffer: usize) -> Result<Udp, TurnError> {
    let bind_err = |source| TurnError::Bind { addr, source };
    let socket = new_udp_socket(addr, buffer).map_err(bind_err)?;
    socket.bind(&addr.into()).map_err(bind_err)?;
    Udp::new(socket.into()).map_err(bind_err)
}

/// Serves one UDP listener until shutdown.
pub(crate) async fn serve(shared: Arc<Shared>, socket: Arc<Udp>) {
    let Ok(local) = socket.local_addr() else {
        return;
    };
    let mut shutdown = shared.shutdown.clone();
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(_) => continue, // ICMP port unreachable from an earlier reply, etc.
            },
            _ = shutdown.changed() => break,
        };
        let tuple = FiveTuple {
            client: from,
            server: local,
            transport: Transport::Udp,
        };
        let (out, events) = {
            let mut core = shared.core();
            let mut binder = Binder {
                shared: &shared,
                sink: SinkRef::Udp(&socket, from),
            };
            let out = core.handle_client(tuple, &buf[..n], Now::system(), &mut binder);
            let events = if core.has_events() {
                core.drain_events()
            } else {
                Vec::new()
            };
            (out, events)
        };
        if !events.is_empty() {
            shared.dispatch(events);
        }
        match out {
            ClientOutput::Nothing => {}
            ClientOutput::Reply(bytes) => {
                let _ = socket.send_to(&bytes, from);
            }
            ClientOutput::Relay {
                relay,
                peer,
                payload,
            } => {
                let data = match &payload {
                    Payload::Input(r) => &buf[r.clone()],
                    Payload::Owned(v) => v.as_slice(),
                };
                if relay.socket.send_to(data, peer).is_err() {
                    Stats::add(&shared.stats.dropped_packets, 1);
                }
            }
        }
    }
}
