//! `GET /api/admin/calls/{callId}/quality`: a call's stored quality reports (the clients'
//! `call-stats` / `POST /calls/{id}/stats` summaries) as a time series, for the console's charts.
//! `GET /calls/{id}/analytics` has only their averages.

use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::clock::rfc3339;
use crate::error::Error;
use crate::http::admin::AdminAuth;
use crate::http::extract::parse_id;
use crate::http::AppState;

/// Reports returned at most: the newest ones.
pub const MAX_SAMPLES: u32 = 1000;

/// One quality report; a number the client did not report is null.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QualityPoint {
    #[schema(format = DateTime)]
    pub at: String,
    pub user_id: String,
    #[schema(required = true)]
    pub rtt_ms: Option<f64>,
    #[schema(required = true)]
    pub jitter_ms: Option<f64>,
    /// Fraction 0..=1.
    #[schema(required = true)]
    pub packet_loss: Option<f64>,
    #[schema(required = true)]
    pub bitrate_kbps: Option<f64>,
}

/// `GET /api/admin/calls/{callId}/quality`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QualitySeries {
    #[schema(format = Uuid)]
    pub call_id: String,
    /// Oldest first; at most the newest 1000.
    pub samples: Vec<QualityPoint>,
}

/// A call's quality reports over time (admins only).
#[utoipa::path(get, path = "/api/admin/calls/{callId}/quality", tag = "admin",
    params(("callId" = Uuid, Path, description = "call id (UUID)")),
    responses(
        (status = 200, description = "The reports, oldest first", body = QualitySeries),
        (status = 403, description = "Not an admin."),
        (status = 404),
    ),
    security(("bearer" = [])))]
pub async fn quality(
    State(app): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    Path(id): Path<String>,
) -> Result<Json<QualitySeries>, Error> {
    let id = parse_id(&id, "callId")?;
    let reports = app.store.call_quality_reports(&id, MAX_SAMPLES).await?;
    Ok(Json(QualitySeries {
        call_id: id,
        samples: reports
            .into_iter()
            .map(|r| QualityPoint {
                at: rfc3339(r.at),
                user_id: r.user_id,
                rtt_ms: r.sample.rtt_ms,
                jitter_ms: r.sample.jitter_ms,
                packet_loss: r.sample.packet_loss,
                bitrate_kbps: r.sample.bitrate_kbps,
            })
            .collect(),
    }))
}
