//! The call and room core shared by every transport: state machines and their rules as plain
//! types and functions, with time passed in (`call`, `switchboard`, `wire`, `event`), and the
//! [`service::Signaling`] shell that connects them to sessions and the store.

pub mod call;
pub mod event;
pub mod service;
pub mod switchboard;
pub mod wire;
