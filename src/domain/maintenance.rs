//! Maintenance windows, their steps and the updates that make up their timeline.

use jiff::Timestamp;

use super::{Component, DomainError, RuleError, ValidationError, clean_line, clean_text, limits};

/// Where a window is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WindowState {
    Draft,
    Planned,
    Scheduled,
    InProgress,
    Completed,
    Cancelled,
}

impl WindowState {
    pub const ALL: [Self; 6] = [
        Self::Draft,
        Self::Planned,
        Self::Scheduled,
        Self::InProgress,
        Self::Completed,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Planned => "planned",
            Self::Scheduled => "scheduled",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Draft => "Draft",
            Self::Planned => "Planned",
            Self::Scheduled => "Scheduled",
            Self::InProgress => "In progress",
            Self::Completed => "Completed",
            Self::Cancelled => "Cancelled",
        }
    }

    /// Not yet finished: completed and cancelled windows are closed.
    pub fn is_open(self) -> bool {
        !matches!(self, Self::Completed | Self::Cancelled)
    }

    /// Announced and not yet started.
    pub fn is_upcoming(self) -> bool {
        matches!(self, Self::Planned | Self::Scheduled)
    }
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepState {
    Pending,
    InProgress,
    Done,
    Failed,
    Skipped,
}

impl StepState {
    pub const ALL: [Self; 5] = [
        Self::Pending,
        Self::InProgress,
        Self::Done,
        Self::Failed,
        Self::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::InProgress => "in_progress",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::InProgress => "In progress",
            Self::Done => "Done",
            Self::Failed => "Failed",
            Self::Skipped => "Skipped",
        }
    }

    /// Finished for good as far as the order of the plan goes.
    fn is_settled(self) -> bool {
        matches!(self, Self::Done | Self::Skipped)
    }
}

/// How much a window affects the public (Statuspage's maintenance impact levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Impact {
    None,
    #[default]
    Minor,
    Major,
    Critical,
}

impl Impact {
    pub const ALL: [Self; 4] = [Self::None, Self::Minor, Self::Major, Self::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Minor => "minor",
            Self::Major => "major",
            Self::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|impact| impact.as_str() == s)
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::None => "No expected impact",
            Self::Minor => "Minor impact",
            Self::Major => "Major impact",
            Self::Critical => "Critical impact",
        }
    }
}

/// When a window happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// No date yet; an optional free-text hint ("this Sunday or within two weeks").
    Tentative { hint: Option<String> },
    /// A start and, optionally, an expected end.
    Fixed {
        starts_at: Timestamp,
        ends_at: Option<Timestamp>,
    },
}

impl Schedule {
    /// Build a schedule from the optional fields forms and the API send, checking them.
    pub fn from_parts(
        starts_at: Option<Timestamp>,
        ends_at: Option<Timestamp>,
        hint: Option<&str>,
    ) -> Result<Self, ValidationError> {
        match starts_at {
            None => {
                if ends_at.is_some() {
                    return Err(ValidationError::new(
                        "ends_at",
                        "an expected end needs a start; leave both empty for a tentative window",
                    ));
                }
                let hint = match hint {
                    Some(h) => clean_line("schedule_hint", h, limits::HINT_MAX, false)?,
                    None => None,
                };
                Ok(Self::Tentative { hint })
            }
            Some(starts_at) => {
                if let Some(end) = ends_at
                    && end <= starts_at
                {
                    return Err(ValidationError::new(
                        "ends_at",
                        "the expected end must be after the start",
                    ));
                }
                Ok(Self::Fixed { starts_at, ends_at })
            }
        }
    }
}

/// One ordered item of a window's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// `None` until stored.
    pub id: Option<i64>,
    /// 1-based place in the plan.
    pub position: i64,
    pub title: String,
    pub description: Option<String>,
    pub state: StepState,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    /// The note given with the latest transition.
    pub note: Option<String>,
    /// How many times the step was started (retries count).
    pub attempts: i64,
}

impl Step {
    /// How long the step ran, once finished.
    pub fn duration(&self) -> Option<jiff::SignedDuration> {
        Some(self.finished_at?.duration_since(self.started_at?))
    }
}

/// A step as given when planning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewStep {
    pub title: String,
    pub description: Option<String>,
}

/// The kind of a timeline entry, for windows and rollouts alike: each lifecycle change has its
/// own. Channels choose among these which events they receive, so the names are unique across
/// both (rollout kinds start with `rollout_` or `target_`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpdateKind {
    Announced,
    Rescheduled,
    Started,
    StepStarted,
    StepDone,
    StepFailed,
    StepSkipped,
    Note,
    Completed,
    Cancelled,
    /// A reminder before the start (never on the public timeline).
    Reminder,
    /// Still in progress past the expected end.
    Overrunning,
    RolloutStarted,
    TargetDraining,
    TargetDrained,
    TargetUpdating,
    TargetHealthy,
    TargetFailed,
    TargetForced,
    TargetRetried,
    RolloutPaused,
    RolloutResumed,
    RolloutStalled,
    RolloutCompleted,
    RolloutFailed,
    RolloutAborted,
    RolloutRolledBack,
    RolloutNote,
    /// A target's remaining counts changed. Never a timeline entry: it only refreshes
    /// Discord's live rollout message (folded, at most one edit per interval).
    RolloutDrain,
    /// The kind of a delivery that redraws Discord's live rollout message for everything
    /// folded into it; not an event a channel chooses.
    RolloutRefresh,
    /// An incident made public (created published, or a draft published).
    IncidentOpened,
    /// An incident's status moved, or a note on it (perhaps new component statuses).
    IncidentUpdated,
    IncidentResolved,
    IncidentReopened,
    /// The postmortem, published once after resolution.
    IncidentPostmortem,
}

impl UpdateKind {
    /// Window events, in the order forms list them.
    pub const WINDOW: [Self; 12] = [
        Self::Announced,
        Self::Reminder,
        Self::Rescheduled,
        Self::Started,
        Self::StepStarted,
        Self::StepDone,
        Self::StepFailed,
        Self::StepSkipped,
        Self::Note,
        Self::Overrunning,
        Self::Completed,
        Self::Cancelled,
    ];

    /// Rollout events a channel can choose, in the order forms list them.
    pub const ROLLOUT: [Self; 17] = [
        Self::RolloutStarted,
        Self::TargetDraining,
        Self::RolloutDrain,
        Self::TargetDrained,
        Self::TargetUpdating,
        Self::TargetHealthy,
        Self::TargetFailed,
        Self::TargetForced,
        Self::TargetRetried,
        Self::RolloutPaused,
        Self::RolloutResumed,
        Self::RolloutStalled,
        Self::RolloutCompleted,
        Self::RolloutFailed,
        Self::RolloutAborted,
        Self::RolloutRolledBack,
        Self::RolloutNote,
    ];

    /// Incident events a channel can choose, in the order forms list them.
    pub const INCIDENT: [Self; 5] = [
        Self::IncidentOpened,
        Self::IncidentUpdated,
        Self::IncidentResolved,
        Self::IncidentReopened,
        Self::IncidentPostmortem,
    ];

    pub const ALL: [Self; 35] = [
        Self::Announced,
        Self::Rescheduled,
        Self::Started,
        Self::StepStarted,
        Self::StepDone,
        Self::StepFailed,
        Self::StepSkipped,
        Self::Note,
        Self::Completed,
        Self::Cancelled,
        Self::Reminder,
        Self::Overrunning,
        Self::RolloutStarted,
        Self::TargetDraining,
        Self::TargetDrained,
        Self::TargetUpdating,
        Self::TargetHealthy,
        Self::TargetFailed,
        Self::TargetForced,
        Self::TargetRetried,
        Self::RolloutPaused,
        Self::RolloutResumed,
        Self::RolloutStalled,
        Self::RolloutCompleted,
        Self::RolloutFailed,
        Self::RolloutAborted,
        Self::RolloutRolledBack,
        Self::RolloutNote,
        Self::RolloutDrain,
        Self::RolloutRefresh,
        Self::IncidentOpened,
        Self::IncidentUpdated,
        Self::IncidentResolved,
        Self::IncidentReopened,
        Self::IncidentPostmortem,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Announced => "announced",
            Self::Rescheduled => "rescheduled",
            Self::Started => "started",
            Self::StepStarted => "step_started",
            Self::StepDone => "step_done",
            Self::StepFailed => "step_failed",
            Self::StepSkipped => "step_skipped",
            Self::Note => "note",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Reminder => "reminder",
            Self::Overrunning => "overrunning",
            Self::RolloutStarted => "rollout_started",
            Self::TargetDraining => "target_draining",
            Self::TargetDrained => "target_drained",
            Self::TargetUpdating => "target_updating",
            Self::TargetHealthy => "target_healthy",
            Self::TargetFailed => "target_failed",
            Self::TargetForced => "target_forced",
            Self::TargetRetried => "target_retried",
            Self::RolloutPaused => "rollout_paused",
            Self::RolloutResumed => "rollout_resumed",
            Self::RolloutStalled => "rollout_stalled",
            Self::RolloutCompleted => "rollout_completed",
            Self::RolloutFailed => "rollout_failed",
            Self::RolloutAborted => "rollout_aborted",
            Self::RolloutRolledBack => "rollout_rolled_back",
            Self::RolloutNote => "rollout_note",
            Self::RolloutDrain => "rollout_drain",
            Self::RolloutRefresh => "rollout_refresh",
            Self::IncidentOpened => "incident_opened",
            Self::IncidentUpdated => "incident_updated",
            Self::IncidentResolved => "incident_resolved",
            Self::IncidentReopened => "incident_reopened",
            Self::IncidentPostmortem => "incident_postmortem",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == s)
    }

    /// An event of a rollout rather than of a window or an incident.
    pub fn is_rollout(self) -> bool {
        Self::ROLLOUT.contains(&self) || self == Self::RolloutRefresh
    }

    /// An event of an incident.
    pub fn is_incident(self) -> bool {
        Self::INCIDENT.contains(&self)
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Announced => "Announced",
            Self::Rescheduled => "Rescheduled",
            Self::Started => "Started",
            Self::StepStarted => "Step started",
            Self::StepDone => "Step done",
            Self::StepFailed => "Step failed",
            Self::StepSkipped => "Step skipped",
            Self::Note => "Update",
            Self::Completed => "Completed",
            Self::Cancelled => "Cancelled",
            Self::Reminder => "Reminder",
            Self::Overrunning => "Overrunning",
            Self::RolloutStarted => "Rollout started",
            Self::TargetDraining => "Draining",
            Self::TargetDrained => "Drained",
            Self::TargetUpdating => "Updating",
            Self::TargetHealthy => "Healthy",
            Self::TargetFailed => "Target failed",
            Self::TargetForced => "Target forced",
            Self::TargetRetried => "Target retried",
            Self::RolloutPaused => "Rollout paused",
            Self::RolloutResumed => "Rollout resumed",
            Self::RolloutStalled => "Rollout stalled",
            Self::RolloutCompleted => "Rollout completed",
            Self::RolloutFailed => "Rollout failed",
            Self::RolloutAborted => "Rollout aborted",
            Self::RolloutRolledBack => "Rolled back",
            Self::RolloutNote => "Rollout update",
            Self::RolloutDrain => "Drain counts",
            Self::RolloutRefresh => "Live message refresh",
            Self::IncidentOpened => "Incident opened",
            Self::IncidentUpdated => "Incident update",
            Self::IncidentResolved => "Incident resolved",
            Self::IncidentReopened => "Incident reopened",
            Self::IncidentPostmortem => "Postmortem",
        }
    }
}

/// A timeline entry produced by a rule, not yet stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUpdate {
    pub kind: UpdateKind,
    /// Generated text for lifecycle changes, the maintainer's words for free updates.
    pub body: String,
    /// The maintainer's note given with a transition.
    pub note: Option<String>,
    pub step_position: Option<i64>,
    pub created_at: Timestamp,
}

/// A stored timeline entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub id: i64,
    pub maintenance_id: i64,
    pub kind: UpdateKind,
    pub body: String,
    pub note: Option<String>,
    pub step_position: Option<i64>,
    pub created_at: Timestamp,
    /// When its text (or note) was last corrected, after it went out.
    pub edited_at: Option<Timestamp>,
}

/// A maintenance window with its plan: the aggregate every rule works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maintenance {
    pub id: i64,
    pub title: String,
    pub description: String,
    pub state: WindowState,
    pub impact: Impact,
    pub starts_at: Option<Timestamp>,
    pub ends_at: Option<Timestamp>,
    pub schedule_hint: Option<String>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub announced_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Optimistic-concurrency counter: a commit succeeds only if nobody committed in between.
    pub version: i64,
    pub components: Vec<Component>,
    /// Ordered by position, positions 1..=n.
    pub steps: Vec<Step>,
    pub automation: super::Automation,
    /// Reminder offsets done for the current start: sent, or already past when it was set.
    pub reminded: Vec<i64>,
    /// When the window was noticed running past its expected end; cleared when the end moves.
    pub overran_at: Option<Timestamp>,
    /// Raised on each reschedule (a calendar's SEQUENCE).
    pub sequence: i64,
}

/// What a new window needs.
#[derive(Debug, Clone)]
pub struct NewMaintenance {
    pub title: String,
    pub description: String,
    pub impact: Impact,
    pub schedule: Schedule,
    pub component_ids: Vec<i64>,
    pub steps: Vec<NewStep>,
    pub automation: super::Automation,
}

impl NewMaintenance {
    /// Check and normalise every field.
    pub fn validate(self) -> Result<Self, ValidationError> {
        let title = clean_line("title", &self.title, limits::TITLE_MAX, true)?.unwrap_or_default();
        let description = clean_text(
            "description",
            &self.description,
            limits::DESCRIPTION_MAX,
            false,
        )?
        .unwrap_or_default();
        if self.steps.len() > limits::STEPS_MAX {
            return Err(ValidationError::new(
                "steps",
                format!("a plan has at most {} steps", limits::STEPS_MAX),
            ));
        }
        let steps = self
            .steps
            .into_iter()
            .map(validate_step)
            .collect::<Result<Vec<_>, _>>()?;
        let mut component_ids = self.component_ids;
        component_ids.sort_unstable();
        component_ids.dedup();
        Ok(Self {
            title,
            description,
            impact: self.impact,
            schedule: self.schedule,
            component_ids,
            steps,
            automation: self.automation.validate()?,
        })
    }
}

pub fn validate_step(step: NewStep) -> Result<NewStep, ValidationError> {
    Ok(NewStep {
        title: clean_line("steps", &step.title, limits::TITLE_MAX, true)
            .map_err(|e| ValidationError::new("steps", format!("step title {}", e.message)))?
            .unwrap_or_default(),
        description: match step.description {
            Some(d) => clean_text("steps", &d, limits::DESCRIPTION_MAX, false)?,
            None => None,
        },
    })
}

/// What may be done to a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepAction {
    Start,
    Done,
    Fail,
    Skip,
}

impl StepAction {
    pub const ALL: [Self; 4] = [Self::Start, Self::Done, Self::Fail, Self::Skip];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "start" => Some(Self::Start),
            "done" => Some(Self::Done),
            "fail" => Some(Self::Fail),
            "skip" => Some(Self::Skip),
            _ => None,
        }
    }
}

/// What may be done to a window as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowAction {
    Announce,
    Start,
    Complete,
    Cancel,
}

impl WindowAction {
    pub const ALL: [Self; 4] = [Self::Announce, Self::Start, Self::Complete, Self::Cancel];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "announce" => Some(Self::Announce),
            "start" => Some(Self::Start),
            "complete" => Some(Self::Complete),
            "cancel" => Some(Self::Cancel),
            _ => None,
        }
    }
}

fn clean_note(note: Option<&str>) -> Result<Option<String>, ValidationError> {
    match note {
        Some(n) => clean_text("note", n, limits::NOTE_MAX, false),
        None => Ok(None),
    }
}

/// A schedule whose expected end has already passed is a typo (a date from last year, the
/// wrong month): announcing it would tell the public about the past, and a running window
/// would show as overrunning at once.
pub fn refuse_past_end(schedule: &Schedule, now: Timestamp) -> Result<(), ValidationError> {
    match schedule {
        Schedule::Fixed {
            ends_at: Some(end), ..
        } if *end <= now => Err(ValidationError::new(
            "ends_at",
            format!(
                "is in the past ({}): give an end still to come",
                format_utc(*end)
            ),
        )),
        _ => Ok(()),
    }
}

/// How the update that gives an undated window its first date begins ("Rescheduled" is for
/// moving a date already announced).
pub const DATE_SET: &str = "Date set.";

/// A compact UTC rendering used in generated update texts.
pub fn format_utc(t: Timestamp) -> String {
    t.strftime("%a %-d %b %Y, %H:%M UTC").to_string()
}

/// The times written by [`format_utc`] in a text (an update's body, a note), as byte ranges
/// and instants, in order: the text is where an update keeps its times, and each reader
/// shows them its own way (the page in the reader's zone, Discord as its timestamp tags). Only
/// exact renderings count, weekday included, so other text is never taken for a time.
pub fn utc_times(text: &str) -> Vec<(std::ops::Range<usize>, Timestamp)> {
    const DAYS: [&str; 7] = ["Mon ", "Tue ", "Wed ", "Thu ", "Fri ", "Sat ", "Sun "];
    let mut found = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        let hit = DAYS.iter().any(|d| rest.starts_with(d)).then(|| {
            [26, 25].into_iter().find_map(|len| {
                let candidate = rest.get(..len)?;
                let civil =
                    jiff::civil::DateTime::strptime("%a %d %b %Y, %H:%M UTC", candidate).ok()?;
                let t = civil.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
                (format_utc(t) == candidate).then_some((len, t))
            })
        });
        match hit.flatten() {
            Some((len, t)) => {
                found.push((i..i + len, t));
                i += len;
            }
            None => i += rest.chars().next().map_or(1, char::len_utf8),
        }
    }
    found
}

/// `text` with each of its [`utc_times`] replaced by `render(time)` and every other part by
/// `other(part)`.
pub fn map_utc_times(
    text: &str,
    mut other: impl FnMut(&str) -> String,
    mut render: impl FnMut(Timestamp) -> String,
) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (range, t) in utc_times(text) {
        out.push_str(&other(&text[at..range.start]));
        out.push_str(&render(t));
        at = range.end;
    }
    out.push_str(&other(&text[at..]));
    out
}

impl Maintenance {
    /// Public once announced; a draft (and a draft cancelled before announcing) never is.
    pub fn is_public(&self) -> bool {
        self.announced_at.is_some()
    }

    pub fn schedule(&self) -> Schedule {
        match self.starts_at {
            Some(starts_at) => Schedule::Fixed {
                starts_at,
                ends_at: self.ends_at,
            },
            None => Schedule::Tentative {
                hint: self.schedule_hint.clone(),
            },
        }
    }

    pub fn steps_done(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| s.state == StepState::Done)
            .count()
    }

    /// Steps that will not run any more (done or skipped), for the progress bar.
    pub fn steps_settled(&self) -> usize {
        self.steps.iter().filter(|s| s.state.is_settled()).count()
    }

    pub fn current_step(&self) -> Option<&Step> {
        self.steps
            .iter()
            .find(|s| s.state == StepState::InProgress)
            .or_else(|| self.steps.iter().find(|s| s.state == StepState::Failed))
    }

    /// In progress at or past its expected end (the scheduler notes it from that second on).
    pub fn is_overrunning(&self, now: Timestamp) -> bool {
        self.state == WindowState::InProgress && self.ends_at.is_some_and(|end| now >= end)
    }

    pub(super) fn update(&self, kind: UpdateKind, body: String, now: Timestamp) -> NewUpdate {
        NewUpdate {
            kind,
            body,
            note: None,
            step_position: None,
            created_at: now,
        }
    }

    pub(super) fn schedule_text(&self) -> String {
        match self.schedule() {
            Schedule::Tentative { hint: Some(hint) } => format!("No date yet: {hint}."),
            Schedule::Tentative { hint: None } => "No date yet.".to_owned(),
            Schedule::Fixed {
                starts_at,
                ends_at: Some(end),
            } => format!(
                "Scheduled for {} until {}.",
                format_utc(starts_at),
                format_utc(end)
            ),
            Schedule::Fixed {
                starts_at,
                ends_at: None,
            } => format!("Scheduled for {}.", format_utc(starts_at)),
        }
    }

    fn refuse_finished(&self, what: &str) -> Result<(), RuleError> {
        match self.state {
            WindowState::Completed => Err(RuleError::new(format!(
                "cannot {what}: the window is already completed"
            ))),
            WindowState::Cancelled => Err(RuleError::new(format!(
                "cannot {what}: the window was cancelled"
            ))),
            _ => Ok(()),
        }
    }

    /// Make a draft public: planned without a start, scheduled with one.
    pub fn announce(&mut self, now: Timestamp) -> Result<Vec<NewUpdate>, DomainError> {
        self.refuse_finished("announce")?;
        if self.state != WindowState::Draft {
            return Err(RuleError::new(format!(
                "cannot announce: the window is already public ({})",
                self.state.label().to_lowercase()
            ))
            .into());
        }
        self.state = if self.starts_at.is_some() {
            WindowState::Scheduled
        } else {
            WindowState::Planned
        };
        self.announced_at = Some(now);
        self.updated_at = now;
        self.arm_reminders(now);
        let body = format!("Maintenance announced. {}", self.schedule_text());
        Ok(vec![self.update(UpdateKind::Announced, body, now)])
    }

    /// Set, move or remove the date.
    pub fn reschedule(
        &mut self,
        schedule: Schedule,
        now: Timestamp,
    ) -> Result<Vec<NewUpdate>, DomainError> {
        self.refuse_finished("reschedule")?;
        if schedule == self.schedule() {
            return Ok(Vec::new());
        }
        refuse_past_end(&schedule, now)?;
        if self.state == WindowState::InProgress {
            let Schedule::Fixed { starts_at, ends_at } = schedule else {
                return Err(RuleError::new(
                    "cannot remove the date: the window is already in progress",
                )
                .into());
            };
            // A window started without a date has no planned start to protect; the start
            // given alongside the new end is then just the actual start.
            if self.starts_at.is_some_and(|planned| planned != starts_at) {
                return Err(RuleError::new(
                    "cannot move the start: the window is already in progress; only the expected end can change",
                )
                .into());
            }
            self.ends_at = ends_at;
            self.overran_at = None;
            self.sequence += 1;
            self.updated_at = now;
            let body = match ends_at {
                Some(end) => format!("Expected end moved to {}.", format_utc(end)),
                None => "The expected end was removed.".to_owned(),
            };
            return Ok(vec![self.update(UpdateKind::Rescheduled, body, now)]);
        }
        match schedule {
            Schedule::Tentative { hint } => {
                self.starts_at = None;
                self.ends_at = None;
                self.schedule_hint = hint;
            }
            Schedule::Fixed { starts_at, ends_at } => {
                self.starts_at = Some(starts_at);
                self.ends_at = ends_at;
                self.schedule_hint = None;
            }
        }
        self.updated_at = now;
        self.sequence += 1;
        self.arm_reminders(now);
        if self.state == WindowState::Draft {
            // A draft is not public; its changes make no timeline entry.
            return Ok(Vec::new());
        }
        let first_date = self.state == WindowState::Planned && self.starts_at.is_some();
        self.state = if self.starts_at.is_some() {
            WindowState::Scheduled
        } else {
            WindowState::Planned
        };
        let body = if first_date {
            format!("{DATE_SET} {}", self.schedule_text())
        } else {
            format!("Rescheduled. {}", self.schedule_text())
        };
        Ok(vec![self.update(UpdateKind::Rescheduled, body, now)])
    }

    /// Begin the work.
    pub fn start(&mut self, now: Timestamp) -> Result<Vec<NewUpdate>, DomainError> {
        self.refuse_finished("start")?;
        match self.state {
            WindowState::Draft => {
                return Err(RuleError::new(
                    "cannot start a draft: announce it first so the public knows",
                )
                .into());
            }
            WindowState::InProgress => {
                return Err(RuleError::new("the window is already in progress").into());
            }
            _ => {}
        }
        self.state = WindowState::InProgress;
        self.started_at = Some(now);
        self.updated_at = now;
        let body = if self.steps.is_empty() {
            "Maintenance started.".to_owned()
        } else {
            format!(
                "Maintenance started. The plan has {} step{}.",
                self.steps.len(),
                plural(self.steps.len())
            )
        };
        Ok(vec![self.update(UpdateKind::Started, body, now)])
    }

    /// Finish the work.
    pub fn complete(
        &mut self,
        note: Option<&str>,
        now: Timestamp,
    ) -> Result<Vec<NewUpdate>, DomainError> {
        self.refuse_finished("complete")?;
        let note = clean_note(note)?;
        if self.state != WindowState::InProgress {
            return Err(RuleError::new(format!(
                "cannot complete: the window has not started ({})",
                self.state.label().to_lowercase()
            ))
            .into());
        }
        if let Some(step) = self.steps.iter().find(|s| s.state == StepState::InProgress) {
            return Err(RuleError::new(format!(
                "cannot complete: step {} \u{201c}{}\u{201d} is still in progress; mark it done, failed or skipped first",
                step.position, step.title
            ))
            .into());
        }
        let skipped: Vec<i64> = self
            .steps
            .iter_mut()
            .filter(|s| s.state == StepState::Pending)
            .map(|s| {
                s.state = StepState::Skipped;
                s.finished_at = Some(now);
                s.note = Some("Not run: the window was completed without it.".to_owned());
                s.position
            })
            .collect();
        self.state = WindowState::Completed;
        self.finished_at = Some(now);
        self.updated_at = now;
        let mut body = "Maintenance completed.".to_owned();
        if !self.steps.is_empty() {
            body.push_str(&format!(
                " {} of {} step{} done.",
                self.steps_done(),
                self.steps.len(),
                plural(self.steps.len())
            ));
        }
        if !skipped.is_empty() {
            body.push_str(&format!(" Not run: {}.", list_steps(&skipped)));
        }
        let mut update = self.update(UpdateKind::Completed, body, now);
        update.note = note;
        Ok(vec![update])
    }

    /// Call the window off; open steps are marked skipped.
    pub fn cancel(
        &mut self,
        note: Option<&str>,
        now: Timestamp,
    ) -> Result<Vec<NewUpdate>, DomainError> {
        self.refuse_finished("cancel")?;
        let note = clean_note(note)?;
        let was_running = self.state == WindowState::InProgress;
        for step in &mut self.steps {
            match step.state {
                StepState::Pending if was_running => {
                    step.state = StepState::Skipped;
                    step.finished_at = Some(now);
                    step.note = Some("Not run: the window was cancelled.".to_owned());
                }
                StepState::InProgress => {
                    step.state = StepState::Skipped;
                    step.finished_at = Some(now);
                    step.note = Some("Interrupted: the window was cancelled.".to_owned());
                }
                _ => {}
            }
        }
        self.state = WindowState::Cancelled;
        self.finished_at = Some(now);
        self.updated_at = now;
        if !self.is_public() {
            return Ok(Vec::new());
        }
        let body = if was_running {
            format!(
                "Maintenance cancelled while in progress; {} of {} step{} done.",
                self.steps_done(),
                self.steps.len(),
                plural(self.steps.len())
            )
        } else {
            "Maintenance cancelled.".to_owned()
        };
        let mut update = self.update(UpdateKind::Cancelled, body, now);
        update.note = note;
        Ok(vec![update])
    }

    /// The window actions its rules allow now: each is tried on a copy, so the offer can never
    /// disagree with the rules.
    pub fn allowed_actions(&self) -> Vec<WindowAction> {
        WindowAction::ALL
            .into_iter()
            .filter(|a| self.clone().apply(*a, None, self.updated_at).is_ok())
            .collect()
    }

    /// The actions the rules allow now on step `position`, found the same way.
    pub fn allowed_step_actions(&self, position: i64) -> Vec<StepAction> {
        StepAction::ALL
            .into_iter()
            .filter(|a| {
                self.clone()
                    .step(position, *a, None, self.updated_at)
                    .is_ok()
            })
            .collect()
    }

    /// Apply a window-level action.
    pub fn apply(
        &mut self,
        action: WindowAction,
        note: Option<&str>,
        now: Timestamp,
    ) -> Result<Vec<NewUpdate>, DomainError> {
        match action {
            WindowAction::Announce | WindowAction::Start => {
                // A note travels with the announcement or the start ("expect a few minutes of
                // downtime"); it is checked before anything changes.
                let note = clean_note(note)?;
                let mut updates = if action == WindowAction::Announce {
                    self.announce(now)?
                } else {
                    self.start(now)?
                };
                if let Some(first) = updates.first_mut() {
                    first.note = note;
                }
                Ok(updates)
            }
            WindowAction::Complete => self.complete(note, now),
            WindowAction::Cancel => self.cancel(note, now),
        }
    }

    /// Move step `position` (1-based) on.
    pub fn step(
        &mut self,
        position: i64,
        action: StepAction,
        note: Option<&str>,
        now: Timestamp,
    ) -> Result<Vec<NewUpdate>, DomainError> {
        let note = clean_note(note)?;
        let total = self.steps.len();
        let Some(index) = self.steps.iter().position(|s| s.position == position) else {
            return Err(RuleError::new(format!(
                "there is no step {position}; the plan has {total} step{}",
                plural(total)
            ))
            .into());
        };
        self.refuse_finished("change a step")?;
        if self.state != WindowState::InProgress {
            return Err(RuleError::new(
                "the window has not started yet; start it before working on its steps",
            )
            .into());
        }
        let state = self.steps[index].state;
        let (kind, verb) = match action {
            StepAction::Start => {
                if !matches!(state, StepState::Pending | StepState::Failed) {
                    return Err(RuleError::new(format!(
                        "step {position} cannot start: it is {}",
                        state.label().to_lowercase()
                    ))
                    .into());
                }
                if let Some(other) = self.steps.iter().find(|s| s.state == StepState::InProgress) {
                    return Err(RuleError::new(format!(
                        "step {position} cannot start while step {} is in progress; finish that one first",
                        other.position
                    ))
                    .into());
                }
                if let Some(blocking) = self.steps[..index].iter().find(|s| !s.state.is_settled()) {
                    let why = if blocking.state == StepState::Failed {
                        "failed; retry or skip it first"
                    } else {
                        "not done yet; steps run in order"
                    };
                    return Err(RuleError::new(format!(
                        "step {position} cannot start: step {} is {why}",
                        blocking.position
                    ))
                    .into());
                }
                let step = &mut self.steps[index];
                step.state = StepState::InProgress;
                step.started_at = Some(now);
                step.finished_at = None;
                step.attempts += 1;
                let verb = if state == StepState::Failed {
                    "restarted (retry)"
                } else {
                    "started"
                };
                (UpdateKind::StepStarted, verb)
            }
            StepAction::Done | StepAction::Fail => {
                if state != StepState::InProgress {
                    let hint = if state == StepState::Pending {
                        "; start it first"
                    } else {
                        ""
                    };
                    return Err(RuleError::new(format!(
                        "step {position} is {}, not in progress{hint}",
                        state.label().to_lowercase()
                    ))
                    .into());
                }
                let step = &mut self.steps[index];
                step.finished_at = Some(now);
                if action == StepAction::Done {
                    step.state = StepState::Done;
                    (UpdateKind::StepDone, "done")
                } else {
                    step.state = StepState::Failed;
                    (UpdateKind::StepFailed, "failed")
                }
            }
            StepAction::Skip => {
                if !matches!(
                    state,
                    StepState::Pending | StepState::InProgress | StepState::Failed
                ) {
                    return Err(RuleError::new(format!(
                        "step {position} cannot be skipped: it is already {}",
                        state.label().to_lowercase()
                    ))
                    .into());
                }
                let step = &mut self.steps[index];
                step.state = StepState::Skipped;
                step.finished_at = Some(now);
                (UpdateKind::StepSkipped, "skipped")
            }
        };
        let step = &mut self.steps[index];
        step.note = note.clone();
        let title = step.title.clone();
        self.updated_at = now;
        let mut body = format!("Step {position} of {total} {verb}: {title}");
        if matches!(kind, UpdateKind::StepDone | UpdateKind::StepSkipped) {
            body.push_str(&format!(" ({} of {total} done)", self.steps_done()));
        }
        Ok(vec![NewUpdate {
            kind,
            body,
            note,
            step_position: Some(position),
            created_at: now,
        }])
    }

    /// A free-form timeline entry.
    pub fn post_update(&self, body: &str, now: Timestamp) -> Result<Vec<NewUpdate>, DomainError> {
        let body = clean_text("body", body, limits::UPDATE_MAX, true)?.unwrap_or_default();
        if !self.is_public() {
            return Err(RuleError::new(
                "cannot post an update to a draft: announce the window first",
            )
            .into());
        }
        Ok(vec![self.update(UpdateKind::Note, body, now)])
    }
}

impl Update {
    /// A rescheduling that gave an undated window its first date ("Date set", not
    /// "Rescheduled", wherever it is told).
    pub fn is_date_set(&self) -> bool {
        self.kind == UpdateKind::Rescheduled && self.body.starts_with(DATE_SET)
    }

    /// What a maintainer wrote in this entry, which they may correct: a free-form update's
    /// text, or the note given with a step or window action. Texts Herald writes (a step's
    /// name, the schedule) follow the window and are not corrected by hand.
    pub fn written(&self) -> Option<&str> {
        if self.kind == UpdateKind::Note {
            Some(&self.body)
        } else {
            self.note.as_deref()
        }
    }

    /// This entry's (body, note) with what the maintainer wrote replaced by `text`; an empty
    /// `text` removes a note (an update's own text cannot be empty: withdraw it instead).
    pub fn corrected(&self, text: &str) -> Result<(String, Option<String>), DomainError> {
        if self.written().is_none() {
            return Err(RuleError::new(
                "only what a maintainer wrote (an update, or a note) can be corrected",
            )
            .into());
        }
        if self.kind == UpdateKind::Note {
            let body = clean_text("body", text, limits::UPDATE_MAX, true)?.unwrap_or_default();
            Ok((body, self.note.clone()))
        } else {
            Ok((self.body.clone(), clean_note(Some(text))?))
        }
    }

    /// Whether the whole entry may be withdrawn: a free-form update may; a step's or the
    /// window's own change stays (its note can be removed instead).
    pub fn withdrawable(&self) -> Result<(), DomainError> {
        if self.kind == UpdateKind::Note {
            Ok(())
        } else {
            Err(RuleError::new(
                "only a posted update can be withdrawn; a step's or the window's change stays (remove its note instead)",
            )
            .into())
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn list_steps(positions: &[i64]) -> String {
    let names: Vec<String> = positions.iter().map(|p| p.to_string()).collect();
    match names.as_slice() {
        [one] => format!("step {one}"),
        [rest @ .., last] => format!("steps {} and {last}", rest.join(", ")),
        [] => String::new(),
    }
}

/// Fields an edit may change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edit {
    pub title: Option<String>,
    pub description: Option<String>,
    pub impact: Option<Impact>,
    pub components: Option<Vec<Component>>,
    pub auto_start: Option<bool>,
    pub auto_complete: Option<bool>,
    /// Reminder offsets in seconds before the start.
    pub reminders: Option<Vec<i64>>,
}

/// A partial change of the schedule, as PATCH sends it: the outer `None` leaves a field alone,
/// `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScheduleChange {
    pub starts_at: Option<Option<Timestamp>>,
    pub ends_at: Option<Option<Timestamp>>,
    pub hint: Option<Option<String>>,
}

impl ScheduleChange {
    pub fn is_empty(&self) -> bool {
        self.starts_at.is_none() && self.ends_at.is_none() && self.hint.is_none()
    }

    /// The schedule `m` would have after this change. Clearing the start also clears the end
    /// (a tentative window has neither); a window that started without a date takes its actual
    /// start as the start its expected end is checked against.
    pub fn apply_to(&self, m: &Maintenance) -> Result<Schedule, ValidationError> {
        let current_start = if m.state == WindowState::InProgress {
            m.starts_at.or(m.started_at)
        } else {
            m.starts_at
        };
        let starts_at = self.starts_at.unwrap_or(current_start);
        let ends_at = match (self.starts_at, self.ends_at) {
            (_, Some(end)) => end,
            (Some(None), None) => None,
            (_, None) => m.ends_at,
        };
        let hint = match &self.hint {
            Some(h) => h.clone(),
            None => m.schedule_hint.clone(),
        };
        Schedule::from_parts(starts_at, ends_at, hint.as_deref())
    }
}

impl Maintenance {
    /// Correct what a window says: title, description, impact, affected components. Edits are
    /// silent (no timeline entry, no announcement) in every state, so a typo can be fixed even
    /// after the work; moving the date is a reschedule, which is announced.
    pub fn edit(&mut self, edit: Edit, now: Timestamp) -> Result<Vec<NewUpdate>, DomainError> {
        let before = self.clone();
        if let Some(title) = edit.title {
            self.title = clean_line("title", &title, limits::TITLE_MAX, true)?.unwrap_or_default();
        }
        if let Some(description) = edit.description {
            self.description =
                clean_text("description", &description, limits::DESCRIPTION_MAX, false)?
                    .unwrap_or_default();
        }
        if let Some(impact) = edit.impact {
            self.impact = impact;
        }
        if let Some(mut components) = edit.components {
            components.sort_by_key(|c| (c.position, c.id));
            components.dedup_by_key(|c| c.id);
            self.components = components;
        }
        let automation = super::Automation {
            auto_start: edit.auto_start.unwrap_or(self.automation.auto_start),
            auto_complete: edit.auto_complete.unwrap_or(self.automation.auto_complete),
            reminders: edit
                .reminders
                .unwrap_or_else(|| self.automation.reminders.clone()),
        };
        self.set_automation(automation, now)?;
        if *self != before {
            self.updated_at = now;
        }
        Ok(Vec::new())
    }
}

/// A change to the plan. Only steps that have not started may change; a new step is pending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanEdit {
    Add {
        title: String,
        description: Option<String>,
    },
    Edit {
        position: i64,
        title: String,
        description: Option<String>,
    },
    Remove {
        position: i64,
    },
    /// Swap with the step before (`up`) or after; both must be pending.
    Move {
        position: i64,
        up: bool,
    },
}

impl Maintenance {
    /// Change the plan: add a step at the end, or edit, remove or move a pending one. Changes
    /// are silent (the checklist shows the new plan); steps that ran keep their place.
    pub fn edit_plan(
        &mut self,
        edit: PlanEdit,
        now: Timestamp,
    ) -> Result<Vec<NewUpdate>, DomainError> {
        self.refuse_finished("change the plan")?;
        let pending = |m: &Self, position: i64| -> Result<usize, DomainError> {
            let index = m
                .steps
                .iter()
                .position(|s| s.position == position)
                .ok_or_else(|| RuleError::new(format!("there is no step {position}")))?;
            let state = m.steps[index].state;
            if state != StepState::Pending {
                return Err(RuleError::new(format!(
                    "step {position} is {}; only steps that have not started can change",
                    state.label().to_lowercase()
                ))
                .into());
            }
            Ok(index)
        };
        match edit {
            PlanEdit::Add { title, description } => {
                if self.steps.len() >= limits::STEPS_MAX {
                    return Err(ValidationError::new(
                        "steps",
                        format!("a plan has at most {} steps", limits::STEPS_MAX),
                    )
                    .into());
                }
                let step = validate_step(NewStep { title, description })?;
                self.steps.push(Step {
                    id: None,
                    position: self.steps.len() as i64 + 1,
                    title: step.title,
                    description: step.description,
                    state: StepState::Pending,
                    started_at: None,
                    finished_at: None,
                    note: None,
                    attempts: 0,
                });
            }
            PlanEdit::Edit {
                position,
                title,
                description,
            } => {
                let index = pending(self, position)?;
                let step = validate_step(NewStep { title, description })?;
                self.steps[index].title = step.title;
                self.steps[index].description = step.description;
            }
            PlanEdit::Remove { position } => {
                let index = pending(self, position)?;
                self.steps.remove(index);
            }
            PlanEdit::Move { position, up } => {
                let index = pending(self, position)?;
                let other = if up {
                    index.checked_sub(1)
                } else {
                    Some(index + 1).filter(|&i| i < self.steps.len())
                };
                let Some(other) = other else {
                    return Ok(Vec::new());
                };
                pending(self, self.steps[other].position)?;
                self.steps.swap(index, other);
            }
        }
        for (i, step) in self.steps.iter_mut().enumerate() {
            step.position = i as i64 + 1;
        }
        self.updated_at = now;
        Ok(Vec::new())
    }
}
