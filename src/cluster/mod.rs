//! Cluster mode (`redis_url`): several signalbox nodes share their live state through Redis.
//! This module owns the connection to Redis and the node's view of the cluster: its registry
//! entry and its users' presence ([`registry`], refreshed every [`keys::BEAT`] with TTLs), and
//! the bus that carries [`crate::signaling::remote::Remote`] changes to the nodes holding the
//! users they concern ([`bus`]), and the limits every node counts together ([`limits`]). Lasting state stays in the store (PostgreSQL in a cluster).
//! When Redis is away the node keeps serving its own users, says so in `/healthz` and
//! `/metrics`, and reconnects with backoff.

pub mod bus;
pub mod keys;
pub mod limits;
pub mod registry;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::signaling::remote::{Envelope, Remote};

/// How long one Redis command (or connection attempt) may take before it counts as failed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a failed Redis request waits before its one retry.
const RETRY_AFTER: Duration = Duration::from_millis(200);

/// Changes waiting for the bus before new ones are dropped (Redis is too slow or away).
const OUTGOING_CAPACITY: usize = 8192;

/// What a node publishes about itself in the registry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub node: String,
    /// STUN URIs of its relay (for `/ice-config` on the other nodes).
    pub stun: Vec<String>,
    /// TURN URIs of its relay.
    pub turn: Vec<String>,
}

/// A change for the bus: the users it concerns and the message.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub users: Vec<String>,
    pub payload: String,
}

#[derive(Debug, Default)]
struct View {
    /// The other live nodes, as the last heartbeat read them.
    peers: Vec<NodeInfo>,
    /// This node's own entry (set once its relay's ports are known).
    me: NodeInfo,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    received: AtomicU64,
    dropped: AtomicU64,
}

/// This node's membership of the cluster.
pub struct Cluster {
    node: String,
    client: redis::Client,
    conn: ConnectionManager,
    outgoing: mpsc::Sender<Outgoing>,
    outgoing_rx: Mutex<Option<mpsc::Receiver<Outgoing>>>,
    view: Mutex<View>,
    /// The inbox subscription is up.
    subscribed: AtomicBool,
    /// The last heartbeat reached Redis.
    beating: AtomicBool,
    counters: Counters,
}

impl Cluster {
    /// Prepares cluster mode as `node` on the Redis at `url`; nothing connects until the
    /// tasks start (see [`Cluster::start`]), so a node starts while Redis is away.
    pub fn new(url: &str, node: String) -> Result<Arc<Cluster>, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        let (outgoing, rx) = mpsc::channel(OUTGOING_CAPACITY);
        Ok(Arc::new(Cluster {
            view: Mutex::new(View {
                peers: Vec::new(),
                me: NodeInfo {
                    node: node.clone(),
                    ..NodeInfo::default()
                },
            }),
            node,
            client,
            conn,
            outgoing,
            outgoing_rx: Mutex::new(Some(rx)),
            subscribed: AtomicBool::new(false),
            beating: AtomicBool::new(false),
            counters: Counters::default(),
        }))
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    fn view(&self) -> MutexGuard<'_, View> {
        // Plain values replaced whole: a poisoned lock still holds a consistent view.
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the relays this node offers the others' clients.
    pub fn set_relays(&self, stun: Vec<String>, turn: Vec<String>) {
        let mut view = self.view();
        view.me.stun = stun;
        view.me.turn = turn;
    }

    /// The other live nodes, as of the last heartbeat.
    pub fn peers(&self) -> Vec<NodeInfo> {
        self.view().peers.clone()
    }

    /// Whether Redis answers: the inbox is subscribed and the last heartbeat went through.
    pub fn redis_up(&self) -> bool {
        self.subscribed.load(Ordering::Relaxed) && self.beating.load(Ordering::Relaxed)
    }

    /// Queues `remote` for the nodes holding sessions of `users`. Never blocks: when the bus
    /// is this far behind (Redis away), the change is dropped and counted; local sessions
    /// already got theirs.
    pub fn publish(&self, users: Vec<String>, remote: Remote) {
        let envelope = Envelope {
            node: self.node.clone(),
            remote,
        };
        let payload = match serde_json::to_string(&envelope) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "a cluster message did not serialize");
                return;
            }
        };
        if self.outgoing.try_send(Outgoing { users, payload }).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether `user` has sessions on another live node (one Redis round trip; `false` when
    /// Redis does not answer).
    pub async fn present_elsewhere(&self, user: &str) -> bool {
        match registry::nodes_of(self, user).await {
            Ok(nodes) => !keys::other_nodes(&self.node, nodes.iter()).is_empty(),
            Err(e) => {
                tracing::debug!(error = %e, "presence lookup failed");
                false
            }
        }
    }

    /// Starts the heartbeat, the inbox subscriber and the publisher; they end at `stop`.
    pub fn start(
        self: &Arc<Self>,
        app: Arc<crate::app::Signaling>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = vec![
            tokio::spawn(registry::run(self.clone(), app.clone(), stop.clone())),
            tokio::spawn(bus::subscribe(self.clone(), app, stop.clone())),
        ];
        let queue = self
            .outgoing_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(queue) = queue {
            tasks.push(tokio::spawn(bus::publish(self.clone(), queue, stop)));
        }
        tasks
    }

    /// Runs `pipe` against Redis, each try bounded by [`COMMAND_TIMEOUT`]. A failure is tried
    /// once more shortly after: the first request over a connection Redis dropped fails and
    /// makes the connection manager reconnect, so the retry reaches a Redis that is back.
    pub(crate) async fn query<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> redis::RedisResult<T> {
        let mut conn = self.conn.clone();
        match try_query(&mut conn, pipe).await {
            Ok(v) => Ok(v),
            Err(_) => {
                tokio::time::sleep(RETRY_AFTER).await;
                try_query(&mut conn, pipe).await
            }
        }
    }

    /// Records at once that `user` has a session here (the heartbeat keeps it fresh), so a
    /// call placed on another node right after this connection opened finds it.
    pub async fn announce(&self, user: &str) {
        if let Err(e) = registry::announce(self, user).await {
            tracing::debug!(error = %e, "presence announce failed");
        }
    }
}

/// `/metrics` for cluster mode.
#[derive(Debug)]
pub struct ClusterMetrics(pub Arc<Cluster>);

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("node", &self.node).finish()
    }
}

impl Collector for ClusterMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = &self.0;
        let up = ConstGauge::new(i64::from(c.redis_up()));
        up.encode(encoder.encode_descriptor(
            "cluster_redis_up",
            "1 while Redis answers (inbox subscribed, heartbeat through), else 0",
            None,
            up.metric_type(),
        )?)?;
        let nodes = ConstGauge::new(i64::try_from(c.peers().len() + 1).unwrap_or(i64::MAX));
        nodes.encode(encoder.encode_descriptor(
            "cluster_nodes",
            "Live nodes in the cluster, this one included",
            None,
            nodes.metric_type(),
        )?)?;
        let counters = [
            (
                "cluster_messages_sent",
                "Changes published to other nodes",
                &c.counters.sent,
            ),
            (
                "cluster_messages_received",
                "Changes received from other nodes",
                &c.counters.received,
            ),
            (
                "cluster_messages_dropped",
                "Changes not published because Redis was away or too slow",
                &c.counters.dropped,
            ),
        ];
        for (name, help, v) in counters {
            let counter = ConstCounter::new(v.load(Ordering::Relaxed));
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

async fn try_query<T: redis::FromRedisValue>(
    conn: &mut ConnectionManager,
    pipe: &redis::Pipeline,
) -> redis::RedisResult<T> {
    match tokio::time::timeout(COMMAND_TIMEOUT, pipe.query_async(conn)).await {
        Ok(result) => result,
        Err(_) => Err((redis::ErrorKind::Io, "Redis did not answer in time").into()),
    }
}
