//! The SQL store: one implementation over sqlx's `Any` driver for SQLite (one instance) and
//! PostgreSQL (several instances). Timestamps are unix seconds, flags 0 or 1 and every id and
//! counter a 64-bit integer, so the same SQL with `$n` placeholders runs on both; what is not
//! portable (connecting, migrations, claiming a delivery, change notices) lives in the
//! backend's own module, `sqlite.rs` or `postgres.rs`.
//!
//! Each aggregate's file reads rows into plain structs (`sqlx::FromRow`, the columns as
//! stored: seconds, 0/1 flags (the Any driver has no booleans for SQLite), enum names, JSON
//! text) and turns them into domain types with `TryFrom`, which is where a value no domain
//! type can hold becomes [`StoreError::Corrupt`] rather than a panic.

use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::AnyPool;

use sqlx::any::AnyRow;

use super::{Change, ChangeFeed, Page, Store, StoreError, StoreResult};

mod accounts;
mod copy;
mod idempotency;
mod incidents;
mod mail;
pub(crate) mod outbox;
mod postgres;
mod rollouts;
mod sqlite;
mod subscribers;
mod windows;

pub use copy::{CopyOptions, CopyReport};

/// The database behind a [`SqlStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a database URL names: `postgres://` or `postgresql://`, else SQLite.
    pub fn of_url(url: &str) -> Self {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::Postgres
        } else {
            Self::Sqlite
        }
    }

    /// What a subquery picking a row of `table` to claim ends with, so that concurrent
    /// claimers pass over a row another is taking instead of queueing behind it. SQLite
    /// runs one writer at a time and needs nothing.
    fn skip_locked(self, table: &str) -> String {
        match self {
            Self::Sqlite => String::new(),
            Self::Postgres => format!(" FOR UPDATE OF {table} SKIP LOCKED"),
        }
    }
}

pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
    /// Where it connected (PostgreSQL's change notices open a connection of their own).
    url: String,
    /// Names this store in the change notices it publishes, so it does not hear its own.
    origin: String,
}

impl SqlStore {
    /// Open the database at `url`: `sqlite://path` (the file and its folder are made if
    /// needed), `sqlite::memory:`, or `postgres://…`.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url);
        let pool = match backend {
            Backend::Sqlite => sqlite::connect(url).await?,
            Backend::Postgres => postgres::connect(url).await?,
        };
        Ok(Self {
            pool,
            backend,
            url: url.to_owned(),
            origin: crate::ids::random_hex(8),
        })
    }

    /// Open a database that must already hold Herald's tables, without making or migrating
    /// anything: what every command but `serve` does, so that a mistyped path or a missing
    /// setting is an error rather than a new, empty database. `read_only` opens a SQLite file
    /// so that reading it never changes it.
    pub async fn open_existing(url: &str, read_only: bool) -> StoreResult<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url);
        let pool = match backend {
            Backend::Sqlite => sqlite::open_existing(url, read_only).await?,
            Backend::Postgres => postgres::connect(url).await?,
        };
        let store = Self {
            pool,
            backend,
            url: url.to_owned(),
            origin: crate::ids::random_hex(8),
        };
        // What is read must be Herald's already, and so must a SQLite file a command writes
        // to (a file of something else is refused). A PostgreSQL database the operator made
        // for Herald (createdb) may be new: the migrations give it Herald's tables, as the
        // server would.
        match store.schema_version().await {
            Ok(_) => {}
            Err(StoreError::Refused(why))
                if !read_only && backend == Backend::Postgres && why.contains("no Herald") => {}
            Err(e) => return Err(e),
        }
        Ok(store)
    }

    /// The newest migration the database has applied; refused when it holds no Herald schema,
    /// or one newer than this build knows.
    pub async fn schema_version(&self) -> StoreResult<i64> {
        let latest: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| match &e {
                // No migrations table: not Herald's (SQLite says so in words, PostgreSQL 42P01).
                sqlx::Error::Database(db)
                    if db.code().as_deref() == Some("42P01")
                        || db.message().contains("no such table") =>
                {
                    StoreError::Refused("it holds no Herald database".into())
                }
                _ => StoreError::Database(e),
            })?;
        let Some(latest) = latest else {
            return Err(StoreError::Refused("it holds no Herald database".into()));
        };
        let migrator = match self.backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
        };
        let known = migrator
            .migrations
            .iter()
            .map(|m| m.version)
            .max()
            .unwrap_or(0);
        if latest > known {
            return Err(StoreError::Refused(format!(
                "it was written by a newer Herald (schema {latest}; this one knows up to {known}): \
                 use that Herald or a newer one"
            )));
        }
        Ok(latest)
    }

    /// One page of `select` (which ends in `LIMIT $1 OFFSET $2`), with the total that `count`
    /// finds.
    async fn page<R, T>(
        &self,
        count: &str,
        select: &str,
        offset: i64,
        limit: i64,
    ) -> StoreResult<Page<T>>
    where
        R: for<'r> sqlx::FromRow<'r, AnyRow> + Send + Unpin,
        T: TryFrom<R, Error = StoreError>,
    {
        let total: i64 = sqlx::query_scalar(count).fetch_one(&self.pool).await?;
        let items = sqlx::query_as::<_, R>(select)
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(T::try_from)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page { items, total })
    }

    /// Which database this store talks to.
    pub fn backend(&self) -> Backend {
        self.backend
    }
}

fn ts(secs: i64) -> StoreResult<Timestamp> {
    Timestamp::from_second(secs).map_err(|e| StoreError::Corrupt(format!("timestamp {secs}: {e}")))
}

fn opt_ts(secs: Option<i64>) -> StoreResult<Option<Timestamp>> {
    secs.map(ts).transpose()
}

fn secs(t: Timestamp) -> i64 {
    t.as_second()
}

fn opt_secs(t: Option<Timestamp>) -> Option<i64> {
    t.map(secs)
}

fn parse<T>(value: &str, what: &str, f: impl Fn(&str) -> Option<T>) -> StoreResult<T> {
    f(value).ok_or_else(|| StoreError::Corrupt(format!("unknown {what} {value:?}")))
}

#[async_trait]
impl Store for SqlStore {
    async fn migrate(&self) -> StoreResult<()> {
        match self.backend {
            Backend::Sqlite => sqlite::migrate(&self.pool).await,
            Backend::Postgres => postgres::migrate(&self.pool).await,
        }
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn publish(&self, change: Change) -> StoreResult<()> {
        match self.backend {
            Backend::Sqlite => Ok(()),
            Backend::Postgres => postgres::publish(&self.pool, &self.origin, change).await,
        }
    }

    fn pool_use(&self) -> (u32, u32) {
        let idle = self.pool.num_idle() as u32;
        (self.pool.size().saturating_sub(idle), idle)
    }

    fn changes(&self) -> Option<ChangeFeed> {
        match self.backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(postgres::changes(&self.url, &self.origin)),
        }
    }
}
