//! Operations endpoints: `GET /healthz`, `GET /metrics` (Prometheus text), `GET /openapi.json`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde_json::{json, Value};

use crate::error::Error;
use crate::http::AppState;
use crate::metrics::StatusLabels;
use crate::signaling::call::CallStatus;
use crate::store::calls;

/// Liveness and readiness: answers 200 when the database answers.
#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses((status = 200, description = "`{status: \"ok\"}`"), (status = 503)))]
pub async fn healthz(State(app): State<AppState>) -> (StatusCode, Json<Value>) {
    match app
        .store
        .run(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
        .await
    {
        Ok(_) => (
            StatusCode::OK,
            Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") })),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "health check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable" })),
            )
        }
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text exposition")))]
pub async fn metrics(State(app): State<AppState>) -> Result<impl IntoResponse, Error> {
    let counts = app.store.run(|c| calls::count_by_status(c)).await?;
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
    responses((status = 200, description = "OpenAPI document")))]
pub async fn openapi(Extension(doc): Extension<Arc<String>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.as_str().to_owned(),
    )
}
