//! Who speaks in a room, from the audio levels publishers put in their packets (RFC 6464): each
//! participant's loudness is a peak that decays, the loudest one above the speaking threshold
//! becomes the active speaker once it has stayed the loudest for [`SWITCH_AFTER`], and the last
//! speaker stays active through silence. Pure: levels and times in, changes out.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::participant::ParticipantId;

/// The quietest level (dBov, RFC 6464: 0 is the loudest, -127 silence) that counts as speech.
pub const SPEAKING_DBOV: f32 = -70.0;
/// How fast a peak fades: halved over this time (speech has gaps; a fake microphone beeps).
const HALF_LIFE: Duration = Duration::from_millis(700);
/// How long someone must stay the loudest before becoming the active speaker.
pub const SWITCH_AFTER: Duration = Duration::from_millis(600);

#[derive(Debug, Clone, Copy)]
struct Peak {
    /// Loudness 0..=1 (0 = silence at -127 dBov).
    value: f32,
    at: Instant,
}

impl Peak {
    fn at(&self, now: Instant) -> f32 {
        let dt = now.saturating_duration_since(self.at).as_secs_f32();
        self.value * 0.5f32.powf(dt / HALF_LIFE.as_secs_f32())
    }
}

fn loudness(dbov: f32) -> f32 {
    ((dbov.clamp(-127.0, 0.0) + 127.0) / 127.0).clamp(0.0, 1.0)
}

/// One room's speakers.
#[derive(Debug, Default)]
pub struct SpeakerDetector {
    peaks: HashMap<ParticipantId, Peak>,
    active: Option<ParticipantId>,
    /// Who has been the loudest (other than the active speaker), and since when.
    rising: Option<(ParticipantId, Instant)>,
}

impl SpeakerDetector {
    /// An audio packet of `who` said `level_dbov` (-127..=0) at `now`.
    pub fn level(&mut self, who: &ParticipantId, level_dbov: i8, now: Instant) {
        let value = loudness(f32::from(level_dbov));
        match self.peaks.get_mut(who) {
            Some(p) if p.at(now) >= value => {}
            Some(p) => *p = Peak { value, at: now },
            None => {
                self.peaks.insert(who.clone(), Peak { value, at: now });
            }
        }
    }

    /// `who` left: it is no longer a candidate (nor the active speaker).
    pub fn remove(&mut self, who: &ParticipantId) {
        self.peaks.remove(who);
        if self.active.as_ref() == Some(who) {
            self.active = None;
        }
        if self.rising.as_ref().is_some_and(|(r, _)| r == who) {
            self.rising = None;
        }
    }

    /// The active speaker now, if there is one.
    pub fn active(&self) -> Option<&ParticipantId> {
        self.active.as_ref()
    }

    /// The active speaker, if it changed since the last call.
    pub fn decide(&mut self, now: Instant) -> Option<ParticipantId> {
        let threshold = loudness(SPEAKING_DBOV);
        let loudest = self
            .peaks
            .iter()
            .map(|(who, p)| (who, p.at(now)))
            .filter(|(_, v)| *v >= threshold)
            .max_by(|a, b| a.1.total_cmp(&b.1).then_with(|| b.0.cmp(a.0)))
            .map(|(who, _)| who.clone());
        let Some(loudest) = loudest else {
            self.rising = None;
            return None;
        };
        if self.active.as_ref() == Some(&loudest) {
            self.rising = None;
            return None;
        }
        let since = match &self.rising {
            Some((who, since)) if *who == loudest => *since,
            _ => {
                self.rising = Some((loudest.clone(), now));
                now
            }
        };
        // The first speaker of a room needs no wait: there is nobody to take over from.
        if self.active.is_none() || now.saturating_duration_since(since) >= SWITCH_AFTER {
            self.rising = None;
            self.active = Some(loudest.clone());
            return Some(loudest);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ParticipantId {
        ParticipantId::from(s)
    }

    /// `who` beeps (a fake microphone: 20 ms of tone every 500 ms) and the others are silent,
    /// from `from` for `ms`; decisions are taken every 100 ms. Returns the changes seen.
    fn run(
        d: &mut SpeakerDetector,
        from: Instant,
        ms: u64,
        who: &str,
        others: &[&str],
    ) -> Vec<ParticipantId> {
        let mut changes = Vec::new();
        for t in (0..ms).step_by(20) {
            let now = from + Duration::from_millis(t);
            let beep = t % 500 == 0;
            d.level(&id(who), if beep { -25 } else { -127 }, now);
            for o in others {
                d.level(&id(o), -127, now);
            }
            if t % 100 == 0 {
                changes.extend(d.decide(now));
            }
        }
        changes
    }

    #[test]
    fn the_one_who_speaks_becomes_active_and_silence_keeps_them() {
        let t0 = crate::test_epoch();
        let mut d = SpeakerDetector::default();
        assert_eq!(run(&mut d, t0, 2000, "a", &["b", "c"]), [id("a")]);
        // Everyone silent: a stays the active speaker, no change announced.
        for t in 0..30u64 {
            let now = t0 + Duration::from_millis(2000 + 100 * t);
            for who in ["a", "b", "c"] {
                d.level(&id(who), -127, now);
            }
            assert_eq!(d.decide(now), None);
        }
    }

    #[test]
    fn the_speaker_changes_when_another_speaks_for_long_enough() {
        let t0 = crate::test_epoch();
        let mut d = SpeakerDetector::default();
        run(&mut d, t0, 2000, "a", &["b"]);
        let t1 = t0 + Duration::from_secs(2);
        // b interrupts for 300 ms only (a still audible): no change yet.
        let mut changes = Vec::new();
        for t in (0..300u64).step_by(20) {
            let now = t1 + Duration::from_millis(t);
            d.level(&id("b"), -20, now);
            changes.extend(d.decide(now));
        }
        assert!(changes.is_empty(), "{changes:?}");
        // b goes on speaking and a is quiet: b takes over.
        let t2 = t1 + Duration::from_millis(300);
        assert_eq!(run(&mut d, t2, 3000, "b", &["a"]), [id("b")]);
    }

    #[test]
    fn quiet_noise_is_not_speech_and_a_leaver_is_forgotten() {
        let t0 = crate::test_epoch();
        let mut d = SpeakerDetector::default();
        d.level(&id("a"), -90, t0);
        assert_eq!(d.decide(t0), None);
        d.level(&id("a"), -30, t0);
        assert_eq!(d.decide(t0), Some(id("a")));
        d.remove(&id("a"));
        d.level(&id("b"), -30, t0);
        assert_eq!(d.decide(t0), Some(id("b")), "nobody to take over from");
    }
}
