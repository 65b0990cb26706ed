//! The application layer: the operations every transport needs (invite, accept, reject, hang
//! up, media state, stats, join/leave/delete a room, …), each of which persists through the
//! store and delivers to connected sessions through one [`Delivery`] interface. REST handlers,
//! `/rtc` and Socket.IO are thin transports over it: they parse, call one operation, and render
//! its result. The decisions themselves are made by the pure core in [`crate::signaling`]
//! (call transitions, the switchboard's routing); this layer applies them to the database and
//! the sessions, and owns the clock.
//!
//! An operation returns [`Done`]: its result and the deliveries it decided on. The deliveries
//! go out when the `Done` (or its [`Followups`]) is dropped, so a socket transport can answer
//! the sender first and a REST handler needs no code at all to notify the other side.

pub mod calls;
pub mod cluster;
pub mod delivery;
pub mod live;
pub mod requests;
pub mod rooms;
pub mod sfu;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{watch, Notify};

use crate::auth::Principal;
use crate::clock::now_ms;
use crate::error::Error;
use crate::signaling::call::Action;
use crate::signaling::event::Event;
use crate::signaling::switchboard::{Output, SessionId, Switchboard};
use crate::store::calls::CallRecord;
use crate::store::Store;
use crate::views;

pub use delivery::{Delivery, LocalDelivery, Outbox};

/// Where a request came from: a socket session (which then speaks for its user's side of the
/// call) or the REST API (no session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Session(SessionId),
    Rest,
}

impl Origin {
    pub fn session(self) -> Option<SessionId> {
        match self {
            Origin::Session(s) => Some(s),
            Origin::Rest => None,
        }
    }
}

/// Ringing calls past their timeout that one sweep ends at most (the rest wait a second).
const SWEEP_BATCH: u32 = 100;

/// Deliveries an operation decided on; carried out when this is dropped.
#[must_use = "deliveries go out when this is dropped: hold it until the sender was answered"]
pub struct Followups {
    app: Arc<Signaling>,
    outputs: Vec<Output>,
}

impl Followups {
    fn new(app: &Arc<Signaling>, outputs: Vec<Output>) -> Followups {
        Followups {
            app: app.clone(),
            outputs,
        }
    }

    fn extend(&mut self, more: Vec<Output>) {
        self.outputs.extend(more);
    }

    /// Takes over another operation's deliveries, after this one's.
    fn absorb(&mut self, mut other: Followups) {
        self.outputs.append(&mut other.outputs);
    }

    /// Carries the deliveries out now.
    pub fn send(self) {}
}

impl Drop for Followups {
    fn drop(&mut self) {
        let outputs = std::mem::take(&mut self.outputs);
        self.app.dispatch(outputs);
    }
}

/// An operation's result and its pending deliveries.
#[must_use = "deliveries go out when this is dropped"]
pub struct Done<T> {
    pub value: T,
    pub then: Followups,
}

impl<T> Done<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Done<U> {
        Done {
            value: f(self.value),
            then: self.then,
        }
    }
}

/// The shared application state of signaling: the switchboard (live routing) behind a mutex,
/// the delivery interface and the store.
pub struct Signaling {
    board: Mutex<Switchboard>,
    delivery: Arc<dyn Delivery>,
    store: Store,
    next_session: AtomicU64,
    ring_timeout: Duration,
    /// How long a lost connection (signaling, or a room peer's SFU media) is waited for.
    grace: Duration,
    /// The embedded SFU, once the server started one (see [`Signaling::attach_sfu`]).
    sfu: OnceLock<signalbox_sfu::SfuHandle>,
    /// Room peers whose SFU media connection failed, with the number of that failure: the peer
    /// leaves its room when the same failure is still there after the grace period.
    sfu_lost: Mutex<HashMap<String, u64>>,
    /// Numbers the SFU media failures (the values of `sfu_lost`).
    sfu_failures: AtomicU64,
    /// Who each open connection is and how it is connected (for the admin view).
    connections: Mutex<HashMap<SessionId, live::Connection>>,
    /// The webhook worker's nudge, when webhooks are on: operations write their events into
    /// the outbox, and this tells the worker to look at once instead of at its next poll.
    webhooks: OnceLock<Arc<Notify>>,
    /// Whether any webhook receiver is configured (see [`Signaling::set_webhooks_on`]).
    webhooks_on: std::sync::atomic::AtomicBool,
    /// Cluster mode, once attached (see [`Signaling::attach_cluster`]).
    cluster: OnceLock<Arc<crate::cluster::Cluster>>,
}

pub(crate) fn participants(call: &CallRecord) -> Vec<String> {
    call.participants
        .iter()
        .map(|p| p.user_id.clone())
        .collect()
}

impl Signaling {
    pub fn new(store: Store, ring_timeout: Duration, grace: Duration) -> Arc<Signaling> {
        Signaling::with_delivery(
            store,
            ring_timeout,
            grace,
            Arc::new(LocalDelivery::default()),
        )
    }

    pub fn with_delivery(
        store: Store,
        ring_timeout: Duration,
        grace: Duration,
        delivery: Arc<dyn Delivery>,
    ) -> Arc<Signaling> {
        Arc::new(Signaling {
            board: Mutex::new(Switchboard::new(ring_timeout, grace)),
            delivery,
            store,
            next_session: AtomicU64::new(1),
            ring_timeout,
            grace,
            sfu: OnceLock::new(),
            sfu_lost: Mutex::new(HashMap::new()),
            sfu_failures: AtomicU64::new(1),
            connections: Mutex::new(HashMap::new()),
            webhooks: OnceLock::new(),
            webhooks_on: std::sync::atomic::AtomicBool::new(false),
            cluster: OnceLock::new(),
        })
    }

    fn board(&self) -> MutexGuard<'_, Switchboard> {
        // A panic while holding the lock cannot leave the switchboard half-updated in a way
        // worse than refusing all signaling, so recover the guard.
        self.board.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn done<T>(self: &Arc<Self>, value: T, outputs: Vec<Output>) -> Done<T> {
        Done {
            value,
            then: Followups::new(self, outputs),
        }
    }

    /// Connected sessions (for metrics and tests).
    pub fn session_count(&self) -> usize {
        self.delivery.count()
    }

    /// Registers a new connection of `me` over `transport` (`rtc`, `socketio`); events for it
    /// arrive on the outbox.
    pub fn open_session(&self, me: &Principal, transport: &'static str) -> (SessionId, Outbox) {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let outbox = self.delivery.open(id);
        self.connections_lock().insert(
            id,
            live::Connection {
                name: me.name.clone(),
                transport,
                connected_at: now_ms(),
            },
        );
        self.board().connect(id, &me.id);
        (id, outbox)
    }

    fn connections_lock(&self) -> MutexGuard<'_, HashMap<SessionId, live::Connection>> {
        // Plain bookkeeping: a panic elsewhere cannot leave it inconsistent.
        self.connections.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `welcome` event: who you are and your ringing or active calls.
    pub async fn welcome(&self, session: SessionId, me: &Principal) -> Result<Event, Error> {
        self.announce(&me.id).await;
        let live = self.store.live_calls_for(&me.id).await?;
        let now = now_ms();
        Ok(Event::new(
            "welcome",
            json!({
                "userId": me.id,
                "sessionId": session.to_string(),
                "activeCalls": live.iter().map(|c| views::call_session(c, now)).collect::<Vec<_>>(),
            }),
        ))
    }

    /// The connection is gone: rooms are left now, calls after the grace period.
    pub fn close_session(self: &Arc<Self>, session: SessionId) {
        self.delivery.close(session);
        self.connections_lock().remove(&session);
        let outputs = self.board().disconnect(session, crate::clock::monotonic());
        self.dispatch(outputs);
    }

    /// Makes every operation nudge the webhook worker (see [`crate::webhooks::worker`]) while
    /// webhooks are on.
    pub fn attach_webhooks(&self, wake: Arc<Notify>) {
        let _ = self.webhooks.set(wake);
    }

    /// Whether webhook receivers are configured: without any, operations write no events and
    /// the worker is not nudged (a config reload turns them on and off).
    pub fn set_webhooks_on(&self, on: bool) {
        self.webhooks_on.store(on, Ordering::Relaxed);
    }

    /// Carries out switchboard outputs: deliveries now, persistence in the background.
    fn dispatch(self: &Arc<Self>, outputs: Vec<Output>) {
        // Every operation's changes (and so its webhook events) are committed by now.
        if self.webhooks_on.load(Ordering::Relaxed) {
            if let Some(wake) = self.webhooks.get() {
                wake.notify_one();
            }
        }
        for output in outputs {
            match output {
                Output::Deliver { to, event } => self.delivery.deliver(to, event),
                Output::Expire { call_id, action } => {
                    let this = self.clone();
                    tokio::spawn(async move { this.expire(call_id, action).await });
                }
                Output::SfuLeave { peer_id } => self.sfu_forget(peer_id),
                Output::Relay { users, remote } => {
                    if let Some(cluster) = self.cluster.get() {
                        cluster.publish(users, remote);
                    }
                }
                Output::RoomLeft { room_id, user } => {
                    let this = self.clone();
                    tokio::spawn(async move {
                        match this.leave_room_as(user, &room_id).await {
                            Ok(()) | Err(Error::Conflict { .. } | Error::NotFound(_)) => {}
                            Err(e) => tracing::warn!(error = %e, "persisting a room leave failed"),
                        }
                    });
                }
            }
        }
    }

    /// Ends a call for a server reason (ring timeout, disconnect grace).
    async fn expire(self: Arc<Self>, call_id: String, action: Action) {
        let now = now_ms();
        let result = self
            .store
            .apply_call_action(&call_id, None, action, now)
            .await;
        let outputs = match result {
            Ok((call, t)) => {
                let reason = t.reason.map(|r| r.as_str()).unwrap_or("hangup");
                tracing::info!(call = %call.id, %reason, "call ended by the server");
                self.board()
                    .ended(&call.id, &participants(&call), reason, None)
            }
            // Already answered or ended meanwhile: just forget the live state.
            Err(_) => self.board().ended(&call_id, &[], "", None),
        };
        self.dispatch(outputs);
    }

    /// Runs time-driven work every second until `stop`: ring deadlines, disconnect grace, and
    /// ringing calls in the database older than the ring timeout (e.g. created over REST).
    pub async fn run_timers(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let timeout_ms = i64::try_from(self.ring_timeout.as_millis()).unwrap_or(i64::MAX);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let outputs = self.board().tick(crate::clock::monotonic());
            self.dispatch(outputs);
            // Every node sweeps; each due call is claimed by exactly one of them (on
            // PostgreSQL with FOR UPDATE SKIP LOCKED), which then tells its users, wherever
            // they are connected.
            let now = now_ms();
            match self
                .store
                .expire_ringing_before(now - timeout_ms, now, SWEEP_BATCH)
                .await
            {
                Ok(ended) => {
                    for (call, t) in ended {
                        let reason = t.reason.map(|r| r.as_str()).unwrap_or("timeout");
                        tracing::info!(call = %call.id, %reason, "ringing call swept");
                        let outputs =
                            self.board()
                                .ended(&call.id, &participants(&call), reason, None);
                        self.dispatch(outputs);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "ring timeout sweep failed"),
            }
        }
    }
}

#[cfg(test)]
mod webhook_nudge_tests {
    use super::*;
    use crate::signaling::wire::Request;

    /// Whether `wake` holds a notification, without waiting for one.
    async fn nudged(wake: &Notify) -> bool {
        tokio::time::timeout(Duration::from_millis(10), wake.notified())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn operations_nudge_the_webhook_worker_only_while_webhooks_are_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let app = Signaling::new(store, Duration::from_secs(45), Duration::from_secs(20));
        let wake = Arc::new(Notify::new());
        app.attach_webhooks(wake.clone());
        let me = Principal {
            id: "alice".into(),
            name: None,
            admin: false,
        };
        let (session, _outbox) = app.open_session(&me, "rtc");
        // Off (no receivers configured): a message costs the worker nothing.
        drop(app.handle(session, &me, Request::Ping).await.expect("pong"));
        assert!(!nudged(&wake).await, "no nudge without webhook receivers");
        app.set_webhooks_on(true);
        drop(app.handle(session, &me, Request::Ping).await.expect("pong"));
        assert!(nudged(&wake).await, "a nudge once receivers are configured");
    }
}
