//! Maintenance windows: planning them, a maintainer's actions on them and their steps, and the
//! timed changes the scheduler makes. Every change goes through [`Service::commit`].

use async_trait::async_trait;
use jiff::Timestamp;

use super::commit::Aggregate;
use super::{Service, ServiceError, ServiceResult};
use crate::domain::{
    Actor, Channel, Edit, Maintenance, NewAudit, NewDelivery, NewMaintenance, NewUpdate, PlanEdit,
    Role, Schedule, ScheduleChange, StepAction, ValidationError, WindowAction, deliveries_for,
};
use crate::store::{Commit, StoreError};

#[async_trait]
impl Aggregate for Maintenance {
    type Change = Vec<NewUpdate>;
    const KIND: &'static str = "window";

    async fn load(service: &Service, id: i64) -> ServiceResult<Self> {
        service.maintenance(id).await
    }

    fn is_empty(updates: &Vec<NewUpdate>) -> bool {
        updates.is_empty()
    }

    fn is_news(_: &Vec<NewUpdate>) -> bool {
        true
    }

    fn deliveries(
        &self,
        service: &Service,
        updates: &Vec<NewUpdate>,
        channels: &[Channel],
        now: Timestamp,
    ) -> Vec<NewDelivery> {
        if !service.announce {
            return Vec::new();
        }
        deliveries_for(
            self.is_public(),
            updates.iter().map(|u| Some(u.kind)),
            channels,
            crate::ids::idem_key,
            service.deadline_from(now),
            now.as_millisecond(),
        )
    }

    async fn save(
        &mut self,
        service: &Service,
        _before: &Self,
        updates: &Vec<NewUpdate>,
        deliveries: &[NewDelivery],
        audit: Option<&NewAudit>,
    ) -> ServiceResult<()> {
        let actor = service.actor.to_string();
        self.version = service
            .store
            .save_maintenance(
                self,
                &Commit {
                    actor: &actor,
                    updates,
                    deliveries,
                    audit,
                },
            )
            .await?;
        Ok(())
    }
}

/// The audit target of a window, or of one of its steps.
fn target(id: i64, step: Option<i64>) -> String {
    match step {
        Some(p) => format!("window {id} step {p}"),
        None => format!("window {id}"),
    }
}

impl Service {
    /// Plan a new window; it starts as a draft.
    pub async fn create_maintenance(&self, new: NewMaintenance) -> ServiceResult<Maintenance> {
        self.require(Role::Maintainer)?;
        let new = new.validate()?;
        crate::domain::refuse_past_end(&new.schedule, self.now())?;
        let m = self
            .store
            .create_maintenance(&new, self.now(), &|id| {
                self.audit_entry("window.create", target(id, None))
            })
            .await
            .map_err(|e| match e {
                StoreError::NotFound => {
                    ValidationError::new("components", "an affected component does not exist")
                        .into()
                }
                e => ServiceError::Store(e),
            })?;
        crate::telemetry::log_change(&self.audit_entry("window.create", target(m.id, None)));
        self.changed().await;
        Ok(m)
    }

    pub async fn maintenance(&self, id: i64) -> ServiceResult<Maintenance> {
        self.store
            .get_maintenance(id)
            .await?
            .ok_or(ServiceError::NotFound("maintenance"))
    }

    /// Apply `rule` to window `id` through [`Service::commit`], audited as `action` (on step
    /// `step`, if any).
    async fn change(
        &self,
        action: &str,
        step: Option<i64>,
        id: i64,
        rule: impl Fn(&mut Maintenance, Timestamp) -> Result<Vec<NewUpdate>, crate::domain::DomainError>
        + Send
        + Sync,
    ) -> ServiceResult<Maintenance> {
        let quiet = if self.announce {
            ""
        } else {
            " (not announced)"
        };
        let (m, _) = self
            .commit::<Maintenance>(
                id,
                Role::Maintainer,
                &|_, _| Some((action.to_owned(), format!("{}{quiet}", target(id, step)))),
                &|m, now| Ok(rule(m, now)?),
            )
            .await?;
        Ok(m)
    }

    pub async fn window_action(
        &self,
        id: i64,
        action: WindowAction,
        note: Option<&str>,
    ) -> ServiceResult<Maintenance> {
        let what = format!(
            "window.{}",
            match action {
                WindowAction::Announce => "announce",
                WindowAction::Start => "start",
                WindowAction::Complete => "complete",
                WindowAction::Cancel => "cancel",
            }
        );
        self.change(&what, None, id, |m, now| m.apply(action, note, now))
            .await
    }

    pub async fn reschedule(&self, id: i64, schedule: Schedule) -> ServiceResult<Maintenance> {
        self.change("window.reschedule", None, id, |m, now| {
            m.reschedule(schedule.clone(), now)
        })
        .await
    }

    pub async fn step_action(
        &self,
        id: i64,
        position: i64,
        action: StepAction,
        note: Option<&str>,
    ) -> ServiceResult<Maintenance> {
        let what = format!(
            "step.{}",
            match action {
                StepAction::Start => "start",
                StepAction::Done => "done",
                StepAction::Fail => "fail",
                StepAction::Skip => "skip",
            }
        );
        self.change(&what, Some(position), id, |m, now| {
            m.step(position, action, note, now)
        })
        .await
    }

    /// Edit what a window says and, in the same commit, move its date.
    pub async fn edit(
        &self,
        id: i64,
        edit: Edit,
        schedule: ScheduleChange,
    ) -> ServiceResult<Maintenance> {
        self.change("window.edit", None, id, |m, now| {
            let mut updates = m.edit(edit.clone(), now)?;
            if !schedule.is_empty() {
                let schedule = schedule.apply_to(m)?;
                updates.extend(m.reschedule(schedule, now)?);
            }
            Ok(updates)
        })
        .await
    }

    pub async fn edit_plan(&self, id: i64, edit: PlanEdit) -> ServiceResult<Maintenance> {
        self.change("window.plan", None, id, |m, now| {
            m.edit_plan(edit.clone(), now)
        })
        .await
    }

    pub async fn post_update(&self, id: i64, body: &str) -> ServiceResult<Maintenance> {
        self.change("window.update", None, id, |m, now| m.post_update(body, now))
            .await
    }

    /// Correct update `update_id` of window `id` after it went out: `Some(text)` replaces what
    /// the maintainer wrote (an update's text, a note), `None` withdraws the update. The page
    /// shows it at once; each channel that posted it gets the correction (Discord edits or
    /// deletes its message, Bluesky replies with a correction or deletes the post, a webhook
    /// receives the event), unless this handle is quiet.
    pub async fn correct_update(
        &self,
        id: i64,
        update_id: i64,
        text: Option<&str>,
    ) -> ServiceResult<()> {
        use crate::domain::{DeliveryAction, DeliveryState, NewCorrection, Subject};
        self.require(Role::Maintainer)?;
        let update = self
            .store
            .get_update(update_id)
            .await?
            .filter(|u| u.maintenance_id == id)
            .ok_or(ServiceError::NotFound("update"))?;
        let (body, note, action) = match text {
            Some(text) => {
                let (body, note) = update.corrected(text)?;
                if body == update.body && note == update.note {
                    return Ok(());
                }
                (body, note, DeliveryAction::Edit)
            }
            None => {
                update.withdrawable()?;
                (
                    update.body.clone(),
                    update.note.clone(),
                    DeliveryAction::Withdraw,
                )
            }
        };
        let now = Timestamp::now();
        let channels = self.store.list_channels().await?;
        let posted = if self.announce {
            self.store.list_deliveries(Subject::Window(id)).await?
        } else {
            Vec::new()
        };
        // What each channel made of it: the post, and (to withdraw) the corrections it
        // posted since, each once.
        let mut seen = std::collections::HashSet::new();
        let deliveries: Vec<NewCorrection> = posted
            .iter()
            .filter(|d| {
                // Sent; for a withdrawal also still to go (one being sent right now goes out:
                // the withdrawal queued behind it takes it down; one skipped by the withdrawal
                // makes it a no-op). A pending post needs no edit: it loads the new text when
                // it goes. A post the channel did not say it made (a relay answering 204)
                // cannot be found again: a correction would only fail.
                let live = match d.state {
                    DeliveryState::Sent => d.remote_id.is_some(),
                    DeliveryState::Pending => action == DeliveryAction::Withdraw,
                    DeliveryState::Failed | DeliveryState::Skipped => false,
                };
                d.update_id == Some(update_id)
                    && live
                    && (d.action == DeliveryAction::Post
                        || (action == DeliveryAction::Withdraw && d.action == DeliveryAction::Edit))
                    && (d.state != DeliveryState::Sent
                        || seen.insert((d.channel_id, d.remote_id.clone())))
            })
            .filter_map(|d| {
                let channel = channels
                    .iter()
                    .find(|c| c.id == d.channel_id && c.enabled)?;
                Some(NewCorrection {
                    window_id: id,
                    update_id,
                    kind: update.kind,
                    channel_id: channel.id,
                    action,
                    corrects: d.id,
                    idem_key: crate::ids::idem_key(channel.kind),
                    deadline_at: self.deadline_from(now),
                    created_ms: now.as_millisecond(),
                })
            })
            .collect();
        let what = match action {
            DeliveryAction::Withdraw => "update.withdraw",
            _ => "update.edit",
        };
        let quiet = if self.announce {
            ""
        } else {
            " (not announced)"
        };
        let audit = self.audit_entry(what, format!("window {id} update {update_id}{quiet}"));
        self.store
            .correct_update(&crate::store::Correction {
                update_id,
                withdraw: action == DeliveryAction::Withdraw,
                body: &body,
                note: note.as_deref(),
                at: self.now(),
                deliveries: &deliveries,
                audit: &audit,
            })
            .await
            .map_err(|e| match e {
                StoreError::NotFound => ServiceError::NotFound("update"),
                e => ServiceError::Store(e),
            })?;
        crate::telemetry::log_change(&audit);
        self.changed().await;
        if !deliveries.is_empty() {
            self.wake_outbox().await;
        }
        Ok(())
    }

    /// Do what time made due on every public window (see [`crate::domain::Maintenance::tick`]),
    /// in the scheduler's name. Returns when something next falls due.
    pub async fn check_windows(&self) -> ServiceResult<Option<Timestamp>> {
        let scheduler = self.acting(Actor::Scheduler);
        let now = self.now();
        let mut next: Option<Timestamp> = None;
        for m in self.store.open_public_maintenances().await? {
            let m = match m.next_due(now) {
                Some(due) if due <= now => {
                    let id = m.id;
                    let ticked = scheduler
                        .commit::<Maintenance>(
                            id,
                            Role::Maintainer,
                            &|_, updates| {
                                let what = updates.first().map_or("none", |u| u.kind.as_str());
                                Some((format!("window.{what}"), target(id, None)))
                            },
                            &|m, now| Ok(m.tick(now)?),
                        )
                        .await;
                    match ticked {
                        Ok((m, _)) => m,
                        // One window that cannot be written must not hold up the others.
                        Err(e) => {
                            tracing::warn!(window = id, error = %e, "could not apply a timed change");
                            continue;
                        }
                    }
                }
                _ => m,
            };
            if let Some(due) = m.next_due(now).filter(|due| *due > now) {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        Ok(next)
    }
}
