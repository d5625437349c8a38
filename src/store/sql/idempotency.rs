//! Answers kept for `Idempotency-Key`s: claimed with one insert that only one caller on any
//! instance can win, filled in once the request is answered.

use async_trait::async_trait;
use jiff::Timestamp;

use super::{SqlStore, secs};
use crate::store::{Idempotency, KeyClaim, KeyedRequest, StoreResult, StoredAnswer};

/// A claimed key whose answer is not written yet.
const UNANSWERED: i64 = 0;

#[derive(sqlx::FromRow)]
struct KeyRow {
    fingerprint: String,
    status: i64,
    content_type: String,
    body: String,
    created_at: i64,
}

#[async_trait]
impl Idempotency for SqlStore {
    async fn claim_key(
        &self,
        request: &KeyedRequest,
        now: Timestamp,
        expired_before: Timestamp,
        abandoned_before: Timestamp,
    ) -> StoreResult<KeyClaim> {
        // A row can vanish (released) or be taken over between the statements below; each
        // round starts again from what is stored, and a key fought over this much is busy.
        for _ in 0..4 {
            let inserted = sqlx::query(
                "INSERT INTO idempotency_keys \
                 (scope, idem_key, fingerprint, status, content_type, body, created_at) \
                 VALUES ($1, $2, $3, $4, '', '', $5) ON CONFLICT (scope, idem_key) DO NOTHING",
            )
            .bind(&request.scope)
            .bind(&request.key)
            .bind(&request.fingerprint)
            .bind(UNANSWERED)
            .bind(secs(now))
            .execute(&self.pool)
            .await?
            .rows_affected();
            if inserted == 1 {
                return Ok(KeyClaim::Claimed);
            }
            let Some(row) = sqlx::query_as::<_, KeyRow>(
                "SELECT fingerprint, status, content_type, body, created_at \
                 FROM idempotency_keys WHERE scope = $1 AND idem_key = $2",
            )
            .bind(&request.scope)
            .bind(&request.key)
            .fetch_optional(&self.pool)
            .await?
            else {
                continue;
            };
            let stale = row.created_at < secs(expired_before)
                || (row.status == UNANSWERED && row.created_at < secs(abandoned_before));
            if stale {
                let taken = sqlx::query(
                    "UPDATE idempotency_keys SET fingerprint = $1, status = $2, \
                     content_type = '', body = '', created_at = $3 \
                     WHERE scope = $4 AND idem_key = $5 AND created_at = $6 AND status = $7",
                )
                .bind(&request.fingerprint)
                .bind(UNANSWERED)
                .bind(secs(now))
                .bind(&request.scope)
                .bind(&request.key)
                .bind(row.created_at)
                .bind(row.status)
                .execute(&self.pool)
                .await?
                .rows_affected();
                if taken == 1 {
                    return Ok(KeyClaim::Claimed);
                }
                continue;
            }
            if row.fingerprint != request.fingerprint {
                return Ok(KeyClaim::Mismatch);
            }
            if row.status == UNANSWERED {
                return Ok(KeyClaim::InFlight);
            }
            return Ok(KeyClaim::Answered(StoredAnswer {
                status: u16::try_from(row.status).unwrap_or(500),
                content_type: row.content_type,
                body: row.body,
            }));
        }
        Ok(KeyClaim::InFlight)
    }

    async fn answer_key(&self, request: &KeyedRequest, answer: &StoredAnswer) -> StoreResult<()> {
        sqlx::query(
            "UPDATE idempotency_keys SET status = $1, content_type = $2, body = $3 \
             WHERE scope = $4 AND idem_key = $5 AND fingerprint = $6 AND status = $7",
        )
        .bind(i64::from(answer.status))
        .bind(&answer.content_type)
        .bind(&answer.body)
        .bind(&request.scope)
        .bind(&request.key)
        .bind(&request.fingerprint)
        .bind(UNANSWERED)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn release_key(&self, request: &KeyedRequest) -> StoreResult<()> {
        sqlx::query(
            "DELETE FROM idempotency_keys \
             WHERE scope = $1 AND idem_key = $2 AND fingerprint = $3 AND status = $4",
        )
        .bind(&request.scope)
        .bind(&request.key)
        .bind(&request.fingerprint)
        .bind(UNANSWERED)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn forget_keys(&self, before: Timestamp) -> StoreResult<u64> {
        Ok(
            sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
                .bind(secs(before))
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }
}
