//! Rollouts: creating them, target reports, a maintainer's actions, and the stall check the
//! scheduler runs. Every change goes through [`Service::change_rollout`]: load, apply a rule
//! from [`crate::domain`], commit the rollout with its timeline entries and their deliveries
//! in one transaction, again from the start when another change won the race.

use jiff::Timestamp;

use super::{MAX_CONFLICT_RETRIES, Service, ServiceError, ServiceResult};
use crate::domain::{
    NewRollout, Report, Rollout, RolloutAction, RolloutChange, RolloutEdit, RolloutState,
    RolloutUpdate, ValidationError, rollout_deliveries_for,
};
use crate::store::{Page, RolloutSummary, StoreError};

/// Who reported a change, as the timeline and the audit log name them.
pub const SCHEDULER: &str = "scheduler";

/// The outcome of [`Service::change_rollout`].
struct Committed {
    rollout: Rollout,
    /// A rollback's reverse rollout.
    reverse: Option<i64>,
}

type Rule<'a> = dyn Fn(&mut Rollout, Timestamp) -> ServiceResult<(RolloutChange, Option<NewRollout>)>
    + Send
    + Sync
    + 'a;

/// `name` must be one of the rollout's targets: a 404 otherwise, before any rule runs.
fn known(r: &Rollout, name: &str) -> ServiceResult<()> {
    match r.target(name) {
        Some(_) => Ok(()),
        None => Err(ServiceError::NotFound("target")),
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
    pub async fn create_rollout(&self, new: NewRollout, actor: &str) -> ServiceResult<Rollout> {
        let new = new.validate()?;
        self.check_window(new.maintenance_id).await?;
        let r = self
            .store
            .create_rollout(&new, self.now())
            .await
            .map_err(|e| match e {
                StoreError::NotFound => ServiceError::from(ValidationError::new(
                    "maintenance_id",
                    "the maintenance window does not exist",
                )),
                e => e.into(),
            })?;
        self.store
            .audit(
                actor,
                "rollout.create",
                Some(&format!("rollout {}", r.id)),
                self.now(),
            )
            .await?;
        self.changed().await;
        Ok(r)
    }

    /// Load, apply `rule`, commit; again from the start if another change won the race. When
    /// the rule changes nothing and `touched` names a target, only that target's last-report
    /// time moves (in the store and in the cached copy, still under the rollout's lock).
    async fn change_rollout(
        &self,
        id: i64,
        actor: &str,
        touched: Option<&str>,
        rule: &Rule<'_>,
    ) -> ServiceResult<Committed> {
        let _queue = self.rollout_locks[id.rem_euclid(self.rollout_locks.len() as i64) as usize]
            .lock()
            .await;
        for _ in 0..MAX_CONFLICT_RETRIES {
            let before = self.cached_rollout(id).await?;
            let mut r = before.clone();
            let (change, reverse) = rule(&mut r, self.now())?;
            if r == before && change == RolloutChange::default() && reverse.is_none() {
                let now = self.now();
                if let Some(t) =
                    touched.and_then(|name| r.targets.iter_mut().find(|t| t.name == name))
                    && let Some(target_id) = t.id
                {
                    self.store.touch_target(target_id, now).await?;
                    t.last_report_at = Some(now);
                    self.cache_rollout(&r);
                    self.changed_minor().await;
                }
                return Ok(Committed {
                    rollout: r,
                    reverse: None,
                });
            }
            let changed: Vec<usize> = (0..r.targets.len())
                .filter(|&i| r.targets[i] != before.targets[i])
                .collect();
            // Deliveries run on real time whatever the domain's clock says.
            let now = Timestamp::now();
            let channels = self.store.list_channels().await?;
            let deliveries = rollout_deliveries_for(
                &change,
                &channels,
                crate::ids::idem_key,
                self.rollout_fold,
                self.deadline_from(now),
                now.as_millisecond(),
            );
            match self
                .store
                .save_rollout(
                    &r,
                    &changed,
                    &change.updates,
                    actor,
                    &deliveries,
                    reverse.as_ref(),
                )
                .await
            {
                Ok((version, reverse_id)) => {
                    r.version = version;
                    if reverse_id.is_some() {
                        r.rolled_back_by = reverse_id;
                    }
                    self.cache_rollout(&r);
                    if change.updates.is_empty() {
                        self.changed_minor().await;
                    } else {
                        self.changed().await;
                    }
                    if !deliveries.is_empty() {
                        self.wake_outbox().await;
                    }
                    return Ok(Committed {
                        rollout: r,
                        reverse: reverse_id,
                    });
                }
                Err(StoreError::Conflict) => {
                    self.forget_rollout(id);
                    continue;
                }
                Err(StoreError::NotFound) => {
                    return Err(ValidationError::new(
                        "maintenance_id",
                        "the maintenance window does not exist",
                    )
                    .into());
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Conflict.into())
    }

    /// The rollout as stored, from this process's copy when the stored version still matches
    /// (one small query) instead of loading every target again. Changes to a rollout are
    /// serialised by `rollout_locks`, so the copy is what this process last committed; a
    /// commit by another process moves the version and forces a reload.
    async fn cached_rollout(&self, id: i64) -> ServiceResult<Rollout> {
        let version = self
            .store
            .rollout_version(id)
            .await?
            .ok_or(ServiceError::NotFound("rollout"))?;
        if let Some(r) = self
            .rollout_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .filter(|r| r.version == version)
        {
            return Ok(r.clone());
        }
        let r = self.rollout(id).await?;
        self.cache_rollout(&r);
        Ok(r)
    }

    fn cache_rollout(&self, r: &Rollout) {
        let mut cache = self.rollout_cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= 64 && !cache.contains_key(&r.id) {
            cache.clear();
        }
        cache.insert(r.id, r.clone());
    }

    fn forget_rollout(&self, id: i64) {
        self.rollout_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// A report from a target or its deploy script. The same report twice changes nothing and
    /// announces nothing; only the target's last-report time moves.
    pub async fn report(
        &self,
        id: i64,
        name: &str,
        report: &Report,
        actor: &str,
    ) -> ServiceResult<Rollout> {
        let done = self
            .change_rollout(id, actor, Some(name), &|r, now| {
                known(r, name)?;
                let change = r.report(name, report, now)?;
                if change != RolloutChange::default()
                    && let Some(t) = r.targets.iter_mut().find(|t| t.name == name)
                {
                    t.last_report_at = Some(now);
                }
                Ok((change, None))
            })
            .await?;
        Ok(done.rollout)
    }

    /// A maintainer sets a target's state by hand (or forces it), with a note.
    pub async fn set_target(
        &self,
        id: i64,
        name: &str,
        report: &Report,
        actor: &str,
    ) -> ServiceResult<Rollout> {
        let r = self
            .change_rollout(id, actor, None, &|r, now| {
                known(r, name)?;
                Ok((r.report(name, report, now)?, None))
            })
            .await?
            .rollout;
        let what = if report.forced { " (forced)" } else { "" };
        self.store
            .audit(
                actor,
                "rollout.target",
                Some(&format!(
                    "rollout {id}: {name} → {}{what}",
                    report.state.as_str()
                )),
                self.now(),
            )
            .await?;
        Ok(r)
    }

    /// A failed target back to pending.
    pub async fn retry_target(
        &self,
        id: i64,
        name: &str,
        note: Option<&str>,
        actor: &str,
    ) -> ServiceResult<Rollout> {
        let r = self
            .change_rollout(id, actor, None, &|r, now| {
                known(r, name)?;
                Ok((r.retry(name, note, now)?, None))
            })
            .await?
            .rollout;
        self.store
            .audit(
                actor,
                "rollout.retry",
                Some(&format!("rollout {id}: {name}")),
                self.now(),
            )
            .await?;
        Ok(r)
    }

    /// Pause, resume, abort or roll back. A rollback returns the reverse rollout's id too.
    pub async fn rollout_action(
        &self,
        id: i64,
        action: RolloutAction,
        note: Option<&str>,
        actor: &str,
    ) -> ServiceResult<(Rollout, Option<i64>)> {
        let done = self
            .change_rollout(id, actor, None, &|r, now| match action {
                RolloutAction::Rollback => {
                    let (change, reverse) = r.rollback(note, now)?;
                    Ok((change, Some(reverse)))
                }
                a => Ok((r.apply(a, note, now)?, None)),
            })
            .await?;
        self.store
            .audit(
                actor,
                &format!("rollout.{}", action.as_str()),
                Some(&format!("rollout {id}")),
                self.now(),
            )
            .await?;
        Ok((done.rollout, done.reverse))
    }

    /// Change what a rollout says or how it is watched.
    pub async fn edit_rollout(
        &self,
        id: i64,
        edit: &RolloutEdit,
        actor: &str,
    ) -> ServiceResult<Rollout> {
        if let Some(link) = edit.maintenance_id {
            self.check_window(link).await?;
        }
        let r = self
            .change_rollout(id, actor, None, &|r, now| Ok((r.edit(edit, now)?, None)))
            .await?
            .rollout;
        self.store
            .audit(
                actor,
                "rollout.edit",
                Some(&format!("rollout {id}")),
                self.now(),
            )
            .await?;
        Ok(r)
    }

    /// A free-form timeline entry on a rollout.
    pub async fn post_rollout_note(
        &self,
        id: i64,
        body: &str,
        actor: &str,
    ) -> ServiceResult<Rollout> {
        Ok(self
            .change_rollout(id, actor, None, &|r, now| {
                Ok((r.post_note(body, now)?, None))
            })
            .await?
            .rollout)
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
                        .change_rollout(r.id, SCHEDULER, None, &|r, now| {
                            Ok((r.check_stall(now), None))
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
