//! Built-in accounts for admins, what `signalbox user add|list|remove|passwd` does on the
//! server: `GET /api/admin/users`, `POST /api/admin/users`, `DELETE /api/admin/users/{userId}`
//! and `POST /api/admin/users/{userId}/password`. Bad input is refused with a 4xx naming the
//! field before anything is written.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::auth;
use crate::clock::{now_ms, rfc3339};
use crate::error::Error;
use crate::http::admin::AdminAuth;
use crate::http::extract::{user_id_field, ApiJson};
use crate::http::schema::MessageReply;
use crate::http::AppState;
use crate::store::users::User;

/// Password length bounds in characters (the CLI's minimum; login's maximum).
pub const MIN_PASSWORD: usize = 8;
pub const MAX_PASSWORD: usize = 1024;

/// A built-in account (never its password hash).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Account {
    pub id: String,
    #[schema(required = true)]
    pub name: Option<String>,
    pub admin: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<User> for Account {
    fn from(u: User) -> Self {
        Account {
            id: u.id,
            name: u.name,
            admin: u.admin,
            created_at: rfc3339(u.created_at),
        }
    }
}

/// `GET /api/admin/users`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountList {
    /// Ordered by id.
    pub users: Vec<Account>,
}

/// `POST /api/admin/users`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountCreated {
    pub user: Account,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewAccount {
    /// The user id and sign-in name.
    #[schema(pattern = "^[A-Za-z0-9._@-]{1,64}$")]
    username: String,
    /// 8 to 1024 characters.
    #[schema(min_length = 8, max_length = 1024)]
    password: String,
    /// Display name: 1 to 100 characters, not all whitespace (stored trimmed).
    #[schema(min_length = 1, max_length = 100, pattern = "\\S")]
    #[serde(default, deserialize_with = "optional_display_name")]
    name: Option<String>,
    /// Make the account an admin (default false).
    admin: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewPassword {
    /// 8 to 1024 characters.
    #[schema(min_length = 8, max_length = 1024)]
    password: String,
}

fn optional_display_name<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    use serde::de::Error as _;
    match Option::<String>::deserialize(d)? {
        Some(s) if s.trim().is_empty() || s.chars().count() > 100 => Err(D::Error::custom(
            "must be 1 to 100 characters, not all whitespace",
        )),
        other => Ok(other),
    }
}

fn check_password(password: &str) -> Result<(), Error> {
    let n = password.chars().count();
    if (MIN_PASSWORD..=MAX_PASSWORD).contains(&n) {
        Ok(())
    } else {
        Err(Error::invalid(
            "invalid_field",
            format!("password: must be {MIN_PASSWORD} to {MAX_PASSWORD} characters"),
        ))
    }
}

/// Hashes on the blocking pool: argon2 is deliberately slow.
async fn hash(password: String) -> Result<String, Error> {
    tokio::task::spawn_blocking(move || auth::hash_password(&password))
        .await
        .map_err(|e| Error::Internal(format!("password hashing failed: {e}")))?
}

/// Every built-in account (admins only).
#[utoipa::path(get, path = "/api/admin/users", tag = "admin",
    responses(
        (status = 200, description = "The accounts, by id", body = AccountList),
        (status = 403, description = "Not an admin."),
    ),
    security(("bearer" = [])))]
pub async fn list(
    State(app): State<AppState>,
    AdminAuth(_admin): AdminAuth,
) -> Result<Json<AccountList>, Error> {
    let users = app.store.users().await?;
    Ok(Json(AccountList {
        users: users.into_iter().map(Account::from).collect(),
    }))
}

/// Add a built-in account (admins only).
#[utoipa::path(post, path = "/api/admin/users", tag = "admin", request_body = NewAccount,
    responses(
        (status = 201, description = "The new account", body = AccountCreated),
        (status = 403, description = "Not an admin."),
        (status = 409, description = "`user_exists`: an account with this id exists. Nothing changed."),
    ),
    security(("bearer" = [])))]
pub async fn add(
    State(app): State<AppState>,
    AdminAuth(_admin): AdminAuth,
    ApiJson(body): ApiJson<NewAccount>,
) -> Result<(StatusCode, Json<AccountCreated>), Error> {
    let id = user_id_field(&body.username, "username")?;
    check_password(&body.password)?;
    let user = User {
        id,
        name: body.name.map(|n| n.trim().to_string()),
        admin: body.admin.unwrap_or(false),
        created_at: now_ms(),
    };
    let hashed = hash(body.password).await?;
    let stored = user.clone();
    app.store.add_user(stored, hashed).await?;
    tracing::info!(user = %user.id, admin = user.admin, "account added over the admin API");
    Ok((
        StatusCode::CREATED,
        Json(AccountCreated {
            user: Account::from(user),
        }),
    ))
}

/// Remove a built-in account (admins only; not your own). Its calls stay in the history; tokens
/// it already holds stay valid until they expire (they are signed, not stored).
#[utoipa::path(delete, path = "/api/admin/users/{userId}", tag = "admin",
    params(("userId" = String, Path, pattern = "^[A-Za-z0-9._@-]{1,64}$", description = "the account's id")),
    responses(
        (status = 200, description = "`User removed`", body = MessageReply),
        (status = 403, description = "Not an admin."),
        (status = 404),
        (status = 409, description = "`cannot_remove_self`: admins do not remove their own account here. Nothing changed."),
    ),
    security(("bearer" = [])))]
pub async fn remove(
    State(app): State<AppState>,
    AdminAuth(me): AdminAuth,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let id = user_id_field(&id, "userId")?;
    if id == me.id {
        return Err(Error::conflict(
            "cannot_remove_self",
            "you cannot remove your own account (use `signalbox user remove` on the server)",
        ));
    }
    let removed = id.clone();
    app.store.remove_user(&id).await?;
    tracing::info!(user = %removed, by = %me.id, "account removed over the admin API");
    Ok(Json(json!({ "message": "User removed" })))
}

/// Set a new password for a built-in account (admins only).
#[utoipa::path(post, path = "/api/admin/users/{userId}/password", tag = "admin", request_body = NewPassword,
    params(("userId" = String, Path, pattern = "^[A-Za-z0-9._@-]{1,64}$", description = "the account's id")),
    responses(
        (status = 200, description = "`Password changed`", body = MessageReply),
        (status = 403, description = "Not an admin."),
        (status = 404),
    ),
    security(("bearer" = [])))]
pub async fn set_password(
    State(app): State<AppState>,
    AdminAuth(me): AdminAuth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NewPassword>,
) -> Result<Json<Value>, Error> {
    let id = user_id_field(&id, "userId")?;
    check_password(&body.password)?;
    // Unknown accounts are refused before the (slow) hash.
    app.store
        .user_by_username(&id)
        .await?
        .ok_or(Error::NotFound("user"))?;
    let hashed = hash(body.password).await?;
    app.store.set_password(&id, hashed).await?;
    tracing::info!(user = %id, by = %me.id, "password changed over the admin API");
    Ok(Json(json!({ "message": "Password changed" })))
}
