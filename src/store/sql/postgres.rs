//! PostgreSQL: one database shared by several Herald instances.

use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

use crate::store::StoreResult;

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
