//! The IO shell around [`crate::core`]: relay shards (threads serving the UDP listener and
//! every relay socket), the TCP/TLS listeners on tokio, stream framing, and the shared handle
//! they all use.

pub(crate) mod framing;
pub(crate) mod relay;
pub(crate) mod shard;
pub(crate) mod shared;
pub(crate) mod sock;
pub(crate) mod stream;
pub(crate) mod tcp;
pub(crate) mod tls;
pub(crate) mod udp;
