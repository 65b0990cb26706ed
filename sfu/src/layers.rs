//! Which simulcast layer each of one subscriber's video tracks is sent: the subscriber's
//! bandwidth shared out over its tracks (every track gets its lowest layer before any track gets
//! a higher one), no track above what its tile needs, with headroom before an upgrade, a hold
//! before it is made, and a pause when even the lowest layer does not fit. Pure: bitrates, tile
//! widths and times in, choices out.

use std::time::{Duration, Instant};

/// What an upgrade must fit with to spare: the budget must exceed the new layer's bitrate by this
/// factor, so an estimate wobbling around one layer's cost does not flip it up and down.
pub const UPGRADE_HEADROOM: f64 = 1.3;

/// How long an upgrade must stay possible before it is made (a downgrade is made at once).
pub const UPGRADE_HOLD: Duration = Duration::from_secs(2);

/// One layer of a published track, as the SFU measured it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerInfo {
    /// Bits per second the layer carries.
    pub bitrate_bps: u64,
    /// Its picture width, when known (from its keyframes).
    pub width: Option<u32>,
}

/// What is sent of one track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Choice {
    /// No video (the audio of the same participant is unaffected).
    Paused,
    /// The layer at this index of [`Demand::layers`] (0 = lowest).
    Layer(usize),
}

/// One of the subscriber's video tracks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demand {
    /// The published layers, lowest first. Empty: the track is paused.
    pub layers: Vec<LayerInfo>,
    /// The width in device pixels the tile showing the track has; `Some(0)`: not shown;
    /// `None`: not said (any layer).
    pub tile_width: Option<u32>,
    /// What the track is sent now.
    pub current: Choice,
}

impl Demand {
    /// The highest layer the tile needs: the lowest at least as wide as the tile (the top one if
    /// none is, or if widths are unknown). `None`: the tile is not shown.
    fn ceiling(&self) -> Option<usize> {
        let top = self.layers.len().checked_sub(1)?;
        match self.tile_width {
            Some(0) => None,
            None => Some(top),
            Some(w) => Some(
                self.layers
                    .iter()
                    .position(|l| l.width.is_some_and(|lw| lw >= w))
                    .unwrap_or(top),
            ),
        }
    }

    /// The bitrate of the highest layer the tile needs (0 when it is not shown): what the
    /// track would take at its best for this subscriber.
    pub fn needed_bps(&self) -> u64 {
        self.ceiling()
            .and_then(|c| self.layers.get(c))
            .map_or(0, |l| l.bitrate_bps)
    }

    /// What choosing `layer` costs against the budget: an upgrade carries the headroom.
    fn price(&self, choice: Choice) -> f64 {
        match choice {
            Choice::Paused => 0.0,
            Choice::Layer(i) => {
                let rate = self.layers.get(i).map_or(0, |l| l.bitrate_bps) as f64;
                if choice > self.current {
                    rate * UPGRADE_HEADROOM
                } else {
                    rate
                }
            }
        }
    }
}

/// Shares `budget_bps` over `demands`: first every shown track its lowest layer (in order, so
/// earlier tracks win when not all fit), then one layer up at a time across the tracks while the
/// budget allows and the tiles need it. What a track is sent now is kept before any track is
/// upgraded, so an upgrade of one track never pushes another down. Returns one choice per demand.
pub fn allocate(budget_bps: u64, demands: &[Demand]) -> Vec<Choice> {
    let mut left = budget_bps as f64;
    let mut chosen = vec![Choice::Paused; demands.len()];
    let ceilings: Vec<Option<usize>> = demands.iter().map(Demand::ceiling).collect();
    // First up to what each track is sent now (at least its lowest layer), then beyond.
    step_up(demands, &ceilings, &mut chosen, &mut left, |d| {
        d.current.max(Choice::Layer(0))
    });
    step_up(demands, &ceilings, &mut chosen, &mut left, |_| {
        Choice::Layer(usize::MAX)
    });
    chosen
}

/// Raises the tracks one layer at a time, in turn, while the budget `left` allows, each no
/// higher than its ceiling nor than `limit` says.
fn step_up(
    demands: &[Demand],
    ceilings: &[Option<usize>],
    chosen: &mut [Choice],
    left: &mut f64,
    limit: impl Fn(&Demand) -> Choice,
) {
    loop {
        let mut stepped = false;
        for (i, d) in demands.iter().enumerate() {
            let next = match (chosen[i], ceilings[i]) {
                (Choice::Paused, Some(_)) => Choice::Layer(0),
                (Choice::Layer(l), Some(c)) if l < c => Choice::Layer(l + 1),
                _ => continue,
            };
            if next > limit(d) {
                continue;
            }
            let cost = d.price(next) - d.price(chosen[i]);
            if cost <= *left {
                *left -= cost;
                chosen[i] = next;
                stepped = true;
            }
        }
        if !stepped {
            return;
        }
    }
}

/// Holds back a track's upgrades until they have been possible for [`UPGRADE_HOLD`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hold {
    /// Since when an upgrade has been proposed without a break.
    upgrade_since: Option<Instant>,
}

impl Hold {
    /// What the track is sent, given what it is sent now and what [`allocate`] proposes.
    pub fn settle(&mut self, now: Instant, current: Choice, proposed: Choice) -> Choice {
        if proposed <= current {
            self.upgrade_since = None;
            return proposed;
        }
        let since = *self.upgrade_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= UPGRADE_HOLD {
            self.upgrade_since = None;
            proposed
        } else {
            current
        }
    }
}

/// An estimate this far below what is sent means the link is full (congestion: a delay-based
/// estimator answers overuse with about 85 % of the bitrate that got through).
pub const CONGESTED_BELOW: f64 = 0.9;
/// How far beyond what is sent the budget may reach while the link shows no congestion.
pub const GROWTH: u64 = 3;
/// How long the budget stays at the estimate after congestion, at first (doubling up to
/// [`MAX_BACKOFF`] while congestion recurs).
pub const MIN_BACKOFF: Duration = Duration::from_secs(4);
pub const MAX_BACKOFF: Duration = Duration::from_secs(32);

/// How long the estimate must stay below what is sent before that counts as congestion: a
/// delay-based estimate dips for a moment whenever the host or the network jitters, and a dip
/// that passes must not cost every tile its layer.
pub const CONGESTION_PERSISTS: Duration = Duration::from_secs(1);

/// A subscriber's budget from its bandwidth estimate. A delay-based estimate of a link that
/// carries less than it could stays near what is sent (it cannot measure more), so while the
/// estimate shows headroom the budget may grow past it, up to [`GROWTH`] times what is sent:
/// the upgraded layers themselves probe the link. An estimate below what is sent holds what is
/// sent (no upgrade) until it has stayed below for [`CONGESTION_PERSISTS`]: then the link is
/// congested, and the budget is the estimate for a backoff that doubles each time congestion
/// comes back soon after the last one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Budget {
    /// Since when the estimate has been below what is sent.
    below_since: Option<Instant>,
    /// Until when the estimate is the budget.
    cautious_until: Option<Instant>,
    backoff: Duration,
}

impl Budget {
    /// The budget at `now` for a subscriber sent `sending_bps`, with its latest `estimate`
    /// (`None`: its feedback gives none, the budget is unbounded).
    pub fn at(&mut self, now: Instant, estimate: Option<u64>, sending_bps: u64) -> u64 {
        let Some(estimate) = estimate else {
            self.below_since = None;
            return u64::MAX;
        };
        if (estimate as f64) >= sending_bps as f64 * CONGESTED_BELOW {
            self.below_since = None;
        } else {
            let since = *self.below_since.get_or_insert(now);
            if now.saturating_duration_since(since) < CONGESTION_PERSISTS {
                return estimate.max(sending_bps);
            }
            let cautious = self.cautious_until.is_some_and(|t| now < t);
            if !cautious {
                let recent = self.cautious_until.is_some_and(|t| now < t + self.backoff);
                self.backoff = if recent {
                    (self.backoff * 2).min(MAX_BACKOFF)
                } else {
                    MIN_BACKOFF
                };
            }
            self.cautious_until = Some(now + self.backoff);
        }
        if self.cautious_until.is_some_and(|t| now < t) {
            estimate
        } else {
            estimate.max(sending_bps.saturating_mul(GROWTH))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three layers like a browser's 160/320/640 px simulcast.
    fn layers() -> Vec<LayerInfo> {
        [(80_000, 160), (250_000, 320), (700_000, 640)]
            .into_iter()
            .map(|(bitrate_bps, w)| LayerInfo {
                bitrate_bps,
                width: Some(w),
            })
            .collect()
    }

    fn demand(tile_width: Option<u32>, current: Choice) -> Demand {
        Demand {
            layers: layers(),
            tile_width,
            current,
        }
    }

    #[test]
    fn enough_bandwidth_gives_every_track_the_layer_its_tile_needs() {
        let d = [
            demand(None, Choice::Layer(2)),
            demand(Some(600), Choice::Layer(2)),
            demand(Some(300), Choice::Layer(1)),
            demand(Some(100), Choice::Layer(0)),
        ];
        assert_eq!(
            allocate(10_000_000, &d),
            [
                Choice::Layer(2),
                Choice::Layer(2),
                Choice::Layer(1),
                Choice::Layer(0)
            ],
            "a thumbnail never gets the full layer"
        );
    }

    #[test]
    fn a_tile_wider_than_every_layer_or_of_unknown_widths_gets_the_top() {
        let mut unknown = demand(Some(300), Choice::Layer(0));
        for l in &mut unknown.layers {
            l.width = None;
        }
        assert_eq!(
            allocate(10_000_000, &[demand(Some(1920), Choice::Layer(0)), unknown]),
            [Choice::Layer(2), Choice::Layer(2)]
        );
    }

    #[test]
    fn less_bandwidth_downgrades_at_once_lowest_layers_first_for_everyone() {
        let d = [
            demand(None, Choice::Layer(2)),
            demand(None, Choice::Layer(2)),
        ];
        // 2 × 700k does not fit 1 Mbit/s; 700k + 250k does (at the current layer: no headroom).
        assert_eq!(
            allocate(1_000_000, &d),
            [Choice::Layer(2), Choice::Layer(1)]
        );
        // 400 kbit/s: both get their 80k lowest, one of them 250k.
        assert_eq!(allocate(400_000, &d), [Choice::Layer(1), Choice::Layer(0)]);
        assert_eq!(allocate(170_000, &d), [Choice::Layer(0), Choice::Layer(0)]);
    }

    #[test]
    fn a_track_needs_the_bitrate_of_the_layer_its_tile_needs() {
        assert_eq!(demand(Some(100), Choice::Paused).needed_bps(), 80_000);
        assert_eq!(demand(Some(300), Choice::Paused).needed_bps(), 250_000);
        assert_eq!(demand(Some(1000), Choice::Paused).needed_bps(), 700_000);
        assert_eq!(demand(None, Choice::Paused).needed_bps(), 700_000);
        assert_eq!(demand(Some(0), Choice::Paused).needed_bps(), 0, "not shown");
    }

    #[test]
    fn an_upgrade_of_one_track_never_pushes_another_down() {
        // The second track is on the middle layer; the first could go up to it too, but not both.
        let d = [
            demand(None, Choice::Layer(0)),
            demand(None, Choice::Layer(1)),
        ];
        // 80k + 250k keeps the second where it is; upgrading the first instead (250k × 1.3)
        // would fit 420k only by taking the second down.
        assert_eq!(allocate(420_000, &d), [Choice::Layer(0), Choice::Layer(1)]);
        assert_eq!(
            allocate(420_000, &[d[1].clone(), d[0].clone()]),
            [Choice::Layer(1), Choice::Layer(0)],
            "whichever order the tracks come in"
        );
    }

    #[test]
    fn an_upgrade_needs_headroom() {
        let at_mid = [demand(None, Choice::Layer(1))];
        // 700k would fit exactly, but an upgrade needs 30 % more.
        assert_eq!(allocate(750_000, &at_mid), [Choice::Layer(1)]);
        assert_eq!(allocate(950_000, &at_mid), [Choice::Layer(2)]);
        // Already on the top layer, the same 750k keeps it.
        assert_eq!(
            allocate(750_000, &[demand(None, Choice::Layer(2))]),
            [Choice::Layer(2)]
        );
    }

    #[test]
    fn video_pauses_when_not_even_the_lowest_layer_fits_or_the_tile_is_hidden() {
        assert_eq!(
            allocate(50_000, &[demand(None, Choice::Layer(0))]),
            [Choice::Paused]
        );
        assert_eq!(
            allocate(10_000_000, &[demand(Some(0), Choice::Layer(2))]),
            [Choice::Paused]
        );
        // Resuming from a pause is an upgrade: it needs the headroom too.
        assert_eq!(
            allocate(90_000, &[demand(None, Choice::Paused)]),
            [Choice::Paused]
        );
        assert_eq!(
            allocate(110_000, &[demand(None, Choice::Paused)]),
            [Choice::Layer(0)]
        );
        let none = Demand {
            layers: Vec::new(),
            tile_width: None,
            current: Choice::Paused,
        };
        assert_eq!(allocate(10_000_000, &[none]), [Choice::Paused]);
    }

    #[test]
    fn upgrades_wait_for_the_hold_downgrades_do_not() {
        let t0 = crate::test_epoch();
        let mut hold = Hold::default();
        let (low, top) = (Choice::Layer(0), Choice::Layer(2));
        assert_eq!(hold.settle(t0, low, top), low, "not yet");
        assert_eq!(
            hold.settle(t0 + Duration::from_secs(1), low, top),
            low,
            "still held"
        );
        assert_eq!(
            hold.settle(t0 + UPGRADE_HOLD, low, top),
            top,
            "held long enough"
        );
        assert_eq!(
            hold.settle(t0 + UPGRADE_HOLD, top, low),
            low,
            "a downgrade is at once"
        );
    }

    #[test]
    fn an_estimate_that_wobbles_does_not_flap() {
        // The estimate alternates above and below what the top layer needs with headroom;
        // the track is on the middle layer and must stay there (each wobble restarts the hold).
        let t0 = crate::test_epoch();
        let mut hold = Hold::default();
        let mut current = Choice::Layer(1);
        for step in 0..20u64 {
            let estimate = if step % 2 == 0 { 1_000_000 } else { 800_000 };
            let now = t0 + Duration::from_millis(500 * step);
            let proposed = allocate(estimate, &[demand(None, current)])[0];
            current = hold.settle(now, current, proposed);
            assert_eq!(current, Choice::Layer(1), "step {step}");
        }
        // Steady above: up after the hold, and then it stays up at the lower estimate.
        for step in 0..6u64 {
            let now = t0 + Duration::from_secs(20) + Duration::from_millis(500 * step);
            let proposed = allocate(1_000_000, &[demand(None, current)])[0];
            current = hold.settle(now, current, proposed);
        }
        assert_eq!(current, Choice::Layer(2));
        let proposed = allocate(800_000, &[demand(None, current)])[0];
        assert_eq!(proposed, Choice::Layer(2), "800k keeps a 700k layer");
    }

    #[test]
    fn the_budget_grows_past_an_estimate_with_headroom_and_backs_off_after_congestion() {
        let t0 = crate::test_epoch();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut b = Budget::default();
        assert_eq!(b.at(t0, None, 500_000), u64::MAX, "no estimate: no bound");
        // 729k estimated while 336k is sent: room to grow, up to 3× what is sent.
        assert_eq!(b.at(t0, Some(729_000), 336_000), 1_008_000);
        assert_eq!(b.at(t0, Some(2_000_000), 336_000), 2_000_000);
        // The upgrade congested the link: what is sent is held while that may be a dip...
        assert_eq!(b.at(at(10_000), Some(600_000), 700_000), 700_000);
        assert_eq!(b.at(at(10_750), Some(600_000), 700_000), 700_000);
        // ...and once it has lasted, the estimate rules for the backoff.
        assert_eq!(b.at(at(11_000), Some(600_000), 700_000), 600_000);
        assert_eq!(
            b.at(at(14_000), Some(650_000), 330_000),
            650_000,
            "still backing off"
        );
        assert_eq!(
            b.at(at(15_000), Some(650_000), 330_000),
            990_000,
            "backoff over"
        );
        // Congestion again soon after: twice as long, however long it lasts.
        assert_eq!(b.at(at(16_000), Some(600_000), 700_000), 700_000);
        assert_eq!(b.at(at(17_000), Some(600_000), 700_000), 600_000);
        assert_eq!(b.at(at(18_000), Some(600_000), 700_000), 600_000);
        assert_eq!(b.at(at(25_000), Some(650_000), 330_000), 650_000);
        assert_eq!(b.at(at(26_000), Some(650_000), 330_000), 990_000);
    }

    #[test]
    fn a_dip_of_the_estimate_that_passes_changes_nothing() {
        let t0 = crate::test_epoch();
        let mut b = Budget::default();
        // An estimate that drops to a quarter of what is sent for 750 ms at a time, then
        // recovers: never congestion, so what is sent is always kept.
        for cycle in 0..10u64 {
            let start = t0 + Duration::from_secs(2 * cycle);
            for tick in 0..3u64 {
                let now = start + Duration::from_millis(250 * tick);
                assert!(
                    b.at(now, Some(160_000), 700_000) >= 700_000,
                    "cycle {cycle}, dip tick {tick}"
                );
            }
            assert_eq!(
                b.at(start + Duration::from_secs(1), Some(1_200_000), 700_000),
                2_100_000
            );
        }
    }
}
