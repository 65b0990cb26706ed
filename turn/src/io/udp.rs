//! The UDP client listener: every datagram goes through the core; replies go back on the same
//! socket, relayed payloads out of the allocation's relay socket.

use std::net::SocketAddr;
use std::sync::Arc;

use super::relay::{new_udp_socket, Binder, SinkRef};
use super::shared::Shared;
use super::sock::{with_batch, Batch, Udp};
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
    loop {
        let guard = tokio::select! {
            r = socket.ready() => match r {
                Ok(g) => g,
                Err(_) => break, // the runtime is shutting down
            },
            _ = shutdown.changed() => break,
        };
        with_batch(|batch| {
            // An error is an ICMP port unreachable from an earlier reply, etc.
            if socket.recv_batch(guard, batch).is_ok() && batch.len() > 0 {
                handle_batch(&shared, &socket, local, batch);
            }
        });
    }
}

/// Runs a batch of client datagrams through the core under one lock, then sends what it
/// decided (replies on the listener, payloads out of relay sockets).
fn handle_batch(shared: &Arc<Shared>, socket: &Arc<Udp>, local: SocketAddr, batch: &Batch) {
    let now = Now::system();
    let mut outs = Vec::with_capacity(batch.len());
    let events = {
        let mut core = shared.core();
        for i in 0..batch.len() {
            let (data, from) = batch.datagram(i);
            let tuple = FiveTuple {
                client: from,
                server: local,
                transport: Transport::Udp,
            };
            let mut binder = Binder {
                shared,
                sink: SinkRef::Udp(socket, from),
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
    for (i, out) in outs.into_iter().enumerate() {
        let (data, from) = batch.datagram(i);
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
                    Payload::Input(r) => &data[r.clone()],
                    Payload::Owned(v) => v.as_slice(),
                };
                if relay.socket.send_to(data, peer).is_err() {
                    Stats::add(&shared.stats.dropped_packets, 1);
                }
            }
        }
    }
}
