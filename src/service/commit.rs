//! The one commit path every aggregate (windows, rollouts, and the incidents to come) changes
//! through: load, apply a rule from [`crate::domain`], then commit the changed aggregate, the
//! timeline entries the rule produced, the deliveries announcing them and the audit entry with
//! the typed actor, all in one transaction; again from the start when another change won.
//!
//! One concurrency strategy for all of them: changes to one aggregate queue on a lock stripe
//! within this process (so a burst of reports on one rollout runs one after another instead
//! of losing most optimistic commits to each other), and a version check in the store's
//! commit makes a change from another process lose cleanly and retry.

use async_trait::async_trait;
use jiff::Timestamp;

use super::{Service, ServiceError, ServiceResult};
use crate::domain::{Channel, NewAudit, NewDelivery, Role};
use crate::store::StoreError;

/// How often a change is retried when another change to the same aggregate won the race.
pub(super) const MAX_CONFLICT_RETRIES: usize = 16;

/// Lock stripes for changes in this process, shared by every kind of aggregate.
pub(super) const STRIPES: usize = 64;

pub(super) type Stripes = std::sync::Arc<[tokio::sync::Mutex<()>; STRIPES]>;

pub(super) fn stripes() -> Stripes {
    std::sync::Arc::new(std::array::from_fn(|_| tokio::sync::Mutex::new(())))
}

/// An aggregate [`Service::commit`] changes.
#[async_trait]
pub(super) trait Aggregate: Clone + PartialEq + Send + Sync + 'static {
    /// What a rule produces besides the changed aggregate (timeline entries, a rollback's
    /// reverse rollout).
    type Change: Send + Sync;
    /// Tells the kinds apart on the lock stripes and in errors ("window", "rollout").
    const KIND: &'static str;

    async fn load(service: &Service, id: i64) -> ServiceResult<Self>;
    /// Whether the rule's change holds nothing to write (with an unchanged aggregate: no
    /// commit at all).
    fn is_empty(change: &Self::Change) -> bool;
    /// Whether public pages must show the change at once (else within a second, as for a
    /// drain count).
    fn is_news(change: &Self::Change) -> bool;
    /// The deliveries announcing the change on `channels`, created at `now` (real time).
    fn deliveries(
        &self,
        service: &Service,
        change: &Self::Change,
        channels: &[Channel],
        now: Timestamp,
    ) -> Vec<NewDelivery>;
    /// Write the changed aggregate with `commit` in one transaction if `before`'s version is
    /// still the stored one ([`StoreError::Conflict`] otherwise); the new version goes into
    /// `self`.
    async fn save(
        &mut self,
        service: &Service,
        before: &Self,
        change: &Self::Change,
        deliveries: &[NewDelivery],
        audit: Option<&NewAudit>,
    ) -> ServiceResult<()>;
    /// The rule changed nothing: what a no-op still records (a report's time). Runs under the
    /// aggregate's lock.
    async fn unchanged(&mut self, _service: &Service, _change: &Self::Change) -> ServiceResult<()> {
        Ok(())
    }
    /// Committed: remember it (a cache), under the aggregate's lock.
    fn committed(&self, _service: &Service) {}
    /// Lost a race: forget what this process remembers of it.
    fn conflicted(_service: &Service, _id: i64) {}
}

/// What the audit log says a change was: its action (`window.announce`) and target
/// (`window 3`), or nothing for a change not audited one by one (a target's own report).
pub(super) type AuditOf<'a, A> =
    dyn Fn(&A, &<A as Aggregate>::Change) -> Option<(String, String)> + Send + Sync + 'a;

/// A rule: changes the aggregate as of a time and says what else the change produced.
pub(super) type RuleOf<'a, A> =
    dyn Fn(&mut A, Timestamp) -> ServiceResult<<A as Aggregate>::Change> + Send + Sync + 'a;

impl Service {
    /// Refuse unless this handle's actor may do what `needed` may; then load aggregate `id`,
    /// apply `rule`, commit it with its timeline entries, deliveries and
    /// the audit entry `audit` names, in this handle's actor's name; again from the start if
    /// another change won the race.
    pub(super) async fn commit<A: Aggregate>(
        &self,
        id: i64,
        needed: Role,
        audit: &AuditOf<'_, A>,
        rule: &RuleOf<'_, A>,
    ) -> ServiceResult<(A, A::Change)> {
        self.require(needed)?;
        let _queue = self.stripe(A::KIND, id).lock().await;
        for _ in 0..MAX_CONFLICT_RETRIES {
            let before = A::load(self, id).await?;
            let mut a = before.clone();
            let change = rule(&mut a, self.now())?;
            if a == before && A::is_empty(&change) {
                a.unchanged(self, &change).await?;
                return Ok((a, change));
            }
            // Deliveries run on real time whatever the domain's clock says.
            let now = Timestamp::now();
            let channels = self.store.list_channels().await?;
            let deliveries = a.deliveries(self, &change, &channels, now);
            let audit = audit(&a, &change).map(|(action, target)| NewAudit {
                actor: self.actor.to_string(),
                action,
                target: Some(target),
                at: self.now(),
            });
            match a
                .save(self, &before, &change, &deliveries, audit.as_ref())
                .await
            {
                Ok(()) => {
                    a.committed(self);
                    if let Some(audit) = &audit {
                        crate::telemetry::log_change(audit);
                    }
                    if A::is_news(&change) {
                        self.changed().await;
                    } else {
                        self.changed_minor().await;
                    }
                    if !deliveries.is_empty() {
                        self.wake_outbox().await;
                    }
                    return Ok((a, change));
                }
                Err(ServiceError::Store(StoreError::Conflict)) => {
                    A::conflicted(self, id);
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict.into())
    }

    fn stripe(&self, kind: &str, id: i64) -> &tokio::sync::Mutex<()> {
        // Kinds spread over the stripes too, so window 3 and rollout 3 rarely share one.
        let salt = kind
            .bytes()
            .fold(0i64, |h, b| h.wrapping_mul(31) + i64::from(b));
        &self.locks[id.wrapping_add(salt).rem_euclid(STRIPES as i64) as usize]
    }

    /// An audit entry in this handle's actor's name, for something created now.
    pub(super) fn audit_entry(&self, action: &str, target: String) -> NewAudit {
        NewAudit {
            actor: self.actor.to_string(),
            action: action.to_owned(),
            target: Some(target),
            at: self.now(),
        }
    }
}
