//! Channels, deliveries and threads. A claim is one `UPDATE … RETURNING`, so no
//! transaction stays open while a worker talks to Discord or Bluesky.

use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::any::AnyRow;
use sqlx::{Any, FromRow, Row, Transaction};

use super::windows::update_from;
use super::{SqlStore, opt_ts, parse, secs, ts};
use crate::domain::{
    Channel, ChannelKind, ChannelSecret, ChannelSource, Delivery, DeliveryAction, DeliveryState,
    NewChannel, NewDelivery, Subject, Thread, Update, UpdateKind, join_kinds, parse_kinds,
};
use crate::store::{Outbox, StoreError, StoreResult};

const CHANNEL_COLUMNS: &str = "id, name, kind, target, secret, api_url, events, milestones, \
     mention_role, langs, enabled, source";

const DELIVERY_COLUMNS: &str = "id, channel_id, maintenance_id, update_id, rollout_id, \
     rollout_update_id, incident_id, incident_update_id, kind, state, attempts, next_attempt_ms, deadline_at, idem_key, remote_id, \
     remote_url, last_error, created_ms, sent_at, action, corrects_id";

/// A delivery an admin may act on (`$1` is now in ms): failed, or pending and not leased to a
/// worker right now (an attempt in flight finishes, or fails, on its own).
const NOT_IN_FLIGHT: &str = "(state = 'failed' OR (state = 'pending' AND \
     (lease_until_ms IS NULL OR lease_until_ms < $1)))";

/// `next_attempt_ms` of a paused delivery: no worker picks it before Retry or Skip.
pub const HELD_MS: i64 = 1 << 60;

/// A delivery waits while an earlier one of the same window or rollout on the same channel is
/// pending or failed; refreshes of the live rollout message never hold anything up.
const EARLIER_UNSENT: &str = "EXISTS (SELECT 1 FROM deliveries e \
     WHERE e.channel_id = d.channel_id \
       AND ((d.maintenance_id IS NOT NULL AND e.maintenance_id = d.maintenance_id) \
         OR (d.rollout_id IS NOT NULL AND e.rollout_id = d.rollout_id) \
         OR (d.incident_id IS NOT NULL AND e.incident_id = d.incident_id)) \
       AND e.id < d.id AND e.state IN ('pending', 'failed') AND e.kind <> 'rollout_refresh')";

/// A `channels` row as selected by [`CHANNEL_COLUMNS`]; lists are stored comma-separated.
#[derive(sqlx::FromRow)]
struct ChannelRow {
    id: i64,
    name: String,
    kind: String,
    target: String,
    secret: String,
    api_url: Option<String>,
    events: String,
    milestones: String,
    mention_role: Option<String>,
    langs: String,
    enabled: i64,
    source: String,
}

impl TryFrom<ChannelRow> for Channel {
    type Error = StoreError;

    fn try_from(r: ChannelRow) -> StoreResult<Self> {
        Ok(Self {
            id: r.id,
            name: r.name,
            kind: parse(&r.kind, "channel kind", ChannelKind::parse)?,
            target: r.target,
            secret: ChannelSecret::new(r.secret),
            api_url: r.api_url,
            events: parse_kinds(&r.events),
            milestones: parse_kinds(&r.milestones),
            mention_role: r.mention_role,
            langs: r
                .langs
                .split(',')
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
            enabled: r.enabled != 0,
            source: parse(&r.source, "channel source", ChannelSource::parse)?,
        })
    }
}

fn channel_from(row: &AnyRow) -> StoreResult<Channel> {
    ChannelRow::from_row(row)?.try_into()
}

/// A `deliveries` row as selected by [`DELIVERY_COLUMNS`]: about a window or a rollout.
#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: i64,
    channel_id: i64,
    maintenance_id: Option<i64>,
    update_id: Option<i64>,
    rollout_id: Option<i64>,
    rollout_update_id: Option<i64>,
    incident_id: Option<i64>,
    incident_update_id: Option<i64>,
    kind: String,
    state: String,
    attempts: i64,
    next_attempt_ms: i64,
    deadline_at: i64,
    idem_key: String,
    remote_id: Option<String>,
    remote_url: Option<String>,
    last_error: Option<String>,
    created_ms: i64,
    sent_at: Option<i64>,
    action: String,
    corrects_id: Option<i64>,
}

impl TryFrom<DeliveryRow> for Delivery {
    type Error = StoreError;

    fn try_from(r: DeliveryRow) -> StoreResult<Self> {
        let (subject, update_id) = match (r.maintenance_id, r.rollout_id, r.incident_id) {
            (Some(w), None, None) => (Subject::Window(w), r.update_id),
            (None, Some(id), None) => (Subject::Rollout(id), r.rollout_update_id),
            (None, None, Some(id)) => (Subject::Incident(id), r.incident_update_id),
            _ => {
                return Err(StoreError::Corrupt(
                    "a delivery about no one window, rollout or incident".into(),
                ));
            }
        };
        Ok(Self {
            id: r.id,
            channel_id: r.channel_id,
            subject,
            update_id,
            kind: parse(&r.kind, "update kind", UpdateKind::parse)?,
            state: parse(&r.state, "delivery state", DeliveryState::parse)?,
            attempts: r.attempts,
            next_attempt_ms: r.next_attempt_ms,
            deadline_at: ts(r.deadline_at)?,
            idem_key: r.idem_key,
            remote_id: r.remote_id,
            remote_url: r.remote_url,
            last_error: r.last_error,
            created_ms: r.created_ms,
            sent_at: opt_ts(r.sent_at)?,
            action: parse(&r.action, "delivery action", DeliveryAction::parse)?,
            corrects: r.corrects_id,
        })
    }
}

fn delivery_from(row: &AnyRow) -> StoreResult<Delivery> {
    DeliveryRow::from_row(row)?.try_into()
}

fn name_taken(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            StoreError::Duplicate("a channel with this name")
        }
        e => e.into(),
    }
}

/// Insert a change's deliveries; `update_ids` are the ids its updates got, in order. A refresh
/// of a live rollout message folds into the channel's pending one, if any, and is held until
/// its fold interval after the message was last drawn.
pub(super) async fn insert_deliveries(
    tx: &mut Transaction<'_, Any>,
    subject: Subject,
    update_ids: &[i64],
    deliveries: &[NewDelivery],
) -> StoreResult<()> {
    for d in deliveries {
        let update_id = match d.update {
            Some(i) => Some(*update_ids.get(i).ok_or_else(|| {
                StoreError::Corrupt(format!("delivery for update #{i} of {}", update_ids.len()))
            })?),
            None => None,
        };
        let (mut window, mut rollout, mut incident) = (None, None, None);
        let (mut window_update, mut rollout_update, mut incident_update) = (None, None, None);
        match subject {
            Subject::Window(w) => (window, window_update) = (Some(w), update_id),
            Subject::Rollout(r) => (rollout, rollout_update) = (Some(r), update_id),
            Subject::Incident(i) => (incident, incident_update) = (Some(i), update_id),
        }
        let mut next_attempt_ms = d.created_ms;
        if d.update.is_none() {
            let Some(rollout) = rollout else {
                return Err(StoreError::Corrupt("a refresh of a window".into()));
            };
            // 1: a refresh nobody holds (or whose lease lapsed) is waiting; 2: only one being
            // drawn right now.
            let waiting: Option<i64> = sqlx::query_scalar(
                "SELECT MIN(CASE WHEN lease_until_ms IS NULL OR lease_until_ms < $3 THEN 1 \
                 ELSE 2 END) FROM deliveries \
                 WHERE channel_id = $1 AND rollout_id = $2 AND kind = 'rollout_refresh' \
                   AND state = 'pending'",
            )
            .bind(d.channel_id)
            .bind(rollout)
            .bind(d.created_ms)
            .fetch_one(&mut **tx)
            .await?;
            if waiting == Some(1) {
                // A refresh not yet taken will draw everything up to now.
                continue;
            }
            let drawn: Option<i64> = sqlx::query_scalar(
                "SELECT drawn_ms FROM rollout_threads WHERE channel_id = $1 AND rollout_id = $2",
            )
            .bind(d.channel_id)
            .bind(rollout)
            .fetch_optional(&mut **tx)
            .await?
            .flatten();
            next_attempt_ms = next_attempt_ms.max(drawn.unwrap_or(0) + d.fold_ms);
            if waiting == Some(2) {
                // One is being drawn right now: this one follows a full interval later.
                next_attempt_ms = next_attempt_ms.max(d.created_ms + d.fold_ms);
            }
        }
        sqlx::query(
            "INSERT INTO deliveries (channel_id, maintenance_id, update_id, rollout_id, \
             rollout_update_id, incident_id, incident_update_id, kind, state, next_attempt_ms, \
             deadline_at, idem_key, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $10, $11, $12)",
        )
        .bind(d.channel_id)
        .bind(window)
        .bind(window_update)
        .bind(rollout)
        .bind(rollout_update)
        .bind(incident)
        .bind(incident_update)
        .bind(d.kind.as_str())
        .bind(next_attempt_ms)
        .bind(secs(d.deadline_at))
        .bind(&d.idem_key)
        .bind(d.created_ms)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Correct update `c.update_id` in one transaction: its new text (or note), or its withdrawal
/// (pending posts of it skipped); the deliveries that carry the correction to where it was
/// posted; the audit entry.
pub(super) async fn correct_update(
    pool: &sqlx::AnyPool,
    c: &crate::store::Correction<'_>,
) -> StoreResult<()> {
    let mut tx = pool.begin().await?;
    let changed = if c.withdraw {
        sqlx::query("UPDATE updates SET withdrawn_at = $1 WHERE id = $2 AND withdrawn_at IS NULL")
            .bind(secs(c.at))
            .bind(c.update_id)
            .execute(&mut *tx)
            .await?
    } else {
        sqlx::query(
            "UPDATE updates SET body = $1, note = $2, edited_at = $3 \
             WHERE id = $4 AND withdrawn_at IS NULL",
        )
        .bind(c.body)
        .bind(c.note)
        .bind(secs(c.at))
        .bind(c.update_id)
        .execute(&mut *tx)
        .await?
    };
    if changed.rows_affected() != 1 {
        return Err(StoreError::NotFound);
    }
    if c.withdraw {
        // Not sent yet: it never will be.
        sqlx::query(
            "UPDATE deliveries SET state = 'skipped', last_error = 'withdrawn before it was sent' \
             WHERE update_id = $1 AND action IN ('post', 'edit') \
               AND state IN ('pending', 'failed') \
               AND (lease_until_ms IS NULL OR lease_until_ms < $2)",
        )
        .bind(c.update_id)
        .bind(c.at.as_millisecond())
        .execute(&mut *tx)
        .await?;
    }
    for d in c.deliveries {
        sqlx::query(
            "INSERT INTO deliveries (channel_id, maintenance_id, update_id, kind, state, \
             next_attempt_ms, deadline_at, idem_key, created_ms, action, corrects_id) \
             VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $8, $9, $10)",
        )
        .bind(d.channel_id)
        .bind(d.window_id)
        .bind(d.update_id)
        .bind(d.kind.as_str())
        .bind(d.created_ms)
        .bind(secs(d.deadline_at))
        .bind(&d.idem_key)
        .bind(d.created_ms)
        .bind(d.action.as_str())
        .bind(d.corrects)
        .execute(&mut *tx)
        .await?;
    }
    super::accounts::insert_audit(&mut tx, c.audit).await?;
    tx.commit().await?;
    Ok(())
}

/// Write where a window's or rollout's posts on a channel hang together.
async fn upsert_thread(
    tx: &mut Transaction<'_, Any>,
    channel_id: i64,
    subject: Subject,
    t: &Thread,
    now: Timestamp,
) -> StoreResult<()> {
    let query = match subject {
        Subject::Window(_) => sqlx::query(
            "INSERT INTO channel_threads (channel_id, maintenance_id, root_id, root_cid, \
             parent_id, parent_cid) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (channel_id, maintenance_id) DO UPDATE SET root_id = $3, \
             root_cid = $4, parent_id = $5, parent_cid = $6",
        ),
        Subject::Rollout(_) => sqlx::query(
            "INSERT INTO rollout_threads (channel_id, rollout_id, root_id, root_cid, \
             parent_id, parent_cid, drawn_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (channel_id, rollout_id) DO UPDATE SET root_id = $3, \
             root_cid = $4, parent_id = $5, parent_cid = $6, drawn_ms = $7",
        ),
        Subject::Incident(_) => sqlx::query(
            "INSERT INTO incident_threads (channel_id, incident_id, root_id, root_cid, \
             parent_id, parent_cid) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (channel_id, incident_id) DO UPDATE SET root_id = $3, \
             root_cid = $4, parent_id = $5, parent_cid = $6",
        ),
    };
    let id = subject.id();
    let query = query
        .bind(channel_id)
        .bind(id)
        .bind(&t.root_id)
        .bind(&t.root_cid)
        .bind(&t.parent_id)
        .bind(&t.parent_cid);
    match subject {
        Subject::Rollout(_) => query.bind(now.as_millisecond()),
        Subject::Window(_) | Subject::Incident(_) => query,
    }
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[async_trait]
impl Outbox for SqlStore {
    async fn outbox_backlog(&self) -> StoreResult<Vec<(i64, i64, Option<i64>, i64)>> {
        let rows = sqlx::query(
            "SELECT channel_id, \
               SUM(CASE WHEN state = 'pending' THEN 1 ELSE 0 END) AS pending, \
               MIN(CASE WHEN state = 'pending' THEN created_ms END) AS oldest, \
               SUM(CASE WHEN state = 'failed' THEN 1 ELSE 0 END) AS failed \
             FROM deliveries WHERE state IN ('pending', 'failed') GROUP BY channel_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("channel_id")?,
                    r.try_get("pending")?,
                    r.try_get("oldest")?,
                    r.try_get("failed")?,
                ))
            })
            .collect()
    }

    async fn correct_update(&self, c: &crate::store::Correction<'_>) -> StoreResult<()> {
        correct_update(&self.pool, c).await
    }

    async fn put_thread(
        &self,
        channel_id: i64,
        subject: Subject,
        thread: &Thread,
        now: Timestamp,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        upsert_thread(&mut tx, channel_id, subject, thread, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_channels(&self) -> StoreResult<Vec<Channel>> {
        sqlx::query(&format!(
            "SELECT {CHANNEL_COLUMNS} FROM channels ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(channel_from)
        .collect()
    }

    async fn get_channel(&self, id: i64) -> StoreResult<Option<Channel>> {
        sqlx::query(&format!(
            "SELECT {CHANNEL_COLUMNS} FROM channels WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(channel_from)
        .transpose()
    }

    async fn insert_channel(
        &self,
        new: &NewChannel,
        source: ChannelSource,
        now: Timestamp,
    ) -> StoreResult<Channel> {
        let kind = new
            .kind
            .ok_or(StoreError::Corrupt("channel without kind".into()))?;
        let row = sqlx::query(&format!(
            "INSERT INTO channels (name, kind, target, secret, api_url, events, milestones, \
             mention_role, langs, enabled, source, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             RETURNING {CHANNEL_COLUMNS}"
        ))
        .bind(&new.name)
        .bind(kind.as_str())
        .bind(&new.target)
        .bind(new.secret.expose())
        .bind(&new.api_url)
        .bind(join_kinds(&new.events))
        .bind(join_kinds(&new.milestones))
        .bind(&new.mention_role)
        .bind(new.langs.join(","))
        .bind(i64::from(new.enabled))
        .bind(source.as_str())
        .bind(secs(now))
        .fetch_one(&self.pool)
        .await
        .map_err(name_taken)?;
        channel_from(&row)
    }

    async fn update_channel(&self, id: i64, new: &NewChannel) -> StoreResult<Channel> {
        let kind = new
            .kind
            .ok_or(StoreError::Corrupt("channel without kind".into()))?;
        let secret = new.secret.expose();
        let row = sqlx::query(&format!(
            "UPDATE channels SET name = $1, kind = $2, target = $3, \
             secret = CASE WHEN $4 = '' THEN secret ELSE $4 END, \
             session = CASE WHEN $4 = '' OR $4 = secret THEN session ELSE NULL END, \
             api_url = $5, events = $6, milestones = $7, mention_role = $8, langs = $9, \
             enabled = $10 WHERE id = $11 RETURNING {CHANNEL_COLUMNS}"
        ))
        .bind(&new.name)
        .bind(kind.as_str())
        .bind(&new.target)
        .bind(secret)
        .bind(&new.api_url)
        .bind(join_kinds(&new.events))
        .bind(join_kinds(&new.milestones))
        .bind(&new.mention_role)
        .bind(new.langs.join(","))
        .bind(i64::from(new.enabled))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(name_taken)?
        .ok_or(StoreError::NotFound)?;
        channel_from(&row)
    }

    async fn delete_channel(&self, id: i64) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM channels WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn channel_session(&self, id: i64) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar::<_, Option<String>>("SELECT session FROM channels WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .flatten(),
        )
    }

    async fn set_channel_session(&self, id: i64, session: Option<&str>) -> StoreResult<()> {
        sqlx::query("UPDATE channels SET session = $1 WHERE id = $2")
            .bind(session)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn claim_delivery(
        &self,
        channel_id: i64,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> StoreResult<Option<Delivery>> {
        sqlx::query(&format!(
            // The outer conditions repeat the inner ones: under PostgreSQL's READ COMMITTED a
            // concurrent claim makes the row fail them instead of being claimed twice.
            "UPDATE deliveries SET attempts = attempts + 1, lease_until_ms = $3, lease_owner = $4 \
             WHERE state = 'pending' AND (lease_until_ms IS NULL OR lease_until_ms < $2) \
             AND id = ( \
               SELECT d.id FROM deliveries d \
               WHERE d.channel_id = $1 AND d.state = 'pending' AND d.next_attempt_ms <= $2 \
                 AND (d.lease_until_ms IS NULL OR d.lease_until_ms < $2) \
                 AND NOT {EARLIER_UNSENT} \
               ORDER BY d.next_attempt_ms, d.id LIMIT 1{skip_locked}) \
             RETURNING {DELIVERY_COLUMNS}",
            skip_locked = self.backend.skip_locked("d"),
        ))
        .bind(channel_id)
        .bind(now_ms)
        .bind(lease_until_ms)
        .bind(owner)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(delivery_from)
        .transpose()
    }

    async fn release_claim(&self, id: i64, attempt: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE deliveries SET lease_until_ms = NULL, lease_owner = NULL, attempts = attempts - 1 \
             WHERE id = $1 AND attempts = $2 AND state = 'pending'",
        )
        .bind(id)
        .bind(attempt)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Only the head of each window's queue counts: a delivery held behind an earlier
    /// pending or failed one is not due, whatever its own time (it would only spin the worker).
    async fn next_due_ms(&self, channel_id: i64) -> StoreResult<Option<i64>> {
        Ok(sqlx::query_scalar(&format!(
            // CASE, not two-argument MAX: the same SQL runs on PostgreSQL.
            "SELECT MIN(CASE WHEN lease_until_ms > next_attempt_ms THEN lease_until_ms \
             ELSE next_attempt_ms END) FROM deliveries d \
             WHERE d.channel_id = $1 AND d.state = 'pending' AND NOT {EARLIER_UNSENT}"
        ))
        .bind(channel_id)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn delivery_sent(
        &self,
        id: i64,
        attempt: i64,
        remote_id: Option<&str>,
        remote_url: Option<&str>,
        thread: Option<(Subject, &Thread)>,
        now: Timestamp,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE deliveries SET state = 'sent', remote_id = $1, remote_url = $2, \
             last_error = NULL, lease_until_ms = NULL, lease_owner = NULL, sent_at = $3 \
             WHERE id = $4 AND attempts = $5 AND state = 'pending' \
             RETURNING channel_id",
        )
        .bind(remote_id)
        .bind(remote_url)
        .bind(secs(now))
        .bind(id)
        .bind(attempt)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let channel_id: i64 = row.try_get("channel_id")?;
        if let Some((subject, t)) = thread {
            upsert_thread(&mut tx, channel_id, subject, t, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn delivery_posted(
        &self,
        id: i64,
        attempt: i64,
        remote_id: &str,
        remote_url: Option<&str>,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE deliveries SET remote_id = $1, remote_url = $2 WHERE id = $3 AND attempts = $4",
        )
        .bind(remote_id)
        .bind(remote_url)
        .bind(id)
        .bind(attempt)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delivery_retry(
        &self,
        id: i64,
        attempt: i64,
        error: &str,
        next_attempt_ms: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE deliveries SET last_error = $1, next_attempt_ms = $2, lease_until_ms = NULL, lease_owner = NULL \
             WHERE id = $3 AND attempts = $4 AND state = 'pending'",
        )
        .bind(error)
        .bind(next_attempt_ms)
        .bind(id)
        .bind(attempt)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delivery_failed(&self, id: i64, attempt: i64, error: &str) -> StoreResult<()> {
        sqlx::query(
            "UPDATE deliveries SET state = 'failed', last_error = $1, lease_until_ms = NULL, lease_owner = NULL \
             WHERE id = $2 AND attempts = $3 AND state = 'pending'",
        )
        .bind(error)
        .bind(id)
        .bind(attempt)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn expire_deliveries(&self, now: Timestamp) -> StoreResult<Vec<Delivery>> {
        sqlx::query(&format!(
            "UPDATE deliveries SET state = 'failed', lease_until_ms = NULL, lease_owner = NULL, \
             last_error = COALESCE(last_error || '; ', '') || 'not delivered before its deadline' \
             WHERE state = 'pending' AND deadline_at <= $1 \
               AND (lease_until_ms IS NULL OR lease_until_ms < $2) \
             RETURNING {DELIVERY_COLUMNS}"
        ))
        .bind(secs(now))
        .bind(now.as_millisecond())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(delivery_from)
        .collect()
    }

    async fn retry_delivery(&self, id: i64, now_ms: i64, deadline: Timestamp) -> StoreResult<bool> {
        let done = sqlx::query(&format!(
            "UPDATE deliveries SET state = 'pending', next_attempt_ms = $1, deadline_at = $2, \
             lease_until_ms = NULL, lease_owner = NULL WHERE id = $3 AND {NOT_IN_FLIGHT}"
        ))
        .bind(now_ms)
        .bind(secs(deadline))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn skip_delivery(&self, id: i64, now_ms: i64) -> StoreResult<bool> {
        let done = sqlx::query(&format!(
            "UPDATE deliveries SET state = 'skipped', lease_until_ms = NULL, lease_owner = NULL \
             WHERE id = $2 AND {NOT_IN_FLIGHT}"
        ))
        .bind(now_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn pause_delivery(&self, id: i64, now_ms: i64, reason: &str) -> StoreResult<bool> {
        let done = sqlx::query(&format!(
            "UPDATE deliveries SET next_attempt_ms = {HELD_MS}, last_error = $2 \
             WHERE id = $3 AND state = 'pending' AND {NOT_IN_FLIGHT}"
        ))
        .bind(now_ms)
        .bind(reason)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn get_delivery(&self, id: i64) -> StoreResult<Option<Delivery>> {
        sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(delivery_from)
        .transpose()
    }

    async fn list_deliveries(&self, subject: Subject) -> StoreResult<Vec<Delivery>> {
        let (column, id) = match subject {
            Subject::Window(id) => ("maintenance_id", id),
            Subject::Rollout(id) => ("rollout_id", id),
            Subject::Incident(id) => ("incident_id", id),
        };
        sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE {column} = $1 ORDER BY id"
        ))
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(delivery_from)
        .collect()
    }

    async fn unsent_deliveries(&self, limit: i64) -> StoreResult<Vec<Delivery>> {
        sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE state IN ('pending', 'failed') \
             ORDER BY id LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(delivery_from)
        .collect()
    }

    async fn get_thread(&self, channel_id: i64, subject: Subject) -> StoreResult<Option<Thread>> {
        let (table, column, id) = match subject {
            Subject::Window(id) => ("channel_threads", "maintenance_id", id),
            Subject::Rollout(id) => ("rollout_threads", "rollout_id", id),
            Subject::Incident(id) => ("incident_threads", "incident_id", id),
        };
        type ThreadRow = (String, Option<String>, Option<String>, Option<String>);
        Ok(sqlx::query_as::<_, ThreadRow>(&format!(
            "SELECT root_id, root_cid, parent_id, parent_cid FROM {table} \
             WHERE channel_id = $1 AND {column} = $2"
        ))
        .bind(channel_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .map(|(root_id, root_cid, parent_id, parent_cid)| Thread {
            root_id,
            root_cid,
            parent_id,
            parent_cid,
        }))
    }

    async fn release_leases(&self, owner: &str) -> StoreResult<u64> {
        Ok(sqlx::query(
            "UPDATE deliveries SET lease_until_ms = NULL, lease_owner = NULL \
             WHERE lease_owner = $1 AND lease_until_ms IS NOT NULL",
        )
        .bind(owner)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    async fn claim_instance(
        &self,
        id: &str,
        token: &str,
        now_ms: i64,
        stale_before_ms: i64,
    ) -> StoreResult<Option<i64>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO instance_presence (id, token, started_ms, heartbeat_ms) \
             VALUES ($1, $2, $3, $3) \
             ON CONFLICT (id) DO UPDATE SET token = excluded.token, \
                started_ms = excluded.started_ms, heartbeat_ms = excluded.heartbeat_ms \
             WHERE instance_presence.heartbeat_ms < $4",
        )
        .bind(id)
        .bind(token)
        .bind(now_ms)
        .bind(stale_before_ms)
        .execute(&mut *tx)
        .await?;
        let (holder, heartbeat): (String, i64) =
            sqlx::query_as("SELECT token, heartbeat_ms FROM instance_presence WHERE id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok((holder != token).then_some(heartbeat))
    }

    async fn instance_heartbeat(&self, id: &str, token: &str, now_ms: i64) -> StoreResult<bool> {
        Ok(sqlx::query(
            "UPDATE instance_presence SET heartbeat_ms = $3 WHERE id = $1 AND token = $2",
        )
        .bind(id)
        .bind(token)
        .bind(now_ms)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    async fn release_instance(&self, id: &str, token: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM instance_presence WHERE id = $1 AND token = $2")
            .bind(id)
            .bind(token)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn get_update(&self, id: i64) -> StoreResult<Option<Update>> {
        sqlx::query(
            "SELECT id, maintenance_id, kind, body, note, step_position, created_at, edited_at \
             FROM updates WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(update_from)
        .transpose()
    }
}
