//! Admin pages for incidents: the list (drafts opened by alerts with what fired, open ones,
//! resolved ones), opening one (also from a window's failed step or a rollout), and running
//! it: updates with status and component changes, publish, resolve, reopen, the postmortem.
//! Every action goes through the same service calls as the API, audited with who did it.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::channels::{DeliveryForm, DeliveryRow, decide_delivery, delivery_rows};
use super::{Me, field_error, me, page};
use crate::domain::{
    Component, ComponentStatus, DomainError, Impact, Incident, IncidentStatus, NewIncident,
    Subject, ValidationError,
};
use crate::service::ServiceError;
use crate::store::IncidentFilter;
use crate::web::AppState;
use crate::web::auth::{CsrfForm, SignedIn};
use crate::web::error::{AppError, Path, Query};
use crate::web::incidents::{IncidentView, incident_view};
use crate::web::view::{Site, TimeView, time};

/// The statuses a component may have in an incident, as a form offers them.
const COMPONENT_CHOICES: [(&str, &str); 4] = [
    ("", "Not affected"),
    ("degraded_performance", "Degraded performance"),
    ("partial_outage", "Partial outage"),
    ("major_outage", "Major outage"),
];

/// One component's row in a form: (slug, name, chosen status).
pub struct ComponentChoice {
    pub slug: String,
    pub name: String,
    pub chosen: String,
}

impl ComponentChoice {
    pub fn choices(&self) -> &'static [(&'static str, &'static str)] {
        &COMPONENT_CHOICES
    }
}

fn component_choices(all: &[Component], chosen: &[(i64, ComponentStatus)]) -> Vec<ComponentChoice> {
    all.iter()
        .map(|c| ComponentChoice {
            slug: c.slug.clone(),
            name: c.name.clone(),
            chosen: chosen
                .iter()
                .find(|(id, _)| *id == c.id)
                .map(|(_, s)| s.as_str().to_owned())
                .unwrap_or_default(),
        })
        .collect()
}

/// A form's `c_{slug}` fields as affected components.
fn components_from(
    form: &[(String, String)],
    all: &[Component],
) -> Result<Vec<(i64, ComponentStatus)>, ValidationError> {
    let mut out = Vec::new();
    for (key, value) in form {
        let Some(slug) = key.strip_prefix("c_") else {
            continue;
        };
        if value.is_empty() {
            continue;
        }
        let c = all
            .iter()
            .find(|c| c.slug == slug)
            .ok_or_else(|| ValidationError::new("components", "a component no longer exists"))?;
        let s = ComponentStatus::parse(value)
            .ok_or_else(|| ValidationError::new("components", "choose a status from the list"))?;
        out.push((c.id, s));
    }
    Ok(out)
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> &'a str {
    form.iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

// ----- the list and a new incident -----------------------------------------------------------

/// A draft opened by a monitor, with what fired.
pub struct DraftRow {
    pub i: IncidentView,
    pub source: String,
    pub fired: Vec<String>,
}

#[derive(Default)]
pub struct NewForm {
    pub title: String,
    pub body: String,
    pub impact: String,
    pub status: String,
    pub draft: bool,
    pub maintenance_id: String,
    pub rollout_id: String,
}

#[derive(Template)]
#[template(path = "admin/incidents.html")]
struct ListPage {
    site: Site,
    me: Me,
    drafts: Vec<DraftRow>,
    open: Vec<IncidentView>,
    resolved: Vec<IncidentView>,
    form: NewForm,
    components: Vec<ComponentChoice>,
    errors: Vec<ValidationError>,
    impacts: Vec<(&'static str, &'static str)>,
    statuses: Vec<(&'static str, &'static str)>,
    /// What the new incident is about (a window's or rollout's title), when opened from one.
    about: Option<String>,
}

impl ListPage {
    fn error(&self, field: &str) -> Option<&str> {
        field_error(&self.errors, field)
    }
}

async fn list_page(
    state: &AppState,
    signed_in: &SignedIn,
    form: NewForm,
    chosen: Vec<(i64, ComponentStatus)>,
    errors: Vec<ValidationError>,
) -> Result<Response, AppError> {
    let service = &state.service;
    let now = service.now();
    let all = service.components().await?;
    let view = |i: &Incident| incident_view(i, &[], &all, now);
    let mut drafts = Vec::new();
    for i in service
        .incidents(IncidentFilter::Drafts, 0, 50)
        .await?
        .items
    {
        let fired = service
            .store()
            .incident_alerts(i.id)
            .await?
            .iter()
            .map(|a| {
                let state = if a.firing { "firing" } else { "resolved" };
                format!("{} {state}: {}", a.source, a.detail)
            })
            .collect();
        drafts.push(DraftRow {
            source: i.source.clone(),
            i: view(&i),
            fired,
        });
    }
    let open = service.open_incidents().await?.iter().map(view).collect();
    let resolved = service
        .incidents(IncidentFilter::Resolved, 0, 20)
        .await?
        .items
        .iter()
        .map(view)
        .collect();
    let about = match (
        form.maintenance_id.parse::<i64>(),
        form.rollout_id.parse::<i64>(),
    ) {
        (Ok(w), _) => service.maintenance(w).await.ok().map(|m| m.title),
        (_, Ok(r)) => service.rollout(r).await.ok().map(|r| r.title),
        _ => None,
    };
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    page(
        status,
        &ListPage {
            site: state.site.clone(),
            me: me(signed_in),
            drafts,
            open,
            resolved,
            components: component_choices(&all, &chosen),
            form,
            errors,
            impacts: [Impact::None, Impact::Minor, Impact::Major, Impact::Critical]
                .into_iter()
                .map(|i| (i.as_str(), i.label()))
                .collect(),
            statuses: [
                IncidentStatus::Investigating,
                IncidentStatus::Identified,
                IncidentStatus::Monitoring,
            ]
            .into_iter()
            .map(|s| (s.as_str(), s.label()))
            .collect(),
            about,
        },
    )
}

#[derive(Debug, Default, Deserialize)]
pub struct FromQuery {
    maintenance: Option<i64>,
    rollout: Option<i64>,
}

/// `GET /admin/incidents` (`?maintenance=ID` or `?rollout=ID`: the new incident is about it).
pub async fn list(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Query(from): Query<FromQuery>,
) -> Result<Response, AppError> {
    let mut form = NewForm {
        impact: "minor".into(),
        status: "investigating".into(),
        ..NewForm::default()
    };
    let mut chosen = Vec::new();
    if let Some(w) = from.maintenance {
        let m = state.service.maintenance(w).await?;
        form.title = format!("Problem during {}", m.title);
        form.maintenance_id = w.to_string();
        chosen = m
            .components
            .iter()
            .map(|c| (c.id, ComponentStatus::Degraded))
            .collect();
    } else if let Some(r) = from.rollout {
        let r = state.service.rollout(r).await?;
        form.title = format!("Problem during {}", r.title);
        form.rollout_id = r.id.to_string();
    }
    list_page(&state, &signed_in, form, chosen, Vec::new()).await
}

/// `POST /admin/incidents`.
pub async fn create(
    State(state): State<AppState>,
    CsrfForm { signed_in, form }: CsrfForm<Vec<(String, String)>>,
) -> Result<Response, AppError> {
    let all = state.service.components().await?;
    let kept = NewForm {
        title: field(&form, "title").to_owned(),
        body: field(&form, "body").to_owned(),
        impact: field(&form, "impact").to_owned(),
        status: field(&form, "status").to_owned(),
        draft: field(&form, "draft") == "on",
        maintenance_id: field(&form, "maintenance_id").to_owned(),
        rollout_id: field(&form, "rollout_id").to_owned(),
    };
    let mut errors = Vec::new();
    let components = components_from(&form, &all).unwrap_or_else(|e| {
        errors.push(e);
        Vec::new()
    });
    let impact = Impact::parse(&kept.impact).unwrap_or_else(|| {
        errors.push(ValidationError::new("impact", "choose an impact"));
        Impact::Minor
    });
    let status = IncidentStatus::parse(&kept.status)
        .filter(|s| *s != IncidentStatus::Resolved)
        .unwrap_or_else(|| {
            errors.push(ValidationError::new("status", "choose a status"));
            IncidentStatus::Investigating
        });
    if !errors.is_empty() {
        return list_page(&state, &signed_in, kept, components, errors).await;
    }
    let new = NewIncident {
        title: kept.title.clone(),
        impact,
        status,
        components: components.clone(),
        body: if kept.body.trim().is_empty() {
            status.default_body().to_owned()
        } else {
            kept.body.clone()
        },
        publish: !kept.draft,
        maintenance_id: kept.maintenance_id.parse().ok(),
        rollout_id: kept.rollout_id.parse().ok(),
        source: "manual".into(),
    };
    match state
        .service
        .acting(signed_in.actor())
        .create_incident(new)
        .await
    {
        Ok(i) => Ok(super::done(
            &format!("/admin/incidents/{}", i.id),
            if i.is_draft() {
                "incident_draft"
            } else {
                "incident_opened"
            },
        )),
        Err(ServiceError::Domain(DomainError::Invalid(e))) => {
            list_page(&state, &signed_in, kept, components, vec![e]).await
        }
        Err(e) => Err(e.into()),
    }
}

// ----- running one ---------------------------------------------------------------------------

pub struct AdminIncidentUpdate {
    pub label: &'static str,
    pub body: String,
    pub actor: String,
    pub announced: bool,
    pub at: TimeView,
}

#[derive(Default)]
struct Kept {
    error: Option<String>,
    body: String,
    status: String,
    note: String,
    postmortem: Option<String>,
    chosen: Option<Vec<(i64, ComponentStatus)>>,
}

#[derive(Template)]
#[template(path = "admin/incident.html")]
struct RunPage {
    site: Site,
    me: Me,
    i: IncidentView,
    draft: bool,
    open: bool,
    updates: Vec<AdminIncidentUpdate>,
    components: Vec<ComponentChoice>,
    statuses: Vec<(&'static str, &'static str)>,
    fired: Vec<String>,
    error: Option<String>,
    body: String,
    status: String,
    note: String,
    postmortem: String,
    deliveries: Vec<DeliveryRow>,
    unsent_count: usize,
}

async fn run_page(
    state: &AppState,
    signed_in: &SignedIn,
    id: i64,
    status: StatusCode,
    kept: Kept,
) -> Result<Response, AppError> {
    let service = &state.service;
    let i = service.incident(id).await?;
    let updates = service.incident_updates(id, None).await?;
    let all = service.components().await?;
    let view = incident_view(&i, &updates, &all, service.now());
    let fired = service
        .store()
        .incident_alerts(id)
        .await?
        .iter()
        .map(|a| {
            let state = if a.firing { "firing" } else { "resolved" };
            format!("{} ({state}): {}", a.source, a.detail)
        })
        .collect();
    let channels = service.channels().await?;
    let deliveries = delivery_rows(
        &service.deliveries(Subject::Incident(id)).await?,
        &channels,
        &format!("/admin/incidents/{id}"),
    );
    let chosen = kept.chosen.clone().unwrap_or_else(|| i.components.clone());
    page(
        status,
        &RunPage {
            site: state.site.clone(),
            me: me(signed_in),
            draft: i.is_draft(),
            open: i.is_open(),
            updates: updates
                .iter()
                .map(|u| AdminIncidentUpdate {
                    label: u.kind.label(u.status),
                    body: u.body.clone(),
                    actor: u.actor.clone(),
                    announced: u.announced,
                    at: time(u.created_at),
                })
                .collect(),
            components: component_choices(&all, &chosen),
            statuses: [
                IncidentStatus::Investigating,
                IncidentStatus::Identified,
                IncidentStatus::Monitoring,
            ]
            .into_iter()
            .filter(|s| *s >= i.status)
            .map(|s| (s.as_str(), s.label()))
            .collect(),
            fired,
            error: kept.error,
            body: kept.body,
            status: kept.status,
            note: kept.note,
            postmortem: kept.postmortem.or(i.postmortem.clone()).unwrap_or_default(),
            unsent_count: deliveries.iter().filter(|d| d.state != "sent").count(),
            deliveries,
            i: view,
        },
    )
}

/// `GET /admin/incidents/{id}`.
pub async fn run(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<i64>,
) -> Result<Response, AppError> {
    run_page(&state, &signed_in, id, StatusCode::OK, Kept::default()).await
}

/// After a change: back to the page; a refusal shows it with the reason and the input.
async fn after(
    state: &AppState,
    signed_in: &SignedIn,
    id: i64,
    result: Result<(), ServiceError>,
    done: &str,
    keep: Kept,
) -> Result<Response, AppError> {
    match result {
        Ok(()) => Ok(super::done(&format!("/admin/incidents/{id}"), done)),
        Err(ServiceError::Domain(e)) => {
            let (status, error) = super::refusal(&e);
            run_page(
                state,
                signed_in,
                id,
                status,
                Kept {
                    error: Some(error),
                    ..keep
                },
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /admin/incidents/{id}/updates`: words, perhaps a new status and component statuses.
pub async fn post_update(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    CsrfForm { signed_in, form }: CsrfForm<Vec<(String, String)>>,
) -> Result<Response, AppError> {
    let all = state.service.components().await?;
    let body = field(&form, "body").to_owned();
    let status_text = field(&form, "status").to_owned();
    let keep = |chosen| Kept {
        body: body.clone(),
        status: status_text.clone(),
        chosen,
        ..Kept::default()
    };
    let components = match components_from(&form, &all) {
        Ok(mut c) => {
            // In the incident's order (by id), so an unchanged list compares equal.
            c.sort_by_key(|(id, _)| *id);
            c
        }
        Err(e) => {
            let result = Err(ServiceError::Domain(e.into()));
            return after(&state, &signed_in, id, result, "posted", keep(None)).await;
        }
    };
    let current = state.service.incident(id).await?;
    let status = IncidentStatus::parse(&status_text).filter(|s| *s != current.status);
    let changed = (components != current.components).then(|| components.clone());
    let result = state
        .service
        .acting(signed_in.actor())
        .post_incident_update(id, status, &body, changed)
        .await
        .map(drop);
    after(
        &state,
        &signed_in,
        id,
        result,
        "posted",
        keep(Some(components)),
    )
    .await
}

#[derive(Debug, Deserialize)]
pub struct ActionForm {
    action: String,
    #[serde(default)]
    note: String,
}

/// `POST /admin/incidents/{id}/action`: publish, resolve, reopen.
pub async fn action(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    CsrfForm { signed_in, form }: CsrfForm<ActionForm>,
) -> Result<Response, AppError> {
    let service = state.service.acting(signed_in.actor());
    let (result, done) = match form.action.as_str() {
        "publish" => (service.publish_incident(id).await, "incident_published"),
        "resolve" => {
            let note = match form.note.trim() {
                "" => IncidentStatus::Resolved.default_body(),
                n => n,
            };
            (
                service.resolve_incident(id, note).await,
                "incident_resolved",
            )
        }
        "reopen" => (
            service.reopen_incident(id, &form.note).await,
            "incident_reopened",
        ),
        other => return Err(AppError::BadRequest(format!("unknown action {other:?}"))),
    };
    let keep = Kept {
        note: form.note.clone(),
        ..Kept::default()
    };
    after(&state, &signed_in, id, result.map(drop), done, keep).await
}

#[derive(Debug, Deserialize)]
pub struct PostmortemForm {
    #[serde(default)]
    postmortem: String,
}

/// `POST /admin/incidents/{id}/postmortem`.
pub async fn postmortem(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    CsrfForm { signed_in, form }: CsrfForm<PostmortemForm>,
) -> Result<Response, AppError> {
    let result = state
        .service
        .acting(signed_in.actor())
        .set_postmortem(id, &form.postmortem)
        .await
        .map(drop);
    let keep = Kept {
        postmortem: Some(form.postmortem.clone()),
        ..Kept::default()
    };
    after(&state, &signed_in, id, result, "saved", keep).await
}

/// `POST /admin/incidents/{id}/deliveries/{delivery}`: Retry or Skip.
pub async fn delivery(
    State(state): State<AppState>,
    Path((id, delivery)): Path<(i64, i64)>,
    CsrfForm { signed_in, form }: CsrfForm<DeliveryForm>,
) -> Result<Response, AppError> {
    let result =
        decide_delivery(&state, &signed_in, Subject::Incident(id), delivery, &form).await?;
    after(&state, &signed_in, id, result, "done", Kept::default()).await
}
