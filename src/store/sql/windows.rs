//! Windows: components, maintenance windows with their steps, and their timelines.

use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::any::AnyRow;
use sqlx::{Any, FromRow, Row, Transaction};
use tracing::instrument;

use super::{SqlStore, accounts, opt_secs, opt_ts, outbox, parse, secs, ts};
use crate::domain::{
    Automation, Component, ComponentStatus, Impact, Maintenance, NewComponent, NewMaintenance,
    NewUpdate, Schedule, Step, StepState, Subject, Update, UpdateKind, WindowState,
};
use crate::store::{Audit, Commit, MaintenanceSummary, Page, StoreError, StoreResult, Windows};

impl SqlStore {
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
        // The steps and components of exactly these windows: asking with `filter` again could
        // name others (a page by OFFSET shifts when a window is added in between).
        let ids = windows
            .iter()
            .map(|m| m.id.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let steps = sqlx::query(&format!(
            "SELECT {STEP_COLUMNS} FROM steps s \
             WHERE s.maintenance_id IN ({ids}) ORDER BY s.maintenance_id, s.position"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| Ok((row.try_get("maintenance_id")?, step_from(row)?)))
        .collect::<StoreResult<Vec<_>>>()?;
        let components = sqlx::query(&format!(
            "SELECT mc.maintenance_id, {COMPONENT_COLUMNS} FROM components c \
             JOIN maintenance_components mc ON mc.component_id = c.id \
             WHERE mc.maintenance_id IN ({ids}) ORDER BY c.position, c.id"
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

/// A `components` row as selected by [`COMPONENT_COLUMNS`].
#[derive(sqlx::FromRow)]
struct ComponentRow {
    id: i64,
    slug: String,
    name: String,
    description: Option<String>,
    group_name: Option<String>,
    position: i64,
    created_at: i64,
    manual_status: Option<String>,
    manual_note: Option<String>,
    manual_at: Option<i64>,
}

impl TryFrom<ComponentRow> for Component {
    type Error = StoreError;

    fn try_from(r: ComponentRow) -> StoreResult<Self> {
        Ok(Self {
            id: r.id,
            slug: r.slug,
            name: r.name,
            description: r.description,
            group_name: r.group_name,
            position: r.position,
            created_at: ts(r.created_at)?,
            manual: match (r.manual_status, r.manual_at) {
                (Some(status), Some(at)) => Some(crate::domain::ManualStatus {
                    status: parse(&status, "component status", ComponentStatus::parse)?,
                    note: r.manual_note.unwrap_or_default(),
                    at: ts(at)?,
                }),
                _ => None,
            },
        })
    }
}

fn component_from(row: &AnyRow) -> StoreResult<Component> {
    ComponentRow::from_row(row)?.try_into()
}

/// A `steps` row as selected by [`STEP_COLUMNS`].
#[derive(sqlx::FromRow)]
struct StepRow {
    id: i64,
    position: i64,
    title: String,
    description: Option<String>,
    state: String,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    note: Option<String>,
    attempts: i64,
}

impl TryFrom<StepRow> for Step {
    type Error = StoreError;

    fn try_from(r: StepRow) -> StoreResult<Self> {
        Ok(Self {
            id: Some(r.id),
            position: r.position,
            title: r.title,
            description: r.description,
            state: parse(&r.state, "step state", StepState::parse)?,
            started_at: opt_ts(r.started_at)?,
            finished_at: opt_ts(r.finished_at)?,
            note: r.note,
            attempts: r.attempts,
        })
    }
}

fn step_from(row: &AnyRow) -> StoreResult<Step> {
    StepRow::from_row(row)?.try_into()
}

/// A `maintenances` row as selected by [`MAINTENANCE_COLUMNS`].
#[derive(sqlx::FromRow)]
struct MaintenanceRow {
    id: i64,
    title: String,
    description: String,
    state: String,
    impact: String,
    starts_at: Option<i64>,
    ends_at: Option<i64>,
    schedule_hint: Option<String>,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    announced_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
    version: i64,
    auto_start: i64,
    auto_complete: i64,
    reminders: String,
    reminded: String,
    overran_at: Option<i64>,
    sequence: i64,
}

impl TryFrom<MaintenanceRow> for Maintenance {
    type Error = StoreError;

    fn try_from(r: MaintenanceRow) -> StoreResult<Self> {
        Ok(Self {
            id: r.id,
            title: r.title,
            description: r.description,
            state: parse(&r.state, "window state", WindowState::parse)?,
            impact: parse(&r.impact, "impact", Impact::parse)?,
            starts_at: opt_ts(r.starts_at)?,
            ends_at: opt_ts(r.ends_at)?,
            schedule_hint: r.schedule_hint,
            started_at: opt_ts(r.started_at)?,
            finished_at: opt_ts(r.finished_at)?,
            announced_at: opt_ts(r.announced_at)?,
            created_at: ts(r.created_at)?,
            updated_at: ts(r.updated_at)?,
            version: r.version,
            components: Vec::new(),
            steps: Vec::new(),
            automation: Automation {
                auto_start: r.auto_start != 0,
                auto_complete: r.auto_complete != 0,
                reminders: offsets(&r.reminders),
            },
            reminded: offsets(&r.reminded),
            overran_at: opt_ts(r.overran_at)?,
            sequence: r.sequence,
        })
    }
}

fn maintenance_from(row: &AnyRow) -> StoreResult<Maintenance> {
    MaintenanceRow::from_row(row)?.try_into()
}

/// A finished window for the history list, with its step counts.
#[derive(sqlx::FromRow)]
struct SummaryRow {
    id: i64,
    title: String,
    state: String,
    impact: String,
    starts_at: Option<i64>,
    ends_at: Option<i64>,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    steps_total: i64,
    steps_done: i64,
}

impl TryFrom<SummaryRow> for MaintenanceSummary {
    type Error = StoreError;

    fn try_from(r: SummaryRow) -> StoreResult<Self> {
        Ok(Self {
            id: r.id,
            title: r.title,
            state: parse(&r.state, "window state", WindowState::parse)?,
            impact: parse(&r.impact, "impact", Impact::parse)?,
            starts_at: opt_ts(r.starts_at)?,
            ends_at: opt_ts(r.ends_at)?,
            started_at: opt_ts(r.started_at)?,
            finished_at: opt_ts(r.finished_at)?,
            steps_total: r.steps_total,
            steps_done: r.steps_done,
        })
    }
}

/// Reminder offsets as stored: comma-separated seconds.
fn offsets(s: &str) -> Vec<i64> {
    s.split(',').filter_map(|o| o.trim().parse().ok()).collect()
}

fn offsets_text(offsets: &[i64]) -> String {
    offsets
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// An `updates` row: a window's timeline entry.
#[derive(sqlx::FromRow)]
struct UpdateRow {
    id: i64,
    maintenance_id: i64,
    kind: String,
    body: String,
    note: Option<String>,
    step_position: Option<i64>,
    created_at: i64,
    edited_at: Option<i64>,
}

impl TryFrom<UpdateRow> for Update {
    type Error = StoreError;

    fn try_from(r: UpdateRow) -> StoreResult<Self> {
        Ok(Self {
            id: r.id,
            maintenance_id: r.maintenance_id,
            kind: parse(&r.kind, "update kind", UpdateKind::parse)?,
            body: r.body,
            note: r.note,
            step_position: r.step_position,
            created_at: ts(r.created_at)?,
            edited_at: r.edited_at.map(ts).transpose()?,
        })
    }
}

pub(super) fn update_from(row: &AnyRow) -> StoreResult<Update> {
    UpdateRow::from_row(row)?.try_into()
}

const COMPONENT_COLUMNS: &str = "c.id, c.slug, c.name, c.description, c.group_name, c.position, \
     c.created_at, c.manual_status, c.manual_note, c.manual_at";
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
impl Windows for SqlStore {
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
    async fn delete_component(&self, slug: &str) -> StoreResult<i64> {
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query_scalar("SELECT id FROM components WHERE slug = $1")
            .bind(slug)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let used: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM maintenance_components WHERE component_id = $1",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        if used > 0 {
            return Ok(used);
        }
        sqlx::query("DELETE FROM components WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(0)
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

    #[instrument(skip(self, new, audit), fields(title = %new.title))]
    async fn create_maintenance(
        &self,
        new: &NewMaintenance,
        now: Timestamp,
        audit: &Audit<'_>,
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
        accounts::insert_audit(&mut tx, &audit(id)).await?;
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

    #[instrument(skip(self, m, commit), fields(id = m.id, version = m.version))]
    async fn save_maintenance(
        &self,
        m: &Maintenance,
        commit: &Commit<'_, NewUpdate>,
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
        let update_ids = insert_updates(&mut tx, m.id, commit.updates).await?;
        outbox::insert_deliveries(
            &mut tx,
            Subject::Window(m.id),
            &update_ids,
            commit.deliveries,
        )
        .await?;
        if let Some(audit) = commit.audit {
            accounts::insert_audit(&mut tx, audit).await?;
        }
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
    async fn public_windows_between(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<Vec<Maintenance>> {
        self.windows_where(&format!(
            "m.announced_at IS NOT NULL AND m.started_at IS NOT NULL AND m.started_at < {} \
             AND (m.finished_at IS NULL OR m.finished_at >= {})",
            secs(to),
            secs(from)
        ))
        .await
    }

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
    async fn list_maintenances(
        &self,
        state: Option<crate::domain::WindowState>,
        from: Option<Timestamp>,
        until: Option<Timestamp>,
        offset: i64,
        limit: i64,
    ) -> StoreResult<Vec<Maintenance>> {
        // Every value is a number or one of the states' own names: written into the SQL.
        let mut filter = vec!["TRUE".to_owned()];
        if let Some(state) = state {
            filter.push(format!("state = '{}'", state.as_str()));
        }
        if let Some(from) = from {
            filter.push(format!(
                "starts_at IS NOT NULL AND COALESCE(ends_at, starts_at) >= {}",
                secs(from)
            ));
        }
        if let Some(until) = until {
            filter.push(format!(
                "starts_at IS NOT NULL AND starts_at < {}",
                secs(until)
            ));
        }
        let mut windows = self
            .windows_where(&format!(
                "m.id IN (SELECT id FROM maintenances WHERE {} ORDER BY id DESC LIMIT {} OFFSET {})",
                filter.join(" AND "),
                limit.max(0),
                offset.max(0)
            ))
            .await?;
        windows.sort_by_key(|m| std::cmp::Reverse(m.id));
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
        self.page::<SummaryRow, _>(
            &format!("SELECT COUNT(*) FROM maintenances m WHERE {FINISHED}"),
            &format!(
                "SELECT m.id, m.title, m.state, m.impact, m.starts_at, m.ends_at, m.started_at, \
                 m.finished_at, \
                 (SELECT COUNT(*) FROM steps s WHERE s.maintenance_id = m.id) AS steps_total, \
                 (SELECT COUNT(*) FROM steps s WHERE s.maintenance_id = m.id AND s.state = 'done') \
                    AS steps_done \
                 FROM maintenances m WHERE {FINISHED} \
                 ORDER BY m.finished_at DESC, m.id DESC LIMIT $1 OFFSET $2"
            ),
            offset,
            limit,
        )
        .await
    }

    #[instrument(skip(self))]
    async fn list_updates(
        &self,
        maintenance_id: i64,
        limit: Option<i64>,
    ) -> StoreResult<Vec<Update>> {
        sqlx::query(
            "SELECT id, maintenance_id, kind, body, note, step_position, created_at, edited_at \
             FROM updates WHERE maintenance_id = $1 AND withdrawn_at IS NULL \
             ORDER BY id DESC LIMIT $2",
        )
        .bind(maintenance_id)
        .bind(limit.unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(update_from)
        .collect()
    }

    async fn update_component(&self, c: &Component) -> StoreResult<()> {
        sqlx::query(
            "UPDATE components SET name = $1, description = $2, group_name = $3, \
             manual_status = $4, manual_note = $5, manual_at = $6 WHERE id = $7",
        )
        .bind(&c.name)
        .bind(&c.description)
        .bind(&c.group_name)
        .bind(c.manual.as_ref().map(|m| m.status.as_str()))
        .bind(c.manual.as_ref().map(|m| m.note.clone()))
        .bind(c.manual.as_ref().map(|m| secs(m.at)))
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
}
