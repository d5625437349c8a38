//! Email subscribers. What each follows is stored as written: components as a JSON list of
//! ids (NULL for everything), kinds comma-separated.

use async_trait::async_trait;
use jiff::Timestamp;

use super::{SqlStore, opt_ts, parse, secs, ts};
use crate::domain::{MailKind, NewAudit, NewSubscriber, Preferences, Subscriber};
use crate::store::{StoreError, StoreResult, SubscriberCounts, Subscribers};

#[derive(sqlx::FromRow)]
struct SubscriberRow {
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
        Ok(Self {
            id: r.id,
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
        sqlx::query_as::<_, SubscriberRow>(
            "SELECT id, address, address_key, components, kinds, confirmed_at, created_at, \
             bounces, bouncing_at FROM subscribers WHERE id > $1 ORDER BY id LIMIT $2",
        )
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
}
