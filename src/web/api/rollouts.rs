//! `/api/v1/rollouts`: deploy automation and the instances themselves report a rollout's
//! progress here, through the same service calls as the admin pages.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::v1::{
    ApiQuery, Body, NoteInput, OptionalBody, Params, UpdateInput, nullable_whole, optional_whole,
};
use super::{ApiResult, Bearer, ErrorBody};
use crate::domain::{
    Counts, NewRollout, Report, Rollout, RolloutAction, RolloutEdit, RolloutState, TargetState,
    ValidationError, limits,
};
use crate::web::AppState;
use crate::web::error::AppError;
pub use crate::wire::{
    RolloutJson, RolloutUpdateJson, TargetJson, VersionCount, rollout_json, rollout_update_json,
    target_json,
};

/// What a report answers: the target as it now is and where the rollout stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportJson {
    pub rollout_id: i64,
    #[schema(pattern = "^(pending|in_progress|paused|completed|failed|aborted)$")]
    pub rollout_state: &'static str,
    pub stalled: bool,
    pub summary: String,
    pub target: TargetJson,
}

fn report_json(r: &Rollout, name: &str, now: Timestamp) -> ApiResult<Json<ReportJson>> {
    let t = r.target(name).ok_or(AppError::NotFound)?;
    Ok(Json(ReportJson {
        rollout_id: r.id,
        rollout_state: r.state.as_str(),
        stalled: r.is_stalled(now),
        summary: r.summary(),
        target: target_json(r, t, now),
    }))
}

/// A new rollout. Targets are named in the order they will be updated.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRollout {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000]*\\S[^\\u0000]*$"
    )]
    pub title: String,
    /// Markdown.
    #[schema(max_length = 20000, pattern = "^[^\\u0000]*$")]
    pub description: Option<String>,
    /// The version being replaced (needed to roll back).
    #[schema(min_length = 1, max_length = 64, pattern = "^[^\\s\\u0000-\\u001f]+$")]
    pub from_version: Option<String>,
    #[schema(min_length = 1, max_length = 64, pattern = "^[^\\s\\u0000-\\u001f]+$")]
    pub to_version: String,
    /// Target (instance) names, unique, in rollout order.
    #[schema(min_items = 1, max_items = 500, value_type = Vec<String>)]
    pub targets: Vec<String>,
    /// The maintenance window this rollout belongs to (it must exist).
    #[serde(default, deserialize_with = "optional_whole")]
    #[schema(minimum = 1)]
    pub maintenance_id: Option<i64>,
    /// No progress for this long makes the rollout stalled [default: 600].
    #[serde(default, deserialize_with = "optional_whole")]
    #[schema(minimum = 60, maximum = 604800)]
    pub progress_deadline_seconds: Option<i64>,
    /// A moving target silent for this long is stale [default: 120].
    #[serde(default, deserialize_with = "optional_whole")]
    #[schema(minimum = 10, maximum = 86400)]
    pub stale_after_seconds: Option<i64>,
    /// Whether the public pages name targets [default: true].
    pub public_names: Option<bool>,
}

/// Edit a rollout. Absent fields stay; `maintenance_id: null` unlinks the window.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchRollout {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000]*\\S[^\\u0000]*$"
    )]
    pub title: Option<String>,
    #[schema(max_length = 20000, pattern = "^[^\\u0000]*$")]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "nullable_whole")]
    #[schema(value_type = Option<i64>, minimum = 1)]
    pub maintenance_id: Option<Option<i64>>,
    #[serde(default, deserialize_with = "optional_whole")]
    #[schema(minimum = 60, maximum = 604800)]
    pub progress_deadline_seconds: Option<i64>,
    #[serde(default, deserialize_with = "optional_whole")]
    #[schema(minimum = 10, maximum = 86400)]
    pub stale_after_seconds: Option<i64>,
    pub public_names: Option<bool>,
}

/// A target's report. The same report twice changes nothing (it only refreshes the target's
/// last-report time).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetReport {
    /// `pending`, `draining`, `drained`, `updating`, `healthy` or `failed`.
    #[schema(pattern = "^(pending|draining|drained|updating|healthy|failed)$")]
    pub state: String,
    /// Live work left while draining, e.g. `{"rooms": 12, "recordings": 3}`: at most 10
    /// labels of letters, digits, `_`, `-`, `.`; whole numbers from 0.
    #[schema(value_type = Option<BTreeMap<String, u32>>)]
    pub remaining: Option<BTreeMap<String, serde_json::Value>>,
    /// The version the target runs now.
    #[schema(min_length = 1, max_length = 64, pattern = "^[^\\s\\u0000-\\u001f]+$")]
    pub version: Option<String>,
    /// Take the target to updating or healthy although its drain has not finished; the note
    /// says why.
    pub forced: Option<bool>,
    #[schema(max_length = 2000, pattern = "^[^\\u0000]*$")]
    pub note: Option<String>,
}

impl TargetReport {
    /// Into the domain's report: a clear 422 for a state or count that is not one.
    pub fn into_report(self) -> Result<Report, ValidationError> {
        let state = TargetState::parse(&self.state).ok_or_else(|| {
            ValidationError::new(
                "state",
                format!(
                    "{:?} is not a target state: pending, draining, drained, updating, healthy or failed",
                    self.state
                ),
            )
        })?;
        let remaining = match self.remaining {
            None => None,
            Some(map) => {
                if map.len() > limits::LABELS_MAX {
                    return Err(ValidationError::new(
                        "remaining",
                        format!("at most {} labels", limits::LABELS_MAX),
                    ));
                }
                let mut counts = Counts::new();
                for (label, value) in map {
                    let Some(n) = super::v1::whole(&value).filter(|n| *n >= 0) else {
                        return Err(ValidationError::new(
                            "remaining",
                            format!("{label}: {value} is not a whole number from 0"),
                        ));
                    };
                    counts.insert(label, n);
                }
                Some(counts)
            }
        };
        Ok(Report {
            state,
            remaining,
            version: self.version,
            forced: self.forced.unwrap_or(false),
            note: self.note,
        })
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only rollouts in this state; `stalled` for stalled ones.
    #[param(pattern = "^(pending|in_progress|paused|completed|failed|aborted|stalled)$")]
    pub state: Option<String>,
    /// At most this many, newest first [default: 50].
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    #[param(minimum = 0, maximum = 1000000)]
    pub offset: Option<i64>,
}

fn seconds(s: Option<i64>, default: SignedDuration) -> SignedDuration {
    s.map_or(default, SignedDuration::from_secs)
}

/// Plan a rollout. It is pending until its first target reports.
#[utoipa::path(post, path = "/rollouts", tag = "rollouts",
    request_body = CreateRollout,
    responses(
        (status = 201, description = "Created", body = RolloutJson),
        (status = "4XX", description = "Client error", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn create_rollout(
    State(state): State<AppState>,
    bearer: Bearer,
    Body(input): Body<CreateRollout>,
) -> ApiResult<(StatusCode, Json<RolloutJson>)> {
    let new = NewRollout {
        title: input.title,
        description: input.description.unwrap_or_default(),
        from_version: input.from_version,
        to_version: input.to_version,
        targets: input.targets,
        maintenance_id: input.maintenance_id,
        progress_deadline: seconds(
            input.progress_deadline_seconds,
            crate::domain::DEFAULT_PROGRESS_DEADLINE,
        ),
        stale_after: seconds(
            input.stale_after_seconds,
            crate::domain::DEFAULT_STALE_AFTER,
        ),
        public_names: input.public_names.unwrap_or(true),
        rollback_of: None,
    };
    let r = state
        .service
        .acting(bearer.actor_id())
        .create_rollout(new)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(rollout_json(
            &r,
            &state.settings.public_url,
            state.service.now(),
        )),
    ))
}

/// Rollouts, newest first.
#[utoipa::path(get, path = "/rollouts", tag = "rollouts",
    params(ListQuery),
    responses(
        (status = 200, description = "Rollouts", body = Vec<RolloutJson>),
        (status = "4XX", description = "Client error", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn list_rollouts(
    State(state): State<AppState>,
    _bearer: Bearer,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Vec<RolloutJson>>> {
    let (limit, offset) = super::page_params(q.limit, q.offset)?;
    let now = state.service.now();
    let (filter, stalled) = match q.state.as_deref() {
        None => (None, false),
        Some("stalled") => (Some(RolloutState::InProgress), true),
        Some(s) => (
            Some(RolloutState::parse(s).ok_or_else(|| {
                ValidationError::new(
                    "state",
                    format!("{s:?} is not a rollout state: pending, in_progress, paused, completed, failed, aborted or stalled"),
                )
            })?),
            false,
        ),
    };
    let list = state.service.rollouts(filter, offset, limit).await?;
    Ok(Json(
        list.iter()
            .filter(|r| !stalled || r.is_stalled(now))
            .map(|r| rollout_json(r, &state.settings.public_url, now))
            .collect(),
    ))
}

/// A rollout with its targets.
#[utoipa::path(get, path = "/rollouts/{id}", tag = "rollouts",
    params(("id" = i64, Path, description = "Rollout id", minimum = 1)),
    responses(
        (status = 200, description = "The rollout", body = RolloutJson),
        (status = "4XX", description = "Client error", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn get_rollout(
    State(state): State<AppState>,
    _bearer: Bearer,
    Params(id): Params<i64>,
) -> ApiResult<Json<RolloutJson>> {
    let r = state.service.rollout(id).await?;
    Ok(Json(rollout_json(
        &r,
        &state.settings.public_url,
        state.service.now(),
    )))
}

/// Edit what a rollout says or how it is watched.
#[utoipa::path(patch, path = "/rollouts/{id}", tag = "rollouts",
    params(("id" = i64, Path, description = "Rollout id", minimum = 1)),
    request_body = PatchRollout,
    responses(
        (status = 200, description = "The rollout after the change", body = RolloutJson),
        (status = "4XX", description = "Client error", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn patch_rollout(
    State(state): State<AppState>,
    bearer: Bearer,
    Params(id): Params<i64>,
    Body(input): Body<PatchRollout>,
) -> ApiResult<Json<RolloutJson>> {
    let edit = RolloutEdit {
        title: input.title,
        description: input.description,
        maintenance_id: input.maintenance_id,
        progress_deadline: input
            .progress_deadline_seconds
            .map(SignedDuration::from_secs),
        stale_after: input.stale_after_seconds.map(SignedDuration::from_secs),
        public_names: input.public_names,
    };
    let r = state
        .service
        .acting(bearer.actor_id())
        .edit_rollout(id, &edit)
        .await?;
    Ok(Json(rollout_json(
        &r,
        &state.settings.public_url,
        state.service.now(),
    )))
}

/// Pause, resume, abort or roll back a rollout. A rollback creates the reverse rollout for the
/// targets already on the new version; its id is in `rolled_back_by`.
#[utoipa::path(post, path = "/rollouts/{id}/{action}", tag = "rollouts",
    params(
        ("id" = i64, Path, description = "Rollout id", minimum = 1),
        ("action" = String, Path, description = "What to do",
            pattern = "^(pause|resume|abort|rollback)$"),
    ),
    request_body(content = Option<NoteInput>, description = "Optional note"),
    responses(
        (status = 200, description = "The rollout after the change", body = RolloutJson),
        (status = "4XX", description = "Client error; 409 when the rules refuse, with the reason", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn rollout_action(
    State(state): State<AppState>,
    bearer: Bearer,
    Params((id, action)): Params<(i64, String)>,
    OptionalBody(input): OptionalBody<NoteInput>,
) -> ApiResult<Json<RolloutJson>> {
    let action = RolloutAction::parse(&action).ok_or(AppError::NotFound)?;
    let (r, _) = state
        .service
        .acting(bearer.actor_id())
        .rollout_action(id, action, input.note.as_deref())
        .await?;
    Ok(Json(rollout_json(
        &r,
        &state.settings.public_url,
        state.service.now(),
    )))
}

/// Report a target's state (the name is a percent-encoded path segment). Out of order is a
/// 409 with the reason, unless `forced`; a repeated report changes nothing.
#[utoipa::path(put, path = "/rollouts/{id}/targets/{name}", tag = "rollouts",
    params(
        ("id" = i64, Path, description = "Rollout id", minimum = 1),
        ("name" = String, Path, description = "Target name", min_length = 1, max_length = 100),
    ),
    request_body = TargetReport,
    responses(
        (status = 200, description = "The target after the report", body = ReportJson),
        (status = "4XX", description = "Client error; 404 for an unknown rollout or target, 409 out of order, 422 an invalid field", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn report_target(
    State(state): State<AppState>,
    bearer: Bearer,
    Params((id, name)): Params<(i64, String)>,
    Body(input): Body<TargetReport>,
) -> ApiResult<Json<ReportJson>> {
    let report = input
        .into_report()
        .map_err(crate::domain::DomainError::from)?;
    let r = state
        .service
        .acting(bearer.actor_id())
        .report(id, &name, &report)
        .await?;
    report_json(&r, &name, state.service.now())
}

/// Retry a failed target: it becomes pending again.
#[utoipa::path(post, path = "/rollouts/{id}/targets/{name}/retry", tag = "rollouts",
    params(
        ("id" = i64, Path, description = "Rollout id", minimum = 1),
        ("name" = String, Path, description = "Target name", min_length = 1, max_length = 100),
    ),
    request_body(content = Option<NoteInput>, description = "Optional note"),
    responses(
        (status = 200, description = "The target after the retry", body = ReportJson),
        (status = "4XX", description = "Client error; 409 when the target has not failed", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn retry_target(
    State(state): State<AppState>,
    bearer: Bearer,
    Params((id, name)): Params<(i64, String)>,
    OptionalBody(input): OptionalBody<NoteInput>,
) -> ApiResult<Json<ReportJson>> {
    let r = state
        .service
        .acting(bearer.actor_id())
        .retry_target(id, &name, input.note.as_deref())
        .await?;
    report_json(&r, &name, state.service.now())
}

/// The rollout's timeline, newest first.
#[utoipa::path(get, path = "/rollouts/{id}/updates", tag = "rollouts",
    params(("id" = i64, Path, description = "Rollout id", minimum = 1)),
    responses(
        (status = 200, description = "Updates, newest first", body = Vec<RolloutUpdateJson>),
        (status = "4XX", description = "Client error", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn list_rollout_updates(
    State(state): State<AppState>,
    _bearer: Bearer,
    Params(id): Params<i64>,
) -> ApiResult<Json<Vec<RolloutUpdateJson>>> {
    state.service.rollout(id).await?;
    let updates = state.service.rollout_updates(id, None).await?;
    Ok(Json(updates.iter().map(rollout_update_json).collect()))
}

/// Post a free-form update to a rollout's timeline.
#[utoipa::path(post, path = "/rollouts/{id}/updates", tag = "rollouts",
    params(("id" = i64, Path, description = "Rollout id", minimum = 1)),
    request_body = UpdateInput,
    responses(
        (status = 201, description = "The update", body = RolloutUpdateJson),
        (status = "4XX", description = "Client error", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn post_rollout_update(
    State(state): State<AppState>,
    bearer: Bearer,
    Params(id): Params<i64>,
    Body(input): Body<UpdateInput>,
) -> ApiResult<(StatusCode, Json<RolloutUpdateJson>)> {
    state
        .service
        .acting(bearer.actor_id())
        .post_rollout_note(id, &input.body)
        .await?;
    let latest = state.service.rollout_updates(id, Some(1)).await?;
    let update = latest
        .first()
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("the update just posted is missing")))?;
    Ok((StatusCode::CREATED, Json(rollout_update_json(update))))
}
