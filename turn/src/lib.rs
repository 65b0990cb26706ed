//! signalbox-turn: the STUN/TURN relay engine and TURN REST API credentials.
//!
//! Nothing here knows about the signalbox application: the app computes credentials with
//! [`credentials`] and (once the relay exists) starts the server and receives its usage events.

pub mod credentials;
