//! The call and room core shared by every transport: state machines and their rules as plain
//! types and functions, with time passed in. Sockets, timers and SQLite live around it.

pub mod call;
