//! The public side of incidents: `/incidents/{id}` with its timeline, and the view `/` leads
//! with while something is broken. Drafts are never shown.

use askama::Template;
use axum::extract::{Request, State};
use axum::response::Response;
use jiff::Timestamp;

use super::AppState;
use super::cache::CachedPage;
use super::error::{AppError, Path, Query};
use super::public::{TimelineQuery, html};
use super::view::{Site, TimeView, TimelineNav, UpdateView, markdown, plain_text, time};
use crate::domain::{Component, Impact, Incident, IncidentUpdate, human_duration};

/// A component an incident affects, as shown.
#[derive(Debug, Clone)]
pub struct AffectedView {
    pub name: String,
    pub status: &'static str,
    pub status_label: &'static str,
}

#[derive(Debug, Clone)]
pub struct IncidentView {
    pub id: i64,
    pub url: String,
    pub title: String,
    pub impact: &'static str,
    pub impact_label: &'static str,
    pub status: &'static str,
    pub status_label: &'static str,
    pub open: bool,
    pub started_at: TimeView,
    pub resolved_at: Option<TimeView>,
    /// How long it lasted (resolved) or has lasted so far.
    pub duration: String,
    pub components: Vec<AffectedView>,
    /// Newest first.
    pub updates: Vec<UpdateView>,
    /// The newest public update's words, as plain text (the banner on `/`).
    pub latest_text: Option<String>,
    pub postmortem_html: Option<String>,
    /// The window or rollout it was opened from: (address, title).
    pub window: Option<(String, String)>,
    pub rollout: Option<(String, String)>,
}

impl IncidentView {
    /// The newest update, which `/` shows.
    pub fn latest(&self) -> Option<&UpdateView> {
        self.updates.first()
    }
}

fn update_view(u: &IncidentUpdate) -> UpdateView {
    UpdateView {
        kind: u.kind.as_str(),
        label: u.kind.label(u.status),
        body: markdown(&u.body),
        note: None,
        id: u.id,
        written: None,
        withdrawable: false,
        edited: None,
        at: time(u.created_at),
    }
}

pub fn incident_view(
    i: &Incident,
    updates: &[IncidentUpdate],
    components: &[Component],
    now: Timestamp,
) -> IncidentView {
    IncidentView {
        id: i.id,
        url: format!("/incidents/{}", i.id),
        title: i.title.clone(),
        impact: i.impact.as_str(),
        impact_label: i.impact.label(),
        status: i.status.as_str(),
        status_label: i.status.label(),
        open: i.is_open(),
        started_at: time(i.started_at),
        resolved_at: i.resolved_at.map(time),
        duration: human_duration(i.resolved_at.unwrap_or(now).duration_since(i.started_at)),
        components: i
            .components
            .iter()
            .filter_map(|(id, s)| {
                let c = components.iter().find(|c| c.id == *id)?;
                Some(AffectedView {
                    name: c.name.clone(),
                    status: s.as_str(),
                    status_label: s.label(),
                })
            })
            .collect(),
        updates: updates
            .iter()
            // What was written while a draft stays between the maintainers.
            .filter(|u| u.announced)
            .map(update_view)
            .collect(),
        latest_text: updates
            .iter()
            .find(|u| u.announced)
            .map(|u| plain_text(&u.body)),
        postmortem_html: i
            .postmortem
            .as_deref()
            .filter(|_| i.is_public())
            .map(markdown),
        window: None,
        rollout: None,
    }
}

/// A link to an incident from the page of the window or rollout it was opened from:
/// (address, title, status label).
pub type IncidentLink = (String, String, &'static str);

/// The public incidents opened from `subject`, as links.
pub async fn linked(
    state: &AppState,
    subject: crate::domain::Subject,
) -> Result<Vec<IncidentLink>, AppError> {
    Ok(state
        .service
        .store()
        .linked_incidents(subject)
        .await?
        .into_iter()
        .filter(|i| i.is_public())
        .map(|i| (format!("/incidents/{}", i.id), i.title, i.status.label()))
        .collect())
}

/// The banner's class for the worst open incident: red for a major or critical one, amber
/// otherwise.
pub fn banner_class(incidents: &[Incident]) -> &'static str {
    match incidents.iter().map(|i| i.impact).max() {
        Some(Impact::Critical | Impact::Major) => "outage",
        _ => "degraded",
    }
}

#[derive(Template)]
#[template(path = "public/incident.html")]
struct IncidentPage {
    site: Site,
    i: IncidentView,
    nav: TimelineNav,
}

async fn render_incident(
    state: &AppState,
    id: i64,
    timeline: usize,
) -> Result<CachedPage, AppError> {
    let service = &state.service;
    let i = service.incident(id).await?;
    if i.is_draft() {
        return Err(AppError::NotFound);
    }
    let updates = service.incident_updates(id, None).await?;
    let components = service.components().await?;
    let mut view = incident_view(&i, &updates, &components, service.now());
    if let Some(w) = i.maintenance_id
        && let Ok(m) = service.maintenance(w).await
        && m.is_public()
    {
        view.window = Some((format!("/maintenance/{w}"), m.title));
    }
    if let Some(r) = i.rollout_id
        && let Ok(r) = service.rollout(r).await
    {
        view.rollout = Some((format!("/rollouts/{}", r.id), r.title));
    }
    let nav = super::view::timeline_page(&mut view.updates, timeline, &view.url)
        .ok_or(AppError::NotFound)?;
    let about = match updates.iter().find(|u| u.announced) {
        Some(u) => format!("{}: {}", view.status_label, plain_text(&u.body)),
        None => view.status_label.to_owned(),
    };
    let page = IncidentPage {
        site: state.site.page(
            &format!("{} · {}", i.title, state.site.name),
            &about,
            &view.url,
        ),
        i: view,
        nav,
    };
    Ok(html(page.render()?))
}

/// `GET /incidents/{id}`.
pub async fn incident(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(query): Query<TimelineQuery>,
    request: Request,
) -> Result<Response, AppError> {
    let timeline = query.page()?;
    let key = super::view::timeline_url(&format!("/incidents/{id}"), timeline);
    let page = state
        .pages
        .get_or_render(&key, state.service.freshness(), || {
            render_incident(&state, id, timeline)
        })
        .await?;
    Ok(page.respond(request.headers()))
}
