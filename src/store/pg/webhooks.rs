//! The webhook outbox on PostgreSQL (see [`crate::store::webhooks`]). Events are written on the
//! transaction of the change that caused them; the worker's claims, records, prunes and the
//! endpoint list take one advisory lock so two nodes never claim the same row.

use uuid::Uuid;

use crate::error::Error;
use crate::store::pg::{unsigned, Db, Pg};
use crate::store::webhooks::{Attempt, Claimed, Delivery, STATUSES, UNCONFIGURED};
use crate::webhooks::event::WebhookEvent;
use crate::webhooks::retry::{Next, RetryPolicy};

/// The advisory lock key of the outbox's writers.
const OUTBOX_LOCK: i64 = 0x5167_6e62_0002;

async fn lock_outbox<C: Db>(c: &C) -> Result<(), Error> {
    c.execute("SELECT pg_advisory_xact_lock($1)", &[&OUTBOX_LOCK])
        .await?;
    Ok(())
}

/// Writes `event` for every configured receiver, on `c` (inside the caller's transaction).
pub(crate) async fn emit<C: Db>(c: &C, event: &WebhookEvent, now: i64) -> Result<(), Error> {
    let any: bool = c
        .query_one("SELECT EXISTS (SELECT 1 FROM webhook_endpoints)", &[])
        .await?
        .try_get(0)?;
    if !any {
        return Ok(());
    }
    let id = Uuid::new_v4().to_string();
    let body = event.body(&id, now);
    c.execute(
        "INSERT INTO webhook_deliveries
           (event_id, event, url, ordering_key, body, created_at, next_attempt_at)
         SELECT $1::TEXT, $2::TEXT, url, $3::TEXT, $4::TEXT, $5::BIGINT, $5::BIGINT
         FROM webhook_endpoints ORDER BY url",
        &[&id, &event.name, &event.key, &body, &now],
    )
    .await?;
    Ok(())
}

async fn replace_endpoints(pg: &Pg, urls: &[String], release_claims: bool) -> Result<usize, Error> {
    let mut conn = pg.conn().await?;
    let tx = conn.transaction().await?;
    lock_outbox(&*tx).await?;
    tx.execute("DELETE FROM webhook_endpoints", &[]).await?;
    for url in urls {
        tx.execute(
            "INSERT INTO webhook_endpoints (url) VALUES ($1) ON CONFLICT (url) DO NOTHING",
            &[url],
        )
        .await?;
    }
    if release_claims {
        tx.execute(
            "UPDATE webhook_deliveries SET claimed_until = NULL WHERE status = 'pending'",
            &[],
        )
        .await?;
    }
    let failed = tx
        .execute(
            "UPDATE webhook_deliveries
             SET status = 'failed', last_error = $1, next_attempt_at = NULL, claimed_until = NULL
             WHERE status = 'pending' AND url NOT IN (SELECT url FROM webhook_endpoints)",
            &[&UNCONFIGURED],
        )
        .await?;
    tx.commit().await?;
    Ok(usize::try_from(failed).unwrap_or(usize::MAX))
}

pub async fn set_webhook_endpoints(pg: &Pg, urls: Vec<String>) -> Result<usize, Error> {
    replace_endpoints(pg, &urls, true).await
}

pub async fn reload_webhook_endpoints(pg: &Pg, urls: Vec<String>) -> Result<usize, Error> {
    replace_endpoints(pg, &urls, false).await
}

const DUE: &str = "SELECT seq, event_id, event, url, body, attempts, created_at
     FROM webhook_deliveries d
     WHERE status = 'pending' AND next_attempt_at <= $1
       AND (claimed_until IS NULL OR claimed_until <= $1)
       AND NOT EXISTS (
         SELECT 1 FROM webhook_deliveries e
         WHERE e.status = 'pending' AND e.url = d.url
           AND e.ordering_key = d.ordering_key AND e.seq < d.seq)
     ORDER BY seq LIMIT $2";

async fn due<C: Db>(c: &C, now: i64, limit: i64) -> Result<Vec<Claimed>, Error> {
    c.query(DUE, &[&now, &limit])
        .await?
        .iter()
        .map(|r| {
            Ok(Claimed {
                seq: r.try_get(0)?,
                event_id: r.try_get(1)?,
                event: r.try_get(2)?,
                url: r.try_get(3)?,
                body: r.try_get(4)?,
                attempts: unsigned(r.try_get::<_, i64>(5)?),
                created_at: r.try_get(6)?,
            })
        })
        .collect()
}

pub async fn claim_webhooks(
    pg: &Pg,
    now: i64,
    lease_ms: i64,
    limit: usize,
) -> Result<Vec<Claimed>, Error> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut conn = pg.conn().await?;
    // Read first: an idle outbox takes no lock.
    if due(&**conn, now, limit).await?.is_empty() {
        return Ok(Vec::new());
    }
    let tx = conn.transaction().await?;
    lock_outbox(&*tx).await?;
    let claimed = due(&*tx, now, limit).await?;
    for c in &claimed {
        tx.execute(
            "UPDATE webhook_deliveries SET claimed_until = $2 WHERE seq = $1",
            &[&c.seq, &now.saturating_add(lease_ms)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(claimed)
}

pub async fn record_webhook_attempt(
    pg: &Pg,
    seq: i64,
    now: i64,
    attempt: Attempt,
    policy: RetryPolicy,
) -> Result<(), Error> {
    let mut conn = pg.conn().await?;
    let tx = conn.transaction().await?;
    lock_outbox(&*tx).await?;
    let row = tx
        .query_opt(
            "SELECT attempts, created_at FROM webhook_deliveries
             WHERE seq = $1 AND status = 'pending'",
            &[&seq],
        )
        .await?;
    let Some(row) = row else {
        return Ok(());
    };
    let attempts: u32 = unsigned::<u32>(row.try_get::<_, i64>(0)?).saturating_add(1);
    let created_at: i64 = row.try_get(1)?;
    match &attempt {
        Attempt::Delivered { status } => {
            tx.execute(
                "UPDATE webhook_deliveries
                 SET status = 'delivered', attempts = $2, last_status = $3, last_error = NULL,
                     delivered_at = $4, next_attempt_at = NULL, claimed_until = NULL
                 WHERE seq = $1",
                &[&seq, &i64::from(attempts), &i64::from(*status), &now],
            )
            .await?;
        }
        Attempt::Failed { status, error } => {
            let (state, next) = match policy.after_failure(attempts, created_at, now) {
                Next::RetryAt(at) => ("pending", Some(at)),
                Next::GiveUp => ("failed", None),
            };
            tx.execute(
                "UPDATE webhook_deliveries
                 SET status = $2, attempts = $3, last_status = $4, last_error = $5,
                     next_attempt_at = $6, claimed_until = NULL
                 WHERE seq = $1",
                &[
                    &seq,
                    &state,
                    &i64::from(attempts),
                    &status.map(i64::from),
                    error,
                    &next,
                ],
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

pub async fn recent_webhook_deliveries(pg: &Pg, limit: u32) -> Result<Vec<Delivery>, Error> {
    let c = pg.conn().await?;
    c.query(
        "SELECT event_id, event, url, status, attempts, last_error, last_status, created_at,
                delivered_at, next_attempt_at
         FROM webhook_deliveries ORDER BY seq DESC LIMIT $1",
        &[&i64::from(limit)],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(Delivery {
            id: r.try_get(0)?,
            event: r.try_get(1)?,
            url: r.try_get(2)?,
            status: r.try_get(3)?,
            attempts: unsigned(r.try_get::<_, i64>(4)?),
            last_error: r.try_get(5)?,
            last_status: r.try_get::<_, Option<i64>>(6)?.map(unsigned),
            created_at: r.try_get(7)?,
            delivered_at: r.try_get(8)?,
            next_attempt_at: r.try_get(9)?,
        })
    })
    .collect()
}

pub async fn webhook_counts_by_status(pg: &Pg) -> Result<Vec<(&'static str, u64)>, Error> {
    let c = pg.conn().await?;
    let rows = c
        .query(
            "SELECT status, COUNT(*) FROM webhook_deliveries GROUP BY status",
            &[],
        )
        .await?;
    let mut counts = Vec::new();
    for r in rows {
        counts.push((r.try_get::<_, String>(0)?, r.try_get::<_, i64>(1)?));
    }
    Ok(STATUSES
        .iter()
        .map(|s| {
            let n = counts
                .iter()
                .find(|(status, _)| status == s)
                .map(|(_, n)| *n);
            (*s, unsigned(n.unwrap_or(0)))
        })
        .collect())
}

pub async fn prune_webhooks(pg: &Pg, cutoff: i64) -> Result<usize, Error> {
    let mut conn = pg.conn().await?;
    let tx = conn.transaction().await?;
    lock_outbox(&*tx).await?;
    let n = tx
        .execute(
            "DELETE FROM webhook_deliveries WHERE status != 'pending' AND created_at < $1",
            &[&cutoff],
        )
        .await?;
    tx.commit().await?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}
