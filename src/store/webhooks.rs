//! The webhook outbox. `webhook_endpoints` holds the receiver URLs the running server is
//! configured with; [`emit`] writes an event as one `webhook_deliveries` row per receiver, on the
//! connection (and so in the transaction) of the change that caused it, and writes nothing when
//! no receiver is configured. The worker [`claim`]s the rows due now — only the oldest pending
//! row of each (receiver, call or room), so one call's events go out in order — and
//! [`record`]s each attempt: delivered, or retried on the [`RetryPolicy`] until it is failed.
//! Time is passed in (Unix ms); nothing here reads a clock.

use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use crate::error::Error;
use crate::store::{pg, Store};
use crate::webhooks::event::WebhookEvent;
use crate::webhooks::retry::{Next, RetryPolicy};

/// Why pending deliveries to a URL that left the configuration are failed.
pub const UNCONFIGURED: &str = "the URL is no longer in webhook_urls";

/// Makes `urls` the receivers of new events. Run at start-up by the one server that owns the
/// database: it also releases claims a previous run left (their attempts are retried), and fails
/// the pending deliveries to URLs no longer configured. Returns how many it failed.
pub(super) fn set_endpoints(conn: &mut Connection, urls: &[String]) -> Result<usize, Error> {
    replace_endpoints(conn, urls, true)
}

/// Makes `urls` the receivers of new events while the worker runs (a config reload): like
/// [`set_endpoints`], but attempts in flight keep their claims.
pub(super) fn reload_endpoints(conn: &mut Connection, urls: &[String]) -> Result<usize, Error> {
    replace_endpoints(conn, urls, false)
}

fn replace_endpoints(
    conn: &mut Connection,
    urls: &[String],
    release_claims: bool,
) -> Result<usize, Error> {
    let tx = super::begin_write(conn)?;
    tx.execute("DELETE FROM webhook_endpoints", [])?;
    for url in urls {
        tx.execute(
            "INSERT INTO webhook_endpoints (url) VALUES (?1) ON CONFLICT(url) DO NOTHING",
            [url],
        )?;
    }
    if release_claims {
        tx.execute(
            "UPDATE webhook_deliveries SET claimed_until = NULL WHERE status = 'pending'",
            [],
        )?;
    }
    let failed = tx.execute(
        "UPDATE webhook_deliveries
         SET status = 'failed', last_error = ?1, next_attempt_at = NULL, claimed_until = NULL
         WHERE status = 'pending' AND url NOT IN (SELECT url FROM webhook_endpoints)",
        params![UNCONFIGURED],
    )?;
    tx.commit()?;
    Ok(failed)
}

/// Writes `event` (with id `id`, happened at `now`) for every configured receiver. Runs on the
/// caller's connection: inside a transaction, it commits or rolls back with it. Returns the
/// rows written (0 without receivers).
pub(super) fn enqueue(
    conn: &Connection,
    event: &WebhookEvent,
    id: &str,
    now: i64,
) -> Result<usize, Error> {
    let any: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM webhook_endpoints)")?
        .query_row([], |r| r.get(0))?;
    if !any {
        return Ok(0);
    }
    let body = event.body(id, now);
    let written = conn
        .prepare_cached(
            "INSERT INTO webhook_deliveries
               (event_id, event, url, ordering_key, body, created_at, next_attempt_at)
             SELECT ?1, ?2, url, ?3, ?4, ?5, ?5 FROM webhook_endpoints ORDER BY url",
        )?
        .execute(params![id, event.name, event.key, body, now])?;
    Ok(written)
}

/// [`enqueue`] with a fresh event id.
pub(super) fn emit(conn: &Connection, event: &WebhookEvent, now: i64) -> Result<(), Error> {
    enqueue(conn, event, &Uuid::new_v4().to_string(), now).map(|_| ())
}

/// A delivery the worker is to attempt now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub seq: i64,
    pub event_id: String,
    pub event: String,
    pub url: String,
    /// The raw JSON body, exactly as signed and sent.
    pub body: String,
    /// Attempts made before this one.
    pub attempts: u32,
    pub created_at: i64,
}

/// Claims up to `limit` deliveries due at `now`, each the oldest pending row of its receiver
/// and ordering key, for `lease_ms`: until then (or until [`record`]) no other claim returns it,
/// and the rows after it wait.
pub(super) fn claim(
    conn: &mut Connection,
    now: i64,
    lease_ms: i64,
    limit: usize,
) -> Result<Vec<Claimed>, Error> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    // Read first: an idle outbox costs no write lock.
    let select = "SELECT seq, event_id, event, url, body, attempts, created_at
         FROM webhook_deliveries d
         WHERE status = 'pending' AND next_attempt_at <= ?1
           AND (claimed_until IS NULL OR claimed_until <= ?1)
           AND NOT EXISTS (
             SELECT 1 FROM webhook_deliveries e
             WHERE e.status = 'pending' AND e.url = d.url
               AND e.ordering_key = d.ordering_key AND e.seq < d.seq)
         ORDER BY seq LIMIT ?2";
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let due = |c: &Connection| -> Result<Vec<Claimed>, Error> {
        let mut stmt = c.prepare_cached(select)?;
        let rows = stmt.query_map(params![now, limit], |r| {
            Ok(Claimed {
                seq: r.get(0)?,
                event_id: r.get(1)?,
                event: r.get(2)?,
                url: r.get(3)?,
                body: r.get(4)?,
                attempts: r.get(5)?,
                created_at: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    };
    if due(conn)?.is_empty() {
        return Ok(Vec::new());
    }
    let tx = super::begin_write(conn)?;
    let claimed = due(&tx)?;
    for c in &claimed {
        tx.execute(
            "UPDATE webhook_deliveries SET claimed_until = ?2 WHERE seq = ?1",
            params![c.seq, now.saturating_add(lease_ms)],
        )?;
    }
    tx.commit()?;
    Ok(claimed)
}

/// How one attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The receiver answered 2xx.
    Delivered { status: u16 },
    /// A non-2xx answer (`status`), or no answer at all (connection error, timeout).
    Failed { status: Option<u16>, error: String },
}

/// Records an attempt of a claimed delivery made at `now`: delivered, or failed and either
/// scheduled again by `policy` or, past its maximum age, marked failed for good.
pub(super) fn record(
    conn: &mut Connection,
    seq: i64,
    now: i64,
    attempt: &Attempt,
    policy: &RetryPolicy,
) -> Result<(), Error> {
    let tx = super::begin_write(conn)?;
    let row: Option<(u32, i64)> = tx
        .query_row(
            "SELECT attempts, created_at FROM webhook_deliveries
             WHERE seq = ?1 AND status = 'pending'",
            [seq],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((attempts, created_at)) = row else {
        return Ok(());
    };
    let attempts = attempts.saturating_add(1);
    match attempt {
        Attempt::Delivered { status } => {
            tx.execute(
                "UPDATE webhook_deliveries
                 SET status = 'delivered', attempts = ?2, last_status = ?3, last_error = NULL,
                     delivered_at = ?4, next_attempt_at = NULL, claimed_until = NULL
                 WHERE seq = ?1",
                params![seq, attempts, status, now],
            )?;
        }
        Attempt::Failed { status, error } => {
            let (state, next) = match policy.after_failure(attempts, created_at, now) {
                Next::RetryAt(at) => ("pending", Some(at)),
                Next::GiveUp => ("failed", None),
            };
            tx.execute(
                "UPDATE webhook_deliveries
                 SET status = ?2, attempts = ?3, last_status = ?4, last_error = ?5,
                     next_attempt_at = ?6, claimed_until = NULL
                 WHERE seq = ?1",
                params![seq, state, attempts, status, error, next],
            )?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// One delivery: an event for one receiver, and how its attempts went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The event's id (the `id` of the body; the same for each receiver of one event).
    pub id: String,
    pub event: String,
    pub url: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub last_status: Option<u16>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
    pub next_attempt_at: Option<i64>,
}

/// The `limit` most recent deliveries, newest first.
pub(super) fn recent(conn: &Connection, limit: u32) -> Result<Vec<Delivery>, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT event_id, event, url, status, attempts, last_error, last_status, created_at,
                delivered_at, next_attempt_at
         FROM webhook_deliveries ORDER BY seq DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit], |r| {
        Ok(Delivery {
            id: r.get(0)?,
            event: r.get(1)?,
            url: r.get(2)?,
            status: r.get(3)?,
            attempts: r.get(4)?,
            last_error: r.get(5)?,
            last_status: r.get(6)?,
            created_at: r.get(7)?,
            delivered_at: r.get(8)?,
            next_attempt_at: r.get(9)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The three statuses of a delivery.
pub const STATUSES: &[&str] = &["pending", "delivered", "failed"];

/// How many deliveries are in each status (for `/metrics`), every status listed.
pub(super) fn count_by_status(conn: &Connection) -> Result<Vec<(&'static str, u64)>, Error> {
    let mut stmt =
        conn.prepare_cached("SELECT status, COUNT(*) FROM webhook_deliveries GROUP BY status")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(STATUSES
        .iter()
        .map(|s| {
            let n = rows.iter().find(|(status, _)| status == s).map(|(_, n)| *n);
            (*s, u64::try_from(n.unwrap_or(0)).unwrap_or(0))
        })
        .collect())
}

/// Deletes delivered and failed rows of events older than `cutoff`; returns how many.
pub(super) fn prune(conn: &mut Connection, cutoff: i64) -> Result<usize, Error> {
    let tx = super::begin_write(conn)?;
    let n = tx.execute(
        "DELETE FROM webhook_deliveries WHERE status != 'pending' AND created_at < ?1",
        [cutoff],
    )?;
    tx.commit()?;
    Ok(n)
}

impl Store {
    /// Makes `urls` the receivers of new events at start-up: releases claims a previous run
    /// left and fails pending deliveries to URLs no longer configured (returns how many).
    pub async fn set_webhook_endpoints(&self, urls: Vec<String>) -> Result<usize, Error> {
        if let Some(pg) = self.pg() {
            return self
                .timed(pg::webhooks::set_webhook_endpoints(pg, urls))
                .await;
        }
        self.run(move |c| set_endpoints(c, &urls)).await
    }

    /// Makes `urls` the receivers of new events on a config reload: like
    /// [`Store::set_webhook_endpoints`], but attempts in flight keep their claims.
    pub async fn reload_webhook_endpoints(&self, urls: Vec<String>) -> Result<usize, Error> {
        if let Some(pg) = self.pg() {
            return self
                .timed(pg::webhooks::reload_webhook_endpoints(pg, urls))
                .await;
        }
        self.run(move |c| reload_endpoints(c, &urls)).await
    }

    /// Claims up to `limit` deliveries due at `now` for `lease_ms` (see [`Claimed`]).
    pub async fn claim_webhooks(
        &self,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<Claimed>, Error> {
        if let Some(pg) = self.pg() {
            return self
                .timed(pg::webhooks::claim_webhooks(pg, now, lease_ms, limit))
                .await;
        }
        self.run(move |c| claim(c, now, lease_ms, limit)).await
    }

    /// Records an attempt of claimed delivery `seq` made at `now`, rescheduled by `policy`.
    pub async fn record_webhook_attempt(
        &self,
        seq: i64,
        now: i64,
        attempt: Attempt,
        policy: RetryPolicy,
    ) -> Result<(), Error> {
        if let Some(pg) = self.pg() {
            return self
                .timed(pg::webhooks::record_webhook_attempt(
                    pg, seq, now, attempt, policy,
                ))
                .await;
        }
        self.run(move |c| record(c, seq, now, &attempt, &policy))
            .await
    }

    /// The `limit` most recent deliveries, newest first.
    pub async fn recent_webhook_deliveries(&self, limit: u32) -> Result<Vec<Delivery>, Error> {
        if let Some(pg) = self.pg() {
            return self
                .timed(pg::webhooks::recent_webhook_deliveries(pg, limit))
                .await;
        }
        self.run(move |c| recent(c, limit)).await
    }

    /// How many deliveries are in each status (for `/metrics`), every status listed.
    pub async fn webhook_counts_by_status(&self) -> Result<Vec<(&'static str, u64)>, Error> {
        if let Some(pg) = self.pg() {
            return self.timed(pg::webhooks::webhook_counts_by_status(pg)).await;
        }
        self.run(|c| count_by_status(c)).await
    }

    /// Deletes delivered and failed deliveries of events older than `cutoff`; returns how many.
    pub async fn prune_webhooks(&self, cutoff: i64) -> Result<usize, Error> {
        if let Some(pg) = self.pg() {
            return self.timed(pg::webhooks::prune_webhooks(pg, cutoff)).await;
        }
        self.run(move |c| prune(c, cutoff)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().expect("open");
        crate::store::migrations::apply(&mut c).expect("migrate");
        c
    }

    fn event(name: &'static str, key: &str, n: i64) -> WebhookEvent {
        WebhookEvent {
            name,
            key: key.into(),
            fields: json!({ "n": n }).as_object().cloned().unwrap_or_default(),
        }
    }

    const A: &str = "http://127.0.0.1:1/a";
    const B: &str = "http://127.0.0.1:1/b";

    fn endpoints(c: &mut Connection, urls: &[&str]) -> usize {
        let urls: Vec<String> = urls.iter().map(|s| s.to_string()).collect();
        set_endpoints(c, &urls).expect("endpoints")
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            first: Duration::from_secs(1),
            cap: Duration::from_secs(4),
            max_age: Duration::from_secs(10),
        }
    }

    fn seqs(claimed: &[Claimed]) -> Vec<(String, String)> {
        claimed
            .iter()
            .map(|c| (c.event_id.clone(), c.url.clone()))
            .collect()
    }

    #[test]
    fn nothing_is_written_without_receivers_and_one_row_per_receiver_with() {
        let mut c = db();
        assert_eq!(
            enqueue(&c, &event("call.started", "call:1", 1), "e1", 10).expect("q"),
            0
        );
        endpoints(&mut c, &[A, B]);
        assert_eq!(
            enqueue(&c, &event("call.started", "call:1", 1), "e2", 10).expect("q"),
            2
        );
        let rows = recent(&c, 50).expect("recent");
        assert_eq!(rows.len(), 2);
        assert!(rows
            .iter()
            .all(|r| r.id == "e2" && r.status == "pending" && r.attempts == 0));
        assert!(rows.iter().all(|r| r.next_attempt_at == Some(10)));
    }

    #[test]
    fn claims_only_the_head_of_each_key_until_it_is_acknowledged() {
        let mut c = db();
        endpoints(&mut c, &[A]);
        enqueue(&c, &event("call.started", "call:1", 1), "c1-a", 10).expect("q");
        enqueue(
            &c,
            &event("room.participant_joined", "room:9", 1),
            "r9-a",
            11,
        )
        .expect("q");
        enqueue(&c, &event("call.ended", "call:1", 2), "c1-b", 12).expect("q");
        let first = claim(&mut c, 20, 1_000, 10).expect("claim");
        assert_eq!(
            seqs(&first),
            [
                ("c1-a".to_string(), A.to_string()),
                ("r9-a".to_string(), A.to_string())
            ],
            "the second event of call 1 waits for the first"
        );
        // Claimed rows are not handed out twice while the lease runs.
        assert!(claim(&mut c, 21, 1_000, 10).expect("claim").is_empty());
        record(
            &mut c,
            first[0].seq,
            22,
            &Attempt::Delivered { status: 204 },
            &policy(),
        )
        .expect("ack");
        let next = claim(&mut c, 23, 1_000, 10).expect("claim");
        assert_eq!(seqs(&next), [("c1-b".to_string(), A.to_string())]);
        let rows = recent(&c, 50).expect("recent");
        let delivered = rows.iter().find(|r| r.id == "c1-a").expect("row");
        assert_eq!(delivered.status, "delivered");
        assert_eq!(delivered.attempts, 1);
        assert_eq!(delivered.last_status, Some(204));
        assert_eq!(delivered.delivered_at, Some(22));
        assert_eq!(delivered.next_attempt_at, None);
    }

    #[test]
    fn a_failed_attempt_is_retried_on_schedule_and_holds_back_its_successors() {
        let mut c = db();
        endpoints(&mut c, &[A, B]);
        enqueue(&c, &event("call.started", "call:1", 1), "e1", 1_000).expect("q");
        enqueue(&c, &event("call.ended", "call:1", 2), "e2", 1_001).expect("q");
        let claimed = claim(&mut c, 1_000_000, 60_000, 10).expect("claim");
        // One head per receiver: both receivers get e1 first.
        assert_eq!(claimed.len(), 2);
        let to_a = claimed.iter().find(|x| x.url == A).expect("a");
        let to_b = claimed.iter().find(|x| x.url == B).expect("b");
        let fail = Attempt::Failed {
            status: Some(500),
            error: "HTTP 500".into(),
        };
        let now = 1_002;
        record(&mut c, to_a.seq, now, &fail, &policy()).expect("fail");
        record(
            &mut c,
            to_b.seq,
            now,
            &Attempt::Delivered { status: 200 },
            &policy(),
        )
        .expect("ack");
        // B moves on to e2; A waits 1 s for its retry of e1, and e2 waits behind it.
        assert_eq!(
            seqs(&claim(&mut c, now + 500, 60_000, 10).expect("claim")),
            [("e2".to_string(), B.to_string())]
        );
        let retry = claim(&mut c, now + 1_000, 60_000, 10).expect("claim");
        assert_eq!(seqs(&retry), [("e1".to_string(), A.to_string())]);
        assert_eq!(retry[0].attempts, 1);
        let row = |c: &Connection, id: &str| {
            recent(c, 50)
                .expect("recent")
                .into_iter()
                .find(|r| r.id == id && r.url == A)
                .expect("row")
        };
        let e1 = row(&c, "e1");
        assert_eq!(
            (e1.last_status, e1.last_error.as_deref()),
            (Some(500), Some("HTTP 500"))
        );
        // The second failure waits 2 s.
        record(&mut c, retry[0].seq, now + 1_000, &fail, &policy()).expect("fail");
        assert_eq!(row(&c, "e1").next_attempt_at, Some(now + 3_000));
    }

    #[test]
    fn past_the_maximum_age_a_delivery_fails_and_the_next_one_goes() {
        let mut c = db();
        endpoints(&mut c, &[A]);
        enqueue(&c, &event("call.started", "call:1", 1), "old", 0).expect("q");
        enqueue(&c, &event("call.ended", "call:1", 2), "new", 1).expect("q");
        let claimed = claim(&mut c, 9_500, 60_000, 10).expect("claim");
        let fail = Attempt::Failed {
            status: None,
            error: "connection refused".into(),
        };
        // A retry 1 s after 9.5 s would pass the 10 s maximum age.
        record(&mut c, claimed[0].seq, 9_500, &fail, &policy()).expect("fail");
        let old = recent(&c, 50)
            .expect("recent")
            .into_iter()
            .find(|r| r.id == "old");
        let old = old.expect("row");
        assert_eq!(old.status, "failed");
        assert_eq!(old.next_attempt_at, None);
        assert_eq!(old.last_status, None);
        assert_eq!(
            seqs(&claim(&mut c, 9_501, 60_000, 10).expect("claim")),
            [("new".to_string(), A.to_string())]
        );
    }

    #[test]
    fn a_restart_releases_claims_and_fails_what_was_for_removed_urls() {
        let mut c = db();
        endpoints(&mut c, &[A, B]);
        enqueue(&c, &event("call.started", "call:1", 1), "e1", 0).expect("q");
        assert_eq!(claim(&mut c, 1, 60_000, 10).expect("claim").len(), 2);
        // The process died mid-attempt; it starts again with only A configured.
        assert_eq!(endpoints(&mut c, &[A]), 1);
        let again = claim(&mut c, 2, 60_000, 10).expect("claim");
        assert_eq!(seqs(&again), [("e1".to_string(), A.to_string())]);
        let to_b = recent(&c, 50)
            .expect("recent")
            .into_iter()
            .find(|r| r.url == B);
        assert_eq!(
            to_b.map(|r| (r.status, r.last_error)),
            Some(("failed".into(), Some(UNCONFIGURED.into())))
        );
        // An expired lease is claimable again without a restart.
        assert_eq!(claim(&mut c, 60_002, 60_000, 10).expect("claim").len(), 1);
    }

    #[test]
    fn recent_is_newest_first_and_prune_keeps_pending_rows() {
        let mut c = db();
        endpoints(&mut c, &[A]);
        for n in 0..5 {
            enqueue(
                &c,
                &event("room.finished", &format!("room:{n}"), n),
                &format!("e{n}"),
                n,
            )
            .expect("q");
        }
        let ids: Vec<String> = recent(&c, 3)
            .expect("recent")
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, ["e4", "e3", "e2"]);
        let claimed = claim(&mut c, 10, 1_000, 1).expect("claim");
        record(
            &mut c,
            claimed[0].seq,
            10,
            &Attempt::Delivered { status: 200 },
            &policy(),
        )
        .expect("ack");
        assert_eq!(
            count_by_status(&c).expect("count"),
            [("pending", 4), ("delivered", 1), ("failed", 0)]
        );
        assert_eq!(prune(&mut c, 100).expect("prune"), 1);
        assert_eq!(recent(&c, 50).expect("recent").len(), 4);
    }
}
