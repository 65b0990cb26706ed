//! Operations endpoints: `GET /healthz`, `GET /metrics` (Prometheus text), `GET /openapi.json`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::Error;
use crate::http::AppState;
use crate::metrics::StatusLabels;
use crate::signaling::call::CallStatus;

/// `GET /healthz` when the database answers.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Healthy {
    /// `ok`, or `degraded` in cluster mode while Redis is away (the node still serves its own
    /// users).
    #[schema(pattern = "^(ok|degraded)$")]
    pub status: &'static str,
    /// The server's version.
    pub version: &'static str,
    /// Cluster mode only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterHealth>,
}

/// This node's view of its cluster.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterHealth {
    /// This node's name.
    pub node: String,
    /// `ok` while Redis answers, else `unavailable`.
    #[schema(pattern = "^(ok|unavailable)$")]
    pub redis: &'static str,
    /// Live nodes, this one included, as of the last heartbeat.
    #[schema(minimum = 1)]
    pub nodes: usize,
}

/// `GET /healthz` when the database does not answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Unavailable {
    #[schema(pattern = "^unavailable$")]
    pub status: &'static str,
}

/// Liveness and readiness: answers 200 when the database answers.
#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses(
        (status = 200, description = "Ready", body = Healthy),
        (status = 503, description = "The database does not answer", body = Unavailable),
    ))]
pub async fn healthz(State(app): State<AppState>) -> Response {
    match app.store.ping().await {
        Ok(()) => {
            let cluster = app.signaling.cluster().map(|c| ClusterHealth {
                node: c.node().to_string(),
                redis: if c.redis_up() { "ok" } else { "unavailable" },
                nodes: c.peers().len() + 1,
            });
            let degraded = cluster.as_ref().is_some_and(|c| c.redis != "ok");
            Json(Healthy {
                status: if degraded { "degraded" } else { "ok" },
                version: env!("CARGO_PKG_VERSION"),
                cluster,
            })
            .into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "health check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Unavailable {
                    status: "unavailable",
                }),
            )
                .into_response()
        }
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text exposition", body = String,
        content_type = "application/openmetrics-text")))]
pub async fn metrics(State(app): State<AppState>) -> Result<impl IntoResponse, Error> {
    let counts = app.store.call_counts_by_status().await?;
    for status in CallStatus::ALL {
        let n = counts
            .iter()
            .find(|(s, _)| s == status)
            .map(|(_, n)| *n)
            .unwrap_or(0);
        app.metrics
            .calls
            .get_or_create(&StatusLabels {
                status: status.as_str().to_string(),
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    let hooks = app.store.webhook_counts_by_status().await?;
    for (status, n) in hooks {
        app.metrics
            .webhook_deliveries
            .get_or_create(&StatusLabels {
                status: status.to_string(),
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    ))
}

/// The OpenAPI 3 description of every route.
#[utoipa::path(get, path = "/openapi.json", tag = "ops",
    responses((status = 200, description = "OpenAPI document", body = Object)))]
pub async fn openapi(Extension(doc): Extension<Arc<String>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.as_str().to_owned(),
    )
}
