//! The SQL store: one implementation over sqlx's `Any` driver for SQLite (one instance) and
//! PostgreSQL (several instances). Timestamps are unix seconds, flags 0 or 1 and every id and
//! counter a 64-bit integer, so the same SQL with `$n` placeholders runs on both; what is not
//! portable (connecting, migrations, claiming a delivery, change notices) lives in the
//! backend's own module, `sqlite.rs` or `postgres.rs`.

use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::AnyPool;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use tracing::instrument;

use super::{
    AccountChange, Change, ChangeFeed, MaintenanceSummary, Page, Store, StoreError, StoreResult,
};
use crate::domain::{
    ApiToken, AuditEntry, Automation, Component, Impact, Maintenance, NewComponent, NewDelivery,
    NewMaintenance, NewUpdate, Role, Schedule, Step, StepState, Subject, Update, UpdateKind, User,
    WindowState,
};

mod copy;
mod outbox;
mod postgres;
mod rollouts;
mod sqlite;

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

    /// Which database this store talks to.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Windows matching `filter` (SQL over `m`), with steps and components.
    async fn windows_where(&self, filter: &str) -> StoreResult<Vec<Maintenance>> {
        let mut windows = sqlx::query(&format!(
            "SELECT {MAINTENANCE_COLUMNS} FROM maintenances m WHERE {filter} \
             ORDER BY m.starts_at IS NULL, m.starts_at, m.id"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(maintenance_from)
        .collect::<StoreResult<Vec<_>>>()?;
        if windows.is_empty() {
            return Ok(windows);
        }
        let steps = sqlx::query(&format!(
            "SELECT {STEP_COLUMNS} FROM steps s JOIN maintenances m ON m.id = s.maintenance_id \
             WHERE {filter} ORDER BY s.maintenance_id, s.position"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| Ok((row.try_get("maintenance_id")?, step_from(row)?)))
        .collect::<StoreResult<Vec<_>>>()?;
        let components = sqlx::query(&format!(
            "SELECT mc.maintenance_id, {COMPONENT_COLUMNS} FROM components c \
             JOIN maintenance_components mc ON mc.component_id = c.id \
             JOIN maintenances m ON m.id = mc.maintenance_id \
             WHERE {filter} ORDER BY c.position, c.id"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| Ok((row.try_get("maintenance_id")?, component_from(row)?)))
        .collect::<StoreResult<Vec<_>>>()?;
        attach(&mut windows, steps, components);
        Ok(windows)
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

/// A flag as stored: 0 or 1 (sqlx's Any driver has no booleans for SQLite).
fn flag(row: &AnyRow, column: &str) -> StoreResult<bool> {
    Ok(row.try_get::<i64, _>(column)? != 0)
}

fn parse<T>(value: &str, what: &str, f: impl Fn(&str) -> Option<T>) -> StoreResult<T> {
    f(value).ok_or_else(|| StoreError::Corrupt(format!("unknown {what} {value:?}")))
}

fn component_from(row: &AnyRow) -> StoreResult<Component> {
    Ok(Component {
        id: row.try_get("id")?,
        slug: row.try_get("slug")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        group_name: row.try_get("group_name")?,
        position: row.try_get("position")?,
    })
}

fn step_from(row: &AnyRow) -> StoreResult<Step> {
    let state: String = row.try_get("state")?;
    Ok(Step {
        id: Some(row.try_get("id")?),
        position: row.try_get("position")?,
        title: row.try_get("title")?,
        description: row.try_get("description")?,
        state: parse(&state, "step state", StepState::parse)?,
        started_at: opt_ts(row.try_get("started_at")?)?,
        finished_at: opt_ts(row.try_get("finished_at")?)?,
        note: row.try_get("note")?,
        attempts: row.try_get("attempts")?,
    })
}

fn maintenance_from(row: &AnyRow) -> StoreResult<Maintenance> {
    let state: String = row.try_get("state")?;
    let impact: String = row.try_get("impact")?;
    Ok(Maintenance {
        id: row.try_get("id")?,
        title: row.try_get("title")?,
        description: row.try_get("description")?,
        state: parse(&state, "window state", WindowState::parse)?,
        impact: parse(&impact, "impact", Impact::parse)?,
        starts_at: opt_ts(row.try_get("starts_at")?)?,
        ends_at: opt_ts(row.try_get("ends_at")?)?,
        schedule_hint: row.try_get("schedule_hint")?,
        started_at: opt_ts(row.try_get("started_at")?)?,
        finished_at: opt_ts(row.try_get("finished_at")?)?,
        announced_at: opt_ts(row.try_get("announced_at")?)?,
        created_at: ts(row.try_get("created_at")?)?,
        updated_at: ts(row.try_get("updated_at")?)?,
        version: row.try_get("version")?,
        components: Vec::new(),
        steps: Vec::new(),
        automation: Automation {
            auto_start: flag(row, "auto_start")?,
            auto_complete: flag(row, "auto_complete")?,
            reminders: offsets(row.try_get("reminders")?),
        },
        reminded: offsets(row.try_get("reminded")?),
        overran_at: opt_ts(row.try_get("overran_at")?)?,
        sequence: row.try_get("sequence")?,
    })
}

/// Reminder offsets as stored: comma-separated seconds.
fn offsets(s: String) -> Vec<i64> {
    s.split(',').filter_map(|o| o.trim().parse().ok()).collect()
}

fn offsets_text(offsets: &[i64]) -> String {
    offsets
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn update_from(row: &AnyRow) -> StoreResult<Update> {
    let kind: String = row.try_get("kind")?;
    Ok(Update {
        id: row.try_get("id")?,
        maintenance_id: row.try_get("maintenance_id")?,
        kind: parse(&kind, "update kind", UpdateKind::parse)?,
        body: row.try_get("body")?,
        note: row.try_get("note")?,
        step_position: row.try_get("step_position")?,
        created_at: ts(row.try_get("created_at")?)?,
    })
}

fn token_from(row: &AnyRow) -> StoreResult<ApiToken> {
    let role: String = row.try_get("role")?;
    Ok(ApiToken {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: parse(&role, "role", Role::parse)?,
        prefix: row.try_get("prefix")?,
        created_by: row.try_get("created_by")?,
        created_at: ts(row.try_get("created_at")?)?,
        last_used_at: opt_ts(row.try_get("last_used_at")?)?,
        revoked_at: opt_ts(row.try_get("revoked_at")?)?,
    })
}

fn user_from(row: &AnyRow) -> StoreResult<User> {
    let role: String = row.try_get("role")?;
    Ok(User {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: parse(&role, "role", Role::parse)?,
        created_at: ts(row.try_get("created_at")?)?,
    })
}

const TOKEN_COLUMNS: &str =
    "id, name, role, prefix, created_by, created_at, last_used_at, revoked_at";

const COMPONENT_COLUMNS: &str = "c.id, c.slug, c.name, c.description, c.group_name, c.position";
const MAINTENANCE_COLUMNS: &str = "m.id, m.title, m.description, m.state, m.impact, m.starts_at, \
     m.ends_at, m.schedule_hint, m.started_at, m.finished_at, m.announced_at, m.created_at, \
     m.updated_at, m.version, m.auto_start, m.auto_complete, m.reminders, m.reminded, \
     m.overran_at, m.sequence";
const STEP_COLUMNS: &str = "s.id, s.maintenance_id, s.position, s.title, s.description, s.state, \
     s.started_at, s.finished_at, s.note, s.attempts";
const OPEN_PUBLIC: &str =
    "m.announced_at IS NOT NULL AND m.state IN ('planned', 'scheduled', 'in_progress')";

/// Attach steps and components (already ordered by maintenance id) to their windows.
fn attach(windows: &mut [Maintenance], steps: Vec<(i64, Step)>, components: Vec<(i64, Component)>) {
    for (mid, step) in steps {
        if let Some(w) = windows.iter_mut().find(|w| w.id == mid) {
            w.steps.push(step);
        }
    }
    for (mid, component) in components {
        if let Some(w) = windows.iter_mut().find(|w| w.id == mid) {
            w.components.push(component);
        }
    }
}

/// Insert the updates, returning their ids in order.
async fn insert_updates(
    tx: &mut Transaction<'_, Any>,
    maintenance_id: i64,
    updates: &[NewUpdate],
) -> StoreResult<Vec<i64>> {
    let mut ids = Vec::with_capacity(updates.len());
    for u in updates {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO updates (maintenance_id, kind, body, note, step_position, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(maintenance_id)
        .bind(u.kind.as_str())
        .bind(&u.body)
        .bind(&u.note)
        .bind(u.step_position)
        .bind(secs(u.created_at))
        .fetch_one(&mut **tx)
        .await?;
        ids.push(id);
    }
    Ok(ids)
}

/// Why an account statement changed `rows` rows: done, no such user, or the last admin.
async fn account_outcome(
    tx: &mut Transaction<'_, Any>,
    name: &str,
    rows: u64,
) -> StoreResult<AccountChange> {
    if rows == 1 {
        return Ok(AccountChange::Done);
    }
    let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(match exists {
        Some(_) => AccountChange::LastAdmin,
        None => AccountChange::NoSuchUser,
    })
}

async fn end_sessions(tx: &mut Transaction<'_, Any>, name: &str) -> StoreResult<()> {
    sqlx::query("DELETE FROM sessions WHERE user_id = (SELECT id FROM users WHERE name = $1)")
        .bind(name)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn replace_components(
    tx: &mut Transaction<'_, Any>,
    maintenance_id: i64,
    component_ids: impl Iterator<Item = i64>,
) -> StoreResult<()> {
    sqlx::query("DELETE FROM maintenance_components WHERE maintenance_id = $1")
        .bind(maintenance_id)
        .execute(&mut **tx)
        .await?;
    for cid in component_ids {
        sqlx::query(
            "INSERT INTO maintenance_components (maintenance_id, component_id) VALUES ($1, $2)",
        )
        .bind(maintenance_id)
        .bind(cid)
        .execute(&mut **tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound,
            _ => StoreError::Database(e),
        })?;
    }
    Ok(())
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

    fn changes(&self) -> Option<ChangeFeed> {
        match self.backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(postgres::changes(&self.url, &self.origin)),
        }
    }

    #[instrument(skip(self, new), fields(slug = %new.slug))]
    async fn create_component(&self, new: &NewComponent, now: Timestamp) -> StoreResult<Component> {
        let row = sqlx::query(&format!(
            "INSERT INTO components (slug, name, description, group_name, position, created_at) \
             VALUES ($1, $2, $3, $4, (SELECT COALESCE(MAX(position), 0) + 1 FROM components), $5) \
             RETURNING {}",
            COMPONENT_COLUMNS.replace("c.", "")
        ))
        .bind(&new.slug)
        .bind(&new.name)
        .bind(&new.description)
        .bind(&new.group_name)
        .bind(secs(now))
        .fetch_one(&self.pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Duplicate("a component with this slug")
            }
            _ => StoreError::Database(e),
        })?;
        component_from(&row)
    }

    #[instrument(skip(self))]
    async fn list_components(&self) -> StoreResult<Vec<Component>> {
        sqlx::query(&format!(
            "SELECT {COMPONENT_COLUMNS} FROM components c ORDER BY c.position, c.id"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(component_from)
        .collect()
    }

    #[instrument(skip(self, new), fields(title = %new.title))]
    async fn create_maintenance(
        &self,
        new: &NewMaintenance,
        now: Timestamp,
    ) -> StoreResult<Maintenance> {
        let (starts_at, ends_at, hint) = match &new.schedule {
            Schedule::Tentative { hint } => (None, None, hint.clone()),
            Schedule::Fixed { starts_at, ends_at } => (Some(*starts_at), *ends_at, None),
        };
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO maintenances (title, description, state, impact, starts_at, ends_at, \
             schedule_hint, created_at, updated_at, version, auto_start, auto_complete, \
             reminders, reminded) \
             VALUES ($1, $2, 'draft', $3, $4, $5, $6, $7, $7, 0, $8, $9, $10, '') RETURNING id",
        )
        .bind(&new.title)
        .bind(&new.description)
        .bind(new.impact.as_str())
        .bind(opt_secs(starts_at))
        .bind(opt_secs(ends_at))
        .bind(&hint)
        .bind(secs(now))
        .bind(i64::from(new.automation.auto_start))
        .bind(i64::from(new.automation.auto_complete))
        .bind(offsets_text(&new.automation.reminders))
        .fetch_one(&mut *tx)
        .await?;
        for (i, step) in new.steps.iter().enumerate() {
            sqlx::query(
                "INSERT INTO steps (maintenance_id, position, title, description, state, attempts) \
                 VALUES ($1, $2, $3, $4, 'pending', 0)",
            )
            .bind(id)
            .bind(i as i64 + 1)
            .bind(&step.title)
            .bind(&step.description)
            .execute(&mut *tx)
            .await?;
        }
        replace_components(&mut tx, id, new.component_ids.iter().copied()).await?;
        tx.commit().await?;
        self.get_maintenance(id).await?.ok_or(StoreError::NotFound)
    }

    #[instrument(skip(self))]
    async fn get_maintenance(&self, id: i64) -> StoreResult<Option<Maintenance>> {
        let Some(row) = sqlx::query(&format!(
            "SELECT {MAINTENANCE_COLUMNS} FROM maintenances m WHERE m.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let mut m = maintenance_from(&row)?;
        m.steps = sqlx::query(&format!(
            "SELECT {STEP_COLUMNS} FROM steps s WHERE s.maintenance_id = $1 ORDER BY s.position"
        ))
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(step_from)
        .collect::<StoreResult<_>>()?;
        m.components = sqlx::query(&format!(
            "SELECT {COMPONENT_COLUMNS} FROM components c \
             JOIN maintenance_components mc ON mc.component_id = c.id \
             WHERE mc.maintenance_id = $1 ORDER BY c.position, c.id"
        ))
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(component_from)
        .collect::<StoreResult<_>>()?;
        Ok(Some(m))
    }

    #[instrument(skip(self, m, updates), fields(id = m.id, version = m.version))]
    async fn save_maintenance(
        &self,
        m: &Maintenance,
        updates: &[NewUpdate],
        deliveries: &[NewDelivery],
    ) -> StoreResult<i64> {
        let mut tx = self.pool.begin().await?;
        // Writing first takes the write lock at once (SQLite's database lock, PostgreSQL's row
        // lock), and the version check makes a concurrent change lose cleanly instead of
        // overwriting.
        let done = sqlx::query(
            "UPDATE maintenances SET title = $1, description = $2, state = $3, impact = $4, \
             starts_at = $5, ends_at = $6, schedule_hint = $7, started_at = $8, finished_at = $9, \
             announced_at = $10, updated_at = $11, auto_start = $14, auto_complete = $15, \
             reminders = $16, reminded = $17, overran_at = $18, sequence = $19, \
             version = version + 1 \
             WHERE id = $12 AND version = $13",
        )
        .bind(&m.title)
        .bind(&m.description)
        .bind(m.state.as_str())
        .bind(m.impact.as_str())
        .bind(opt_secs(m.starts_at))
        .bind(opt_secs(m.ends_at))
        .bind(&m.schedule_hint)
        .bind(opt_secs(m.started_at))
        .bind(opt_secs(m.finished_at))
        .bind(opt_secs(m.announced_at))
        .bind(secs(m.updated_at))
        .bind(m.id)
        .bind(m.version)
        .bind(i64::from(m.automation.auto_start))
        .bind(i64::from(m.automation.auto_complete))
        .bind(offsets_text(&m.automation.reminders))
        .bind(offsets_text(&m.reminded))
        .bind(opt_secs(m.overran_at))
        .bind(m.sequence)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Conflict);
        }
        let kept: Vec<i64> = m.steps.iter().filter_map(|s| s.id).collect();
        let existing: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM steps WHERE maintenance_id = $1")
                .bind(m.id)
                .fetch_all(&mut *tx)
                .await?;
        for gone in existing.iter().filter(|id| !kept.contains(id)) {
            sqlx::query("DELETE FROM steps WHERE id = $1")
                .bind(gone)
                .execute(&mut *tx)
                .await?;
        }
        for step in &m.steps {
            let query = match step.id {
                Some(id) if existing.contains(&id) => sqlx::query(
                    "UPDATE steps SET position = $1, title = $2, description = $3, state = $4, \
                     started_at = $5, finished_at = $6, note = $7, attempts = $8 \
                     WHERE maintenance_id = $9 AND id = $10",
                ),
                Some(_) => return Err(StoreError::NotFound),
                None => sqlx::query(
                    "INSERT INTO steps (position, title, description, state, started_at, \
                     finished_at, note, attempts, maintenance_id) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                ),
            };
            let query = query
                .bind(step.position)
                .bind(&step.title)
                .bind(&step.description)
                .bind(step.state.as_str())
                .bind(opt_secs(step.started_at))
                .bind(opt_secs(step.finished_at))
                .bind(&step.note)
                .bind(step.attempts)
                .bind(m.id);
            match step.id {
                Some(id) => query.bind(id),
                None => query,
            }
            .execute(&mut *tx)
            .await?;
        }
        replace_components(&mut tx, m.id, m.components.iter().map(|c| c.id)).await?;
        let update_ids = insert_updates(&mut tx, m.id, updates).await?;
        outbox::insert_deliveries(&mut tx, Subject::Window(m.id), &update_ids, deliveries).await?;
        tx.commit().await?;
        Ok(m.version + 1)
    }

    async fn count_maintenances(&self) -> StoreResult<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM maintenances")
            .fetch_one(&self.pool)
            .await?)
    }

    #[instrument(skip(self))]
    async fn open_public_maintenances(&self) -> StoreResult<Vec<Maintenance>> {
        self.windows_where(OPEN_PUBLIC).await
    }

    #[instrument(skip(self))]
    async fn recent_public_maintenances(&self, limit: i64) -> StoreResult<Vec<Maintenance>> {
        let mut windows = self
            .windows_where(&format!(
                "m.id IN (SELECT id FROM maintenances WHERE announced_at IS NOT NULL \
                 ORDER BY updated_at DESC, id DESC LIMIT {})",
                limit.max(0)
            ))
            .await?;
        windows.sort_by_key(|m| std::cmp::Reverse((m.updated_at, m.id)));
        Ok(windows)
    }

    #[instrument(skip(self))]
    async fn open_maintenances(&self) -> StoreResult<Vec<Maintenance>> {
        self.windows_where("m.state IN ('draft', 'planned', 'scheduled', 'in_progress')")
            .await
    }

    #[instrument(skip(self))]
    async fn finished_maintenances(
        &self,
        offset: i64,
        limit: i64,
    ) -> StoreResult<Page<MaintenanceSummary>> {
        const FINISHED: &str = "m.announced_at IS NOT NULL AND m.finished_at IS NOT NULL";
        let total: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM maintenances m WHERE {FINISHED}"
        ))
        .fetch_one(&self.pool)
        .await?;
        let rows = sqlx::query(&format!(
            "SELECT m.id, m.title, m.state, m.impact, m.starts_at, m.ends_at, m.started_at, \
             m.finished_at, \
             (SELECT COUNT(*) FROM steps s WHERE s.maintenance_id = m.id) AS steps_total, \
             (SELECT COUNT(*) FROM steps s WHERE s.maintenance_id = m.id AND s.state = 'done') \
                AS steps_done \
             FROM maintenances m WHERE {FINISHED} \
             ORDER BY m.finished_at DESC, m.id DESC LIMIT $1 OFFSET $2"
        ))
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let items = rows
            .iter()
            .map(|row| {
                let state: String = row.try_get("state")?;
                let impact: String = row.try_get("impact")?;
                Ok(MaintenanceSummary {
                    id: row.try_get("id")?,
                    title: row.try_get("title")?,
                    state: parse(&state, "window state", WindowState::parse)?,
                    impact: parse(&impact, "impact", Impact::parse)?,
                    starts_at: opt_ts(row.try_get("starts_at")?)?,
                    ends_at: opt_ts(row.try_get("ends_at")?)?,
                    started_at: opt_ts(row.try_get("started_at")?)?,
                    finished_at: opt_ts(row.try_get("finished_at")?)?,
                    steps_total: row.try_get("steps_total")?,
                    steps_done: row.try_get("steps_done")?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page { items, total })
    }

    #[instrument(skip(self))]
    async fn list_updates(
        &self,
        maintenance_id: i64,
        limit: Option<i64>,
    ) -> StoreResult<Vec<Update>> {
        sqlx::query(
            "SELECT id, maintenance_id, kind, body, note, step_position, created_at FROM updates \
             WHERE maintenance_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(maintenance_id)
        .bind(limit.unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(update_from)
        .collect()
    }

    async fn insert_token(
        &self,
        name: &str,
        role: Role,
        token_hash: &str,
        prefix: &str,
        created_by: &str,
        now: Timestamp,
    ) -> StoreResult<ApiToken> {
        let row = sqlx::query(&format!(
            "INSERT INTO api_tokens (name, role, token_hash, prefix, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(name)
        .bind(role.as_str())
        .bind(token_hash)
        .bind(prefix)
        .bind(created_by)
        .bind(secs(now))
        .fetch_one(&self.pool)
        .await?;
        token_from(&row)
    }

    async fn token_by_hash(&self, token_hash: &str) -> StoreResult<Option<ApiToken>> {
        sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE token_hash = $1"
        ))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(token_from)
        .transpose()
    }

    async fn list_tokens(&self) -> StoreResult<Vec<ApiToken>> {
        sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY revoked_at IS NOT NULL, id"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(token_from)
        .collect()
    }

    async fn revoke_token(&self, id: i64, now: Timestamp) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(secs(now))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn touch_token(&self, id: i64, now: Timestamp) -> StoreResult<()> {
        sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
            .bind(secs(now))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn insert_user(
        &self,
        name: &str,
        password_hash: &str,
        role: Role,
        now: Timestamp,
    ) -> StoreResult<User> {
        let row = sqlx::query(
            "INSERT INTO users (name, password_hash, role, created_at) VALUES ($1, $2, $3, $4) \
             RETURNING id, name, role, created_at",
        )
        .bind(name)
        .bind(password_hash)
        .bind(role.as_str())
        .bind(secs(now))
        .fetch_one(&self.pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Duplicate("a user with this name")
            }
            _ => StoreError::Database(e),
        })?;
        user_from(&row)
    }

    async fn count_users(&self) -> StoreResult<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn user_by_name(&self, name: &str) -> StoreResult<Option<(User, String)>> {
        let Some(row) = sqlx::query(
            "SELECT id, name, role, created_at, password_hash FROM users WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        Ok(Some((user_from(&row)?, row.try_get("password_hash")?)))
    }

    async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: Option<&str>,
        now: Timestamp,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO audit_log (actor, action, target, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(actor)
        .bind(action)
        .bind(target)
        .bind(secs(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_audit(
        &self,
        limit: i64,
        actor: Option<&str>,
        target: Option<&str>,
    ) -> StoreResult<Vec<AuditEntry>> {
        sqlx::query(
            "SELECT id, actor, action, target, created_at FROM audit_log \
             WHERE ($2 IS NULL OR actor = $2) \
               AND ($3 IS NULL OR target = $3 OR target LIKE $3 || ' %' OR target LIKE $3 || ':%') \
             ORDER BY created_at DESC, id DESC LIMIT $1",
        )
        .bind(limit)
        .bind(actor)
        .bind(target)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            Ok(AuditEntry {
                id: row.try_get("id")?,
                actor: row.try_get("actor")?,
                action: row.try_get("action")?,
                target: row.try_get("target")?,
                created_at: ts(row.try_get("created_at")?)?,
            })
        })
        .collect()
    }

    async fn insert_session(
        &self,
        id_hash: &str,
        user_id: i64,
        csrf: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO sessions (id_hash, user_id, csrf, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id_hash)
        .bind(user_id)
        .bind(csrf)
        .bind(secs(now))
        .bind(secs(expires_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn session(&self, id_hash: &str, now: Timestamp) -> StoreResult<Option<(User, String)>> {
        let Some(row) = sqlx::query(
            "SELECT u.id, u.name, u.role, u.created_at, s.csrf FROM sessions s \
             JOIN users u ON u.id = s.user_id WHERE s.id_hash = $1 AND s.expires_at > $2",
        )
        .bind(id_hash)
        .bind(secs(now))
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        Ok(Some((user_from(&row)?, row.try_get("csrf")?)))
    }

    async fn delete_session(&self, id_hash: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete_expired_sessions(&self, now: Timestamp) -> StoreResult<u64> {
        Ok(sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(secs(now))
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn update_component(&self, c: &Component) -> StoreResult<()> {
        sqlx::query(
            "UPDATE components SET name = $1, description = $2, group_name = $3 WHERE id = $4",
        )
        .bind(&c.name)
        .bind(&c.description)
        .bind(&c.group_name)
        .bind(c.id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn swap_components(&self, a: &Component, b: &Component) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        for (id, position) in [(a.id, b.position), (b.id, a.position)] {
            sqlx::query("UPDATE components SET position = $1 WHERE id = $2")
                .bind(position)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        sqlx::query("SELECT id, name, role, created_at FROM users ORDER BY name")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(user_from)
            .collect()
    }

    async fn delete_user(&self, name: &str) -> StoreResult<AccountChange> {
        let mut tx = self.pool.begin().await?;
        // The check and the change in one statement: two admins removing each other at once
        // cannot both succeed.
        let done = sqlx::query(
            "DELETE FROM users WHERE name = $1 AND (role <> 'admin' \
             OR (SELECT COUNT(*) FROM users WHERE role = 'admin') > 1)",
        )
        .bind(name)
        .execute(&mut *tx)
        .await?;
        let outcome = account_outcome(&mut tx, name, done.rows_affected()).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn set_password_hash(&self, name: &str, hash: &str) -> StoreResult<AccountChange> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("UPDATE users SET password_hash = $1 WHERE name = $2")
            .bind(hash)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        end_sessions(&mut tx, name).await?;
        let outcome = account_outcome(&mut tx, name, done.rows_affected()).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn set_role(&self, name: &str, role: Role) -> StoreResult<AccountChange> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE users SET role = $1 WHERE name = $2 AND ($1 = 'admin' OR role <> 'admin' \
             OR (SELECT COUNT(*) FROM users WHERE role = 'admin') > 1)",
        )
        .bind(role.as_str())
        .bind(name)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            end_sessions(&mut tx, name).await?;
        }
        let outcome = account_outcome(&mut tx, name, done.rows_affected()).await?;
        tx.commit().await?;
        Ok(outcome)
    }
}
