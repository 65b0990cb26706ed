//! The tokio shell around [`crate::core`]: client listeners (UDP, TCP, TLS), relay sockets,
//! stream framing, and the shared handle they all use.

pub(crate) mod framing;
pub(crate) mod relay;
pub(crate) mod shared;
pub(crate) mod sock;
pub(crate) mod stream;
pub(crate) mod tcp;
pub(crate) mod tls;
pub(crate) mod udp;
