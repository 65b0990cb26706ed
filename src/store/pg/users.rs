//! Accounts on PostgreSQL (see [`crate::store::users`]).

use std::collections::HashMap;

use tokio_postgres::Row;

use crate::error::Error;
use crate::store::pg::{Db, Pg};
use crate::store::users::User;

fn row_to_user(r: &Row) -> Result<User, Error> {
    Ok(User {
        id: r.try_get("id")?,
        name: r.try_get("display_name")?,
        admin: r.try_get("is_admin")?,
        created_at: r.try_get("created_at")?,
    })
}

/// Display names of the accounts among `ids` that have one.
pub(crate) async fn names<C: Db>(c: &C, ids: &[String]) -> Result<HashMap<String, String>, Error> {
    let rows = c
        .query(
            "SELECT id, display_name FROM users WHERE id = ANY($1) AND display_name IS NOT NULL",
            &[&ids],
        )
        .await?;
    let mut names = HashMap::new();
    for r in rows {
        names.insert(r.try_get(0)?, r.try_get(1)?);
    }
    Ok(names)
}

pub async fn add_user(pg: &Pg, user: User, password_hash: String) -> Result<(), Error> {
    let c = pg.conn().await?;
    let inserted = c
        .execute(
            "INSERT INTO users (id, display_name, password_hash, is_admin, created_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
            &[
                &user.id,
                &user.name,
                &password_hash,
                &user.admin,
                &user.created_at,
            ],
        )
        .await?;
    if inserted == 0 {
        return Err(Error::conflict(
            "user_exists",
            format!("user `{}` already exists", user.id),
        ));
    }
    Ok(())
}

pub async fn users(pg: &Pg) -> Result<Vec<User>, Error> {
    let c = pg.conn().await?;
    c.query(
        "SELECT id, display_name, is_admin, created_at FROM users ORDER BY id",
        &[],
    )
    .await?
    .iter()
    .map(row_to_user)
    .collect()
}

pub async fn remove_user(pg: &Pg, id: &str) -> Result<(), Error> {
    let c = pg.conn().await?;
    match c.execute("DELETE FROM users WHERE id = $1", &[&id]).await? {
        0 => Err(Error::NotFound("user")),
        _ => Ok(()),
    }
}

pub async fn set_password(pg: &Pg, id: &str, password_hash: String) -> Result<(), Error> {
    let c = pg.conn().await?;
    match c
        .execute(
            "UPDATE users SET password_hash = $2 WHERE id = $1",
            &[&id, &password_hash],
        )
        .await?
    {
        0 => Err(Error::NotFound("user")),
        _ => Ok(()),
    }
}

pub async fn user_by_username(pg: &Pg, username: &str) -> Result<Option<(User, String)>, Error> {
    let c = pg.conn().await?;
    let row = c
        .query_opt(
            "SELECT id, display_name, is_admin, created_at, password_hash FROM users WHERE id = $1",
            &[&username],
        )
        .await?;
    match row {
        Some(r) => Ok(Some((row_to_user(&r)?, r.try_get("password_hash")?))),
        None => Ok(None),
    }
}
