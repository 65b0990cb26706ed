//! Simulcast on both sides of the SFU: what each layer of a published track carries (its bitrate
//! and picture width, measured as frames arrive), and, per subscriber track, which layer is
//! forwarded — a switch is made only on a keyframe of the new layer, and the RTP timestamps of
//! the forwarded frames continue across the switch (each layer has a timeline of its own).

use std::time::{Duration, Instant};

use str0m::media::{MediaTime, Rid};

use crate::layers::{Choice, LayerInfo};

/// The window over which a layer's bitrate is measured.
const RATE_WINDOW: Duration = Duration::from_secs(1);
/// A layer that sent nothing for this long is taken as stopped by its publisher.
pub const LAYER_STALE: Duration = Duration::from_secs(2);
/// What a layer is taken to carry before it has been measured, by its rank from the lowest
/// (a browser's usual quarter, half and full resolution).
const NOMINAL_BPS: [u64; 3] = [100_000, 300_000, 900_000];
/// A forwarded video track that got no frame for this long froze (counted once per gap).
pub const FREEZE_GAP: Duration = Duration::from_millis(700);

/// One layer (one rid, or the only stream of a track without simulcast) of a published track.
#[derive(Debug, Clone)]
pub struct LayerIn {
    pub rid: Option<Rid>,
    /// Bits per second over the last whole window, once one has passed.
    pub bitrate_bps: Option<u64>,
    pub width: Option<u32>,
    pub last_frame: Instant,
    window_start: Instant,
    window_bytes: u64,
    /// When a keyframe of this layer was last asked for.
    pub last_keyframe_request: Option<Instant>,
    /// What the SFU last told the publisher: whether someone receives this layer.
    pub wanted: Option<bool>,
}

impl LayerIn {
    pub fn new(rid: Option<Rid>, now: Instant) -> Self {
        LayerIn {
            rid,
            bitrate_bps: None,
            width: None,
            last_frame: now,
            window_start: now,
            window_bytes: 0,
            last_keyframe_request: None,
            wanted: None,
        }
    }

    /// A frame of `bytes` arrived at `now`; `width` when it is a keyframe that says.
    pub fn observe(&mut self, now: Instant, bytes: usize, width: Option<u32>) {
        self.last_frame = now;
        self.window_bytes += bytes as u64;
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= RATE_WINDOW {
            let bps = self.window_bytes as f64 * 8.0 / elapsed.as_secs_f64();
            self.bitrate_bps = Some(bps as u64);
            self.window_start = now;
            self.window_bytes = 0;
        }
        if width.is_some() {
            self.width = width;
        }
    }

    /// Whether the publisher still sends it, or it is off because the SFU said nobody wants it
    /// (then it comes back when asked for).
    pub fn available(&self, now: Instant) -> bool {
        self.wanted == Some(false) || now.saturating_duration_since(self.last_frame) < LAYER_STALE
    }
}

/// The layers of a track that can be chosen, lowest first (by width where every layer's is
/// known, else by bitrate), with what each is taken to cost.
pub fn ranked(layers: &[LayerIn], now: Instant) -> Vec<(Option<Rid>, LayerInfo)> {
    let mut live: Vec<&LayerIn> = layers.iter().filter(|l| l.available(now)).collect();
    if live.iter().all(|l| l.width.is_some()) {
        live.sort_by_key(|l| (l.width, l.bitrate_bps));
    } else {
        live.sort_by_key(|l| l.bitrate_bps);
    }
    let n = live.len();
    live.iter()
        .enumerate()
        .map(|(rank, l)| {
            // A single stream is taken as a middle one until measured.
            let nominal = match n {
                1 => NOMINAL_BPS[1],
                _ => NOMINAL_BPS[(NOMINAL_BPS.len() + rank).saturating_sub(n).min(2)],
            };
            let info = LayerInfo {
                bitrate_bps: l.bitrate_bps.filter(|b| *b > 0).unwrap_or(nominal),
                width: l.width,
            };
            (l.rid, info)
        })
        .collect()
}

/// The picture width a VP8 keyframe carries (RFC 6386 §9.1: a 3-byte frame tag whose lowest
/// bit is 0 for a keyframe, the start code 9d 01 2a, then 14 bits of width).
pub fn vp8_keyframe_width(frame: &[u8]) -> Option<u32> {
    match frame {
        [tag, _, _, 0x9d, 0x01, 0x2a, w0, w1, ..] if tag & 1 == 0 => {
            Some(u32::from(u16::from_le_bytes([*w0, *w1]) & 0x3fff))
        }
        _ => None,
    }
}

/// Which layer one subscriber track is sent, and how its timestamps continue.
#[derive(Debug, Clone, Default)]
pub struct Forwarding {
    /// What the allocation chose (`None` until the first one: the lowest layer is taken).
    pub target: Option<Target>,
    /// The layer being forwarded, once a keyframe of it started it.
    pub current: Option<Option<Rid>>,
    /// Added to a frame's RTP time on the layer being forwarded.
    offset: i64,
    /// The last frame forwarded: its RTP time out and when it arrived.
    last: Option<(u64, Instant)>,
    /// Times the track went [`FREEZE_GAP`] without a frame while it was being sent.
    pub freezes: u64,
}

/// What the allocation chose for a track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub choice: Choice,
    /// The layer `choice` names (`None` inside: the track has no rids); unused when paused.
    pub rid: Option<Rid>,
}

/// What to do with a frame of the published track for one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write it, with this RTP time.
    Forward(MediaTime),
    /// Not for this subscriber (another layer, or paused).
    Skip,
    /// Not yet: the wanted layer needs a keyframe first (ask the publisher for one).
    NeedKeyframe(Option<Rid>),
}

impl Forwarding {
    /// The layer wanted now: the target, or the lowest before any allocation.
    fn wanted(&self, lowest: Option<Rid>) -> Option<Option<Rid>> {
        match self.target {
            None => Some(lowest),
            Some(Target {
                choice: Choice::Paused,
                ..
            }) => None,
            Some(t) => Some(t.rid),
        }
    }

    /// A frame of layer `rid` arrived (`lowest`: the track's lowest layer now).
    pub fn on_frame(
        &mut self,
        rid: Option<Rid>,
        lowest: Option<Rid>,
        keyframe: bool,
        time: MediaTime,
        arrived: Instant,
    ) -> Verdict {
        let Some(wanted) = self.wanted(lowest) else {
            self.current = None;
            return Verdict::Skip;
        };
        if rid != wanted {
            // Another layer: forwarded only while it is the one being sent, until the wanted
            // layer's keyframe takes over.
            if self.current == Some(rid) {
                return Verdict::Forward(self.stamp(time, arrived));
            }
            return Verdict::Skip;
        }
        if self.current == Some(rid) {
            return Verdict::Forward(self.stamp(time, arrived));
        }
        if !keyframe {
            return Verdict::NeedKeyframe(wanted);
        }
        // Switch: the new layer's timeline starts where the old one would be now.
        let next = match self.last {
            Some((out, at)) => {
                let ticks =
                    arrived.saturating_duration_since(at).as_secs_f64() * f64::from(time.denom());
                out.wrapping_add((ticks as u64).max(1))
            }
            None => time.numer(),
        };
        self.offset = next as i64 - time.numer() as i64;
        self.current = Some(rid);
        Verdict::Forward(self.stamp(time, arrived))
    }

    fn stamp(&mut self, time: MediaTime, arrived: Instant) -> MediaTime {
        let out = (time.numer() as i64).wrapping_add(self.offset) as u64;
        if let Some((_, at)) = self.last {
            if arrived.saturating_duration_since(at) >= FREEZE_GAP {
                self.freezes += 1;
            }
        }
        self.last = Some((out, arrived));
        MediaTime::new(out, time.frequency())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rid(s: &str) -> Option<Rid> {
        Some(Rid::from(s))
    }

    fn t90(n: u64) -> MediaTime {
        MediaTime::from_90khz(n)
    }

    #[test]
    fn a_vp8_keyframe_says_its_width() {
        let key = [0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01];
        assert_eq!(vp8_keyframe_width(&key), Some(640));
        let mut inter = key;
        inter[0] |= 1;
        assert_eq!(vp8_keyframe_width(&inter), None);
        assert_eq!(vp8_keyframe_width(&[0x10, 0x02]), None);
    }

    #[test]
    fn layers_are_measured_and_ranked_by_width() {
        let t0 = crate::test_epoch();
        let mut f = LayerIn::new(rid("f"), t0);
        let mut q = LayerIn::new(rid("q"), t0);
        for i in 1..=30u64 {
            let at = t0 + Duration::from_millis(40 * i);
            f.observe(at, 3_000, (i == 1).then_some(640));
            q.observe(at, 400, (i == 1).then_some(160));
        }
        // 25 frames of 3000 B in the first second: ~600 kbit/s.
        let fb = f.bitrate_bps.expect("measured");
        assert!((550_000..=650_000).contains(&fb), "{fb}");
        let now = t0 + Duration::from_millis(1200);
        let r = ranked(&[f.clone(), q.clone()], now);
        assert_eq!(
            r.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
            [rid("q"), rid("f")]
        );
        assert_eq!(r[1].1.width, Some(640));
        // A layer its publisher stopped is not offered, unless the SFU itself turned it off.
        let later = now + LAYER_STALE;
        assert!(ranked(&[f.clone()], later).is_empty());
        f.wanted = Some(false);
        assert_eq!(ranked(&[f], later).len(), 1);
    }

    #[test]
    fn unmeasured_layers_cost_their_nominal_rate_by_rank() {
        let t0 = crate::test_epoch();
        let layers = [LayerIn::new(rid("a"), t0), LayerIn::new(rid("b"), t0)];
        let r = ranked(&layers, t0);
        assert_eq!(r[0].1.bitrate_bps, NOMINAL_BPS[1]);
        assert_eq!(r[1].1.bitrate_bps, NOMINAL_BPS[2]);
    }

    #[test]
    fn a_switch_waits_for_a_keyframe_of_the_new_layer_and_timestamps_continue() {
        let t0 = crate::test_epoch();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut fw = Forwarding::default();
        // Before any allocation: the lowest layer, from its first keyframe.
        assert_eq!(
            fw.on_frame(rid("q"), rid("q"), false, t90(1000), at(0)),
            Verdict::NeedKeyframe(rid("q"))
        );
        assert_eq!(
            fw.on_frame(rid("f"), rid("q"), true, t90(50_000), at(0)),
            Verdict::Skip
        );
        assert_eq!(
            fw.on_frame(rid("q"), rid("q"), true, t90(4000), at(33)),
            Verdict::Forward(t90(4000))
        );
        // Upgrade chosen: q keeps flowing until f's keyframe.
        fw.target = Some(Target {
            choice: Choice::Layer(1),
            rid: rid("f"),
        });
        assert_eq!(
            fw.on_frame(rid("f"), rid("q"), false, t90(53_000), at(66)),
            Verdict::NeedKeyframe(rid("f"))
        );
        assert_eq!(
            fw.on_frame(rid("q"), rid("q"), false, t90(7000), at(66)),
            Verdict::Forward(t90(7000))
        );
        // f's keyframe 33 ms later: its time continues q's (7000 + 33 ms × 90).
        let Verdict::Forward(t) = fw.on_frame(rid("f"), rid("q"), true, t90(56_000), at(99)) else {
            panic!("switch")
        };
        assert_eq!(t.numer(), 7000 + 2970);
        assert_eq!(
            fw.on_frame(rid("q"), rid("q"), false, t90(10_000), at(99)),
            Verdict::Skip
        );
        let Verdict::Forward(t2) = fw.on_frame(rid("f"), rid("q"), false, t90(59_000), at(132))
        else {
            panic!("f flows")
        };
        assert_eq!(t2.numer(), t.numer() + 3000);
        assert_eq!(fw.freezes, 0);
    }

    #[test]
    fn paused_sends_nothing_and_a_long_gap_counts_as_a_freeze() {
        let t0 = crate::test_epoch();
        let mut fw = Forwarding::default();
        assert!(matches!(
            fw.on_frame(None, None, true, t90(0), t0),
            Verdict::Forward(_)
        ));
        fw.target = Some(Target {
            choice: Choice::Paused,
            rid: None,
        });
        assert_eq!(
            fw.on_frame(None, None, true, t90(3000), t0 + Duration::from_millis(33)),
            Verdict::Skip
        );
        fw.target = Some(Target {
            choice: Choice::Layer(0),
            rid: None,
        });
        let back = t0 + Duration::from_secs(3);
        assert!(matches!(
            fw.on_frame(None, None, true, t90(270_000), back),
            Verdict::Forward(_)
        ));
        assert_eq!(fw.freezes, 1);
    }
}
