//! The PostgreSQL backend of [`crate::store::Store`] (`database_url`): a deadpool pool of
//! tokio-postgres connections (no TLS), the same schema as SQLite (see [`migrations`]) and the
//! same behaviour and errors, per table in the files next to this one. What SQLite does in one
//! `begin_write` transaction is one PostgreSQL transaction here; the row it changes is locked
//! first (`SELECT … FOR UPDATE`), and call transitions are compare-and-set on the status, so
//! two nodes acting on one call at once cannot both win. A server that does not answer makes
//! every operation fail with [`Error::Unavailable`] (503), and a transaction cut off midway is
//! rolled back by the server: nothing half-written.

pub mod analytics;
pub mod calls;
pub mod migrations;
pub mod rooms;
pub mod users;
pub mod webhooks;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::{GenericClient, NoTls};

use crate::error::Error;

/// How long an operation waits for a connection (and a new connection for the server).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest one statement may run (a PostgreSQL that accepts but does not answer, a lock
/// held elsewhere) before it is cancelled and answered as unavailable; a URL's own `options`
/// win.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection whose peer went silent is found out by TCP keepalive after this idle time...
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// ...and one with unacknowledged data is dropped after this.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// Something queries run on: a pooled connection or a transaction.
pub(crate) trait Db: GenericClient + Sync {}
impl<T: GenericClient + Sync> Db for T {}

/// A cloneable handle to the PostgreSQL pool.
#[derive(Clone)]
pub struct Pg {
    pool: Pool,
}

/// A pooled connection.
pub(crate) type Conn = deadpool_postgres::Object;

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        if let Some(db) = e.as_db_error() {
            let code = db.code().code();
            // Connection exceptions, the server shutting down or starting, too many clients,
            // a statement cancelled by statement_timeout (the server does not answer in time).
            if code.starts_with("08")
                || code.starts_with("57P")
                || code == "53300"
                || code == "57014"
            {
                return Error::Unavailable(format!("postgres: {e}"));
            }
            return Error::Internal(format!("postgres: {e}"));
        }
        let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
        if e.is_closed() || io {
            Error::Unavailable(format!("postgres: {e}"))
        } else {
            Error::Internal(format!("postgres: {e}"))
        }
    }
}

impl From<PoolError> for Error {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Backend(e) => e.into(),
            e => Error::Unavailable(format!("postgres pool: {e}")),
        }
    }
}

impl Pg {
    /// Connects to `url` and brings the schema up to date.
    pub async fn connect(url: &str) -> Result<Pg, Error> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| Error::Internal(format!("database_url: {e}")))?;
        config.connect_timeout(CONNECT_TIMEOUT);
        config.keepalives(true);
        config.keepalives_idle(KEEPALIVE_IDLE);
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
        if config.get_options().is_none() {
            config.options(format!(
                "-c statement_timeout={}",
                STATEMENT_TIMEOUT.as_millis()
            ));
        }
        if config.get_application_name().is_none() {
            config.application_name("signalbox");
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| Error::Internal(format!("postgres pool: {e}")))?;
        let pg = Pg { pool };
        let mut conn = pg.conn().await?;
        migrations::apply(&mut conn).await?;
        Ok(pg)
    }

    /// A connection from the pool.
    pub(crate) async fn conn(&self) -> Result<Conn, Error> {
        Ok(self.pool.get().await?)
    }

    /// Whether the server answers (for `/healthz`).
    pub async fn ping(&self) -> Result<(), Error> {
        let conn = self.conn().await?;
        conn.simple_query("SELECT 1").await?;
        Ok(())
    }
}

/// A stored non-negative count as the unsigned type the store's structs use.
pub(crate) fn unsigned<T: TryFrom<i64> + Default>(n: i64) -> T {
    T::try_from(n).unwrap_or_default()
}

/// An unsigned figure as PostgreSQL's BIGINT (saturating).
pub(crate) fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A value PostgreSQL returned that the schema does not allow.
pub(crate) fn corrupt(what: &str, value: &str) -> Error {
    Error::Internal(format!("unexpected {what} `{value}` in database"))
}
