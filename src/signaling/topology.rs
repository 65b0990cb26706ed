//! Which way a room's media flows: peer-to-peer (mesh) or through the SFU. The room's `mode` is
//! chosen at creation; the topology in force follows from it, the number of participants and the
//! policy (is there an SFU, from how many participants an `auto` room uses it). Pure decisions,
//! no clock: the switchboard keeps the time a downgrade is due.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// A room's mode, chosen at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoomMode {
    /// Peer-to-peer until `sfu_threshold` participants, then the SFU.
    #[default]
    Auto,
    /// Always peer-to-peer.
    Mesh,
    /// Always through the SFU (when the server runs one).
    Sfu,
}

impl RoomMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RoomMode::Auto => "auto",
            RoomMode::Mesh => "mesh",
            RoomMode::Sfu => "sfu",
        }
    }

    /// Parses a stored or requested mode; the error names `field`.
    pub fn parse(s: &str, field: &str) -> Result<RoomMode, Error> {
        match s {
            "auto" => Ok(RoomMode::Auto),
            "mesh" => Ok(RoomMode::Mesh),
            "sfu" => Ok(RoomMode::Sfu),
            _ => Err(Error::invalid(
                "invalid_field",
                format!("{field}: `{s}` must be auto, mesh or sfu"),
            )),
        }
    }
}

/// The topology in force in a live room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Topology {
    #[default]
    Mesh,
    Sfu,
}

impl Topology {
    pub fn as_str(self) -> &'static str {
        match self {
            Topology::Mesh => "mesh",
            Topology::Sfu => "sfu",
        }
    }
}

/// How the server decides topologies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopologyPolicy {
    /// Whether the server runs an SFU at all (`--no-sfu`: every room is mesh).
    pub sfu: bool,
    /// Participants from which an `auto` room uses the SFU.
    pub threshold: usize,
    /// How long an `auto` room stays on the SFU after dropping below the threshold.
    pub downgrade_delay: Duration,
}

impl Default for TopologyPolicy {
    fn default() -> Self {
        TopologyPolicy {
            sfu: false,
            threshold: 3,
            downgrade_delay: Duration::from_secs(5),
        }
    }
}

/// What a room with `count` participants should do, given its current topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Use this topology now.
    Now(Topology),
    /// Stay on the SFU for now, go mesh after the downgrade delay unless the count rises.
    DowngradeLater,
}

impl TopologyPolicy {
    /// The topology for `mode` with `count` participants when the room is on `current`.
    /// Moving to the SFU is immediate; moving back is delayed.
    pub fn decide(&self, mode: RoomMode, count: usize, current: Topology) -> Decision {
        let wanted = match (self.sfu, mode) {
            (false, _) | (true, RoomMode::Mesh) => Topology::Mesh,
            (true, RoomMode::Sfu) => Topology::Sfu,
            (true, RoomMode::Auto) if count >= self.threshold => Topology::Sfu,
            (true, RoomMode::Auto) => Topology::Mesh,
        };
        match (current, wanted) {
            // Down from the SFU in an auto room (someone left): not at once, and only while
            // there is someone left to talk to.
            (Topology::Sfu, Topology::Mesh) if mode == RoomMode::Auto && count > 0 => {
                Decision::DowngradeLater
            }
            _ => Decision::Now(wanted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> TopologyPolicy {
        TopologyPolicy {
            sfu: true,
            ..TopologyPolicy::default()
        }
    }

    #[test]
    fn auto_rooms_switch_at_the_threshold_and_come_back_later() {
        let p = policy();
        let now = |t| Decision::Now(t);
        assert_eq!(
            p.decide(RoomMode::Auto, 1, Topology::Mesh),
            now(Topology::Mesh)
        );
        assert_eq!(
            p.decide(RoomMode::Auto, 2, Topology::Mesh),
            now(Topology::Mesh)
        );
        assert_eq!(
            p.decide(RoomMode::Auto, 3, Topology::Mesh),
            now(Topology::Sfu)
        );
        assert_eq!(
            p.decide(RoomMode::Auto, 3, Topology::Sfu),
            now(Topology::Sfu)
        );
        assert_eq!(
            p.decide(RoomMode::Auto, 2, Topology::Sfu),
            Decision::DowngradeLater
        );
        assert_eq!(
            p.decide(RoomMode::Auto, 0, Topology::Sfu),
            now(Topology::Mesh)
        );
    }

    #[test]
    fn fixed_modes_and_no_sfu() {
        let p = policy();
        for n in [1, 2, 5] {
            assert_eq!(
                p.decide(RoomMode::Sfu, n, Topology::Mesh),
                Decision::Now(Topology::Sfu)
            );
            assert_eq!(
                p.decide(RoomMode::Mesh, n, Topology::Mesh),
                Decision::Now(Topology::Mesh)
            );
        }
        let off = TopologyPolicy::default();
        for mode in [RoomMode::Auto, RoomMode::Mesh, RoomMode::Sfu] {
            assert_eq!(
                off.decide(mode, 9, Topology::Mesh),
                Decision::Now(Topology::Mesh)
            );
        }
    }

    #[test]
    fn modes_parse_and_name_the_field() {
        assert_eq!(RoomMode::parse("sfu", "mode").ok(), Some(RoomMode::Sfu));
        let e = RoomMode::parse("star", "mode").expect_err("refused");
        assert!(e.to_string().contains("mode"), "{e}");
    }
}
