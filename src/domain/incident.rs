//! Incidents: the unplanned, told as well as the planned. The rules live here, without I/O: an
//! incident's status moves forward (`investigating` → `identified` → `monitoring` →
//! `resolved`, steps may be skipped), reopens from `resolved` with a note, is a draft (never
//! public, never announced) until published, and carries its affected components each with
//! a status of its own. A component's shown status is the worst of what affects it.

use jiff::Timestamp;

use super::{
    ComponentStatus, DomainError, Impact, RuleError, ValidationError, clean_line, clean_text,
    limits,
};

/// Where an incident stands. The order is the order it moves in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IncidentStatus {
    Investigating,
    Identified,
    Monitoring,
    Resolved,
}

impl IncidentStatus {
    pub const ALL: [Self; 4] = [
        Self::Investigating,
        Self::Identified,
        Self::Monitoring,
        Self::Resolved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Investigating => "investigating",
            Self::Identified => "identified",
            Self::Monitoring => "monitoring",
            Self::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|i| i.as_str() == s)
    }

    /// What an incident says when its opener gave no words.
    pub fn default_body(self) -> &'static str {
        match self {
            Self::Investigating => "We are investigating this issue.",
            Self::Identified => "The cause has been identified and a fix is under way.",
            Self::Monitoring => "A fix is in place; we are monitoring the results.",
            Self::Resolved => "This incident has been resolved.",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Investigating => "Investigating",
            Self::Identified => "Identified",
            Self::Monitoring => "Monitoring",
            Self::Resolved => "Resolved",
        }
    }
}

/// A component's shown status: the worst of what affects it now (the open incidents'
/// statuses for it, a running window's), `operational` when nothing does.
pub fn shown_status(affecting: impl IntoIterator<Item = ComponentStatus>) -> ComponentStatus {
    affecting
        .into_iter()
        .max()
        .unwrap_or(ComponentStatus::Operational)
}

/// What kind of timeline entry an incident update is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IncidentUpdateKind {
    /// The incident made public: its first announcement.
    Published,
    /// The status moved (to the update's status).
    Status,
    /// A note, the status unchanged (perhaps the components').
    Note,
    Resolved,
    Reopened,
    /// The postmortem, published once after resolution.
    Postmortem,
}

impl IncidentUpdateKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Published => "published",
            Self::Status => "status",
            Self::Note => "note",
            Self::Resolved => "resolved",
            Self::Reopened => "reopened",
            Self::Postmortem => "postmortem",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Published,
            Self::Status,
            Self::Note,
            Self::Resolved,
            Self::Reopened,
            Self::Postmortem,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    /// The event channels choose to receive for this update.
    pub fn event(self) -> super::UpdateKind {
        use super::UpdateKind;
        match self {
            Self::Published => UpdateKind::IncidentOpened,
            Self::Status | Self::Note => UpdateKind::IncidentUpdated,
            Self::Resolved => UpdateKind::IncidentResolved,
            Self::Reopened => UpdateKind::IncidentReopened,
            Self::Postmortem => UpdateKind::IncidentPostmortem,
        }
    }

    pub fn label(self, status: IncidentStatus) -> &'static str {
        match self {
            Self::Published | Self::Status | Self::Note => status.label(),
            Self::Resolved => "Resolved",
            Self::Reopened => "Reopened",
            Self::Postmortem => "Postmortem",
        }
    }
}

/// A stored timeline entry of an incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentUpdate {
    pub id: i64,
    pub incident_id: i64,
    pub kind: IncidentUpdateKind,
    pub status: IncidentStatus,
    pub body: String,
    /// The components' statuses after this update, when it changed them.
    pub components: Option<Vec<(i64, ComponentStatus)>>,
    /// Who posted it: user:NAME, token:NAME, alerts:SOURCE.
    pub actor: String,
    pub created_at: Timestamp,
    /// Whether it was announced (a draft's updates never are).
    pub announced: bool,
}

/// A timeline entry a rule produces: what is written with the change and, unless the
/// incident is a draft, announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIncidentUpdate {
    pub kind: IncidentUpdateKind,
    /// The incident's status after this update.
    pub status: IncidentStatus,
    pub body: String,
    /// The components' statuses after this update, when it changed them.
    pub components: Option<Vec<(i64, ComponentStatus)>>,
    /// Whether it is announced: never for a draft.
    pub announce: bool,
}

/// An incident as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incident {
    pub id: i64,
    pub title: String,
    /// Statuspage's levels, as a window's impact.
    pub impact: Impact,
    pub status: IncidentStatus,
    /// Affected components, each with its status (by component id, sorted).
    pub components: Vec<(i64, ComponentStatus)>,
    /// `None` while a draft: never public, never announced.
    pub published_at: Option<Timestamp>,
    pub started_at: Timestamp,
    pub resolved_at: Option<Timestamp>,
    /// Markdown, written after resolution.
    pub postmortem: Option<String>,
    pub postmortem_published_at: Option<Timestamp>,
    /// The window whose failed step it was opened from, if any.
    pub maintenance_id: Option<i64>,
    /// The rollout whose failure or stall it was opened from, if any.
    pub rollout_id: Option<i64>,
    /// Who opened it: `manual`, or the monitor whose alert did (`alertmanager`, …).
    pub source: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Optimistic-concurrency version, as windows and rollouts have.
    pub version: i64,
}

/// What a new incident needs; validated by [`NewIncident::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIncident {
    pub title: String,
    pub impact: Impact,
    pub status: IncidentStatus,
    pub components: Vec<(i64, ComponentStatus)>,
    /// The first update's text.
    pub body: String,
    /// Published at once (else a draft a maintainer publishes).
    pub publish: bool,
    pub maintenance_id: Option<i64>,
    pub rollout_id: Option<i64>,
    /// `manual`, or the monitor opening it.
    pub source: String,
}

/// Check a component list: incident statuses only, each component once (sorted by id).
fn clean_components(
    mut components: Vec<(i64, ComponentStatus)>,
) -> Result<Vec<(i64, ComponentStatus)>, ValidationError> {
    if components.iter().any(|(_, s)| !s.is_incident_status()) {
        return Err(ValidationError::new(
            "components",
            "a component's status in an incident is degraded_performance, partial_outage or \
             major_outage",
        ));
    }
    components.sort_by_key(|(id, _)| *id);
    if components.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(ValidationError::new(
            "components",
            "each component may be named once",
        ));
    }
    Ok(components)
}

impl NewIncident {
    pub fn validate(self) -> Result<Self, ValidationError> {
        let title = clean_line("title", &self.title, limits::TITLE_MAX, true)?.unwrap_or_default();
        let body = clean_text("body", &self.body, limits::UPDATE_MAX, true)?.unwrap_or_default();
        if self.status == IncidentStatus::Resolved {
            return Err(ValidationError::new(
                "status",
                "a new incident is investigating, identified or monitoring",
            ));
        }
        Ok(Self {
            title,
            body,
            components: clean_components(self.components)?,
            ..self
        })
    }
}

impl Incident {
    /// A new incident from `new` (validated), and its first timeline entry.
    pub fn open(new: NewIncident, now: Timestamp) -> (Self, NewIncidentUpdate) {
        let incident = Self {
            id: 0,
            title: new.title,
            impact: new.impact,
            status: new.status,
            components: new.components.clone(),
            published_at: new.publish.then_some(now),
            started_at: now,
            resolved_at: None,
            postmortem: None,
            postmortem_published_at: None,
            maintenance_id: new.maintenance_id,
            rollout_id: new.rollout_id,
            source: new.source,
            created_at: now,
            updated_at: now,
            version: 0,
        };
        let update = NewIncidentUpdate {
            kind: IncidentUpdateKind::Published,
            status: new.status,
            body: new.body,
            components: Some(new.components),
            announce: new.publish,
        };
        (incident, update)
    }

    pub fn is_draft(&self) -> bool {
        self.published_at.is_none()
    }

    pub fn is_public(&self) -> bool {
        !self.is_draft()
    }

    pub fn is_open(&self) -> bool {
        self.status != IncidentStatus::Resolved
    }

    /// The status this incident gives `component` now: `None` when it does not affect it (or
    /// is resolved, or a draft: what is not public does not colour the page).
    pub fn status_of(&self, component: i64) -> Option<ComponentStatus> {
        if !self.is_open() || self.is_draft() {
            return None;
        }
        self.components
            .iter()
            .find(|(id, _)| *id == component)
            .map(|(_, s)| *s)
    }

    /// Correct the title or impact: the page changes, nothing is announced (the next update
    /// carries the change to the channels).
    pub fn edit(
        &mut self,
        title: Option<&str>,
        impact: Option<Impact>,
        now: Timestamp,
    ) -> Result<(), ValidationError> {
        let before = (self.title.clone(), self.impact);
        if let Some(t) = title {
            self.title = clean_line("title", t, limits::TITLE_MAX, true)?.unwrap_or_default();
        }
        if let Some(i) = impact {
            self.impact = i;
        }
        if (self.title.clone(), self.impact) != before {
            self.updated_at = now;
        }
        Ok(())
    }

    /// Make a draft public: its first announcement, with what it says now.
    pub fn publish(&mut self, now: Timestamp) -> Result<NewIncidentUpdate, DomainError> {
        if !self.is_draft() {
            return Err(RuleError::new("this incident is public already").into());
        }
        self.published_at = Some(now);
        self.updated_at = now;
        Ok(NewIncidentUpdate {
            kind: IncidentUpdateKind::Published,
            status: self.status,
            body: format!("{}: {}", self.status.label(), self.title),
            components: Some(self.components.clone()),
            announce: true,
        })
    }

    /// An update: a note, perhaps a new status (forward only; `resolved` goes through
    /// [`Self::resolve`]) and perhaps new component statuses.
    pub fn post_update(
        &mut self,
        status: Option<IncidentStatus>,
        body: &str,
        components: Option<Vec<(i64, ComponentStatus)>>,
        now: Timestamp,
    ) -> Result<NewIncidentUpdate, DomainError> {
        if !self.is_open() {
            return Err(
                RuleError::new("this incident is resolved: reopen it to post an update").into(),
            );
        }
        let body = clean_text("body", body, limits::UPDATE_MAX, true)?.unwrap_or_default();
        let kind = match status {
            Some(IncidentStatus::Resolved) => {
                return Err(RuleError::new("resolve the incident to say it is resolved").into());
            }
            Some(s) if s < self.status => {
                return Err(RuleError::new(format!(
                    "an incident moves forward: it is {} already",
                    self.status.as_str()
                ))
                .into());
            }
            Some(s) if s > self.status => {
                self.status = s;
                IncidentUpdateKind::Status
            }
            _ => IncidentUpdateKind::Note,
        };
        let components = match components {
            Some(c) => {
                let c = clean_components(c)?;
                self.components = c.clone();
                Some(c)
            }
            None => None,
        };
        self.updated_at = now;
        Ok(NewIncidentUpdate {
            kind,
            status: self.status,
            body,
            components,
            announce: self.is_public(),
        })
    }

    /// Resolved, with a closing update; its components are no longer affected.
    pub fn resolve(
        &mut self,
        body: &str,
        now: Timestamp,
    ) -> Result<NewIncidentUpdate, DomainError> {
        if !self.is_open() {
            return Err(RuleError::new("this incident is resolved already").into());
        }
        let body = clean_text("body", body, limits::UPDATE_MAX, true)?.unwrap_or_default();
        self.status = IncidentStatus::Resolved;
        self.resolved_at = Some(now);
        self.updated_at = now;
        Ok(NewIncidentUpdate {
            kind: IncidentUpdateKind::Resolved,
            status: IncidentStatus::Resolved,
            body,
            components: None,
            announce: self.is_public(),
        })
    }

    /// Open again after resolution (it came back), with a note saying why; back to
    /// `investigating`.
    pub fn reopen(
        &mut self,
        note: &str,
        components: Option<Vec<(i64, ComponentStatus)>>,
        now: Timestamp,
    ) -> Result<NewIncidentUpdate, DomainError> {
        if self.is_open() {
            return Err(RuleError::new("this incident is open").into());
        }
        let body = clean_text("note", note, limits::UPDATE_MAX, true)?.unwrap_or_default();
        let components = components.map(clean_components).transpose()?;
        if let Some(c) = &components {
            self.components = c.clone();
        }
        self.status = IncidentStatus::Investigating;
        self.resolved_at = None;
        self.updated_at = now;
        Ok(NewIncidentUpdate {
            kind: IncidentUpdateKind::Reopened,
            status: IncidentStatus::Investigating,
            body,
            components,
            announce: self.is_public(),
        })
    }

    /// The components with `more` joined in, each at the worse of its two statuses; `None`
    /// when that changes nothing (what a monitor's alert adds to an incident).
    pub fn joined_components(
        &self,
        more: &[(i64, ComponentStatus)],
    ) -> Option<Vec<(i64, ComponentStatus)>> {
        let mut merged = self.components.clone();
        for (c, status) in more {
            match merged.iter_mut().find(|(m, _)| m == c) {
                Some((_, old)) => *old = (*old).max(*status),
                None => merged.push((*c, *status)),
            }
        }
        merged.sort_by_key(|(c, _)| *c);
        (merged != self.components).then_some(merged)
    }

    /// The postmortem (markdown): written after resolution, announced the first time it is
    /// published; later edits change the page only.
    pub fn set_postmortem(
        &mut self,
        text: &str,
        now: Timestamp,
    ) -> Result<Option<NewIncidentUpdate>, DomainError> {
        if self.is_open() {
            return Err(RuleError::new("a postmortem follows the resolution").into());
        }
        let text =
            clean_text("postmortem", text, limits::DESCRIPTION_MAX, true)?.unwrap_or_default();
        self.postmortem = Some(text.clone());
        self.updated_at = now;
        if self.postmortem_published_at.is_some() {
            return Ok(None);
        }
        self.postmortem_published_at = Some(now);
        Ok(Some(NewIncidentUpdate {
            kind: IncidentUpdateKind::Postmortem,
            status: IncidentStatus::Resolved,
            body: text,
            components: None,
            announce: self.is_public(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn new(publish: bool) -> Incident {
        let new = NewIncident {
            title: "API errors".into(),
            impact: Impact::Major,
            status: IncidentStatus::Investigating,
            components: vec![(2, ComponentStatus::PartialOutage)],
            body: "Writes fail for some clients.".into(),
            publish,
            maintenance_id: None,
            rollout_id: None,
            source: "manual".into(),
        }
        .validate()
        .unwrap();
        Incident::open(new, at(0)).0
    }

    #[test]
    fn status_moves_forward_and_reopens_from_resolved() {
        let mut i = new(true);
        // Steps may be skipped.
        let u = i
            .post_update(
                Some(IncidentStatus::Monitoring),
                "Fix deployed.",
                None,
                at(60),
            )
            .unwrap();
        assert_eq!(u.kind, IncidentUpdateKind::Status);
        assert!(u.announce);
        let back = i.post_update(Some(IncidentStatus::Identified), "x", None, at(70));
        assert!(matches!(back, Err(DomainError::Rule(_))));
        let note = i
            .post_update(None, "Still watching.", None, at(80))
            .unwrap();
        assert_eq!(note.kind, IncidentUpdateKind::Note);
        assert_eq!(note.status, IncidentStatus::Monitoring);
        assert!(
            i.post_update(Some(IncidentStatus::Resolved), "x", None, at(90))
                .is_err()
        );
        i.resolve("All clear.", at(100)).unwrap();
        assert_eq!(i.resolved_at, Some(at(100)));
        assert!(i.post_update(None, "late", None, at(110)).is_err());
        assert!(i.resolve("again", at(110)).is_err());
        let u = i.reopen("It came back.", None, at(120)).unwrap();
        assert_eq!(u.kind, IncidentUpdateKind::Reopened);
        assert_eq!(i.status, IncidentStatus::Investigating);
        assert_eq!(i.resolved_at, None);
        assert!(i.reopen("twice", None, at(130)).is_err());
    }

    #[test]
    fn an_alert_joins_components_and_a_reopening_names_them() {
        use ComponentStatus::*;
        let mut i = new(true);
        assert_eq!(i.joined_components(&[(2, Degraded)]), None, "nothing worse");
        assert_eq!(
            i.joined_components(&[(2, MajorOutage), (1, Degraded)]),
            Some(vec![(1, Degraded), (2, MajorOutage)])
        );
        i.resolve("Fixed.", at(1)).unwrap();
        let u = i
            .reopen("Back.", i.joined_components(&[(3, PartialOutage)]), at(2))
            .unwrap();
        assert_eq!(u.kind, IncidentUpdateKind::Reopened);
        assert_eq!(
            u.components,
            Some(vec![(2, PartialOutage), (3, PartialOutage)])
        );
        assert_eq!(i.status_of(3), Some(PartialOutage));
    }

    #[test]
    fn a_draft_is_never_announced_until_published() {
        let mut i = new(false);
        assert!(i.is_draft());
        assert_eq!(i.status_of(2), None, "a draft does not colour the page");
        let u = i
            .post_update(Some(IncidentStatus::Identified), "Found it.", None, at(10))
            .unwrap();
        assert!(!u.announce);
        let published = i.publish(at(20)).unwrap();
        assert!(published.announce);
        assert_eq!(published.status, IncidentStatus::Identified);
        assert_eq!(i.status_of(2), Some(ComponentStatus::PartialOutage));
        assert!(i.publish(at(30)).is_err());
    }

    #[test]
    fn components_take_incident_statuses_once_each() {
        let mut i = new(true);
        let refused = i.post_update(
            None,
            "x",
            Some(vec![(3, ComponentStatus::Operational)]),
            at(1),
        );
        assert!(matches!(refused, Err(DomainError::Invalid(_))));
        let twice = i.post_update(
            None,
            "x",
            Some(vec![
                (3, ComponentStatus::MajorOutage),
                (3, ComponentStatus::PartialOutage),
            ]),
            at(1),
        );
        assert!(twice.is_err());
        let u = i
            .post_update(
                None,
                "Worse.",
                Some(vec![
                    (3, ComponentStatus::MajorOutage),
                    (2, ComponentStatus::Degraded),
                ]),
                at(2),
            )
            .unwrap();
        assert_eq!(
            u.components.unwrap(),
            vec![
                (2, ComponentStatus::Degraded),
                (3, ComponentStatus::MajorOutage)
            ]
        );
        i.resolve("Fixed.", at(3)).unwrap();
        assert_eq!(i.status_of(3), None, "a resolved incident affects nothing");
    }

    #[test]
    fn the_shown_status_is_the_worst() {
        use ComponentStatus::*;
        assert_eq!(shown_status([]), Operational);
        assert_eq!(shown_status([Degraded, MajorOutage]), MajorOutage);
        // As Statuspage ranks them: planned work is less severe than a degradation.
        assert_eq!(shown_status([UnderMaintenance, Degraded]), Degraded);
        assert_eq!(
            shown_status([UnderMaintenance, PartialOutage]),
            PartialOutage
        );
        for s in ComponentStatus::ALL {
            assert_eq!(ComponentStatus::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn a_postmortem_follows_the_resolution_and_is_announced_once() {
        let mut i = new(true);
        assert!(i.set_postmortem("Too early.", at(1)).is_err());
        i.resolve("Fixed.", at(2)).unwrap();
        let first = i.set_postmortem("What happened: …", at(3)).unwrap();
        assert!(first.is_some_and(|u| u.announce && u.kind == IncidentUpdateKind::Postmortem));
        let edit = i
            .set_postmortem("What happened, corrected: …", at(4))
            .unwrap();
        assert!(edit.is_none(), "an edit is not announced again");
        assert_eq!(i.postmortem.as_deref(), Some("What happened, corrected: …"));
    }

    #[test]
    fn a_new_incident_is_checked() {
        let bad = NewIncident {
            title: "Down\r\nBCC".into(),
            impact: Impact::Minor,
            status: IncidentStatus::Investigating,
            components: vec![],
            body: "x".into(),
            publish: true,
            maintenance_id: None,
            rollout_id: None,
            source: "manual".into(),
        };
        assert_eq!(bad.clone().validate().unwrap_err().field, "title");
        let resolved = NewIncident {
            title: "Down".into(),
            status: IncidentStatus::Resolved,
            ..bad
        };
        assert_eq!(resolved.validate().unwrap_err().field, "status");
    }
}

/// How a day went for a component, best to worst: a cell of its 90-day strip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DayLevel {
    /// Before Herald knew the component.
    NoData,
    Operational,
    Maintenance,
    Degraded,
    PartialOutage,
    MajorOutage,
}

impl DayLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoData => "no_data",
            Self::Operational => "operational",
            Self::Maintenance => "maintenance",
            Self::Degraded => "degraded_performance",
            Self::PartialOutage => "partial_outage",
            Self::MajorOutage => "major_outage",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::NoData => "No data",
            Self::Operational => "No incidents",
            Self::Maintenance => "Maintenance",
            Self::Degraded => "Degraded performance",
            Self::PartialOutage => "Partial outage",
            Self::MajorOutage => "Major outage",
        }
    }

    fn of(status: ComponentStatus) -> Self {
        match status {
            ComponentStatus::Operational => Self::Operational,
            ComponentStatus::UnderMaintenance => Self::Maintenance,
            ComponentStatus::Degraded => Self::Degraded,
            ComponentStatus::PartialOutage => Self::PartialOutage,
            ComponentStatus::MajorOutage => Self::MajorOutage,
        }
    }
}

/// One day (UTC) of a component's strip: its worst level and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayCell {
    pub date: jiff::civil::Date,
    pub level: DayLevel,
    /// "Partial outage: API errors", "Maintenance: DecAPI migration", oldest first.
    pub events: Vec<String>,
}

/// The last `days` days (UTC, oldest first, today last) of `component`: each coloured by the
/// worst public incident or running window that touched it that day.
pub fn history_strip(
    component: &super::Component,
    incidents: &[Incident],
    windows: &[super::Maintenance],
    days: i32,
    now: Timestamp,
) -> Vec<DayCell> {
    let today = now.to_zoned(jiff::tz::TimeZone::UTC).date();
    (0..days)
        .rev()
        .filter_map(|back| {
            let date = today.checked_sub(jiff::Span::new().days(back)).ok()?;
            let start = date.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
            let end = start
                .checked_add(jiff::SignedDuration::from_hours(24))
                .ok()?;
            if end <= component.created_at {
                return Some(DayCell {
                    date,
                    level: DayLevel::NoData,
                    events: Vec::new(),
                });
            }
            let mut level = DayLevel::Operational;
            let mut events = Vec::new();
            for w in windows {
                let Some(started) = w.started_at else {
                    continue;
                };
                if started < end
                    && w.finished_at.unwrap_or(now) >= start
                    && w.components.iter().any(|c| c.id == component.id)
                {
                    level = level.max(DayLevel::Maintenance);
                    events.push(format!("Maintenance: {}", w.title));
                }
            }
            for i in incidents.iter().filter(|i| i.is_public()) {
                let Some(status) = i
                    .components
                    .iter()
                    .find(|(c, _)| *c == component.id)
                    .map(|(_, s)| *s)
                else {
                    continue;
                };
                if i.started_at < end && i.resolved_at.unwrap_or(now) >= start {
                    let l = DayLevel::of(status);
                    level = level.max(l);
                    events.push(format!("{}: {}", l.label(), i.title));
                }
            }
            if let Some(m) = &component.manual
                && m.at < end
            {
                level = level.max(DayLevel::of(m.status));
                events.push(format!("{}: {}", DayLevel::of(m.status).label(), m.note));
            }
            Some(DayCell {
                date,
                level,
                events,
            })
        })
        .collect()
}

#[cfg(test)]
mod strip_tests {
    use super::*;

    #[test]
    fn a_day_takes_the_worst_that_touched_the_component() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let day = jiff::SignedDuration::from_hours(24);
        let component = crate::domain::Component {
            id: 2,
            slug: "api".into(),
            name: "API".into(),
            description: None,
            group_name: None,
            position: 1,
            created_at: now.checked_sub(day * 10).unwrap(),
            manual: None,
        };
        let new = NewIncident {
            title: "API errors".into(),
            impact: Impact::Major,
            status: IncidentStatus::Investigating,
            components: vec![(2, ComponentStatus::PartialOutage)],
            body: "x".into(),
            publish: true,
            maintenance_id: None,
            rollout_id: None,
            source: "manual".into(),
        };
        let mut i = Incident::open(new.validate().unwrap(), now.checked_sub(day * 3).unwrap()).0;
        i.resolve("ok", now.checked_sub(day * 3).unwrap()).unwrap();
        let mut draft = i.clone();
        draft.published_at = None;
        draft.components = vec![(2, ComponentStatus::MajorOutage)];
        let strip = history_strip(&component, &[i, draft], &[], 90, now);
        assert_eq!(strip.len(), 90);
        assert_eq!(strip[89].date, now.to_zoned(jiff::tz::TimeZone::UTC).date());
        assert_eq!(strip[0].level, DayLevel::NoData, "before Herald knew it");
        assert_eq!(
            strip[86].level,
            DayLevel::PartialOutage,
            "a draft never counts"
        );
        assert_eq!(
            strip[86].events,
            vec!["Partial outage: API errors".to_owned()]
        );
        assert_eq!(strip[85].level, DayLevel::Operational);
        assert_eq!(strip[88].level, DayLevel::Operational);
    }
}
