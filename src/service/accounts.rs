//! Users, API tokens and the audit log.

use std::sync::atomic::Ordering;

use sha2::{Digest, Sha256};

use super::{Service, ServiceError, ServiceResult};
use crate::domain::{
    ApiToken, AuditEntry, Role, User, ValidationError, validate_password, validate_token_name,
    validate_user_name,
};
use crate::store::{AccountChange, StoreError};

/// Every token starts with this, so secret scanners and people recognise it.
pub const TOKEN_PREFIX: &str = "hrld_";

/// A token just created: the only moment its secret exists outside the caller.
#[derive(Debug)]
pub struct NewToken {
    pub token: ApiToken,
    pub secret: crate::config::Secret,
}

fn hash_token(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// 256 random bits as hex.
fn random_hex() -> ServiceResult<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| {
        ServiceError::Store(StoreError::Corrupt(format!("no randomness available: {e}")))
    })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A setup code: short enough to type from a log line, 80 random bits.
pub fn setup_code() -> ServiceResult<crate::config::Secret> {
    Ok(crate::config::Secret::new(random_hex()?[..20].to_owned()))
}

fn new_secret() -> ServiceResult<String> {
    Ok(format!("{TOKEN_PREFIX}{}", random_hex()?))
}

/// How long a login lasts.
pub const SESSION_LIFETIME: jiff::SignedDuration = jiff::SignedDuration::from_hours(12);

/// A session just opened: the cookie's secret (shown to the browser only) and its CSRF token.
#[derive(Debug)]
pub struct NewSession {
    pub cookie: crate::config::Secret,
    pub csrf: String,
    pub user: User,
}

impl Service {
    /// Create an API token for automation; `actor` is recorded in the audit log.
    pub async fn create_token(
        &self,
        name: &str,
        role: Role,
        actor: &str,
    ) -> ServiceResult<NewToken> {
        let name = validate_token_name(name)?;
        let secret = new_secret()?;
        let prefix = &secret[..TOKEN_PREFIX.len() + 6];
        let now = self.now();
        let token = self
            .store
            .insert_token(&name, role, &hash_token(&secret), prefix, actor, now)
            .await?;
        self.store
            .audit(
                actor,
                "token.create",
                Some(&format!("{} ({})", token.name, token.id)),
                now,
            )
            .await?;
        Ok(NewToken {
            token,
            secret: crate::config::Secret::new(secret),
        })
    }

    /// The live token a bearer secret names, marking it used; `None` for unknown or revoked.
    pub async fn authenticate_token(&self, secret: &str) -> ServiceResult<Option<ApiToken>> {
        if !secret.starts_with(TOKEN_PREFIX) || secret.len() > 200 {
            return Ok(None);
        }
        let Some(mut token) = self.store.token_by_hash(&hash_token(secret)).await? else {
            return Ok(None);
        };
        if token.revoked_at.is_some() {
            return Ok(None);
        }
        let now = self.now();
        // One write a minute per token at most: "last used" needs no finer grain.
        if token
            .last_used_at
            .is_none_or(|t| now.duration_since(t).as_secs() >= 60)
        {
            self.store.touch_token(token.id, now).await?;
            token.last_used_at = Some(now);
        }
        Ok(Some(token))
    }

    pub async fn tokens(&self) -> ServiceResult<Vec<ApiToken>> {
        Ok(self.store.list_tokens().await?)
    }

    pub async fn revoke_token(&self, id: i64, actor: &str) -> ServiceResult<()> {
        let now = self.now();
        if !self.store.revoke_token(id, now).await? {
            return Err(ServiceError::NotFound("live token"));
        }
        self.store
            .audit(actor, "token.revoke", Some(&id.to_string()), now)
            .await?;
        Ok(())
    }

    /// Add a user; the password is hashed with argon2id off the async threads.
    pub async fn add_user(
        &self,
        name: &str,
        password: &str,
        role: Role,
        actor: &str,
    ) -> ServiceResult<User> {
        let name = validate_user_name(name)?;
        validate_password(password)?;
        let password = password.to_owned();
        let _slot = self
            .hashing_slot(std::time::Duration::from_secs(30))
            .await?;
        let hash = tokio::task::spawn_blocking(move || password_auth::generate_hash(password))
            .await
            .map_err(|e| {
                ServiceError::Store(StoreError::Corrupt(format!("hashing failed: {e}")))
            })?;
        let now = self.now();
        let user = self
            .store
            .insert_user(&name, &hash, role, now)
            .await
            .map_err(|e| match e {
                StoreError::Duplicate(_) => ServiceError::from(ValidationError::new(
                    "name",
                    format!("a user named {name:?} already exists"),
                )),
                e => e.into(),
            })?;
        self.store
            .audit(
                actor,
                "user.add",
                Some(&format!("{} ({})", user.name, role.as_str())),
                now,
            )
            .await?;
        Ok(user)
    }

    /// Remove a user; their sessions end with them. The last admin stays.
    pub async fn remove_user(&self, name: &str, actor: &str) -> ServiceResult<()> {
        let outcome = self.store.delete_user(name.trim()).await?;
        self.account_outcome(outcome, "remove")?;
        self.store
            .audit(actor, "user.remove", Some(name.trim()), self.now())
            .await?;
        Ok(())
    }

    /// A new password; the user's sessions end (signed in elsewhere with the old one).
    pub async fn set_password(&self, name: &str, password: &str, actor: &str) -> ServiceResult<()> {
        validate_password(password)?;
        let password = password.to_owned();
        let _slot = self
            .hashing_slot(std::time::Duration::from_secs(30))
            .await?;
        let hash = tokio::task::spawn_blocking(move || password_auth::generate_hash(password))
            .await
            .map_err(|e| {
                ServiceError::Store(StoreError::Corrupt(format!("hashing failed: {e}")))
            })?;
        let outcome = self.store.set_password_hash(name.trim(), &hash).await?;
        self.account_outcome(outcome, "change the password of")?;
        self.store
            .audit(actor, "user.passwd", Some(name.trim()), self.now())
            .await?;
        Ok(())
    }

    /// A new role; the user's sessions end. The last admin stays an admin.
    pub async fn set_role(&self, name: &str, role: Role, actor: &str) -> ServiceResult<()> {
        let outcome = self.store.set_role(name.trim(), role).await?;
        self.account_outcome(outcome, "demote")?;
        self.store
            .audit(
                actor,
                "user.role",
                Some(&format!("{} ({})", name.trim(), role.as_str())),
                self.now(),
            )
            .await?;
        Ok(())
    }

    fn account_outcome(&self, outcome: AccountChange, what: &str) -> ServiceResult<()> {
        match outcome {
            AccountChange::Done => Ok(()),
            AccountChange::NoSuchUser => Err(ServiceError::NotFound("user")),
            AccountChange::LastAdmin => Err(crate::domain::DomainError::from(
                crate::domain::RuleError::new(format!(
                    "cannot {what} the last admin: make another user admin first"
                )),
            )
            .into()),
        }
    }

    /// Create the first admin from the environment, unless any user exists. Returns whether it did.
    pub async fn ensure_first_admin(&self, name: &str, password: &str) -> ServiceResult<bool> {
        if self.store.count_users().await? > 0 {
            return Ok(false);
        }
        self.add_user(name, password, Role::Admin, "environment")
            .await?;
        Ok(true)
    }

    /// The user if the password is right; `None` otherwise (no hint which part was wrong).
    pub async fn verify_user(&self, name: &str, password: &str) -> ServiceResult<Option<User>> {
        let found = self.store.user_by_name(name.trim()).await?;
        // Hash even for unknown names so the answer takes as long either way.
        let (user, hash) = match found {
            Some((user, hash)) => (Some(user), hash),
            None => (None, DUMMY_HASH.clone()),
        };
        let password = password.to_owned();
        let _slot = self.hashing_slot(SIGN_IN_WAIT).await?;
        self.password_checks.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("herald_password_checks_total").increment(1);
        let ok = tokio::task::spawn_blocking(move || {
            password_auth::verify_password(password, &hash).is_ok()
        })
        .await
        .unwrap_or(false);
        Ok(user.filter(|_| ok))
    }

    /// A password-hashing slot, waiting at most `wait` for one.
    async fn hashing_slot(
        &self,
        wait: std::time::Duration,
    ) -> ServiceResult<tokio::sync::OwnedSemaphorePermit> {
        match tokio::time::timeout(wait, self.hashing.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(ServiceError::Busy(
                "Herald is checking many sign-ins at once; try again in a moment",
            )),
        }
    }

    /// How many passwords sign-ins have checked.
    pub fn password_checks(&self) -> u64 {
        self.password_checks.load(Ordering::Relaxed)
    }

    /// Open a session for a user who just proved who they are. A new random id each time, so a
    /// session id planted before login is worthless after it.
    pub async fn open_session(&self, user: User) -> ServiceResult<NewSession> {
        let cookie = random_hex()?;
        let csrf = random_hex()?;
        let now = self.now();
        self.store
            .insert_session(
                &hash_token(&cookie),
                user.id,
                &csrf,
                now,
                now + SESSION_LIFETIME,
            )
            .await?;
        self.store.delete_expired_sessions(now).await?;
        Ok(NewSession {
            cookie: crate::config::Secret::new(cookie),
            csrf,
            user,
        })
    }

    /// The user and CSRF token of a live session.
    pub async fn session(&self, cookie: &str) -> ServiceResult<Option<(User, String)>> {
        if cookie.len() != 64 {
            return Ok(None);
        }
        Ok(self.store.session(&hash_token(cookie), self.now()).await?)
    }

    pub async fn close_session(&self, cookie: &str) -> ServiceResult<()> {
        Ok(self.store.delete_session(&hash_token(cookie)).await?)
    }

    pub async fn users(&self) -> ServiceResult<Vec<User>> {
        Ok(self.store.list_users().await?)
    }

    /// The audit log filtered by who and by what (see [`crate::store::Store::list_audit`]).
    pub async fn audit_filtered(
        &self,
        limit: i64,
        actor: Option<&str>,
        target: Option<&str>,
    ) -> ServiceResult<Vec<AuditEntry>> {
        Ok(self.store.list_audit(limit, actor, target).await?)
    }

    pub async fn audit_log(&self, limit: i64) -> ServiceResult<Vec<AuditEntry>> {
        Ok(self.store.list_audit(limit, None, None).await?)
    }
}

/// How long a sign-in waits for a hashing slot before it is told to try again (429).
const SIGN_IN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A real argon2id hash (with the same parameters as users'), verified against for unknown names.
static DUMMY_HASH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| password_auth::generate_hash("no user has this password"));
