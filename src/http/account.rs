//! Sign-in for built-in accounts (`POST /api/auth/login`, rate-limited per client IP) and
//! `GET /api/me`, who the token speaks for.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;

use crate::http::client_ip::client_ip;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{self, Principal};
use crate::error::Error;
use crate::http::extract::{ApiJson, Auth};
use crate::http::AppState;

#[derive(Debug, Deserialize, ToSchema)]
pub struct Login {
    /// At most 64 characters (longer ones are refused as wrong credentials).
    #[schema(max_length = 64)]
    username: String,
    /// At most 1024 characters (longer ones are refused as wrong credentials).
    #[schema(max_length = 1024)]
    password: String,
}

/// A bearer token for a built-in account.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoginReply {
    /// The JWT to send as `Authorization: Bearer <token>`.
    pub token: String,
    pub user: Principal,
    /// Seconds the token is valid.
    pub expires_in: i64,
}

/// Who the bearer token speaks for.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MeReply {
    pub user: Principal,
}

/// Exchange a built-in account's username and password for a bearer token.
#[utoipa::path(post, path = "/api/auth/login", tag = "auth", request_body = Login,
    responses(
        (status = 200, description = "Signed in", body = LoginReply),
        (status = 401, description = "`invalid_credentials`: wrong username or password."),
        (status = 429, description = "Too many attempts from this client; retry after `Retry-After` seconds."),
    ))]
pub async fn login(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Login>,
) -> Result<Json<LoginReply>, Error> {
    let client = client_ip(peer.ip(), &headers, &app.config.trusted_proxies);
    // In a cluster the attempts are counted on every node together; without Redis (or when it
    // does not answer), by this node alone.
    let shared = match app.signaling.cluster() {
        Some(c) => {
            c.login_attempt(client, app.config.login_rate_per_minute)
                .await
        }
        None => None,
    };
    match shared {
        Some(Err(wait)) => return Err(Error::RateLimited(wait)),
        Some(Ok(())) => {}
        None => {
            if let Err(not_until) = app.login_limiter.check_key(&client) {
                let wait = not_until.wait_time_from(governor::clock::Clock::now(
                    &governor::clock::DefaultClock::default(),
                ));
                return Err(Error::RateLimited(wait.as_secs().max(1)));
            }
        }
    }
    if body.username.chars().count() > 64 || body.password.chars().count() > 1024 {
        return Err(Error::Unauthorized {
            code: "invalid_credentials",
            message: "wrong username or password".into(),
        });
    }
    let found = app.store.user_by_username(&body.username).await?;
    let password = body.password;
    // Verify on the blocking pool: argon2 is deliberately slow. Unknown users verify a dummy
    // hash so the answer takes as long either way.
    let (user, ok) = tokio::task::spawn_blocking(move || match found {
        Some((user, hash)) => {
            let ok = auth::verify_password(&password, &hash);
            (Some(user), ok)
        }
        None => {
            auth::verify_password(&password, auth::dummy_hash());
            (None, false)
        }
    })
    .await
    .map_err(|e| Error::Internal(format!("password check failed: {e}")))?;
    let user = match (user, ok) {
        (Some(u), true) => u,
        _ => {
            return Err(Error::Unauthorized {
                code: "invalid_credentials",
                message: "wrong username or password".into(),
            })
        }
    };
    let principal = Principal {
        id: user.id.clone(),
        name: user.name.clone(),
        admin: user.admin,
    };
    let now = crate::clock::now_ms() / 1000;
    let ttl = i64::try_from(app.config.token_ttl.as_secs()).unwrap_or(i64::MAX);
    let token = app.tokens.mint(&principal, now, ttl)?;
    Ok(Json(LoginReply {
        token,
        user: principal,
        expires_in: ttl,
    }))
}

/// Who the bearer token speaks for.
#[utoipa::path(get, path = "/api/me", tag = "auth",
    responses((status = 200, description = "The token's user", body = MeReply)),
    security(("bearer" = [])))]
pub async fn me(Auth(me): Auth) -> Json<MeReply> {
    Json(MeReply { user: me })
}
