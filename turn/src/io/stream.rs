//! One TCP or TLS client connection: frames read from the stream go through the core; a writer
//! task drains a bounded queue of replies and relayed frames. When the connection ends, so does
//! its allocation (RFC 8656 §3.1).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

use super::framing::{next_frame, Next};
use super::relay::{Binder, Target};
use super::shared::Shared;
use crate::core::{ClientOutput, FiveTuple, Now, Payload};
use crate::events::Transport;
use crate::stats::Stats;

/// Frames queued towards one client before newer ones are dropped.
const WRITE_QUEUE: usize = 1024;
/// Largest frame: a 64 KiB STUN body plus header, or ChannelData with padding.
const MAX_FRAME: usize = 65_535 + 20 + 4;

/// Serves a connected stream until it closes, errs, idles out or the server shuts down.
pub(crate) async fn serve<S>(
    shared: Arc<Shared>,
    stream: S,
    client: SocketAddr,
    server: SocketAddr,
    transport: Transport,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let tuple = FiveTuple {
        client,
        server,
        transport,
    };
    let (mut rd, wr) = tokio::io::split(stream);
    let (tx, rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    let writer = tokio::spawn(write_loop(wr, rx, transport != Transport::Tls));
    let mut shutdown = shared.shutdown.clone();
    let mut buf = vec![0u8; 2 * MAX_FRAME];
    let mut filled = 0usize;
    'conn: loop {
        let read = tokio::select! {
            r = tokio::time::timeout(shared.stream_idle_timeout, rd.read(&mut buf[filled..])) => r,
            _ = shutdown.changed() => break,
        };
        let n = match read {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => n,
            Err(_idle) => {
                if shared.core().relay_of(&tuple).is_some() {
                    continue;
                }
                break;
            }
        };
        filled += n;
        let mut start = 0;
        loop {
            match next_frame(&buf[start..filled]) {
                Next::Incomplete => break,
                Next::Invalid => {
                    Stats::add(&shared.stats.bad_packets, 1);
                    break 'conn;
                }
                Next::Frame(f) => {
                    let frame = start..start + f.len;
                    start += f.consumed;
                    if !handle(&shared, tuple, &buf[frame], &tx).await {
                        break 'conn;
                    }
                }
            }
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
    }
    let events = {
        let mut core = shared.core();
        core.close_tuple(tuple, Now::system());
        core.drain_events()
    };
    shared.dispatch(events);
    drop(tx);
    let _ = writer.await;
}

/// Runs one frame through the core; `false` when the connection should close.
async fn handle(
    shared: &Arc<Shared>,
    tuple: FiveTuple,
    frame: &[u8],
    tx: &mpsc::Sender<Vec<u8>>,
) -> bool {
    let (out, events) = {
        let mut core = shared.core();
        let mut binder = Binder {
            shared,
            target: Target::Stream(tx),
        };
        let out = core.handle_client(tuple, frame, Now::system(), &mut binder);
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
        ClientOutput::Nothing => true,
        ClientOutput::Reply(bytes) => tx.send(bytes).await.is_ok(),
        ClientOutput::Relay {
            relay,
            peer,
            payload,
        } => {
            let data = match &payload {
                Payload::Input(r) => &frame[r.clone()],
                Payload::Owned(v) => v.as_slice(),
            };
            if relay.socket.send_to(data, peer).is_err() {
                Stats::add(&shared.stats.dropped_packets, 1);
            }
            true
        }
    }
}

/// Writes queued frames. Over TCP, frames queued together go out in one write; over TLS each
/// frame is its own record, since some clients (coturn's) handle one message per TLS read.
async fn write_loop<W: AsyncWrite>(wr: W, mut rx: mpsc::Receiver<Vec<u8>>, coalesce: bool) {
    let mut wr = std::pin::pin!(BufWriter::with_capacity(64 * 1024, wr));
    while let Some(frame) = rx.recv().await {
        if wr.write_all(&frame).await.is_err() {
            return;
        }
        if coalesce {
            while let Ok(more) = rx.try_recv() {
                if wr.write_all(&more).await.is_err() {
                    return;
                }
            }
        }
        if wr.flush().await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}
