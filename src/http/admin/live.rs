//! `GET /api/admin/live`: calls and rooms in progress, their participants and connections,
//! media path, and the relay's live usage (see [`crate::app::live`]).

use axum::extract::State;
use axum::Json;

use crate::app::live::LiveView;
use crate::error::Error;
use crate::http::admin::AdminAuth;
use crate::http::AppState;

/// What is live now: ringing and active calls, occupied rooms, relay allocations (admins only).
#[utoipa::path(get, path = "/api/admin/live", tag = "admin",
    responses(
        (status = 200, description = "Calls and rooms in progress", body = LiveView),
        (status = 403, description = "Not an admin."),
    ),
    security(("bearer" = [])))]
pub async fn live(
    State(app): State<AppState>,
    AdminAuth(_admin): AdminAuth,
) -> Result<Json<LiveView>, Error> {
    let relay = app.relay.as_ref().map(|r| r.live_view());
    Ok(Json(app.signaling.live(relay).await?))
}
