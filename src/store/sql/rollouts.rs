//! Rollouts, their targets and timeline. Counts and drain samples are JSON columns:
//! they are read and written whole with their target, never queried into.

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use sqlx::any::AnyRow;
use sqlx::{Any, FromRow, Row, Transaction};
use tracing::instrument;

use super::outbox::insert_deliveries;
use super::{SqlStore, opt_secs, opt_ts, parse, secs, ts};
use crate::domain::{
    Counts, NewRollout, NewRolloutUpdate, Rollout, RolloutState, RolloutUpdate, Sample, Subject,
    Target, TargetState, UpdateKind,
};
use crate::store::{Audit, Commit, Page, RolloutSummary, Rollouts, StoreError, StoreResult};

const ROLLOUT_COLUMNS: &str = "r.id, r.title, r.description, r.from_version, r.to_version, \
     r.maintenance_id, r.state, r.progress_deadline, r.stale_after, r.public_names, r.created_at, \
     r.updated_at, r.started_at, r.finished_at, r.last_progress_at, r.stalled_at, r.rollback_of, \
     r.rolled_back_by, r.version";

const TARGET_COLUMNS: &str = "t.id, t.rollout_id, t.position, t.name, t.state, t.version, \
     t.remaining, t.drain_start_counts, t.samples, t.drain_started_at, t.drained_at, t.changed_at, \
     t.finished_at, t.last_report_at, t.forced, t.forced_reason, t.note, t.attempts";

const UPDATE_COLUMNS: &str = "id, rollout_id, kind, body, note, target, actor, created_at";

fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("rollout JSON: {e}"))
}

fn counts_from(json: &str) -> StoreResult<Counts> {
    serde_json::from_str(json).map_err(json_err)
}

fn counts_json(c: &Counts) -> String {
    serde_json::to_string(c).expect("counts serialise")
}

fn samples_from(json: &str) -> StoreResult<Vec<Sample>> {
    let raw: Vec<(i64, Counts)> = serde_json::from_str(json).map_err(json_err)?;
    raw.into_iter()
        .map(|(at, counts)| {
            Ok(Sample {
                at: ts(at)?,
                counts,
            })
        })
        .collect()
}

fn samples_json(samples: &[Sample]) -> String {
    let raw: Vec<(i64, &Counts)> = samples.iter().map(|s| (secs(s.at), &s.counts)).collect();
    serde_json::to_string(&raw).expect("samples serialise")
}

/// A `rollouts` row as selected by [`ROLLOUT_COLUMNS`]; durations in seconds.
#[derive(sqlx::FromRow)]
struct RolloutRow {
    id: i64,
    title: String,
    description: String,
    from_version: Option<String>,
    to_version: String,
    maintenance_id: Option<i64>,
    state: String,
    progress_deadline: i64,
    stale_after: i64,
    public_names: i64,
    created_at: i64,
    updated_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    last_progress_at: Option<i64>,
    stalled_at: Option<i64>,
    rollback_of: Option<i64>,
    rolled_back_by: Option<i64>,
    version: i64,
}

impl TryFrom<RolloutRow> for Rollout {
    type Error = StoreError;

    fn try_from(r: RolloutRow) -> StoreResult<Self> {
        Ok(Self {
            id: r.id,
            title: r.title,
            description: r.description,
            from_version: r.from_version,
            to_version: r.to_version,
            maintenance_id: r.maintenance_id,
            state: parse(&r.state, "rollout state", RolloutState::parse)?,
            progress_deadline: SignedDuration::from_secs(r.progress_deadline),
            stale_after: SignedDuration::from_secs(r.stale_after),
            public_names: r.public_names != 0,
            created_at: ts(r.created_at)?,
            updated_at: ts(r.updated_at)?,
            started_at: opt_ts(r.started_at)?,
            finished_at: opt_ts(r.finished_at)?,
            last_progress_at: opt_ts(r.last_progress_at)?,
            stalled_at: opt_ts(r.stalled_at)?,
            rollback_of: r.rollback_of,
            rolled_back_by: r.rolled_back_by,
            version: r.version,
            targets: Vec::new(),
        })
    }
}

fn rollout_from(row: &AnyRow) -> StoreResult<Rollout> {
    RolloutRow::from_row(row)?.try_into()
}

/// A `rollout_targets` row as selected by [`TARGET_COLUMNS`]; counts and samples as JSON.
#[derive(sqlx::FromRow)]
struct TargetRow {
    id: i64,
    position: i64,
    name: String,
    state: String,
    version: Option<String>,
    remaining: String,
    drain_start_counts: String,
    drain_started_at: Option<i64>,
    drained_at: Option<i64>,
    changed_at: Option<i64>,
    finished_at: Option<i64>,
    last_report_at: Option<i64>,
    forced: i64,
    forced_reason: Option<String>,
    note: Option<String>,
    attempts: i64,
    samples: String,
}

impl TryFrom<TargetRow> for Target {
    type Error = StoreError;

    fn try_from(r: TargetRow) -> StoreResult<Self> {
        Ok(Self {
            id: Some(r.id),
            position: r.position,
            name: r.name,
            state: parse(&r.state, "target state", TargetState::parse)?,
            version: r.version,
            remaining: counts_from(&r.remaining)?,
            drain_start_counts: counts_from(&r.drain_start_counts)?,
            drain_started_at: opt_ts(r.drain_started_at)?,
            drained_at: opt_ts(r.drained_at)?,
            changed_at: opt_ts(r.changed_at)?,
            finished_at: opt_ts(r.finished_at)?,
            last_report_at: opt_ts(r.last_report_at)?,
            forced: r.forced != 0,
            forced_reason: r.forced_reason,
            note: r.note,
            attempts: r.attempts,
            samples: samples_from(&r.samples)?,
        })
    }
}

fn target_from(row: &AnyRow) -> StoreResult<Target> {
    TargetRow::from_row(row)?.try_into()
}

/// A `rollout_updates` row as selected by [`UPDATE_COLUMNS`].
#[derive(sqlx::FromRow)]
struct RolloutUpdateRow {
    id: i64,
    rollout_id: i64,
    kind: String,
    body: String,
    note: Option<String>,
    target: Option<String>,
    actor: String,
    created_at: i64,
}

impl TryFrom<RolloutUpdateRow> for RolloutUpdate {
    type Error = StoreError;

    fn try_from(r: RolloutUpdateRow) -> StoreResult<Self> {
        Ok(Self {
            id: r.id,
            rollout_id: r.rollout_id,
            kind: parse(&r.kind, "update kind", UpdateKind::parse)?,
            body: r.body,
            note: r.note,
            target: r.target,
            actor: r.actor,
            created_at: ts(r.created_at)?,
        })
    }
}

fn rollout_update_from(row: &AnyRow) -> StoreResult<RolloutUpdate> {
    RolloutUpdateRow::from_row(row)?.try_into()
}

/// A finished rollout for the history list, with its target counts.
#[derive(sqlx::FromRow)]
struct RolloutSummaryRow {
    id: i64,
    title: String,
    state: String,
    from_version: Option<String>,
    to_version: String,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    total: i64,
    healthy: i64,
}

impl TryFrom<RolloutSummaryRow> for RolloutSummary {
    type Error = StoreError;

    fn try_from(r: RolloutSummaryRow) -> StoreResult<Self> {
        Ok(Self {
            id: r.id,
            title: r.title,
            state: parse(&r.state, "rollout state", RolloutState::parse)?,
            from_version: r.from_version,
            to_version: r.to_version,
            started_at: opt_ts(r.started_at)?,
            finished_at: opt_ts(r.finished_at)?,
            targets_total: r.total,
            targets_healthy: r.healthy,
        })
    }
}

impl SqlStore {
    /// Rollouts from `query` (selecting `ROLLOUT_COLUMNS` over `r`), with their targets.
    async fn with_targets(&self, rows: Vec<AnyRow>) -> StoreResult<Vec<Rollout>> {
        let mut rollouts = rows
            .iter()
            .map(rollout_from)
            .collect::<StoreResult<Vec<_>>>()?;
        if rollouts.is_empty() {
            return Ok(rollouts);
        }
        // Ids are integers from the rows just read: safe to inline.
        let ids: Vec<String> = rollouts.iter().map(|r| r.id.to_string()).collect();
        let targets = sqlx::query(&format!(
            "SELECT {TARGET_COLUMNS} FROM rollout_targets t WHERE t.rollout_id IN ({}) \
             ORDER BY t.rollout_id, t.position",
            ids.join(",")
        ))
        .fetch_all(&self.pool)
        .await?;
        for row in &targets {
            let rid: i64 = row.try_get("rollout_id")?;
            if let Some(r) = rollouts.iter_mut().find(|r| r.id == rid) {
                r.targets.push(target_from(row)?);
            }
        }
        Ok(rollouts)
    }
}

async fn insert_rollout(
    tx: &mut Transaction<'_, Any>,
    new: &NewRollout,
    now: Timestamp,
) -> StoreResult<i64> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO rollouts (title, description, from_version, to_version, maintenance_id, \
         state, progress_deadline, stale_after, public_names, created_at, updated_at, \
         rollback_of, version) \
         VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8, $9, $9, $10, 0) RETURNING id",
    )
    .bind(&new.title)
    .bind(&new.description)
    .bind(&new.from_version)
    .bind(&new.to_version)
    .bind(new.maintenance_id)
    .bind(new.progress_deadline.as_secs())
    .bind(new.stale_after.as_secs())
    .bind(i64::from(new.public_names))
    .bind(secs(now))
    .bind(new.rollback_of)
    .fetch_one(&mut **tx)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound,
        _ => StoreError::Database(e),
    })?;
    for (i, name) in new.targets.iter().enumerate() {
        sqlx::query(
            "INSERT INTO rollout_targets (rollout_id, position, name, state, attempts) \
             VALUES ($1, $2, $3, 'pending', 1)",
        )
        .bind(id)
        .bind(i as i64 + 1)
        .bind(name)
        .execute(&mut **tx)
        .await?;
    }
    Ok(id)
}

#[async_trait]
impl Rollouts for SqlStore {
    #[instrument(skip(self, new, audit), fields(title = %new.title))]
    async fn create_rollout(
        &self,
        new: &NewRollout,
        now: Timestamp,
        audit: &Audit<'_>,
    ) -> StoreResult<Rollout> {
        let mut tx = self.pool.begin().await?;
        let id = insert_rollout(&mut tx, new, now).await?;
        super::accounts::insert_audit(&mut tx, &audit(id)).await?;
        tx.commit().await?;
        self.get_rollout(id).await?.ok_or(StoreError::NotFound)
    }

    #[instrument(skip(self))]
    async fn get_rollout(&self, id: i64) -> StoreResult<Option<Rollout>> {
        let rows = sqlx::query(&format!(
            "SELECT {ROLLOUT_COLUMNS} FROM rollouts r WHERE r.id = $1"
        ))
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(self.with_targets(rows).await?.pop())
    }

    async fn rollout_version(&self, id: i64) -> StoreResult<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT version FROM rollouts WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    #[instrument(skip_all, fields(id = r.id, version = r.version))]
    async fn save_rollout(
        &self,
        r: &Rollout,
        changed: &[usize],
        commit: &Commit<'_, NewRolloutUpdate>,
        reverse: Option<&NewRollout>,
    ) -> StoreResult<(i64, Option<i64>)> {
        let mut tx = self.pool.begin().await?;
        // Writing first takes SQLite's write lock at once; the version check makes a
        // concurrent change lose cleanly (as for windows).
        let done = sqlx::query(
            "UPDATE rollouts SET title = $1, description = $2, maintenance_id = $3, state = $4, \
             progress_deadline = $5, stale_after = $6, public_names = $7, updated_at = $8, \
             started_at = $9, finished_at = $10, last_progress_at = $11, stalled_at = $12, \
             version = version + 1 WHERE id = $13 AND version = $14",
        )
        .bind(&r.title)
        .bind(&r.description)
        .bind(r.maintenance_id)
        .bind(r.state.as_str())
        .bind(r.progress_deadline.as_secs())
        .bind(r.stale_after.as_secs())
        .bind(i64::from(r.public_names))
        .bind(secs(r.updated_at))
        .bind(opt_secs(r.started_at))
        .bind(opt_secs(r.finished_at))
        .bind(opt_secs(r.last_progress_at))
        .bind(opt_secs(r.stalled_at))
        .bind(r.id)
        .bind(r.version)
        .execute(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound,
            _ => StoreError::Database(e),
        })?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Conflict);
        }
        for &i in changed {
            let t = r
                .targets
                .get(i)
                .ok_or_else(|| StoreError::Corrupt(format!("changed target #{i}")))?;
            let id =
                t.id.ok_or_else(|| StoreError::Corrupt("a target without an id".into()))?;
            sqlx::query(
                "UPDATE rollout_targets SET state = $1, version = $2, remaining = $3, \
                 drain_start_counts = $4, samples = $5, drain_started_at = $6, drained_at = $7, \
                 changed_at = $8, finished_at = $9, \
                 last_report_at = CASE WHEN $10 IS NULL THEN last_report_at \
                   WHEN last_report_at IS NULL OR last_report_at < $10 THEN $10 \
                   ELSE last_report_at END, \
                 forced = $11, forced_reason = $12, note = $13, attempts = $14 \
                 WHERE id = $15 AND rollout_id = $16",
            )
            .bind(t.state.as_str())
            .bind(&t.version)
            .bind(counts_json(&t.remaining))
            .bind(counts_json(&t.drain_start_counts))
            .bind(samples_json(&t.samples))
            .bind(opt_secs(t.drain_started_at))
            .bind(opt_secs(t.drained_at))
            .bind(opt_secs(t.changed_at))
            .bind(opt_secs(t.finished_at))
            .bind(opt_secs(t.last_report_at))
            .bind(i64::from(t.forced))
            .bind(&t.forced_reason)
            .bind(&t.note)
            .bind(t.attempts)
            .bind(id)
            .bind(r.id)
            .execute(&mut *tx)
            .await?;
        }
        let mut update_ids = Vec::with_capacity(commit.updates.len());
        for u in commit.updates {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO rollout_updates (rollout_id, kind, body, note, target, actor, \
                 created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            )
            .bind(r.id)
            .bind(u.kind.as_str())
            .bind(&u.body)
            .bind(&u.note)
            .bind(&u.target)
            .bind(commit.actor)
            .bind(secs(u.created_at))
            .fetch_one(&mut *tx)
            .await?;
            update_ids.push(id);
        }
        insert_deliveries(
            &mut tx,
            Subject::Rollout(r.id),
            &update_ids,
            commit.deliveries,
        )
        .await?;
        let reverse_id = match reverse {
            Some(new) => {
                let id = insert_rollout(&mut tx, new, r.updated_at).await?;
                sqlx::query("UPDATE rollouts SET rolled_back_by = $1 WHERE id = $2")
                    .bind(id)
                    .bind(r.id)
                    .execute(&mut *tx)
                    .await?;
                Some(id)
            }
            None => None,
        };
        if let Some(audit) = commit.audit {
            super::accounts::insert_audit(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok((r.version + 1, reverse_id))
    }

    async fn touch_target(&self, target_id: i64, now: Timestamp) -> StoreResult<()> {
        sqlx::query(
            "UPDATE rollout_targets SET last_report_at = $1 WHERE id = $2 \
             AND (last_report_at IS NULL OR last_report_at < $1)",
        )
        .bind(secs(now))
        .bind(target_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[instrument(skip(self))]
    async fn list_rollouts(
        &self,
        state: Option<RolloutState>,
        offset: i64,
        limit: i64,
    ) -> StoreResult<Vec<Rollout>> {
        let rows = sqlx::query(&format!(
            "SELECT {ROLLOUT_COLUMNS} FROM rollouts r WHERE ($1 IS NULL OR r.state = $1) \
             ORDER BY r.id DESC LIMIT $2 OFFSET $3"
        ))
        .bind(state.map(RolloutState::as_str))
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        self.with_targets(rows).await
    }

    #[instrument(skip(self))]
    async fn active_rollouts(&self) -> StoreResult<Vec<Rollout>> {
        let rows = sqlx::query(&format!(
            "SELECT {ROLLOUT_COLUMNS} FROM rollouts r \
             WHERE r.state IN ('pending', 'in_progress', 'paused') ORDER BY r.id"
        ))
        .fetch_all(&self.pool)
        .await?;
        self.with_targets(rows).await
    }

    #[instrument(skip(self))]
    async fn window_rollouts(&self, maintenance_id: i64) -> StoreResult<Vec<Rollout>> {
        let rows = sqlx::query(&format!(
            "SELECT {ROLLOUT_COLUMNS} FROM rollouts r WHERE r.maintenance_id = $1 ORDER BY r.id"
        ))
        .bind(maintenance_id)
        .fetch_all(&self.pool)
        .await?;
        self.with_targets(rows).await
    }

    #[instrument(skip(self))]
    async fn finished_rollouts(
        &self,
        offset: i64,
        limit: i64,
    ) -> StoreResult<Page<RolloutSummary>> {
        const FINISHED: &str = "r.finished_at IS NOT NULL";
        self.page::<RolloutSummaryRow, _>(
            &format!("SELECT COUNT(*) FROM rollouts r WHERE {FINISHED}"),
            &format!(
                "SELECT r.id, r.title, r.state, r.from_version, r.to_version, r.started_at, \
                 r.finished_at, \
                 (SELECT COUNT(*) FROM rollout_targets t WHERE t.rollout_id = r.id) AS total, \
                 (SELECT COUNT(*) FROM rollout_targets t WHERE t.rollout_id = r.id \
                    AND t.state = 'healthy') AS healthy \
                 FROM rollouts r WHERE {FINISHED} \
                 ORDER BY r.finished_at DESC, r.id DESC LIMIT $1 OFFSET $2"
            ),
            offset,
            limit,
        )
        .await
    }

    #[instrument(skip(self))]
    async fn list_rollout_updates(
        &self,
        rollout_id: i64,
        limit: Option<i64>,
    ) -> StoreResult<Vec<RolloutUpdate>> {
        sqlx::query(&format!(
            "SELECT {UPDATE_COLUMNS} FROM rollout_updates WHERE rollout_id = $1 \
             ORDER BY id DESC LIMIT $2"
        ))
        .bind(rollout_id)
        .bind(limit.unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(rollout_update_from)
        .collect()
    }

    async fn get_rollout_update(&self, id: i64) -> StoreResult<Option<RolloutUpdate>> {
        sqlx::query(&format!(
            "SELECT {UPDATE_COLUMNS} FROM rollout_updates WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(rollout_update_from)
        .transpose()
    }
}
