//! The pure call and room core shared by every transport: state machines and their rules as
//! plain types and functions, with time passed in. No store, no sockets, no runtime, no clock:
//! the application layer ([`crate::app`]) applies its decisions.
//!
//! - [`call`]: statuses, end reasons and the one transition function;
//! - [`switchboard`]: who is connected where, ring deadlines, disconnect grace, room peers;
//! - [`topology`]: room modes and when a room's media goes through the SFU;
//! - [`wire`]: the one parser and validator of socket input (`/rtc` frames, Socket.IO events);
//! - [`event`]: a server-to-client event, independent of transport;
//! - [`remote`]: what a node tells the others about a live call in cluster mode.

pub mod call;
pub mod event;
pub mod remote;
pub mod switchboard;
pub mod topology;
pub mod wire;

#[cfg(test)]
mod layering {
    /// The core stays pure: it names no store, transport, runtime or clock (clippy.toml keeps
    /// clock reads out as well). The application layer in `crate::app` does the IO.
    #[test]
    fn the_core_names_no_io() {
        let files = [
            ("call.rs", include_str!("call.rs")),
            ("event.rs", include_str!("event.rs")),
            ("remote.rs", include_str!("remote.rs")),
            ("switchboard.rs", include_str!("switchboard.rs")),
            ("topology.rs", include_str!("topology.rs")),
            ("wire.rs", include_str!("wire.rs")),
        ];
        let banned = [
            "crate::store",
            "crate::http",
            "crate::app",
            "crate::clock",
            "crate::server",
            "tokio",
            "rusqlite",
            "std::net",
            "std::fs",
            "now_ms",
        ];
        for (name, source) in files {
            for word in banned {
                assert!(
                    !source.contains(word),
                    "signaling/{name} names `{word}`: move that to the application layer"
                );
            }
        }
    }
}
