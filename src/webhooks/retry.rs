//! When a failed delivery is tried again: exponential backoff from `first` doubling up to `cap`,
//! until the event is older than `max_age`, when it is marked failed. Pure: times are passed in
//! as Unix milliseconds.

use std::time::Duration;

/// The retry schedule of webhook deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The wait after the first failed attempt.
    pub first: Duration,
    /// The longest wait between two attempts.
    pub cap: Duration,
    /// An event still undelivered this long after it happened is given up (marked failed).
    pub max_age: Duration,
}

impl Default for RetryPolicy {
    /// 1 s, 2 s, 4 s … capped at 5 min, for at most 24 h.
    fn default() -> Self {
        RetryPolicy {
            first: Duration::from_secs(1),
            cap: Duration::from_secs(300),
            max_age: Duration::from_secs(24 * 3600),
        }
    }
}

/// What follows a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again at this time (Unix ms).
    RetryAt(i64),
    /// Too old: mark the delivery failed.
    GiveUp,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl RetryPolicy {
    /// The wait after `attempts` failed attempts (1 for the first failure).
    pub fn delay(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(31);
        self.first
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.cap)
            .min(self.cap)
    }

    /// The decision after attempt number `attempts` failed at `now`, for an event created at
    /// `created_at`: the next attempt, unless it would fall after the event's maximum age.
    pub fn after_failure(&self, attempts: u32, created_at: i64, now: i64) -> Next {
        let at = now.saturating_add(ms(self.delay(attempts)));
        if at > created_at.saturating_add(ms(self.max_age)) {
            Next::GiveUp
        } else {
            Next::RetryAt(at)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_exponentially_up_to_the_cap() {
        let p = RetryPolicy::default();
        let secs: Vec<u64> = (1..=12).map(|n| p.delay(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(p.delay(1000), Duration::from_secs(300), "no overflow");
    }

    #[test]
    fn gives_up_when_the_next_attempt_would_pass_the_maximum_age() {
        let p = RetryPolicy {
            first: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            max_age: Duration::from_secs(100),
        };
        let created = 1_000_000;
        assert_eq!(
            p.after_failure(1, created, created + 10_000),
            Next::RetryAt(created + 11_000)
        );
        // At 99 s a retry 1 min later would be at 159 s, past 100 s.
        assert_eq!(p.after_failure(9, created, created + 99_000), Next::GiveUp);
        assert_eq!(
            p.after_failure(2, created, created + 98_000),
            Next::RetryAt(created + 100_000),
            "exactly at the maximum age is still tried"
        );
    }
}
