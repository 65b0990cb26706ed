//! signalbox's selective forwarding unit for group rooms, sans-IO: every participant holds one
//! WebRTC session with the server (str0m, ICE-lite, DTLS-SRTP), and the SFU forwards each track a
//! participant publishes to every other participant of the same room — never to anyone else.
//!
//! Nothing here opens a socket or reads a clock. The caller feeds datagrams in
//! ([`Sfu::receive`]) with the time they arrived, drives timers ([`Sfu::handle_timeout`]), carries
//! SDP between participants and the SFU over its signaling, and sends what [`Sfu::poll_output`]
//! returns: datagrams to transmit, SDP offers for a participant (when tracks come and go), events,
//! and the next time the SFU wants to be woken. [`server`] is that edge for a UDP socket and an
//! ICE-TCP listener on the same port.

mod allocation;
mod error;
mod framing;
pub mod layers;
mod offer;
mod participant;
pub mod server;
mod sfu;
mod simulcast;
mod speaker;
mod tcp;

pub use error::SfuError;
pub use participant::ParticipantId;
pub use server::{start, HandleError, Notice, SfuHandle, Traffic};
pub use sfu::{
    Counters, LayerSample, Output, QualitySample, Sfu, SfuConfig, SfuEvent, TrackDirection,
    TrackStats, STATS_INTERVAL,
};
pub use str0m::media::MediaKind;
pub use str0m::net::{Protocol, Transmit};

/// Installs the crypto provider str0m uses (pure-Rust RustCrypto) as the process default. Call
/// once before the first [`Sfu`] is used; later calls do nothing.
pub fn init_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| str0m::crypto::from_feature_flags().install_process_default());
}

/// The start of a unit test's made-up timeline (the core itself never reads the clock).
#[cfg(test)]
#[allow(clippy::disallowed_methods)]
pub(crate) fn test_epoch() -> std::time::Instant {
    std::time::Instant::now()
}

#[cfg(test)]
mod layering {
    /// The core stays sans-IO: it names no socket, runtime or clock (clippy.toml keeps clock
    /// reads out as well); `server` is the edge that does the IO.
    #[test]
    fn the_core_names_no_io() {
        let files = [
            ("sfu.rs", include_str!("sfu.rs")),
            ("participant.rs", include_str!("participant.rs")),
            ("error.rs", include_str!("error.rs")),
            ("framing.rs", include_str!("framing.rs")),
            ("offer.rs", include_str!("offer.rs")),
            ("layers.rs", include_str!("layers.rs")),
            ("simulcast.rs", include_str!("simulcast.rs")),
            ("speaker.rs", include_str!("speaker.rs")),
            ("allocation.rs", include_str!("allocation.rs")),
        ];
        let banned = [
            "tokio",
            "UdpSocket",
            "TcpStream",
            "std::fs",
            "Instant::now",
            "crate::server",
        ];
        for (name, source) in files {
            for word in banned {
                assert!(
                    !source.contains(word),
                    "sfu/src/{name} names `{word}`: move that to the IO edge"
                );
            }
        }
    }
}
