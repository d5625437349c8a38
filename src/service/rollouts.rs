//! Rollouts: creating them, target reports, a maintainer's actions, and the stall check the
//! scheduler runs. Every change goes through [`Service::commit`]; a rollout's [`Aggregate`]
//! keeps this process's last committed copy, so a report on a rollout of 200 targets loads
//! one version number instead of every target.

use async_trait::async_trait;
use jiff::Timestamp;

use super::commit::Aggregate;
use super::{Service, ServiceError, ServiceResult};
use crate::domain::{
    Actor, Channel, NewAudit, NewDelivery, NewRollout, Report, Role, Rollout, RolloutAction,
    RolloutChange, RolloutEdit, RolloutState, RolloutUpdate, ValidationError,
    rollout_deliveries_for,
};
use crate::store::{Commit, Page, RolloutSummary, StoreError};

/// What a rule on a rollout produces besides the changed rollout.
#[derive(Debug, Default)]
pub(super) struct RolloutCommit {
    change: RolloutChange,
    /// A rollback's reverse rollout, created in the same transaction.
    reverse: Option<NewRollout>,
    /// The target whose report this is: when the report changes nothing, only its
    /// last-report time moves.
    touched: Option<String>,
}

impl RolloutCommit {
    fn of(change: RolloutChange) -> Self {
        Self {
            change,
            ..Self::default()
        }
    }
}

/// `name` must be one of the rollout's targets: a 404 otherwise, before any rule runs.
fn known(r: &Rollout, name: &str) -> ServiceResult<()> {
    match r.target(name) {
        Some(_) => Ok(()),
        None => Err(ServiceError::NotFound("target")),
    }
}

fn target(id: i64) -> String {
    format!("rollout {id}")
}

#[async_trait]
impl Aggregate for Rollout {
    type Change = RolloutCommit;
    const KIND: &'static str = "rollout";

    /// The rollout as stored, from this process's copy when the stored version still matches
    /// (one small query) instead of loading every target again. Changes to a rollout are
    /// serialised by the commit path's lock, so the copy is what this process last
    /// committed; a commit by another process moves the version and forces a reload.
    async fn load(service: &Service, id: i64) -> ServiceResult<Self> {
        let version = service
            .store
            .rollout_version(id)
            .await?
            .ok_or(ServiceError::NotFound("rollout"))?;
        if let Some(r) = service
            .rollout_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .filter(|r| r.version == version)
        {
            return Ok(r.clone());
        }
        let r = service.rollout(id).await?;
        r.committed(service);
        Ok(r)
    }

    fn is_empty(c: &RolloutCommit) -> bool {
        c.change == RolloutChange::default() && c.reverse.is_none()
    }

    fn is_news(c: &RolloutCommit) -> bool {
        !c.change.updates.is_empty()
    }

    fn deliveries(
        &self,
        service: &Service,
        c: &RolloutCommit,
        channels: &[Channel],
        now: Timestamp,
    ) -> Vec<NewDelivery> {
        if !service.announce {
            return Vec::new();
        }
        rollout_deliveries_for(
            &c.change,
            channels,
            crate::ids::idem_key,
            service.rollout_fold,
            service.deadline_from(now),
            now.as_millisecond(),
        )
    }

    async fn save(
        &mut self,
        service: &Service,
        before: &Self,
        c: &RolloutCommit,
        deliveries: &[NewDelivery],
        audit: Option<&NewAudit>,
    ) -> ServiceResult<()> {
        let changed: Vec<usize> = (0..self.targets.len())
            .filter(|&i| before.targets.get(i) != Some(&self.targets[i]))
            .collect();
        let actor = service.actor.to_string();
        let commit = Commit {
            actor: &actor,
            updates: &c.change.updates,
            deliveries,
            audit,
        };
        match service
            .store
            .save_rollout(self, &changed, &commit, c.reverse.as_ref())
            .await
        {
            Ok((version, reverse)) => {
                self.version = version;
                if reverse.is_some() {
                    self.rolled_back_by = reverse;
                }
                Ok(())
            }
            Err(StoreError::NotFound) => Err(ValidationError::new(
                "maintenance_id",
                "the maintenance window does not exist",
            )
            .into()),
            Err(e) => Err(e.into()),
        }
    }

    async fn unchanged(&mut self, service: &Service, c: &RolloutCommit) -> ServiceResult<()> {
        let now = service.now();
        if let Some(t) = c
            .touched
            .as_deref()
            .and_then(|name| self.targets.iter_mut().find(|t| t.name == name))
            && let Some(target_id) = t.id
        {
            service.store.touch_target(target_id, now).await?;
            t.last_report_at = Some(now);
            self.committed(service);
            service.changed_minor().await;
        }
        Ok(())
    }

    fn committed(&self, service: &Service) {
        let mut cache = service
            .rollout_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if cache.len() >= 64 && !cache.contains_key(&self.id) {
            cache.clear();
        }
        cache.insert(self.id, self.clone());
    }

    fn conflicted(service: &Service, id: i64) {
        service
            .rollout_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}

impl Service {
    pub async fn rollout(&self, id: i64) -> ServiceResult<Rollout> {
        self.store
            .get_rollout(id)
            .await?
            .ok_or(ServiceError::NotFound("rollout"))
    }

    pub async fn rollouts(
        &self,
        state: Option<RolloutState>,
        offset: i64,
        limit: i64,
    ) -> ServiceResult<Vec<Rollout>> {
        Ok(self.store.list_rollouts(state, offset, limit).await?)
    }

    pub async fn active_rollouts(&self) -> ServiceResult<Vec<Rollout>> {
        Ok(self.store.active_rollouts().await?)
    }

    pub async fn window_rollouts(&self, maintenance_id: i64) -> ServiceResult<Vec<Rollout>> {
        Ok(self.store.window_rollouts(maintenance_id).await?)
    }

    pub async fn finished_rollouts(
        &self,
        offset: i64,
        limit: i64,
    ) -> ServiceResult<Page<RolloutSummary>> {
        Ok(self.store.finished_rollouts(offset, limit).await?)
    }

    pub async fn rollout_updates(
        &self,
        id: i64,
        limit: Option<i64>,
    ) -> ServiceResult<Vec<RolloutUpdate>> {
        Ok(self.store.list_rollout_updates(id, limit).await?)
    }

    async fn check_window(&self, maintenance_id: Option<i64>) -> ServiceResult<()> {
        if let Some(id) = maintenance_id
            && self.store.get_maintenance(id).await?.is_none()
        {
            return Err(ValidationError::new(
                "maintenance_id",
                format!("there is no maintenance window {id}"),
            )
            .into());
        }
        Ok(())
    }

    /// Plan a rollout; it is pending until its first target reports.
    pub async fn create_rollout(&self, new: NewRollout) -> ServiceResult<Rollout> {
        self.require(Role::Maintainer)?;
        let new = new.validate()?;
        self.check_window(new.maintenance_id).await?;
        let r = self
            .store
            .create_rollout(&new, self.now(), &|id| {
                self.audit_entry("rollout.create", target(id))
            })
            .await
            .map_err(|e| match e {
                StoreError::NotFound => ServiceError::from(ValidationError::new(
                    "maintenance_id",
                    "the maintenance window does not exist",
                )),
                e => e.into(),
            })?;
        crate::telemetry::log_change(&self.audit_entry("rollout.create", target(r.id)));
        self.changed().await;
        Ok(r)
    }

    /// Apply `rule` to rollout `id` through [`Service::commit`], audited as `action` on
    /// `what` (the rollout, if `None`), or not audited one by one when `action` is `None`.
    async fn change_rollout(
        &self,
        id: i64,
        needed: Role,
        audit: Option<(&str, Option<String>)>,
        rule: &(dyn Fn(&mut Rollout, Timestamp) -> ServiceResult<RolloutCommit> + Send + Sync),
    ) -> ServiceResult<Rollout> {
        let (r, _) = self
            .commit::<Rollout>(
                id,
                needed,
                &|_, _| {
                    audit.as_ref().map(|(action, what)| {
                        (
                            (*action).to_owned(),
                            what.clone().unwrap_or_else(|| target(id)),
                        )
                    })
                },
                rule,
            )
            .await?;
        Ok(r)
    }

    /// A report from a target or its deploy script. The same report twice changes nothing and
    /// announces nothing; only the target's last-report time moves. Not audited one by one:
    /// the timeline names who reported.
    pub async fn report(&self, id: i64, name: &str, report: &Report) -> ServiceResult<Rollout> {
        // A reporter token (on every instance) may do this and nothing else.
        self.change_rollout(id, Role::Reporter, None, &|r, now| {
            known(r, name)?;
            let change = r.report(name, report, now)?;
            if change != RolloutChange::default()
                && let Some(t) = r.targets.iter_mut().find(|t| t.name == name)
            {
                t.last_report_at = Some(now);
            }
            Ok(RolloutCommit {
                touched: Some(name.to_owned()),
                ..RolloutCommit::of(change)
            })
        })
        .await
    }

    /// A maintainer sets a target's state by hand (or forces it), with a note.
    pub async fn set_target(&self, id: i64, name: &str, report: &Report) -> ServiceResult<Rollout> {
        let what = format!(
            "rollout {id}: {name} → {}{}",
            report.state.as_str(),
            if report.forced { " (forced)" } else { "" }
        );
        self.change_rollout(
            id,
            Role::Maintainer,
            Some(("rollout.target", Some(what))),
            &|r, now| {
                known(r, name)?;
                Ok(RolloutCommit::of(r.report(name, report, now)?))
            },
        )
        .await
    }

    /// A failed target back to pending.
    pub async fn retry_target(
        &self,
        id: i64,
        name: &str,
        note: Option<&str>,
    ) -> ServiceResult<Rollout> {
        let what = format!("rollout {id}: {name}");
        self.change_rollout(
            id,
            Role::Maintainer,
            Some(("rollout.retry", Some(what))),
            &|r, now| {
                known(r, name)?;
                Ok(RolloutCommit::of(r.retry(name, note, now)?))
            },
        )
        .await
    }

    /// Pause, resume, abort or roll back. A rollback returns the reverse rollout's id too.
    pub async fn rollout_action(
        &self,
        id: i64,
        action: RolloutAction,
        note: Option<&str>,
    ) -> ServiceResult<(Rollout, Option<i64>)> {
        let what = format!("rollout.{}", action.as_str());
        let r = self
            .change_rollout(
                id,
                Role::Maintainer,
                Some((&what, None)),
                &|r, now| match action {
                    RolloutAction::Rollback => {
                        let (change, reverse) = r.rollback(note, now)?;
                        Ok(RolloutCommit {
                            reverse: Some(reverse),
                            ..RolloutCommit::of(change)
                        })
                    }
                    a => Ok(RolloutCommit::of(r.apply(a, note, now)?)),
                },
            )
            .await?;
        let reverse = match action {
            RolloutAction::Rollback => r.rolled_back_by,
            _ => None,
        };
        Ok((r, reverse))
    }

    /// Change what a rollout says or how it is watched.
    pub async fn edit_rollout(&self, id: i64, edit: &RolloutEdit) -> ServiceResult<Rollout> {
        if let Some(link) = edit.maintenance_id {
            self.check_window(link).await?;
        }
        self.change_rollout(
            id,
            Role::Maintainer,
            Some(("rollout.edit", None)),
            &|r, now| Ok(RolloutCommit::of(r.edit(edit, now)?)),
        )
        .await
    }

    /// A free-form timeline entry on a rollout.
    pub async fn post_rollout_note(&self, id: i64, body: &str) -> ServiceResult<Rollout> {
        self.change_rollout(
            id,
            Role::Maintainer,
            Some(("rollout.update", None)),
            &|r, now| Ok(RolloutCommit::of(r.post_note(body, now)?)),
        )
        .await
    }

    /// Announce every stall that is due (once each). Returns when the next one falls due.
    pub async fn check_stalls(&self) -> ServiceResult<Option<Timestamp>> {
        let now = self.now();
        let mut next: Option<Timestamp> = None;
        for r in self.store.active_rollouts().await? {
            match r.stall_due() {
                Some(due) if due <= now => {
                    // One rollout that cannot be written must not keep the others' stalls
                    // from being announced.
                    if let Err(e) = self
                        .acting(Actor::Scheduler)
                        .change_rollout(r.id, Role::Maintainer, None, &|r, now| {
                            Ok(RolloutCommit::of(r.check_stall(now)))
                        })
                        .await
                    {
                        tracing::warn!(rollout = r.id, error = %e, "could not announce a stall");
                    }
                }
                Some(due) => next = Some(next.map_or(due, |n| n.min(due))),
                None => {}
            }
        }
        Ok(next)
    }
}
