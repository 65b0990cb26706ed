//! Limits shared by every node of a cluster: login attempts per client address, counted in
//! Redis in one-minute windows, so a client cannot multiply its allowance by spreading its
//! attempts over the nodes. When Redis does not answer, the caller falls back to its own node's
//! limiter.

use std::net::IpAddr;

use crate::cluster::Cluster;

/// The window login attempts are counted in.
const WINDOW_MS: u64 = 60_000;

/// Counts one attempt and returns (attempts in this window, milliseconds the window has left).
const COUNT: &str = "local n = redis.call('INCR', KEYS[1]) \
    if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end \
    return {n, redis.call('PTTL', KEYS[1])}";

/// The counter of login attempts from `client`.
pub fn login_key(client: IpAddr) -> String {
    format!("signalbox:login:{client}")
}

/// Whether another attempt fits: `Ok` while `attempts` ≤ `per_minute`, else the seconds until
/// the window ends (at least 1).
pub fn verdict(attempts: i64, left_ms: i64, per_minute: u32) -> Result<(), u64> {
    if attempts <= i64::from(per_minute) {
        Ok(())
    } else {
        let secs = u64::try_from(left_ms).unwrap_or(0).div_ceil(1000);
        Err(secs.max(1))
    }
}

impl Cluster {
    /// Counts a login attempt from `client` across the cluster. `Some(Err(secs))` when it is
    /// over `per_minute`; `None` when Redis does not answer.
    pub async fn login_attempt(&self, client: IpAddr, per_minute: u32) -> Option<Result<(), u64>> {
        let mut p = redis::pipe();
        p.cmd("EVAL")
            .arg(COUNT)
            .arg(1)
            .arg(login_key(client))
            .arg(WINDOW_MS);
        match self.query::<((i64, i64),)>(&p).await {
            Ok(((attempts, left_ms),)) => Some(verdict(attempts, left_ms, per_minute)),
            Err(e) => {
                tracing::debug!(error = %e, "shared login limit unavailable");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_over_the_limit_wait_for_the_window() {
        assert_eq!(verdict(1, 60_000, 3), Ok(()));
        assert_eq!(verdict(3, 10, 3), Ok(()));
        assert_eq!(verdict(4, 59_001, 3), Err(60));
        assert_eq!(verdict(9, 0, 3), Err(1));
        assert_eq!(verdict(9, -1, 3), Err(1));
        assert_eq!(login_key("::1".parse().expect("ip")), "signalbox:login:::1");
    }
}
