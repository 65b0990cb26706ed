//! `GET /api/admin/webhooks/deliveries`: the recent webhook deliveries
//! and how their attempts went (the admin console's webhook page reads it).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::Error;
use crate::http::extract::Auth;
use crate::http::AppState;
use crate::store::webhooks::Delivery;

/// Page size of the deliveries list when `limit` is not given.
pub const DEFAULT_DELIVERIES_LIMIT: u32 = 50;
/// Largest page of the deliveries list; larger `limit`s are capped to it.
pub const MAX_DELIVERIES_LIMIT: u32 = 500;

/// One webhook delivery: an event for one receiver.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeliveryView {
    /// The event's id, the `id` of the body the receiver gets (one event sent to two URLs shows
    /// twice with the same id).
    #[schema(format = Uuid)]
    pub id: String,
    /// e.g. `call.started`.
    pub event: String,
    /// The receiver.
    pub url: String,
    #[schema(pattern = "^(pending|delivered|failed)$")]
    pub status: String,
    /// Attempts made so far.
    #[schema(minimum = 0)]
    pub attempts: u32,
    /// What went wrong on the last failed attempt; null once delivered.
    #[schema(required = true)]
    pub last_error: Option<String>,
    /// The HTTP status of the last answer; null if there was none.
    #[schema(required = true, minimum = 100, maximum = 999)]
    pub last_status: Option<u16>,
    /// When the event happened (Unix ms).
    pub created_at: i64,
    /// When the receiver accepted it (Unix ms).
    #[schema(required = true)]
    pub delivered_at: Option<i64>,
    /// When it is attempted next (Unix ms); null once delivered or failed.
    #[schema(required = true)]
    pub next_attempt_at: Option<i64>,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> DeliveryView {
        DeliveryView {
            id: d.id,
            event: d.event,
            url: d.url,
            status: d.status,
            attempts: d.attempts,
            last_error: d.last_error,
            last_status: d.last_status,
            created_at: d.created_at,
            delivered_at: d.delivered_at,
            next_attempt_at: d.next_attempt_at,
        }
    }
}

/// `GET /api/admin/webhooks/deliveries`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesReply {
    /// Newest first.
    pub deliveries: Vec<DeliveryView>,
}

/// Recent webhook deliveries, newest first, with their status and last attempt (admins only).
#[utoipa::path(get, path = "/api/admin/webhooks/deliveries", tag = "admin",
    params(
        ("limit" = Option<u32>, Query, format = Int64, minimum = 1, maximum = 4294967295.0,
            description = "how many (default 50; values above 500 are capped to 500)"),
    ),
    responses(
        (status = 200, description = "Newest first", body = DeliveriesReply),
        (status = 403, description = "You are not an admin."),
    ),
    security(("bearer" = [])))]
pub async fn webhook_deliveries(
    State(app): State<AppState>,
    Auth(me): Auth,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DeliveriesReply>, Error> {
    if !me.admin {
        return Err(Error::forbidden("only admins can read webhook deliveries"));
    }
    let Query(q) = query.map_err(|e| Error::invalid("invalid_query", e.body_text()))?;
    let limit = match q.get("limit") {
        None => DEFAULT_DELIVERIES_LIMIT,
        Some(v) => v.trim().parse::<u32>().map_err(|_| {
            Error::invalid(
                "invalid_query",
                format!("limit: `{v}` is not a non-negative whole number"),
            )
        })?,
    };
    if limit == 0 {
        return Err(Error::invalid("invalid_query", "limit: must be at least 1"));
    }
    let limit = limit.min(MAX_DELIVERIES_LIMIT);
    let rows = app.store.recent_webhook_deliveries(limit).await?;
    Ok(Json(DeliveriesReply {
        deliveries: rows.into_iter().map(DeliveryView::from).collect(),
    }))
}
