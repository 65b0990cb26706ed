//! What the SFU refuses, and why: each variant is a clear answer for the participant's signaling.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SfuError {
    /// The SDP text does not parse.
    #[error("the SDP could not be read: {0}")]
    BadSdp(String),
    /// The SDP parses but cannot be accepted (no media, no fingerprint, no common codec…).
    #[error("the SDP cannot be accepted: {0}")]
    Rejected(String),
    /// The participant is already in a room of this SFU.
    #[error("participant {0} has already joined")]
    AlreadyJoined(String),
    /// The participant is not (or no longer) known to the SFU.
    #[error("participant {0} is not in a room")]
    UnknownParticipant(String),
    /// An answer came while the SFU had no offer waiting for one (a stale or repeated answer).
    #[error("no offer of the SFU is waiting for an answer")]
    NoOfferPending,
    /// A trickled candidate does not parse.
    #[error("the ICE candidate could not be read: {0}")]
    BadRemoteCandidate(String),
    /// A configured local address cannot be a host candidate.
    #[error("local address {0} cannot be used as a candidate")]
    BadCandidate(String),
}
