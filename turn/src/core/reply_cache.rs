//! Answers to recent authenticated requests, keyed by 5-tuple and transaction id, so a
//! retransmitted request gets byte-for-byte the same answer (RFC 8489 §6.3.1: never a 437 for
//! our own Allocate). Bounded in size and age; only requests that passed authentication are
//! cached, so unauthenticated traffic cannot fill it.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::FiveTuple;

/// How long an answer is kept: a little over a STUN client's 39.5 s transaction timeout.
pub const REPLY_TTL: Duration = Duration::from_secs(40);
/// Most answers kept; the oldest is evicted first.
pub const REPLY_CAPACITY: usize = 4096;

type Key = (FiveTuple, [u8; 12]);

#[derive(Debug, Default)]
pub(crate) struct ReplyCache {
    map: HashMap<Key, Vec<u8>>,
    order: VecDeque<(Key, Instant)>,
}

impl ReplyCache {
    pub fn get(&self, tuple: &FiveTuple, tid: &[u8; 12]) -> Option<&Vec<u8>> {
        self.map.get(&(*tuple, *tid))
    }

    pub fn insert(&mut self, tuple: FiveTuple, tid: [u8; 12], reply: Vec<u8>, now: Instant) {
        let key = (tuple, tid);
        if self.map.insert(key, reply).is_none() {
            self.order.push_back((key, now + REPLY_TTL));
        }
        while self.order.len() > REPLY_CAPACITY {
            if let Some((old, _)) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }

    pub fn sweep(&mut self, now: Instant) {
        while let Some((key, exp)) = self.order.front() {
            if *exp > now {
                break;
            }
            self.map.remove(key);
            self.order.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
// Tests start from an arbitrary instant and advance time by hand.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use crate::events::Transport;

    fn tuple(port: u16) -> FiveTuple {
        FiveTuple {
            client: ([1, 2, 3, 4], port).into(),
            server: ([5, 6, 7, 8], 3478).into(),
            transport: Transport::Udp,
        }
    }

    #[test]
    fn answers_are_kept_bounded_and_expire() {
        let t0 = Instant::now();
        let mut c = ReplyCache::default();
        c.insert(tuple(1), [1; 12], vec![9], t0);
        assert_eq!(c.get(&tuple(1), &[1; 12]), Some(&vec![9]));
        assert_eq!(c.get(&tuple(2), &[1; 12]), None);
        assert_eq!(c.get(&tuple(1), &[2; 12]), None);
        for i in 0..(REPLY_CAPACITY as u16 + 10) {
            c.insert(tuple(i.wrapping_add(100)), [0; 12], vec![], t0);
        }
        assert_eq!(c.len(), REPLY_CAPACITY);
        assert_eq!(c.get(&tuple(1), &[1; 12]), None, "oldest evicted");
        c.sweep(t0 + REPLY_TTL);
        assert_eq!(c.len(), 0);
    }
}
