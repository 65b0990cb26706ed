//! signalbox-turn: the STUN/TURN relay engine and TURN REST API credentials.
//!
//! Nothing here knows about the signalbox application: the app computes credentials with
//! [`credentials`], starts a [`TurnServer`] from a [`TurnConfig`], and receives
//! [`UsageEvent`]s. No webrtc-rs type appears in this public API.
//!
//! Layout: [`core`] is the sans-IO state machine (time passed in); `io` and `server` are the
//! tokio shell around it (UDP, TCP, TLS listeners, relay sockets, sweeping, shutdown).

pub mod config;
pub(crate) mod core;
pub mod credentials;
pub mod error;
pub mod events;
mod io;
pub mod nonce;
pub mod peer_policy;
mod server;
mod stats;

pub use config::TurnConfig;
pub use core::StateSize;
pub use error::TurnError;
pub use events::{Transport, Usage, UsageEvent};
pub use server::LocalAddrs;
pub use server::TurnServer;
pub use stats::StatsSnapshot;
