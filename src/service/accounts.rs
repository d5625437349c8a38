//! Users, API tokens and the audit log.

use std::sync::atomic::Ordering;

use sha2::{Digest, Sha256};

use super::{Service, ServiceError, ServiceResult};
use crate::domain::{
    Actor, ApiToken, AuditEntry, Role, User, ValidationError, validate_password,
    validate_token_name, validate_user_name,
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

fn new_secret() -> ServiceResult<String> {
    Ok(format!("{TOKEN_PREFIX}{}", crate::ids::random_hex(64)))
}

/// People are admins or maintainers; `reporter` is for API tokens.
fn user_role(role: Role) -> ServiceResult<()> {
    if role == Role::Reporter {
        return Err(ValidationError::new(
            "role",
            "a user is an admin or a maintainer; reporter is for API tokens",
        )
        .into());
    }
    Ok(())
}

/// What a password check decided.
#[derive(Debug)]
pub enum PasswordCheck {
    /// The password is right; `device` is a device cookie for the browser to keep.
    Right {
        user: User,
        device: String,
    },
    Wrong,
    /// Too many failed attempts: try again after this long (nothing was checked).
    Wait(std::time::Duration),
}

/// A device cookie's MAC: HMAC-SHA256 keyed by the account's password hash.
fn device_mac(password_hash: &str, user_id: i64, nonce: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac =
        Hmac::<Sha256>::new_from_slice(password_hash.as_bytes()).expect("HMAC takes any key");
    mac.update(format!("herald device\n{user_id}\n{nonce}").as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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
    /// While no user exists, the code that lets the first visitor of `/admin/setup` become
    /// admin: short enough to type from a log line, 80 random bits, and the same on every
    /// instance on this database (the first to start makes it). `None` once someone can sign
    /// in.
    pub async fn setup_code(&self) -> ServiceResult<Option<crate::config::Secret>> {
        if self.store.count_users().await? > 0 {
            self.store.clear_setup_code().await?;
            return Ok(None);
        }
        let code = self
            .store
            .setup_code(&crate::ids::random_hex(20), self.now())
            .await?;
        Ok(Some(crate::config::Secret::new(code)))
    }

    /// Make the first admin with the setup code (already checked against the one this
    /// instance printed). The code is spent first, so of two people submitting it at once,
    /// on one instance or two, one becomes admin and the other gets `None`; a refused name
    /// or password gives the code back for the next try.
    pub async fn add_first_admin(
        &self,
        code: &crate::config::Secret,
        name: &str,
        password: &str,
    ) -> ServiceResult<Option<User>> {
        if !self.store.take_setup_code(code.expose()).await? {
            return Ok(None);
        }
        match self
            .acting(Actor::Setup)
            .add_user(name, password, Role::Admin)
            .await
        {
            Ok(user) => Ok(Some(user)),
            Err(e) => {
                self.store.setup_code(code.expose(), self.now()).await?;
                Err(e)
            }
        }
    }

    /// Create an API token for automation; `actor` is recorded in the audit log.
    pub async fn create_token(&self, name: &str, role: Role) -> ServiceResult<NewToken> {
        self.create_token_expiring(name, role, None).await
    }

    /// A token that is refused after `lifetime` (`None`: never).
    pub async fn create_token_expiring(
        &self,
        name: &str,
        role: Role,
        lifetime: Option<jiff::SignedDuration>,
    ) -> ServiceResult<NewToken> {
        self.require(Role::Admin)?;
        let actor = &self.actor.to_string();
        let name = validate_token_name(name)?;
        let now = self.now();
        let expires_at = match lifetime {
            None => None,
            Some(d) if d.is_positive() && d <= jiff::SignedDuration::from_hours(24 * 3650) => {
                Some(now + d)
            }
            Some(_) => {
                return Err(ValidationError::new(
                    "expires",
                    "give a lifetime between a second and ten years, e.g. 90d",
                )
                .into());
            }
        };
        let secret = new_secret()?;
        let prefix = &secret[..TOKEN_PREFIX.len() + 6];
        let token = self
            .store
            .insert_token(&crate::store::TokenRecord {
                name: &name,
                role,
                token_hash: &hash_token(&secret),
                prefix,
                created_by: actor,
                created_at: now,
                expires_at,
            })
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
        let now = self.now();
        if !token.is_live(now) {
            return Ok(None);
        }
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
        self.require(Role::Admin)?;
        Ok(self.store.list_tokens().await?)
    }

    pub async fn revoke_token(&self, id: i64) -> ServiceResult<()> {
        self.require(Role::Admin)?;
        let actor = &self.actor.to_string();
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
    pub async fn add_user(&self, name: &str, password: &str, role: Role) -> ServiceResult<User> {
        self.require(Role::Admin)?;
        user_role(role)?;
        let actor = &self.actor.to_string();
        let name = validate_user_name(name)?;
        validate_password(password)?;
        let password = password.to_owned();
        let hash = self
            .hashing
            .run(ACCOUNT_WAIT, move || hash_password(&password))
            .await?;
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
        // Someone can sign in now: the first-run code is spent on every instance. A code left
        // behind is harmless (setup refuses once a user exists), so this does not fail the add.
        if let Err(e) = self.store.clear_setup_code().await {
            tracing::warn!(error = %e, "could not forget the setup code");
        }
        Ok(user)
    }

    /// Remove a user; their sessions end with them. The last admin stays.
    pub async fn remove_user(&self, name: &str) -> ServiceResult<()> {
        self.require(Role::Admin)?;
        let actor = &self.actor.to_string();
        let outcome = self.store.delete_user(name.trim()).await?;
        self.account_outcome(outcome, "remove")?;
        // Tokens do not outlive the user who made them.
        let creator = Actor::User {
            name: name.trim().to_owned(),
            role: Role::Maintainer,
        }
        .to_string();
        let revoked = self.store.revoke_tokens_by(&creator, self.now()).await?;
        self.store
            .audit(actor, "user.remove", Some(name.trim()), self.now())
            .await?;
        if revoked > 0 {
            self.store
                .audit(
                    actor,
                    "token.revoke",
                    Some(&format!("{revoked} made by {}", name.trim())),
                    self.now(),
                )
                .await?;
        }
        Ok(())
    }

    /// A new password; the user's sessions end (signed in elsewhere with the old one).
    /// An admin may set anyone's; a user their own.
    pub async fn set_password(&self, name: &str, password: &str) -> ServiceResult<()> {
        let own = matches!(&self.actor, Actor::User { name: me, .. } if me == name.trim());
        if !own {
            self.require(Role::Admin)?;
        }
        let actor = &self.actor.to_string();
        validate_password(password)?;
        let password = password.to_owned();
        let hash = self
            .hashing
            .run(ACCOUNT_WAIT, move || hash_password(&password))
            .await?;
        let outcome = self.store.set_password_hash(name.trim(), &hash).await?;
        self.account_outcome(outcome, "change the password of")?;
        self.store
            .audit(actor, "user.passwd", Some(name.trim()), self.now())
            .await?;
        Ok(())
    }

    /// A new role; the user's sessions end. The last admin stays an admin.
    pub async fn set_role(&self, name: &str, role: Role) -> ServiceResult<()> {
        self.require(Role::Admin)?;
        user_role(role)?;
        let actor = &self.actor.to_string();
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
        self.acting(Actor::Environment)
            .add_user(name, password, Role::Admin)
            .await?;
        Ok(true)
    }

    /// The user if the password is right; `None` otherwise (no hint which part was wrong).
    pub async fn verify_user(&self, name: &str, password: &str) -> ServiceResult<Option<User>> {
        let found = self.store.user_by_name(name.trim()).await?;
        // Hash even for unknown names so the answer takes as long either way.
        let (user, hash) = match found {
            Some((user, hash)) => (Some(user), Some(hash)),
            None => (None, None),
        };
        let password = password.to_owned();
        let checks = self.password_checks.clone();
        let ok = self
            .hashing
            .run(SIGN_IN_WAIT, move || {
                checks.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("herald_password_checks_total").increment(1);
                let hash = hash.as_deref().unwrap_or(&DUMMY_HASH);
                password_auth::verify_password(password, hash).is_ok()
            })
            .await?;
        Ok(user.filter(|_| ok))
    }

    /// Check `name`'s password as a sign-in does, wherever a password is asked for (the
    /// sign-in form, the current password on the password page): through the sign-in throttle
    /// and the hashing pool, so neither is a way around the other. `device_cookie` is the
    /// browser's device cookie, if any; a right password answers a new one for the browser to
    /// keep (see [`crate::domain::SignInRule::admit`]).
    pub async fn check_password(
        &self,
        name: &str,
        password: &str,
        ip: Option<std::net::IpAddr>,
        device_cookie: Option<&str>,
    ) -> ServiceResult<PasswordCheck> {
        use crate::domain::Scope;
        let device = match device_cookie {
            Some(cookie) => self.device_nonce(name, cookie).await?,
            None => None,
        };
        let device = device.as_deref();
        let throttle = self.sign_ins();
        if let Err(wait) = throttle.begin(Scope::Login, name, ip, device).await? {
            return Ok(PasswordCheck::Wait(wait));
        }
        match self.verify_user(name, password).await {
            Err(e) => {
                // Busy (no hashing slot within the wait) or the database: nothing was checked.
                throttle.cancel(Scope::Login, name, ip, device).await;
                Err(e)
            }
            Ok(None) => Ok(PasswordCheck::Wrong),
            Ok(Some(user)) => {
                throttle.succeeded(Scope::Login, name, ip, device).await;
                let device = self.device_cookie(&user.name).await?;
                Ok(PasswordCheck::Right { user, device })
            }
        }
    }

    /// A device cookie for `name`'s account: a new nonce and its MAC, keyed by the account's
    /// password hash (so a new password retires every device cookie, and only the server can
    /// make one).
    async fn device_cookie(&self, name: &str) -> ServiceResult<String> {
        let nonce = crate::ids::random_hex(32);
        Ok(match self.store.user_by_name(name).await? {
            Some((user, hash)) => format!("{nonce}.{}", device_mac(&hash, user.id, &nonce)),
            None => String::new(),
        })
    }

    /// The nonce of `cookie` if it is a device cookie `name`'s account issued.
    async fn device_nonce(&self, name: &str, cookie: &str) -> ServiceResult<Option<String>> {
        let Some((nonce, mac)) = cookie.split_once('.') else {
            return Ok(None);
        };
        if nonce.len() != 32 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let Some((user, hash)) = self.store.user_by_name(name.trim()).await? else {
            return Ok(None);
        };
        let expected = device_mac(&hash, user.id, nonce);
        let same: bool = subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), mac.as_bytes()).into();
        Ok(same.then(|| nonce.to_owned()))
    }

    /// How many passwords sign-ins have checked.
    pub fn password_checks(&self) -> u64 {
        self.password_checks.load(Ordering::Relaxed)
    }

    /// Open a session for a user who just proved who they are. A new random id each time, so a
    /// session id planted before login is worthless after it.
    pub async fn open_session(&self, user: User) -> ServiceResult<NewSession> {
        let cookie = crate::ids::random_hex(64);
        let csrf = crate::ids::random_hex(64);
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
        self.require(Role::Admin)?;
        Ok(self.store.list_users().await?)
    }

    /// The audit log filtered by who and by what (see [`crate::store::Store::list_audit`]).
    pub async fn audit_filtered(
        &self,
        limit: i64,
        actor: Option<&str>,
        target: Option<&str>,
    ) -> ServiceResult<Vec<AuditEntry>> {
        self.require(Role::Admin)?;
        Ok(self.store.list_audit(limit, actor, target).await?)
    }

    pub async fn audit_log(&self, limit: i64) -> ServiceResult<Vec<AuditEntry>> {
        self.require(Role::Admin)?;
        Ok(self.store.list_audit(limit, None, None).await?)
    }
}

/// argon2id with 7 MiB and 5 passes, one lane: the last of OWASP's equivalent settings
/// (19 MiB × 2, 12 MiB × 3, 9 MiB × 4, 7 MiB × 5), the one that holds the least memory per
/// hash, so a burst of sign-ins or the first start's admin costs 7 MiB a thread, not 19.
/// Hashes made with other parameters (earlier versions used 19 MiB × 2) still verify: the
/// parameters are in each hash.
const ARGON2_MEMORY_KIB: u32 = 7 * 1024;
const ARGON2_PASSES: u32 = 5;

/// A PHC string (`$argon2id$v=19$m=7168,t=5,p=1$…`) for `password`, with a fresh salt.
fn hash_password(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(ARGON2_MEMORY_KIB, ARGON2_PASSES, 1, None)
        .expect("constant argon2 parameters are valid");
    let hasher = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(&crate::ids::random_bytes::<16>())
        .expect("16 bytes make a valid salt");
    hasher
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashes any password with valid parameters")
        .to_string()
}

/// How long a sign-in waits for a hashing slot before it is told to try again (429).
const SIGN_IN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// How long creating a user or setting a password waits for one (an admin at a form).
const ACCOUNT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A real argon2id hash (with the same parameters as users'), verified against for unknown
/// names. Computed on a hashing thread the first time it is needed, like any other hash.
static DUMMY_HASH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| hash_password("no user has this password"));

type HashJob = Box<dyn FnOnce() + Send>;

/// Callers that may wait for a hashing slot, per hashing thread.
const MAX_WAITING: usize = 32;

/// One caller counted in [`Hashing::waiting`] for as long as it lives.
struct Waiting<'a> {
    count: &'a std::sync::atomic::AtomicUsize,
    /// How many were waiting already when this one came.
    ahead: usize,
}

impl<'a> Waiting<'a> {
    fn enter(count: &'a std::sync::atomic::AtomicUsize) -> Self {
        let ahead = count.fetch_add(1, Ordering::Relaxed);
        Self { count, ahead }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Password hashing (argon2id: 7 MiB and tens of milliseconds each) on threads of its
/// own, one fewer than there are cores, started on first use and ended with the service.
///
/// A slot is taken before a job is queued, so at most one hash per thread is ever in memory
/// and a burst waits briefly or is refused (`Busy`), never piles up. Own threads rather than
/// tokio's blocking pool: that pool runs each job on whichever of up to 512 threads is free,
/// and every one of them kept its 19 MiB in its allocator cache afterwards (a burst of 20
/// sign-ins measured 121 MiB); here the same few threads reuse the same memory.
pub(crate) struct Hashing {
    slots: std::sync::Arc<tokio::sync::Semaphore>,
    /// Callers waiting for a slot now. Past [`MAX_WAITING`] per thread a caller is refused at
    /// once: those would time out anyway (a thread gets through about 80 hashes in the
    /// 2 s a sign-in waits), and each waiting request holds its connection's memory.
    waiting: std::sync::atomic::AtomicUsize,
    threads: usize,
    jobs: std::sync::OnceLock<std::sync::mpsc::SyncSender<HashJob>>,
}

impl Hashing {
    pub(crate) fn new() -> Self {
        // One core fewer than the machine has (at least one): a burst of sign-ins leaves a
        // core to the status page.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = cores.saturating_sub(1).max(1);
        Self {
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(threads)),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            threads,
            jobs: std::sync::OnceLock::new(),
        }
    }

    fn queue(&self) -> &std::sync::mpsc::SyncSender<HashJob> {
        self.jobs.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<HashJob>(self.threads);
            let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
            let mut started = 0;
            for i in 0..self.threads {
                let rx = rx.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("herald-hash-{i}"))
                    .spawn(move || {
                        loop {
                            // The lock is held only while waiting for the next job.
                            let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                            let Ok(job) = job else { break };
                            // A panicking job drops its answer channel: the caller gets an
                            // error, and the thread goes on.
                            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                        }
                    });
                match spawned {
                    Ok(_) => started += 1,
                    Err(e) => tracing::error!(error = %e, "cannot start a password-hashing thread"),
                }
            }
            // No slot for a thread that is not there (with none, every hash is refused as busy
            // rather than queued for nobody).
            self.slots.forget_permits(self.threads - started);
            tx
        })
    }

    /// Run `f` on a hashing thread, waiting at most `wait` for a free one.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        wait: std::time::Duration,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> ServiceResult<T> {
        let busy = || {
            ServiceError::Busy("Herald is checking many sign-ins at once; try again in a moment")
        };
        let permit = {
            // Counted down on drop: a caller whose client went away stops waiting too.
            let waiting = Waiting::enter(&self.waiting);
            if waiting.ahead >= MAX_WAITING * self.threads {
                None
            } else {
                tokio::time::timeout(wait, self.slots.clone().acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
        };
        let permit = permit.ok_or_else(busy)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: HashJob = Box::new(move || {
            let _ = tx.send(f());
            drop(permit);
        });
        // Never full: a job is queued only with one of `threads` slots held.
        self.queue().try_send(job).map_err(|_| busy())?;
        rx.await.map_err(|_| {
            ServiceError::Store(StoreError::Corrupt("password hashing failed".to_owned()))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    /// Every slot taken by a job that runs until `release` is sent to.
    async fn fill(hashing: &Arc<Hashing>) -> Vec<std::sync::mpsc::Sender<()>> {
        let mut releases = Vec::new();
        for _ in 0..hashing.threads {
            let (release, hold) = std::sync::mpsc::channel::<()>();
            let (started, running) = tokio::sync::oneshot::channel();
            let h = hashing.clone();
            tokio::spawn(async move {
                h.run(Duration::from_secs(1), move || {
                    let _ = started.send(());
                    let _ = hold.recv();
                })
                .await
            });
            running.await.unwrap();
            releases.push(release);
        }
        releases
    }

    #[test]
    fn hashes_use_the_small_memory_setting_and_older_hashes_still_verify() {
        let hash = hash_password("correct horse battery staple");
        assert!(hash.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{hash}");
        assert!(password_auth::verify_password("correct horse battery staple", &hash).is_ok());
        assert!(password_auth::verify_password("correct horse battery stapler", &hash).is_err());
        assert_ne!(
            hash,
            hash_password("correct horse battery staple"),
            "salted"
        );
        // Made by earlier versions (password-auth's defaults, 19 MiB × 2).
        let old = password_auth::generate_hash("an older password");
        assert!(old.contains("$m=19456,t=2,p=1$"), "{old}");
        assert!(password_auth::verify_password("an older password", &old).is_ok());
    }

    async fn until_waiting(hashing: &Hashing, n: usize) {
        while hashing.waiting.load(Ordering::Relaxed) != n {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_caller_that_goes_away_stops_counting_as_waiting() {
        let hashing = Arc::new(Hashing::new());
        let releases = fill(&hashing).await;
        let h = hashing.clone();
        let gone = tokio::spawn(async move { h.run(Duration::from_secs(3600), || ()).await });
        until_waiting(&hashing, 1).await;
        gone.abort();
        let _ = gone.await;
        assert_eq!(hashing.waiting.load(Ordering::Relaxed), 0);
        drop(releases);
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_cap_a_caller_is_refused_without_waiting() {
        let hashing = Arc::new(Hashing::new());
        let releases = fill(&hashing).await;
        let cap = MAX_WAITING * hashing.threads;
        let mut waiters = Vec::new();
        for _ in 0..cap {
            let h = hashing.clone();
            waiters.push(tokio::spawn(async move {
                h.run(Duration::from_secs(3600), || ()).await
            }));
        }
        until_waiting(&hashing, cap).await;
        // The clock is paused: a caller that waited would see an hour pass.
        let started = tokio::time::Instant::now();
        let refused = hashing.run(Duration::from_secs(3600), || ()).await;
        assert!(matches!(refused, Err(ServiceError::Busy(_))));
        assert_eq!(started.elapsed(), Duration::ZERO);
        drop(releases);
        for w in waiters {
            // Served, or timed out once the paused clock jumps ahead: either way, gone.
            let _ = w.await.unwrap();
        }
        assert_eq!(hashing.waiting.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_panicking_job_fails_alone() {
        let hashing = Hashing::new();
        let failed = hashing
            .run(Duration::from_secs(5), || -> u8 {
                panic!("a hash that cannot be computed")
            })
            .await;
        assert!(failed.is_err());
        for _ in 0..hashing.threads + 1 {
            assert_eq!(hashing.run(Duration::from_secs(5), || 7).await.unwrap(), 7);
        }
    }
}
