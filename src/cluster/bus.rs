//! The bus between nodes: each node reads its own inbox channel, and publishes a change to
//! the inboxes of the nodes where the users it concerns have sessions (looked up in the
//! presence registry). One publisher task per node keeps changes in the order they were made;
//! the subscriber reconnects with backoff when Redis goes away.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::RedisResult;
use tokio::sync::{mpsc, watch};

use crate::app::Signaling;
use crate::clock::now_ms;
use crate::cluster::{keys, Cluster, Outgoing, COMMAND_TIMEOUT};
use crate::signaling::remote::Envelope;

/// Changes taken from the queue into one pair of Redis round trips.
const BATCH: usize = 64;

/// The largest message a node accepts from the bus.
const MAX_MESSAGE: usize = 1 << 20;

/// Looks up the nodes of every message's users, then publishes each message to those nodes,
/// in order: two pipelined round trips for the whole batch.
async fn send_batch(cluster: &Cluster, batch: &[Outgoing]) -> RedisResult<usize> {
    let now = now_ms();
    let mut lookup = redis::pipe();
    for m in batch {
        for user in &m.users {
            lookup
                .cmd("ZRANGEBYSCORE")
                .arg(keys::presence(user))
                .arg(now)
                .arg("+inf");
        }
    }
    let found: Vec<Vec<String>> = cluster.query(&lookup).await?;
    let mut found = found.into_iter();
    let mut publish = redis::pipe();
    let mut sent = 0;
    for m in batch {
        let members: Vec<String> = found.by_ref().take(m.users.len()).flatten().collect();
        for node in keys::other_nodes(&cluster.node, members.iter()) {
            publish
                .cmd("PUBLISH")
                .arg(keys::inbox(&node))
                .arg(&m.payload)
                .ignore();
            sent += 1;
        }
    }
    if sent > 0 {
        cluster.query::<()>(&publish).await?;
    }
    Ok(sent)
}

/// Publishes queued changes until `stop`.
pub(crate) async fn publish(
    cluster: Arc<Cluster>,
    mut queue: mpsc::Receiver<Outgoing>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let first = tokio::select! {
            m = queue.recv() => m,
            _ = stop.changed() => return,
        };
        let Some(first) = first else { return };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match queue.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        // A batch Redis does not take (after one retry) is dropped and counted: local
        // sessions already got theirs.
        match send_batch(&cluster, &batch).await {
            Ok(sent) => {
                cluster
                    .counters
                    .sent
                    .fetch_add(sent as u64, Ordering::Relaxed);
            }
            Err(e) => {
                cluster
                    .counters
                    .dropped
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                tracing::debug!(error = %e, n = batch.len(), "cluster messages not published");
            }
        }
    }
}

/// One message from the inbox: parsed, checked, applied.
fn receive(cluster: &Cluster, app: &Arc<Signaling>, payload: &[u8]) {
    if payload.len() > MAX_MESSAGE {
        tracing::warn!(
            bytes = payload.len(),
            "an oversized cluster message was ignored"
        );
        return;
    }
    match serde_json::from_slice::<Envelope>(payload) {
        Ok(env) if env.node == cluster.node => {}
        Ok(env) => {
            cluster.counters.received.fetch_add(1, Ordering::Relaxed);
            app.apply_remote(&env.node, env.remote);
        }
        Err(e) => tracing::warn!(error = %e, "an unreadable cluster message was ignored"),
    }
}

/// Reads this node's inbox until `stop`, reconnecting with backoff (100 ms doubling to 5 s).
pub(crate) async fn subscribe(
    cluster: Arc<Cluster>,
    app: Arc<Signaling>,
    mut stop: watch::Receiver<bool>,
) {
    let channel = keys::inbox(&cluster.node);
    let mut backoff = Duration::from_millis(100);
    let mut failures = 0u32;
    loop {
        let connect = async {
            let mut pubsub = cluster.client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            RedisResult::Ok(pubsub)
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, connect).await {
            Ok(Ok(pubsub)) => {
                cluster.subscribed.store(true, Ordering::Relaxed);
                tracing::info!(node = %cluster.node, "cluster inbox subscribed");
                backoff = Duration::from_millis(100);
                failures = 0;
                let mut messages = pubsub.into_on_message();
                loop {
                    tokio::select! {
                        m = messages.next() => match m {
                            Some(m) => receive(&cluster, &app, m.get_payload_bytes()),
                            None => break,
                        },
                        _ = stop.changed() => return,
                    }
                }
                cluster.subscribed.store(false, Ordering::Relaxed);
                tracing::warn!("lost the Redis subscription; reconnecting");
            }
            Ok(Err(e)) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(error = %e, "cannot subscribe to Redis; retrying with backoff");
                }
            }
            Err(_) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!("subscribing to Redis timed out; retrying with backoff");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
