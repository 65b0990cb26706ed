//! Quality reports, TURN relay usage and the SFU's figures on PostgreSQL (see
//! [`crate::store::analytics`]).

use serde_json::Value;
use tokio_postgres::Row;

use crate::auth::Principal;
use crate::error::Error;
use crate::store::analytics::{
    CallAnalytics, QualityReport, QualitySample, QualitySummary, RelaySession, SfuQuality,
    SfuTrack, MAX_QUALITY_SAMPLES,
};
use crate::store::pg::{big, calls, unsigned, Db, Pg};

pub async fn add_quality_report(
    pg: &Pg,
    call_id: &str,
    principal: &Principal,
    now: i64,
    stats: Value,
) -> Result<(), Error> {
    let c = pg.conn().await?;
    let call = calls::get_visible(&**c, call_id, principal).await?;
    if call.role_of(&principal.id).is_none() {
        return Err(Error::forbidden("only participants report stats"));
    }
    let q = QualitySample::from_stats(&stats);
    c.execute(
        "INSERT INTO call_reports (call_id, user_id, at, rtt_ms, jitter_ms, packet_loss, bitrate_kbps, raw)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[&call_id, &principal.id, &now, &q.rtt_ms, &q.jitter_ms, &q.packet_loss, &q.bitrate_kbps, &stats.to_string()],
    )
    .await?;
    Ok(())
}

async fn quality<C: Db>(c: &C, call_id: &str) -> Result<QualitySummary, Error> {
    let r = c
        .query_one(
            "SELECT COUNT(*), AVG(rtt_ms), MAX(rtt_ms), AVG(jitter_ms), AVG(packet_loss), AVG(bitrate_kbps)
             FROM call_reports WHERE call_id = $1",
            &[&call_id],
        )
        .await?;
    Ok(QualitySummary {
        reports: unsigned(r.try_get::<_, i64>(0)?),
        avg_rtt_ms: r.try_get(1)?,
        max_rtt_ms: r.try_get(2)?,
        avg_jitter_ms: r.try_get(3)?,
        avg_packet_loss: r.try_get(4)?,
        avg_bitrate_kbps: r.try_get(5)?,
    })
}

pub async fn call_quality_reports(
    pg: &Pg,
    call_id: &str,
    limit: u32,
) -> Result<Vec<QualityReport>, Error> {
    let c = pg.conn().await?;
    calls::get(&**c, call_id)
        .await?
        .ok_or(Error::NotFound("call"))?;
    c.query(
        "SELECT at, user_id, rtt_ms, jitter_ms, packet_loss, bitrate_kbps FROM
           (SELECT id, at, user_id, rtt_ms, jitter_ms, packet_loss, bitrate_kbps FROM call_reports
            WHERE call_id = $1 ORDER BY at DESC, id DESC LIMIT $2) AS newest
         ORDER BY at, id",
        &[&call_id, &i64::from(limit)],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(QualityReport {
            at: r.try_get(0)?,
            user_id: r.try_get(1)?,
            sample: QualitySample {
                rtt_ms: r.try_get(2)?,
                jitter_ms: r.try_get(3)?,
                packet_loss: r.try_get(4)?,
                bitrate_kbps: r.try_get(5)?,
            },
        })
    })
    .collect()
}

async fn call_exists<C: Db>(c: &C, id: &str) -> Result<bool, Error> {
    Ok(
        c.query_one("SELECT EXISTS (SELECT 1 FROM calls WHERE id = $1)", &[&id])
            .await?
            .try_get(0)?,
    )
}

pub async fn upsert_sfu_tracks(pg: &Pg, tracks: Vec<SfuTrack>) -> Result<(), Error> {
    let mut conn = pg.conn().await?;
    let tx = conn.transaction().await?;
    for t in &tracks {
        if !call_exists(&*tx, &t.call_id).await? {
            continue;
        }
        tx.execute(
            "INSERT INTO sfu_tracks (call_id, peer_id, mid, user_id, kind, direction, bytes,
                 packets, loss, rtt_ms, nacks, keyframe_requests, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT (call_id, peer_id, mid) DO UPDATE SET
                 kind = excluded.kind, direction = excluded.direction, bytes = excluded.bytes,
                 packets = excluded.packets, loss = COALESCE(excluded.loss, sfu_tracks.loss),
                 rtt_ms = COALESCE(excluded.rtt_ms, sfu_tracks.rtt_ms), nacks = excluded.nacks,
                 keyframe_requests = excluded.keyframe_requests, updated_at = excluded.updated_at",
            &[
                &t.call_id,
                &t.peer_id,
                &t.mid,
                &t.user_id,
                &t.kind,
                &t.direction,
                &big(t.bytes),
                &big(t.packets),
                &t.loss,
                &t.rtt_ms,
                &big(t.nacks),
                &big(t.keyframe_requests),
                &t.updated_at,
            ],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn sfu_tracks<C: Db>(c: &C, call_id: &str) -> Result<Vec<SfuTrack>, Error> {
    c.query(
        "SELECT call_id, peer_id, mid, user_id, kind, direction, bytes, packets, loss, rtt_ms,
                nacks, keyframe_requests, updated_at
         FROM sfu_tracks WHERE call_id = $1 ORDER BY user_id, peer_id, direction, mid",
        &[&call_id],
    )
    .await?
    .iter()
    .map(|r| {
        let n = |i: usize| r.try_get::<_, i64>(i).map(unsigned::<u64>);
        Ok(SfuTrack {
            call_id: r.try_get(0)?,
            peer_id: r.try_get(1)?,
            mid: r.try_get(2)?,
            user_id: r.try_get(3)?,
            kind: r.try_get(4)?,
            direction: r.try_get(5)?,
            bytes: n(6)?,
            packets: n(7)?,
            loss: r.try_get(8)?,
            rtt_ms: r.try_get(9)?,
            nacks: n(10)?,
            keyframe_requests: n(11)?,
            updated_at: r.try_get(12)?,
        })
    })
    .collect()
}

pub async fn insert_sfu_quality(pg: &Pg, samples: Vec<SfuQuality>) -> Result<(), Error> {
    let mut conn = pg.conn().await?;
    let tx = conn.transaction().await?;
    for q in &samples {
        let room: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM calls WHERE id = $1)
                   AND (SELECT COUNT(*) FROM sfu_quality WHERE call_id = $1 AND peer_id = $2) < $3",
                &[&q.call_id, &q.peer_id, &MAX_QUALITY_SAMPLES],
            )
            .await?
            .try_get(0)?;
        if !room {
            continue;
        }
        tx.execute(
            "INSERT INTO sfu_quality (call_id, peer_id, at, estimate_kbps, freezes, layers)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &q.call_id,
                &q.peer_id,
                &q.at,
                &q.estimate_kbps,
                &big(q.freezes),
                &q.layers,
            ],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn sfu_quality<C: Db>(c: &C, call_id: &str) -> Result<Vec<SfuQuality>, Error> {
    c.query(
        "SELECT call_id, peer_id, at, estimate_kbps, freezes, layers FROM sfu_quality
         WHERE call_id = $1 ORDER BY peer_id, at",
        &[&call_id],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(SfuQuality {
            call_id: r.try_get(0)?,
            peer_id: r.try_get(1)?,
            at: r.try_get(2)?,
            estimate_kbps: r.try_get(3)?,
            freezes: unsigned(r.try_get::<_, i64>(4)?),
            layers: r.try_get(5)?,
        })
    })
    .collect()
}

async fn insert_relay<C: Db>(c: &C, s: &RelaySession) -> Result<(), Error> {
    c.execute(
        "INSERT INTO relay_usage (user_id, username, transport, client_addr, relay_addr, opened_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &s.user_id,
            &s.username,
            &s.transport,
            &s.client_addr,
            &s.relay_addr,
            &s.opened_at,
        ],
    )
    .await?;
    Ok(())
}

pub async fn relay_opened(pg: &Pg, session: RelaySession) -> Result<(), Error> {
    let c = pg.conn().await?;
    insert_relay(&**c, &session).await
}

pub async fn relay_closed(pg: &Pg, s: RelaySession) -> Result<(), Error> {
    let mut conn = pg.conn().await?;
    let tx = conn.transaction().await?;
    let close = "UPDATE relay_usage SET closed_at = $1, bytes_to_peer = $2, bytes_from_peer = $3,
             packets_to_peer = $4, packets_from_peer = $5
         WHERE id = (SELECT id FROM relay_usage WHERE relay_addr = $6 AND client_addr = $7
                     AND username = $8 AND closed_at IS NULL ORDER BY id DESC LIMIT 1)";
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
        &s.closed_at,
        &big(s.bytes_to_peer),
        &big(s.bytes_from_peer),
        &big(s.packets_to_peer),
        &big(s.packets_from_peer),
        &s.relay_addr,
        &s.client_addr,
        &s.username,
    ];
    if tx.execute(close, &params).await? == 0 {
        // The open was never seen: insert the row, then close it.
        insert_relay(&*tx, &s).await?;
        tx.execute(close, &params).await?;
    }
    tx.commit().await?;
    Ok(())
}

fn row_to_relay(r: &Row) -> Result<RelaySession, Error> {
    let n = |i: usize| r.try_get::<_, i64>(i).map(unsigned::<u64>);
    Ok(RelaySession {
        user_id: r.try_get(0)?,
        username: r.try_get(1)?,
        transport: r.try_get(2)?,
        client_addr: r.try_get(3)?,
        relay_addr: r.try_get(4)?,
        opened_at: r.try_get(5)?,
        closed_at: r.try_get(6)?,
        bytes_to_peer: n(7)?,
        bytes_from_peer: n(8)?,
        packets_to_peer: n(9)?,
        packets_from_peer: n(10)?,
    })
}

async fn relay_sessions<C: Db>(
    c: &C,
    users: &[String],
    from: i64,
    to: i64,
) -> Result<Vec<RelaySession>, Error> {
    let mut out = Vec::new();
    for user in users {
        let rows = c
            .query(
                "SELECT user_id, username, transport, client_addr, relay_addr, opened_at, closed_at,
                        bytes_to_peer, bytes_from_peer, packets_to_peer, packets_from_peer
                 FROM relay_usage
                 WHERE user_id = $1 AND opened_at <= $3 AND COALESCE(closed_at, $3) >= $2
                 ORDER BY opened_at",
                &[user, &from, &to],
            )
            .await?;
        for r in &rows {
            out.push(row_to_relay(r)?);
        }
    }
    out.sort_by_key(|s| s.opened_at);
    Ok(out)
}

pub async fn call_analytics(
    pg: &Pg,
    call_id: &str,
    principal: &Principal,
    now: i64,
) -> Result<CallAnalytics, Error> {
    let c = pg.conn().await?;
    let c = &**c;
    let call = calls::get_visible(c, call_id, principal).await?;
    let events = calls::events(c, call_id).await?;
    let quality = quality(c, call_id).await?;
    let users: Vec<String> = call
        .participants
        .iter()
        .map(|p| p.user_id.clone())
        .collect();
    let window_end = call.ended_at.unwrap_or(now);
    let relay = relay_sessions(c, &users, call.created_at, window_end).await?;
    let sfu = sfu_tracks(c, call_id).await?;
    let sfu_quality = sfu_quality(c, call_id).await?;
    Ok(CallAnalytics {
        call,
        events,
        quality,
        relay,
        sfu,
        sfu_quality,
    })
}
