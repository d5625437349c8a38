//! Accounts: API tokens, users, web sessions and the audit log.

use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::any::AnyRow;
use sqlx::{Any, FromRow, Row, Transaction};

use super::{SqlStore, opt_ts, parse, secs, ts};
use crate::domain::{ApiToken, AuditEntry, NewAudit, Role, User};
use crate::store::{
    AccountChange, Accounts, AttemptRule, Attempts, StoreError, StoreResult, TokenRecord,
};

/// An `api_tokens` row as selected by [`TOKEN_COLUMNS`] (never the hash).
#[derive(sqlx::FromRow)]
struct TokenRow {
    id: i64,
    name: String,
    role: String,
    prefix: String,
    created_by: String,
    created_at: i64,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
    expires_at: Option<i64>,
}

impl TryFrom<TokenRow> for ApiToken {
    type Error = StoreError;

    fn try_from(r: TokenRow) -> StoreResult<Self> {
        Ok(Self {
            id: r.id,
            name: r.name,
            role: parse(&r.role, "role", Role::parse)?,
            prefix: r.prefix,
            created_by: r.created_by,
            created_at: ts(r.created_at)?,
            last_used_at: opt_ts(r.last_used_at)?,
            revoked_at: opt_ts(r.revoked_at)?,
            expires_at: opt_ts(r.expires_at)?,
        })
    }
}

/// A sign-in counter as stored.
#[derive(FromRow)]
struct AttemptsRow {
    attempt_key: String,
    n: i64,
    since_ms: i64,
    last_ms: i64,
}

impl From<AttemptsRow> for Attempts {
    fn from(r: AttemptsRow) -> Self {
        Self {
            key: r.attempt_key,
            n: r.n,
            since_ms: r.since_ms,
            last_ms: r.last_ms,
        }
    }
}

/// Write an audit entry inside the transaction of the change it records.
pub(super) async fn insert_audit(
    tx: &mut Transaction<'_, Any>,
    audit: &NewAudit,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO audit_log (actor, action, target, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(&audit.actor)
    .bind(&audit.action)
    .bind(&audit.target)
    .bind(secs(audit.at))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn token_from(row: &AnyRow) -> StoreResult<ApiToken> {
    TokenRow::from_row(row)?.try_into()
}

/// A `users` row (`id, name, role, created_at`; the password hash is read only to check it).
#[derive(sqlx::FromRow)]
struct UserRow {
    id: i64,
    name: String,
    role: String,
    created_at: i64,
}

impl TryFrom<UserRow> for User {
    type Error = StoreError;

    fn try_from(r: UserRow) -> StoreResult<Self> {
        Ok(Self {
            id: r.id,
            name: r.name,
            role: parse(&r.role, "role", Role::parse)?,
            created_at: ts(r.created_at)?,
        })
    }
}

fn user_from(row: &AnyRow) -> StoreResult<User> {
    UserRow::from_row(row)?.try_into()
}

/// An `audit_log` row.
#[derive(sqlx::FromRow)]
struct AuditRow {
    id: i64,
    actor: String,
    action: String,
    target: Option<String>,
    created_at: i64,
}

impl TryFrom<AuditRow> for AuditEntry {
    type Error = StoreError;

    fn try_from(r: AuditRow) -> StoreResult<Self> {
        Ok(Self {
            id: r.id,
            actor: r.actor,
            action: r.action,
            target: r.target,
            created_at: ts(r.created_at)?,
        })
    }
}

const TOKEN_COLUMNS: &str =
    "id, name, role, prefix, created_by, created_at, last_used_at, revoked_at, expires_at";

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

#[async_trait]
impl Accounts for SqlStore {
    async fn insert_token(&self, t: &TokenRecord<'_>) -> StoreResult<ApiToken> {
        let row = sqlx::query(&format!(
            "INSERT INTO api_tokens \
             (name, role, token_hash, prefix, created_by, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(t.name)
        .bind(t.role.as_str())
        .bind(t.token_hash)
        .bind(t.prefix)
        .bind(t.created_by)
        .bind(secs(t.created_at))
        .bind(t.expires_at.map(secs))
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

    async fn revoke_tokens_by(&self, created_by: &str, now: Timestamp) -> StoreResult<u64> {
        Ok(sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE created_by = $2 AND revoked_at IS NULL",
        )
        .bind(secs(now))
        .bind(created_by)
        .execute(&self.pool)
        .await?
        .rows_affected())
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
        let mut tx = self.pool.begin().await?;
        let audit = NewAudit {
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.map(str::to_owned),
            at: now,
        };
        insert_audit(&mut tx, &audit).await?;
        tx.commit().await?;
        crate::telemetry::log_change(&audit);
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
        .map(|row| AuditRow::from_row(row)?.try_into())
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

    async fn setup_code(&self, candidate: &str, now: Timestamp) -> StoreResult<String> {
        sqlx::query(
            "INSERT INTO setup_code (id, code, created_at) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(candidate)
        .bind(secs(now))
        .execute(&self.pool)
        .await?;
        Ok(
            sqlx::query_scalar("SELECT code FROM setup_code WHERE id = 1")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn clear_setup_code(&self) -> StoreResult<()> {
        sqlx::query("DELETE FROM setup_code")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn take_setup_code(&self, code: &str) -> StoreResult<bool> {
        let taken = sqlx::query("DELETE FROM setup_code WHERE id = 1 AND code = $1")
            .bind(code)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(taken == 1)
    }

    async fn count_attempts(
        &self,
        keys: &[String],
        now_ms: i64,
        rule: &AttemptRule<'_>,
    ) -> StoreResult<Result<(), Duration>> {
        let mut tx = self.pool.begin().await?;
        // Every caller takes its rows in one order (sorted keys), so none waits on another
        // that waits on it. The upsert changes nothing but makes a missing row and, on
        // PostgreSQL, locks the row until commit; on SQLite the first write takes the
        // database's write lock for the whole transaction.
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_by(|a, b| keys[*a].cmp(&keys[*b]));
        let mut found: Vec<Option<Attempts>> = vec![None; keys.len()];
        for i in order {
            found[i] = Some(
                sqlx::query_as::<_, AttemptsRow>(
                    "INSERT INTO login_attempts (attempt_key, n, since_ms, last_ms) \
                     VALUES ($1, 0, $2, $2) \
                     ON CONFLICT (attempt_key) DO UPDATE SET n = login_attempts.n \
                     RETURNING attempt_key, n, since_ms, last_ms",
                )
                .bind(&keys[i])
                .bind(now_ms)
                .fetch_one(&mut *tx)
                .await?
                .into(),
            );
        }
        let before: Vec<Attempts> = found.into_iter().flatten().collect();
        let mut counts = before.clone();
        let verdict = rule(&mut counts);
        if verdict.is_ok() {
            for (c, was) in counts.iter().zip(&before) {
                if c != was {
                    sqlx::query(
                        "UPDATE login_attempts SET n = $1, since_ms = $2, last_ms = $3 \
                         WHERE attempt_key = $4",
                    )
                    .bind(c.n)
                    .bind(c.since_ms)
                    .bind(c.last_ms)
                    .bind(&c.key)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(verdict)
    }

    async fn forget_attempts(&self, before_ms: i64) -> StoreResult<u64> {
        Ok(sqlx::query(&format!(
            "DELETE FROM login_attempts WHERE attempt_key IN \
             (SELECT attempt_key FROM login_attempts WHERE since_ms < $1{})",
            self.backend.skip_locked("login_attempts")
        ))
        .bind(before_ms)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }
}
