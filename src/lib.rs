//! signalbox: self-hosted video calls in one binary. The library holds every part; the
//! `signalbox` binary (main.rs) is the command line around it.
//!
//! Dependency direction: transports (`http`) → application layer (`app`) → pure core
//! (`signaling`) and `store`.

pub mod app;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod error;
pub mod host_addr;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod relay;
pub mod reload;
pub mod secrets;
pub mod server;
pub mod sfu;
pub mod signaling;
pub mod store;
pub mod tls;
pub mod views;
pub mod webhooks;
