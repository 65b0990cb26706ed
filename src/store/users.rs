//! Built-in accounts: id, display name, argon2id password hash, admin flag.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::error::Error;
use crate::store::{pg, Store};

/// An account as shown to clients (never the hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: String,
    pub name: Option<String>,
    pub admin: bool,
    #[serde(skip)]
    pub created_at: i64,
}

fn row_to_user(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get("id")?,
        name: r.get("display_name")?,
        admin: r.get("is_admin")?,
        created_at: r.get("created_at")?,
    })
}

pub(super) fn add(conn: &Connection, user: &User, password_hash: &str) -> Result<(), Error> {
    let inserted = conn.execute(
        "INSERT INTO users (id, display_name, password_hash, is_admin, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(id) DO NOTHING",
        params![
            user.id,
            user.name,
            password_hash,
            user.admin,
            user.created_at
        ],
    )?;
    if inserted == 0 {
        return Err(Error::conflict(
            "user_exists",
            format!("user `{}` already exists", user.id),
        ));
    }
    Ok(())
}

pub(super) fn list(conn: &Connection) -> Result<Vec<User>, Error> {
    let mut stmt =
        conn.prepare("SELECT id, display_name, is_admin, created_at FROM users ORDER BY id")?;
    let users = stmt
        .query_map([], row_to_user)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(users)
}

pub(super) fn remove(conn: &Connection, id: &str) -> Result<(), Error> {
    match conn.execute("DELETE FROM users WHERE id = ?1", [id])? {
        0 => Err(Error::NotFound("user")),
        _ => Ok(()),
    }
}

pub(super) fn set_password(conn: &Connection, id: &str, password_hash: &str) -> Result<(), Error> {
    match conn.execute(
        "UPDATE users SET password_hash = ?2 WHERE id = ?1",
        params![id, password_hash],
    )? {
        0 => Err(Error::NotFound("user")),
        _ => Ok(()),
    }
}

/// Display names of the accounts among `ids` that have one.
pub(super) fn names(
    conn: &Connection,
    ids: &[String],
) -> Result<std::collections::HashMap<String, String>, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT display_name FROM users WHERE id = ?1 AND display_name IS NOT NULL",
    )?;
    let mut names = std::collections::HashMap::new();
    for id in ids {
        if let Some(name) = stmt.query_row([id], |r| r.get::<_, String>(0)).optional()? {
            names.insert(id.clone(), name);
        }
    }
    Ok(names)
}

/// The account and its password hash, for login.
pub(super) fn find_with_hash(conn: &Connection, id: &str) -> Result<Option<(User, String)>, Error> {
    Ok(conn
        .query_row(
            "SELECT id, display_name, is_admin, created_at, password_hash FROM users WHERE id = ?1",
            [id],
            |r| Ok((row_to_user(r)?, r.get("password_hash")?)),
        )
        .optional()?)
}

impl Store {
    /// Adds an account; `user_exists` if the id is taken.
    pub async fn add_user(&self, user: User, password_hash: String) -> Result<(), Error> {
        if let Some(pg) = self.pg() {
            return self
                .timed(pg::users::add_user(pg, user, password_hash))
                .await;
        }
        self.run(move |c| add(c, &user, &password_hash)).await
    }

    /// Every account, by id.
    pub async fn users(&self) -> Result<Vec<User>, Error> {
        if let Some(pg) = self.pg() {
            return self.timed(pg::users::users(pg)).await;
        }
        self.run(|c| list(c)).await
    }

    /// Removes an account; `NotFound` if there is none.
    pub async fn remove_user(&self, id: &str) -> Result<(), Error> {
        if let Some(pg) = self.pg() {
            return self.timed(pg::users::remove_user(pg, id)).await;
        }
        let id = id.to_string();
        self.run(move |c| remove(c, &id)).await
    }

    /// Replaces an account's password hash; `NotFound` if there is none.
    pub async fn set_password(&self, id: &str, password_hash: String) -> Result<(), Error> {
        if let Some(pg) = self.pg() {
            return self
                .timed(pg::users::set_password(pg, id, password_hash))
                .await;
        }
        let id = id.to_string();
        self.run(move |c| set_password(c, &id, &password_hash))
            .await
    }

    /// The account named `username` and its password hash (for login), if there is one.
    pub async fn user_by_username(&self, username: &str) -> Result<Option<(User, String)>, Error> {
        if let Some(pg) = self.pg() {
            return self.timed(pg::users::user_by_username(pg, username)).await;
        }
        let username = username.to_string();
        self.run(move |c| find_with_hash(c, &username)).await
    }
}
