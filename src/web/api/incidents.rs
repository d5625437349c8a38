//! `/api/v1/incidents`: open an incident, post its updates, resolve, reopen and write the
//! postmortem from automation or a script, through the same service calls as the admin pages.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::v1::{ApiQuery, Body, OptionalBody, Params, optional_whole};
use super::{ApiResult, Bearer, ErrorBody};
use crate::domain::{Component, ComponentStatus, IncidentStatus, NewIncident, ValidationError};
use crate::store::IncidentFilter;
use crate::web::AppState;
use crate::web::error::AppError;
pub use crate::wire::{
    AffectedJson, ImpactJson, IncidentJson, IncidentUpdateJson, incident_json, incident_update_json,
};

/// A new incident. Published at once unless `draft` is `true` (a draft a maintainer
/// publishes later; nothing is announced for a draft).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateIncident {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000]*\\S[^\\u0000]*$"
    )]
    pub title: String,
    /// The first update's text (markdown) [default: a sentence saying the status].
    #[schema(max_length = 5000, pattern = "^[^\\u0000]*$")]
    pub body: Option<String>,
    /// [default: minor]
    pub impact: Option<ImpactJson>,
    /// `investigating`, `identified` or `monitoring` [default: investigating].
    #[schema(pattern = "^(investigating|identified|monitoring)$")]
    pub status: Option<String>,
    /// The affected components, each with the status the incident gives it.
    #[schema(max_items = 100)]
    pub components: Option<Vec<AffectedJson>>,
    /// Keep it a draft: not public, not announced, until published [default: false].
    pub draft: Option<bool>,
    /// The window whose failed step this is about.
    #[serde(default, deserialize_with = "optional_whole")]
    #[schema(minimum = 1)]
    pub maintenance_id: Option<i64>,
    /// The rollout whose failure or stall this is about.
    #[serde(default, deserialize_with = "optional_whole")]
    #[schema(minimum = 1)]
    pub rollout_id: Option<i64>,
}

/// Correct the title or impact. Absent fields stay; nothing is announced.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchIncident {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000]*\\S[^\\u0000]*$"
    )]
    pub title: Option<String>,
    pub impact: Option<ImpactJson>,
}

/// An update: its words, and perhaps a new status and new component statuses.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IncidentUpdateInput {
    #[schema(
        min_length = 1,
        max_length = 5000,
        pattern = "^[^\\u0000]*\\S[^\\u0000]*$"
    )]
    pub body: String,
    /// `investigating`, `identified` or `monitoring`: forward only (resolve with
    /// `/resolve`). Absent: the status stays.
    #[schema(pattern = "^(investigating|identified|monitoring)$")]
    pub status: Option<String>,
    /// The affected components from now on, each with its status. Absent: they stay.
    #[schema(max_items = 100)]
    pub components: Option<Vec<AffectedJson>>,
}

/// The words that go with resolving or reopening.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IncidentNote {
    #[schema(max_length = 5000, pattern = "^[^\\u0000]*$")]
    pub body: Option<String>,
}

/// The postmortem (markdown). The first one is announced; later edits change the page only.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostmortemInput {
    #[schema(
        min_length = 1,
        max_length = 20000,
        pattern = "^[^\\u0000]*\\S[^\\u0000]*$"
    )]
    pub body: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `open` (public, not resolved), `draft`, `resolved` or `all` [default: all].
    #[param(pattern = "^(open|draft|resolved|all)$")]
    pub state: Option<String>,
    /// At most this many, newest first [default: 50].
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    #[param(minimum = 0, maximum = 1000000)]
    pub offset: Option<i64>,
}

fn status(s: Option<&str>) -> Result<Option<IncidentStatus>, ValidationError> {
    s.map(|s| {
        IncidentStatus::parse(s).ok_or_else(|| {
            ValidationError::new(
                "status",
                format!("{s:?} is not an incident status: investigating, identified or monitoring"),
            )
        })
    })
    .transpose()
}

/// Slugs and status names into ids and statuses, refusing unknown ones.
pub fn affected(
    list: &[AffectedJson],
    all: &[Component],
) -> Result<Vec<(i64, ComponentStatus)>, ValidationError> {
    list.iter()
        .map(|a| {
            let c = all.iter().find(|c| c.slug == a.slug).ok_or_else(|| {
                ValidationError::new(
                    "components",
                    format!("no component has the slug {:?}", a.slug),
                )
            })?;
            let s = ComponentStatus::parse(&a.status).ok_or_else(|| {
                ValidationError::new(
                    "components",
                    format!(
                        "{:?} is not a component status in an incident: \
                             degraded_performance, partial_outage or major_outage",
                        a.status
                    ),
                )
            })?;
            Ok((c.id, s))
        })
        .collect()
}

async fn answer(state: &AppState, i: &crate::domain::Incident) -> ApiResult<Json<IncidentJson>> {
    let components = state.service.components().await?;
    Ok(Json(incident_json(
        i,
        &components,
        &state.settings.public_url,
    )))
}

/// Open an incident; announced at once unless it is a draft.
#[utoipa::path(post, path = "/incidents", tag = "incidents",
    request_body = CreateIncident,
    responses(
        (status = 201, description = "Created", body = IncidentJson),
        (status = "4XX", description = "Client error", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn create_incident(
    State(state): State<AppState>,
    bearer: Bearer,
    Body(input): Body<CreateIncident>,
) -> ApiResult<(StatusCode, Json<IncidentJson>)> {
    let all = state.service.components().await?;
    let status = status(input.status.as_deref())?.unwrap_or(IncidentStatus::Investigating);
    let new = NewIncident {
        title: input.title,
        impact: input.impact.unwrap_or(ImpactJson::Minor).into(),
        status,
        components: affected(&input.components.unwrap_or_default(), &all)?,
        body: input
            .body
            .filter(|b| !b.trim().is_empty())
            .unwrap_or_else(|| status.default_body().to_owned()),
        publish: !input.draft.unwrap_or(false),
        maintenance_id: input.maintenance_id,
        rollout_id: input.rollout_id,
        source: "manual".to_owned(),
    };
    let i = bearer.service(&state).create_incident(new).await?;
    Ok((StatusCode::CREATED, answer(&state, &i).await?))
}

/// Incidents, newest first.
#[utoipa::path(get, path = "/incidents", tag = "incidents",
    params(ListQuery),
    responses(
        (status = 200, description = "Incidents", body = Vec<IncidentJson>),
        (status = "4XX", description = "Client error", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn list_incidents(
    State(state): State<AppState>,
    _bearer: Bearer,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Vec<IncidentJson>>> {
    let (limit, offset) = super::page_params(q.limit, q.offset)?;
    let filter = match q.state.as_deref() {
        None => IncidentFilter::All,
        Some(s) => IncidentFilter::parse(s).ok_or_else(|| {
            ValidationError::new(
                "state",
                format!("{s:?} is not one of open, draft, resolved or all"),
            )
        })?,
    };
    let page = state.service.incidents(filter, offset, limit).await?;
    let components = state.service.components().await?;
    Ok(Json(
        page.items
            .iter()
            .map(|i| incident_json(i, &components, &state.settings.public_url))
            .collect(),
    ))
}

/// An incident with its timeline (`updates`, newest first).
#[utoipa::path(get, path = "/incidents/{id}", tag = "incidents",
    params(("id" = i64, Path, description = "Incident id", minimum = 1)),
    responses(
        (status = 200, description = "The incident", body = IncidentJson),
        (status = "4XX", description = "Client error", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn get_incident(
    State(state): State<AppState>,
    _bearer: Bearer,
    Params(id): Params<i64>,
) -> ApiResult<Json<IncidentJson>> {
    let i = state.service.incident(id).await?;
    let components = state.service.components().await?;
    let updates = state
        .service
        .incident_updates(id, Some(crate::web::view::TIMELINE_PAGE as i64))
        .await?;
    let mut json = incident_json(&i, &components, &state.settings.public_url);
    json.updates = Some(
        updates
            .iter()
            .map(|u| incident_update_json(u, &components))
            .collect(),
    );
    Ok(Json(json))
}

/// Correct an incident's title or impact.
#[utoipa::path(patch, path = "/incidents/{id}", tag = "incidents",
    params(("id" = i64, Path, description = "Incident id", minimum = 1)),
    request_body = PatchIncident,
    responses(
        (status = 200, description = "The incident after the change", body = IncidentJson),
        (status = "4XX", description = "Client error", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn patch_incident(
    State(state): State<AppState>,
    bearer: Bearer,
    Params(id): Params<i64>,
    Body(input): Body<PatchIncident>,
) -> ApiResult<Json<IncidentJson>> {
    let i = bearer
        .service(&state)
        .edit_incident(id, input.title, input.impact.map(Into::into))
        .await?;
    answer(&state, &i).await
}

/// Publish a draft, resolve, or reopen (with a note saying why).
#[utoipa::path(post, path = "/incidents/{id}/{action}", tag = "incidents",
    params(
        ("id" = i64, Path, description = "Incident id", minimum = 1),
        ("action" = String, Path, description = "What to do",
            pattern = "^(publish|resolve|reopen)$"),
    ),
    request_body(content = Option<IncidentNote>, description = "What to say (resolve, reopen)"),
    responses(
        (status = 200, description = "The incident after the change", body = IncidentJson),
        (status = "4XX", description = "Client error; 409 for an illegal transition, with the reason", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn incident_action(
    State(state): State<AppState>,
    bearer: Bearer,
    Params((id, action)): Params<(i64, String)>,
    OptionalBody(input): OptionalBody<IncidentNote>,
) -> ApiResult<Json<IncidentJson>> {
    let service = bearer.service(&state);
    let body = input.body.unwrap_or_default();
    let i = match action.as_str() {
        "publish" => service.publish_incident(id).await?,
        "resolve" => {
            let body = if body.trim().is_empty() {
                IncidentStatus::Resolved.default_body()
            } else {
                &body
            };
            service.resolve_incident(id, body).await?
        }
        "reopen" => {
            if body.trim().is_empty() {
                return Err(
                    ValidationError::new("body", "say why the incident is reopened").into(),
                );
            }
            service.reopen_incident(id, &body).await?
        }
        _ => return Err(AppError::NotFound.into()),
    };
    answer(&state, &i).await
}

/// The incident's timeline, newest first.
#[utoipa::path(get, path = "/incidents/{id}/updates", tag = "incidents",
    params(("id" = i64, Path, description = "Incident id", minimum = 1)),
    responses(
        (status = 200, description = "Updates, newest first", body = Vec<IncidentUpdateJson>),
        (status = "4XX", description = "Client error", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn list_incident_updates(
    State(state): State<AppState>,
    _bearer: Bearer,
    Params(id): Params<i64>,
) -> ApiResult<Json<Vec<IncidentUpdateJson>>> {
    state.service.incident(id).await?;
    let components = state.service.components().await?;
    Ok(Json(
        state
            .service
            .incident_updates(id, None)
            .await?
            .iter()
            .map(|u| incident_update_json(u, &components))
            .collect(),
    ))
}

/// Post an update, perhaps moving the status forward and changing component statuses.
#[utoipa::path(post, path = "/incidents/{id}/updates", tag = "incidents",
    params(("id" = i64, Path, description = "Incident id", minimum = 1)),
    request_body = IncidentUpdateInput,
    responses(
        (status = 201, description = "The incident after the update", body = IncidentJson),
        (status = "4XX", description = "Client error; 409 for a status that goes backwards or a resolved incident", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn post_incident_update(
    State(state): State<AppState>,
    bearer: Bearer,
    Params(id): Params<i64>,
    Body(input): Body<IncidentUpdateInput>,
) -> ApiResult<(StatusCode, Json<IncidentJson>)> {
    let all = state.service.components().await?;
    let components = input
        .components
        .as_deref()
        .map(|c| affected(c, &all))
        .transpose()?;
    let i = bearer
        .service(&state)
        .post_incident_update(
            id,
            status(input.status.as_deref())?,
            &input.body,
            components,
        )
        .await?;
    Ok((StatusCode::CREATED, answer(&state, &i).await?))
}

/// Write or correct the postmortem, once the incident is resolved.
#[utoipa::path(put, path = "/incidents/{id}/postmortem", tag = "incidents",
    params(("id" = i64, Path, description = "Incident id", minimum = 1)),
    request_body = PostmortemInput,
    responses(
        (status = 200, description = "The incident with its postmortem", body = IncidentJson),
        (status = "4XX", description = "Client error; 409 while the incident is open", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn put_postmortem(
    State(state): State<AppState>,
    bearer: Bearer,
    Params(id): Params<i64>,
    Body(input): Body<PostmortemInput>,
) -> ApiResult<Json<IncidentJson>> {
    let i = bearer
        .service(&state)
        .set_postmortem(id, &input.body)
        .await?;
    answer(&state, &i).await
}
