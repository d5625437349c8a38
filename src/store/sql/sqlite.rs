//! SQLite: one file in WAL mode with foreign keys on, for one Herald instance.

use std::str::FromStr;
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, Executor};

use crate::store::{StoreError, StoreResult};

/// Open (creating the file and its folder if needed) the database at `url` (`sqlite://path`,
/// `sqlite:path` or `sqlite::memory:`).
pub(super) async fn connect(url: &str) -> StoreResult<AnyPool> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5));
    let filename = options.get_filename();
    // sqlx names an in-memory database `file:sqlx-in-memory-N`, so ask the URL, not the name.
    let (database, query) = url.split_once('?').unwrap_or((url, ""));
    let in_memory = database.ends_with(":memory:")
        || query.split('&').any(|p| p == "mode=memory")
        || filename.as_os_str().is_empty();
    if !in_memory
        && let Some(dir) = filename.parent()
        && !dir.as_os_str().is_empty()
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                StoreError::Database(sqlx::Error::Configuration(
                    format!("cannot create the database folder {}: {e}", dir.display()).into(),
                ))
            })?;
    }
    if !in_memory {
        owner_only(filename)?;
        // Make the file and switch it to WAL on one connection first: the switch needs the
        // database to itself, and pooled connections opening at the same moment would get
        // "database is locked" (the journal-mode pragma runs before their busy timeout
        // applies). WAL is a property of the file, so every later connection has it.
        sqlx::SqliteConnection::connect_with(&options)
            .await?
            .close()
            .await?;
    }
    // The pool speaks through sqlx's Any driver, which opens SQLite from a URL with sqlx's
    // defaults (foreign keys on, 5 s busy timeout); the rest is set on each connection.
    let any_url = if in_memory {
        "sqlite::memory:".to_owned()
    } else {
        options.to_url_lossy().to_string()
    };
    // An in-memory database lives in one connection; a file serves readers in parallel.
    let max = if in_memory { 1 } else { 3 };
    let pool = AnyPoolOptions::new()
        .max_connections(max)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000")
                    .await?;
                Ok(())
            })
        })
        .connect(&any_url)
        .await?;
    Ok(pool)
}

/// The database holds password hashes, bot tokens and app passwords: its file is made
/// readable by its owner only before SQLite opens it (SQLite gives the `-wal` and `-shm` files
/// the database file's permissions), and an existing file readable by others is narrowed.
fn owner_only(path: &std::path::Path) -> StoreResult<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let failed = |e: std::io::Error| {
        StoreError::Database(sqlx::Error::Configuration(
            format!("cannot make {} private: {e}", path.display()).into(),
        ))
    };
    match std::fs::metadata(path) {
        Ok(meta) => {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    file = %path.display(),
                    "the database was readable by others: it is now its owner's only"
                );
                for suffix in ["", "-wal", "-shm"] {
                    let mut file = path.as_os_str().to_owned();
                    file.push(suffix);
                    match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(failed(e));
                        }
                        _ => {}
                    }
                }
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map(drop)
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => Ok(()),
                _ => Err(failed(e)),
            }),
        Err(e) => Err(failed(e)),
    }
}

/// Open the existing database at `url` without changing it: never made, never migrated, its
/// journal mode as it is; read-only when `read_only` (a copy's source, a backup).
pub(super) async fn open_existing(url: &str, read_only: bool) -> StoreResult<AnyPool> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(false)
        .read_only(read_only)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5));
    let filename = options.get_filename();
    if filename.as_os_str().is_empty() || !filename.is_file() {
        return Err(StoreError::Refused(format!(
            "there is no database at {}",
            filename.display()
        )));
    }
    Ok(AnyPoolOptions::new()
        .max_connections(if read_only { 1 } else { 3 })
        .connect(options.to_url_lossy().as_ref())
        .await?)
}

pub(super) async fn migrate(pool: &AnyPool) -> StoreResult<()> {
    sqlx::migrate!("./migrations/sqlite").run(pool).await?;
    rebuild_channels_for_kinds(pool).await
}

/// Let the channels table hold signed webhooks and email (see
/// migrations/sqlite-rebuilds/channels_kinds.sql for why this is not a sqlx migration).
async fn rebuild_channels_for_kinds(pool: &AnyPool) -> StoreResult<()> {
    let definition: String = sqlx::query_scalar(
        "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'channels'",
    )
    .fetch_one(pool)
    .await?;
    if definition.contains("'email'") {
        return Ok(());
    }
    let mut conn = pool.acquire().await?;
    conn.execute("PRAGMA foreign_keys = OFF").await?;
    let rebuilt = rebuild_channels(&mut conn).await;
    conn.execute("PRAGMA foreign_keys = ON").await?;
    rebuilt
}

async fn rebuild_channels(conn: &mut sqlx::AnyConnection) -> StoreResult<()> {
    let mut tx = conn.begin().await?;
    tx.execute(include_str!(
        "../../../migrations/sqlite-rebuilds/channels_kinds.sql"
    ))
    .await?;
    let broken = sqlx::query("PRAGMA foreign_key_check")
        .fetch_all(&mut *tx)
        .await?;
    if !broken.is_empty() {
        return Err(StoreError::Corrupt(format!(
            "rebuilding channels would break {} foreign keys",
            broken.len()
        )));
    }
    tx.commit().await?;
    Ok(())
}
