//! Email subscribers. What each follows is stored as written: components as a JSON list of
//! ids (NULL for everything), kinds comma-separated.

use async_trait::async_trait;
use jiff::Timestamp;

use super::{SqlStore, opt_ts, parse, secs, ts};
use crate::domain::{MailKind, NewAudit, NewSubscriber, Preferences, Subscriber};
use crate::store::{StoreError, StoreResult, SubscriberCounts, Subscribers};

#[derive(sqlx::FromRow)]
pub(super) struct SubscriberRow {
    id: i64,
    address: String,
    address_key: String,
    components: Option<String>,
    kinds: String,
    confirmed_at: Option<i64>,
    created_at: i64,
    bounces: i64,
    bouncing_at: Option<i64>,
}

impl TryFrom<SubscriberRow> for Subscriber {
    type Error = StoreError;

    fn try_from(r: SubscriberRow) -> StoreResult<Self> {
        let components = r
            .components
            .as_deref()
            .map(|json| {
                serde_json::from_str::<Vec<i64>>(json)
                    .map_err(|e| StoreError::Corrupt(format!("subscriber components: {e}")))
            })
            .transpose()?;
        let kinds = r
            .kinds
            .split(',')
            .filter(|k| !k.is_empty())
            .map(|k| parse(k, "mail kind", MailKind::parse))
            .collect::<StoreResult<Vec<_>>>()?;
        let send_to = crate::domain::EmailAddress::parse(&r.address)
            .map_or_else(|_| r.address.clone(), |a| a.ascii_domain);
        Ok(Self {
            id: r.id,
            send_to,
            address: r.address,
            key: r.address_key,
            preferences: Preferences { components, kinds },
            confirmed_at: opt_ts(r.confirmed_at)?,
            created_at: ts(r.created_at)?,
            bounces: r.bounces,
            bouncing_at: opt_ts(r.bouncing_at)?,
        })
    }
}

fn kinds_text(kinds: &[MailKind]) -> String {
    kinds
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn components_json(p: &Preferences) -> Option<String> {
    p.components
        .as_ref()
        .map(|c| serde_json::to_string(c).expect("ids serialise"))
}

const SUBSCRIBER_COLUMNS: &str = "id, address, address_key, components, kinds, confirmed_at, \
     created_at, bounces, bouncing_at";

pub(super) fn subscriber_query(condition: &str) -> String {
    format!("SELECT {SUBSCRIBER_COLUMNS} FROM subscribers WHERE {condition}")
}

#[async_trait]
impl Subscribers for SqlStore {
    async fn import_subscribers(
        &self,
        rows: &[NewSubscriber],
        now: Timestamp,
        audit: &NewAudit,
    ) -> StoreResult<(u64, u64)> {
        let mut tx = self.pool.begin().await?;
        let (mut added, mut updated) = (0, 0);
        for row in rows {
            let confirmed = row.confirmed.then(|| secs(now));
            let known: Option<i64> =
                sqlx::query_scalar("SELECT id FROM subscribers WHERE address_key = $1")
                    .bind(&row.address.key)
                    .fetch_optional(&mut *tx)
                    .await?;
            match known {
                // Their new choices; confirmed stays confirmed.
                Some(id) => {
                    sqlx::query(
                        "UPDATE subscribers SET components = $1, kinds = $2, \
                         confirmed_at = COALESCE(confirmed_at, $3) WHERE id = $4",
                    )
                    .bind(components_json(&row.preferences))
                    .bind(kinds_text(&row.preferences.kinds))
                    .bind(confirmed)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                    updated += 1;
                }
                None => {
                    sqlx::query(
                        "INSERT INTO subscribers (address, address_key, components, kinds, \
                         confirmed_at, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(&row.address.shown)
                    .bind(&row.address.key)
                    .bind(components_json(&row.preferences))
                    .bind(kinds_text(&row.preferences.kinds))
                    .bind(confirmed)
                    .bind(secs(now))
                    .execute(&mut *tx)
                    .await?;
                    added += 1;
                }
            }
        }
        super::accounts::insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok((added, updated))
    }

    async fn list_subscribers(&self, after_id: i64, limit: i64) -> StoreResult<Vec<Subscriber>> {
        sqlx::query_as::<_, SubscriberRow>(&subscriber_query("id > $1 ORDER BY id LIMIT $2"))
            .bind(after_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(Subscriber::try_from)
            .collect()
    }

    async fn count_subscribers(&self) -> StoreResult<SubscriberCounts> {
        let (total, confirmed, bouncing): (i64, i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), \
             COALESCE(SUM(CASE WHEN confirmed_at IS NOT NULL THEN 1 ELSE 0 END), 0), \
             COALESCE(SUM(CASE WHEN bouncing_at IS NOT NULL THEN 1 ELSE 0 END), 0) \
             FROM subscribers",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(SubscriberCounts {
            total,
            confirmed,
            bouncing,
        })
    }

    async fn subscriber(&self, id: i64) -> StoreResult<Option<Subscriber>> {
        sqlx::query_as::<_, SubscriberRow>(&subscriber_query("id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(Subscriber::try_from)
            .transpose()
    }

    async fn subscriber_by_key(&self, key: &str) -> StoreResult<Option<Subscriber>> {
        sqlx::query_as::<_, SubscriberRow>(&subscriber_query("address_key = $1"))
            .bind(key)
            .fetch_optional(&self.pool)
            .await?
            .map(Subscriber::try_from)
            .transpose()
    }

    async fn insert_subscriber(
        &self,
        new: &NewSubscriber,
        now: Timestamp,
    ) -> StoreResult<Subscriber> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO subscribers (address, address_key, components, kinds, confirmed_at, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(&new.address.shown)
        .bind(&new.address.key)
        .bind(components_json(&new.preferences))
        .bind(kinds_text(&new.preferences.kinds))
        .bind(new.confirmed.then(|| secs(now)))
        .bind(secs(now))
        .fetch_one(&self.pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Duplicate("a subscriber with this address")
            }
            _ => StoreError::Database(e),
        })?;
        self.subscriber(id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("subscriber {id} vanished")))
    }

    async fn set_subscriber_preferences(&self, id: i64, p: &Preferences) -> StoreResult<()> {
        sqlx::query("UPDATE subscribers SET components = $1, kinds = $2 WHERE id = $3")
            .bind(components_json(p))
            .bind(kinds_text(&p.kinds))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn confirm_subscriber(&self, id: i64, now: Timestamp) -> StoreResult<bool> {
        Ok(sqlx::query(
            "UPDATE subscribers SET confirmed_at = $1 WHERE id = $2 AND confirmed_at IS NULL",
        )
        .bind(secs(now))
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    async fn delete_subscriber(&self, id: i64, audit: Option<&NewAudit>) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let gone = sqlx::query("DELETE FROM subscribers WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if gone && let Some(audit) = audit {
            super::accounts::insert_audit(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(gone)
    }

    async fn expire_unconfirmed(&self, before: Timestamp) -> StoreResult<u64> {
        Ok(
            sqlx::query("DELETE FROM subscribers WHERE confirmed_at IS NULL AND created_at < $1")
                .bind(secs(before))
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    async fn find_subscribers(&self, text: &str, limit: i64) -> StoreResult<Vec<Subscriber>> {
        let pattern = format!(
            "%{}%",
            text.trim()
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        sqlx::query_as::<_, SubscriberRow>(&format!(
            "{} ORDER BY id LIMIT $2",
            subscriber_query("address_key LIKE $1 ESCAPE '\\'")
        ))
        .bind(pattern)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(Subscriber::try_from)
        .collect()
    }
}
