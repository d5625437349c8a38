//! The mail queue. One event is one `mail_fanouts` row however many subscribers it reaches;
//! workers cut it into batches of subscriber ids as they go (`mail_batches`), each held under
//! a lease and advanced one accepted message at a time.

use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::Row;

use super::subscribers::{SubscriberRow, subscriber_query};
use super::{Backend, SqlStore, parse, secs, ts};
use crate::domain::{MailBatch, MailFanout, MailPurpose, NewMail, STEP_FOLD, Subscriber};
use crate::store::{MailBacklog, MailQueue, StoreError, StoreResult};

type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

impl SqlStore {
    /// Make a transaction a writer from its first statement: SQLite then waits (busy timeout)
    /// for the writer before it instead of failing when a read turns into a write after
    /// another connection wrote. PostgreSQL locks rows as it goes and needs nothing.
    async fn write_first(&self, tx: &mut Tx<'_>) -> StoreResult<()> {
        if self.backend == Backend::Sqlite {
            sqlx::query("UPDATE site_secrets SET value = value WHERE name = ''")
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }
}

fn ids_json(ids: &[i64]) -> Option<String> {
    (!ids.is_empty()).then(|| serde_json::to_string(ids).expect("ids serialise"))
}

fn batch_from(row: &sqlx::any::AnyRow) -> StoreResult<MailBatch> {
    Ok(MailBatch {
        id: row.try_get("id")?,
        fanout_id: row.try_get("fanout_id")?,
        last_id: row.try_get("last_id")?,
        cursor: row.try_get("cursor")?,
        attempts: row.try_get("attempts")?,
    })
}

const BATCH_COLUMNS: &str = "id, fanout_id, last_id, cursor, attempts";

#[async_trait]
impl MailQueue for SqlStore {
    async fn site_secret(&self, name: &str, fresh: &str) -> StoreResult<String> {
        sqlx::query(
            "INSERT INTO site_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(fresh)
        .execute(&self.pool)
        .await?;
        Ok(
            sqlx::query_scalar("SELECT value FROM site_secrets WHERE name = $1")
                .bind(name)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn queue_personal_mail(
        &self,
        mail: &NewMail,
        since: Timestamp,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let id = mail
            .subscriber_id
            .ok_or_else(|| StoreError::Corrupt("a personal mail names nobody".into()))?;
        let mut tx = self.pool.begin().await?;
        // The check and the mark are one statement: ten forms posted at once send one mail.
        // An unconfirmed subscription lives CONFIRMATION_TTL from its latest confirmation
        // mail: created_at moves with it.
        let marked = sqlx::query(
            "UPDATE subscribers SET confirm_sent_at = $1, \
             created_at = CASE WHEN confirmed_at IS NULL THEN $1 ELSE created_at END \
             WHERE id = $2 AND COALESCE(confirm_sent_at, 0) <= $3",
        )
        .bind(secs(now))
        .bind(id)
        .bind(secs(since))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !marked {
            // At once: a dropped transaction is rolled back only when its connection is next
            // used, and on SQLite it would keep the write lock while idle in the pool.
            tx.rollback().await?;
            return Ok(false);
        }
        insert_fanout(&mut tx, mail, None, None, now, now.as_millisecond()).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn queue_event_mail(
        &self,
        delivery_id: i64,
        mail: &NewMail,
        now: Timestamp,
    ) -> StoreResult<i64> {
        let mut tx = self.pool.begin().await?;
        self.write_first(&mut tx).await?;
        if let Some(id) = sqlx::query_scalar::<_, i64>(
            "SELECT fanout_id FROM mail_fanout_deliveries WHERE delivery_id = $1",
        )
        .bind(delivery_id)
        .fetch_optional(&mut *tx)
        .await?
        {
            tx.rollback().await?;
            return Ok(id);
        }
        let now_ms = now.as_millisecond();
        let thread = mail.thread.as_deref().unwrap_or("");
        // The thread's mail not yet begun (no batch cut) takes this event in. On PostgreSQL
        // the row is locked, so a worker cutting its first batch meanwhile either waits for
        // this event or has begun (then last_id is set and a new mail is made).
        let pending = sqlx::query(&format!(
            "SELECT id, components, folds FROM mail_fanouts \
             WHERE thread = $1 AND kind = $2 AND subscriber_id IS NULL AND last_id IS NULL \
             ORDER BY id DESC LIMIT 1{}",
            if self.backend == Backend::Postgres {
                " FOR UPDATE"
            } else {
                ""
            }
        ))
        .bind(thread)
        .bind(mail.purpose.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let fanout = match pending {
            Some(row) => {
                let id: i64 = row.try_get("id")?;
                let mut components: Vec<i64> = row
                    .try_get::<Option<String>, _>("components")?
                    .map(|j| serde_json::from_str(&j))
                    .transpose()
                    .map_err(|e| StoreError::Corrupt(format!("mail components: {e}")))?
                    .unwrap_or_default();
                for c in &mail.components {
                    if !components.contains(c) {
                        components.push(*c);
                    }
                }
                // Something other than a step goes now, and takes the waiting steps with it.
                let due = if mail.folds { None } else { Some(now_ms) };
                let joined = sqlx::query(
                    "UPDATE mail_fanouts SET subject = $1, \
                     text_body = text_body || $2, html_body = html_body || $3, \
                     components = $4, folds = folds + 1, \
                     due_ms = CASE WHEN $5 < due_ms THEN $5 ELSE due_ms END \
                     WHERE id = $6 AND last_id IS NULL",
                )
                .bind(&mail.subject)
                .bind(format!("\n{}", mail.text))
                .bind(&mail.html)
                .bind(ids_json(&components))
                .bind(due.unwrap_or(i64::MAX))
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                (joined == 1).then_some(id)
            }
            None => None,
        };
        let fanout = match fanout {
            Some(id) => id,
            None => {
                let last = sqlx::query(
                    "SELECT message_id, created_ms FROM mail_fanouts \
                     WHERE thread = $1 AND subscriber_id IS NULL ORDER BY id DESC LIMIT 1",
                )
                .bind(thread)
                .fetch_optional(&mut *tx)
                .await?;
                let (reply, due) = match &last {
                    None => (None, now_ms),
                    Some(row) => {
                        let created: i64 = row.try_get("created_ms")?;
                        let due = if mail.folds {
                            now_ms.max(created + STEP_FOLD.as_millis() as i64)
                        } else {
                            now_ms
                        };
                        (Some(row.try_get::<String, _>("message_id")?), due)
                    }
                };
                insert_fanout(&mut tx, mail, reply.as_deref(), Some(thread), now, due).await?
            }
        };
        sqlx::query("INSERT INTO mail_fanout_deliveries (delivery_id, fanout_id) VALUES ($1, $2)")
            .bind(delivery_id)
            .bind(fanout)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(fanout)
    }

    async fn claim_mail_batch(
        &self,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
        size: i64,
    ) -> StoreResult<Option<MailBatch>> {
        // A batch whose worker died, or whose retry is due.
        let taken = sqlx::query(&format!(
            "UPDATE mail_batches SET lease_owner = $1, lease_until_ms = $2 \
             WHERE id = (SELECT b.id FROM mail_batches b \
               WHERE b.done_at IS NULL AND b.next_attempt_ms <= $3 \
                 AND (b.lease_until_ms IS NULL OR b.lease_until_ms < $3) \
               ORDER BY b.next_attempt_ms, b.id LIMIT 1{skip}) \
             RETURNING {BATCH_COLUMNS}",
            skip = self.backend.skip_locked("b"),
        ))
        .bind(owner)
        .bind(now_ms + lease_ms)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = taken {
            return batch_from(&row).map(Some);
        }
        // Else cut the next run of subscribers from the oldest due fan-out.
        for _ in 0..4 {
            let mut tx = self.pool.begin().await?;
            let Some(f) = sqlx::query(&format!(
                "UPDATE mail_fanouts SET last_id = COALESCE(last_id, subscriber_id, \
                   (SELECT COALESCE(MAX(s.id), 0) FROM subscribers s)) \
                 WHERE id = (SELECT f.id FROM mail_fanouts f \
                   WHERE f.batched = 0 AND f.due_ms <= $1 ORDER BY f.due_ms, f.id LIMIT 1{skip}) \
                 RETURNING id, last_id, batched_through, subscriber_id",
                skip = self.backend.skip_locked("f"),
            ))
            .bind(now_ms)
            .fetch_optional(&mut *tx)
            .await?
            else {
                tx.rollback().await?;
                return Ok(None);
            };
            let fanout: i64 = f.try_get("id")?;
            let last: i64 = f.try_get("last_id")?;
            let through: i64 = f.try_get("batched_through")?;
            let personal: Option<i64> = f.try_get("subscriber_id")?;
            let ids: Vec<i64> = match personal {
                Some(id) if through < id => vec![id],
                Some(_) => vec![],
                None => {
                    sqlx::query_scalar(
                        "SELECT id FROM subscribers WHERE id > $1 AND id <= $2 \
                         AND confirmed_at IS NOT NULL AND bouncing_at IS NULL \
                         ORDER BY id LIMIT $3",
                    )
                    .bind(through)
                    .bind(last)
                    .bind(size)
                    .fetch_all(&mut *tx)
                    .await?
                }
            };
            let (Some(&first), Some(&end)) = (ids.first(), ids.last()) else {
                sqlx::query(
                    "UPDATE mail_fanouts SET batched = 1, batched_through = last_id WHERE id = $1",
                )
                .bind(fanout)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                finish_fanout(
                    &self.pool,
                    fanout,
                    Timestamp::from_millisecond(now_ms).unwrap_or_default(),
                )
                .await?;
                continue;
            };
            let complete = personal.is_some() || (ids.len() as i64) < size || end >= last;
            sqlx::query("UPDATE mail_fanouts SET batched_through = $1, batched = $2 WHERE id = $3")
                .bind(if complete { last } else { end })
                .bind(i64::from(complete))
                .bind(fanout)
                .execute(&mut *tx)
                .await?;
            let row = sqlx::query(&format!(
                "INSERT INTO mail_batches (fanout_id, first_id, last_id, cursor, lease_owner, \
                 lease_until_ms) VALUES ($1, $2, $3, $4, $5, $6) RETURNING {BATCH_COLUMNS}"
            ))
            .bind(fanout)
            .bind(first)
            .bind(if complete { last.max(end) } else { end })
            .bind(first - 1)
            .bind(owner)
            .bind(now_ms + lease_ms)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            return batch_from(&row).map(Some);
        }
        Ok(None)
    }

    async fn mail_fanout(&self, id: i64) -> StoreResult<Option<MailFanout>> {
        let Some(r) = sqlx::query(
            "SELECT id, kind, subscriber_id, components, subject, text_body, html_body, \
             message_id, in_reply_to, refs, created_at FROM mail_fanouts WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let components = r
            .try_get::<Option<String>, _>("components")?
            .map(|j| serde_json::from_str(&j))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("mail components: {e}")))?
            .unwrap_or_default();
        Ok(Some(MailFanout {
            id: r.try_get("id")?,
            purpose: parse(
                &r.try_get::<String, _>("kind")?,
                "mail kind",
                MailPurpose::parse,
            )?,
            subscriber_id: r.try_get("subscriber_id")?,
            components,
            subject: r.try_get("subject")?,
            text: r.try_get("text_body")?,
            html: r.try_get("html_body")?,
            message_id: r.try_get("message_id")?,
            in_reply_to: r.try_get("in_reply_to")?,
            references: r.try_get("refs")?,
            created_at: ts(r.try_get("created_at")?)?,
        }))
    }

    async fn mail_batch_subscribers(
        &self,
        batch: &MailBatch,
        personal: Option<i64>,
    ) -> StoreResult<Vec<Subscriber>> {
        let condition = if personal.is_some() {
            "id > $1 AND id <= $2 ORDER BY id"
        } else {
            "id > $1 AND id <= $2 AND confirmed_at IS NOT NULL AND bouncing_at IS NULL ORDER BY id"
        };
        sqlx::query_as::<_, SubscriberRow>(&subscriber_query(condition))
            .bind(batch.cursor)
            .bind(batch.last_id)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(Subscriber::try_from)
            .collect()
    }

    async fn mail_advance(
        &self,
        batch_id: i64,
        owner: &str,
        subscriber_id: i64,
        lease_until_ms: i64,
    ) -> StoreResult<bool> {
        Ok(sqlx::query(
            "UPDATE mail_batches SET cursor = $1, lease_until_ms = $2, attempts = 0 \
             WHERE id = $3 AND lease_owner = $4 AND done_at IS NULL",
        )
        .bind(subscriber_id)
        .bind(lease_until_ms)
        .bind(batch_id)
        .bind(owner)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    async fn mail_bounced(
        &self,
        batch_id: i64,
        owner: &str,
        subscriber_id: i64,
        limit: i64,
        now: Timestamp,
        lease_until_ms: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let ours = sqlx::query(
            "UPDATE mail_batches SET cursor = $1, lease_until_ms = $2 \
             WHERE id = $3 AND lease_owner = $4 AND done_at IS NULL",
        )
        .bind(subscriber_id)
        .bind(lease_until_ms)
        .bind(batch_id)
        .bind(owner)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !ours {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "UPDATE subscribers SET bounces = bounces + 1, \
             bouncing_at = CASE WHEN bounces + 1 >= $1 THEN COALESCE(bouncing_at, $2) ELSE bouncing_at END \
             WHERE id = $3",
        )
        .bind(limit)
        .bind(secs(now))
        .bind(subscriber_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn mail_reached(&self, subscriber_id: i64) -> StoreResult<()> {
        sqlx::query("UPDATE subscribers SET bounces = 0 WHERE id = $1 AND bounces > 0")
            .bind(subscriber_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn mail_retry_later(
        &self,
        batch_id: i64,
        owner: &str,
        next_ms: i64,
        error: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE mail_batches SET lease_owner = NULL, lease_until_ms = NULL, \
             next_attempt_ms = $1, attempts = attempts + 1, last_error = $2 \
             WHERE id = $3 AND lease_owner = $4 AND done_at IS NULL",
        )
        .bind(next_ms)
        .bind(error)
        .bind(batch_id)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn mail_batch_done(&self, batch_id: i64, owner: &str, now: Timestamp) -> StoreResult<()> {
        let fanout: Option<i64> = sqlx::query_scalar(
            "UPDATE mail_batches SET done_at = $1, cursor = last_id, lease_owner = NULL, \
             lease_until_ms = NULL WHERE id = $2 AND lease_owner = $3 AND done_at IS NULL \
             RETURNING fanout_id",
        )
        .bind(secs(now))
        .bind(batch_id)
        .bind(owner)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(fanout) = fanout {
            finish_fanout(&self.pool, fanout, now).await?;
        }
        Ok(())
    }

    async fn release_mail_leases(&self, owners: &[String]) -> StoreResult<u64> {
        let mut released = 0;
        for owner in owners {
            released += sqlx::query(
                "UPDATE mail_batches SET lease_owner = NULL, lease_until_ms = NULL \
                 WHERE lease_owner = $1 AND done_at IS NULL",
            )
            .bind(owner)
            .execute(&self.pool)
            .await?
            .rows_affected();
        }
        Ok(released)
    }

    async fn prune_mail(&self, before: Timestamp) -> StoreResult<u64> {
        Ok(
            sqlx::query("DELETE FROM mail_fanouts WHERE done_at IS NOT NULL AND done_at < $1")
                .bind(secs(before))
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    async fn mail_backlog(&self) -> StoreResult<MailBacklog> {
        let (fanouts, retrying): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM mail_fanouts WHERE done_at IS NULL), \
             (SELECT COUNT(*) FROM mail_batches WHERE done_at IS NULL AND attempts > 0)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(MailBacklog { fanouts, retrying })
    }
}

/// A fan-out is done once it is cut to the end and no batch of it is open.
async fn finish_fanout(pool: &sqlx::AnyPool, fanout: i64, now: Timestamp) -> StoreResult<()> {
    sqlx::query(
        "UPDATE mail_fanouts SET done_at = $1 WHERE id = $2 AND batched = 1 AND done_at IS NULL \
         AND NOT EXISTS (SELECT 1 FROM mail_batches b WHERE b.fanout_id = $2 AND b.done_at IS NULL)",
    )
    .bind(secs(now))
    .bind(fanout)
    .execute(pool)
    .await?;
    Ok(())
}

async fn insert_fanout(
    tx: &mut Tx<'_>,
    mail: &NewMail,
    reply_to: Option<&str>,
    thread: Option<&str>,
    now: Timestamp,
    due_ms: i64,
) -> StoreResult<i64> {
    // The thread's first mail takes the thread's own id; the rest reply to the one before.
    let (message_id, refs) = match reply_to {
        None => (mail.root_id.as_str(), None),
        Some(previous) if previous == mail.root_id => {
            (mail.message_id.as_str(), Some(mail.root_id.clone()))
        }
        Some(previous) => (
            mail.message_id.as_str(),
            Some(format!("{} {previous}", mail.root_id)),
        ),
    };
    Ok(sqlx::query_scalar(
        "INSERT INTO mail_fanouts (kind, subscriber_id, thread, components, subject, text_body, \
         html_body, message_id, in_reply_to, refs, created_at, created_ms, due_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id",
    )
    .bind(mail.purpose.as_str())
    .bind(mail.subscriber_id)
    .bind(thread)
    .bind(ids_json(&mail.components))
    .bind(&mail.subject)
    .bind(&mail.text)
    .bind(&mail.html)
    .bind(message_id)
    .bind(reply_to)
    .bind(refs)
    .bind(secs(now))
    .bind(now.as_millisecond())
    .bind(due_ms)
    .fetch_one(&mut **tx)
    .await?)
}
