//! signalbox-turn: the STUN/TURN relay engine and TURN REST API credentials.
//!
//! Nothing here knows about the signalbox application: the app mints credentials with
//! [`credentials::mint`], starts a [`TurnServer`] from a [`TurnConfig`], and receives
//! [`UsageEvent`]s. No webrtc-rs type appears in this public API.
//!
//! ```no_run
//! # async fn run() -> Result<(), signalbox_turn::TurnError> {
//! use signalbox_turn::config::RelayIp;
//! use signalbox_turn::{credentials, TurnConfig, TurnServer};
//!
//! let config = TurnConfig {
//!     // IPv4 relays bound on every address, advertised on the public one (1:1 NAT).
//!     relays: vec![RelayIp {
//!         bind: "0.0.0.0".parse().unwrap(),
//!         external: Some("203.0.113.10".parse().unwrap()),
//!     }],
//!     secrets: vec![b"shared secret".to_vec()],
//!     ..TurnConfig::default()
//! };
//! let (events_tx, mut events) = tokio::sync::mpsc::channel(1024);
//! let server = TurnServer::start(config, events_tx).await?;
//! tokio::spawn(async move {
//!     while let Some(event) = events.recv().await {
//!         println!("{event:?}"); // store for analytics, update metrics
//!     }
//! });
//! // For /ice-config: a credential valid for a day.
//! let cred = credentials::mint(b"shared secret", "alice", 1_700_000_000, 86_400);
//! println!("{} {}", cred.username, cred.password);
//! println!("{:?} {:?}", server.local_addrs(), server.stats());
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Layout: `core` is the sans-IO state machine (bytes and time in, answers and relay decisions
//! out); `io` and `server` are the tokio shell around it (UDP, TCP and TLS listeners, relay
//! sockets, sweeping, shutdown). [`peer_policy`] and [`nonce`] are pure helpers used by the
//! core. With the cargo feature `testing`, the `testing` module opens the core up for fuzz
//! targets and property tests.

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
#[cfg(feature = "testing")]
pub mod testing;

pub use config::TurnConfig;
pub use core::allocation::{DEFAULT_LIFETIME, MAX_LIFETIME};
pub use core::permissions::{CHANNEL_LIFETIME, PERMISSION_LIFETIME};
pub use core::StateSize;
pub use error::TurnError;
pub use events::{LiveAllocation, Transport, Usage, UsageEvent};
pub use server::{LocalAddrs, StreamIntake, TurnServer};
pub use stats::StatsSnapshot;
