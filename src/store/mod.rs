//! Storage: the [`Store`] trait every backend implements, and its errors. The SQLite
//! implementation lives in `sqlite.rs`; a PostgreSQL one sits beside it with the same SQL.

mod sqlite;

use async_trait::async_trait;
use jiff::Timestamp;

use crate::domain::{
    ApiToken, AuditEntry, Component, Maintenance, NewComponent, NewMaintenance, NewUpdate, Role,
    Update, User,
};

pub use sqlite::SqliteStore;

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
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
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

/// Everything Herald keeps. Implementations make each method atomic.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Apply pending migrations.
    async fn migrate(&self) -> StoreResult<()>;
    /// Cheap round trip used by readiness checks.
    async fn ping(&self) -> StoreResult<()>;

    async fn create_component(&self, new: &NewComponent, now: Timestamp) -> StoreResult<Component>;
    async fn list_components(&self) -> StoreResult<Vec<Component>>;

    /// Insert a window (as a draft) with its steps and component links.
    async fn create_maintenance(
        &self,
        new: &NewMaintenance,
        now: Timestamp,
    ) -> StoreResult<Maintenance>;
    async fn get_maintenance(&self, id: i64) -> StoreResult<Option<Maintenance>>;
    /// Write back a changed window with its steps and components, plus the updates its change
    /// produced, in one transaction, if its version is still `m.version`. Returns the new version.
    async fn save_maintenance(&self, m: &Maintenance, updates: &[NewUpdate]) -> StoreResult<i64>;
    async fn count_maintenances(&self) -> StoreResult<i64>;

    /// Public windows that are planned, scheduled or in progress, with steps and components.
    async fn open_public_maintenances(&self) -> StoreResult<Vec<Maintenance>>;
    /// Every window not yet finished, drafts included (for maintainers).
    async fn open_maintenances(&self) -> StoreResult<Vec<Maintenance>>;
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

    /// Store a new token by the hash of its secret.
    async fn insert_token(
        &self,
        name: &str,
        role: Role,
        token_hash: &str,
        prefix: &str,
        created_by: &str,
        now: Timestamp,
    ) -> StoreResult<ApiToken>;
    /// The token whose secret hashes to `token_hash`, revoked or not.
    async fn token_by_hash(&self, token_hash: &str) -> StoreResult<Option<ApiToken>>;
    async fn list_tokens(&self) -> StoreResult<Vec<ApiToken>>;
    /// Revoke; false if there is no such token or it was already revoked.
    async fn revoke_token(&self, id: i64, now: Timestamp) -> StoreResult<bool>;
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
    async fn list_audit(&self, limit: i64) -> StoreResult<Vec<AuditEntry>>;

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

    /// Change a component's name, description and group.
    async fn update_component(&self, c: &Component) -> StoreResult<()>;
    /// Swap the places of two components in the order.
    async fn swap_components(&self, a: &Component, b: &Component) -> StoreResult<()>;
    async fn list_users(&self) -> StoreResult<Vec<User>>;
}
