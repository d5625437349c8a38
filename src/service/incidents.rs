//! Incidents: opening one (by hand, from a failed step or rollout, or from a monitor's alert),
//! publishing a draft, its updates, resolution, reopening and postmortem. Every change goes
//! through [`Service::commit`], as windows' and rollouts' do.

use async_trait::async_trait;
use jiff::Timestamp;

use super::commit::Aggregate;
use super::{Service, ServiceError, ServiceResult};
use crate::domain::{
    Channel, ComponentStatus, DomainError, Incident, IncidentStatus, IncidentUpdate, NewAudit,
    NewDelivery, NewIncident, NewIncidentUpdate, Role, ValidationError, deliveries_for,
};
use crate::store::{AlertGroup, Commit, IncidentFilter, Page, StoreError};

/// What a rule on an incident produces: its timeline entries and, for a change a monitor
/// made, the alert group's new state.
#[derive(Debug, Clone, Default)]
pub struct IncidentChange {
    pub updates: Vec<NewIncidentUpdate>,
    pub alert: Option<AlertGroup>,
}

/// The deliveries announcing `updates` of `incident` on `channels` (none for a draft, none for
/// updates not announced).
fn incident_deliveries(
    service: &Service,
    incident: &Incident,
    updates: &[NewIncidentUpdate],
    channels: &[Channel],
    now: Timestamp,
) -> Vec<NewDelivery> {
    if !service.announce {
        return Vec::new();
    }
    deliveries_for(
        incident.is_public(),
        updates.iter().map(|u| u.announce.then(|| u.kind.event())),
        channels,
        crate::ids::idem_key,
        service.deadline_from(now),
        now.as_millisecond(),
    )
}

#[async_trait]
impl Aggregate for Incident {
    type Change = IncidentChange;
    const KIND: &'static str = "incident";

    async fn load(service: &Service, id: i64) -> ServiceResult<Self> {
        service.incident(id).await
    }

    fn is_empty(change: &IncidentChange) -> bool {
        change.updates.is_empty() && change.alert.is_none()
    }

    fn is_news(_: &IncidentChange) -> bool {
        true
    }

    fn deliveries(
        &self,
        service: &Service,
        change: &IncidentChange,
        channels: &[Channel],
        now: Timestamp,
    ) -> Vec<NewDelivery> {
        incident_deliveries(service, self, &change.updates, channels, now)
    }

    async fn save(
        &mut self,
        service: &Service,
        _before: &Self,
        change: &IncidentChange,
        deliveries: &[NewDelivery],
        audit: Option<&NewAudit>,
    ) -> ServiceResult<()> {
        let actor = service.actor.to_string();
        self.version = service
            .store
            .save_incident(
                self,
                &Commit {
                    actor: &actor,
                    updates: &change.updates,
                    deliveries,
                    audit,
                },
                change.alert.as_ref(),
            )
            .await
            .map_err(unknown_component)?;
        Ok(())
    }
}

/// A broken reference while writing an incident is a component (or linked window or
/// rollout) that does not exist: the caller's mistake, told as such.
fn unknown_component(e: StoreError) -> ServiceError {
    match e {
        StoreError::NotFound => ValidationError::new(
            "components",
            "an affected component (or the linked window or rollout) does not exist",
        )
        .into(),
        e => ServiceError::Store(e),
    }
}

fn target(id: i64) -> String {
    format!("incident {id}")
}

impl Service {
    pub async fn incident(&self, id: i64) -> ServiceResult<Incident> {
        self.store
            .get_incident(id)
            .await?
            .ok_or(ServiceError::NotFound("incident"))
    }

    pub async fn incidents(
        &self,
        filter: IncidentFilter,
        offset: i64,
        limit: i64,
    ) -> ServiceResult<Page<Incident>> {
        Ok(self.store.list_incidents(filter, offset, limit).await?)
    }

    /// Public incidents open now, newest first: what `/` leads with.
    pub async fn open_incidents(&self) -> ServiceResult<Vec<Incident>> {
        Ok(self
            .store
            .list_incidents(IncidentFilter::Open, 0, 100)
            .await?
            .items)
    }

    /// An incident's timeline, newest first.
    pub async fn incident_updates(
        &self,
        id: i64,
        limit: Option<i64>,
    ) -> ServiceResult<Vec<IncidentUpdate>> {
        Ok(self.store.list_incident_updates(id, limit).await?)
    }

    /// Open an incident (published at once, or a draft), announcing it when published.
    pub async fn create_incident(&self, new: NewIncident) -> ServiceResult<Incident> {
        self.require(Role::Maintainer)?;
        self.open_incident(new, None).await
    }

    /// Open an incident, with the alert group that opened it when a monitor did.
    pub(super) async fn open_incident(
        &self,
        new: NewIncident,
        alert: Option<&AlertGroup>,
    ) -> ServiceResult<Incident> {
        let new = new.validate()?;
        let (incident, update) = Incident::open(new, self.now());
        let updates = [update];
        let now = Timestamp::now();
        let channels = self.store.list_channels().await?;
        let deliveries = incident_deliveries(self, &incident, &updates, &channels, now);
        let actor = self.actor.to_string();
        let audit = |id: i64| self.audit_entry("incident.create", target(id));
        let id = self
            .store
            .create_incident(
                &incident,
                &Commit {
                    actor: &actor,
                    updates: &updates,
                    deliveries: &deliveries,
                    audit: None,
                },
                Some(&audit),
                alert,
            )
            .await
            .map_err(unknown_component)?;
        crate::telemetry::log_change(&audit(id));
        self.changed().await;
        if !deliveries.is_empty() {
            self.wake_outbox().await;
        }
        self.incident(id).await
    }

    /// Apply `rule` to incident `id` through [`Service::commit`], audited as `action`.
    pub(super) async fn change_incident(
        &self,
        action: &str,
        needed: Role,
        id: i64,
        rule: impl Fn(&mut Incident, Timestamp) -> Result<IncidentChange, DomainError> + Send + Sync,
    ) -> ServiceResult<Incident> {
        Ok(self.commit_incident(action, needed, id, rule).await?.0)
    }

    /// [`Self::change_incident`], also saying what the change was (a rule may decide to
    /// post nothing).
    pub(super) async fn commit_incident(
        &self,
        action: &str,
        needed: Role,
        id: i64,
        rule: impl Fn(&mut Incident, Timestamp) -> Result<IncidentChange, DomainError> + Send + Sync,
    ) -> ServiceResult<(Incident, IncidentChange)> {
        self.commit::<Incident>(
            id,
            needed,
            &|_, _| Some((action.to_owned(), target(id))),
            &|i, now| Ok(rule(i, now)?),
        )
        .await
    }

    /// Correct an incident's title or impact (not announced).
    pub async fn edit_incident(
        &self,
        id: i64,
        title: Option<String>,
        impact: Option<crate::domain::Impact>,
    ) -> ServiceResult<Incident> {
        self.change_incident("incident.edit", Role::Maintainer, id, |i, now| {
            i.edit(title.as_deref(), impact, now)?;
            Ok(IncidentChange::default())
        })
        .await
    }

    /// Make a draft public and announce it.
    pub async fn publish_incident(&self, id: i64) -> ServiceResult<Incident> {
        self.change_incident("incident.publish", Role::Maintainer, id, |i, now| {
            Ok(IncidentChange {
                updates: vec![i.publish(now)?],
                alert: None,
            })
        })
        .await
    }

    /// Post an update: words, perhaps a new status, perhaps new component statuses.
    pub async fn post_incident_update(
        &self,
        id: i64,
        status: Option<IncidentStatus>,
        body: &str,
        components: Option<Vec<(i64, ComponentStatus)>>,
    ) -> ServiceResult<Incident> {
        self.change_incident("incident.update", Role::Maintainer, id, |i, now| {
            Ok(IncidentChange {
                updates: vec![i.post_update(status, body, components.clone(), now)?],
                alert: None,
            })
        })
        .await
    }

    pub async fn resolve_incident(&self, id: i64, body: &str) -> ServiceResult<Incident> {
        self.change_incident("incident.resolve", Role::Maintainer, id, |i, now| {
            Ok(IncidentChange {
                updates: vec![i.resolve(body, now)?],
                alert: None,
            })
        })
        .await
    }

    pub async fn reopen_incident(&self, id: i64, note: &str) -> ServiceResult<Incident> {
        self.change_incident("incident.reopen", Role::Maintainer, id, |i, now| {
            Ok(IncidentChange {
                updates: vec![i.reopen(note, None, now)?],
                alert: None,
            })
        })
        .await
    }

    /// Write (or correct) the postmortem; the first time it is announced.
    pub async fn set_postmortem(&self, id: i64, text: &str) -> ServiceResult<Incident> {
        self.change_incident("incident.postmortem", Role::Maintainer, id, |i, now| {
            Ok(IncidentChange {
                updates: i.set_postmortem(text, now)?.into_iter().collect(),
                alert: None,
            })
        })
        .await
    }
}
