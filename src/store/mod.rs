//! Storage: the [`Store`] trait, its errors, and [`SqlStore`], which implements it on SQLite
//! and PostgreSQL (`sql/`).

mod sql;

use async_trait::async_trait;
use jiff::Timestamp;

use crate::domain::{
    ApiToken, AuditEntry, Channel, ChannelSource, Component, Delivery, Maintenance, NewAudit,
    NewChannel, NewComponent, NewDelivery, NewMaintenance, NewRollout, NewRolloutUpdate, NewUpdate,
    Role, Rollout, RolloutState, RolloutUpdate, Subject, Thread, Update, User,
};

pub(crate) use sql::outbox::HELD_MS;
pub use sql::{Backend, CopyOptions, CopyReport, SqlStore};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Someone else committed a change to the same window first; reload and try again.
    #[error("the window was changed concurrently")]
    Conflict,
    /// A uniqueness rule was broken (e.g. a component slug already taken).
    #[error("{0} already exists")]
    Duplicate(&'static str),
    #[error("not found")]
    NotFound,
    /// An operation that would do harm as asked (overwrite a file, mix two databases' data).
    #[error("{0}")]
    Refused(String),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    /// The database could not be reached or is not taking work right now (no connection within
    /// the pool's wait, a connection lost, a server shutting down or starting, SQLite's lock
    /// held past the busy timeout): worth trying again shortly, unlike a broken rule.
    pub fn is_unavailable(&self) -> bool {
        let Self::Database(e) = self else {
            return false;
        };
        match e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                // PostgreSQL: connection exceptions (08…), admin/crash shutdown and "cannot
                // connect now" (57P01–57P03). SQLite: SQLITE_BUSY and its extended codes.
                code.starts_with("08")
                    || matches!(&*code, "57P01" | "57P02" | "57P03" | "5" | "261" | "517")
            }),
            _ => false,
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A window as listed in history: no steps or components loaded, counts instead.
#[derive(Debug, Clone)]
pub struct MaintenanceSummary {
    pub id: i64,
    pub title: String,
    pub state: crate::domain::WindowState,
    pub impact: crate::domain::Impact,
    pub starts_at: Option<Timestamp>,
    pub ends_at: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub steps_total: i64,
    pub steps_done: i64,
}

/// One page of history.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: i64,
}

/// A rollout as listed in history: no targets loaded, counts instead.
#[derive(Debug, Clone)]
pub struct RolloutSummary {
    pub id: i64,
    pub title: String,
    pub state: RolloutState,
    pub from_version: Option<String>,
    pub to_version: String,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub targets_total: i64,
    pub targets_healthy: i64,
}

/// What an account change came to.
/// A new API token as stored: never its secret, only the secret's hash.
#[derive(Debug, Clone, Copy)]
pub struct TokenRecord<'a> {
    pub name: &'a str,
    pub role: Role,
    pub token_hash: &'a str,
    pub prefix: &'a str,
    pub created_by: &'a str,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
}

/// One counter of the sign-in throttle, as [`Accounts::count_attempts`] hands it to a rule.
pub use crate::domain::Attempts;

/// Decides on a sign-in attempt from its counters: changes them and accepts, or says how long
/// to wait (then nothing is written).
pub type AttemptRule<'a> =
    dyn Fn(&mut [Attempts]) -> Result<(), std::time::Duration> + Send + Sync + 'a;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountChange {
    Done,
    NoSuchUser,
    /// Refused: the user is the last admin.
    LastAdmin,
}

/// What a committed change touched, as told to the other instances on the same database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Something public pages show (a window, a rollout, a component).
    Public,
    /// Something pages show up to a second late (drain counts, report times).
    Minor,
    /// The outbox has news (deliveries, channels).
    Outbox,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Minor => "minor",
            Self::Outbox => "outbox",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "public" => Self::Public,
            "minor" => Self::Minor,
            "outbox" => Self::Outbox,
            _ => return None,
        })
    }
}

/// Changes published by the other instances on one database. `None` says notices
/// were interrupted (a lost connection): anything may have changed meanwhile.
pub type ChangeFeed = tokio::sync::mpsc::Receiver<Option<Change>>;

/// Everything Herald keeps. Implementations make each method atomic.
#[async_trait]
pub trait Store:
    Windows
    + Accounts
    + Outbox
    + Rollouts
    + Incidents
    + Subscribers
    + MailQueue
    + Idempotency
    + Send
    + Sync
    + 'static
{
    /// Apply pending migrations.
    async fn migrate(&self) -> StoreResult<()>;
    /// Cheap round trip used by readiness checks.
    async fn ping(&self) -> StoreResult<()>;
    /// Tell the other instances on this database that `change` was committed. Nothing to do
    /// where one instance is all there can be (SQLite).
    async fn publish(&self, change: Change) -> StoreResult<()>;
    /// Follow what [`Store::publish`] tells from the other instances; `None` where only this
    /// process changes the database. The feed ends when the receiver is dropped.
    fn changes(&self) -> Option<ChangeFeed>;
    /// Connections this process holds to the database: (busy, idle).
    fn pool_use(&self) -> (u32, u32) {
        (0, 0)
    }
}

/// Components and maintenance windows with their steps and timelines.
#[async_trait]
pub trait Windows: Send + Sync {
    async fn create_component(&self, new: &NewComponent, now: Timestamp) -> StoreResult<Component>;
    async fn list_components(&self) -> StoreResult<Vec<Component>>;
    /// Remove a component no window names: `Ok(0)` when removed, else how many windows name
    /// it (and nothing is removed: their history keeps it). `NotFound` when there is none.
    async fn delete_component(&self, slug: &str) -> StoreResult<i64>;

    /// Insert a window (as a draft) with its steps and component links, and the audit entry
    /// `audit` makes of its id, in one transaction.
    async fn create_maintenance(
        &self,
        new: &NewMaintenance,
        now: Timestamp,
        audit: &Audit<'_>,
    ) -> StoreResult<Maintenance>;
    async fn get_maintenance(&self, id: i64) -> StoreResult<Option<Maintenance>>;
    /// Write back a changed window with its steps and components, plus what `commit` holds
    /// (the updates its change produced, the deliveries announcing them, the audit entry), in
    /// one transaction, if its version is still `m.version`. Returns the new version.
    async fn save_maintenance(
        &self,
        m: &Maintenance,
        commit: &Commit<'_, NewUpdate>,
    ) -> StoreResult<i64>;
    async fn count_maintenances(&self) -> StoreResult<i64>;

    /// Public windows that are planned, scheduled or in progress, with steps and components.
    async fn open_public_maintenances(&self) -> StoreResult<Vec<Maintenance>>;
    /// Every window not yet finished, drafts included (for maintainers).
    async fn open_maintenances(&self) -> StoreResult<Vec<Maintenance>>;
    /// Windows newest first (by id), `limit` from `offset`: in `state` if given, and scheduled
    /// to overlap `[from, until)` if either is given (an undated window overlaps no time).
    async fn list_maintenances(
        &self,
        state: Option<crate::domain::WindowState>,
        from: Option<Timestamp>,
        until: Option<Timestamp>,
        offset: i64,
        limit: i64,
    ) -> StoreResult<Vec<Maintenance>>;
    /// The `limit` public windows changed most recently, open or finished, newest change
    /// first, with steps and components (feeds and calendars).
    async fn recent_public_maintenances(&self, limit: i64) -> StoreResult<Vec<Maintenance>>;
    /// Public windows that were in progress at some time in `[from, to)`: the 90-day strips.
    async fn public_windows_between(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<Vec<Maintenance>>;
    /// Public finished windows, newest first.
    async fn finished_maintenances(
        &self,
        offset: i64,
        limit: i64,
    ) -> StoreResult<Page<MaintenanceSummary>>;
    /// A window's timeline, newest first; `limit` caps how many.
    async fn list_updates(
        &self,
        maintenance_id: i64,
        limit: Option<i64>,
    ) -> StoreResult<Vec<Update>>;

    /// Change a component's name, description and group.
    async fn update_component(&self, c: &Component) -> StoreResult<()>;
    /// Swap the places of two components in the order.
    async fn swap_components(&self, a: &Component, b: &Component) -> StoreResult<()>;
}

/// API tokens, users, web sessions, sign-in state shared by instances, and the audit log.
#[async_trait]
pub trait Accounts: Send + Sync {
    /// Store a new token by the hash of its secret.
    async fn insert_token(&self, token: &TokenRecord<'_>) -> StoreResult<ApiToken>;
    /// The token whose secret hashes to `token_hash`, revoked or not.
    async fn token_by_hash(&self, token_hash: &str) -> StoreResult<Option<ApiToken>>;
    async fn list_tokens(&self) -> StoreResult<Vec<ApiToken>>;
    /// Revoke; false if there is no such token or it was already revoked.
    async fn revoke_token(&self, id: i64, now: Timestamp) -> StoreResult<bool>;
    /// Revoke every live token `created_by` made; how many.
    async fn revoke_tokens_by(&self, created_by: &str, now: Timestamp) -> StoreResult<u64>;
    async fn touch_token(&self, id: i64, now: Timestamp) -> StoreResult<()>;

    async fn insert_user(
        &self,
        name: &str,
        password_hash: &str,
        role: Role,
        now: Timestamp,
    ) -> StoreResult<User>;
    async fn count_users(&self) -> StoreResult<i64>;
    /// A user with its password hash.
    async fn user_by_name(&self, name: &str) -> StoreResult<Option<(User, String)>>;

    async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: Option<&str>,
        now: Timestamp,
    ) -> StoreResult<()>;
    /// The newest entries, optionally only by `actor`, and only about `target` ("window 3"
    /// also matches "window 3 step 2", "rollout 4" also "rollout 4: fishjam-2").
    async fn list_audit(
        &self,
        limit: i64,
        actor: Option<&str>,
        target: Option<&str>,
    ) -> StoreResult<Vec<AuditEntry>>;

    async fn insert_session(
        &self,
        id_hash: &str,
        user_id: i64,
        csrf: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> StoreResult<()>;
    /// The live session's user and CSRF token.
    async fn session(&self, id_hash: &str, now: Timestamp) -> StoreResult<Option<(User, String)>>;
    async fn delete_session(&self, id_hash: &str) -> StoreResult<()>;
    async fn delete_expired_sessions(&self, now: Timestamp) -> StoreResult<u64>;

    async fn list_users(&self) -> StoreResult<Vec<User>>;
    /// Remove a user (and so their sessions), unless that would leave no admin.
    async fn delete_user(&self, name: &str) -> StoreResult<AccountChange>;
    /// A new password hash; the user's sessions end.
    async fn set_password_hash(&self, name: &str, hash: &str) -> StoreResult<AccountChange>;
    /// A new role, unless that would leave no admin; the user's sessions end.
    async fn set_role(&self, name: &str, role: Role) -> StoreResult<AccountChange>;

    /// The first-run setup code: the one stored, or `candidate` (stored now) if there is none,
    /// so instances starting together agree on one.
    async fn setup_code(&self, candidate: &str, now: Timestamp) -> StoreResult<String>;
    /// Forget the setup code (someone can sign in).
    async fn clear_setup_code(&self) -> StoreResult<()>;
    /// Spend the setup code `code` if it is still the stored one: true for exactly one of any
    /// number of callers on any instance.
    async fn take_setup_code(&self, code: &str) -> StoreResult<bool>;
    /// Apply `rule` to the sign-in counters under `keys` as one step no other caller, on any
    /// instance, can interleave with: it sees them in the order of `keys` as stored (a new
    /// one at zero since `now_ms`) and only what it accepts is written.
    async fn count_attempts(
        &self,
        keys: &[String],
        now_ms: i64,
        rule: &AttemptRule<'_>,
    ) -> StoreResult<Result<(), std::time::Duration>>;
    /// Drop the counters started before `before_ms`, passing over any being counted.
    async fn forget_attempts(&self, before_ms: i64) -> StoreResult<u64>;
}

/// Channels and the delivery outbox. Workers claim a delivery with a short lease, send it
/// outside any transaction, then record the outcome.
#[async_trait]
pub trait Outbox: Send + Sync {
    async fn list_channels(&self) -> StoreResult<Vec<Channel>>;
    async fn get_channel(&self, id: i64) -> StoreResult<Option<Channel>>;
    async fn insert_channel(
        &self,
        new: &NewChannel,
        source: ChannelSource,
        now: Timestamp,
    ) -> StoreResult<Channel>;
    /// Change a channel; an empty secret keeps the stored one. Dropping the secret also drops
    /// a Bluesky session made with it.
    async fn update_channel(&self, id: i64, new: &NewChannel) -> StoreResult<Channel>;
    async fn delete_channel(&self, id: i64) -> StoreResult<bool>;
    /// A Bluesky channel's saved session (JSON).
    async fn channel_session(&self, id: i64) -> StoreResult<Option<String>>;
    async fn set_channel_session(&self, id: i64, session: Option<&str>) -> StoreResult<()>;

    /// The outcome methods below take the claim's attempt number and change nothing if the
    /// delivery has been claimed again since (a lapsed lease): only the latest claim counts.
    ///
    /// Take the channel's next due delivery whose earlier deliveries (same window) are all
    /// sent or skipped, count an attempt and lease it to instance `owner` until
    /// `lease_until_ms`. Of instances claiming at once, each gets a different delivery.
    async fn claim_delivery(
        &self,
        channel_id: i64,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> StoreResult<Option<Delivery>>;
    /// Undo claim `attempt` of a delivery (its lease and the attempt it counted), for a worker
    /// that must not send it after all.
    async fn release_claim(&self, id: i64, attempt: i64) -> StoreResult<()>;
    /// When the channel's next pending delivery falls due (milliseconds), if any.
    async fn next_due_ms(&self, channel_id: i64) -> StoreResult<Option<i64>>;
    /// Record a confirmed delivery and, in the same transaction, the thread it continues.
    async fn delivery_sent(
        &self,
        id: i64,
        attempt: i64,
        remote_id: Option<&str>,
        remote_url: Option<&str>,
        thread: Option<(Subject, &Thread)>,
        now: Timestamp,
    ) -> StoreResult<()>;
    /// Record a message posted within an attempt, before the attempt ends, so a retry after a
    /// crash continues from it instead of posting again.
    async fn delivery_posted(
        &self,
        id: i64,
        attempt: i64,
        remote_id: &str,
        remote_url: Option<&str>,
    ) -> StoreResult<()>;
    /// Try again at `next_attempt_ms`, remembering why this attempt failed.
    async fn delivery_retry(
        &self,
        id: i64,
        attempt: i64,
        error: &str,
        next_attempt_ms: i64,
    ) -> StoreResult<()>;
    async fn delivery_failed(&self, id: i64, attempt: i64, error: &str) -> StoreResult<()>;
    /// Fail pending deliveries whose deadline passed; returns how many.
    async fn expire_deliveries(&self, now: Timestamp) -> StoreResult<Vec<Delivery>>;
    /// A failed delivery back to pending with a new deadline, or a pending one not in flight
    /// tried at once (the admin's Retry).
    async fn retry_delivery(&self, id: i64, now_ms: i64, deadline: Timestamp) -> StoreResult<bool>;
    /// A failed delivery, or a pending one not in flight, given up for good, so the window's
    /// later ones may go (Skip).
    async fn skip_delivery(&self, id: i64, now_ms: i64) -> StoreResult<bool>;
    /// A pending delivery not in flight held until Retry or Skip (Pause), with the reason shown.
    async fn pause_delivery(&self, id: i64, now_ms: i64, reason: &str) -> StoreResult<bool>;
    async fn get_delivery(&self, id: i64) -> StoreResult<Option<Delivery>>;
    /// A window's or a rollout's deliveries on every channel, oldest first.
    async fn list_deliveries(&self, subject: Subject) -> StoreResult<Vec<Delivery>>;
    /// Deliveries not yet sent (pending or failed), oldest first, at most `limit`.
    async fn unsent_deliveries(&self, limit: i64) -> StoreResult<Vec<Delivery>>;
    /// Record a thread as soon as its first message exists (before the delivery that posted
    /// it is confirmed), so later deliveries continue it instead of starting another.
    async fn put_thread(
        &self,
        channel_id: i64,
        subject: Subject,
        thread: &Thread,
        now: Timestamp,
    ) -> StoreResult<()>;
    /// A window's thread, or a rollout's (live Discord message, or own Bluesky thread).
    async fn get_thread(&self, channel_id: i64, subject: Subject) -> StoreResult<Option<Thread>>;
    /// Drop the leases instance `owner` holds: at its start, none of its workers holds one
    /// (they were a previous run's). Other instances' leases stay.
    async fn release_leases(&self, owner: &str) -> StoreResult<u64>;
    /// Take instance id `id` for this run (`token`) unless a run whose heartbeat is at or after
    /// `stale_before_ms` holds it: `None` when taken, else that run's latest heartbeat.
    async fn claim_instance(
        &self,
        id: &str,
        token: &str,
        now_ms: i64,
        stale_before_ms: i64,
    ) -> StoreResult<Option<i64>>;
    /// Keep this run's hold on `id` fresh; false when another run has taken it over.
    async fn instance_heartbeat(&self, id: &str, token: &str, now_ms: i64) -> StoreResult<bool>;
    /// Give `id` up at a clean stop.
    async fn release_instance(&self, id: &str, token: &str) -> StoreResult<()>;
    /// A window's timeline entry (withdrawn or not: a withdrawal's delivery needs it).
    async fn get_update(&self, id: i64) -> StoreResult<Option<Update>>;
    /// Per channel with anything waiting or failed: (channel id, pending, the oldest pending
    /// delivery's creation in ms, failed).
    async fn outbox_backlog(&self) -> StoreResult<Vec<(i64, i64, Option<i64>, i64)>>;
    /// Edit or withdraw a posted update, with the deliveries that carry the correction and
    /// the audit entry, in one transaction. `NotFound` when it is gone or withdrawn.
    async fn correct_update(&self, c: &Correction<'_>) -> StoreResult<()>;
}

/// An update corrected after it went out (see [`Outbox::correct_update`]).
#[derive(Debug, Clone, Copy)]
pub struct Correction<'a> {
    pub update_id: i64,
    /// Withdraw it (else `body` and `note` replace its text).
    pub withdraw: bool,
    pub body: &'a str,
    pub note: Option<&'a str>,
    pub at: Timestamp,
    pub deliveries: &'a [crate::domain::NewCorrection],
    pub audit: &'a NewAudit,
}

/// What a change to an aggregate writes besides the aggregate itself, in its transaction.
#[derive(Debug, Clone, Copy)]
pub struct Commit<'a, U> {
    /// Who made the change (timelines name them).
    pub actor: &'a str,
    /// The timeline entries the change produced.
    pub updates: &'a [U],
    /// The deliveries announcing them.
    pub deliveries: &'a [NewDelivery],
    /// The audit-log entry, for changes a person or a script asked for.
    pub audit: Option<&'a NewAudit>,
}

/// The audit entry for something being created, made once its id is known.
pub type Audit<'a> = dyn Fn(i64) -> NewAudit + Send + Sync + 'a;

/// A request as an `Idempotency-Key` names it: whose key, the key, and what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedRequest {
    /// A hash of the credential the key belongs to (keys of two clients never meet).
    pub scope: String,
    pub key: String,
    /// A hash of the method, path and body.
    pub fingerprint: String,
}

/// The answer stored for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// What [`Idempotency::claim_key`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyClaim {
    /// The key is new (or its earlier use expired, or was abandoned): this caller answers the
    /// request and then stores or releases the answer.
    Claimed,
    /// The same request was answered already: replay this.
    Answered(StoredAnswer),
    /// The same request is being answered right now by another caller.
    InFlight,
    /// The key was used for a different request.
    Mismatch,
}

/// Answers kept for `Idempotency-Key`s, shared by every instance on the database.
#[async_trait]
pub trait Idempotency: Send + Sync {
    /// Claim `request`'s key at `now`. A stored row from before `expired_before` is gone for
    /// good; an unanswered one from before `abandoned_before` belongs to a caller that died
    /// and may be claimed again.
    async fn claim_key(
        &self,
        request: &KeyedRequest,
        now: Timestamp,
        expired_before: Timestamp,
        abandoned_before: Timestamp,
    ) -> StoreResult<KeyClaim>;
    /// Keep the answer to a claimed key.
    async fn answer_key(&self, request: &KeyedRequest, answer: &StoredAnswer) -> StoreResult<()>;
    /// Give a claimed key up unanswered (the answer is not one to replay, such as a 503).
    async fn release_key(&self, request: &KeyedRequest) -> StoreResult<()>;
    /// Forget the keys claimed before `before`; returns how many.
    async fn forget_keys(&self, before: Timestamp) -> StoreResult<u64>;
}

/// Rollouts, their targets and timeline.
#[async_trait]
pub trait Rollouts: Send + Sync {
    /// Insert a rollout (pending, every target pending) and the audit entry `audit` makes of
    /// its id, in one transaction.
    async fn create_rollout(
        &self,
        new: &NewRollout,
        now: Timestamp,
        audit: &Audit<'_>,
    ) -> StoreResult<Rollout>;
    async fn get_rollout(&self, id: i64) -> StoreResult<Option<Rollout>>;
    /// Just the rollout's optimistic-concurrency version.
    async fn rollout_version(&self, id: i64) -> StoreResult<Option<i64>>;
    /// Write back a changed rollout (its row and the targets at `changed`) with what `commit`
    /// holds (the updates its change produced, their deliveries, the audit entry), in one
    /// transaction, if its version is still `r.version`. With `reverse`, also create that
    /// rollout (a rollback) and link the two. Returns the new version and the reverse
    /// rollout's id.
    async fn save_rollout(
        &self,
        r: &Rollout,
        changed: &[usize],
        commit: &Commit<'_, NewRolloutUpdate>,
        reverse: Option<&NewRollout>,
    ) -> StoreResult<(i64, Option<i64>)>;
    /// A report that changed nothing: only the target's last-report time moves (no version
    /// bump, so a steady stream of such reports never conflicts with real changes).
    async fn touch_target(&self, target_id: i64, now: Timestamp) -> StoreResult<()>;
    /// Rollouts newest first, optionally in one state.
    async fn list_rollouts(
        &self,
        state: Option<RolloutState>,
        offset: i64,
        limit: i64,
    ) -> StoreResult<Vec<Rollout>>;
    /// Pending, in progress or paused, oldest first.
    async fn active_rollouts(&self) -> StoreResult<Vec<Rollout>>;
    /// The rollouts linked to a window, oldest first.
    async fn window_rollouts(&self, maintenance_id: i64) -> StoreResult<Vec<Rollout>>;
    /// Finished rollouts (completed, failed, aborted), newest first.
    async fn finished_rollouts(&self, offset: i64, limit: i64)
    -> StoreResult<Page<RolloutSummary>>;
    /// A rollout's timeline, newest first; `limit` caps how many.
    async fn list_rollout_updates(
        &self,
        rollout_id: i64,
        limit: Option<i64>,
    ) -> StoreResult<Vec<RolloutUpdate>>;
    async fn get_rollout_update(&self, id: i64) -> StoreResult<Option<RolloutUpdate>>;
}

/// Which incidents a list holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncidentFilter {
    /// Public and not resolved.
    Open,
    /// Not yet published.
    Drafts,
    Resolved,
    /// Published, open or resolved.
    Public,
    All,
}

impl IncidentFilter {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "public" => Some(Self::Public),
            "open" => Some(Self::Open),
            "draft" | "drafts" => Some(Self::Drafts),
            "resolved" => Some(Self::Resolved),
            "all" => Some(Self::All),
            _ => None,
        }
    }
}

/// An alert group of a monitor and the incident it opened, as last reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertGroup {
    pub source: String,
    pub group_key: String,
    pub incident_id: i64,
    pub firing: bool,
    /// The firing alerts' identities.
    pub alerts: Vec<String>,
    /// What fired, shown to the maintainer who publishes the draft.
    pub detail: String,
    pub changed_at: Timestamp,
    /// For a change to a known group: the group as it was read (firing, alerts, changed at).
    /// The write happens only if it is still so, else [`StoreError::Conflict`] (another
    /// instance changed the group meanwhile).
    pub was: Option<(bool, Vec<String>, Timestamp)>,
}

/// Incidents, their components and timeline, and the alert groups that opened them.
#[async_trait]
pub trait Incidents: Send + Sync {
    /// Insert incident `i` with what `commit` holds (its first updates, their deliveries; the
    /// audit entry `audit` makes of its id) and, for one opened by a monitor, its alert
    /// group, in one transaction. Returns the id.
    async fn create_incident(
        &self,
        i: &crate::domain::Incident,
        commit: &Commit<'_, crate::domain::NewIncidentUpdate>,
        audit: Option<&Audit<'_>>,
        alert: Option<&AlertGroup>,
    ) -> StoreResult<i64>;
    async fn get_incident(&self, id: i64) -> StoreResult<Option<crate::domain::Incident>>;
    /// Write back a changed incident with what `commit` holds and the alert group's new
    /// state, in one transaction, if its version is still `i.version`. Returns the new version.
    async fn save_incident(
        &self,
        i: &crate::domain::Incident,
        commit: &Commit<'_, crate::domain::NewIncidentUpdate>,
        alert: Option<&AlertGroup>,
    ) -> StoreResult<i64>;
    /// Incidents newest first (by start).
    async fn list_incidents(
        &self,
        filter: IncidentFilter,
        offset: i64,
        limit: i64,
    ) -> StoreResult<Page<crate::domain::Incident>>;
    /// Public incidents that were open at some time in `[from, to)`, oldest first, each
    /// naming every component it affected at the worst status it gave it (the 90-day strips).
    async fn public_incidents_between(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<Vec<crate::domain::Incident>>;
    /// The incidents opened from a window or a rollout.
    async fn linked_incidents(&self, subject: Subject)
    -> StoreResult<Vec<crate::domain::Incident>>;
    /// An incident's timeline, newest first; `limit` caps how many.
    async fn list_incident_updates(
        &self,
        incident_id: i64,
        limit: Option<i64>,
    ) -> StoreResult<Vec<crate::domain::IncidentUpdate>>;
    async fn get_incident_update(
        &self,
        id: i64,
    ) -> StoreResult<Option<crate::domain::IncidentUpdate>>;
    async fn alert_group(&self, source: &str, group_key: &str) -> StoreResult<Option<AlertGroup>>;
    /// The alert groups an incident was opened or updated by.
    async fn incident_alerts(&self, incident_id: i64) -> StoreResult<Vec<AlertGroup>>;
}

/// How many subscribers there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriberCounts {
    pub total: i64,
    pub confirmed: i64,
    pub bouncing: i64,
}

/// Email subscribers.
#[async_trait]
pub trait Subscribers: Send + Sync {
    /// Add `rows` (an address already there gets the row's choices; confirmed stays
    /// confirmed) and the audit entry, in one transaction. Returns (added, updated).
    async fn import_subscribers(
        &self,
        rows: &[crate::domain::NewSubscriber],
        now: Timestamp,
        audit: &NewAudit,
    ) -> StoreResult<(u64, u64)>;
    /// Subscribers in id order after `after_id` (a cursor: 0 for the first page).
    async fn list_subscribers(
        &self,
        after_id: i64,
        limit: i64,
    ) -> StoreResult<Vec<crate::domain::Subscriber>>;
    async fn count_subscribers(&self) -> StoreResult<SubscriberCounts>;
    async fn subscriber(&self, id: i64) -> StoreResult<Option<crate::domain::Subscriber>>;
    async fn subscriber_by_key(&self, key: &str) -> StoreResult<Option<crate::domain::Subscriber>>;
    /// Add an unconfirmed subscriber; [`StoreError::Duplicate`] when the key is taken.
    async fn insert_subscriber(
        &self,
        new: &crate::domain::NewSubscriber,
        now: Timestamp,
    ) -> StoreResult<crate::domain::Subscriber>;
    async fn set_subscriber_preferences(
        &self,
        id: i64,
        preferences: &crate::domain::Preferences,
    ) -> StoreResult<()>;
    /// Confirm (once: later calls change nothing). Returns whether it was unconfirmed.
    async fn confirm_subscriber(&self, id: i64, now: Timestamp) -> StoreResult<bool>;
    /// Remove a subscriber and what is queued for them alone; with an audit entry when an
    /// admin did it. Returns whether they were there.
    async fn delete_subscriber(&self, id: i64, audit: Option<&NewAudit>) -> StoreResult<bool>;
    /// Forget unconfirmed subscribers who signed up before `before`. Returns how many.
    async fn expire_unconfirmed(&self, before: Timestamp) -> StoreResult<u64>;
    /// Subscribers whose address contains `text` (an admin looking one up), at most `limit`.
    async fn find_subscribers(
        &self,
        text: &str,
        limit: i64,
    ) -> StoreResult<Vec<crate::domain::Subscriber>>;
}

/// The mail queue: fan-outs of one mail to many subscribers, cut into leased batches.
#[async_trait]
pub trait MailQueue: Send + Sync {
    /// The site secret `name`, `fresh` stored at first use (several instances starting
    /// together agree on the first one stored).
    async fn site_secret(&self, name: &str, fresh: &str) -> StoreResult<String>;
    /// Queue `mail` to one subscriber if none went to them since `since` (then their
    /// confirmation time is now), in one transaction. Returns whether it was queued.
    async fn queue_personal_mail(
        &self,
        mail: &crate::domain::NewMail,
        since: Timestamp,
        now: Timestamp,
    ) -> StoreResult<bool>;
    /// Queue an event's mail for the email channel's delivery `delivery_id`, once however
    /// often the delivery is attempted; a step joins the thread's mail not yet begun.
    async fn queue_event_mail(
        &self,
        delivery_id: i64,
        mail: &crate::domain::NewMail,
        now: Timestamp,
    ) -> StoreResult<i64>;
    /// Take a batch to send: one whose lease ran out or whose retry is due, else a new one cut
    /// from the oldest due fan-out (at most `size` subscribers).
    async fn claim_mail_batch(
        &self,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
        size: i64,
    ) -> StoreResult<Option<crate::domain::MailBatch>>;
    async fn mail_fanout(&self, id: i64) -> StoreResult<Option<crate::domain::MailFanout>>;
    /// The subscribers of a batch past its cursor, in id order.
    async fn mail_batch_subscribers(
        &self,
        batch: &crate::domain::MailBatch,
        personal: Option<i64>,
    ) -> StoreResult<Vec<crate::domain::Subscriber>>;
    /// Subscriber `subscriber_id` is done (sent, or not for them): the cursor moves past it
    /// and the lease is renewed. False when the lease is no longer `owner`'s.
    async fn mail_advance(
        &self,
        batch_id: i64,
        owner: &str,
        subscriber_id: i64,
        lease_until_ms: i64,
    ) -> StoreResult<bool>;
    /// A permanent refusal for `subscriber_id`: counted, and past `limit` in a row the address
    /// is marked bouncing. The cursor moves past it.
    async fn mail_bounced(
        &self,
        batch_id: i64,
        owner: &str,
        subscriber_id: i64,
        limit: i64,
        now: Timestamp,
        lease_until_ms: i64,
    ) -> StoreResult<bool>;
    /// Mail reached `subscriber_id`: their refusals in a row start again from none.
    async fn mail_reached(&self, subscriber_id: i64) -> StoreResult<()>;
    /// Give the batch up until `next_ms` (a temporary failure), with the reason.
    async fn mail_retry_later(
        &self,
        batch_id: i64,
        owner: &str,
        next_ms: i64,
        error: &str,
    ) -> StoreResult<()>;
    /// The batch is through; its fan-out too when it was the last.
    async fn mail_batch_done(&self, batch_id: i64, owner: &str, now: Timestamp) -> StoreResult<()>;
    /// Hand back the batches `owners` (this instance's workers) held when it stopped (a
    /// restart under the same instance id, which no other running instance holds): they go on
    /// at their cursors at once.
    async fn release_mail_leases(&self, owners: &[String]) -> StoreResult<u64>;
    /// Forget mails sent before `before`, with their batches. Returns how many.
    async fn prune_mail(&self, before: Timestamp) -> StoreResult<u64>;
    /// How the queue stands: fan-outs not done, and batches waiting to retry.
    async fn mail_backlog(&self) -> StoreResult<MailBacklog>;
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailBacklog {
    pub fanouts: i64,
    pub retrying: i64,
}

#[cfg(test)]
mod tests {
    use super::StoreError;

    #[test]
    fn an_outage_is_told_from_a_bug() {
        assert!(StoreError::Database(sqlx::Error::PoolTimedOut).is_unavailable());
        assert!(StoreError::Database(sqlx::Error::PoolClosed).is_unavailable());
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(StoreError::Database(sqlx::Error::Io(reset)).is_unavailable());
        assert!(!StoreError::Database(sqlx::Error::RowNotFound).is_unavailable());
        assert!(!StoreError::Conflict.is_unavailable());
        assert!(!StoreError::Corrupt("x".into()).is_unavailable());
    }
}
