//! The application layer's side of cluster mode: attaching a [`Cluster`], applying what other
//! nodes report to this node's switchboard, and the questions the heartbeat and the call
//! operations ask (who is here, is a user reachable anywhere).

use std::collections::HashSet;
use std::sync::Arc;

use crate::app::Signaling;
use crate::cluster::Cluster;
use crate::signaling::remote::Remote;

impl Signaling {
    /// Turns on cluster mode: call changes are relayed through `cluster` from now on.
    pub fn attach_cluster(&self, cluster: Arc<Cluster>) {
        self.board().set_node(cluster.node());
        let _ = self.cluster.set(cluster);
    }

    /// The cluster this node is part of, if any.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get()
    }

    /// Users with sessions on this node (connected or within their grace period).
    pub fn local_users(&self) -> Vec<String> {
        self.board().users()
    }

    /// The live nodes, from the registry: sides of calls on other nodes are lost or found.
    pub fn nodes_alive(&self, alive: &HashSet<String>) {
        self.board().nodes_alive(alive, crate::clock::monotonic());
    }

    /// What node `node` reported: delivered to this node's sessions.
    pub fn apply_remote(self: &Arc<Self>, node: &str, remote: Remote) {
        let outputs = self
            .board()
            .apply_remote(node, remote, crate::clock::monotonic());
        self.dispatch(outputs);
    }

    /// Whether `user` has a session here or, in a cluster, on another live node.
    pub(crate) async fn reachable_anywhere(&self, user: &str) -> bool {
        if self.board().reachable(user) {
            return true;
        }
        match self.cluster.get() {
            Some(c) => c.present_elsewhere(user).await,
            None => false,
        }
    }

    /// Records `user`'s presence here in the cluster before anything is read for its new
    /// session, so a call placed on another node from now on finds it.
    pub async fn announce(&self, user: &str) {
        if let Some(c) = self.cluster.get() {
            c.announce(user).await;
        }
    }
}
