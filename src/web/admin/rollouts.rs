//! Admin pages for rollouts: create one (targets one per line), watch it live, set a target's
//! state by hand or force it, retry a failed one, pause, resume, abort, roll back, edit, post
//! an update, and Retry/Skip its deliveries. Every action goes through the same service calls
//! as the API, and is audited with who did it.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use jiff::SignedDuration;
use serde::Deserialize;

use super::channels::{DeliveryForm, DeliveryRow, decide_delivery, delivery_rows};
use super::{Me, field_error, me, page};
use crate::domain::{
    DEFAULT_PROGRESS_DEADLINE, DEFAULT_STALE_AFTER, DomainError, NewRollout, Report, RolloutAction,
    RolloutEdit, Subject, TargetState, ValidationError,
};
use crate::service::ServiceError;
use crate::web::AppState;
use crate::web::auth::{CsrfForm, SignedIn};
use crate::web::error::{AppError, Path};
use crate::web::rollouts::{RolloutView, rollout_view};
use crate::web::view::{Site, TimeView, time};

/// Minutes as typed into a form, as a duration; `field` names it in the error.
fn minutes(field: &'static str, value: &str) -> Result<SignedDuration, ValidationError> {
    let v = value.trim();
    let m: f64 = v
        .parse()
        .ok()
        .filter(|m: &f64| m.is_finite() && *m > 0.0)
        .ok_or_else(|| ValidationError::new(field, "give a number of minutes, e.g. 10"))?;
    Ok(SignedDuration::from_secs((m * 60.0).round() as i64))
}

fn minutes_text(d: SignedDuration) -> String {
    let s = d.as_secs();
    if s % 60 == 0 {
        (s / 60).to_string()
    } else {
        format!("{:.1}", s as f64 / 60.0)
    }
}

// ----- creating a rollout --------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
pub struct NewRolloutForm {
    #[serde(default)]
    title: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    from_version: String,
    #[serde(default)]
    to_version: String,
    #[serde(default)]
    targets: String,
    #[serde(default)]
    maintenance_id: String,
    #[serde(default)]
    progress_deadline: String,
    #[serde(default)]
    stale_after: String,
    #[serde(default)]
    private_names: Option<String>,
}

#[derive(Template)]
#[template(path = "admin/rollout_new.html")]
struct NewRolloutPage {
    site: Site,
    me: Me,
    form: NewRolloutForm,
    errors: Vec<ValidationError>,
    windows: Vec<(String, String, bool)>,
}

impl NewRolloutPage {
    fn error(&self, field: &str) -> Option<&str> {
        field_error(&self.errors, field)
    }
}

/// Windows to link a rollout to: the open ones, and the one it is linked to whatever its state
/// (else saving any edit would unlink a finished window). (id, title, chosen).
async fn window_choices(
    state: &AppState,
    chosen: &str,
    linked: Option<&crate::domain::Maintenance>,
) -> Result<Vec<(String, String, bool)>, AppError> {
    let mut windows = state.service.store().open_maintenances().await?;
    if let Some(m) = linked
        && !windows.iter().any(|w| w.id == m.id)
    {
        windows.insert(0, m.clone());
    }
    Ok(windows
        .into_iter()
        .map(|m| {
            let id = m.id.to_string();
            let on = id == chosen.trim();
            (id, m.title, on)
        })
        .collect())
}

async fn new_page(
    state: &AppState,
    signed_in: &SignedIn,
    form: NewRolloutForm,
    errors: Vec<ValidationError>,
) -> Result<Response, AppError> {
    let windows = window_choices(state, &form.maintenance_id, None).await?;
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    page(
        status,
        &NewRolloutPage {
            site: state.site.clone(),
            me: me(signed_in),
            form,
            errors,
            windows,
        },
    )
}

/// `GET /admin/rollouts/new`.
pub async fn new_rollout(
    State(state): State<AppState>,
    signed_in: SignedIn,
) -> Result<Response, AppError> {
    let form = NewRolloutForm {
        progress_deadline: minutes_text(DEFAULT_PROGRESS_DEADLINE),
        stale_after: minutes_text(DEFAULT_STALE_AFTER),
        ..NewRolloutForm::default()
    };
    new_page(&state, &signed_in, form, Vec::new()).await
}

fn parse_new(form: &NewRolloutForm) -> Result<NewRollout, Vec<ValidationError>> {
    let mut errors = Vec::new();
    let mut duration = |field, value: &str, default| {
        if value.trim().is_empty() {
            return default;
        }
        minutes(field, value).unwrap_or_else(|e| {
            errors.push(e);
            default
        })
    };
    let progress_deadline = duration(
        "progress_deadline_seconds",
        &form.progress_deadline,
        DEFAULT_PROGRESS_DEADLINE,
    );
    let stale_after = duration(
        "stale_after_seconds",
        &form.stale_after,
        DEFAULT_STALE_AFTER,
    );
    let maintenance_id = match form.maintenance_id.trim() {
        "" => None,
        id => match id.parse::<i64>() {
            Ok(id) => Some(id),
            Err(_) => {
                errors.push(ValidationError::new("maintenance_id", "choose a window"));
                None
            }
        },
    };
    let new = NewRollout {
        title: form.title.clone(),
        description: form.description.clone(),
        from_version: Some(form.from_version.clone()),
        to_version: form.to_version.clone(),
        targets: form
            .targets
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
        maintenance_id,
        progress_deadline,
        stale_after,
        public_names: form.private_names.is_none(),
        rollback_of: None,
    };
    match new.clone().validate() {
        Ok(_) if errors.is_empty() => Ok(new),
        Ok(_) => Err(errors),
        Err(e) => {
            errors.push(e);
            Err(errors)
        }
    }
}

/// `POST /admin/rollouts`.
pub async fn create_rollout(
    State(state): State<AppState>,
    CsrfForm { signed_in, form }: CsrfForm<NewRolloutForm>,
) -> Result<Response, AppError> {
    let new = match parse_new(&form) {
        Ok(new) => new,
        Err(errors) => return new_page(&state, &signed_in, form, errors).await,
    };
    match state
        .service
        .acting(signed_in.actor())
        .create_rollout(new)
        .await
    {
        Ok(r) => Ok(super::done(
            &format!("/admin/rollouts/{}", r.id),
            "rollout_created",
        )),
        Err(ServiceError::Domain(DomainError::Invalid(e))) => {
            new_page(&state, &signed_in, form, vec![e]).await
        }
        Err(e) => Err(e.into()),
    }
}

// ----- watching and running a rollout --------------------------------------------------------

/// A target row's buttons: (state, label, forced).
pub struct TargetActions {
    pub position: i64,
    pub moves: Vec<(&'static str, &'static str, bool)>,
    /// Some move needs force.
    pub has_forced: bool,
    pub retry: bool,
}

pub struct AdminUpdate {
    pub label: &'static str,
    pub kind: &'static str,
    pub body: String,
    pub note: Option<String>,
    pub target: Option<String>,
    pub actor: String,
    pub at: TimeView,
}

#[derive(Debug, Default)]
struct RunState {
    error: Option<String>,
    notice: Option<String>,
    note: String,
    update_body: String,
    edit_errors: Vec<ValidationError>,
}

#[derive(Template)]
#[template(path = "admin/rollout.html")]
struct RolloutRunPage {
    site: Site,
    me: Me,
    r: RolloutView,
    actions: Vec<(&'static str, &'static str, bool)>,
    target_actions: Vec<TargetActions>,
    updates: Vec<AdminUpdate>,
    error: Option<String>,
    notice: Option<String>,
    note: String,
    update_body: String,
    edit: EditFields,
    edit_errors: Vec<ValidationError>,
    windows: Vec<(String, String, bool)>,
    deliveries: Vec<DeliveryRow>,
    unsent_count: usize,
}

impl RolloutRunPage {
    fn edit_error(&self, field: &str) -> Option<&str> {
        field_error(&self.edit_errors, field)
    }

    fn actions_for(&self, position: &i64) -> Option<&TargetActions> {
        self.target_actions.iter().find(|a| a.position == *position)
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct EditFields {
    #[serde(default)]
    title: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    maintenance_id: String,
    #[serde(default)]
    progress_deadline: String,
    #[serde(default)]
    stale_after: String,
    #[serde(default)]
    private_names: Option<String>,
}

async fn run_page(
    state: &AppState,
    signed_in: &SignedIn,
    id: i64,
    status: StatusCode,
    extra: RunState,
    edit: Option<EditFields>,
) -> Result<Response, AppError> {
    let service = &state.service;
    let r = service.rollout(id).await?;
    let updates = service.rollout_updates(id, None).await?;
    let window = match r.maintenance_id {
        Some(w) => service.store().get_maintenance(w).await?,
        None => None,
    };
    let mut view = rollout_view(
        &r,
        &updates,
        window.as_ref().map(|m| (m.id, m.title.as_str())),
        service.now(),
    );
    // Maintainers see the real names.
    for t in &mut view.targets {
        t.shown = t.name.clone();
    }
    let actions = r
        .allowed_actions()
        .into_iter()
        .map(|a| match a {
            RolloutAction::Pause => ("pause", "Pause", false),
            RolloutAction::Resume => ("resume", "Resume", false),
            RolloutAction::Abort => ("abort", "Abort", true),
            RolloutAction::Rollback => ("rollback", "Roll back", true),
        })
        .collect();
    // What each target may be set to comes from the rules, tried on a copy.
    let target_actions = r
        .targets
        .iter()
        .map(|t| {
            let moves: Vec<_> = r
                .allowed_reports(&t.name)
                .into_iter()
                .map(|(s, forced)| (s.as_str(), s.label(), forced))
                .collect();
            TargetActions {
                position: t.position,
                has_forced: moves.iter().any(|m| m.2),
                moves,
                retry: r.clone().retry(&t.name, None, r.updated_at).is_ok(),
            }
        })
        .collect();
    let channels = service.channels().await?;
    let deliveries = delivery_rows(
        &service.deliveries(Subject::Rollout(id)).await?,
        &channels,
        &format!("/admin/rollouts/{id}"),
    );
    let edit = edit.unwrap_or_else(|| EditFields {
        title: r.title.clone(),
        description: r.description.clone(),
        maintenance_id: r.maintenance_id.map(|m| m.to_string()).unwrap_or_default(),
        progress_deadline: minutes_text(r.progress_deadline),
        stale_after: minutes_text(r.stale_after),
        private_names: (!r.public_names).then(|| "on".to_owned()),
    });
    page(
        status,
        &RolloutRunPage {
            site: state.site.clone(),
            me: me(signed_in),
            windows: window_choices(state, &edit.maintenance_id, window.as_ref()).await?,
            r: view,
            actions,
            target_actions,
            updates: updates
                .iter()
                .map(|u| AdminUpdate {
                    label: u.kind.label(),
                    kind: u.kind.as_str(),
                    body: u.body.clone(),
                    note: u.note.clone(),
                    target: u.target.clone(),
                    actor: u.actor.clone(),
                    at: time(u.created_at),
                })
                .collect(),
            error: extra.error,
            notice: extra.notice,
            note: extra.note,
            update_body: extra.update_body,
            edit,
            edit_errors: extra.edit_errors,
            unsent_count: deliveries.iter().filter(|d| d.state != "sent").count(),
            deliveries,
        },
    )
}

/// `GET /admin/rollouts/{id}`.
pub async fn run(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<i64>,
) -> Result<Response, AppError> {
    run_page(
        &state,
        &signed_in,
        id,
        StatusCode::OK,
        RunState::default(),
        None,
    )
    .await
}

/// After a change: back to the page; a refusal shows the page with the reason and the input.
async fn after(
    state: &AppState,
    signed_in: &SignedIn,
    id: i64,
    result: Result<(), ServiceError>,
    keep: RunState,
) -> Result<Response, AppError> {
    match result {
        Ok(()) => Ok(super::done(&format!("/admin/rollouts/{id}"), "done")),
        Err(ServiceError::Domain(e)) => {
            let (status, error) = super::refusal(&e);
            let error = Some(error);
            run_page(
                state,
                signed_in,
                id,
                status,
                RunState { error, ..keep },
                None,
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

fn note(s: &str) -> Option<&str> {
    Some(s).filter(|n| !n.trim().is_empty())
}

#[derive(Debug, Deserialize)]
pub struct ActionForm {
    action: String,
    #[serde(default)]
    note: String,
    /// `on`: change the rollout's page, post nothing on the channels.
    #[serde(default)]
    quiet: String,
}

/// `POST /admin/rollouts/{id}/action`: pause, resume, abort, roll back.
pub async fn action(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    CsrfForm { signed_in, form }: CsrfForm<ActionForm>,
) -> Result<Response, AppError> {
    let action = RolloutAction::parse(&form.action)
        .ok_or_else(|| AppError::BadRequest(format!("unknown action {:?}", form.action)))?;
    let result = state
        .service
        .acting(signed_in.actor())
        .quietly(form.quiet == "on")
        .rollout_action(id, action, note(&form.note))
        .await;
    if let Ok((_, Some(reverse))) = &result {
        return Ok(Redirect::to(&format!("/admin/rollouts/{reverse}")).into_response());
    }
    let keep = RunState {
        note: form.note.clone(),
        ..RunState::default()
    };
    after(&state, &signed_in, id, result.map(drop), keep).await
}

#[derive(Debug, Deserialize)]
pub struct TargetForm {
    /// A state to set, or `retry`.
    action: String,
    #[serde(default)]
    forced: Option<String>,
    #[serde(default)]
    note: String,
}

/// `POST /admin/rollouts/{id}/targets/{position}`: set a state by hand (or force it), retry.
pub async fn target(
    State(state): State<AppState>,
    Path((id, position)): Path<(i64, i64)>,
    CsrfForm { signed_in, form }: CsrfForm<TargetForm>,
) -> Result<Response, AppError> {
    let r = state.service.rollout(id).await?;
    let name = r
        .targets
        .iter()
        .find(|t| t.position == position)
        .map(|t| t.name.clone())
        .ok_or(AppError::NotFound)?;
    let service = state.service.acting(signed_in.actor());
    let result = if form.action == "retry" {
        service.retry_target(id, &name, note(&form.note)).await
    } else {
        let state_to = TargetState::parse(&form.action)
            .ok_or_else(|| AppError::BadRequest(format!("unknown state {:?}", form.action)))?;
        let report = Report {
            forced: form.forced.is_some(),
            note: note(&form.note).map(str::to_owned),
            ..Report::state(state_to)
        };
        service.set_target(id, &name, &report).await
    };
    let keep = RunState {
        note: form.note.clone(),
        ..RunState::default()
    };
    after(&state, &signed_in, id, result.map(drop), keep).await
}

/// `POST /admin/rollouts/{id}/edit`.
pub async fn edit(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    CsrfForm { signed_in, form }: CsrfForm<EditFields>,
) -> Result<Response, AppError> {
    let mut errors = Vec::new();
    let mut duration = |field, value: &str| minutes(field, value).map_err(|e| errors.push(e)).ok();
    let progress_deadline = duration("progress_deadline_seconds", &form.progress_deadline);
    let stale_after = duration("stale_after_seconds", &form.stale_after);
    let maintenance_id = match form.maintenance_id.trim() {
        "" => Some(None),
        v => match v.parse::<i64>() {
            Ok(v) => Some(Some(v)),
            Err(_) => {
                errors.push(ValidationError::new("maintenance_id", "choose a window"));
                None
            }
        },
    };
    let result = if errors.is_empty() {
        let change = RolloutEdit {
            title: Some(form.title.clone()),
            description: Some(form.description.clone()),
            maintenance_id,
            progress_deadline,
            stale_after,
            public_names: Some(form.private_names.is_none()),
        };
        match state
            .service
            .acting(signed_in.actor())
            .edit_rollout(id, &change)
            .await
        {
            Ok(_) => return Ok(super::done(&format!("/admin/rollouts/{id}"), "saved")),
            Err(ServiceError::Domain(DomainError::Invalid(e))) => vec![e],
            Err(e) => return Err(e.into()),
        }
    } else {
        errors
    };
    let keep = RunState {
        edit_errors: result,
        ..RunState::default()
    };
    run_page(
        &state,
        &signed_in,
        id,
        StatusCode::UNPROCESSABLE_ENTITY,
        keep,
        Some(form),
    )
    .await
}

#[derive(Debug, Deserialize)]
pub struct UpdateForm {
    #[serde(default)]
    body: String,
    #[serde(default)]
    quiet: String,
}

/// `POST /admin/rollouts/{id}/updates`.
pub async fn post_update(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    CsrfForm { signed_in, form }: CsrfForm<UpdateForm>,
) -> Result<Response, AppError> {
    let result = state
        .service
        .acting(signed_in.actor())
        .quietly(form.quiet == "on")
        .post_rollout_note(id, &form.body)
        .await
        .map(drop);
    let keep = RunState {
        update_body: form.body.clone(),
        ..RunState::default()
    };
    after(&state, &signed_in, id, result, keep).await
}

/// `POST /admin/rollouts/{id}/deliveries/{delivery}`: Retry or Skip.
pub async fn delivery(
    State(state): State<AppState>,
    Path((id, delivery)): Path<(i64, i64)>,
    CsrfForm { signed_in, form }: CsrfForm<DeliveryForm>,
) -> Result<Response, AppError> {
    let result = decide_delivery(&state, &signed_in, Subject::Rollout(id), delivery, &form).await?;
    after(&state, &signed_in, id, result, RunState::default()).await
}
