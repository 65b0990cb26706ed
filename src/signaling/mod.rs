//! The pure call and room core shared by every transport: state machines and their rules as
//! plain types and functions, with time passed in. No store, no sockets, no runtime, no clock:
//! the application layer ([`crate::app`]) applies its decisions.
//!
//! - [`call`]: statuses, end reasons and the one transition function;
//! - [`switchboard`]: who is connected where, ring deadlines, disconnect grace, room peers;
//! - [`wire`]: the one parser and validator of socket input (`/rtc` frames, Socket.IO events);
//! - [`event`]: a server-to-client event, independent of transport.

pub mod call;
pub mod event;
pub mod switchboard;
pub mod wire;
