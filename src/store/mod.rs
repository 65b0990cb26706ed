//! Persistence behind one async interface. Callers use only the typed methods of [`Store`]
//! (`store.create_call(…)`, `store.leave_room(…)`, `store.user_by_username(…)`, …), which are
//! defined next to their SQL in the per-table files, take and return our own types, and fail
//! with [`crate::error::Error`] only: no database type appears in their signatures. That is the
//! seam for a second backend (issue #13: PostgreSQL), which can sit behind the same methods as a
//! `Backend` enum without touching a caller.
//!
//! The backend is a [`Backend`]: SQLite (the default, embedded in `data_dir`) or PostgreSQL
//! (`database_url`, in [`pg`]). Each method of a per-table file starts by handing its work to
//! the PostgreSQL function of the same name when the store is on PostgreSQL (timed into the
//! same latency histogram); otherwise it runs the SQLite implementation below it.
//!
//! For SQLite: the connection pool, pragmas, migrations, and a private `run`, which moves
//! every piece of database work onto tokio's blocking pool so the async runtime never waits on
//! disk. Each method is one such piece, so a read-modify-write stays in one `begin_write`
//! transaction. The sync SQL functions of the per-table files are that backend's
//! implementation and stay private to this module.

pub mod analytics;
pub mod calls;
pub mod migrations;
pub mod pg;
pub mod rooms;
pub mod users;
pub mod webhooks;

use std::ops::Deref;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use prometheus_client::metrics::histogram::Histogram;
use r2d2::Pool;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::error::Error;

/// The database file inside the data directory.
pub const DB_FILE: &str = "signalbox.db";

/// Takes turns for this process's write transactions. SQLite has one write lock; a writer that
/// finds it taken waits in busy_timeout's handler, which sleeps 1, 2, 5 … 100 ms between tries,
/// so under load the lock stood idle while writers slept and commits per second fell as the load
/// rose (BENCHMARKS.md, "Soak"). Waiting here instead hands the lock on the moment it is free.
static WRITER: Mutex<()> = Mutex::new(());

/// A write transaction (`BEGIN IMMEDIATE`) holding this process's writer turn until it commits
/// or is dropped (rolled back). Every read-modify-write of the store begins with [`begin_write`].
struct WriteTx<'c> {
    // Declared first: dropped (rolled back) before the turn is handed on.
    tx: Transaction<'c>,
    _turn: MutexGuard<'static, ()>,
}

/// Waits for this process's writer turn, then begins an immediate transaction on `conn`.
fn begin_write(conn: &mut Connection) -> Result<WriteTx<'_>, rusqlite::Error> {
    let turn = WRITER.lock().unwrap_or_else(PoisonError::into_inner);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    Ok(WriteTx { tx, _turn: turn })
}

impl WriteTx<'_> {
    /// Commits, then hands the writer turn on.
    pub fn commit(self) -> Result<(), rusqlite::Error> {
        let WriteTx { tx, _turn } = self;
        tx.commit()
    }
}

impl<'c> Deref for WriteTx<'c> {
    type Target = Transaction<'c>;
    fn deref(&self) -> &Transaction<'c> {
        &self.tx
    }
}

// The SQLite backend's failures become `Internal` errors: callers never see a database type.
impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Internal(format!("database: {e}"))
    }
}

impl From<r2d2::Error> for Error {
    fn from(e: r2d2::Error) -> Self {
        Error::Internal(format!("database pool: {e}"))
    }
}

/// Where lasting state lives.
#[derive(Clone)]
enum Backend {
    /// `data_dir/signalbox.db`.
    Sqlite(Pool<SqliteConnectionManager>),
    /// `database_url`.
    Postgres(pg::Pg),
}

/// A cloneable handle to the database.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    latency: Histogram,
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    ])
}

fn configure(conn: &mut Connection) -> Result<(), rusqlite::Error> {
    conn.busy_timeout(Duration::from_secs(5))?;
    // WAL: readers never block the writer. FULL: a committed transaction survives power loss,
    // not only a killed process.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

impl Store {
    /// Opens (creating if needed) `data_dir/signalbox.db` and applies pending migrations.
    pub fn open(data_dir: &Path) -> Result<Store, Error> {
        let path = data_dir.join(DB_FILE);
        let mut conn = Connection::open(&path)?;
        configure(&mut conn)?;
        migrations::apply(&mut conn)?;
        drop(conn);
        let manager = SqliteConnectionManager::file(&path).with_init(configure);
        let pool = Pool::builder()
            .max_size(8)
            .connection_timeout(Duration::from_secs(10))
            .build(manager)?;
        Ok(Store {
            backend: Backend::Sqlite(pool),
            latency: latency_histogram(),
        })
    }

    /// Connects to PostgreSQL at `url` (`postgres://…`) and applies pending migrations.
    pub async fn connect_postgres(url: &str) -> Result<Store, Error> {
        Ok(Store {
            backend: Backend::Postgres(pg::Pg::connect(url).await?),
            latency: latency_histogram(),
        })
    }

    /// The store `config` names: PostgreSQL at `database_url` if set, else SQLite in
    /// `data_dir`.
    pub async fn from_config(config: &crate::config::Config) -> Result<Store, Error> {
        match &config.database_url {
            Some(url) => Store::connect_postgres(url).await,
            None => Store::open(&config.data_dir),
        }
    }

    /// Which backend this is: `sqlite` or `postgres`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Awaits one PostgreSQL operation, observing its time like `run` does for SQLite.
    async fn timed<T>(&self, operation: impl std::future::Future<Output = T>) -> T {
        let started = crate::clock::monotonic();
        let result = operation.await;
        self.latency.observe(started.elapsed().as_secs_f64());
        result
    }

    /// The PostgreSQL backend, when the store is on one.
    fn pg(&self) -> Option<&pg::Pg> {
        match &self.backend {
            Backend::Postgres(pg) => Some(pg),
            Backend::Sqlite(_) => None,
        }
    }

    /// Seconds spent per database operation (for `/metrics`).
    pub fn latency_histogram(&self) -> Histogram {
        self.latency.clone()
    }

    /// Whether the database answers (for `/healthz`).
    pub async fn ping(&self) -> Result<(), Error> {
        if let Some(pg) = self.pg() {
            return self.timed(pg.ping()).await;
        }
        self.run(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
            .await
            .map(|_| ())
    }

    /// Runs `f` with a pooled connection on the blocking thread pool.
    async fn run<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, Error> + Send + 'static,
    {
        let Backend::Sqlite(pool) = &self.backend else {
            return Err(Error::Internal(
                "an SQLite operation on a PostgreSQL store".into(),
            ));
        };
        let pool = pool.clone();
        let latency = self.latency.clone();
        tokio::task::spawn_blocking(move || {
            let started = crate::clock::monotonic();
            let mut conn = pool.get()?;
            let result = f(&mut conn);
            latency.observe(started.elapsed().as_secs_f64());
            result
        })
        .await
        .map_err(|e| Error::Internal(format!("database task failed: {e}")))?
    }
}
