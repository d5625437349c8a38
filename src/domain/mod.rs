//! The domain: components, maintenance windows, their steps and timeline updates, rollouts
//! and their targets (rules in `rollout.rs`), and every lifecycle rule. No I/O happens here: the service layer loads an aggregate, calls a rule, and
//! commits the changed aggregate together with the updates the rule produced.
//!
//! # The rules a maintainer runs into
//!
//! Window lifecycle: `draft` → `planned` (tentative: no date, optional hint) or `scheduled`
//! (start, optional expected end) → `in_progress` → `completed`; `cancelled` from any open state.
//!
//! - A draft is never public. `announce` makes it public: `planned` without a start,
//!   `scheduled` with one. Only a draft can be announced.
//! - Rescheduling (setting, moving or removing the date) is allowed while the window has not
//!   started and moves it between `planned` and `scheduled`. Once in progress only the expected
//!   end may move (the actual start is a fact by then). Finished windows cannot be rescheduled.
//! - A window starts from `planned` or `scheduled`; a draft must be announced first.
//! - Steps run in order, one at a time: a step starts only while the window is in progress, no
//!   other step is in progress, and every earlier step is done or skipped.
//! - A failed step is a decision point: it blocks the steps after it until it is retried
//!   (started again, which counts an attempt) or skipped.
//! - `done` and `fail` apply to the step in progress; `skip` applies to a pending, in-progress
//!   or failed step of a window in progress.
//! - Completing requires that no step is still in progress; pending steps are marked skipped
//!   (the completion update names them), failed steps stay failed.
//! - Cancelling a window that is in progress marks its open steps (pending or in progress)
//!   skipped, so the checklist shows what never ran.
//! - Free-form updates can be posted to any public window, also after it finished (follow-ups).

mod account;
mod channel;
mod incident;
mod maintenance;
mod rollout;
mod sign_in;
mod subscriber;
mod timed;

pub use account::*;
pub use channel::*;
pub use incident::*;
pub use maintenance::*;
pub use rollout::*;
pub use sign_in::*;
pub use subscriber::*;
pub use timed::*;

/// A broken rule, in words a maintainer can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RuleError(pub String);

impl RuleError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// Invalid input, tied to the field it concerns so forms can show it next to that field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: &'static str,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// Everything a change can be refused for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

/// Limits on user input, in one place.
pub mod limits {
    pub const TITLE_MAX: usize = 200;
    pub const DESCRIPTION_MAX: usize = 20_000;
    pub const HINT_MAX: usize = 200;
    pub const NOTE_MAX: usize = 2_000;
    pub const UPDATE_MAX: usize = 5_000;
    pub const STEPS_MAX: usize = 100;
    pub const SLUG_MAX: usize = 64;
    pub const NAME_MAX: usize = 100;
    pub const VERSION_MAX: usize = 64;
    pub const TARGET_NAME_MAX: usize = 100;
    pub const TARGETS_MAX: usize = 500;
    pub const LABELS_MAX: usize = 10;
    pub const LABEL_MAX: usize = 40;
    pub const COUNT_MAX: i64 = 1_000_000_000;
}

/// Trim `value` and check it is non-empty (when `required`) and within `max` characters. Text
/// of several lines: line breaks are kept as `\n` (a form's `\r\n`, or a lone `\r`, which
/// iCalendar and chat would take differently, becomes `\n`), tabs are kept, other control
/// characters are refused.
pub fn clean_text(
    field: &'static str,
    value: &str,
    max: usize,
    required: bool,
) -> Result<Option<String>, ValidationError> {
    let value = if value.contains('\r') {
        std::borrow::Cow::Owned(value.replace("\r\n", "\n").replace('\r', "\n"))
    } else {
        std::borrow::Cow::Borrowed(value)
    };
    let value = value.trim();
    if value.is_empty() {
        return if required {
            Err(ValidationError::new(field, "must not be empty"))
        } else {
            Ok(None)
        };
    }
    let len = value.chars().count();
    if len > max {
        return Err(ValidationError::new(
            field,
            format!("is {len} characters long; at most {max} are allowed"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(ValidationError::new(field, "contains control characters"));
    }
    Ok(Some(value.to_owned()))
}

/// [`clean_text`] for a one-line field (a title, a name): no line break, tab or other control
/// character, which would break a subject line, a feed entry's title or an iCalendar SUMMARY.
pub fn clean_line(
    field: &'static str,
    value: &str,
    max: usize,
    required: bool,
) -> Result<Option<String>, ValidationError> {
    if value.trim().chars().any(char::is_control) {
        return Err(ValidationError::new(
            field,
            "must be one line, without line breaks, tabs or other control characters",
        ));
    }
    clean_text(field, value, max, required)
}

/// "1 h 12 min", "3 min", "2 d 4 h", "40 s".
pub fn human_duration(d: jiff::SignedDuration) -> String {
    let secs = d.as_secs().max(0);
    let (days, hours, mins) = (secs / 86_400, secs % 86_400 / 3_600, secs % 3_600 / 60);
    match (days, hours, mins) {
        (0, 0, 0) => format!("{secs} s"),
        (0, 0, m) => format!("{m} min"),
        (0, h, 0) => format!("{h} h"),
        (0, h, m) => format!("{h} h {m} min"),
        (d, 0, _) => format!("{d} d"),
        (d, h, _) => format!("{d} d {h} h"),
    }
}

/// A public-facing part of the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    pub id: i64,
    pub slug: String,
    pub name: String,
    pub description: Option<String>,
    pub group_name: Option<String>,
    pub position: i64,
    /// When Herald first knew it: its history starts here.
    pub created_at: jiff::Timestamp,
    /// A status set by hand, with why and when.
    pub manual: Option<ManualStatus>,
}

/// A component's status set by hand, as Statuspage allows: shown until cleared (set back to
/// operational), as the worst with its incidents and windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualStatus {
    pub status: ComponentStatus,
    pub note: String,
    pub at: jiff::Timestamp,
}

/// What a new component needs; validated by [`NewComponent::validate`].
#[derive(Debug, Clone)]
pub struct NewComponent {
    pub slug: String,
    pub name: String,
    pub description: Option<String>,
    pub group_name: Option<String>,
}

impl NewComponent {
    pub fn validate(self) -> Result<Self, ValidationError> {
        // Slugs are lowercase; one typed in capitals is taken as meant, not refused.
        let slug = self.slug.trim().to_ascii_lowercase();
        if slug.is_empty() || slug.len() > limits::SLUG_MAX {
            return Err(ValidationError::new(
                "slug",
                format!("must be 1 to {} characters", limits::SLUG_MAX),
            ));
        }
        if !slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            || slug.starts_with('-')
        {
            return Err(ValidationError::new(
                "slug",
                "may contain only lowercase letters, digits and '-', and not start with '-'",
            ));
        }
        let name = clean_line("name", &self.name, limits::NAME_MAX, true)?.unwrap_or_default();
        let description = match self.description {
            Some(d) => clean_text("description", &d, 500, false)?,
            None => None,
        };
        let group_name = match self.group_name {
            Some(g) => clean_line("group", &g, limits::NAME_MAX, false)?,
            None => None,
        };
        Ok(Self {
            slug,
            name,
            description,
            group_name,
        })
    }
}

/// A component's shown status. It follows the windows that affect the component, and (issue
/// 27) the incidents. Ordered from best to worst as Statuspage ranks them, so the worst of
/// several is their maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ComponentStatus {
    Operational,
    UnderMaintenance,
    Degraded,
    PartialOutage,
    MajorOutage,
}

impl ComponentStatus {
    /// The Statuspage v2 name of this status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operational => "operational",
            Self::UnderMaintenance => "under_maintenance",
            Self::Degraded => "degraded_performance",
            Self::PartialOutage => "partial_outage",
            Self::MajorOutage => "major_outage",
        }
    }

    pub const ALL: [Self; 5] = [
        Self::Operational,
        Self::UnderMaintenance,
        Self::Degraded,
        Self::PartialOutage,
        Self::MajorOutage,
    ];

    /// From its Statuspage v2 name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The statuses an incident may give a component (not `operational`: a component an
    /// incident no longer affects is taken off it; not `under_maintenance`: windows say that).
    pub fn is_incident_status(self) -> bool {
        matches!(
            self,
            Self::Degraded | Self::PartialOutage | Self::MajorOutage
        )
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Operational => "Operational",
            Self::UnderMaintenance => "Under maintenance",
            Self::Degraded => "Degraded",
            Self::PartialOutage => "Partial outage",
            Self::MajorOutage => "Major outage",
        }
    }

    /// The status of `component` given the public windows and incidents that are open now: the
    /// worst of what affects it. A running window makes it under maintenance, or degraded
    /// while the window has an unresolved failed step (the work hit a problem the public
    /// should know about); an open incident gives it the status it names for it.
    pub fn of(component_id: i64, windows: &[Maintenance], incidents: &[Incident]) -> Self {
        let from_windows = windows
            .iter()
            .filter(|w| w.state == WindowState::InProgress)
            .filter(|w| w.components.iter().any(|c| c.id == component_id))
            .map(|w| {
                if w.steps.iter().any(|s| s.state == StepState::Failed) {
                    Self::Degraded
                } else {
                    Self::UnderMaintenance
                }
            });
        let from_incidents = incidents.iter().filter_map(|i| i.status_of(component_id));
        shown_status(from_windows.chain(from_incidents))
    }

    /// The status `component` shows: [`Self::of`], or its status set by hand when worse.
    pub fn shown(component: &Component, windows: &[Maintenance], incidents: &[Incident]) -> Self {
        Self::of(component.id, windows, incidents).max(
            component
                .manual
                .as_ref()
                .map_or(Self::Operational, |m| m.status),
        )
    }
}

#[cfg(test)]
mod tests;
