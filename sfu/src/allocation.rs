//! The SFU's periodic pass over every subscriber: each one's bandwidth (the estimate, capped by
//! what the client asked for) shared over the video it is sent ([`crate::layers`]), the layer
//! each forwarded track targets from now on, what the bandwidth estimator probes for, the layers
//! of each publisher that somebody receives (publishers are told, so an unused layer costs no
//! uplink), and the quality samples for analytics.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use str0m::bwe::Bitrate;
use str0m::media::{MediaKind, Mid, Rid};

use crate::layers::{allocate, Choice, Demand, LayerInfo, UPGRADE_HEADROOM};
use crate::participant::{Participant, ParticipantId};
use crate::sfu::{LayerSample, QualitySample, SfuEvent, STATS_INTERVAL};
use crate::simulcast::{ranked, Target};

/// What one audio track is taken to need out of a subscriber's budget.
pub const AUDIO_BPS: u64 = 40_000;

type TrackKey = (ParticipantId, Mid);

/// Runs the pass at `now`; returns the events it produced (layer hints, quality samples).
pub(crate) fn run(
    participants: &mut BTreeMap<ParticipantId, Participant>,
    now: Instant,
) -> Vec<SfuEvent> {
    let table: HashMap<TrackKey, Vec<(Option<Rid>, LayerInfo)>> = participants
        .values()
        .flat_map(|p| {
            p.tracks_in
                .iter()
                .filter(|t| t.kind == MediaKind::Video)
                .map(|t| ((p.id.clone(), t.mid), ranked(&t.layers, now)))
        })
        .collect();
    let mut received: HashMap<TrackKey, HashSet<Option<Rid>>> = HashMap::new();
    let mut events = Vec::new();
    for p in participants.values_mut() {
        subscriber(p, &table, &mut received, now);
        if p.next_quality.is_none_or(|t| t <= now) {
            p.next_quality = Some(now + STATS_INTERVAL);
            if let Some(sample) = quality(p, &table) {
                events.push(SfuEvent::Quality(sample));
            }
        }
    }
    for p in participants.values_mut() {
        events.extend(hints(p, &table, &received));
    }
    events
}

/// Chooses the layers of one subscriber's video tracks; records which layers it receives.
fn subscriber(
    p: &mut Participant,
    table: &HashMap<TrackKey, Vec<(Option<Rid>, LayerInfo)>>,
    received: &mut HashMap<TrackKey, HashSet<Option<Rid>>>,
    now: Instant,
) {
    let mut audio = 0;
    let mut picked = Vec::new();
    let mut demands = Vec::new();
    for (i, t) in p.tracks_out.iter().enumerate() {
        if t.open_mid().is_none() || t.source_gone {
            continue;
        }
        if t.kind == MediaKind::Audio {
            audio += 1;
            continue;
        }
        let key = (t.source.participant.clone(), t.source.mid);
        let layers = table.get(&key).cloned().unwrap_or_default();
        if layers.is_empty() {
            // Nothing of it seen yet (or no more): its first frames go out on the lowest layer.
            continue;
        }
        // Where the track is now, in this pass's ranking (`None`: its layer is gone).
        let current = match t.fwd.target {
            Some(Target {
                choice: Choice::Paused,
                ..
            }) => Some(Choice::Paused),
            Some(target) => layers
                .iter()
                .position(|(r, _)| *r == target.rid)
                .map(Choice::Layer),
            None => None,
        };
        demands.push(Demand {
            layers: layers.iter().map(|(_, l)| *l).collect(),
            tile_width: p.view.tiles.get(&t.source.participant).copied(),
            current: current.unwrap_or(Choice::Paused),
        });
        picked.push((i, key, layers, current));
    }
    let sending = audio * AUDIO_BPS
        + demands
            .iter()
            .map(|d| match d.current {
                Choice::Layer(l) => d.layers.get(l).map_or(0, |l| l.bitrate_bps),
                Choice::Paused => 0,
            })
            .sum::<u64>();
    // The estimate alone never pauses a shown tile: a delay-based estimate dips on a loss burst
    // or a busy host, and the lowest layer is the better answer to a dip than a frozen tile.
    // Pausing is for a subscriber that says it cannot take more (`maxBitrate`), or a hidden tile.
    let lowest_of_shown: u64 = demands
        .iter()
        .filter(|d| d.tile_width != Some(0))
        .filter_map(|d| d.layers.first())
        .map(|l| l.bitrate_bps)
        .sum();
    let estimate = p
        .budget
        .at(now, p.estimate_bps, sending)
        .max((lowest_of_shown as f64 * UPGRADE_HEADROOM) as u64 + audio * AUDIO_BPS);
    let budget = p
        .view
        .max_bitrate
        .map_or(estimate, |cap| cap.min(estimate))
        .saturating_sub(audio * AUDIO_BPS);
    let proposals = allocate(budget, &demands);
    tracing::trace!(participant = %p.id, estimate = ?p.estimate_bps, sending, budget, ?proposals, "sfu: allocation");
    let mut desired = audio * AUDIO_BPS;
    for (((i, key, layers, current), proposal), demand) in
        picked.into_iter().zip(proposals).zip(&demands)
    {
        let t = &mut p.tracks_out[i];
        // A track whose layer went away (or that had none yet) takes the proposal at once.
        let choice = match current {
            Some(c) => t.hold.settle(now, c, proposal),
            None => proposal,
        };
        let rid = match choice {
            Choice::Layer(l) => layers.get(l).and_then(|(r, _)| *r),
            Choice::Paused => None,
        };
        t.fwd.target = Some(Target { choice, rid });
        // The layer being sent stays on until the new one's keyframe has taken over.
        let wanted = received.entry(key).or_default();
        if let Choice::Layer(_) = choice {
            wanted.insert(rid);
        }
        if let Some(current) = t.fwd.current {
            wanted.insert(current);
        }
        desired += demand.needed_bps();
    }
    // Probe for what the tracks would take at their best for their tiles (with headroom), so
    // an estimate below it can grow; a thumbnail does not make the link probe for a top layer.
    let desired = desired + desired / 4;
    if desired != p.desired_bps && desired > 0 {
        p.desired_bps = desired;
        p.rtc.bwe().set_desired_bitrate(Bitrate::bps(desired));
    }
}

/// The layers of `p`'s simulcast tracks somebody receives, when that changed: the lowest layer
/// always counts as received, so a new subscriber gets a picture at once.
fn hints(
    p: &mut Participant,
    table: &HashMap<TrackKey, Vec<(Option<Rid>, LayerInfo)>>,
    received: &HashMap<TrackKey, HashSet<Option<Rid>>>,
) -> Vec<SfuEvent> {
    let mut out = Vec::new();
    for t in &mut p.tracks_in {
        if t.kind != MediaKind::Video || t.layers.iter().all(|l| l.rid.is_none()) {
            continue;
        }
        let key = (p.id.clone(), t.mid);
        let lowest = table.get(&key).and_then(|l| l.first()).map(|(r, _)| *r);
        let wanted = received.get(&key);
        let mut changed = false;
        for l in &mut t.layers {
            let want = lowest == Some(l.rid) || wanted.is_some_and(|w| w.contains(&l.rid));
            if l.wanted != Some(want) {
                l.wanted = Some(want);
                changed = true;
            }
        }
        if changed {
            let layers = t
                .layers
                .iter()
                .filter_map(|l| Some((l.rid?.to_string(), l.wanted == Some(true))))
                .collect();
            out.push(SfuEvent::LayersWanted {
                participant: p.id.clone(),
                mid: t.mid.to_string(),
                layers,
            });
        }
    }
    out
}

/// What the subscriber is sent now, for analytics.
fn quality(
    p: &Participant,
    table: &HashMap<TrackKey, Vec<(Option<Rid>, LayerInfo)>>,
) -> Option<QualitySample> {
    let video: Vec<_> = p
        .tracks_out
        .iter()
        .filter(|t| t.kind == MediaKind::Video && !t.source_gone)
        .filter_map(|t| Some((t, t.open_mid()?)))
        .collect();
    if video.is_empty() {
        return None;
    }
    let layers = video
        .iter()
        .map(|(t, mid)| {
            let current = t.fwd.current;
            let width = current.and_then(|rid| {
                table
                    .get(&(t.source.participant.clone(), t.source.mid))?
                    .iter()
                    .find(|(r, _)| *r == rid)?
                    .1
                    .width
            });
            LayerSample {
                publisher: t.source.participant.clone(),
                mid: mid.to_string(),
                layer: current.flatten().map(|r| r.to_string()),
                paused: matches!(
                    t.fwd.target,
                    Some(Target {
                        choice: Choice::Paused,
                        ..
                    })
                ),
                width,
            }
        })
        .collect();
    Some(QualitySample {
        participant: p.id.clone(),
        estimate_bps: p.estimate_bps,
        freezes: video.iter().map(|(t, _)| t.fwd.freezes).sum(),
        layers,
    })
}
