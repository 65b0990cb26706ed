//! The admin API under `/api/admin/`: what is live now ([`live`]), built-in accounts
//! ([`users`]), a call's quality reports as a time series ([`quality`]) and the recent webhook
//! deliveries ([`webhooks`]). Every route takes an
//! admin's bearer token through [`AdminAuth`]: no token is 401, a non-admin's token 403.
//! Ending a call needs no route of its own: `PUT /calls/{callId}/hangup` ends any call for an
//! admin (reason `admin`; a room's call too, every peer leaving and the room staying), and
//! `DELETE /rooms/{roomId}` closes any room.

pub mod live;
pub mod quality;
pub mod users;
pub mod webhooks;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;

use crate::auth::Principal;
use crate::error::Error;
use crate::http::extract::Auth;
use crate::http::AppState;

/// The authenticated caller, who must be an admin.
pub struct AdminAuth(pub Principal);

impl<S> FromRequestParts<S> for AdminAuth
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Auth(me) = Auth::from_request_parts(parts, state).await?;
        if !me.admin {
            return Err(Error::forbidden("only admins may use the admin API"));
        }
        Ok(AdminAuth(me))
    }
}
