//! The node registry and user presence in Redis: every [`keys::BEAT`] a node renews its own
//! entry and the presence of every user it holds sessions for (all with TTLs, so a node that
//! dies simply ages out), removes the users that left, and reads which other nodes are alive.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use redis::RedisResult;
use tokio::sync::watch;

use crate::app::Signaling;
use crate::clock::now_ms;
use crate::cluster::{keys, Cluster, NodeInfo};

fn ttl_ms() -> u64 {
    u64::try_from(keys::ENTRY_TTL.as_millis()).unwrap_or(u64::MAX)
}

/// The nodes whose presence entry for `user` has not expired.
pub async fn nodes_of(cluster: &Cluster, user: &str) -> RedisResult<Vec<String>> {
    let mut p = redis::pipe();
    p.cmd("ZRANGEBYSCORE")
        .arg(keys::presence(user))
        .arg(now_ms())
        .arg("+inf");
    let (nodes,) = cluster.query(&p).await?;
    Ok(nodes)
}

/// Marks `user` present on this node now.
pub async fn announce(cluster: &Cluster, user: &str) -> RedisResult<()> {
    let key = keys::presence(user);
    let mut p = redis::pipe();
    p.cmd("ZADD")
        .arg(&key)
        .arg(keys::expiry(now_ms()))
        .arg(&cluster.node)
        .ignore()
        .cmd("PEXPIRE")
        .arg(&key)
        .arg(ttl_ms())
        .ignore();
    cluster.query(&p).await
}

/// One heartbeat: renews `me` and the presence of `users`, drops the presence of `gone`,
/// and returns the names of the live nodes and the entries of the others.
pub async fn beat(
    cluster: &Cluster,
    me: &NodeInfo,
    users: &[String],
    gone: &[String],
) -> RedisResult<(HashSet<String>, Vec<NodeInfo>)> {
    let now = now_ms();
    let expiry = keys::expiry(now);
    let info = serde_json::to_string(me).unwrap_or_default();
    let mut p = redis::pipe();
    p.cmd("ZADD")
        .arg(keys::NODES)
        .arg(expiry)
        .arg(&me.node)
        .ignore()
        .cmd("ZREMRANGEBYSCORE")
        .arg(keys::NODES)
        .arg("-inf")
        .arg(now)
        .ignore()
        .cmd("SET")
        .arg(keys::node_info(&me.node))
        .arg(info)
        .arg("PX")
        .arg(ttl_ms())
        .ignore();
    for user in users {
        let key = keys::presence(user);
        p.cmd("ZADD")
            .arg(&key)
            .arg(expiry)
            .arg(&me.node)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(now)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ttl_ms())
            .ignore();
    }
    for user in gone {
        p.cmd("ZREM")
            .arg(keys::presence(user))
            .arg(&me.node)
            .ignore();
    }
    p.cmd("ZRANGEBYSCORE").arg(keys::NODES).arg(now).arg("+inf");
    let (alive,): (Vec<String>,) = cluster.query(&p).await?;
    let others: Vec<&String> = alive.iter().filter(|n| **n != me.node).collect();
    let mut peers = Vec::new();
    if !others.is_empty() {
        let mut get = redis::pipe();
        get.cmd("MGET").arg(
            others
                .iter()
                .map(|n| keys::node_info(n))
                .collect::<Vec<_>>(),
        );
        let (entries,): (Vec<Option<String>>,) = cluster.query(&get).await?;
        for (name, entry) in others.iter().zip(entries) {
            let info = entry
                .and_then(|e| serde_json::from_str::<NodeInfo>(&e).ok())
                .filter(|i| i.node == **name);
            // A node whose entry is missing or unreadable is alive but offers no relays.
            peers.push(info.unwrap_or_else(|| NodeInfo {
                node: (*name).clone(),
                ..NodeInfo::default()
            }));
        }
    }
    peers.sort_by(|a, b| a.node.cmp(&b.node));
    Ok((alive.into_iter().collect(), peers))
}

/// Removes this node's entries at shutdown, so the others stop routing to it at once.
async fn depart(cluster: &Cluster, users: &[String]) -> RedisResult<()> {
    let mut p = redis::pipe();
    p.cmd("ZREM").arg(keys::NODES).arg(&cluster.node).ignore();
    p.cmd("DEL").arg(keys::node_info(&cluster.node)).ignore();
    for user in users {
        p.cmd("ZREM")
            .arg(keys::presence(user))
            .arg(&cluster.node)
            .ignore();
    }
    cluster.query(&p).await
}

/// Beats until `stop`, then departs.
pub async fn run(cluster: Arc<Cluster>, app: Arc<Signaling>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(keys::BEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut announced: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        let users = app.local_users();
        let now_set: HashSet<String> = users.iter().cloned().collect();
        let gone: Vec<String> = announced.difference(&now_set).cloned().collect();
        let me = cluster.view().me.clone();
        match beat(&cluster, &me, &users, &gone).await {
            Ok((alive, peers)) => {
                if !cluster.beating.swap(true, Ordering::Relaxed) {
                    tracing::info!(node = %cluster.node, nodes = alive.len(), "cluster heartbeat reaches Redis");
                }
                cluster.view().peers = peers;
                app.nodes_alive(&alive);
                announced = now_set;
            }
            Err(e) => {
                if cluster.beating.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "cluster heartbeat failed: Redis is away; serving local users only");
                }
            }
        }
    }
    let users: Vec<String> = announced.into_iter().collect();
    let _ = depart(&cluster, &users).await;
}
