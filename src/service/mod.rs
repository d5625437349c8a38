//! The one entry point for every change: web pages, the API, the CLI and the scheduler all call
//! these functions. Windows (`windows.rs`) and rollouts (`rollouts.rs`) change through one
//! commit path (`commit.rs`): load, apply a rule from [`crate::domain`], commit the change with
//! its timeline entries, deliveries and audit entry in one transaction, retry on conflict.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;

use crate::domain::{Component, DomainError, NewComponent, Role, ValidationError};
use crate::store::{Change, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The actor's role may not do this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// Too much at once (every password-hashing slot taken): try again shortly.
    #[error("{0}")]
    Busy(&'static str),
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ValidationError> for ServiceError {
    fn from(e: ValidationError) -> Self {
        Self::Domain(e.into())
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;

type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Cheap to clone; all clones share the store and the change counter.
#[derive(Clone)]
pub struct Service {
    store: Arc<dyn Store>,
    clock: Clock,
    generation: Arc<AtomicU64>,
    /// Counts minor changes: drain counts and report times, which public pages may show up to
    /// a second late (see [`Freshness`]).
    minor: Arc<AtomicU64>,
    /// Bumped whenever the outbox has something new (deliveries, channels): workers wait on it.
    outbox: Arc<watch::Sender<u64>>,
    /// How long a delivery is retried before it is marked failed.
    delivery_deadline: Duration,
    /// Discord redraws a live rollout message at most this often for folded events.
    rollout_fold: Duration,
    /// Changes to one aggregate queue on these within the process (see [`commit`]).
    locks: commit::Stripes,
    /// Notices about one alert group queue on these within the process (see
    /// [`Service::receive_alert`]); apart from `locks`, which the changes they make take.
    alert_locks: commit::Stripes,
    /// The rollouts this process changed last, checked against the stored version on use.
    rollout_cache: Arc<std::sync::Mutex<std::collections::HashMap<i64, crate::domain::Rollout>>>,
    /// Password hashing, one job per core at a time on threads of its own.
    hashing: Arc<accounts::Hashing>,
    /// Passwords checked so far (sign-ins), for metrics and tests.
    password_checks: Arc<AtomicU64>,
    /// Who the changes made through this handle are by (see [`Service::acting`]).
    actor: crate::domain::Actor,
    /// Whether changes made through this handle are announced on the channels (see
    /// [`Service::quietly`]); the page, feeds and API show them either way.
    announce: bool,
    /// When this process last deleted expired idempotency keys (unix seconds).
    keys_pruned: Arc<std::sync::atomic::AtomicI64>,
    /// Sign-in attempts, counted in the database on this service's clock.
    sign_ins: Arc<sign_in::SignInThrottle>,
    /// The key of subscribers' links, read (or made) at first use.
    link_key: Arc<tokio::sync::OnceCell<crate::domain::LinkKey>>,
    /// Mail to subscribers, when set up: the site's name and the sender's domain.
    mail: Option<Arc<subscribers::MailIdentity>>,
}

/// Where the data behind a public page stands. A page rendered for an older `generation` is
/// out of date at once; one behind only on `minor` changes may be served for up to a second
/// more, so 100 drain reports a second cost one render a second, not a hundred. `clock` is
/// the service's time in seconds (pages show relative times).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    pub generation: u64,
    pub minor: u64,
    pub clock: i64,
}

impl Service {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::with_clock(store, Arc::new(Timestamp::now))
    }

    /// A service whose notion of "now" comes from `clock` (the demo seeds a past with it).
    pub fn with_clock(store: Arc<dyn Store>, clock: Clock) -> Self {
        Self {
            sign_ins: Arc::new(sign_in::SignInThrottle::new(store.clone(), clock.clone())),
            store,
            clock,
            generation: Arc::new(AtomicU64::new(1)),
            minor: Arc::new(AtomicU64::new(0)),
            outbox: Arc::new(watch::Sender::new(0)),
            delivery_deadline: Duration::from_secs(24 * 3600),
            rollout_fold: Duration::from_secs(10),
            locks: commit::stripes(),
            alert_locks: commit::stripes(),
            rollout_cache: Arc::default(),
            hashing: Arc::new(accounts::Hashing::new()),
            password_checks: Arc::default(),
            actor: crate::domain::Actor::System,
            announce: true,
            keys_pruned: Arc::default(),
            link_key: Arc::default(),
            mail: None,
        }
    }

    pub fn with_rollout_fold(mut self, fold: Duration) -> Self {
        self.rollout_fold = fold;
        self
    }

    /// This service, making changes in the name of `actor`: every window and step change it
    /// commits is in the audit log with that actor.
    pub fn acting(&self, actor: crate::domain::Actor) -> Self {
        Self {
            actor,
            ..self.clone()
        }
    }

    /// This handle, but its changes to windows are not announced on any channel: the page
    /// still changes ("don't announce" on a form, `"announce": false` in the API).
    pub fn quietly(&self, quiet: bool) -> Self {
        Self {
            announce: self.announce && !quiet,
            ..self.clone()
        }
    }

    pub fn actor(&self) -> &crate::domain::Actor {
        &self.actor
    }

    /// Refuse unless this handle's actor may do what `needed` may. Every change checks here,
    /// whatever entry point (page, API, CLI, scheduler) it came through.
    pub fn require(&self, needed: Role) -> ServiceResult<()> {
        if self.actor.may(needed) {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(match needed {
                Role::Admin => "only an admin may do this",
                Role::Maintainer => "only a maintainer may do this",
                Role::Reporter => "only a reporter may do this",
            }))
        }
    }

    pub fn with_delivery_deadline(mut self, deadline: Duration) -> Self {
        self.delivery_deadline = deadline;
        self
    }

    /// A receiver that sees a change whenever the outbox has news.
    pub fn outbox_events(&self) -> watch::Receiver<u64> {
        self.outbox.subscribe()
    }

    /// The outbox has news: wake this instance's workers, and tell the other instances'.
    async fn wake_outbox(&self) {
        self.outbox_news();
        self.publish(Change::Outbox).await;
    }

    fn outbox_news(&self) {
        self.outbox.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Tell the other instances on the database; the change is committed whatever comes of it
    /// (their pages and workers then catch up by polling).
    async fn publish(&self, change: Change) {
        if let Err(e) = self.store.publish(change).await {
            tracing::warn!(error = %e, change = change.as_str(), "could not tell the other instances");
        }
    }

    /// Follow the changes other instances on the same database make, until `cancel`: their
    /// pages go stale here and this instance's workers look at the outbox. Returns at once
    /// where the database has one instance only.
    pub async fn follow_other_instances(&self, cancel: tokio_util::sync::CancellationToken) {
        let Some(mut feed) = self.store.changes() else {
            return;
        };
        loop {
            let change = tokio::select! {
                _ = cancel.cancelled() => return,
                change = feed.recv() => change,
            };
            match change {
                None => return,
                Some(Some(Change::Public)) => self.mark_changed(),
                Some(Some(Change::Minor)) => self.mark_changed_minor(),
                Some(Some(Change::Outbox)) => self.outbox_news(),
                // Notices were lost: anything may have changed.
                Some(None) => {
                    self.mark_changed();
                    self.outbox_news();
                }
            }
        }
    }

    /// The sign-in throttle every sign-in and setup attempt goes through.
    pub fn sign_ins(&self) -> &SignInThrottle {
        &self.sign_ins
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Whole seconds: what is stored is what rules saw.
    pub fn now(&self) -> Timestamp {
        let now = (self.clock)();
        Timestamp::from_second(now.as_second()).unwrap_or(now)
    }

    /// Counts committed changes; caches of anything public compare against it.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A committed change public pages show, here and on the other instances.
    async fn changed(&self) {
        self.mark_changed();
        self.publish(Change::Public).await;
    }

    /// A change no timeline entry marks (a drain count, a report time).
    async fn changed_minor(&self) {
        self.mark_changed_minor();
        self.publish(Change::Minor).await;
    }

    fn mark_changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn mark_changed_minor(&self) {
        self.minor.fetch_add(1, Ordering::AcqRel);
    }

    /// What a cached public page is compared against.
    pub fn freshness(&self) -> Freshness {
        Freshness {
            generation: self.generation(),
            minor: self.minor.load(Ordering::Acquire),
            clock: self.now().as_second(),
        }
    }

    pub async fn create_component(&self, new: NewComponent) -> ServiceResult<Component> {
        self.require(Role::Admin)?;
        let new = new.validate()?;
        let component = self
            .store
            .create_component(&new, self.now())
            .await
            .map_err(|e| match e {
                StoreError::Duplicate(_) => ValidationError::new(
                    "slug",
                    format!("a component with the slug {:?} already exists", new.slug),
                )
                .into(),
                e => ServiceError::Store(e),
            })?;
        self.store
            .audit(
                &self.actor.to_string(),
                "component.create",
                Some(&component.slug),
                self.now(),
            )
            .await?;
        self.changed().await;
        Ok(component)
    }

    /// Create the component unless one with its slug exists (components from configuration).
    pub async fn ensure_component(&self, new: NewComponent) -> ServiceResult<Component> {
        let new = new.validate()?;
        // Instances starting together may both create it: the loser takes the winner's.
        for _ in 0..2 {
            if let Some(existing) = self
                .store
                .list_components()
                .await?
                .into_iter()
                .find(|c| c.slug == new.slug)
            {
                return Ok(existing);
            }
            let configured = self.acting(crate::domain::Actor::Environment);
            match configured.create_component(new.clone()).await {
                // Taken since the look above: look again.
                Err(ServiceError::Domain(DomainError::Invalid(v))) if v.field == "slug" => continue,
                created => return created,
            }
        }
        self.acting(crate::domain::Actor::Environment)
            .create_component(new)
            .await
    }

    /// Rename, describe or regroup a component (the slug stays: links and API clients use it).
    pub async fn edit_component(
        &self,
        slug: &str,
        name: &str,
        description: &str,
        group: &str,
    ) -> ServiceResult<Component> {
        self.require(Role::Admin)?;
        let mut c = self
            .components()
            .await?
            .into_iter()
            .find(|c| c.slug == slug)
            .ok_or(ServiceError::NotFound("component"))?;
        let checked = NewComponent {
            slug: c.slug.clone(),
            name: name.to_owned(),
            description: Some(description.to_owned()),
            group_name: Some(group.to_owned()),
        }
        .validate()?;
        c.name = checked.name;
        c.description = checked.description;
        c.group_name = checked.group_name;
        self.store.update_component(&c).await?;
        self.store
            .audit(
                &self.actor.to_string(),
                "component.edit",
                Some(&c.slug),
                self.now(),
            )
            .await?;
        self.changed().await;
        Ok(c)
    }

    /// Set a component's status by hand, with a note saying why (as Statuspage allows);
    /// `operational` clears it. Its shown status is the worst of this, its open incidents and
    /// its running windows.
    pub async fn set_component_status(
        &self,
        slug: &str,
        status: crate::domain::ComponentStatus,
        note: &str,
    ) -> ServiceResult<Component> {
        self.require(Role::Admin)?;
        let mut c = self
            .components()
            .await?
            .into_iter()
            .find(|c| c.slug == slug)
            .ok_or(ServiceError::NotFound("component"))?;
        c.manual = if status == crate::domain::ComponentStatus::Operational {
            None
        } else {
            let note =
                crate::domain::clean_text("body", note, crate::domain::limits::UPDATE_MAX, true)?
                    .unwrap_or_default();
            Some(crate::domain::ManualStatus {
                status,
                note,
                at: self.now(),
            })
        };
        self.store.update_component(&c).await?;
        self.store
            .audit(
                &self.actor.to_string(),
                "component.status",
                Some(&format!("{} {}", c.slug, status.as_str())),
                self.now(),
            )
            .await?;
        self.changed().await;
        Ok(c)
    }

    /// Move a component one place up (`-1`) or down (`1`) in the order shown.
    /// Remove a component that no window names; one that a window names stays, for that
    /// window's history (rename it instead).
    pub async fn delete_component(&self, slug: &str) -> ServiceResult<()> {
        self.require(Role::Admin)?;
        let used = self
            .store
            .delete_component(slug)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => ServiceError::NotFound("component"),
                e => ServiceError::Store(e),
            })?;
        if used > 0 {
            return Err(ServiceError::Domain(DomainError::Rule(
                crate::domain::RuleError::new(format!(
                    "{used} window{} name{} this component, and keep{} it in {} history; rename it instead",
                    if used == 1 { "" } else { "s" },
                    if used == 1 { "s" } else { "" },
                    if used == 1 { "s" } else { "" },
                    if used == 1 { "its" } else { "their" },
                )),
            )));
        }
        self.store
            .audit(
                &self.actor.to_string(),
                "component.delete",
                Some(slug),
                self.now(),
            )
            .await?;
        self.changed().await;
        Ok(())
    }

    pub async fn move_component(&self, slug: &str, by: i64) -> ServiceResult<()> {
        self.require(Role::Admin)?;
        let all = self.components().await?;
        let Some(i) = all.iter().position(|c| c.slug == slug) else {
            return Err(ServiceError::NotFound("component"));
        };
        let j = i as i64 + by.signum();
        if j < 0 || j >= all.len() as i64 {
            return Ok(());
        }
        let (a, b) = (&all[i], &all[j as usize]);
        // Equal positions (older data) would swap to no effect: fall back to list order.
        let (a, b) = if a.position == b.position {
            let mut a = a.clone();
            let mut b = b.clone();
            a.position = i as i64 + 1;
            b.position = j + 1;
            (a, b)
        } else {
            (a.clone(), b.clone())
        };
        self.store.swap_components(&a, &b).await?;
        self.store
            .audit(
                &self.actor.to_string(),
                "component.move",
                Some(slug),
                self.now(),
            )
            .await?;
        self.changed().await;
        Ok(())
    }

    pub async fn components(&self) -> ServiceResult<Vec<Component>> {
        Ok(self.store.list_components().await?)
    }

    /// Turn component slugs into ids, refusing unknown ones.
    pub async fn component_ids(&self, slugs: &[String]) -> ServiceResult<Vec<i64>> {
        Ok(self
            .components_by_slug(slugs)
            .await?
            .into_iter()
            .map(|c| c.id)
            .collect())
    }

    /// Components by slug, refusing unknown ones.
    pub async fn components_by_slug(&self, slugs: &[String]) -> ServiceResult<Vec<Component>> {
        let all = self.store.list_components().await?;
        slugs
            .iter()
            .map(|slug| {
                all.iter()
                    .find(|c| &c.slug == slug)
                    .cloned()
                    .ok_or_else(|| {
                        ValidationError::new(
                            "components",
                            format!("no component has the slug {slug:?}"),
                        )
                        .into()
                    })
            })
            .collect()
    }
}

mod accounts;
mod alerts;
mod channels;
mod commit;
mod idempotency;
mod incidents;
mod rollouts;
mod sign_in;
mod subscribers;
mod windows;

pub use accounts::{NewSession, NewToken, PasswordCheck, SESSION_LIFETIME};
pub use alerts::{AlertNotice, AlertOutcome, AlertPolicy};
pub use idempotency::KEY_LIFETIME;
pub use sign_in::SignInThrottle;
pub use subscribers::{ImportReport, ImportRow, MailIdentity, SUBSCRIBE_PER_ADDRESS};
