//! The admin pages: sign in, the dashboard, planning a window, running it step by step, API
//! tokens and the audit log. Forms post back to the same service calls the API uses; a refused
//! form is shown again with the reason next to the field and what was typed kept.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use jiff::Timestamp;
use serde::Deserialize;

use super::AppState;
use super::auth::{self, LoginThrottle, Scope, SignedIn};
use super::error::{AppError, Form, Path, Query};
use super::public::{Site, TimeView, WindowView, time, window_view};
use crate::domain::{
    DomainError, Impact, NewMaintenance, NewStep, Role, Schedule, StepAction, StepState,
    ValidationError, WindowAction, WindowState,
};
use crate::service::ServiceError;

pub mod channels;
pub mod rollouts;

pub use channels::{
    channels, create_channel, delete_channel, delivery_action, edit_channel, test_channel,
};

/// What every admin page's frame needs.
#[derive(Debug, Clone)]
pub struct Me {
    pub name: String,
    pub csrf: String,
    pub is_admin: bool,
}

fn me(s: &SignedIn) -> Me {
    Me {
        name: s.user.name.clone(),
        csrf: s.csrf.clone(),
        is_admin: s.user.role.allows(Role::Admin),
    }
}

fn page(status: StatusCode, t: &impl Template) -> Result<Response, AppError> {
    let mut r = (status, Html(t.render()?)).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    Ok(r)
}

// ----- sign in -------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "admin/login.html")]
struct LoginPage {
    site: Site,
    error: Option<String>,
    name: String,
    next: String,
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// Open a session for `user` and send the browser to `to` with its cookie.
async fn signed_in_at(
    state: &AppState,
    user: crate::domain::User,
    to: &str,
) -> Result<Response, AppError> {
    let session = state.service.open_session(user).await?;
    let secure = state.settings.public_url.starts_with("https://");
    let mut r = Redirect::to(to).into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        auth::session_cookie(session.cookie.expose(), secure, None),
    );
    Ok(r)
}

/// Only paths inside the admin area: never an open redirect.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/admin") && !n.starts_with("//") && !n.contains('\\') => {
            n.to_owned()
        }
        _ => "/admin".to_owned(),
    }
}

pub async fn login_page(
    State(state): State<AppState>,
    Query(q): Query<LoginQuery>,
) -> Result<Response, AppError> {
    if state.setup_code.is_some() && state.service.store().count_users().await? == 0 {
        return Ok(Redirect::to("/admin/setup").into_response());
    }
    page(
        StatusCode::OK,
        &LoginPage {
            site: state.site.clone(),
            error: None,
            name: String::new(),
            next: safe_next(q.next.as_deref()),
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    name: String,
    password: String,
    next: Option<String>,
}

pub async fn login(State(state): State<AppState>, request: Request) -> Result<Response, AppError> {
    auth::same_origin(request.headers(), &state.settings.public_url)?;
    let ip = auth::client_ip(
        request.extensions(),
        request.headers(),
        &state.settings.trusted_proxies,
    );
    let Form(form) = Form::<LoginForm>::from_request(request, &state).await?;
    let next = safe_next(form.next.as_deref());
    let again = |status, error: String| {
        page(
            status,
            &LoginPage {
                site: state.site.clone(),
                error: Some(error),
                name: form.name.clone(),
                next: next.clone(),
            },
        )
    };
    let throttle: &LoginThrottle = &state.logins;
    if let Err(wait) = throttle.begin(Scope::Login, &form.name, ip) {
        return again(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "Too many failed attempts. Try again {}.",
                auth::wait_text(wait)
            ),
        );
    }
    let checked = match state.service.verify_user(&form.name, &form.password).await {
        Err(ServiceError::Busy(why)) => {
            throttle.cancel(Scope::Login, &form.name, ip);
            return again(StatusCode::TOO_MANY_REQUESTS, format!("{why}."));
        }
        other => other?,
    };
    match checked {
        None => again(
            StatusCode::UNAUTHORIZED,
            "Wrong name or password.".to_owned(),
        ),
        Some(user) => {
            throttle.succeeded(Scope::Login, &form.name, ip);
            signed_in_at(&state, user, &next).await
        }
    }
}

use axum::extract::FromRequest;

#[derive(Template)]
#[template(path = "admin/setup.html")]
struct SetupPage {
    site: Site,
    error: Option<String>,
    name: String,
}

/// `GET /admin/setup`: only while nobody can sign in.
pub async fn setup_page(State(state): State<AppState>) -> Result<Response, AppError> {
    if state.service.store().count_users().await? > 0 || state.setup_code.is_none() {
        return Ok(Redirect::to("/admin/login").into_response());
    }
    page(
        StatusCode::OK,
        &SetupPage {
            site: state.site.clone(),
            error: None,
            name: String::new(),
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct SetupForm {
    #[serde(default)]
    code: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    again: String,
}

/// `POST /admin/setup`: the setup code from the log makes the first admin, once.
pub async fn setup(State(state): State<AppState>, request: Request) -> Result<Response, AppError> {
    auth::same_origin(request.headers(), &state.settings.public_url)?;
    let ip = auth::client_ip(
        request.extensions(),
        request.headers(),
        &state.settings.trusted_proxies,
    );
    let Form(form) = Form::<SetupForm>::from_request(request, &state).await?;
    let Some(code) = &state.setup_code else {
        return Ok(Redirect::to("/admin/login").into_response());
    };
    if state.service.store().count_users().await? > 0 {
        return Ok(Redirect::to("/admin/login").into_response());
    }
    let again = |status, error: String| {
        page(
            status,
            &SetupPage {
                site: state.site.clone(),
                error: Some(error),
                name: form.name.clone(),
            },
        )
    };
    if let Err(wait) = state.logins.begin(Scope::Setup, "", ip) {
        return again(
            StatusCode::TOO_MANY_REQUESTS,
            format!("Too many wrong codes. Try again {}.", auth::wait_text(wait)),
        );
    }
    if !auth::constant_time_eq(form.code.trim().as_bytes(), code.expose().as_bytes()) {
        return again(
            StatusCode::UNAUTHORIZED,
            "That is not the setup code in Herald's log.".to_owned(),
        );
    }
    if form.password != form.again {
        return again(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The two passwords differ.".to_owned(),
        );
    }
    let user = match state
        .service
        .add_user(&form.name, &form.password, Role::Admin, "setup")
        .await
    {
        Ok(user) => user,
        Err(ServiceError::Domain(DomainError::Invalid(e))) => {
            return again(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("The {} {}.", e.field, e.message),
            );
        }
        Err(e) => return Err(e.into()),
    };
    signed_in_at(&state, user, "/admin").await
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

pub async fn logout(
    State(state): State<AppState>,
    signed_in: SignedIn,
    headers: axum::http::HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, AppError> {
    auth::same_origin(&headers, &state.settings.public_url)?;
    signed_in.check_csrf(&form.csrf)?;
    if let Some(cookie) = auth::session_from(&headers) {
        state.service.close_session(cookie).await?;
    }
    let mut r = Redirect::to("/admin/login").into_response();
    let secure = state.settings.public_url.starts_with("https://");
    r.headers_mut().insert(
        header::SET_COOKIE,
        auth::session_cookie("", secure, Some(0)),
    );
    Ok(r)
}

// ----- dashboard -----------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "admin/dashboard.html")]
struct Dashboard {
    site: Site,
    me: Me,
    windows: Vec<WindowView>,
    rollouts: Vec<crate::web::rollouts::RolloutView>,
}

pub async fn dashboard(
    State(state): State<AppState>,
    signed_in: SignedIn,
) -> Result<Response, AppError> {
    let now = state.service.now();
    let windows = state
        .service
        .store()
        .open_maintenances()
        .await?
        .iter()
        .map(|m| window_view(m, &[], now))
        .collect();
    let rollouts = state
        .service
        .active_rollouts()
        .await?
        .iter()
        .map(|r| crate::web::rollouts::rollout_view(r, &[], None, now))
        .collect();
    page(
        StatusCode::OK,
        &Dashboard {
            site: state.site.clone(),
            me: me(&signed_in),
            windows,
            rollouts,
        },
    )
}

// ----- planning a window ---------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
pub struct NewForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    impact: String,
    #[serde(flatten)]
    schedule: ScheduleFields,
    #[serde(default)]
    steps: String,
    /// `component_<slug>=on` for each ticked box.
    #[serde(flatten)]
    rest: HashMap<String, String>,
}

#[derive(Template)]
#[template(path = "admin/new.html")]
struct NewPage {
    site: Site,
    me: Me,
    form: NewForm,
    errors: Vec<ValidationError>,
    impacts: Vec<(&'static str, &'static str)>,
    components: Vec<(String, String, bool)>,
}

impl NewPage {
    fn error(&self, field: &str) -> Option<&str> {
        field_error(&self.errors, field)
    }
}

/// The message of the error about `field`, for showing it next to that field.
fn field_error<'a>(errors: &'a [ValidationError], field: &str) -> Option<&'a str> {
    errors
        .iter()
        .find(|e| e.field == field)
        .map(|e| e.message.as_str())
}

/// Component slugs ticked in a form (`component_<slug>=on`).
fn ticked_components(fields: &HashMap<String, String>) -> Vec<String> {
    fields
        .keys()
        .filter_map(|k| k.strip_prefix("component_").map(str::to_owned))
        .collect()
}

/// Every component as (slug, name, ticked in `fields`), for the checkboxes of a form.
async fn component_choices(
    state: &AppState,
    fields: &HashMap<String, String>,
) -> Result<Vec<(String, String, bool)>, AppError> {
    Ok(state
        .service
        .components()
        .await?
        .into_iter()
        .map(|c| {
            let ticked = fields.contains_key(&format!("component_{}", c.slug));
            (c.slug, c.name, ticked)
        })
        .collect())
}

async fn new_page(
    state: &AppState,
    signed_in: &SignedIn,
    form: NewForm,
    errors: Vec<ValidationError>,
) -> Result<Response, AppError> {
    let components = component_choices(state, &form.rest).await?;
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    page(
        status,
        &NewPage {
            site: state.site.clone(),
            me: me(signed_in),
            impacts: Impact::ALL
                .iter()
                .map(|i| (i.as_str(), i.label()))
                .collect(),
            components,
            form,
            errors,
        },
    )
}

pub async fn new_window(
    State(state): State<AppState>,
    signed_in: SignedIn,
) -> Result<Response, AppError> {
    signed_in.require(Role::Maintainer)?;
    let form = NewForm {
        impact: "minor".into(),
        schedule: ScheduleFields {
            when: "tentative".into(),
            time_zone: "UTC".into(),
            ..ScheduleFields::default()
        },
        ..NewForm::default()
    };
    new_page(&state, &signed_in, form, Vec::new()).await
}

/// A `datetime-local` value in a named zone, as a timestamp.
fn local_time(field: &'static str, value: &str, zone: &str) -> Result<Timestamp, ValidationError> {
    let civil: jiff::civil::DateTime = value
        .trim()
        .parse()
        .map_err(|_| ValidationError::new(field, "give a date and time, e.g. 2026-11-24 14:00"))?;
    let tz = jiff::tz::TimeZone::get(zone.trim()).map_err(|_| {
        ValidationError::new("time_zone", format!("{zone:?} is not a known time zone"))
    })?;
    civil
        .to_zoned(tz)
        .map(|z| z.timestamp())
        .map_err(|e| ValidationError::new(field, format!("not a valid time there: {e}")))
}

/// The schedule fields of a form: "No date yet" with a hint, or a start and an optional end in
/// the chosen time zone.
#[derive(Debug, Default, Deserialize)]
pub struct ScheduleFields {
    #[serde(default)]
    when: String,
    #[serde(default)]
    schedule_hint: String,
    #[serde(default)]
    starts_at: String,
    #[serde(default)]
    ends_at: String,
    #[serde(default)]
    time_zone: String,
}

fn parse_schedule(f: &ScheduleFields, errors: &mut Vec<ValidationError>) -> Option<Schedule> {
    if f.when != "fixed" {
        return Schedule::from_parts(None, None, Some(&f.schedule_hint))
            .map_err(|e| errors.push(e))
            .ok();
    }
    let zone = if f.time_zone.trim().is_empty() {
        "UTC"
    } else {
        &f.time_zone
    };
    let start = if f.starts_at.trim().is_empty() {
        errors.push(ValidationError::new(
            "starts_at",
            "give the start, or choose \"No date yet\"",
        ));
        None
    } else {
        local_time("starts_at", &f.starts_at, zone)
            .map_err(|e| errors.push(e))
            .ok()
    };
    let end = if f.ends_at.trim().is_empty() {
        None
    } else {
        local_time("ends_at", &f.ends_at, zone)
            .map_err(|e| errors.push(e))
            .ok()
    };
    let start = start?;
    Schedule::from_parts(Some(start), end, None)
        .map_err(|e| errors.push(e))
        .ok()
}

fn parse_new(
    form: &NewForm,
    component_ids: Vec<i64>,
) -> Result<NewMaintenance, Vec<ValidationError>> {
    let mut errors = Vec::new();
    let impact = Impact::parse(&form.impact).unwrap_or_default();
    let schedule = parse_schedule(&form.schedule, &mut errors);
    let new = NewMaintenance {
        title: form.title.clone(),
        description: form.description.clone(),
        impact,
        schedule: schedule
            .clone()
            .unwrap_or(Schedule::Tentative { hint: None }),
        component_ids,
        steps: form
            .steps
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| NewStep {
                title: l.trim_start_matches(['-', '*', ' ']).to_owned(),
                description: None,
            })
            .collect(),
    };
    if let Err(e) = new.clone().validate() {
        errors.push(e);
    }
    if errors.is_empty() {
        Ok(new)
    } else {
        Err(errors)
    }
}

pub async fn create_window(
    State(state): State<AppState>,
    signed_in: SignedIn,
    headers: axum::http::HeaderMap,
    Form(form): Form<NewForm>,
) -> Result<Response, AppError> {
    signed_in.authorize_form(&headers, &form.csrf, Role::Maintainer)?;
    let slugs = ticked_components(&form.rest);
    let ids = match state.service.component_ids(&slugs).await {
        Ok(ids) => ids,
        Err(ServiceError::Domain(DomainError::Invalid(e))) => {
            return new_page(&state, &signed_in, form, vec![e]).await;
        }
        Err(e) => return Err(e.into()),
    };
    let new = match parse_new(&form, ids) {
        Ok(new) => new,
        Err(errors) => return new_page(&state, &signed_in, form, errors).await,
    };
    match state
        .service
        .acting(signed_in.actor())
        .create_maintenance(new)
        .await
    {
        Ok(m) => Ok(Redirect::to(&format!("/admin/maintenances/{}", m.id)).into_response()),
        Err(ServiceError::Domain(DomainError::Invalid(e))) => {
            new_page(&state, &signed_in, form, vec![e]).await
        }
        Err(e) => Err(e.into()),
    }
}

// ----- running a window ----------------------------------------------------------------------

#[derive(Template)]
#[template(path = "admin/run.html")]
struct RunPage {
    site: Site,
    me: Me,
    w: WindowView,
    public: bool,
    current: Option<super::public::StepView>,
    actions: Vec<(&'static str, &'static str, bool)>,
    step_actions: Vec<(&'static str, &'static str, &'static str)>,
    error: Option<String>,
    notice: Option<String>,
    note: String,
    update_body: String,
    schedule: ScheduleFields,
    can_reschedule: bool,
    /// The schedule form was just refused: show it open.
    schedule_open: bool,
    deliveries: Vec<channels::DeliveryRow>,
    /// Deliveries not yet sent (pending, failed, skipped): listed first, the rest folded.
    unsent_count: usize,
    previews: Vec<channels::Preview>,
}

#[derive(Debug, Default)]
pub(crate) struct RunState {
    error: Option<String>,
    notice: Option<String>,
    note: String,
    update_body: String,
    schedule: Option<ScheduleFields>,
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
    let actions = m
        .allowed_actions()
        .into_iter()
        .map(|a| match a {
            WindowAction::Announce => ("announce", "Announce", false),
            WindowAction::Start => ("start", "Start", true),
            WindowAction::Complete => ("complete", "Complete", true),
            WindowAction::Cancel => ("cancel", "Cancel", true),
        })
        .collect();
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
    let all_channels = state.service.channels().await?;
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
            step_actions,
            error: extra.error,
            notice: extra.notice,
            note: extra.note,
            update_body: extra.update_body,
            schedule_open: extra.schedule.is_some(),
            schedule: extra.schedule.unwrap_or_else(|| schedule_fields(&m)),
            can_reschedule: m.state.is_open(),
            unsent_count: deliveries.iter().filter(|d| d.state != "sent").count(),
            deliveries,
            previews,
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
    csrf: String,
    action: String,
    #[serde(default)]
    note: String,
}

/// After a change: back to the run view (so a reload does not post again); a refusal shows
/// the run view with the reason and what was typed.
pub(crate) async fn after(
    state: &AppState,
    signed_in: &SignedIn,
    id: i64,
    result: Result<(), ServiceError>,
    keep: RunState,
) -> Result<Response, AppError> {
    match result {
        Ok(()) => Ok(Redirect::to(&format!("/admin/maintenances/{id}")).into_response()),
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
    signed_in: SignedIn,
    Path(id): Path<i64>,
    headers: axum::http::HeaderMap,
    Form(form): Form<ActionForm>,
) -> Result<Response, AppError> {
    signed_in.authorize_form(&headers, &form.csrf, Role::Maintainer)?;
    let action = WindowAction::parse(&form.action)
        .ok_or_else(|| AppError::BadRequest(format!("unknown action {:?}", form.action)))?;
    let result = state
        .service
        .acting(signed_in.actor())
        .window_action(id, action, note(&form.note))
        .await
        .map(drop);
    let keep = RunState {
        note: form.note.clone(),
        ..RunState::default()
    };
    after(&state, &signed_in, id, result, keep).await
}

pub async fn step_action(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path((id, position)): Path<(i64, i64)>,
    headers: axum::http::HeaderMap,
    Form(form): Form<ActionForm>,
) -> Result<Response, AppError> {
    signed_in.authorize_form(&headers, &form.csrf, Role::Maintainer)?;
    let action = StepAction::parse(&form.action)
        .ok_or_else(|| AppError::BadRequest(format!("unknown action {:?}", form.action)))?;
    let result = state
        .service
        .acting(signed_in.actor())
        .step_action(id, position, action, note(&form.note))
        .await
        .map(drop);
    let keep = RunState {
        note: form.note.clone(),
        ..RunState::default()
    };
    after(&state, &signed_in, id, result, keep).await
}

#[derive(Debug, Deserialize)]
pub struct RescheduleForm {
    csrf: String,
    #[serde(flatten)]
    schedule: ScheduleFields,
}

pub async fn reschedule(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<i64>,
    headers: axum::http::HeaderMap,
    Form(form): Form<RescheduleForm>,
) -> Result<Response, AppError> {
    signed_in.authorize_form(&headers, &form.csrf, Role::Maintainer)?;
    let mut errors = Vec::new();
    let result = match parse_schedule(&form.schedule, &mut errors) {
        Some(schedule) if errors.is_empty() => state
            .service
            .acting(signed_in.actor())
            .reschedule(id, schedule)
            .await
            .map(drop),
        _ => Err(ServiceError::from(
            errors.into_iter().next().unwrap_or_else(|| {
                ValidationError::new("starts_at", "give the start, or choose \"No date yet\"")
            }),
        )),
    };
    let keep = RunState {
        schedule: Some(form.schedule),
        ..RunState::default()
    };
    after(&state, &signed_in, id, result, keep).await
}

#[derive(Debug, Deserialize)]
pub struct UpdateForm {
    csrf: String,
    #[serde(default)]
    body: String,
}

pub async fn post_update(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<i64>,
    headers: axum::http::HeaderMap,
    Form(form): Form<UpdateForm>,
) -> Result<Response, AppError> {
    signed_in.authorize_form(&headers, &form.csrf, Role::Maintainer)?;
    let result = state
        .service
        .acting(signed_in.actor())
        .post_update(id, &form.body)
        .await
        .map(drop);
    let keep = RunState {
        update_body: form.body.clone(),
        ..RunState::default()
    };
    after(&state, &signed_in, id, result, keep).await
}

// ----- tokens and audit log (admins) ---------------------------------------------------------

pub struct TokenRow {
    id: i64,
    name: String,
    role: &'static str,
    prefix: String,
    last_used: Option<TimeView>,
    revoked: bool,
}

#[derive(Template)]
#[template(path = "admin/tokens.html")]
struct TokensPage {
    site: Site,
    me: Me,
    tokens: Vec<TokenRow>,
    created: Option<String>,
    error: Option<String>,
    name: String,
}

async fn tokens_page(
    state: &AppState,
    signed_in: &SignedIn,
    status: StatusCode,
    created: Option<String>,
    error: Option<String>,
    name: String,
) -> Result<Response, AppError> {
    let tokens = state
        .service
        .tokens()
        .await?
        .into_iter()
        .map(|t| TokenRow {
            id: t.id,
            name: t.name,
            role: t.role.as_str(),
            prefix: t.prefix,
            last_used: t.last_used_at.map(time),
            revoked: t.revoked_at.is_some(),
        })
        .collect();
    page(
        status,
        &TokensPage {
            site: state.site.clone(),
            me: me(signed_in),
            tokens,
            created,
            error,
            name,
        },
    )
}

pub async fn tokens(
    State(state): State<AppState>,
    signed_in: SignedIn,
) -> Result<Response, AppError> {
    signed_in.require(Role::Admin)?;
    tokens_page(
        &state,
        &signed_in,
        StatusCode::OK,
        None,
        None,
        String::new(),
    )
    .await
}

#[derive(Debug, Deserialize)]
pub struct TokenForm {
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
}

pub async fn create_token(
    State(state): State<AppState>,
    signed_in: SignedIn,
    headers: axum::http::HeaderMap,
    Form(form): Form<TokenForm>,
) -> Result<Response, AppError> {
    signed_in.authorize_form(&headers, &form.csrf, Role::Admin)?;
    let role = Role::parse(&form.role).unwrap_or(Role::Maintainer);
    let actor = format!("user:{}", signed_in.user.name);
    match state.service.create_token(&form.name, role, &actor).await {
        Ok(new) => {
            let secret = new.secret.expose().to_owned();
            tokens_page(
                &state,
                &signed_in,
                StatusCode::CREATED,
                Some(secret),
                None,
                String::new(),
            )
            .await
        }
        Err(ServiceError::Domain(DomainError::Invalid(e))) => {
            let error = Some(format!("The {} {}.", e.field, e.message));
            tokens_page(
                &state,
                &signed_in,
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
                error,
                form.name,
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn revoke_token(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<i64>,
    headers: axum::http::HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, AppError> {
    signed_in.authorize_form(&headers, &form.csrf, Role::Admin)?;
    state
        .service
        .revoke_token(id, &format!("user:{}", signed_in.user.name))
        .await?;
    Ok(Redirect::to("/admin/tokens").into_response())
}

pub struct AuditRow {
    at: TimeView,
    actor: String,
    action: String,
    target: String,
}

#[derive(Template)]
#[template(path = "admin/audit.html")]
struct AuditPage {
    site: Site,
    me: Me,
    entries: Vec<AuditRow>,
    actor: String,
    window: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    /// Only entries by this actor (`user:alice`, `token:deploy`).
    #[serde(default)]
    actor: String,
    /// Only entries about this window (its id).
    #[serde(default)]
    window: String,
}

pub async fn audit(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Query(q): Query<AuditQuery>,
) -> Result<Response, AppError> {
    signed_in.require(Role::Admin)?;
    let actor = Some(q.actor.trim()).filter(|a| !a.is_empty());
    let window = match q.window.trim() {
        "" => None,
        w => Some(format!(
            "window {}",
            w.parse::<i64>()
                .map_err(|_| AppError::BadRequest("window is a window's number".to_owned()))?
        )),
    };
    let entries = state
        .service
        .audit_filtered(200, actor, window.as_deref())
        .await?
        .into_iter()
        .map(|e| AuditRow {
            at: time(e.created_at),
            actor: e.actor,
            action: e.action,
            target: e.target.unwrap_or_default(),
        })
        .collect();
    page(
        StatusCode::OK,
        &AuditPage {
            site: state.site.clone(),
            me: me(&signed_in),
            entries,
            actor: q.actor.trim().to_owned(),
            window: q.window.trim().to_owned(),
        },
    )
}

// ----- components and users (admins) ---------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
pub struct ComponentForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    slug: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    group: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    op: String,
}

pub struct ComponentRow {
    slug: String,
    name: String,
    group: String,
    description: String,
}

#[derive(Template)]
#[template(path = "admin/components.html")]
struct ComponentsPage {
    site: Site,
    me: Me,
    components: Vec<ComponentRow>,
    new: ComponentForm,
    errors: Vec<ValidationError>,
    error: Option<String>,
}

impl ComponentsPage {
    fn field_error(&self, field: &str) -> Option<&str> {
        field_error(&self.errors, field)
    }
}

async fn components_page(
    state: &AppState,
    signed_in: &SignedIn,
    status: StatusCode,
    new: ComponentForm,
    errors: Vec<ValidationError>,
) -> Result<Response, AppError> {
    let components = state
        .service
        .components()
        .await?
        .into_iter()
        .map(|c| ComponentRow {
            slug: c.slug,
            name: c.name,
            group: c.group_name.unwrap_or_default(),
            description: c.description.unwrap_or_default(),
        })
        .collect();
    let error = (!errors.is_empty()).then(|| "Please correct the fields marked below.".to_owned());
    page(
        status,
        &ComponentsPage {
            site: state.site.clone(),
            me: me(signed_in),
            components,
            new,
            errors,
            error,
        },
    )
}

pub async fn components(
    State(state): State<AppState>,
    signed_in: SignedIn,
) -> Result<Response, AppError> {
    signed_in.require(Role::Admin)?;
    components_page(
        &state,
        &signed_in,
        StatusCode::OK,
        ComponentForm::default(),
        Vec::new(),
    )
    .await
}

pub async fn create_component(
    State(state): State<AppState>,
    signed_in: SignedIn,
    headers: axum::http::HeaderMap,
    Form(form): Form<ComponentForm>,
) -> Result<Response, AppError> {
    signed_in.authorize_form(&headers, &form.csrf, Role::Admin)?;
    let new = crate::domain::NewComponent {
        slug: form.slug.clone(),
        name: form.name.clone(),
        description: Some(form.description.clone()),
        group_name: Some(form.group.clone()),
    };
    match state.service.create_component(new).await {
        Ok(c) => {
            state
                .service
                .store()
                .audit(
                    &format!("user:{}", signed_in.user.name),
                    "component.create",
                    Some(&c.slug),
                    state.service.now(),
                )
                .await?;
            Ok(Redirect::to("/admin/components").into_response())
        }
        Err(ServiceError::Domain(DomainError::Invalid(e))) => {
            components_page(
                &state,
                &signed_in,
                StatusCode::UNPROCESSABLE_ENTITY,
                form,
                vec![e],
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn edit_component(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(slug): Path<String>,
    headers: axum::http::HeaderMap,
    Form(form): Form<ComponentForm>,
) -> Result<Response, AppError> {
    signed_in.authorize_form(&headers, &form.csrf, Role::Admin)?;
    let actor = format!("user:{}", signed_in.user.name);
    let result = match form.op.as_str() {
        "up" => state.service.move_component(&slug, -1, &actor).await,
        "down" => state.service.move_component(&slug, 1, &actor).await,
        _ => state
            .service
            .edit_component(&slug, &form.name, &form.description, &form.group, &actor)
            .await
            .map(drop),
    };
    match result {
        Ok(()) => Ok(Redirect::to("/admin/components").into_response()),
        Err(ServiceError::Domain(DomainError::Invalid(e))) => {
            components_page(
                &state,
                &signed_in,
                StatusCode::UNPROCESSABLE_ENTITY,
                ComponentForm::default(),
                vec![e],
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Template)]
#[template(path = "admin/users.html")]
struct UsersPage {
    site: Site,
    me: Me,
    users: Vec<(String, &'static str, TimeView)>,
    /// The field a refusal concerns, and why.
    error: Option<(&'static str, String)>,
    name: String,
    /// A refused change to one user's row: (user, why).
    row_error: Option<(String, String)>,
    notice: Option<String>,
}

impl UsersPage {
    fn row_error_for(&self, user: &str) -> Option<&str> {
        self.row_error
            .as_ref()
            .filter(|(u, _)| u == user)
            .map(|(_, e)| e.as_str())
    }
}

async fn users_page(
    state: &AppState,
    signed_in: &SignedIn,
    status: StatusCode,
    error: Option<(&'static str, String)>,
    name: String,
) -> Result<Response, AppError> {
    users_page_with(state, signed_in, status, error, name, None, None).await
}

async fn users_page_with(
    state: &AppState,
    signed_in: &SignedIn,
    status: StatusCode,
    error: Option<(&'static str, String)>,
    name: String,
    row_error: Option<(String, String)>,
    notice: Option<String>,
) -> Result<Response, AppError> {
    let users = state
        .service
        .users()
        .await?
        .into_iter()
        .map(|u| (u.name, u.role.as_str(), time(u.created_at)))
        .collect();
    page(
        status,
        &UsersPage {
            site: state.site.clone(),
            me: me(signed_in),
            users,
            error,
            name,
            row_error,
            notice,
        },
    )
}

pub async fn users(
    State(state): State<AppState>,
    signed_in: SignedIn,
) -> Result<Response, AppError> {
    signed_in.require(Role::Admin)?;
    users_page(&state, &signed_in, StatusCode::OK, None, String::new()).await
}

#[derive(Debug, Deserialize)]
pub struct UserForm {
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    role: String,
}

pub async fn add_user(
    State(state): State<AppState>,
    signed_in: SignedIn,
    headers: axum::http::HeaderMap,
    Form(form): Form<UserForm>,
) -> Result<Response, AppError> {
    signed_in.authorize_form(&headers, &form.csrf, Role::Admin)?;
    let role = Role::parse(&form.role).unwrap_or(Role::Maintainer);
    let actor = format!("user:{}", signed_in.user.name);
    match state
        .service
        .add_user(&form.name, &form.password, role, &actor)
        .await
    {
        Ok(_) => Ok(Redirect::to("/admin/users").into_response()),
        Err(ServiceError::Domain(DomainError::Invalid(e))) => {
            let error = Some((e.field, format!("The {} {}.", e.field, e.message)));
            users_page(
                &state,
                &signed_in,
                StatusCode::UNPROCESSABLE_ENTITY,
                error,
                form.name,
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize)]
pub struct AccountForm {
    csrf: String,
    /// `remove`, `role` or `password`.
    action: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    password: String,
}

/// `POST /admin/users/{name}`: remove a user, change their role or set their password; each
/// ends their sessions. The last admin stays.
pub async fn account_action(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    Form(form): Form<AccountForm>,
) -> Result<Response, AppError> {
    signed_in.authorize_form(&headers, &form.csrf, Role::Admin)?;
    let actor = format!("user:{}", signed_in.user.name);
    let service = &state.service;
    let (result, done) = match form.action.as_str() {
        "remove" => (
            service.remove_user(&name, &actor).await,
            format!("Removed {name}."),
        ),
        "role" => {
            let role = Role::parse(&form.role)
                .ok_or_else(|| AppError::BadRequest(format!("unknown role {:?}", form.role)))?;
            (
                service.set_role(&name, role, &actor).await,
                format!("{name} is now {}; their sessions ended.", role.as_str()),
            )
        }
        "password" => (
            service.set_password(&name, &form.password, &actor).await,
            format!("Set a new password for {name}; their sessions ended."),
        ),
        other => return Err(AppError::BadRequest(format!("unknown action {other:?}"))),
    };
    match result {
        // Changing one's own role or password ends one's own session too.
        Ok(()) if name == signed_in.user.name && form.action != "remove" => {
            Ok(Redirect::to("/admin/login").into_response())
        }
        Ok(()) => {
            users_page_with(
                &state,
                &signed_in,
                StatusCode::OK,
                None,
                String::new(),
                None,
                Some(done),
            )
            .await
        }
        Err(ServiceError::Domain(e)) => {
            let (status, why) = refusal(&e);
            users_page_with(
                &state,
                &signed_in,
                status,
                None,
                String::new(),
                Some((name, why)),
                None,
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Template)]
#[template(path = "admin/password.html")]
struct PasswordPage {
    site: Site,
    me: Me,
    error: Option<(&'static str, String)>,
}

#[derive(Debug, Deserialize)]
pub struct PasswordForm {
    csrf: String,
    #[serde(default)]
    current: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    again: String,
}

/// `GET /admin/password`: any signed-in user changes their own password.
pub async fn password_page(
    State(state): State<AppState>,
    signed_in: SignedIn,
) -> Result<Response, AppError> {
    page(
        StatusCode::OK,
        &PasswordPage {
            site: state.site.clone(),
            me: me(&signed_in),
            error: None,
        },
    )
}

/// `POST /admin/password`: the current password, then the new one twice. Every session of the
/// user ends; they sign in again with the new password.
pub async fn change_password(
    State(state): State<AppState>,
    signed_in: SignedIn,
    headers: axum::http::HeaderMap,
    Form(form): Form<PasswordForm>,
) -> Result<Response, AppError> {
    signed_in.authorize_form(&headers, &form.csrf, Role::Maintainer)?;
    let again = |status, field: &'static str, why: String| {
        page(
            status,
            &PasswordPage {
                site: state.site.clone(),
                me: me(&signed_in),
                error: Some((field, why)),
            },
        )
    };
    let name = signed_in.user.name.clone();
    match state.service.verify_user(&name, &form.current).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return again(
                StatusCode::UNAUTHORIZED,
                "current",
                "That is not your current password.".to_owned(),
            );
        }
        Err(ServiceError::Busy(why)) => {
            return again(StatusCode::TOO_MANY_REQUESTS, "current", format!("{why}."));
        }
        Err(e) => return Err(e.into()),
    }
    if form.password != form.again {
        return again(
            StatusCode::UNPROCESSABLE_ENTITY,
            "again",
            "The two new passwords differ.".to_owned(),
        );
    }
    match state
        .service
        .set_password(&name, &form.password, &format!("user:{name}"))
        .await
    {
        Ok(()) => Ok(Redirect::to("/admin/login").into_response()),
        Err(ServiceError::Domain(DomainError::Invalid(e))) => again(
            StatusCode::UNPROCESSABLE_ENTITY,
            "password",
            format!("The new password {}.", e.message),
        ),
        Err(e) => Err(e.into()),
    }
}

// ----- editing a window and its plan ---------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
pub struct EditForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    impact: String,
    #[serde(default)]
    op: String,
    #[serde(flatten)]
    rest: HashMap<String, String>,
}

#[derive(Template)]
#[template(path = "admin/edit.html")]
struct EditPage {
    site: Site,
    me: Me,
    w: WindowView,
    form: EditForm,
    preview: Option<String>,
    impacts: Vec<(&'static str, &'static str)>,
    components: Vec<(String, String, bool)>,
    error: Option<String>,
    new_step: String,
}

async fn edit_page(
    state: &AppState,
    signed_in: &SignedIn,
    id: i64,
    status: StatusCode,
    form: Option<EditForm>,
    error: Option<String>,
    new_step: String,
) -> Result<Response, AppError> {
    let m = state.service.maintenance(id).await?;
    let w = window_view(&m, &[], state.service.now());
    let form = form.unwrap_or_else(|| EditForm {
        title: m.title.clone(),
        description: m.description.clone(),
        impact: m.impact.as_str().to_owned(),
        rest: m
            .components
            .iter()
            .map(|c| (format!("component_{}", c.slug), "on".to_owned()))
            .collect(),
        ..EditForm::default()
    });
    let preview = (form.op == "preview").then(|| super::public::markdown(&form.description));
    let components = component_choices(state, &form.rest).await?;
    page(
        status,
        &EditPage {
            site: state.site.clone(),
            me: me(signed_in),
            w,
            form,
            preview,
            impacts: Impact::ALL
                .iter()
                .map(|i| (i.as_str(), i.label()))
                .collect(),
            components,
            error,
            new_step,
        },
    )
}

pub async fn edit(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<i64>,
) -> Result<Response, AppError> {
    signed_in.require(Role::Maintainer)?;
    edit_page(
        &state,
        &signed_in,
        id,
        StatusCode::OK,
        None,
        None,
        String::new(),
    )
    .await
}

/// A refused change as the admin pages say it: the status and the sentence.
pub(crate) fn refusal(e: &DomainError) -> (StatusCode, String) {
    match e {
        DomainError::Rule(r) => (StatusCode::CONFLICT, format!("Not done: {r}.")),
        DomainError::Invalid(v) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("Not done: the {} {}.", v.field, v.message),
        ),
    }
}

pub async fn save_edit(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<i64>,
    headers: axum::http::HeaderMap,
    Form(form): Form<EditForm>,
) -> Result<Response, AppError> {
    signed_in.authorize_form(&headers, &form.csrf, Role::Maintainer)?;
    if form.op == "preview" {
        return edit_page(
            &state,
            &signed_in,
            id,
            StatusCode::OK,
            Some(form),
            None,
            String::new(),
        )
        .await;
    }
    let slugs = ticked_components(&form.rest);
    let result = match state.service.components_by_slug(&slugs).await {
        Ok(components) => {
            state
                .service
                .acting(signed_in.actor())
                .edit(
                    id,
                    crate::domain::Edit {
                        title: Some(form.title.clone()),
                        description: Some(form.description.clone()),
                        impact: Impact::parse(&form.impact),
                        components: Some(components),
                    },
                    crate::domain::ScheduleChange::default(),
                )
                .await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => Ok(Redirect::to(&format!("/admin/maintenances/{id}")).into_response()),
        Err(ServiceError::Domain(e)) => {
            let (status, message) = refusal(&e);
            edit_page(
                &state,
                &signed_in,
                id,
                status,
                Some(form),
                Some(message),
                String::new(),
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize)]
pub struct PlanForm {
    csrf: String,
    op: String,
    #[serde(default)]
    position: i64,
    #[serde(default)]
    title: String,
}

pub async fn edit_plan(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<i64>,
    headers: axum::http::HeaderMap,
    Form(form): Form<PlanForm>,
) -> Result<Response, AppError> {
    signed_in.authorize_form(&headers, &form.csrf, Role::Maintainer)?;
    let position = form.position;
    let edit = match form.op.as_str() {
        "add" => crate::domain::PlanEdit::Add {
            title: form.title.clone(),
            description: None,
        },
        "edit" => crate::domain::PlanEdit::Edit {
            position,
            title: form.title.clone(),
            description: None,
        },
        "remove" => crate::domain::PlanEdit::Remove { position },
        "up" | "down" => crate::domain::PlanEdit::Move {
            position,
            up: form.op == "up",
        },
        other => {
            return Err(AppError::BadRequest(format!(
                "unknown plan change {other:?}"
            )));
        }
    };
    match state
        .service
        .acting(signed_in.actor())
        .edit_plan(id, edit)
        .await
    {
        Ok(_) => Ok(Redirect::to(&format!("/admin/maintenances/{id}/edit")).into_response()),
        Err(ServiceError::Domain(e)) => {
            let (status, message) = refusal(&e);
            let keep = if form.op == "add" {
                form.title
            } else {
                String::new()
            };
            edit_page(&state, &signed_in, id, status, None, Some(message), keep).await
        }
        Err(e) => Err(e.into()),
    }
}
