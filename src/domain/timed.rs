//! What happens to a window because time passed: it starts by itself at its scheduled start
//! (`auto_start`), completes at its expected end (`auto_complete`), reminds followers at set
//! offsets before the start, and is marked overrunning when it runs past its end. The
//! scheduler (`crate::scheduler`) asks [`Maintenance::next_due`] when to look and applies
//! [`Maintenance::tick`] through the same load–apply–commit loop as every other change, so two
//! Herald processes on one database cannot both fire an event: the second commit meets a new
//! version, reloads, and finds nothing due.
//!
//! # When a missed event still fires
//!
//! A process that was down when something fell due does it on its first look, if it is still
//! worth doing:
//!
//! - a reminder, while the start is still ahead; when several fell due, only the nearest one
//!   goes out (followers get "starts in 20 min", not also "starts in 1 day");
//! - an automatic start, while the expected end has not passed (without an end: within
//!   [`LATE_START_GRACE`] of the start); a window whose whole slot went by is left to a
//!   person, and the page shows its start as past;
//! - the overrun note and the automatic completion, whenever: the window is still open.
//!
//! Automatic completion needs nothing left in the plan (no step pending or in progress);
//! otherwise the window is marked overrunning and a person completes it.

use jiff::{SignedDuration, Timestamp};

use super::{
    DomainError, Maintenance, NewUpdate, StepState, UpdateKind, ValidationError, WindowState,
    human_duration,
};

/// Reminders a new window gets: a day and an hour before the start.
pub const DEFAULT_REMINDERS: [i64; 2] = [86_400, 3_600];
const REMINDERS_MAX: usize = 5;
const REMINDER_MIN: i64 = 60;
const REMINDER_MAX: i64 = 30 * 86_400;

/// Without an expected end, an automatic start missed by more than this is left to a person.
pub const LATE_START_GRACE: SignedDuration = SignedDuration::from_hours(1);

/// A window's time-driven behaviour, set by its maintainers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Automation {
    pub auto_start: bool,
    pub auto_complete: bool,
    /// Seconds before the start, largest first, without duplicates.
    pub reminders: Vec<i64>,
}

impl Default for Automation {
    fn default() -> Self {
        Self {
            auto_start: false,
            auto_complete: false,
            reminders: DEFAULT_REMINDERS.to_vec(),
        }
    }
}

impl Automation {
    /// Check the offsets (a minute to 30 days, at most five) and put them in order.
    pub fn validate(mut self) -> Result<Self, ValidationError> {
        if self.reminders.len() > REMINDERS_MAX {
            return Err(ValidationError::new(
                "reminders",
                format!("at most {REMINDERS_MAX} reminders"),
            ));
        }
        if let Some(bad) = self
            .reminders
            .iter()
            .find(|o| !(REMINDER_MIN..=REMINDER_MAX).contains(*o))
        {
            return Err(ValidationError::new(
                "reminders",
                format!(
                    "a reminder goes out between 1 minute and 30 days before the start, not {bad} s"
                ),
            ));
        }
        self.reminders.sort_unstable_by(|a, b| b.cmp(a));
        self.reminders.dedup();
        Ok(self)
    }

    /// Offsets as a person writes them: "24h, 1h, 30m", "2d", "90m"; empty for none.
    pub fn parse_reminders(text: &str) -> Result<Vec<i64>, ValidationError> {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                let bad = || {
                    ValidationError::new(
                        "reminders",
                        format!("{s:?} is not an offset: write them like 24h, 1h, 30m or 2d"),
                    )
                };
                let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
                let (n, unit) = s.split_at(split);
                let n: i64 = n.parse().map_err(|_| bad())?;
                let unit = match unit.trim() {
                    "m" | "min" => 60,
                    "h" => 3_600,
                    "d" => 86_400,
                    _ => return Err(bad()),
                };
                n.checked_mul(unit).ok_or_else(bad)
            })
            .collect()
    }

    /// The offsets as [`Automation::parse_reminders`] reads them back.
    pub fn reminders_text(&self) -> String {
        self.reminders
            .iter()
            .map(|&o| offset_text(o))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// "1d", "24h" stays "1d"; "90m"; "1h".
fn offset_text(secs: i64) -> String {
    if secs % 86_400 == 0 {
        format!("{}d", secs / 86_400)
    } else if secs % 3_600 == 0 {
        format!("{}h", secs / 3_600)
    } else {
        format!("{}m", secs / 60)
    }
}

impl Maintenance {
    /// Forget which reminders went out and count as done those whose time is already past:
    /// called whenever the start is set or moved and when the offsets change.
    pub(super) fn arm_reminders(&mut self, now: Timestamp) {
        self.reminded = match self.starts_at {
            Some(start) => self
                .automation
                .reminders
                .iter()
                .copied()
                .filter(|&o| start.as_second() - o <= now.as_second())
                .collect(),
            None => Vec::new(),
        };
    }

    /// Change the automation. Silent: no timeline entry, no announcement.
    pub fn set_automation(
        &mut self,
        automation: Automation,
        now: Timestamp,
    ) -> Result<Vec<NewUpdate>, DomainError> {
        let automation = automation.validate()?;
        if automation == self.automation {
            return Ok(Vec::new());
        }
        let offsets_changed = automation.reminders != self.automation.reminders;
        self.automation = automation;
        if offsets_changed {
            self.arm_reminders(now);
        }
        self.updated_at = now;
        Ok(Vec::new())
    }

    /// Reminders not yet sent and still ahead of the start, as (offset, when).
    fn pending_reminders(&self) -> impl Iterator<Item = (i64, Timestamp)> + '_ {
        let start = self
            .starts_at
            .filter(|_| self.state == WindowState::Scheduled);
        self.automation
            .reminders
            .iter()
            .copied()
            .filter(|o| !self.reminded.contains(o))
            .filter_map(move |o| Some((o, Timestamp::from_second(start?.as_second() - o).ok()?)))
    }

    /// Whether an automatic start at `now` is still worth doing (see the module's rules).
    fn start_still_relevant(&self, start: Timestamp, now: Timestamp) -> bool {
        match self.ends_at {
            Some(end) => now < end,
            None => now.duration_since(start) <= LATE_START_GRACE,
        }
    }

    /// Work that blocks an automatic completion: a step pending or in progress.
    fn plan_left(&self) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s.state, StepState::Pending | StepState::InProgress))
    }

    /// When [`Maintenance::tick`] next has something to do, if ever (may be in the past: due
    /// now). After a tick at `now`, this is later than `now` or `None`.
    pub fn next_due(&self, now: Timestamp) -> Option<Timestamp> {
        if !self.is_public() {
            return None;
        }
        match self.state {
            WindowState::Scheduled => {
                let start = self.starts_at?;
                let reminder = if now < start {
                    self.pending_reminders().map(|(_, at)| at).min()
                } else {
                    None
                };
                let auto_start = (self.automation.auto_start
                    && (now < start || self.start_still_relevant(start, now)))
                .then_some(start);
                [reminder, auto_start].into_iter().flatten().min()
            }
            WindowState::InProgress if self.overran_at.is_none() => self.ends_at,
            _ => None,
        }
    }

    /// Everything due at `now`: a reminder, the automatic start, the automatic completion or
    /// the overrun note. Nothing when nothing is due.
    pub fn tick(&mut self, now: Timestamp) -> Result<Vec<NewUpdate>, DomainError> {
        if !self.is_public() {
            return Ok(Vec::new());
        }
        match (self.state, self.starts_at, self.ends_at) {
            (WindowState::Scheduled, Some(start), _) if now < start => {
                let due: Vec<i64> = self
                    .pending_reminders()
                    .filter(|(_, at)| *at <= now)
                    .map(|(o, _)| o)
                    .collect();
                if due.is_empty() {
                    return Ok(Vec::new());
                }
                self.reminded.extend(&due);
                self.updated_at = now;
                let body = format!(
                    "Starts in {}. {}",
                    human_duration(start.duration_since(now)),
                    self.schedule_text()
                );
                Ok(vec![self.update(UpdateKind::Reminder, body, now)])
            }
            (WindowState::Scheduled, Some(start), _)
                if self.automation.auto_start && self.start_still_relevant(start, now) =>
            {
                let mut updates = self.start(now)?;
                let late = now.duration_since(start);
                for u in &mut updates {
                    u.body = if late >= SignedDuration::from_mins(1) {
                        format!(
                            "{} Started automatically, {} after its scheduled start.",
                            u.body,
                            human_duration(late)
                        )
                    } else {
                        format!("{} Started automatically at its scheduled start.", u.body)
                    };
                }
                Ok(updates)
            }
            (WindowState::InProgress, _, Some(end)) if now >= end && self.overran_at.is_none() => {
                if self.automation.auto_complete && !self.plan_left() {
                    let mut updates = self.complete(None, now)?;
                    for u in &mut updates {
                        u.body = format!("{} Completed automatically at its expected end.", u.body);
                    }
                    return Ok(updates);
                }
                self.overran_at = Some(now);
                self.updated_at = now;
                let body = format!(
                    "Still in progress past its expected end ({}).",
                    super::format_utc(end)
                );
                Ok(vec![self.update(UpdateKind::Overrunning, body, now)])
            }
            _ => Ok(Vec::new()),
        }
    }
}
