//! The delivery worker: a background task that claims due outbox rows, POSTs each to its
//! receiver with the signature, a request timeout and no redirects, and records the attempt.
//! Any 2xx answer delivers; any other answer, a connection error or a timeout is a failed
//! attempt, retried on the [`RetryPolicy`]. Deliveries of different calls and rooms run
//! concurrently (a few at a time); those of one call or room one after another, in order (the
//! store hands out only the oldest pending row of each). The application layer nudges the
//! worker after each operation, so a new event goes out at once; without a nudge it looks for
//! due rows every second. On shutdown it stops claiming and abandons attempts in flight: their
//! rows stay pending and are sent again after the next start.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderValue, CONTENT_TYPE, USER_AGENT};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use crate::clock::now_ms;
use crate::error::Error;
use crate::store::webhooks::{Attempt, Claimed};
use crate::store::Store;
use crate::webhooks::retry::RetryPolicy;
use crate::webhooks::sign::{signature, SIGNATURE_HEADER};

/// Attempts in flight at once (across calls and rooms).
const CONCURRENCY: usize = 8;
/// How often the outbox is looked at without a nudge (retries falling due).
const POLL: Duration = Duration::from_secs(1);
/// A claim outlives the request timeout by this much before the row may be claimed again.
const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// How long after a nudge the worker looks at the outbox, gathering the nudges of a burst.
const COALESCE: Duration = Duration::from_millis(20);
/// Delivered and failed rows are kept this long for the admin API, then deleted.
const KEEP: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often old rows are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// What the worker needs from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The HMAC-SHA256 key of `X-Signalbox-Signature`.
    pub secret: Vec<u8>,
    /// Longest wait for a receiver's answer (connecting included).
    pub timeout: Duration,
    pub policy: RetryPolicy,
}

struct Inner {
    store: Store,
    client: reqwest::Client,
    /// The signing key and retry policy, replaceable by a config reload.
    live: std::sync::RwLock<(Vec<u8>, RetryPolicy)>,
    timeout: Duration,
    lease_ms: i64,
}

impl Inner {
    fn live(&self) -> (Vec<u8>, RetryPolicy) {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Replaces a running worker's signing key and retry policy (a reloaded configuration).
#[derive(Clone)]
pub struct LiveSettings(Arc<Inner>);

impl std::fmt::Debug for LiveSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("webhooks::LiveSettings")
    }
}

impl LiveSettings {
    /// From the next attempt on, sign with `secret` and retry by `policy`.
    pub fn set(&self, secret: Vec<u8>, policy: RetryPolicy) {
        *self.0.live.write().unwrap_or_else(|p| p.into_inner()) = (secret, policy);
    }
}

/// The webhook delivery worker. [`Worker::waker`] is what the application layer nudges.
pub struct Worker {
    inner: Arc<Inner>,
    wake: Arc<Notify>,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// An error and its causes on one line (reqwest's own text names only the outermost).
fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {}", humantime::format_duration(timeout));
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl Worker {
    pub fn new(store: Store, settings: Settings) -> Result<Worker, Error> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            // A redirect is not an acknowledgement: it counts as a failed attempt.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Internal(format!("building the webhook HTTP client: {e}")))?;
        Ok(Worker {
            inner: Arc::new(Inner {
                store,
                client,
                live: std::sync::RwLock::new((settings.secret, settings.policy)),
                timeout: settings.timeout,
                lease_ms: ms(settings.timeout + LEASE_MARGIN),
            }),
            wake: Arc::new(Notify::new()),
        })
    }

    /// The handle a config reload updates the worker's settings through.
    pub fn live_settings(&self) -> LiveSettings {
        LiveSettings(self.inner.clone())
    }

    /// Notified after an operation that may have written events.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Delivers until `stop` turns true (or its sender is gone).
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut inflight = JoinSet::new();
        let mut pruned_at: Option<tokio::time::Instant> = None;
        loop {
            if *stop.borrow() {
                break;
            }
            let free = CONCURRENCY.saturating_sub(inflight.len());
            let (now, lease) = (now_ms(), self.inner.lease_ms);
            match self.inner.store.claim_webhooks(now, lease, free).await {
                Ok(batch) => {
                    for claimed in batch {
                        inflight.spawn(self.inner.clone().attempt(claimed));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "claiming webhook deliveries failed"),
            }
            if pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                pruned_at = Some(tokio::time::Instant::now());
                let cutoff = now - ms(KEEP);
                if let Err(e) = self.inner.store.prune_webhooks(cutoff).await {
                    tracing::warn!(error = %e, "pruning old webhook deliveries failed");
                }
            }
            tokio::select! {
                changed = stop.changed() => if changed.is_err() { break },
                Some(_) = inflight.join_next(), if !inflight.is_empty() => {}
                _ = self.wake.notified() => {
                    // Operations nudge after every commit; a burst of them (ICE candidates at
                    // thousands a second) makes one claim, not one per message.
                    tokio::time::sleep(COALESCE).await;
                }
                _ = tokio::time::sleep(POLL) => {}
            }
        }
        // Attempts in flight are abandoned; their rows stay pending for the next start.
        inflight.shutdown().await;
    }
}

impl Inner {
    /// Makes one attempt of `claimed` and records how it went.
    async fn attempt(self: Arc<Self>, claimed: Claimed) {
        let signed = signature(&self.live().0, claimed.body.as_bytes());
        let request = self
            .client
            .post(&claimed.url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, concat!("signalbox/", env!("CARGO_PKG_VERSION")))
            .header(SIGNATURE_HEADER, signed)
            .header("X-Signalbox-Event", claimed.event.as_str())
            .header("X-Signalbox-Delivery", claimed.event_id.as_str())
            .body(claimed.body.clone());
        let attempt = match request.send().await {
            Ok(response) if response.status().is_success() => Attempt::Delivered {
                status: response.status().as_u16(),
            },
            Ok(response) => {
                let status = response.status();
                Attempt::Failed {
                    status: Some(status.as_u16()),
                    error: format!(
                        "HTTP {} {}",
                        status.as_u16(),
                        status.canonical_reason().unwrap_or("")
                    )
                    .trim_end()
                    .to_string(),
                }
            }
            Err(e) => Attempt::Failed {
                status: None,
                error: describe(&e, self.timeout),
            },
        };
        match &attempt {
            Attempt::Delivered { .. } => {
                tracing::debug!(event = %claimed.event, id = %claimed.event_id, url = %claimed.url, "webhook delivered")
            }
            Attempt::Failed { error, .. } => tracing::info!(
                event = %claimed.event, id = %claimed.event_id, url = %claimed.url,
                attempts = claimed.attempts + 1, %error, "webhook attempt failed"
            ),
        }
        let (seq, now, policy) = (claimed.seq, now_ms(), self.live().1);
        if let Err(e) = self
            .store
            .record_webhook_attempt(seq, now, attempt, policy)
            .await
        {
            // The claim runs out and the delivery is attempted again.
            tracing::warn!(error = %e, "recording a webhook attempt failed");
        }
    }
}
