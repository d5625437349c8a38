//! PostgreSQL: one database shared by several Herald instances.

use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::postgres::PgListener;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::store::{Change, ChangeFeed, StoreResult};

pub(super) async fn connect(url: &str) -> StoreResult<AnyPool> {
    let pool = AnyPoolOptions::new()
        .max_connections(10)
        .min_connections(1)
        // A database that cannot be reached makes requests fail within seconds (and /readyz
        // say so) rather than queue.
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await?;
    Ok(pool)
}

/// Apply pending migrations. sqlx holds an advisory lock meanwhile, so instances starting
/// together migrate one after the other.
pub(super) async fn migrate(pool: &AnyPool) -> StoreResult<()> {
    sqlx::migrate!("./migrations/postgres").run(pool).await?;
    Ok(())
}

/// The channel change notices travel on.
const CHANNEL: &str = "herald_changes";

/// Notify every other listening instance (NOTIFY is delivered at commit, so a listener that
/// hears it sees the change). `origin` names this store, whose own listener skips it.
pub(super) async fn publish(pool: &AnyPool, origin: &str, change: Change) -> StoreResult<()> {
    // The payload is one of Change's fixed names and a hex id, never input.
    let sql = format!("NOTIFY {CHANNEL}, '{} {origin}'", change.as_str());
    sqlx::query(&sql).execute(pool).await?;
    Ok(())
}

/// How often the listening connection is asked whether the database is still there, and how
/// long it may take to answer.
const HEARTBEAT: Duration = Duration::from_secs(3);

/// A task listening for notices on a connection of its own, reconnecting after a loss (and
/// saying so with a `None`, since notices sent meanwhile are gone). While it cannot listen it
/// sends a `None` every second: then the instances poll instead.
pub(super) fn changes(url: &str, origin: &str) -> ChangeFeed {
    let (tx, rx) = mpsc::channel(64);
    let (url, origin) = (url.to_owned(), origin.to_owned());
    tokio::spawn(async move {
        let mut failures = 0u32;
        while !tx.is_closed() {
            match listen(&url, &origin, &tx).await {
                Ok(()) => return,
                Err(e) => {
                    // The first failure is worth a warning; the next ones, while the database
                    // stays away, only at debug level.
                    if failures == 0 {
                        warn!(error = %e, "change notices interrupted; polling until they are back");
                    } else {
                        debug!(error = %e, "change notices still unavailable");
                    }
                    failures = failures.saturating_add(1);
                }
            }
            if tx.send(None).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    rx
}

/// Forward notices until the connection fails (an error) or the receiver is gone (`Ok`).
async fn listen(
    url: &str,
    origin: &str,
    tx: &mpsc::Sender<Option<Change>>,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANNEL).await?;
    // Whatever happened before we listened is unknown.
    if tx.send(None).await.is_err() {
        return Ok(());
    }
    // A database that stops answering without closing the connection (a halted host, a
    // network partition) sends nothing: without asking, the loss would go unnoticed for as long
    // as TCP takes, and the instance would trust its cache meanwhile. Ask every few seconds.
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    loop {
        let notice = tokio::select! {
            _ = tx.closed() => return Ok(()),
            _ = heartbeat.tick() => {
                match tokio::time::timeout(HEARTBEAT, sqlx::query("SELECT 1").execute(&mut listener)).await {
                    Ok(answered) => answered?,
                    Err(_) => return Err(sqlx::Error::PoolTimedOut),
                };
                continue;
            }
            notice = listener.try_recv() => notice?,
        };
        let Some(notice) = notice else {
            return Err(sqlx::Error::Protocol(
                "the listening connection closed".into(),
            ));
        };
        let (change, from) = notice
            .payload()
            .split_once(' ')
            .unwrap_or((notice.payload(), ""));
        if from == origin {
            continue;
        }
        match Change::parse(change) {
            Some(change) => {
                if tx.send(Some(change)).await.is_err() {
                    return Ok(());
                }
            }
            None => debug!(payload = notice.payload(), "unknown change notice"),
        }
    }
}
