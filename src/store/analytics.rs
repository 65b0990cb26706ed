//! Quality reports (client `getStats` summaries), TURN relay usage, what the SFU measured on room
//! participants' tracks, and the per-call aggregates `GET /calls/:id/analytics` shows.

use rusqlite::{params, Connection};
use serde_json::Value;

use crate::auth::Principal;
use crate::error::Error;
use crate::store::calls::{self, CallEvent, CallRecord};
use crate::store::{pg, Store};

/// The numbers pulled out of a client stats summary; the raw JSON is kept too.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QualitySample {
    pub rtt_ms: Option<f64>,
    pub jitter_ms: Option<f64>,
    /// Fraction 0..=1 of packets lost.
    pub packet_loss: Option<f64>,
    pub bitrate_kbps: Option<f64>,
}

fn number(v: &Value, keys: &[&str]) -> Option<f64> {
    keys.iter()
        .find_map(|k| v.get(*k).and_then(Value::as_f64))
        .filter(|n| n.is_finite() && *n >= 0.0)
}

impl QualitySample {
    /// Reads the summary a client sends with `call-stats`: `rttMs` (or `roundTripTime` in
    /// seconds), `jitterMs` (or `jitter` in seconds), `packetLoss` (fraction, or percent when
    /// above 1), `bitrateKbps`. Unknown fields are kept in the raw JSON only.
    pub fn from_stats(stats: &Value) -> QualitySample {
        let secs_to_ms = |v: f64| v * 1000.0;
        let loss = number(stats, &["packetLoss", "packetLossFraction"]).map(|l| {
            if l > 1.0 {
                l / 100.0
            } else {
                l
            }
        });
        QualitySample {
            rtt_ms: number(stats, &["rttMs"]).or_else(|| {
                number(stats, &["roundTripTime", "currentRoundTripTime"]).map(secs_to_ms)
            }),
            jitter_ms: number(stats, &["jitterMs"])
                .or_else(|| number(stats, &["jitter"]).map(secs_to_ms)),
            packet_loss: loss.map(|l| l.min(1.0)),
            bitrate_kbps: number(stats, &["bitrateKbps"])
                .or_else(|| number(stats, &["bitrate"]).map(|b| b / 1000.0)),
        }
    }
}

/// Stores one report.
pub(super) fn add_report(
    conn: &Connection,
    call_id: &str,
    user_id: &str,
    at: i64,
    raw: &Value,
) -> Result<(), Error> {
    let q = QualitySample::from_stats(raw);
    conn.execute(
        "INSERT INTO call_reports (call_id, user_id, at, rtt_ms, jitter_ms, packet_loss, bitrate_kbps, raw)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![call_id, user_id, at, q.rtt_ms, q.jitter_ms, q.packet_loss, q.bitrate_kbps, raw.to_string()],
    )?;
    Ok(())
}

/// Aggregates of a call's reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QualitySummary {
    pub reports: u64,
    pub avg_rtt_ms: Option<f64>,
    pub max_rtt_ms: Option<f64>,
    pub avg_jitter_ms: Option<f64>,
    pub avg_packet_loss: Option<f64>,
    pub avg_bitrate_kbps: Option<f64>,
}

pub(super) fn quality(conn: &Connection, call_id: &str) -> Result<QualitySummary, Error> {
    Ok(conn.query_row(
        "SELECT COUNT(*), AVG(rtt_ms), MAX(rtt_ms), AVG(jitter_ms), AVG(packet_loss), AVG(bitrate_kbps)
         FROM call_reports WHERE call_id = ?1",
        [call_id],
        |r| {
            Ok(QualitySummary {
                reports: r.get::<_, i64>(0)?.try_into().unwrap_or(0),
                avg_rtt_ms: r.get(1)?,
                max_rtt_ms: r.get(2)?,
                avg_jitter_ms: r.get(3)?,
                avg_packet_loss: r.get(4)?,
                avg_bitrate_kbps: r.get(5)?,
            })
        },
    )?)
}

/// One stored quality report of a call, as numbers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QualityReport {
    pub at: i64,
    pub user_id: String,
    pub sample: QualitySample,
}

/// A call's quality reports in time order, the newest `limit` of them.
pub(super) fn quality_reports(
    conn: &Connection,
    call_id: &str,
    limit: u32,
) -> Result<Vec<QualityReport>, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT at, user_id, rtt_ms, jitter_ms, packet_loss, bitrate_kbps FROM
           (SELECT id, at, user_id, rtt_ms, jitter_ms, packet_loss, bitrate_kbps FROM call_reports
            WHERE call_id = ?1 ORDER BY at DESC, id DESC LIMIT ?2)
         ORDER BY at, id",
    )?;
    let reports = stmt
        .query_map(params![call_id, limit], |r| {
            Ok(QualityReport {
                at: r.get(0)?,
                user_id: r.get(1)?,
                sample: QualitySample {
                    rtt_ms: r.get(2)?,
                    jitter_ms: r.get(3)?,
                    packet_loss: r.get(4)?,
                    bitrate_kbps: r.get(5)?,
                },
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(reports)
}

/// What the SFU measured on one track of a room participant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SfuTrack {
    pub call_id: String,
    pub peer_id: String,
    pub mid: String,
    pub user_id: String,
    /// `audio` or `video`.
    pub kind: String,
    /// `published` (the participant sends it) or `received` (a copy sent to the participant).
    pub direction: String,
    pub bytes: u64,
    pub packets: u64,
    pub loss: Option<f64>,
    pub rtt_ms: Option<f64>,
    pub nacks: u64,
    pub keyframe_requests: u64,
    pub updated_at: i64,
}

/// Records the latest figures of tracks (totals replace the earlier ones), in one transaction.
/// Tracks of calls that are gone are skipped.
pub(super) fn upsert_sfu_tracks(conn: &mut Connection, tracks: &[SfuTrack]) -> Result<(), Error> {
    let tx = super::begin_write(conn)?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO sfu_tracks (call_id, peer_id, mid, user_id, kind, direction, bytes,
                 packets, loss, rtt_ms, nacks, keyframe_requests, updated_at)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13
             WHERE EXISTS (SELECT 1 FROM calls WHERE id = ?1)
             ON CONFLICT (call_id, peer_id, mid) DO UPDATE SET
                 kind = excluded.kind, direction = excluded.direction, bytes = excluded.bytes,
                 packets = excluded.packets, loss = COALESCE(excluded.loss, loss),
                 rtt_ms = COALESCE(excluded.rtt_ms, rtt_ms), nacks = excluded.nacks,
                 keyframe_requests = excluded.keyframe_requests, updated_at = excluded.updated_at",
        )?;
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        for t in tracks {
            stmt.execute(params![
                t.call_id,
                t.peer_id,
                t.mid,
                t.user_id,
                t.kind,
                t.direction,
                n(t.bytes),
                n(t.packets),
                t.loss,
                t.rtt_ms,
                n(t.nacks),
                n(t.keyframe_requests),
                t.updated_at
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The SFU's figures for every track of a call, by participant and track.
pub(super) fn sfu_tracks(conn: &Connection, call_id: &str) -> Result<Vec<SfuTrack>, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT call_id, peer_id, mid, user_id, kind, direction, bytes, packets, loss, rtt_ms,
                nacks, keyframe_requests, updated_at
         FROM sfu_tracks WHERE call_id = ?1 ORDER BY user_id, peer_id, direction, mid",
    )?;
    let rows = stmt.query_map([call_id], |r| {
        let n = |i: usize| r.get::<_, i64>(i).map(|v| u64::try_from(v).unwrap_or(0));
        Ok(SfuTrack {
            call_id: r.get(0)?,
            peer_id: r.get(1)?,
            mid: r.get(2)?,
            user_id: r.get(3)?,
            kind: r.get(4)?,
            direction: r.get(5)?,
            bytes: n(6)?,
            packets: n(7)?,
            loss: r.get(8)?,
            rtt_ms: r.get(9)?,
            nacks: n(10)?,
            keyframe_requests: n(11)?,
            updated_at: r.get(12)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The most quality samples kept per participant of a call (an hour at one every 2 s).
pub const MAX_QUALITY_SAMPLES: i64 = 1800;

/// What the SFU sent one subscriber at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SfuQuality {
    pub call_id: String,
    pub peer_id: String,
    pub at: i64,
    pub estimate_kbps: Option<f64>,
    pub freezes: u64,
    /// JSON array of `{fromPeerId, mid, layer, paused, width}`.
    pub layers: String,
}

/// Appends quality samples, in one transaction; samples of calls that are gone, or beyond
/// [`MAX_QUALITY_SAMPLES`] for a participant, are skipped.
pub(super) fn insert_sfu_quality(
    conn: &mut Connection,
    samples: &[SfuQuality],
) -> Result<(), Error> {
    let tx = super::begin_write(conn)?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO sfu_quality (call_id, peer_id, at, estimate_kbps, freezes, layers)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6
             WHERE EXISTS (SELECT 1 FROM calls WHERE id = ?1)
               AND (SELECT COUNT(*) FROM sfu_quality WHERE call_id = ?1 AND peer_id = ?2) < ?7",
        )?;
        for q in samples {
            stmt.execute(params![
                q.call_id,
                q.peer_id,
                q.at,
                q.estimate_kbps,
                i64::try_from(q.freezes).unwrap_or(i64::MAX),
                q.layers,
                MAX_QUALITY_SAMPLES
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// A call's quality samples, by participant and time.
pub(super) fn sfu_quality(conn: &Connection, call_id: &str) -> Result<Vec<SfuQuality>, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT call_id, peer_id, at, estimate_kbps, freezes, layers FROM sfu_quality
         WHERE call_id = ?1 ORDER BY peer_id, at",
    )?;
    let rows = stmt.query_map([call_id], |r| {
        Ok(SfuQuality {
            call_id: r.get(0)?,
            peer_id: r.get(1)?,
            at: r.get(2)?,
            estimate_kbps: r.get(3)?,
            freezes: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
            layers: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One TURN allocation's usage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelaySession {
    pub user_id: String,
    pub username: String,
    pub transport: String,
    pub client_addr: String,
    pub relay_addr: String,
    pub opened_at: i64,
    pub closed_at: Option<i64>,
    pub bytes_to_peer: u64,
    pub bytes_from_peer: u64,
    pub packets_to_peer: u64,
    pub packets_from_peer: u64,
}

/// Records an allocation when it opens; returns its row id for the close.
pub(super) fn relay_opened(conn: &Connection, s: &RelaySession) -> Result<i64, Error> {
    conn.execute(
        "INSERT INTO relay_usage (user_id, username, transport, client_addr, relay_addr, opened_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            s.user_id,
            s.username,
            s.transport,
            s.client_addr,
            s.relay_addr,
            s.opened_at
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Completes an allocation's row with its totals (inserting it if the open was never seen).
pub(super) fn relay_closed(conn: &Connection, s: &RelaySession) -> Result<(), Error> {
    let to_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let updated = conn.execute(
        "UPDATE relay_usage SET closed_at = ?1, bytes_to_peer = ?2, bytes_from_peer = ?3,
             packets_to_peer = ?4, packets_from_peer = ?5
         WHERE id = (SELECT id FROM relay_usage WHERE relay_addr = ?6 AND client_addr = ?7
                     AND username = ?8 AND closed_at IS NULL ORDER BY id DESC LIMIT 1)",
        params![
            s.closed_at,
            to_i64(s.bytes_to_peer),
            to_i64(s.bytes_from_peer),
            to_i64(s.packets_to_peer),
            to_i64(s.packets_from_peer),
            s.relay_addr,
            s.client_addr,
            s.username
        ],
    )?;
    if updated == 0 {
        relay_opened(conn, s)?;
        return relay_closed(conn, s);
    }
    Ok(())
}

/// Allocations of `users` that overlap the window `[from, to]`.
pub(super) fn relay_sessions(
    conn: &Connection,
    users: &[String],
    from: i64,
    to: i64,
) -> Result<Vec<RelaySession>, Error> {
    let mut out = Vec::new();
    let mut stmt = conn.prepare_cached(
        "SELECT user_id, username, transport, client_addr, relay_addr, opened_at, closed_at,
                bytes_to_peer, bytes_from_peer, packets_to_peer, packets_from_peer
         FROM relay_usage WHERE user_id = ?1 AND opened_at <= ?3 AND COALESCE(closed_at, ?3) >= ?2
         ORDER BY opened_at",
    )?;
    for user in users {
        let rows = stmt.query_map(params![user, from, to], |r| {
            let n = |i: usize| r.get::<_, i64>(i).map(|v| u64::try_from(v).unwrap_or(0));
            Ok(RelaySession {
                user_id: r.get(0)?,
                username: r.get(1)?,
                transport: r.get(2)?,
                client_addr: r.get(3)?,
                relay_addr: r.get(4)?,
                opened_at: r.get(5)?,
                closed_at: r.get(6)?,
                bytes_to_peer: n(7)?,
                bytes_from_peer: n(8)?,
                packets_to_peer: n(9)?,
                packets_from_peer: n(10)?,
            })
        })?;
        for row in rows {
            out.push(row?);
        }
    }
    out.sort_by_key(|s| s.opened_at);
    Ok(out)
}

/// Everything stored about one call that `GET /calls/:id/analytics` shows.
#[derive(Debug, Clone)]
pub struct CallAnalytics {
    pub call: CallRecord,
    pub events: Vec<CallEvent>,
    pub quality: QualitySummary,
    /// Relay allocations of the participants overlapping the call (stored state only).
    pub relay: Vec<RelaySession>,
    pub sfu: Vec<SfuTrack>,
    pub sfu_quality: Vec<SfuQuality>,
}

/// Reads a visible call's analytics on one connection; a live call's window ends at `now`.
fn call_analytics(
    conn: &Connection,
    id: &str,
    principal: &Principal,
    now: i64,
) -> Result<CallAnalytics, Error> {
    let call = calls::get_visible(conn, id, principal)?;
    let events = calls::events(conn, id)?;
    let quality = quality(conn, id)?;
    let users: Vec<String> = call
        .participants
        .iter()
        .map(|p| p.user_id.clone())
        .collect();
    let window_end = call.ended_at.unwrap_or(now);
    let relay = relay_sessions(conn, &users, call.created_at, window_end)?;
    let sfu = sfu_tracks(conn, id)?;
    let sfu_quality = sfu_quality(conn, id)?;
    Ok(CallAnalytics {
        call,
        events,
        quality,
        relay,
        sfu,
        sfu_quality,
    })
}

impl Store {
    /// Stores a quality report by `principal`, who must take part in the call.
    pub async fn add_quality_report(
        &self,
        call_id: &str,
        principal: &Principal,
        now: i64,
        stats: Value,
    ) -> Result<(), Error> {
        if let Some(pg) = self.pg() {
            return self
                .timed(pg::analytics::add_quality_report(
                    pg, call_id, principal, now, stats,
                ))
                .await;
        }
        let (id, me) = (call_id.to_string(), principal.clone());
        self.run(move |c| {
            let call = calls::get_visible(c, &id, &me)?;
            if call.role_of(&me.id).is_none() {
                return Err(Error::forbidden("only participants report stats"));
            }
            add_report(c, &id, &me.id, now, &stats)
        })
        .await
    }

    /// A call's newest `limit` quality reports in time order; `NotFound` for an unknown call.
    pub async fn call_quality_reports(
        &self,
        call_id: &str,
        limit: u32,
    ) -> Result<Vec<QualityReport>, Error> {
        if let Some(pg) = self.pg() {
            return self
                .timed(pg::analytics::call_quality_reports(pg, call_id, limit))
                .await;
        }
        let id = call_id.to_string();
        self.run(move |c| {
            calls::get(c, &id)?.ok_or(Error::NotFound("call"))?;
            quality_reports(c, &id, limit)
        })
        .await
    }

    /// Everything stored about a call `principal` may see, for its analytics.
    pub async fn call_analytics(
        &self,
        call_id: &str,
        principal: &Principal,
        now: i64,
    ) -> Result<CallAnalytics, Error> {
        if let Some(pg) = self.pg() {
            return self
                .timed(pg::analytics::call_analytics(pg, call_id, principal, now))
                .await;
        }
        let (id, me) = (call_id.to_string(), principal.clone());
        self.run(move |c| call_analytics(c, &id, &me, now)).await
    }

    /// Records the SFU's latest track figures (see [`SfuTrack`]), in one transaction.
    pub async fn upsert_sfu_tracks(&self, tracks: Vec<SfuTrack>) -> Result<(), Error> {
        if let Some(pg) = self.pg() {
            return self
                .timed(pg::analytics::upsert_sfu_tracks(pg, tracks))
                .await;
        }
        self.run(move |c| upsert_sfu_tracks(c, &tracks)).await
    }

    /// Appends the SFU's quality samples, in one transaction.
    pub async fn insert_sfu_quality(&self, samples: Vec<SfuQuality>) -> Result<(), Error> {
        if let Some(pg) = self.pg() {
            return self
                .timed(pg::analytics::insert_sfu_quality(pg, samples))
                .await;
        }
        self.run(move |c| insert_sfu_quality(c, &samples)).await
    }

    /// Records a TURN allocation when it opens.
    pub async fn relay_opened(&self, session: RelaySession) -> Result<(), Error> {
        if let Some(pg) = self.pg() {
            return self.timed(pg::analytics::relay_opened(pg, session)).await;
        }
        self.run(move |c| relay_opened(c, &session).map(|_| ()))
            .await
    }

    /// Completes a TURN allocation's row with its totals.
    pub async fn relay_closed(&self, session: RelaySession) -> Result<(), Error> {
        if let Some(pg) = self.pg() {
            return self.timed(pg::analytics::relay_closed(pg, session)).await;
        }
        self.run(move |c| relay_closed(c, &session)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stats_summary_units_are_normalised() {
        let q = QualitySample::from_stats(
            &json!({"roundTripTime": 0.05, "jitter": 0.002, "packetLoss": 3, "bitrate": 800000}),
        );
        assert_eq!(q.rtt_ms, Some(50.0));
        assert_eq!(q.jitter_ms, Some(2.0));
        assert_eq!(q.packet_loss, Some(0.03));
        assert_eq!(q.bitrate_kbps, Some(800.0));
        let q = QualitySample::from_stats(&json!({"rttMs": "fast", "packetLoss": -1}));
        assert_eq!(q, QualitySample::default());
    }
}
