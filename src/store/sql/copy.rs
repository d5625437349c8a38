//! Moving between databases: `herald db copy` (everything, from one store to another, either
//! backend) and `herald db backup` (a consistent copy of a SQLite file while Herald runs).

use std::path::Path;

use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row, Transaction};

use super::{Backend, SqlStore};
use crate::store::{StoreError, StoreResult};

/// Every table, parents before children, with the columns that order its rows.
const TABLES: &[(&str, &str)] = &[
    ("components", "id"),
    ("users", "id"),
    ("api_tokens", "id"),
    ("audit_log", "id"),
    ("sessions", "id_hash"),
    ("maintenances", "id"),
    ("maintenance_components", "maintenance_id, component_id"),
    ("steps", "id"),
    ("updates", "id"),
    ("channels", "id"),
    ("rollouts", "id"),
    ("rollout_targets", "id"),
    ("rollout_updates", "id"),
    ("incidents", "id"),
    ("incident_components", "incident_id, component_id"),
    ("incident_updates", "id"),
    ("incident_alerts", "source, group_key"),
    ("deliveries", "id"),
    ("channel_threads", "channel_id, maintenance_id"),
    ("rollout_threads", "channel_id, rollout_id"),
    ("incident_threads", "channel_id, incident_id"),
    ("login_attempts", "attempt_key"),
    ("setup_code", "id"),
    ("idempotency_keys", "scope, idem_key"),
    ("subscribers", "id"),
    ("site_secrets", "name"),
    ("mail_fanouts", "id"),
    ("mail_fanout_deliveries", "delivery_id"),
    ("mail_batches", "id"),
];

/// A rollout names the one rolling it back, which comes later: that column is filled in once
/// every rollout is there.
const LATER_REFERENCE: (&str, &str) = ("rollouts", "rolled_back_by");

/// What to copy.
#[derive(Debug, Clone, Copy, Default)]
pub struct CopyOptions {
    /// Empty a target that holds data first (else a non-empty target is refused).
    pub replace: bool,
    /// Also the admin UI's sessions (else everyone signs in again on the new database).
    pub sessions: bool,
    /// With `replace`, go on even though the source holds nothing (which empties the target).
    pub empty_source: bool,
}

/// Rows per table, as found in the source and then in the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    pub tables: Vec<(&'static str, u64)>,
}

/// A column and whether it holds integers (else text).
struct Column {
    name: String,
    integer: bool,
}

/// One value as both backends store it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Null,
    Integer(i64),
    Text(String),
}

impl SqlStore {
    /// Copy everything in this store into `target` in one transaction, then read both back
    /// and compare them row by row. Both are migrated to the same version first.
    pub async fn copy_to(
        &self,
        target: &SqlStore,
        options: CopyOptions,
    ) -> StoreResult<CopyReport> {
        use crate::store::Store as _;
        // The source is read as it is: never migrated, so a backup is never changed. A table
        // or column an older source lacks is copied as the target's default.
        self.schema_version().await?;
        target.migrate().await?;
        let tables: Vec<&'static str> = TABLES
            .iter()
            .map(|(t, _)| *t)
            .filter(|t| options.sessions || *t != "sessions")
            .collect();
        // One snapshot of the source, however long the copy takes.
        let mut from = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            from.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await?;
        }
        let in_source: Vec<&'static str> = {
            let mut present = Vec::new();
            for &table in &tables {
                if self.table_exists(&mut from, table).await? {
                    present.push(table);
                }
            }
            present
        };
        let source_rows = count_all(&mut from, &in_source).await?;

        let mut to = target.pool.begin().await?;
        let held: i64 = count_all(&mut to, &tables).await?;
        if held > 0 {
            if !options.replace {
                return Err(StoreError::Refused(format!(
                    "the target database already holds {held} rows; pass --replace to empty it first"
                )));
            }
            if source_rows == 0 && !options.empty_source {
                return Err(StoreError::Refused(format!(
                    "the source holds no rows: replacing would only delete the target's {held}; \
                     add --empty-source if that is what you want"
                )));
            }
            for table in TABLES.iter().rev() {
                to.execute(format!("DELETE FROM {}", table.0).as_str())
                    .await?;
            }
        }
        let mut report = Vec::new();
        for &table in &tables {
            if !in_source.contains(&table) {
                report.push((table, 0));
                continue;
            }
            let order = order_of(table);
            let columns = shared_columns(
                target.columns(&mut to, table).await?,
                &self.columns(&mut from, table).await?,
            );
            let rows = read(&mut from, table, &columns, order).await?;
            write(&mut to, table, &columns, &rows).await?;
            report.push((table, rows.len() as u64));
        }
        if target.backend == Backend::Postgres {
            for &table in &tables {
                if order_of(table) == "id" {
                    // Explicit ids leave the identity behind: new rows continue after the last.
                    to.execute(
                        format!(
                            "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
                             COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
                        )
                        .as_str(),
                    )
                    .await?;
                }
            }
        }
        // Verify inside the transaction: what it would commit is what the source holds.
        for &table in &in_source {
            let columns = shared_columns(
                target.columns(&mut to, table).await?,
                &self.columns(&mut from, table).await?,
            );
            let order = order_of(table);
            let source = read(&mut from, table, &columns, order).await?;
            let copied = read(&mut to, table, &columns, order).await?;
            if source != copied {
                return Err(StoreError::Corrupt(format!(
                    "{table}: the copy differs from the source ({} rows against {})",
                    copied.len(),
                    source.len()
                )));
            }
        }
        from.commit().await?;
        to.commit().await?;
        Ok(CopyReport { tables: report })
    }

    /// Write a consistent copy of this SQLite database to `path` (which must not exist) while
    /// Herald may be writing to it: SQLite's `VACUUM INTO` reads one snapshot.
    pub async fn backup_to(&self, path: &Path) -> StoreResult<()> {
        if self.backend != Backend::Sqlite {
            return Err(StoreError::Refused(
                "herald db backup copies SQLite files; back PostgreSQL up with pg_dump, or \
                 copy it to SQLite with herald db copy"
                    .into(),
            ));
        }
        if path.exists() {
            return Err(StoreError::Refused(format!(
                "{} already exists; a backup never overwrites",
                path.display()
            )));
        }
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
            && !dir.is_dir()
        {
            return Err(StoreError::Refused(format!(
                "the folder {} does not exist",
                dir.display()
            )));
        }
        let path = path
            .to_str()
            .ok_or_else(|| StoreError::Refused(format!("{} is not valid UTF-8", path.display())))?;
        // A backup holds password hashes, token hashes and channel secrets: its owner's only,
        // from the first byte. The file is made empty with that mode (never over another one),
        // and SQLite writes into the empty file.
        let mut file = std::fs::OpenOptions::new();
        file.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
        file.open(path).map_err(|e| {
            StoreError::Refused(format!(
                "cannot make {path}: {e}; a backup never overwrites"
            ))
        })?;
        if let Err(e) = sqlx::query("VACUUM INTO $1")
            .bind(path)
            .execute(&self.pool)
            .await
        {
            let _ = std::fs::remove_file(path);
            return Err(e.into());
        }
        Ok(())
    }

    /// Whether this database has `table`.
    async fn table_exists(&self, tx: &mut Transaction<'_, Any>, table: &str) -> StoreResult<bool> {
        let sql = match self.backend {
            Backend::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1"
            }
            Backend::Postgres => {
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = $1"
            }
        };
        let n: i64 = sqlx::query_scalar(sql)
            .bind(table)
            .fetch_one(&mut **tx)
            .await?;
        Ok(n > 0)
    }

    /// Rows in Herald's tables (the sessions too with `sessions`): what `--replace` deletes.
    pub async fn row_count(&self, sessions: bool) -> StoreResult<i64> {
        let mut tx = self.pool.begin().await?;
        let mut tables = Vec::new();
        for (table, _) in TABLES {
            if (sessions || *table != "sessions") && self.table_exists(&mut tx, table).await? {
                tables.push(*table);
            }
        }
        count_all(&mut tx, &tables).await
    }

    /// The table's columns as this database declares them.
    async fn columns(
        &self,
        tx: &mut Transaction<'_, Any>,
        table: &str,
    ) -> StoreResult<Vec<Column>> {
        let sql = match self.backend {
            Backend::Sqlite => "SELECT name, type FROM pragma_table_info($1) ORDER BY cid",
            Backend::Postgres => {
                "SELECT column_name::text, data_type::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1 \
                 ORDER BY ordinal_position"
            }
        };
        let rows = sqlx::query(sql).bind(table).fetch_all(&mut **tx).await?;
        let columns: Vec<Column> = rows
            .iter()
            .map(|row| {
                let name: String = row.try_get(0)?;
                let kind: String = row.try_get(1)?;
                let kind = kind.to_ascii_lowercase();
                Ok(Column {
                    name,
                    integer: kind.contains("int"),
                })
            })
            .collect::<StoreResult<_>>()?;
        if columns.is_empty() {
            return Err(StoreError::Corrupt(format!("no table {table}")));
        }
        Ok(columns)
    }
}

/// The target's columns that the source has too (an older source lacks the newest).
fn shared_columns(target: Vec<Column>, source: &[Column]) -> Vec<Column> {
    target
        .into_iter()
        .filter(|c| source.iter().any(|s| s.name == c.name))
        .collect()
}

fn order_of(table: &str) -> &'static str {
    TABLES
        .iter()
        .find(|(t, _)| *t == table)
        .map_or("1", |(_, order)| order)
}

async fn count_all(tx: &mut Transaction<'_, Any>, tables: &[&str]) -> StoreResult<i64> {
    let mut total = 0;
    for table in tables {
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&mut **tx)
            .await?;
        total += n;
    }
    Ok(total)
}

async fn read(
    tx: &mut Transaction<'_, Any>,
    table: &str,
    columns: &[Column],
    order: &str,
) -> StoreResult<Vec<Vec<Value>>> {
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    let sql = format!("SELECT {} FROM {table} ORDER BY {order}", names.join(", "));
    sqlx::query(&sql)
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|row| values(row, columns))
        .collect()
}

fn values(row: &AnyRow, columns: &[Column]) -> StoreResult<Vec<Value>> {
    columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Ok(if c.integer {
                row.try_get::<Option<i64>, _>(i)?
                    .map_or(Value::Null, Value::Integer)
            } else {
                row.try_get::<Option<String>, _>(i)?
                    .map_or(Value::Null, Value::Text)
            })
        })
        .collect()
}

async fn write(
    tx: &mut Transaction<'_, Any>,
    table: &str,
    columns: &[Column],
    rows: &[Vec<Value>],
) -> StoreResult<()> {
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
    let insert = format!(
        "INSERT INTO {table} ({}) VALUES ({})",
        names.join(", "),
        placeholders.join(", ")
    );
    let later = (table == LATER_REFERENCE.0)
        .then(|| names.iter().position(|n| *n == LATER_REFERENCE.1))
        .flatten();
    for row in rows {
        let mut query = sqlx::query(&insert);
        for (i, (value, column)) in row.iter().zip(columns).enumerate() {
            let value = if Some(i) == later {
                &Value::Null
            } else {
                value
            };
            query = match value {
                Value::Integer(n) => query.bind(*n),
                Value::Text(s) => query.bind(s.as_str()),
                Value::Null if column.integer => query.bind(None::<i64>),
                Value::Null => query.bind(None::<String>),
            };
        }
        query.execute(&mut **tx).await?;
    }
    if let Some(i) = later {
        let id = names
            .iter()
            .position(|n| *n == "id")
            .ok_or_else(|| StoreError::Corrupt(format!("{table} has no id column")))?;
        for row in rows {
            if let (Value::Integer(by), Value::Integer(id)) = (&row[i], &row[id]) {
                sqlx::query(&format!(
                    "UPDATE {table} SET {} = $1 WHERE id = $2",
                    LATER_REFERENCE.1
                ))
                .bind(*by)
                .bind(*id)
                .execute(&mut **tx)
                .await?;
            }
        }
    }
    Ok(())
}
