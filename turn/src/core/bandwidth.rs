//! Per-allocation bandwidth cap: a token bucket in bytes, refilled from the time passed in.

use std::time::Instant;

/// A byte token bucket holding at most one second of traffic at the configured rate.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    bytes_per_sec: u64,
    capacity: u64,
    tokens: u64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket for `bits_per_sec`.
    pub fn new(bits_per_sec: u64, now: Instant) -> Self {
        let bytes_per_sec = (bits_per_sec / 8).max(1);
        // One second of burst, but never less than a few full-size datagrams.
        let capacity = bytes_per_sec.max(4 * 1600);
        Self {
            bytes_per_sec,
            capacity,
            tokens: capacity,
            last: now,
        }
    }

    /// Takes `n` bytes if available; `false` means the packet must be dropped.
    pub fn take(&mut self, n: usize, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        if !elapsed.is_zero() {
            let refill = elapsed.as_nanos() * u128::from(self.bytes_per_sec) / 1_000_000_000;
            if refill > 0 {
                let refill = u64::try_from(refill).unwrap_or(u64::MAX);
                self.tokens = self.tokens.saturating_add(refill).min(self.capacity);
                self.last = now;
            }
        }
        let n = n as u64;
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
// Tests start from an arbitrary instant and advance time by hand.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_caps_then_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(80_000, t0); // 10 kB/s, capacity 10 kB
        let mut sent = 0;
        while b.take(1000, t0) {
            sent += 1000;
        }
        assert_eq!(sent, 10_000);
        assert!(!b.take(1, t0));
        assert!(b.take(1000, t0 + Duration::from_millis(100)));
        assert!(!b.take(1000, t0 + Duration::from_millis(100)));
        assert!(b.take(10_000, t0 + Duration::from_secs(10)));
    }
}
