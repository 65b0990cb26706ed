//! Wall-clock access at the edges, and the one timestamp format of the API (RFC 3339, UTC,
//! millisecond precision). Core logic takes `now` as an argument instead of calling this;
//! `clippy.toml` keeps every other clock read out of the code.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The monotonic clock, for deadlines and durations at the edges.
#[allow(clippy::disallowed_methods)] // one of the two places the application reads a clock
pub fn monotonic() -> std::time::Instant {
    std::time::Instant::now()
}

/// Milliseconds since the Unix epoch.
#[allow(clippy::disallowed_methods)] // one of the two places the application reads a clock
pub fn now_ms() -> i64 {
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
    i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX)
}

/// Formats epoch milliseconds as RFC 3339, e.g. `2026-11-22T03:09:53.123Z`.
pub fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_epoch_millis() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            super::rfc3339(1_700_000_000_123),
            "2023-11-14T22:13:20.123Z"
        );
    }
}
