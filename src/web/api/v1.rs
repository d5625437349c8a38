//! `/api/v1`: automation runs windows through the same service calls as the admin pages.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::{Json, extract::FromRequestParts};
use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ApiResult, Bearer, ErrorBody};
use crate::domain::{
    self, ComponentStatus, Edit, NewComponent, NewMaintenance, NewStep, Schedule, ScheduleChange,
    StepAction, WindowAction,
};
use crate::domain::{ValidationError, WindowState};
use crate::web::AppState;
use crate::web::error::AppError;
pub use crate::wire::{
    ImpactJson, MaintenanceJson, StepJson, UpdateJson, maintenance_json, update_json,
};

/// Request bodies larger than this are refused with 413.
pub const BODY_LIMIT: usize = 256 * 1024;

/// A required JSON body.
pub struct Body<T>(pub T);

/// An optional JSON body: an empty one reads as `T::default()`.
pub struct OptionalBody<T>(pub T);

async fn read_json<T: DeserializeOwned>(
    request: axum::extract::Request,
    state: &AppState,
    if_empty: fn() -> Option<T>,
) -> ApiResult<T> {
    let bytes = <Bytes as axum::extract::FromRequest<AppState>>::from_request(request, state)
        .await
        .map_err(|e| match e {
            BytesRejection::FailedToBufferBody(_) => ApiError::TooLarge,
            other => AppError::BadRequest(other.body_text()).into(),
        })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return if_empty()
            .ok_or_else(|| AppError::BadRequest("a JSON body is required".to_owned()).into());
    }
    match serde_json::from_slice::<Option<T>>(&bytes) {
        Ok(Some(value)) => Ok(value),
        // `null` stands for "no body" where a body is optional.
        Ok(None) => if_empty().ok_or_else(|| {
            AppError::BadRequest("the JSON body must not be null".to_owned()).into()
        }),
        Err(e) => Err(AppError::BadRequest(format!("invalid JSON body: {e}")).into()),
    }
}

impl<T: DeserializeOwned> axum::extract::FromRequest<AppState> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &AppState) -> ApiResult<Self> {
        read_json(request, state, || None).await.map(Body)
    }
}

impl<T: DeserializeOwned + Default> axum::extract::FromRequest<AppState> for OptionalBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &AppState) -> ApiResult<Self> {
        read_json(request, state, || Some(T::default()))
            .await
            .map(OptionalBody)
    }
}

/// Path parameters, with a 404 for anything that does not parse.
pub struct Params<T>(pub T);

#[allow(clippy::disallowed_types)] // the API's wrapper around axum's Path
impl<T> FromRequestParts<AppState> for Params<T>
where
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> ApiResult<Self> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Params(p.0))
            .map_err(|_| AppError::NotFound.into())
    }
}

/// Query parameters, with the API's JSON error (400) for anything that does not parse.
pub struct ApiQuery<T>(pub T);

#[allow(clippy::disallowed_types)] // the API's wrapper around axum's Query
impl<T> FromRequestParts<AppState> for ApiQuery<T>
where
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> ApiResult<Self> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e| AppError::BadRequest(e.body_text()).into())
    }
}

/// A component slug in a request.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct Slug(pub String);

fn slugs(list: Option<Vec<Slug>>) -> Vec<String> {
    list.unwrap_or_default().into_iter().map(|s| s.0).collect()
}

/// A whole number as JSON may write it: `600` or `600.0` (both are JSON Schema integers).
pub(crate) fn whole(v: &serde_json::Value) -> Option<i64> {
    v.as_i64().or_else(|| {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            .map(|f| f as i64)
    })
}

/// An optional whole number (see [`whole`]); anything else is a malformed body.
pub(crate) fn optional_whole<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => whole(&v)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("{v} is not a whole number"))),
    }
}

/// Like [`optional_whole`], telling an explicit `null` (`Some(None)`) from an absent field.
pub(crate) fn nullable_whole<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<i64>>, D::Error> {
    optional_whole(d).map(Some)
}

/// An optional list of whole numbers (see [`whole`]).
pub(crate) fn whole_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<i64>>, D::Error> {
    match Option::<Vec<serde_json::Value>>::deserialize(d)? {
        None => Ok(None),
        Some(list) => list
            .iter()
            .map(|v| {
                whole(v)
                    .ok_or_else(|| serde::de::Error::custom(format!("{v} is not a whole number")))
            })
            .collect::<Result<_, _>>()
            .map(Some),
    }
}

/// `Some(None)` for an explicit `null`, `None` for an absent field.
pub(crate) fn double_option<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ComponentJson {
    pub slug: String,
    pub name: String,
    pub description: Option<String>,
    pub group: Option<String>,
    /// `operational`, `under_maintenance`, `degraded_performance`, `partial_outage` or
    /// `major_outage`: the worst of its open incidents, running windows and the status set by
    /// hand.
    #[schema(
        pattern = "^(operational|under_maintenance|degraded_performance|partial_outage|major_outage)$"
    )]
    pub status: &'static str,
}

/// A component's status set by hand, with the words saying why; `operational` clears it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ComponentStatusInput {
    #[schema(
        pattern = "^(operational|under_maintenance|degraded_performance|partial_outage|major_outage)$"
    )]
    pub status: String,
    /// Why (required unless `operational`).
    #[schema(max_length = 5000, pattern = "^[^\\u0000]*$")]
    pub body: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepInput {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000]*\\S[^\\u0000]*$"
    )]
    pub title: String,
    #[schema(max_length = 20000, pattern = "^[^\\u0000]*$")]
    pub description: Option<String>,
}

/// A new window. Without `starts_at` it is tentative (`schedule_hint` says roughly when).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMaintenance {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000]*\\S[^\\u0000]*$"
    )]
    pub title: String,
    /// Markdown.
    #[schema(max_length = 20000, pattern = "^[^\\u0000]*$")]
    pub description: Option<String>,
    pub impact: Option<ImpactJson>,
    pub starts_at: Option<Timestamp>,
    /// After `starts_at`; needs it.
    pub ends_at: Option<Timestamp>,
    #[schema(max_length = 200, pattern = "^[^\\u0000]*$")]
    pub schedule_hint: Option<String>,
    /// Slugs of affected components (they must exist).
    #[schema(inline, value_type = Option<Vec<String>>)]
    pub components: Option<Vec<Slug>>,
    #[schema(max_items = 100)]
    pub steps: Option<Vec<StepInput>>,
    /// Start by itself at `starts_at` (default false).
    pub auto_start: Option<bool>,
    /// Complete by itself at `ends_at` when no step is pending or in progress (default false).
    pub auto_complete: Option<bool>,
    /// Seconds before the start at which a reminder is announced (default one day and one
    /// hour: `[86400, 3600]`); `[]` for none.
    #[serde(default, deserialize_with = "whole_list")]
    #[schema(value_type = Option<Vec<i64>>, max_items = 5)]
    pub reminders: Option<Vec<i64>>,
}

/// Edit a window or move its date. Absent fields stay; `null` clears a date or the hint
/// (clearing `starts_at` makes the window tentative and clears `ends_at` too).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchMaintenance {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000]*\\S[^\\u0000]*$"
    )]
    pub title: Option<String>,
    #[schema(max_length = 20000, pattern = "^[^\\u0000]*$")]
    pub description: Option<String>,
    pub impact: Option<ImpactJson>,
    #[schema(value_type = Option<Vec<String>>)]
    pub components: Option<Vec<Slug>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub starts_at: Option<Option<Timestamp>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ends_at: Option<Option<Timestamp>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, max_length = 200, pattern = "^[^\\u0000]*$")]
    pub schedule_hint: Option<Option<String>>,
    /// Start by itself at `starts_at` (default false).
    pub auto_start: Option<bool>,
    /// Complete by itself at `ends_at` when no step is pending or in progress (default false).
    pub auto_complete: Option<bool>,
    /// Seconds before the start at which a reminder is announced (default one day and one
    /// hour: `[86400, 3600]`); `[]` for none.
    #[serde(default, deserialize_with = "whole_list")]
    #[schema(value_type = Option<Vec<i64>>, max_items = 5)]
    pub reminders: Option<Vec<i64>>,
    /// `false`: change the window (a new date included) without posting on any channel.
    /// Default `true`.
    pub announce: Option<bool>,
}

/// An optional note with a transition. The body may be empty.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteInput {
    #[schema(max_length = 2000, pattern = "^[^\\u0000]*$")]
    pub note: Option<String>,
    /// `false`: change the window (its page, feeds and API) without posting on any channel.
    /// Default `true`.
    pub announce: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateInput {
    /// The update's text.
    #[schema(
        min_length = 1,
        max_length = 5000,
        pattern = "^[^\\u0000]*\\S[^\\u0000]*$"
    )]
    pub body: String,
    /// `false`: post it on the page only, not on any channel. Default `true`.
    pub announce: Option<bool>,
}

/// The corrected text of a posted update (or of the note given with a step or window action,
/// where an empty text removes the note).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CorrectionInput {
    #[schema(max_length = 5000, pattern = "^[^\\u0000]*$")]
    pub body: String,
    /// `false`: correct the page only; the channels keep what they posted. Default `true`:
    /// Discord edits its message, Bluesky replies with a correction, webhooks get
    /// `maintenance.update_edited`.
    pub announce: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ComponentInput {
    /// Lowercase letters, digits and `-`.
    #[schema(min_length = 1, max_length = 64, pattern = "^[a-z0-9][a-z0-9-]*$")]
    pub slug: String,
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000]*\\S[^\\u0000]*$"
    )]
    pub name: String,
    #[schema(max_length = 500, pattern = "^[^\\u0000]*$")]
    pub description: Option<String>,
    #[schema(max_length = 100, pattern = "^[^\\u0000]*$")]
    pub group: Option<String>,
}

/// Create a maintenance window (as a draft).
#[utoipa::path(post, path = "/maintenances", tag = "maintenances",
    request_body = CreateMaintenance,
    responses(
        (status = 201, description = "Created", body = MaintenanceJson),
        (status = "4XX", description = "Client error", body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn create_maintenance(
    State(state): State<AppState>,
    bearer: Bearer,
    Body(input): Body<CreateMaintenance>,
) -> ApiResult<(StatusCode, Json<MaintenanceJson>)> {
    let service = &state.service.acting(bearer.actor_id());
    let schedule = Schedule::from_parts(
        input.starts_at,
        input.ends_at,
        input.schedule_hint.as_deref(),
    )
    .map_err(domain::DomainError::from)?;
    let component_ids = service.component_ids(&slugs(input.components)).await?;
    let m = service
        .create_maintenance(NewMaintenance {
            title: input.title,
            description: input.description.unwrap_or_default(),
            impact: input.impact.map_or(domain::Impact::Minor, Into::into),
            schedule,
            component_ids,
            steps: input
                .steps
                .unwrap_or_default()
                .into_iter()
                .map(|s| NewStep {
                    title: s.title,
                    description: s.description,
                })
                .collect(),
            automation: domain::Automation {
                auto_start: input.auto_start.unwrap_or(false),
                auto_complete: input.auto_complete.unwrap_or(false),
                reminders: input
                    .reminders
                    .unwrap_or_else(|| domain::DEFAULT_REMINDERS.to_vec()),
            },
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(maintenance_json(
            &m,
            &state.settings.public_url,
            state.service.now(),
        )),
    ))
}

/// Which windows `GET /maintenances` lists.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MaintenanceQuery {
    /// Only windows in this state.
    #[param(pattern = "^(draft|planned|scheduled|in_progress|completed|cancelled)$")]
    pub state: Option<String>,
    /// Only windows scheduled to end (or, without an end, to start) at or after this time
    /// (RFC 3339). Undated windows are left out.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// Only windows scheduled to start before this time (RFC 3339). Undated windows are left
    /// out.
    #[param(format = DateTime)]
    pub until: Option<String>,
    /// At most this many, newest first [default: 50].
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    #[param(minimum = 0, maximum = 1000000)]
    pub offset: Option<i64>,
}

/// Windows, newest first: filter by state and by when they are scheduled, a page at a time.
#[utoipa::path(get, path = "/maintenances", tag = "maintenances",
    params(MaintenanceQuery),
    responses(
        (status = 200, description = "Windows", body = Vec<MaintenanceJson>),
        (status = "4XX", description = "Client error", body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn list_maintenances(
    State(state): State<AppState>,
    _bearer: Bearer,
    ApiQuery(q): ApiQuery<MaintenanceQuery>,
) -> ApiResult<Json<Vec<MaintenanceJson>>> {
    let (limit, offset) = super::page_params(q.limit, q.offset)?;
    let window_state = match q.state.as_deref() {
        None => None,
        Some(s) => Some(WindowState::parse(s).ok_or_else(|| {
            ValidationError::new(
                "state",
                format!("{s:?} is not a window state: draft, planned, scheduled, in_progress, completed or cancelled"),
            )
        })?),
    };
    let time = |field: &'static str, value: Option<&str>| {
        value
            .map(|v| {
                v.parse::<Timestamp>().map_err(|_| {
                    ValidationError::new(field, "give an RFC 3339 time, e.g. 2026-12-13T01:00:00Z")
                })
            })
            .transpose()
    };
    let from = time("from", q.from.as_deref())?;
    let until = time("until", q.until.as_deref())?;
    let windows = state
        .service
        .store()
        .list_maintenances(window_state, from, until, offset, limit)
        .await?;
    let now = state.service.now();
    Ok(Json(
        windows
            .iter()
            .map(|m| maintenance_json(m, &state.settings.public_url, now))
            .collect(),
    ))
}

/// A window with its steps.
#[utoipa::path(get, path = "/maintenances/{id}", tag = "maintenances",
    params(("id" = i64, Path, description = "Window id", minimum = 1)),
    responses(
        (status = 200, description = "The window", body = MaintenanceJson),
        (status = "4XX", description = "Client error", body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn get_maintenance(
    State(state): State<AppState>,
    _bearer: Bearer,
    Params(id): Params<i64>,
) -> ApiResult<Json<MaintenanceJson>> {
    let m = state.service.maintenance(id).await?;
    Ok(Json(maintenance_json(
        &m,
        &state.settings.public_url,
        state.service.now(),
    )))
}

/// Edit a window or reschedule it (in one commit).
#[utoipa::path(patch, path = "/maintenances/{id}", tag = "maintenances",
    params(("id" = i64, Path, description = "Window id", minimum = 1)),
    request_body = PatchMaintenance,
    responses(
        (status = 200, description = "The window after the change", body = MaintenanceJson),
        (status = "4XX", description = "Client error", body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn patch_maintenance(
    State(state): State<AppState>,
    bearer: Bearer,
    Params(id): Params<i64>,
    Body(input): Body<PatchMaintenance>,
) -> ApiResult<Json<MaintenanceJson>> {
    let service = &state
        .service
        .acting(bearer.actor_id())
        .quietly(input.announce == Some(false));
    let components = match input.components {
        Some(list) => Some(service.components_by_slug(&slugs(Some(list))).await?),
        None => None,
    };
    let m = service
        .edit(
            id,
            Edit {
                title: input.title,
                description: input.description,
                impact: input.impact.map(Into::into),
                components,
                auto_start: input.auto_start,
                auto_complete: input.auto_complete,
                reminders: input.reminders,
            },
            ScheduleChange {
                starts_at: input.starts_at,
                ends_at: input.ends_at,
                hint: input.schedule_hint,
            },
        )
        .await?;
    Ok(Json(maintenance_json(
        &m,
        &state.settings.public_url,
        state.service.now(),
    )))
}

/// Announce, start, complete or cancel a window.
#[utoipa::path(post, path = "/maintenances/{id}/{action}", tag = "maintenances",
    params(
        ("id" = i64, Path, description = "Window id", minimum = 1),
        ("action" = String, Path, description = "What to do",
            pattern = "^(announce|start|complete|cancel)$"),
    ),
    request_body(content = Option<NoteInput>, description = "Optional note (complete and cancel)"),
    responses(
        (status = 200, description = "The window after the change", body = MaintenanceJson),
        (status = "4XX", description = "Client error; 409 for an illegal transition, with the reason", body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn window_action(
    State(state): State<AppState>,
    bearer: Bearer,
    Params((id, action)): Params<(i64, String)>,
    OptionalBody(input): OptionalBody<NoteInput>,
) -> ApiResult<Json<MaintenanceJson>> {
    let action = WindowAction::parse(&action).ok_or(AppError::NotFound)?;
    let m = state
        .service
        .acting(bearer.actor_id())
        .quietly(input.announce == Some(false))
        .window_action(id, action, input.note.as_deref())
        .await?;
    Ok(Json(maintenance_json(
        &m,
        &state.settings.public_url,
        state.service.now(),
    )))
}

/// Start, finish (done), fail or skip a step.
#[utoipa::path(post, path = "/maintenances/{id}/steps/{position}/{action}", tag = "steps",
    params(
        ("id" = i64, Path, description = "Window id", minimum = 1),
        ("position" = i64, Path, description = "Step position, from 1", minimum = 1),
        ("action" = String, Path, description = "What to do",
            pattern = "^(start|done|fail|skip)$"),
    ),
    request_body(content = Option<NoteInput>, description = "Optional note"),
    responses(
        (status = 200, description = "The window after the change", body = MaintenanceJson),
        (status = "4XX", description = "Client error; 409 for an illegal transition, with the reason", body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn step_action(
    State(state): State<AppState>,
    bearer: Bearer,
    Params((id, position, action)): Params<(i64, i64, String)>,
    OptionalBody(input): OptionalBody<NoteInput>,
) -> ApiResult<Json<MaintenanceJson>> {
    let action = StepAction::parse(&action).ok_or(AppError::NotFound)?;
    let m = state
        .service
        .acting(bearer.actor_id())
        .quietly(input.announce == Some(false))
        .step_action(id, position, action, input.note.as_deref())
        .await?;
    Ok(Json(maintenance_json(
        &m,
        &state.settings.public_url,
        state.service.now(),
    )))
}

/// The window's timeline, newest first.
#[utoipa::path(get, path = "/maintenances/{id}/updates", tag = "updates",
    params(("id" = i64, Path, description = "Window id", minimum = 1)),
    responses(
        (status = 200, description = "Updates, newest first", body = Vec<UpdateJson>),
        (status = "4XX", description = "Client error", body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn list_updates(
    State(state): State<AppState>,
    _bearer: Bearer,
    Params(id): Params<i64>,
) -> ApiResult<Json<Vec<UpdateJson>>> {
    state.service.maintenance(id).await?;
    let updates = state.service.store().list_updates(id, None).await?;
    Ok(Json(updates.iter().map(update_json).collect()))
}

/// Post a free-form update to a public window.
#[utoipa::path(post, path = "/maintenances/{id}/updates", tag = "updates",
    params(("id" = i64, Path, description = "Window id", minimum = 1)),
    request_body = UpdateInput,
    responses(
        (status = 201, description = "The update", body = UpdateJson),
        (status = "4XX", description = "Client error", body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn post_update(
    State(state): State<AppState>,
    bearer: Bearer,
    Params(id): Params<i64>,
    Body(input): Body<UpdateInput>,
) -> ApiResult<(StatusCode, Json<UpdateJson>)> {
    state
        .service
        .acting(bearer.actor_id())
        .quietly(input.announce == Some(false))
        .post_update(id, &input.body)
        .await?;
    let latest = state.service.store().list_updates(id, Some(1)).await?;
    let update = latest
        .first()
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("the update just posted is missing")))?;
    Ok((StatusCode::CREATED, Json(update_json(update))))
}

/// Correct a posted update: its text, or the note given with a step or window action. The
/// page shows the new text (with `edited_at`); each channel that posted it gets the correction.
#[utoipa::path(patch, path = "/maintenances/{id}/updates/{update_id}", tag = "updates",
    params(
        ("id" = i64, Path, description = "Window id", minimum = 1),
        ("update_id" = i64, Path, description = "Update id", minimum = 1),
    ),
    request_body = CorrectionInput,
    responses(
        (status = 200, description = "The update as corrected", body = UpdateJson),
        (status = "4XX", description = "Client error", body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn correct_update(
    State(state): State<AppState>,
    bearer: Bearer,
    Params((id, update_id)): Params<(i64, i64)>,
    Body(input): Body<CorrectionInput>,
) -> ApiResult<Json<UpdateJson>> {
    state
        .service
        .acting(bearer.actor_id())
        .quietly(input.announce == Some(false))
        .correct_update(id, update_id, Some(&input.body))
        .await?;
    let update = state
        .service
        .store()
        .get_update(update_id)
        .await?
        .ok_or(crate::service::ServiceError::NotFound("update"))?;
    Ok(Json(update_json(&update)))
}

/// Withdraw a posted free-form update: it leaves the page, and each channel that posted it
/// takes it down where it can (Discord deletes the message, Bluesky the post; webhooks get
/// `maintenance.update_withdrawn`). Steps' and the window's own changes cannot be withdrawn.
#[utoipa::path(delete, path = "/maintenances/{id}/updates/{update_id}", tag = "updates",
    params(
        ("id" = i64, Path, description = "Window id", minimum = 1),
        ("update_id" = i64, Path, description = "Update id", minimum = 1),
    ),
    responses(
        (status = 204, description = "Withdrawn"),
        (status = "4XX", description = "Client error", body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn withdraw_update(
    State(state): State<AppState>,
    bearer: Bearer,
    Params((id, update_id)): Params<(i64, i64)>,
) -> ApiResult<StatusCode> {
    state
        .service
        .acting(bearer.actor_id())
        .correct_update(id, update_id, None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Components with their current status.
#[utoipa::path(get, path = "/components", tag = "components",
    responses(
        (status = 200, description = "All components", body = Vec<ComponentJson>),
        (status = "4XX", description = "Client error", body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn list_components(
    State(state): State<AppState>,
    _bearer: Bearer,
) -> ApiResult<Json<Vec<ComponentJson>>> {
    let open = state.service.store().open_public_maintenances().await?;
    let incidents = state.service.open_incidents().await?;
    let components = state.service.components().await?;
    Ok(Json(
        components
            .into_iter()
            .map(|c| ComponentJson {
                status: ComponentStatus::shown(&c, &open, &incidents).as_str(),
                slug: c.slug,
                name: c.name,
                description: c.description,
                group: c.group_name,
            })
            .collect(),
    ))
}

/// Create a component (admin tokens only).
#[utoipa::path(post, path = "/components", tag = "components",
    request_body = ComponentInput,
    responses(
        (status = 201, description = "Created", body = ComponentJson),
        (status = "4XX", description = "Client error", body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn create_component(
    State(state): State<AppState>,
    bearer: Bearer,
    Body(input): Body<ComponentInput>,
) -> ApiResult<(StatusCode, Json<ComponentJson>)> {
    let c = bearer
        .service(&state)
        .create_component(NewComponent {
            slug: input.slug,
            name: input.name,
            description: input.description,
            group_name: input.group,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(ComponentJson {
            slug: c.slug,
            name: c.name,
            description: c.description,
            group: c.group_name,
            status: ComponentStatus::Operational.as_str(),
        }),
    ))
}

/// Set a component's status by hand (admin tokens), as Statuspage allows: it shows until set
/// back to `operational`, as the worst with its open incidents and running windows.
#[utoipa::path(put, path = "/components/{slug}/status", tag = "components",
    params(("slug" = String, Path, description = "Component slug")),
    request_body = ComponentStatusInput,
    responses(
        (status = 200, description = "The component with its shown status", body = ComponentJson),
        (status = "4XX", description = "Client error", body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn set_component_status(
    State(state): State<AppState>,
    bearer: Bearer,
    Params(slug): Params<String>,
    Body(input): Body<ComponentStatusInput>,
) -> ApiResult<Json<ComponentJson>> {
    let status = ComponentStatus::parse(&input.status).ok_or_else(|| {
        crate::domain::ValidationError::new(
            "status",
            format!(
                "{:?} is not a component status: operational, under_maintenance, \
                 degraded_performance, partial_outage or major_outage",
                input.status
            ),
        )
    })?;
    let c = bearer
        .service(&state)
        .set_component_status(&slug, status, input.body.as_deref().unwrap_or_default())
        .await?;
    let open = state.service.store().open_public_maintenances().await?;
    let incidents = state.service.open_incidents().await?;
    Ok(Json(ComponentJson {
        status: ComponentStatus::shown(&c, &open, &incidents).as_str(),
        slug: c.slug,
        name: c.name,
        description: c.description,
        group: c.group_name,
    }))
}

struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(
                            "An API token from the admin UI or `herald token create NAME`",
                        ))
                        .build(),
                ),
            );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Herald API", description = "Run maintenance windows, report rollouts and tell incidents from automation."),
    modifiers(&BearerScheme),
)]
struct ApiDoc;

/// The `/api/v1` routes and their OpenAPI description (paths include the prefix).
pub fn routes(state: &AppState) -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    let v1 = OpenApiRouter::<AppState>::new()
        .routes(routes!(list_maintenances, create_maintenance))
        .routes(routes!(get_maintenance, patch_maintenance))
        .routes(routes!(window_action))
        .routes(routes!(step_action))
        .routes(routes!(list_updates, post_update))
        .routes(routes!(correct_update, withdraw_update))
        .routes(routes!(list_components, create_component))
        .routes(routes!(set_component_status))
        .routes(routes!(
            super::rollouts::list_rollouts,
            super::rollouts::create_rollout
        ))
        .routes(routes!(
            super::rollouts::get_rollout,
            super::rollouts::patch_rollout
        ))
        .routes(routes!(super::rollouts::rollout_action))
        .routes(routes!(super::rollouts::report_target))
        .routes(routes!(super::rollouts::retry_target))
        .routes(routes!(
            super::rollouts::list_rollout_updates,
            super::rollouts::post_rollout_update
        ))
        .routes(routes!(
            super::incidents::list_incidents,
            super::incidents::create_incident
        ))
        .routes(routes!(
            super::incidents::get_incident,
            super::incidents::patch_incident
        ))
        .routes(routes!(super::incidents::incident_action))
        .routes(routes!(
            super::incidents::list_incident_updates,
            super::incidents::post_incident_update
        ))
        .routes(routes!(super::incidents::put_postmortem))
        .routes(routes!(super::alerts::receive_alert));
    let (router, mut api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/api/v1", v1)
        .split_for_parts();
    document_unavailable(&mut api);
    document_idempotency(&mut api);
    (
        router
            .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
            .layer(axum::middleware::from_fn_with_state(
                super::idempotency::Keyed::new(state.clone(), &api),
                super::idempotency::layer,
            ))
            .route("/api/v1/{*rest}", axum::routing::any(super::not_found)),
        api,
    )
}

/// Every operation may answer 503 with `Retry-After` while the database cannot be reached
/// (`AppError::Unavailable`); said once here rather than on each handler.
fn document_unavailable(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{
        ContentBuilder, HeaderBuilder, ObjectBuilder, Ref, ResponseBuilder, Type,
    };
    let response = ResponseBuilder::new()
        .description("The database cannot be reached right now; nothing to fix in the request")
        .header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::Integer)))
                .description(Some("Seconds to wait before trying again"))
                .build(),
        )
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build();
    for item in api.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            operation
                .responses
                .responses
                .entry("503".to_owned())
                .or_insert_with(|| response.clone().into());
        }
    }
}

/// Every write takes an `Idempotency-Key` (`super::idempotency`); said once here rather than on
/// each handler.
fn document_idempotency(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    use utoipa::openapi::{ContentBuilder, ObjectBuilder, Ref, Required, ResponseBuilder, Type};
    let parameter = ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(format!(
            "A key of your choosing (1 to 255 visible ASCII characters), new for each change \
             you mean to make. Sending the same request again with the same key within {} \
             hours replays the first answer (with `Idempotent-Replayed: true`) instead of \
             making the change twice; the same key with a different request is a 422.",
            super::idempotency::lifetime_hours()
        )))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(255))
                .pattern(Some("^[!#-~]+$")),
        ))
        .build();
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
    };
    let in_use = error(
        "The first request with this Idempotency-Key is still being answered; try again \
         after Retry-After seconds",
    );
    let reused = error(
        "Invalid input (`invalid`), or an Idempotency-Key sent before with a different \
         request (`idempotency_key_reused`)",
    );
    let malformed = error("A malformed request or Idempotency-Key");
    for item in api.paths.paths.values_mut() {
        for operation in [&mut item.post, &mut item.put, &mut item.patch]
            .into_iter()
            .flatten()
        {
            operation
                .parameters
                .get_or_insert_with(Vec::new)
                .push(parameter.clone().into());
            let responses = &mut operation.responses.responses;
            responses
                .entry("409".to_owned())
                .or_insert_with(|| in_use.clone().into());
            responses
                .entry("422".to_owned())
                .or_insert_with(|| reused.clone().into());
            responses
                .entry("400".to_owned())
                .or_insert_with(|| malformed.clone().into());
        }
    }
}
