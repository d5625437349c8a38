//! The JSON shapes of windows and rollouts, shared by `/api/v1` and the signed webhooks: a
//! webhook receiver reads a window or a rollout exactly as the API returns it. Described in the
//! OpenAPI document through their `ToSchema` derives.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{self, Counts, Maintenance, Rollout, RolloutUpdate, Target, Update};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ImpactJson {
    None,
    Minor,
    Major,
    Critical,
}

impl From<ImpactJson> for domain::Impact {
    fn from(i: ImpactJson) -> Self {
        match i {
            ImpactJson::None => Self::None,
            ImpactJson::Minor => Self::Minor,
            ImpactJson::Major => Self::Major,
            ImpactJson::Critical => Self::Critical,
        }
    }
}

impl From<domain::Impact> for ImpactJson {
    fn from(i: domain::Impact) -> Self {
        match i {
            domain::Impact::None => Self::None,
            domain::Impact::Minor => Self::Minor,
            domain::Impact::Major => Self::Major,
            domain::Impact::Critical => Self::Critical,
        }
    }
}

/// A maintenance window with its plan.
#[derive(Debug, Serialize, ToSchema)]
pub struct MaintenanceJson {
    pub id: i64,
    pub title: String,
    /// Markdown.
    pub description: String,
    /// `draft`, `planned`, `scheduled`, `in_progress`, `completed` or `cancelled`.
    #[schema(pattern = "^(draft|planned|scheduled|in_progress|completed|cancelled)$")]
    pub state: &'static str,
    pub impact: ImpactJson,
    pub starts_at: Option<Timestamp>,
    pub ends_at: Option<Timestamp>,
    pub schedule_hint: Option<String>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub announced_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The public page (once announced).
    pub url: String,
    /// Slugs of the affected components.
    pub components: Vec<String>,
    pub steps: Vec<StepJson>,
    pub steps_done: usize,
    pub steps_total: usize,
    /// In progress past its expected end.
    pub overrunning: bool,
    /// Starts by itself at `starts_at`.
    pub auto_start: bool,
    /// Completes by itself at `ends_at` (when no step is pending or in progress).
    pub auto_complete: bool,
    /// Seconds before `starts_at` at which a reminder is announced, largest first.
    pub reminders: Vec<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StepJson {
    /// 1-based place in the plan.
    pub position: i64,
    pub title: String,
    pub description: Option<String>,
    /// `pending`, `in_progress`, `done`, `failed` or `skipped`.
    #[schema(pattern = "^(pending|in_progress|done|failed|skipped)$")]
    pub state: &'static str,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub note: Option<String>,
    pub attempts: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UpdateJson {
    pub id: i64,
    /// What happened: `announced`, `rescheduled`, `started`, `step_started`, `step_done`,
    /// `step_failed`, `step_skipped`, `note`, `reminder`, `overrunning`, `completed`,
    /// `cancelled`.
    pub kind: &'static str,
    pub body: String,
    pub note: Option<String>,
    pub step_position: Option<i64>,
    pub created_at: Timestamp,
    /// When its text or note was last corrected after it went out; absent if never.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<Timestamp>,
}

pub fn maintenance_json(m: &Maintenance, public_url: &str, now: Timestamp) -> MaintenanceJson {
    MaintenanceJson {
        id: m.id,
        title: m.title.clone(),
        description: m.description.clone(),
        state: m.state.as_str(),
        impact: m.impact.into(),
        starts_at: m.starts_at,
        ends_at: m.ends_at,
        schedule_hint: m.schedule_hint.clone(),
        started_at: m.started_at,
        finished_at: m.finished_at,
        announced_at: m.announced_at,
        created_at: m.created_at,
        updated_at: m.updated_at,
        url: format!("{public_url}/maintenance/{}", m.id),
        components: m.components.iter().map(|c| c.slug.clone()).collect(),
        steps: m
            .steps
            .iter()
            .map(|s| StepJson {
                position: s.position,
                title: s.title.clone(),
                description: s.description.clone(),
                state: s.state.as_str(),
                started_at: s.started_at,
                finished_at: s.finished_at,
                note: s.note.clone(),
                attempts: s.attempts,
            })
            .collect(),
        steps_done: m.steps_done(),
        steps_total: m.steps.len(),
        overrunning: m.is_overrunning(now),
        auto_start: m.automation.auto_start,
        auto_complete: m.automation.auto_complete,
        reminders: m.automation.reminders.clone(),
    }
}

pub fn update_json(u: &Update) -> UpdateJson {
    UpdateJson {
        id: u.id,
        kind: u.kind.as_str(),
        body: u.body.clone(),
        note: u.note.clone(),
        step_position: u.step_position,
        created_at: u.created_at,
        edited_at: u.edited_at,
    }
}

// ----- rollouts ----------------------------------------------------------------------

/// A rollout with its targets.
#[derive(Debug, Serialize, ToSchema)]
pub struct RolloutJson {
    pub id: i64,
    pub title: String,
    /// Markdown.
    pub description: String,
    pub from_version: Option<String>,
    pub to_version: String,
    /// The maintenance window it belongs to.
    pub maintenance_id: Option<i64>,
    /// `pending`, `in_progress`, `paused`, `completed`, `failed` or `aborted`.
    #[schema(pattern = "^(pending|in_progress|paused|completed|failed|aborted)$")]
    pub state: &'static str,
    /// In progress with no progress (a target advancing or a count going down) within the
    /// progress deadline.
    pub stalled: bool,
    /// When the stall was announced.
    pub stalled_at: Option<Timestamp>,
    pub progress_deadline_seconds: i64,
    pub stale_after_seconds: i64,
    /// Whether the public pages name targets, or number them.
    pub public_names: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub last_progress_at: Option<Timestamp>,
    /// The rollout this one reverses.
    pub rollback_of: Option<i64>,
    /// The rollout that reverses this one.
    pub rolled_back_by: Option<i64>,
    /// The public page.
    pub url: String,
    /// One line: "2 of 3 targets on v1.4.0, fishjam-3 draining: rooms 4".
    pub summary: String,
    /// "v1.4.0 on 2 of 3 instances · v1.3.2 on 1".
    pub versions_headline: String,
    pub versions: Vec<VersionCount>,
    pub targets_total: usize,
    pub targets_healthy: usize,
    pub targets: Vec<TargetJson>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionCount {
    pub version: String,
    pub targets: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TargetJson {
    /// 1-based place in the rollout.
    pub position: i64,
    pub name: String,
    /// `pending`, `draining`, `drained`, `updating`, `healthy` or `failed`.
    #[schema(pattern = "^(pending|draining|drained|updating|healthy|failed)$")]
    pub state: &'static str,
    /// The version it runs, as far as Herald knows.
    pub version: Option<String>,
    /// Live work left, by label.
    #[schema(value_type = BTreeMap<String, i64>)]
    pub remaining: Counts,
    /// The counts when its drain began.
    #[schema(value_type = BTreeMap<String, i64>)]
    pub remaining_at_drain_start: Counts,
    pub drain_started_at: Option<Timestamp>,
    pub drained_at: Option<Timestamp>,
    /// Seconds the drain has taken so far (or took).
    pub drain_seconds: Option<i64>,
    /// When the drain should be over at the rate observed over the last 15 minutes
    /// (least-squares per label; the slowest label decides); null when counts are flat or
    /// rising or there is too little data.
    pub estimated_drained_at: Option<Timestamp>,
    pub changed_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub last_report_at: Option<Timestamp>,
    /// Moving (draining, drained, updating) but silent for longer than the stale-report time.
    pub stale: bool,
    /// Taken to updating or healthy before its drain finished.
    pub forced: bool,
    pub forced_reason: Option<String>,
    pub note: Option<String>,
    /// 1, plus one per retry.
    pub attempts: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RolloutUpdateJson {
    pub id: i64,
    /// What happened: `rollout_started`, `target_draining`, `target_drained`,
    /// `target_updating`, `target_healthy`, `target_failed`, `target_forced`,
    /// `target_retried`, `rollout_paused`, `rollout_resumed`, `rollout_stalled`,
    /// `rollout_completed`, `rollout_failed`, `rollout_aborted`, `rollout_rolled_back`,
    /// `rollout_note`.
    pub kind: &'static str,
    pub body: String,
    pub note: Option<String>,
    /// The target concerned.
    pub target: Option<String>,
    /// Who made the change: `user:NAME`, `token:NAME` or `scheduler`.
    pub actor: String,
    pub created_at: Timestamp,
}

pub fn target_json(r: &Rollout, t: &Target, now: Timestamp) -> TargetJson {
    TargetJson {
        position: t.position,
        name: t.name.clone(),
        state: t.state.as_str(),
        version: r.version_of(t).map(str::to_owned),
        remaining: t.remaining.clone(),
        remaining_at_drain_start: t.drain_start_counts.clone(),
        drain_started_at: t.drain_started_at,
        drained_at: t.drained_at,
        drain_seconds: t.drain_time(now).map(|d| d.as_secs()),
        estimated_drained_at: t.drain_estimate().map(|e| e.at),
        changed_at: t.changed_at,
        finished_at: t.finished_at,
        last_report_at: t.last_report_at,
        stale: t.is_stale(r.stale_after, now),
        forced: t.forced,
        forced_reason: t.forced_reason.clone(),
        note: t.note.clone(),
        attempts: t.attempts,
    }
}

pub fn rollout_json(r: &Rollout, public_url: &str, now: Timestamp) -> RolloutJson {
    RolloutJson {
        id: r.id,
        title: r.title.clone(),
        description: r.description.clone(),
        from_version: r.from_version.clone(),
        to_version: r.to_version.clone(),
        maintenance_id: r.maintenance_id,
        state: r.state.as_str(),
        stalled: r.is_stalled(now),
        stalled_at: r.stalled_at,
        progress_deadline_seconds: r.progress_deadline.as_secs(),
        stale_after_seconds: r.stale_after.as_secs(),
        public_names: r.public_names,
        created_at: r.created_at,
        updated_at: r.updated_at,
        started_at: r.started_at,
        finished_at: r.finished_at,
        last_progress_at: r.last_progress_at,
        rollback_of: r.rollback_of,
        rolled_back_by: r.rolled_back_by,
        url: format!("{public_url}/rollouts/{}", r.id),
        summary: r.summary(),
        versions_headline: r.version_headline(),
        versions: r
            .version_mix()
            .into_iter()
            .map(|(version, targets)| VersionCount { version, targets })
            .collect(),
        targets_total: r.targets.len(),
        targets_healthy: r.healthy(),
        targets: r.targets.iter().map(|t| target_json(r, t, now)).collect(),
    }
}

pub fn rollout_update_json(u: &RolloutUpdate) -> RolloutUpdateJson {
    RolloutUpdateJson {
        id: u.id,
        kind: u.kind.as_str(),
        body: u.body.clone(),
        note: u.note.clone(),
        target: u.target.clone(),
        actor: u.actor.clone(),
        created_at: u.created_at,
    }
}

/// A component an incident affects, with the status it gives it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct AffectedJson {
    /// The component's slug.
    pub slug: String,
    /// `degraded_performance`, `partial_outage` or `major_outage`.
    #[schema(pattern = "^(degraded_performance|partial_outage|major_outage)$")]
    pub status: String,
}

/// An incident: what broke, how badly, and where it stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct IncidentJson {
    pub id: i64,
    pub title: String,
    pub impact: ImpactJson,
    /// `investigating`, `identified`, `monitoring` or `resolved`.
    #[schema(pattern = "^(investigating|identified|monitoring|resolved)$")]
    pub status: &'static str,
    /// Not yet published: not public, not announced.
    pub draft: bool,
    pub published_at: Option<Timestamp>,
    pub started_at: Timestamp,
    pub resolved_at: Option<Timestamp>,
    /// Markdown, after resolution.
    pub postmortem: Option<String>,
    pub postmortem_published_at: Option<Timestamp>,
    /// The window it was opened from (a failed step), if any.
    pub maintenance_id: Option<i64>,
    /// The rollout it was opened from, if any.
    pub rollout_id: Option<i64>,
    pub components: Vec<AffectedJson>,
    /// Who opened it: `manual` (a person or script), or the monitor whose alert did
    /// (`alertmanager`, `grafana`, `uptime-kuma`).
    pub source: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The public page (once published).
    pub url: String,
    /// The timeline, newest first (the newest 50): on a single incident, not in lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updates: Option<Vec<IncidentUpdateJson>>,
}

/// One entry of an incident's timeline.
#[derive(Debug, Serialize, ToSchema)]
pub struct IncidentUpdateJson {
    pub id: i64,
    /// `published`, `status`, `note`, `resolved`, `reopened` or `postmortem`.
    #[schema(pattern = "^(published|status|note|resolved|reopened|postmortem)$")]
    pub kind: &'static str,
    /// The incident's status after this update.
    pub status: &'static str,
    /// Markdown.
    pub body: String,
    /// The components' statuses after this update, when it changed them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub components: Option<Vec<AffectedJson>>,
    pub created_at: Timestamp,
}

/// Component ids and statuses as slugs and names; components no longer known are left out.
pub fn affected_json(
    list: &[(i64, domain::ComponentStatus)],
    components: &[domain::Component],
) -> Vec<AffectedJson> {
    list.iter()
        .filter_map(|(id, status)| {
            let c = components.iter().find(|c| c.id == *id)?;
            Some(AffectedJson {
                slug: c.slug.clone(),
                status: status.as_str().to_owned(),
            })
        })
        .collect()
}

pub fn incident_json(
    i: &domain::Incident,
    components: &[domain::Component],
    public_url: &str,
) -> IncidentJson {
    IncidentJson {
        id: i.id,
        title: i.title.clone(),
        impact: i.impact.into(),
        status: i.status.as_str(),
        draft: i.is_draft(),
        published_at: i.published_at,
        started_at: i.started_at,
        resolved_at: i.resolved_at,
        postmortem: i.postmortem.clone(),
        postmortem_published_at: i.postmortem_published_at,
        maintenance_id: i.maintenance_id,
        rollout_id: i.rollout_id,
        components: affected_json(&i.components, components),
        source: i.source.clone(),
        created_at: i.created_at,
        updated_at: i.updated_at,
        url: format!("{public_url}/incidents/{}", i.id),
        updates: None,
    }
}

pub fn incident_update_json(
    u: &domain::IncidentUpdate,
    components: &[domain::Component],
) -> IncidentUpdateJson {
    IncidentUpdateJson {
        id: u.id,
        kind: u.kind.as_str(),
        status: u.status.as_str(),
        body: u.body.clone(),
        components: u
            .components
            .as_deref()
            .map(|c| affected_json(c, components)),
        created_at: u.created_at,
    }
}
