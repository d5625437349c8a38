//! Rollouts: a deployment of version A → B across named targets (instances), one at a time, as
//! the second seed describes. Every rule lives here, as for windows: which target reports are
//! legal, what state the rollout is in, when it counts as stalled, what each change writes to
//! the timeline, and how long a drain still has to go.
//!
//! # The rules a deploy script runs into
//!
//! Target lifecycle: `pending` → `draining` (counts of live work left, e.g. rooms and
//! recordings) → `drained` → `updating` → `healthy`, or `failed` from any state.
//!
//! - A report naming the state a target is already in changes nothing (while draining it may
//!   bring new counts); only the time of the target's last report moves.
//! - Steps may be left out going forward where nothing is lost: an idle instance goes from
//!   `pending` straight to `drained`, and a drained one may come back `healthy` without saying
//!   `updating`. Going to `updating` or `healthy` before the drain finished is refused unless the
//!   report says `forced`; the target then carries a forced marker with the reason (the note).
//! - Nothing goes back, except that a failed target can be retried (it becomes pending again).
//! - The rollout's state follows from its targets: `pending` until the first report,
//!   `in_progress`, `completed` when every target is healthy, `failed` when every target is
//!   healthy or failed and at least one failed. A maintainer may pause it (reports are still
//!   accepted; there is no stall clock), resume it, abort it, or roll it back. An outcome
//!   (completed, failed) is a fact and ends a pause.
//! - Stalled is computed: in progress, and no progress (a target state advancing or any count
//!   going down) within the progress deadline; the deadline slides from the last progress, as
//!   Nomad's `progress_deadline` does. The scheduler announces a stall once; progress clears it.
//! - Rolling back creates the reverse rollout (B → A) for the targets already on B; both are
//!   linked. An open rollout that is rolled back ends as aborted.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};

use super::{
    DomainError, RuleError, UpdateKind, ValidationError, clean_line, clean_text, human_duration,
    limits,
};

/// Live work left on a target, by label: `{"rooms": 12, "recordings": 3}`.
pub type Counts = BTreeMap<String, i64>;

/// Where a target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TargetState {
    Pending,
    Draining,
    Drained,
    Updating,
    Healthy,
    Failed,
}

/// What a report moving a target from one state to another is, by the transition table of a
/// rolling update alone (what else a report must satisfy is checked by [`Rollout::report`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// The same state: no transition (a report of new counts or a version).
    Stay,
    /// Along the drain: pending → draining → drained → updating → healthy (skipping
    /// updating, or draining from pending straight to drained), or to failed from anywhere.
    Forward,
    /// Past a drain that has not finished (to updating or healthy from pending or draining):
    /// only when the report says `forced`.
    SkipsDrain,
    /// Out of failed: the target is retried first (back to pending), then reports again.
    RetryFirst,
    /// Back to pending: never by a report (a retry does that for a failed target).
    BackToPending,
    /// Back along the drain: never.
    Backwards,
}

/// The transition table: how a target may move from `from` to `to`.
pub fn target_move(from: TargetState, to: TargetState) -> Move {
    use TargetState::{Drained, Draining, Failed, Healthy, Pending, Updating};
    match (from, to) {
        (a, b) if a == b => Move::Stay,
        (Failed, _) => Move::RetryFirst,
        (_, Failed) => Move::Forward,
        (_, Pending) => Move::BackToPending,
        (Pending, Draining)
        | (Pending | Draining, Drained)
        | (Drained, Updating | Healthy)
        | (Updating, Healthy) => Move::Forward,
        (Pending | Draining, Updating | Healthy) => Move::SkipsDrain,
        _ => Move::Backwards,
    }
}

impl TargetState {
    pub const ALL: [Self; 6] = [
        Self::Pending,
        Self::Draining,
        Self::Drained,
        Self::Updating,
        Self::Healthy,
        Self::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Draining => "draining",
            Self::Drained => "drained",
            Self::Updating => "updating",
            Self::Healthy => "healthy",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Draining => "Draining",
            Self::Drained => "Drained",
            Self::Updating => "Updating",
            Self::Healthy => "Healthy",
            Self::Failed => "Failed",
        }
    }

    /// Between leaving `pending` and an outcome: a target here is expected to keep reporting.
    pub fn is_moving(self) -> bool {
        matches!(self, Self::Draining | Self::Drained | Self::Updating)
    }

    fn timeline_kind(self) -> UpdateKind {
        match self {
            Self::Pending => UpdateKind::TargetRetried,
            Self::Draining => UpdateKind::TargetDraining,
            Self::Drained => UpdateKind::TargetDrained,
            Self::Updating => UpdateKind::TargetUpdating,
            Self::Healthy => UpdateKind::TargetHealthy,
            Self::Failed => UpdateKind::TargetFailed,
        }
    }
}

/// Where a rollout is. `stalled` is not a state: see [`Rollout::is_stalled`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RolloutState {
    Pending,
    InProgress,
    Paused,
    Completed,
    Failed,
    Aborted,
}

impl RolloutState {
    pub const ALL: [Self; 6] = [
        Self::Pending,
        Self::InProgress,
        Self::Paused,
        Self::Completed,
        Self::Failed,
        Self::Aborted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::InProgress => "in_progress",
            Self::Paused => "paused",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Aborted => "aborted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Pending => "Not started",
            Self::InProgress => "In progress",
            Self::Paused => "Paused",
            Self::Completed => "Completed",
            Self::Failed => "Failed",
            Self::Aborted => "Aborted",
        }
    }

    /// Under way or about to be: shown as current work on the status page.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Pending | Self::InProgress | Self::Paused)
    }

    /// Over: completed, failed or aborted (a failed one can still be retried).
    pub fn is_finished(self) -> bool {
        !self.is_active()
    }
}

/// One point of a drain: the counts a target reported at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub at: Timestamp,
    pub counts: Counts,
}

/// How far back the drain rate is measured for an estimate.
pub const DRAIN_WINDOW: SignedDuration = SignedDuration::from_mins(15);
/// Samples kept per target (within [`DRAIN_WINDOW`]).
const SAMPLES_MAX: usize = 64;
/// Kept samples are at least this far apart (the newest excepted): a target reporting every
/// two seconds keeps 30 points over the window, not 450.
const SAMPLE_SPACING: SignedDuration = SignedDuration::from_secs(30);

/// One instance of the rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `None` until stored.
    pub id: Option<i64>,
    /// 1-based place in the rollout's order.
    pub position: i64,
    pub name: String,
    pub state: TargetState,
    /// The version it runs, as last reported (or assumed).
    pub version: Option<String>,
    pub remaining: Counts,
    /// The counts when its drain began.
    pub drain_start_counts: Counts,
    pub drain_started_at: Option<Timestamp>,
    /// When it reported drained (or was forced on before that).
    pub drained_at: Option<Timestamp>,
    /// Time of its latest state change.
    pub changed_at: Option<Timestamp>,
    /// Healthy or failed since then.
    pub finished_at: Option<Timestamp>,
    /// When the target (or its deploy script) last reported anything.
    pub last_report_at: Option<Timestamp>,
    /// Taken to `updating`/`healthy` without finishing its drain.
    pub forced: bool,
    pub forced_reason: Option<String>,
    /// The note given with its latest transition.
    pub note: Option<String>,
    /// 1, plus one per retry.
    pub attempts: i64,
    /// The drain so far, for the estimate (within [`DRAIN_WINDOW`]).
    pub samples: Vec<Sample>,
}

/// When a drain is expected to finish, and from what.
#[derive(Debug, Clone, PartialEq)]
pub struct DrainEstimate {
    pub at: Timestamp,
    /// The label that takes longest, and its rate per minute.
    pub label: String,
    pub per_minute: f64,
}

impl Target {
    /// Whether the target should be reporting but has been silent for `stale_after`.
    pub fn is_stale(&self, stale_after: SignedDuration, now: Timestamp) -> bool {
        self.state.is_moving()
            && self
                .last_report_at
                .max(self.changed_at)
                .is_some_and(|t| now.duration_since(t) > stale_after)
    }

    pub fn remaining_total(&self) -> i64 {
        self.remaining.values().sum()
    }

    /// How long the drain has taken so far (or took).
    pub fn drain_time(&self, now: Timestamp) -> Option<SignedDuration> {
        let start = self.drain_started_at?;
        Some(self.drained_at.unwrap_or(now).duration_since(start))
    }

    /// When the drain will be over at the rate observed: per label, a least-squares line
    /// through the counts reported over the last [`DRAIN_WINDOW`] (the latest report counts
    /// as a point at its own time, so a flat stretch shows); the label that takes longest
    /// decides. `None` while draining with too little data, or when any count with work left
    /// is flat or rising.
    pub fn drain_estimate(&self) -> Option<DrainEstimate> {
        if self.state != TargetState::Draining || self.remaining_total() == 0 {
            return None;
        }
        let latest = self.last_report_at?;
        let mut points: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| latest.duration_since(s.at) <= DRAIN_WINDOW)
            .collect();
        let now_point = Sample {
            at: latest,
            counts: self.remaining.clone(),
        };
        if points.last().is_none_or(|s| s.at < latest) {
            points.push(&now_point);
        }
        let mut worst: Option<DrainEstimate> = None;
        for (label, &left) in self.remaining.iter().filter(|(_, n)| **n > 0) {
            let xy: Vec<(f64, f64)> = points
                .iter()
                .filter_map(|s| {
                    let n = *s.counts.get(label)?;
                    Some((s.at.duration_since(latest).as_secs_f64(), n as f64))
                })
                .collect();
            let slope = least_squares_slope(&xy)?;
            if slope >= 0.0 || !slope.is_finite() {
                return None;
            }
            let secs = left as f64 / -slope;
            let at = latest.checked_add(SignedDuration::try_from_secs_f64(secs).ok()?);
            let at = at.ok()?;
            if worst.as_ref().is_none_or(|w| at > w.at) {
                worst = Some(DrainEstimate {
                    at,
                    label: label.clone(),
                    per_minute: -slope * 60.0,
                });
            }
        }
        worst
    }

    fn record_sample(&mut self, now: Timestamp) {
        let sample = Sample {
            at: now,
            counts: self.remaining.clone(),
        };
        match self.samples.len() {
            n if n >= 2 && now.duration_since(self.samples[n - 2].at) < SAMPLE_SPACING => {
                self.samples[n - 1] = sample;
            }
            _ => self.samples.push(sample),
        }
        self.samples
            .retain(|s| now.duration_since(s.at) <= DRAIN_WINDOW);
        if self.samples.len() > SAMPLES_MAX {
            let extra = self.samples.len() - SAMPLES_MAX;
            self.samples.drain(..extra);
        }
    }
}

/// The slope of the least-squares line through `points`; `None` without two distinct x.
fn least_squares_slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx <= f64::EPSILON {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    Some(sxy / sxx)
}

/// A rollout with its targets: the aggregate every rollout rule works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    pub id: i64,
    pub title: String,
    /// Markdown.
    pub description: String,
    pub from_version: Option<String>,
    pub to_version: String,
    /// The maintenance window it belongs to, if any.
    pub maintenance_id: Option<i64>,
    pub state: RolloutState,
    /// No progress for this long makes an in-progress rollout stalled.
    pub progress_deadline: SignedDuration,
    /// A moving target silent for this long is stale.
    pub stale_after: SignedDuration,
    /// Whether the public sees target names ("fishjam-2") or positions ("instance 2 of 3").
    pub public_names: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    /// The latest progress (or start or resume): the stall clock runs from here.
    pub last_progress_at: Option<Timestamp>,
    /// Set when a stall was announced; cleared by progress.
    pub stalled_at: Option<Timestamp>,
    /// This rollout reverses that one.
    pub rollback_of: Option<i64>,
    /// That rollout reverses this one.
    pub rolled_back_by: Option<i64>,
    /// Optimistic-concurrency counter, as for windows.
    pub version: i64,
    /// Ordered by position, 1..=n.
    pub targets: Vec<Target>,
}

/// What a new rollout needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRollout {
    pub title: String,
    pub description: String,
    pub from_version: Option<String>,
    pub to_version: String,
    pub targets: Vec<String>,
    pub maintenance_id: Option<i64>,
    pub progress_deadline: SignedDuration,
    pub stale_after: SignedDuration,
    pub public_names: bool,
    pub rollback_of: Option<i64>,
}

pub const DEFAULT_PROGRESS_DEADLINE: SignedDuration = SignedDuration::from_mins(10);
pub const DEFAULT_STALE_AFTER: SignedDuration = SignedDuration::from_mins(2);
/// Bounds for the progress deadline and the stale-report time, in seconds.
pub const DEADLINE_SECS: (i64, i64) = (60, 7 * 86_400);
pub const STALE_SECS: (i64, i64) = (10, 86_400);

impl NewRollout {
    /// A rollout with the defaults: progress deadline 10 min, stale after 2 min, names public.
    pub fn new(title: &str, from: Option<&str>, to: &str, targets: &[&str]) -> Self {
        Self {
            title: title.to_owned(),
            description: String::new(),
            from_version: from.map(str::to_owned),
            to_version: to.to_owned(),
            targets: targets.iter().map(|t| (*t).to_owned()).collect(),
            maintenance_id: None,
            progress_deadline: DEFAULT_PROGRESS_DEADLINE,
            stale_after: DEFAULT_STALE_AFTER,
            public_names: true,
            rollback_of: None,
        }
    }

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
        let from_version = match self.from_version.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(v) => Some(validate_version("from_version", v)?),
        };
        let to_version = validate_version("to_version", &self.to_version)?;
        if self.targets.is_empty() {
            return Err(ValidationError::new("targets", "name at least one target"));
        }
        if self.targets.len() > limits::TARGETS_MAX {
            return Err(ValidationError::new(
                "targets",
                format!("a rollout has at most {} targets", limits::TARGETS_MAX),
            ));
        }
        let mut targets: Vec<String> = Vec::with_capacity(self.targets.len());
        for name in &self.targets {
            let name = validate_target_name(name)?;
            if targets.contains(&name) {
                return Err(ValidationError::new(
                    "targets",
                    format!("{name:?} is named twice"),
                ));
            }
            targets.push(name);
        }
        check_secs(
            "progress_deadline_seconds",
            self.progress_deadline,
            DEADLINE_SECS,
        )?;
        check_secs("stale_after_seconds", self.stale_after, STALE_SECS)?;
        Ok(Self {
            title,
            description,
            from_version,
            to_version,
            targets,
            ..self
        })
    }
}

fn check_secs(
    field: &'static str,
    d: SignedDuration,
    (min, max): (i64, i64),
) -> Result<(), ValidationError> {
    let s = d.as_secs();
    if s < min || s > max || d.subsec_nanos() != 0 {
        return Err(ValidationError::new(
            field,
            format!("must be a whole number of seconds from {min} to {max}"),
        ));
    }
    Ok(())
}

/// A version as deploy tools write it: `v1.4.0`, `1.4.0-rc.1+build.5`, a commit hash.
pub fn validate_version(field: &'static str, v: &str) -> Result<String, ValidationError> {
    let v = v.trim();
    if v.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    let len = v.chars().count();
    if len > limits::VERSION_MAX {
        return Err(ValidationError::new(
            field,
            format!(
                "is {len} characters long; at most {} are allowed",
                limits::VERSION_MAX
            ),
        ));
    }
    if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ValidationError::new(
            field,
            "may not contain spaces or control characters",
        ));
    }
    Ok(v.to_owned())
}

/// A target name: whatever a deploy tool calls an instance (dots, dashes, non-ASCII), within
/// 100 characters, without control characters.
pub fn validate_target_name(name: &str) -> Result<String, ValidationError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ValidationError::new("targets", "a target name is empty"));
    }
    if name.chars().count() > limits::TARGET_NAME_MAX {
        return Err(ValidationError::new(
            "targets",
            format!(
                "target names are at most {} characters",
                limits::TARGET_NAME_MAX
            ),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ValidationError::new(
            "targets",
            format!("{name:?} contains control characters"),
        ));
    }
    Ok(name.to_owned())
}

/// Check remaining counts: at most 10 labels of letters, digits, `_`, `-`, `.` (40
/// characters), each count 0 to 10⁹.
pub fn validate_counts(counts: &Counts) -> Result<(), ValidationError> {
    if counts.len() > limits::LABELS_MAX {
        return Err(ValidationError::new(
            "remaining",
            format!("at most {} labels", limits::LABELS_MAX),
        ));
    }
    for (label, &n) in counts {
        if label.is_empty()
            || label.chars().count() > limits::LABEL_MAX
            || !label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(ValidationError::new(
                "remaining",
                format!(
                    "{label:?} is not a label: use 1 to {} letters, digits, '_', '-' or '.'",
                    limits::LABEL_MAX
                ),
            ));
        }
        if !(0..=limits::COUNT_MAX).contains(&n) {
            return Err(ValidationError::new(
                "remaining",
                format!(
                    "{label}: a count is a whole number from 0 to {}",
                    limits::COUNT_MAX
                ),
            ));
        }
    }
    Ok(())
}

/// What a target (or a maintainer on its behalf) reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub state: TargetState,
    pub remaining: Option<Counts>,
    pub version: Option<String>,
    pub forced: bool,
    pub note: Option<String>,
}

impl Report {
    pub fn state(state: TargetState) -> Self {
        Self {
            state,
            remaining: None,
            version: None,
            forced: false,
            note: None,
        }
    }
}

/// A timeline entry produced by a rollout rule, not yet stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRolloutUpdate {
    pub kind: UpdateKind,
    /// Generated text (target names only where they are public).
    pub body: String,
    pub note: Option<String>,
    /// The target concerned, by its real name (shown to maintainers).
    pub target: Option<String>,
    pub created_at: Timestamp,
}

/// A stored rollout timeline entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutUpdate {
    pub id: i64,
    pub rollout_id: i64,
    pub kind: UpdateKind,
    pub body: String,
    pub note: Option<String>,
    pub target: Option<String>,
    /// Who made the change: `user:NAME`, `token:NAME`, `scheduler`.
    pub actor: String,
    pub created_at: Timestamp,
}

/// What a rule did: timeline entries (each announced to the channels that receive its kind)
/// and whether Discord's live message needs redrawing for a change with no entry of its own
/// (remaining counts moved).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RolloutChange {
    pub updates: Vec<NewRolloutUpdate>,
    /// Remaining counts moved (channels choose whether that redraws: `rollout_drain`).
    pub drain: bool,
    /// What the live message shows changed otherwise (an edit: title, names made private):
    /// redraw on every Discord channel that announces rollouts.
    pub redraw: bool,
}

impl From<Vec<NewRolloutUpdate>> for RolloutChange {
    fn from(updates: Vec<NewRolloutUpdate>) -> Self {
        Self {
            updates,
            ..Self::default()
        }
    }
}

/// What a maintainer may do to a rollout as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutAction {
    Pause,
    Resume,
    Abort,
    Rollback,
}

impl RolloutAction {
    pub const ALL: [Self; 4] = [Self::Pause, Self::Resume, Self::Abort, Self::Rollback];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Abort => "abort",
            Self::Rollback => "rollback",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// Fields an edit may change; `None` leaves a field as it is (`Some(None)` clears the window
/// link).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RolloutEdit {
    pub title: Option<String>,
    pub description: Option<String>,
    pub maintenance_id: Option<Option<i64>>,
    pub progress_deadline: Option<SignedDuration>,
    pub stale_after: Option<SignedDuration>,
    pub public_names: Option<bool>,
}

fn clean_note(note: Option<&str>) -> Result<Option<String>, ValidationError> {
    match note {
        Some(n) => clean_text("note", n, limits::NOTE_MAX, false),
        None => Ok(None),
    }
}

/// "rooms 3, recordings 1".
pub fn counts_text(counts: &Counts) -> String {
    counts
        .iter()
        .map(|(label, n)| format!("{label} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

impl Rollout {
    /// A new rollout as stored: pending, every target pending.
    pub fn from_new(id: i64, new: NewRollout, now: Timestamp) -> Self {
        Self {
            id,
            title: new.title,
            description: new.description,
            from_version: new.from_version,
            to_version: new.to_version,
            maintenance_id: new.maintenance_id,
            state: RolloutState::Pending,
            progress_deadline: new.progress_deadline,
            stale_after: new.stale_after,
            public_names: new.public_names,
            created_at: now,
            updated_at: now,
            started_at: None,
            finished_at: None,
            last_progress_at: None,
            stalled_at: None,
            rollback_of: new.rollback_of,
            rolled_back_by: None,
            version: 0,
            targets: new
                .targets
                .into_iter()
                .enumerate()
                .map(|(i, name)| Target {
                    id: None,
                    position: i as i64 + 1,
                    name,
                    state: TargetState::Pending,
                    version: None,
                    remaining: Counts::new(),
                    drain_start_counts: Counts::new(),
                    drain_started_at: None,
                    drained_at: None,
                    changed_at: None,
                    finished_at: None,
                    last_report_at: None,
                    forced: false,
                    forced_reason: None,
                    note: None,
                    attempts: 1,
                    samples: Vec::new(),
                })
                .collect(),
        }
    }

    pub fn target(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.name == name)
    }

    /// How the public sees a target: its name, or "instance 2 of 3" when names are private.
    pub fn public_name(&self, target: &Target) -> String {
        if self.public_names {
            target.name.clone()
        } else {
            format!("instance {} of {}", target.position, self.targets.len())
        }
    }

    /// A timeline text as the public may read it now: with names made private after it was
    /// written, every target name in it becomes its position ("instance 2 of 3").
    pub fn public_text(&self, text: &str) -> String {
        if self.public_names {
            return text.to_owned();
        }
        let mut targets: Vec<&Target> = self.targets.iter().collect();
        // Longest first, so fishjam-10 is not read as fishjam-1 and a 0.
        targets.sort_by_key(|t| std::cmp::Reverse(t.name.len()));
        let mut out = text.to_owned();
        for t in targets {
            if out.contains(&t.name) {
                out = out.replace(&t.name, &self.public_name(t));
            }
        }
        out
    }

    /// The version a target runs, as far as Herald knows.
    pub fn version_of<'a>(&'a self, target: &'a Target) -> Option<&'a str> {
        target.version.as_deref().or(self.from_version.as_deref())
    }

    /// How many targets run which version, the target version first, then by count.
    pub fn version_mix(&self) -> Vec<(String, usize)> {
        let mut mix: Vec<(String, usize)> = Vec::new();
        for t in &self.targets {
            let v = self
                .version_of(t)
                .unwrap_or("an earlier version")
                .to_owned();
            match mix.iter_mut().find(|(name, _)| *name == v) {
                Some((_, n)) => *n += 1,
                None => mix.push((v, 1)),
            }
        }
        mix.sort_by(|a, b| {
            (b.0 == self.to_version)
                .cmp(&(a.0 == self.to_version))
                .then(b.1.cmp(&a.1))
        });
        mix
    }

    /// "v1.4.0 on 2 of 3 instances · v1.3.2 on 1".
    pub fn version_headline(&self) -> String {
        let total = self.targets.len();
        let on_new = self
            .targets
            .iter()
            .filter(|t| self.version_of(t) == Some(self.to_version.as_str()))
            .count();
        let mut parts = vec![format!(
            "{} on {on_new} of {total} instance{}",
            self.to_version,
            plural(total)
        )];
        for (v, n) in self.version_mix() {
            if v != self.to_version {
                parts.push(format!("{v} on {n}"));
            }
        }
        parts.join(" · ")
    }

    pub fn healthy(&self) -> usize {
        self.targets
            .iter()
            .filter(|t| t.state == TargetState::Healthy)
            .count()
    }

    /// In progress with no progress within the deadline.
    pub fn is_stalled(&self, now: Timestamp) -> bool {
        self.state == RolloutState::InProgress
            && self
                .last_progress_at
                .or(self.started_at)
                .is_some_and(|p| now.duration_since(p) >= self.progress_deadline)
    }

    /// When the stall clock runs out, for the scheduler.
    pub fn stall_due(&self) -> Option<Timestamp> {
        if self.state != RolloutState::InProgress || self.stalled_at.is_some() {
            return None;
        }
        self.last_progress_at
            .or(self.started_at)?
            .checked_add(self.progress_deadline)
            .ok()
    }

    /// One line for people watching from a terminal or a chat:
    /// "2 of 3 targets on v1.4.0, fishjam-3 draining: rooms 4".
    pub fn summary(&self) -> String {
        let total = self.targets.len();
        let on_new = self
            .targets
            .iter()
            .filter(|t| {
                t.state == TargetState::Healthy
                    && self.version_of(t) == Some(self.to_version.as_str())
            })
            .count();
        let mut line = format!(
            "{on_new} of {total} target{} on {}",
            plural(total),
            self.to_version
        );
        let busy: Vec<&Target> = self
            .targets
            .iter()
            .filter(|t| t.state.is_moving() || t.state == TargetState::Failed)
            .collect();
        for t in busy.iter().take(3) {
            line.push_str(&format!(", {} {}", t.name, t.state.as_str()));
            if t.state == TargetState::Draining && !t.remaining.is_empty() {
                line.push_str(&format!(": {}", counts_text(&t.remaining)));
            }
            if t.forced {
                line.push_str(" (forced)");
            }
        }
        if busy.len() > 3 {
            line.push_str(&format!(" and {} more", busy.len() - 3));
        }
        match self.state {
            RolloutState::InProgress => {}
            s => line.push_str(&format!(" ({})", s.label().to_lowercase())),
        }
        line
    }

    fn update(
        &self,
        kind: UpdateKind,
        body: String,
        target: Option<&Target>,
        now: Timestamp,
    ) -> NewRolloutUpdate {
        NewRolloutUpdate {
            kind,
            body,
            note: None,
            target: target.map(|t| t.name.clone()),
            created_at: now,
        }
    }

    /// The state the targets imply (pause and abort are a maintainer's and are kept apart).
    fn derived_state(&self) -> RolloutState {
        let all = |f: &dyn Fn(&Target) -> bool| self.targets.iter().all(f);
        if all(&|t| t.state == TargetState::Healthy) {
            RolloutState::Completed
        } else if all(&|t| matches!(t.state, TargetState::Healthy | TargetState::Failed)) {
            RolloutState::Failed
        } else if self.started_at.is_none() && all(&|t| t.state == TargetState::Pending) {
            RolloutState::Pending
        } else {
            RolloutState::InProgress
        }
    }

    /// After targets changed: move the rollout's own state where they lead, with the timeline
    /// entries that marks. A pause holds, except against an outcome.
    fn settle(&mut self, now: Timestamp) -> (Vec<NewRolloutUpdate>, Vec<NewRolloutUpdate>) {
        let (mut before, mut after) = (Vec::new(), Vec::new());
        if self.state == RolloutState::Aborted {
            return (before, after);
        }
        let derived = self.derived_state();
        if self.started_at.is_none() && derived != RolloutState::Pending {
            self.started_at = Some(now);
            self.last_progress_at = Some(now);
            let body = match &self.from_version {
                Some(from) => format!(
                    "Rollout started: {from} → {} on {} target{}.",
                    self.to_version,
                    self.targets.len(),
                    plural(self.targets.len())
                ),
                None => format!(
                    "Rollout started: {} on {} target{}.",
                    self.to_version,
                    self.targets.len(),
                    plural(self.targets.len())
                ),
            };
            before.push(self.update(UpdateKind::RolloutStarted, body, None, now));
        }
        let next = match (self.state, derived) {
            (RolloutState::Paused, d) if !d.is_finished() => RolloutState::Paused,
            (_, d) => d,
        };
        if next == self.state {
            return (before, after);
        }
        match next {
            RolloutState::Completed => {
                self.finished_at = Some(now);
                let took = self
                    .started_at
                    .map(|s| format!(" in {}", human_duration(now.duration_since(s))))
                    .unwrap_or_default();
                let n = self.targets.len();
                let body = format!(
                    "Rollout completed{took}: {} on all {n} target{}.",
                    self.to_version,
                    plural(n)
                );
                after.push(self.update(UpdateKind::RolloutCompleted, body, None, now));
            }
            RolloutState::Failed => {
                self.finished_at = Some(now);
                let failed: Vec<String> = self
                    .targets
                    .iter()
                    .filter(|t| t.state == TargetState::Failed)
                    .map(|t| self.public_name(t))
                    .collect();
                let body = format!(
                    "Rollout failed: {} of {} target{} healthy; failed: {}.",
                    self.healthy(),
                    self.targets.len(),
                    plural(self.targets.len()),
                    failed.join(", ")
                );
                after.push(self.update(UpdateKind::RolloutFailed, body, None, now));
            }
            RolloutState::InProgress | RolloutState::Pending => {
                // Back from failed after a retry: open again.
                self.finished_at = None;
            }
            RolloutState::Paused | RolloutState::Aborted => {}
        }
        self.state = next;
        (before, after)
    }

    fn progressed(&mut self, now: Timestamp) {
        self.last_progress_at = Some(now);
        self.stalled_at = None;
    }

    fn refuse_closed(&self, what: &str) -> Result<(), RuleError> {
        if let Some(by) = self.rolled_back_by {
            return Err(RuleError::new(format!(
                "cannot {what}: the rollout was rolled back (rollout {by} reverses it)"
            )));
        }
        match self.state {
            RolloutState::Aborted => Err(RuleError::new(format!(
                "cannot {what}: the rollout was aborted"
            ))),
            RolloutState::Completed => Err(RuleError::new(format!(
                "cannot {what}: the rollout is completed"
            ))),
            _ => Ok(()),
        }
    }

    /// Apply a target's report. An unchanged report returns an empty change.
    pub fn report(
        &mut self,
        name: &str,
        report: &Report,
        now: Timestamp,
    ) -> Result<RolloutChange, DomainError> {
        let note = clean_note(report.note.as_deref())?;
        let version = match report.version.as_deref() {
            Some(v) => Some(validate_version("version", v)?),
            None => None,
        };
        if let Some(counts) = &report.remaining {
            validate_counts(counts)?;
            let left: i64 = counts.values().sum();
            if left > 0 && !matches!(report.state, TargetState::Draining | TargetState::Failed) {
                return Err(ValidationError::new(
                    "remaining",
                    format!(
                        "a target that is {} has nothing left to drain; report draining with the counts",
                        report.state.as_str()
                    ),
                )
                .into());
            }
        }
        let index = self
            .targets
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| RuleError::new(format!("there is no target {name:?}")))?;
        let current = self.targets[index].state;
        let new = report.state;
        if current == new {
            if self.state == RolloutState::Aborted && self.rolled_back_by.is_none() {
                return Err(RuleError::new(
                    "the rollout was aborted; reports are no longer accepted",
                )
                .into());
            }
            if self.state != RolloutState::Completed {
                self.refuse_closed("report")?;
            }
            return Ok(self.same_state_report(index, report, version, now));
        }
        self.refuse_closed("report")?;
        let public = self.public_name(&self.targets[index]);
        let t = &self.targets[index];
        let draining_left = || {
            if t.remaining_total() > 0 {
                format!(" ({} left)", counts_text(&t.remaining))
            } else {
                String::new()
            }
        };
        let forced = match target_move(current, new) {
            Move::Forward => false,
            Move::SkipsDrain if report.forced => true,
            Move::SkipsDrain => {
                let why = if current == TargetState::Draining {
                    format!("{name} is still draining{}", draining_left())
                } else {
                    format!("{name} has not drained yet")
                };
                return Err(RuleError::new(format!(
                    "{why}: report drained first, or send forced: true to take it down anyway"
                ))
                .into());
            }
            Move::RetryFirst => {
                return Err(RuleError::new(format!(
                    "{name} failed; retry it first, then report {}",
                    new.as_str()
                ))
                .into());
            }
            Move::BackToPending => {
                return Err(RuleError::new(format!(
                    "{name} is {}; a target cannot go back to pending (retry is for a failed target)",
                    current.as_str()
                ))
                .into());
            }
            Move::Backwards | Move::Stay => {
                return Err(RuleError::new(format!(
                    "{name} is already {}; it cannot go back to {}",
                    current.as_str(),
                    new.as_str()
                ))
                .into());
            }
        };

        let to_version = self.to_version.clone();
        let t = &mut self.targets[index];
        let was_left = t.remaining_total();
        let was_counts = t.remaining.clone();
        t.state = new;
        t.changed_at = Some(now);
        t.note = note.clone();
        if let Some(v) = &version {
            t.version = Some(v.clone());
        }
        let (kind, body) = match new {
            TargetState::Draining => {
                let counts = report.remaining.clone().unwrap_or_default();
                t.drain_started_at = Some(now);
                t.drain_start_counts = counts.clone();
                t.remaining = counts;
                t.samples.clear();
                t.record_sample(now);
                let body = if t.remaining.is_empty() {
                    format!("{public} is draining.")
                } else {
                    format!("{public} is draining: {}.", counts_text(&t.remaining))
                };
                (UpdateKind::TargetDraining, body)
            }
            TargetState::Drained => {
                if current == TargetState::Pending {
                    t.drain_started_at = Some(now);
                }
                t.drained_at = Some(now);
                for n in t.remaining.values_mut() {
                    *n = 0;
                }
                let took = t
                    .drain_time(now)
                    .filter(|d| d.as_secs() > 0)
                    .map(|d| format!(" after {}", human_duration(d)))
                    .unwrap_or_default();
                (
                    UpdateKind::TargetDrained,
                    format!("{public} is drained{took}."),
                )
            }
            TargetState::Updating | TargetState::Healthy => {
                if new == TargetState::Healthy {
                    t.finished_at = Some(now);
                    if version.is_none() {
                        t.version = Some(to_version.clone());
                    }
                }
                if forced {
                    t.forced = true;
                    t.forced_reason = Some(
                        note.clone()
                            .unwrap_or_else(|| "forced without a reason given".to_owned()),
                    );
                    if t.drained_at.is_none() {
                        t.drained_at = Some(now);
                    }
                    let left = if was_left > 0 {
                        format!(" with {} left", counts_text(&was_counts))
                    } else {
                        String::new()
                    };
                    (
                        UpdateKind::TargetForced,
                        format!(
                            "{public} was forced to {} before its drain finished{left}.",
                            new.as_str()
                        ),
                    )
                } else if new == TargetState::Healthy {
                    let v = t.version.clone().unwrap_or(to_version.clone());
                    (
                        UpdateKind::TargetHealthy,
                        format!("{public} is healthy on {v}."),
                    )
                } else {
                    (UpdateKind::TargetUpdating, format!("{public} is updating."))
                }
            }
            TargetState::Failed => {
                t.finished_at = Some(now);
                if let Some(counts) = &report.remaining {
                    t.remaining = counts.clone();
                }
                let left = if t.remaining_total() > 0 {
                    format!(" with {} left", counts_text(&t.remaining))
                } else {
                    String::new()
                };
                (
                    UpdateKind::TargetFailed,
                    format!("{public} failed while {}{left}.", current.as_str()),
                )
            }
            TargetState::Pending => (new.timeline_kind(), String::new()),
        };
        let target = self.targets[index].clone();
        let mut entry = self.update(kind, body, Some(&target), now);
        entry.note = note;
        self.progressed(now);
        self.updated_at = now;
        let (mut updates, after) = self.settle(now);
        updates.push(entry);
        updates.extend(after);
        Ok(updates.into())
    }

    /// A report naming the state the target is in: new counts while draining, a version;
    /// otherwise nothing.
    fn same_state_report(
        &mut self,
        index: usize,
        report: &Report,
        version: Option<String>,
        now: Timestamp,
    ) -> RolloutChange {
        let t = &mut self.targets[index];
        let mut changed = false;
        if let Some(v) = version
            && t.version.as_ref() != Some(&v)
        {
            t.version = Some(v);
            changed = true;
        }
        let mut progress = false;
        if t.state == TargetState::Draining
            && let Some(counts) = &report.remaining
            && *counts != t.remaining
        {
            progress = counts
                .iter()
                .any(|(label, n)| t.remaining.get(label).is_some_and(|was| n < was))
                || t.remaining.keys().any(|label| !counts.contains_key(label));
            // Labels first reported now join the drain's starting counts.
            for (label, n) in counts {
                t.drain_start_counts.entry(label.clone()).or_insert(*n);
            }
            t.remaining = counts.clone();
            t.record_sample(now);
            changed = true;
        }
        if !changed {
            return RolloutChange::default();
        }
        if progress {
            self.progressed(now);
        }
        self.updated_at = now;
        RolloutChange {
            drain: true,
            ..RolloutChange::default()
        }
    }

    /// A failed target back to pending, to go through its update again.
    pub fn retry(
        &mut self,
        name: &str,
        note: Option<&str>,
        now: Timestamp,
    ) -> Result<RolloutChange, DomainError> {
        let note = clean_note(note)?;
        self.refuse_closed("retry a target")?;
        let index = self
            .targets
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| RuleError::new(format!("there is no target {name:?}")))?;
        let t = &mut self.targets[index];
        if t.state != TargetState::Failed {
            return Err(RuleError::new(format!(
                "{name} is {}, not failed; only a failed target can be retried",
                t.state.as_str()
            ))
            .into());
        }
        t.state = TargetState::Pending;
        t.attempts += 1;
        t.changed_at = Some(now);
        t.finished_at = None;
        t.drain_started_at = None;
        t.drained_at = None;
        t.remaining.clear();
        t.drain_start_counts.clear();
        t.samples.clear();
        t.forced = false;
        t.forced_reason = None;
        t.note = note.clone();
        let attempt = t.attempts;
        let target = t.clone();
        let public = self.public_name(&target);
        let mut entry = self.update(
            UpdateKind::TargetRetried,
            format!("{public} will be tried again (attempt {attempt})."),
            Some(&target),
            now,
        );
        entry.note = note;
        self.progressed(now);
        self.updated_at = now;
        let (mut updates, after) = self.settle(now);
        updates.push(entry);
        updates.extend(after);
        Ok(updates.into())
    }

    /// Pause, resume or abort (rollback has its own rule, [`Rollout::rollback`]).
    pub fn apply(
        &mut self,
        action: RolloutAction,
        note: Option<&str>,
        now: Timestamp,
    ) -> Result<RolloutChange, DomainError> {
        let note = clean_note(note)?;
        let (kind, body) = match action {
            RolloutAction::Pause => {
                if !matches!(self.state, RolloutState::Pending | RolloutState::InProgress) {
                    return Err(RuleError::new(format!(
                        "cannot pause: the rollout is {}",
                        self.state.label().to_lowercase()
                    ))
                    .into());
                }
                self.state = RolloutState::Paused;
                self.stalled_at = None;
                (
                    UpdateKind::RolloutPaused,
                    "Rollout paused. Targets keep reporting; nothing new should start.".to_owned(),
                )
            }
            RolloutAction::Resume => {
                if self.state != RolloutState::Paused {
                    return Err(RuleError::new(format!(
                        "cannot resume: the rollout is {}, not paused",
                        self.state.label().to_lowercase()
                    ))
                    .into());
                }
                self.state = self.derived_state();
                if self.started_at.is_some() {
                    // The stall clock starts again from now: a pause is not a stall.
                    self.progressed(now);
                }
                (UpdateKind::RolloutResumed, "Rollout resumed.".to_owned())
            }
            RolloutAction::Abort => {
                self.refuse_closed("abort")?;
                self.state = RolloutState::Aborted;
                self.finished_at = Some(now);
                self.stalled_at = None;
                (
                    UpdateKind::RolloutAborted,
                    format!("Rollout aborted. {}.", self.version_headline()),
                )
            }
            RolloutAction::Rollback => {
                return Err(
                    RuleError::new("a rollback creates a new rollout; use rollback").into(),
                );
            }
        };
        self.updated_at = now;
        let mut entry = self.update(kind, body, None, now);
        entry.note = note;
        Ok(vec![entry].into())
    }

    /// Reverse the rollout for the targets already on its new version: returns the change to
    /// this rollout and the reverse rollout to create (linked back to this one).
    pub fn rollback(
        &mut self,
        note: Option<&str>,
        now: Timestamp,
    ) -> Result<(RolloutChange, NewRollout), DomainError> {
        let note = clean_note(note)?;
        if self.rolled_back_by.is_some() {
            return Err(RuleError::new("the rollout was rolled back already").into());
        }
        if self.state == RolloutState::Aborted {
            return Err(RuleError::new("cannot roll back: the rollout was aborted").into());
        }
        let Some(from) = self.from_version.clone() else {
            return Err(RuleError::new(
                "cannot roll back: the rollout does not say which version it replaced (from_version)",
            )
            .into());
        };
        let on_new: Vec<String> = self
            .targets
            .iter()
            .filter(|t| t.version.as_deref() == Some(self.to_version.as_str()))
            .map(|t| t.name.clone())
            .collect();
        if on_new.is_empty() {
            return Err(RuleError::new(format!(
                "cannot roll back: no target runs {} yet",
                self.to_version
            ))
            .into());
        }
        let title: String = format!("Roll back: {}", self.title)
            .chars()
            .take(limits::TITLE_MAX)
            .collect();
        let reverse = NewRollout {
            title,
            description: format!(
                "Returns the targets that already run {} to {from}.",
                self.to_version
            ),
            from_version: Some(self.to_version.clone()),
            to_version: from.clone(),
            targets: on_new.clone(),
            maintenance_id: self.maintenance_id,
            progress_deadline: self.progress_deadline,
            stale_after: self.stale_after,
            public_names: self.public_names,
            rollback_of: Some(self.id),
        };
        if self.state.is_active() {
            self.state = RolloutState::Aborted;
            self.finished_at = Some(now);
            self.stalled_at = None;
        }
        self.updated_at = now;
        let names: Vec<String> = self
            .targets
            .iter()
            .filter(|t| on_new.contains(&t.name))
            .map(|t| self.public_name(t))
            .collect();
        let mut entry = self.update(
            UpdateKind::RolloutRolledBack,
            format!("Rolling back to {from} on {}.", names.join(", ")),
            None,
            now,
        );
        entry.note = note;
        Ok((vec![entry].into(), reverse))
    }

    /// Announce a stall once, when the deadline passed without progress.
    pub fn check_stall(&mut self, now: Timestamp) -> RolloutChange {
        if !self.is_stalled(now) || self.stalled_at.is_some() {
            return RolloutChange::default();
        }
        self.stalled_at = Some(now);
        let since = self.last_progress_at.or(self.started_at).unwrap_or(now);
        let waiting: Vec<String> = self
            .targets
            .iter()
            .filter(|t| t.state.is_moving() || t.state == TargetState::Failed)
            .map(|t| {
                let mut s = format!("{} {}", self.public_name(t), t.state.as_str());
                if t.state == TargetState::Draining && t.remaining_total() > 0 {
                    s.push_str(&format!(" ({})", counts_text(&t.remaining)));
                }
                s
            })
            .collect();
        let mut body = format!(
            "Rollout stalled: no progress for {}.",
            human_duration(now.duration_since(since))
        );
        if !waiting.is_empty() {
            body.push_str(&format!(" Waiting on {}.", waiting.join(", ")));
        }
        vec![self.update(UpdateKind::RolloutStalled, body, None, now)].into()
    }

    /// A free-form timeline entry.
    pub fn post_note(&self, body: &str, now: Timestamp) -> Result<RolloutChange, DomainError> {
        let body = clean_text("body", body, limits::UPDATE_MAX, true)?.unwrap_or_default();
        Ok(vec![self.update(UpdateKind::RolloutNote, body, None, now)].into())
    }

    /// Correct what a rollout says or how it is watched. Silent (no timeline entry); the live
    /// Discord message is redrawn.
    pub fn edit(
        &mut self,
        edit: &RolloutEdit,
        now: Timestamp,
    ) -> Result<RolloutChange, DomainError> {
        let before = self.clone();
        if let Some(title) = &edit.title {
            self.title = clean_line("title", title, limits::TITLE_MAX, true)?.unwrap_or_default();
        }
        if let Some(d) = &edit.description {
            self.description =
                clean_text("description", d, limits::DESCRIPTION_MAX, false)?.unwrap_or_default();
        }
        if let Some(link) = edit.maintenance_id {
            self.maintenance_id = link;
        }
        if let Some(d) = edit.progress_deadline {
            check_secs("progress_deadline_seconds", d, DEADLINE_SECS)?;
            self.progress_deadline = d;
        }
        if let Some(d) = edit.stale_after {
            check_secs("stale_after_seconds", d, STALE_SECS)?;
            self.stale_after = d;
        }
        if let Some(p) = edit.public_names {
            self.public_names = p;
        }
        if *self == before {
            return Ok(RolloutChange::default());
        }
        self.updated_at = now;
        Ok(RolloutChange {
            redraw: true,
            ..RolloutChange::default()
        })
    }

    /// The rollout actions its rules allow now, each tried on a copy.
    pub fn allowed_actions(&self) -> Vec<RolloutAction> {
        RolloutAction::ALL
            .into_iter()
            .filter(|a| {
                let mut copy = self.clone();
                match a {
                    RolloutAction::Rollback => copy.rollback(None, self.updated_at).is_ok(),
                    a => copy.apply(*a, None, self.updated_at).is_ok(),
                }
            })
            .collect()
    }

    /// The states a maintainer may set `name` to by hand: `(state, needs force)`, found by
    /// trying each report on a copy.
    pub fn allowed_reports(&self, name: &str) -> Vec<(TargetState, bool)> {
        let Some(current) = self.target(name).map(|t| t.state) else {
            return Vec::new();
        };
        TargetState::ALL
            .into_iter()
            .filter(|s| *s != current)
            .filter_map(|state| {
                let mut report = Report::state(state);
                if self.clone().report(name, &report, self.updated_at).is_ok() {
                    return Some((state, false));
                }
                report.forced = true;
                self.clone()
                    .report(name, &report, self.updated_at)
                    .is_ok()
                    .then_some((state, true))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
