//! How events reach connected sessions: one small interface ([`Delivery`]) between the
//! application layer and the transports. On one node it is [`LocalDelivery`], a bounded outbox
//! per session that the session's connection task drains; a cluster mode can put an
//! implementation here that also reaches sessions on other nodes, without touching the core.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

use crate::signaling::event::Event;
use crate::signaling::switchboard::SessionId;

/// Events a session may have queued before it counts as stuck and is disconnected.
pub const OUTBOX_CAPACITY: usize = 1024;

/// What a connection task reads its events from. It ends (`recv` gives `None`) when the
/// application layer gave up on the session: its outbox overflowed, or it was closed.
pub type Outbox = mpsc::Receiver<Arc<Event>>;

/// Delivers events to sessions.
pub trait Delivery: Send + Sync {
    /// Registers a session; its events arrive on the returned outbox.
    fn open(&self, session: SessionId) -> Outbox;
    /// Forgets a session (its connection is gone).
    fn close(&self, session: SessionId);
    /// Queues `event` for `to`. Never blocks: a session that does not drain its outbox is
    /// dropped rather than making the server buffer without bound.
    fn deliver(&self, to: SessionId, event: Arc<Event>);
    /// Sessions currently registered.
    fn count(&self) -> usize;
}

/// Outboxes of the sessions connected to this process.
pub struct LocalDelivery {
    outboxes: Mutex<HashMap<SessionId, mpsc::Sender<Arc<Event>>>>,
    capacity: usize,
}

impl LocalDelivery {
    pub fn new(capacity: usize) -> LocalDelivery {
        LocalDelivery {
            outboxes: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    fn outboxes(&self) -> MutexGuard<'_, HashMap<SessionId, mpsc::Sender<Arc<Event>>>> {
        // Every critical section here is a single map operation: a poisoned lock holds a
        // consistent map, so recover it.
        self.outboxes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Default for LocalDelivery {
    fn default() -> Self {
        LocalDelivery::new(OUTBOX_CAPACITY)
    }
}

impl Delivery for LocalDelivery {
    fn open(&self, session: SessionId) -> Outbox {
        let (tx, rx) = mpsc::channel(self.capacity);
        self.outboxes().insert(session, tx);
        rx
    }

    fn close(&self, session: SessionId) {
        self.outboxes().remove(&session);
    }

    fn deliver(&self, to: SessionId, event: Arc<Event>) {
        let mut outboxes = self.outboxes();
        let Some(tx) = outboxes.get(&to) else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(event) {
            // Closing the outbox ends the connection: the client learns it was too slow
            // instead of silently missing events.
            tracing::warn!(session = to, "outbox full; disconnecting a stuck client");
            outboxes.remove(&to);
        }
    }

    fn count(&self) -> usize {
        self.outboxes().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn delivers_in_order_and_drops_a_stuck_session() {
        let d = LocalDelivery::new(2);
        let mut rx = d.open(1);
        let e = |n: i64| Arc::new(Event::new("ping", json!({ "n": n })));
        d.deliver(1, e(1));
        d.deliver(1, e(2));
        assert_eq!(d.count(), 1);
        // The third event does not fit: the session is dropped, its outbox ends after what
        // was queued.
        d.deliver(1, e(3));
        assert_eq!(d.count(), 0);
        assert_eq!(rx.recv().await.map(|e| e.body["n"].clone()), Some(json!(1)));
        assert_eq!(rx.recv().await.map(|e| e.body["n"].clone()), Some(json!(2)));
        assert!(rx.recv().await.is_none());
        // Unknown sessions are ignored.
        d.deliver(9, e(4));
    }
}
