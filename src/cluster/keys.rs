//! The Redis names cluster mode uses and the expiry arithmetic of its registries, sans-IO:
//! which keys hold the node registry and each user's presence, each node's inbox channel, and
//! which members of a registry are still alive at a given time.

use std::time::Duration;

/// How often a node refreshes its registry entry and its users' presence.
pub const BEAT: Duration = Duration::from_secs(1);

/// How long an entry lives without a refresh: a node missing this long counts as gone.
pub const ENTRY_TTL: Duration = Duration::from_secs(5);

/// The sorted set of live nodes (member: node name, score: expiry in Unix ms).
pub const NODES: &str = "signalbox:nodes";

/// A node's registry entry (its relays), a JSON string with a TTL.
pub fn node_info(node: &str) -> String {
    format!("signalbox:node:{node}")
}

/// The nodes holding sessions of `user` (member: node name, score: expiry in Unix ms).
pub fn presence(user: &str) -> String {
    format!("signalbox:presence:{user}")
}

/// The channel a node reads what other nodes send it.
pub fn inbox(node: &str) -> String {
    format!("signalbox:inbox:{node}")
}

/// The expiry score of an entry refreshed at `now_ms`.
pub fn expiry(now_ms: i64) -> i64 {
    now_ms.saturating_add(i64::try_from(ENTRY_TTL.as_millis()).unwrap_or(i64::MAX))
}

/// The nodes among `members` (from a presence set) other than `me`, without duplicates.
pub fn other_nodes<'a>(me: &str, members: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in members {
        if m != me && !out.contains(m) {
            out.push(m.clone());
        }
    }
    out
}

/// A random node name for a node started without `node_name`.
pub fn random_node_name() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("node-{}", &id[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_and_distinct() {
        assert_eq!(presence("alice"), "signalbox:presence:alice");
        assert_eq!(inbox("n1"), "signalbox:inbox:n1");
        assert_ne!(node_info("n1"), inbox("n1"));
        assert_eq!(expiry(1_000), 6_000);
        assert_eq!(expiry(i64::MAX), i64::MAX);
    }

    #[test]
    fn other_nodes_skip_me_and_duplicates() {
        let members = [
            "a".to_string(),
            "b".into(),
            "a".into(),
            "c".into(),
            "b".into(),
        ];
        assert_eq!(other_nodes("a", members.iter()), vec!["b", "c"]);
        assert!(other_nodes("a", ["a".to_string()].iter()).is_empty());
    }

    #[test]
    fn random_names_are_valid_node_names() {
        let a = random_node_name();
        assert_ne!(a, random_node_name());
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }
}
