//! Running a window: the run view with its actions, steps, schedule, updates and
//! deliveries.

use super::*;

// ----- running a window ----------------------------------------------------------------------

#[derive(Template)]
#[template(path = "admin/run.html")]
struct RunPage {
    site: Site,
    me: Me,
    w: WindowView,
    public: bool,
    current: Option<crate::web::view::StepView>,
    actions: Vec<ActionView>,
    /// Where a change is posted, in a sentence.
    posted_to: String,
    /// Why Complete is not offered, while the window runs.
    complete_blocked: Option<String>,
    step_actions: Vec<(&'static str, &'static str, &'static str)>,
    error: Option<String>,
    notice: Option<String>,
    note: String,
    update_body: String,
    schedule: ScheduleFields,
    can_reschedule: bool,
    /// The schedule form was just refused: show it open.
    schedule_open: bool,
    schedule_errors: Vec<ValidationError>,
    deliveries: Vec<channels::DeliveryRow>,
    /// Deliveries not yet sent (pending, failed, skipped): listed first, the rest folded.
    unsent_count: usize,
    previews: Vec<channels::Preview>,
    /// What the window will do by itself, in sentences (HTML: their times as `<time>`).
    automation: Vec<String>,
}

/// A window action as the run view offers it.
struct ActionView {
    action: &'static str,
    label: &'static str,
    /// Asks first (with an optional note) before doing it.
    confirm: bool,
    /// What the confirmation says before the button, if anything needs saying.
    warning: Option<String>,
    /// Where it will be posted (public windows, and announcing).
    posted_to: Option<String>,
}

/// The channels a change will be posted on, in a sentence.
fn posted_to(channels: &[crate::domain::Channel]) -> String {
    let names: Vec<String> = channels
        .iter()
        .filter(|c| c.enabled)
        .map(|c| format!("{} ({})", c.name, c.kind.label()))
        .collect();
    match names.len() {
        0 => "No channel is set up: only the page changes.".to_owned(),
        1 => format!("It is posted on 1 channel: {}.", names[0]),
        n => format!("It is posted on {n} channels: {}.", names.join(", ")),
    }
}

/// What a maintainer should know before confirming `action` on `m`: starting days before the
/// scheduled start, or completing with steps that have not run.
fn action_warning(
    m: &crate::domain::Maintenance,
    action: WindowAction,
    now: Timestamp,
) -> Option<String> {
    match action {
        WindowAction::Start => {
            let start = m.starts_at?;
            let ahead = start.duration_since(now);
            (ahead > jiff::SignedDuration::from_hours(1)).then(|| {
                format!(
                    "This window is scheduled for {}, {} from now: starting now starts it early, and says so publicly.",
                    crate::domain::format_utc(start),
                    crate::domain::human_duration(ahead)
                )
            })
        }
        WindowAction::Complete => {
            let left: Vec<String> = m
                .steps
                .iter()
                .filter(|s| s.state == StepState::Pending)
                .map(|s| format!("{}. {}", s.position, s.title))
                .collect();
            (!left.is_empty()).then(|| {
                format!(
                    "{} not run and will be marked \"not run\": {}.",
                    if left.len() == 1 {
                        "1 step has".to_owned()
                    } else {
                        format!("{} steps have", left.len())
                    },
                    left.join("; ")
                )
            })
        }
        _ => None,
    }
}

/// What the scheduler will do with `m`, for the maintainer running it.
fn automation_lines(m: &crate::domain::Maintenance) -> Vec<String> {
    use crate::domain::{WindowState, format_utc};
    if !m.state.is_open() {
        return Vec::new();
    }
    let a = &m.automation;
    let mut lines = Vec::new();
    if let (WindowState::Draft | WindowState::Planned | WindowState::Scheduled, Some(start)) =
        (m.state, m.starts_at)
    {
        if a.auto_start {
            lines.push(format!("Starts by itself at {}.", format_utc(start)));
        }
        let reminders: Vec<String> = a
            .reminders
            .iter()
            .map(|&o| {
                let at = jiff::Timestamp::from_second(start.as_second() - o).unwrap_or(start);
                let when = crate::domain::human_duration(jiff::SignedDuration::from_secs(o));
                if m.reminded.contains(&o) {
                    format!("{when} before (done)")
                } else {
                    format!("{when} before, at {}", format_utc(at))
                }
            })
            .collect();
        if !reminders.is_empty() {
            lines.push(format!("Reminders: {}.", reminders.join("; ")));
        }
    }
    if a.auto_complete {
        lines.push(match m.ends_at {
            Some(end) => format!(
                "Completes by itself at {} if no step is left.",
                format_utc(end)
            ),
            None => "Would complete by itself at its expected end, but it has none.".to_owned(),
        });
    }
    lines
}

#[derive(Debug, Default)]
pub(crate) struct RunState {
    error: Option<String>,
    notice: Option<String>,
    note: String,
    update_body: String,
    schedule: Option<ScheduleFields>,
    schedule_errors: Vec<ValidationError>,
}

/// The form fields showing a window's current schedule (in UTC).
fn schedule_fields(m: &crate::domain::Maintenance) -> ScheduleFields {
    let local = |t: Option<Timestamp>| {
        t.map(|t| t.strftime("%Y-%m-%dT%H:%M").to_string())
            .unwrap_or_default()
    };
    ScheduleFields {
        when: if m.starts_at.is_some() {
            "fixed"
        } else {
            "tentative"
        }
        .to_owned(),
        schedule_hint: m.schedule_hint.clone().unwrap_or_default(),
        starts_at: local(m.starts_at),
        ends_at: local(m.ends_at),
        time_zone: "UTC".to_owned(),
    }
}

async fn run_page(
    state: &AppState,
    signed_in: &SignedIn,
    id: i64,
    status: StatusCode,
    extra: RunState,
) -> Result<Response, AppError> {
    let m = state.service.maintenance(id).await?;
    let updates = state.service.store().list_updates(id, None).await?;
    let w = window_view(&m, &updates, state.service.now());
    // What to offer comes from the rules themselves; only the wording is decided here.
    let now = state.service.now();
    let all_channels = state.service.channels().await?;
    let posted_to = posted_to(&all_channels);
    let actions = m
        .allowed_actions()
        .into_iter()
        .map(|a| {
            let (action, label, confirm) = match a {
                WindowAction::Announce => ("announce", "Announce", true),
                WindowAction::Start => ("start", "Start", true),
                WindowAction::Complete => ("complete", "Complete", true),
                WindowAction::Cancel => ("cancel", "Cancel window", true),
            };
            ActionView {
                action,
                label,
                confirm,
                warning: action_warning(&m, a, now),
                posted_to: (m.is_public() || a == WindowAction::Announce)
                    .then(|| posted_to.clone()),
            }
        })
        .collect();
    // Complete is missing while a step runs: say why rather than leave a gap.
    let complete_blocked = (m.state == WindowState::InProgress
        && !m.allowed_actions().contains(&WindowAction::Complete))
    .then(|| {
        m.clone()
            .apply(WindowAction::Complete, None, now)
            .err()
            .map(|e| format!("Complete is not offered yet: {e}."))
    })
    .flatten();
    // The step to act on: the one running, a failed one, else the next pending one.
    let target = (m.state == WindowState::InProgress)
        .then(|| {
            m.current_step()
                .or_else(|| m.steps.iter().find(|s| s.state == StepState::Pending))
        })
        .flatten();
    let step_actions = target
        .map(|t| {
            m.allowed_step_actions(t.position)
                .into_iter()
                .map(|a| match a {
                    StepAction::Start if t.state == StepState::Failed => {
                        ("start", "Retry", "primary")
                    }
                    StepAction::Start => ("start", "Start", "primary"),
                    StepAction::Done => ("done", "Done", "good"),
                    StepAction::Fail => ("fail", "Failed", "danger"),
                    StepAction::Skip => ("skip", "Skip", ""),
                })
                .collect()
        })
        .unwrap_or_default();
    let current = target.and_then(|t| w.steps.iter().find(|s| s.position == t.position).cloned());
    let deliveries = channels::delivery_rows(
        &state
            .service
            .deliveries(crate::domain::Subject::Window(id))
            .await?,
        &all_channels,
        &format!("/admin/maintenances/{id}"),
    );
    let previews = channels::previews(state, &m, updates.first(), &all_channels);
    page(
        status,
        &RunPage {
            site: state.site.clone(),
            me: me(signed_in),
            public: m.is_public(),
            current,
            actions,
            posted_to,
            complete_blocked,
            step_actions,
            error: extra.error,
            notice: extra.notice,
            note: extra.note,
            update_body: extra.update_body,
            schedule_open: extra.schedule.is_some(),
            schedule_errors: extra.schedule_errors,
            schedule: extra.schedule.unwrap_or_else(|| schedule_fields(&m)),
            can_reschedule: m.state.is_open(),
            unsent_count: deliveries.iter().filter(|d| d.state != "sent").count(),
            deliveries,
            previews,
            automation: automation_lines(&m)
                .iter()
                .map(|l| crate::web::view::text_with_times(l))
                .collect(),
            w,
        },
    )
}

pub async fn run(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<i64>,
) -> Result<Response, AppError> {
    run_page(&state, &signed_in, id, StatusCode::OK, RunState::default()).await
}

#[derive(Debug, Deserialize)]
pub struct ActionForm {
    action: String,
    #[serde(default)]
    note: String,
    /// `on`: change the page but post nothing on the channels.
    #[serde(default)]
    quiet: String,
}

/// After a change: back to the run view (so a reload does not post again); a refusal shows
/// the run view with the reason and what was typed.
pub(crate) async fn after(
    state: &AppState,
    signed_in: &SignedIn,
    id: i64,
    result: Result<(), ServiceError>,
    keep: RunState,
    done_code: &str,
) -> Result<Response, AppError> {
    match result {
        Ok(()) => Ok(done(&format!("/admin/maintenances/{id}"), done_code)),
        Err(ServiceError::Domain(e)) => {
            let (status, error) = refusal(&e);
            let error = Some(error);
            run_page(state, signed_in, id, status, RunState { error, ..keep }).await
        }
        Err(e) => Err(e.into()),
    }
}

fn note(s: &str) -> Option<&str> {
    Some(s).filter(|n| !n.trim().is_empty())
}

pub async fn window_action(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    CsrfForm { signed_in, form }: CsrfForm<ActionForm>,
) -> Result<Response, AppError> {
    let action = WindowAction::parse(&form.action)
        .ok_or_else(|| AppError::BadRequest(format!("unknown action {:?}", form.action)))?;
    let result = state
        .service
        .acting(signed_in.actor())
        .quietly(form.quiet == "on")
        .window_action(id, action, note(&form.note))
        .await
        .map(drop);
    let keep = RunState {
        note: form.note.clone(),
        ..RunState::default()
    };
    let code = match action {
        WindowAction::Announce => "announced",
        WindowAction::Start => "started",
        WindowAction::Complete => "completed",
        WindowAction::Cancel => "cancelled",
    };
    after(&state, &signed_in, id, result, keep, code).await
}

pub async fn step_action(
    State(state): State<AppState>,
    Path((id, position)): Path<(i64, i64)>,
    CsrfForm { signed_in, form }: CsrfForm<ActionForm>,
) -> Result<Response, AppError> {
    let action = StepAction::parse(&form.action)
        .ok_or_else(|| AppError::BadRequest(format!("unknown action {:?}", form.action)))?;
    let result = state
        .service
        .acting(signed_in.actor())
        .quietly(form.quiet == "on")
        .step_action(id, position, action, note(&form.note))
        .await
        .map(drop);
    let keep = RunState {
        note: form.note.clone(),
        ..RunState::default()
    };
    let code = match action {
        StepAction::Start => "step_started",
        StepAction::Done => "step_done",
        StepAction::Fail => "step_failed",
        StepAction::Skip => "step_skipped",
    };
    after(&state, &signed_in, id, result, keep, code).await
}

#[derive(Debug, Deserialize)]
pub struct RescheduleForm {
    #[serde(flatten)]
    schedule: ScheduleFields,
    #[serde(default)]
    quiet: String,
}

pub async fn reschedule(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    CsrfForm { signed_in, form }: CsrfForm<RescheduleForm>,
) -> Result<Response, AppError> {
    let m = state.service.maintenance(id).await?;
    let mut errors = Vec::new();
    let schedule = parse_schedule(&form.schedule, &mut errors, (m.starts_at, m.ends_at));
    let result = match schedule {
        Some(schedule) if errors.is_empty() => state
            .service
            .acting(signed_in.actor())
            .quietly(form.quiet == "on")
            .reschedule(id, schedule)
            .await
            .map(drop),
        _ => {
            if errors.is_empty() {
                errors.push(ValidationError::new(
                    "starts_at",
                    "give the start, or choose \"No date yet\"",
                ));
            }
            Ok(())
        }
    };
    // A value the rules refuse (an end in the past) goes next to its field too.
    let result = match result {
        Err(ServiceError::Domain(DomainError::Invalid(e))) => {
            errors.push(e);
            Ok(())
        }
        other => other,
    };
    if !errors.is_empty() {
        // Each refused field is named next to it, and the form stays open as typed.
        let keep = RunState {
            error: Some("Not saved: please correct the schedule below.".to_owned()),
            schedule: Some(form.schedule),
            schedule_errors: errors,
            ..RunState::default()
        };
        return run_page(
            &state,
            &signed_in,
            id,
            StatusCode::UNPROCESSABLE_ENTITY,
            keep,
        )
        .await;
    }
    let keep = RunState {
        schedule: Some(form.schedule),
        ..RunState::default()
    };
    after(&state, &signed_in, id, result, keep, "scheduled").await
}

#[derive(Debug, Deserialize)]
pub struct UpdateForm {
    #[serde(default)]
    body: String,
    #[serde(default)]
    quiet: String,
}

pub async fn post_update(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    CsrfForm { signed_in, form }: CsrfForm<UpdateForm>,
) -> Result<Response, AppError> {
    let result = state
        .service
        .acting(signed_in.actor())
        .quietly(form.quiet == "on")
        .post_update(id, &form.body)
        .await
        .map(drop);
    let keep = RunState {
        update_body: form.body.clone(),
        ..RunState::default()
    };
    after(&state, &signed_in, id, result, keep, "posted").await
}

#[derive(Debug, Deserialize)]
pub struct CorrectForm {
    /// `edit` (with `text`) or `withdraw`.
    op: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    quiet: String,
}

/// Edit or withdraw a posted update (or the note on a step) from the run view's timeline.
pub async fn correct_update(
    State(state): State<AppState>,
    Path((id, update)): Path<(i64, i64)>,
    CsrfForm { signed_in, form }: CsrfForm<CorrectForm>,
) -> Result<Response, AppError> {
    let text = match form.op.as_str() {
        "edit" => Some(form.text.as_str()),
        "withdraw" => None,
        other => return Err(AppError::BadRequest(format!("unknown change {other:?}"))),
    };
    let result = state
        .service
        .acting(signed_in.actor())
        .quietly(form.quiet == "on")
        .correct_update(id, update, text)
        .await;
    let code = if text.is_some() {
        "corrected"
    } else {
        "withdrawn"
    };
    after(&state, &signed_in, id, result, RunState::default(), code).await
}
