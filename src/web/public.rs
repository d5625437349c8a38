//! The public pages: `/`, `/maintenance/{id}` and `/history`. Each is rendered into the page
//! cache from the view structs of `view.rs`, which hold display-ready values.

use askama::Template;
use axum::extract::Request;
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use jiff::Timestamp;
use serde::Deserialize;

use super::AppState;
use super::cache::{CachePolicy, CachedPage, PAGE_BROTLI_QUALITY};
use super::error::{AppError, Path, Query};
use super::view::{
    Site, SummaryView, TimeView, WindowView, plain_text, summary_view, time, window_view,
};
use crate::domain::{ComponentStatus, WindowState};

#[derive(Debug, Clone)]
pub struct ComponentView {
    pub name: String,
    pub description: Option<String>,
    pub status: &'static str,
    pub status_label: &'static str,
    /// The last 90 days, oldest first.
    pub days: Vec<DayView>,
    /// How many of them had an incident or maintenance.
    pub eventful: usize,
    /// Why its status was set by hand, if it was.
    pub note: Option<String>,
}

/// A day of a component's strip: its level and what to say about it.
#[derive(Debug, Clone)]
pub struct DayView {
    pub level: &'static str,
    pub label: String,
    pub eventful: bool,
}

/// How many days the strips show.
const STRIP_DAYS: i32 = 90;

fn day_views(cells: &[crate::domain::DayCell]) -> Vec<DayView> {
    cells
        .iter()
        .map(|d| {
            let date = d.date.strftime("%a %-d %b %Y");
            DayView {
                level: d.level.as_str(),
                label: if d.events.is_empty() {
                    format!("{date}: {}", d.level.label())
                } else {
                    format!("{date}: {}", d.events.join("; "))
                },
                eventful: !d.events.is_empty(),
            }
        })
        .collect()
}

#[derive(Debug, Clone)]
pub struct ComponentGroup {
    pub name: Option<String>,
    pub components: Vec<ComponentView>,
}

/// The one-line verdict at the top of the status page.
#[derive(Debug, Clone)]
pub struct Banner {
    pub class: &'static str,
    pub headline: String,
    pub detail: Option<String>,
}

fn banner(
    incidents: &[(crate::domain::Incident, super::incidents::IncidentView)],
    active: &[WindowView],
    upcoming: &[WindowView],
    rollouts: &[super::rollouts::RolloutView],
) -> Banner {
    if !incidents.is_empty() {
        return incident_banner(incidents, active, rollouts);
    }
    let banner = window_banner(active, upcoming);
    let moving: Vec<&super::rollouts::RolloutView> =
        rollouts.iter().filter(|r| r.state != "pending").collect();
    if moving.is_empty() {
        return banner;
    }
    let trouble = moving.iter().any(|r| r.attention);
    let line = match moving.as_slice() {
        [one] => format!("{}: {}.", one.title, one.headline),
        many => format!("{} rollouts in progress.", many.len()),
    };
    if !active.is_empty() {
        // A window runs too: its verdict leads, the rollout follows in the detail.
        let detail = match banner.detail {
            Some(d) => format!("{d} {line}"),
            None => line,
        };
        return Banner {
            detail: Some(detail),
            class: if trouble { "degraded" } else { banner.class },
            ..banner
        };
    }
    Banner {
        class: if trouble { "degraded" } else { "maintenance" },
        headline: if trouble {
            "Rollout in progress: something needs attention".to_owned()
        } else {
            "Rollout in progress".to_owned()
        },
        detail: Some(line),
    }
}

/// What is broken leads: the worst incident's impact colours the banner (red for major or
/// critical, amber otherwise); the detail is the newest update, then what else is going on.
fn incident_banner(
    incidents: &[(crate::domain::Incident, super::incidents::IncidentView)],
    active: &[WindowView],
    rollouts: &[super::rollouts::RolloutView],
) -> Banner {
    let list: Vec<crate::domain::Incident> = incidents.iter().map(|(i, _)| i.clone()).collect();
    let class = super::incidents::banner_class(&list);
    let (first, view) = &incidents[0];
    let headline = match incidents.len() {
        1 => first.title.clone(),
        n => format!("{n} incidents: {}", first.title),
    };
    let mut detail = match &view.latest_text {
        Some(text) => format!("{}: {}", view.status_label, text),
        None => format!("{}.", view.status_label),
    };
    if !active.is_empty() {
        detail.push_str(" Maintenance is in progress too.");
    }
    if rollouts.iter().any(|r| r.state != "pending") {
        detail.push_str(" A rollout is in progress.");
    }
    Banner {
        class,
        headline,
        detail: Some(detail),
    }
}

fn window_banner(active: &[WindowView], upcoming: &[WindowView]) -> Banner {
    let upcoming_text = match upcoming.len() {
        0 => None,
        1 => Some("1 maintenance is planned.".to_owned()),
        n => Some(format!("{n} maintenances are planned.")),
    };
    match active {
        [] => Banner {
            class: "operational",
            headline: "All systems operational".to_owned(),
            detail: upcoming_text,
        },
        _ if active.iter().any(|w| w.has_failed_step) => Banner {
            class: "degraded",
            headline: "Maintenance in progress: a step has failed".to_owned(),
            detail: Some("The team is on it; see the checklist below.".to_owned()),
        },
        [one] => Banner {
            class: "maintenance",
            headline: "Maintenance in progress".to_owned(),
            detail: Some(match &one.current {
                Some(step) => format!(
                    "{}, step {} of {}: {}.",
                    one.title,
                    step.position,
                    one.steps_total,
                    step.title.trim_end_matches('.')
                ),
                None => format!("{}: {}.", one.title, one.progress.to_lowercase()),
            }),
        },
        many => Banner {
            class: "maintenance",
            headline: format!("{} maintenances in progress", many.len()),
            detail: upcoming_text,
        },
    }
}

#[derive(Template)]
#[template(path = "public/index.html")]
struct IndexPage {
    site: Site,
    banner: Banner,
    incidents: Vec<super::incidents::IncidentView>,
    groups: Vec<ComponentGroup>,
    active: Vec<WindowView>,
    rollouts: Vec<super::rollouts::RolloutView>,
    upcoming: Vec<WindowView>,
    recent: Vec<SummaryView>,
    rendered: TimeView,
}

#[derive(Template)]
#[template(path = "public/maintenance.html")]
struct MaintenancePage {
    site: Site,
    w: WindowView,
    rollouts: Vec<super::rollouts::RolloutView>,
    nav: super::view::TimelineNav,
    incidents: Vec<super::incidents::IncidentLink>,
}

/// `?updates=N`: a page of a timeline.
#[derive(Debug, Deserialize)]
pub struct TimelineQuery {
    pub updates: Option<u32>,
}

impl TimelineQuery {
    /// The page asked for, from 1 (absent: the first); page 0 does not exist.
    pub fn page(&self) -> Result<usize, AppError> {
        match self.updates {
            Some(0) => Err(AppError::NotFound),
            page => Ok(page.unwrap_or(1) as usize),
        }
    }
}

#[derive(Template)]
#[template(path = "public/history.html")]
struct HistoryPage {
    site: Site,
    incidents: Vec<super::incidents::IncidentView>,
    incident_total: i64,
    items: Vec<SummaryView>,
    page: i64,
    pages: i64,
    total: i64,
    newer: Option<String>,
    older: Option<String>,
}

pub fn html(body: String) -> CachedPage {
    CachedPage::new(
        Bytes::from(body),
        "text/html; charset=utf-8",
        CachePolicy::Revalidate,
        PAGE_BROTLI_QUALITY,
    )
}

/// How many updates each active window shows on the front page.
const LATEST_UPDATES: i64 = 3;
/// How many finished windows the front page lists.
const RECENT: i64 = 5;
pub const HISTORY_PAGE_SIZE: i64 = 20;

async fn render_index(state: &AppState) -> Result<CachedPage, AppError> {
    let service = &state.service;
    let now = service.now();
    let open = service.store().open_public_maintenances().await?;
    let components = service.components().await?;
    let open_incidents = service.open_incidents().await?;
    let mut incidents = Vec::new();
    for i in &open_incidents {
        let updates = service.incident_updates(i.id, Some(LATEST_UPDATES)).await?;
        incidents.push((
            i.clone(),
            super::incidents::incident_view(i, &updates, &components, now),
        ));
    }
    // The worst first: that one leads the banner.
    incidents.sort_by_key(|(i, _)| std::cmp::Reverse(i.impact));
    let mut active = Vec::new();
    let mut upcoming = Vec::new();
    for m in &open {
        if m.state == WindowState::InProgress {
            let updates = service
                .store()
                .list_updates(m.id, Some(LATEST_UPDATES))
                .await?;
            active.push(window_view(m, &updates, now));
        } else {
            upcoming.push(window_view(m, &[], now));
        }
    }
    let strip_from = now
        .checked_sub(jiff::SignedDuration::from_hours(24 * i64::from(STRIP_DAYS)))
        .unwrap_or(now);
    let past_incidents = service
        .store()
        .public_incidents_between(strip_from, now)
        .await?;
    let past_windows = service
        .store()
        .public_windows_between(strip_from, now)
        .await?;
    let mut groups: Vec<ComponentGroup> = Vec::new();
    for c in &components {
        let status = ComponentStatus::shown(c, &open, &open_incidents);
        let days = day_views(&crate::domain::history_strip(
            c,
            &past_incidents,
            &past_windows,
            STRIP_DAYS,
            now,
        ));
        let view = ComponentView {
            name: c.name.clone(),
            description: c.description.clone(),
            status: status.as_str(),
            status_label: status.label(),
            eventful: days.iter().filter(|d| d.eventful).count(),
            days,
            note: c.manual.as_ref().map(|m| m.note.clone()),
        };
        match groups.iter_mut().find(|g| g.name == c.group_name) {
            Some(g) => g.components.push(view),
            None => groups.push(ComponentGroup {
                name: c.group_name.clone(),
                components: vec![view],
            }),
        }
    }
    let rollouts: Vec<super::rollouts::RolloutView> = service
        .active_rollouts()
        .await?
        .iter()
        .map(|r| super::rollouts::rollout_view(r, &[], None, now))
        .collect();
    // Finished windows and rollouts together, newest first.
    let mut recent: Vec<(Option<Timestamp>, SummaryView)> = service
        .store()
        .finished_maintenances(0, RECENT)
        .await?
        .items
        .iter()
        .map(|m| (m.finished_at, summary_view(m)))
        .collect();
    recent.extend(
        service
            .finished_rollouts(0, RECENT)
            .await?
            .items
            .iter()
            .map(|r| (r.finished_at, super::rollouts::rollout_summary_view(r))),
    );
    recent.sort_by_key(|r| std::cmp::Reverse(r.0));
    let recent = recent
        .into_iter()
        .take(RECENT as usize)
        .map(|(_, v)| v)
        .collect();
    let mut banner = banner(&incidents, &active, &upcoming, &rollouts);
    // Without an incident, a component's status set by hand says what is wrong.
    let manual = components
        .iter()
        .filter_map(|c| c.manual.as_ref().map(|m| (c, m)))
        .filter(|(_, m)| m.status.is_incident_status())
        .max_by_key(|(_, m)| m.status);
    if let (true, Some((c, m))) = (incidents.is_empty(), manual) {
        banner = Banner {
            class: if m.status == ComponentStatus::MajorOutage {
                "outage"
            } else {
                "degraded"
            },
            headline: format!("{}: {}", c.name, m.status.label().to_lowercase()),
            detail: Some(match banner.detail {
                Some(d) if banner.class != "operational" => format!("{} {d}", m.note),
                _ => m.note.clone(),
            }),
        };
    }
    let summary = match &banner.detail {
        Some(d) => format!("{}. {d}", banner.headline),
        None => format!("{}. {}", banner.headline, state.site.description),
    };
    let page = IndexPage {
        site: state.site.page(&state.site.name, &summary, "/"),
        banner,
        incidents: incidents.into_iter().map(|(_, v)| v).collect(),
        groups,
        active,
        rollouts,
        upcoming,
        recent,
        rendered: time(now),
    };
    Ok(html(page.render()?))
}

/// `GET /`.
pub async fn index(State(state): State<AppState>, request: Request) -> Result<Response, AppError> {
    let page = state
        .pages
        .get_or_render("/", state.service.freshness(), || render_index(&state))
        .await?;
    Ok(page.respond(request.headers()))
}

async fn render_maintenance(
    state: &AppState,
    id: i64,
    timeline: usize,
) -> Result<CachedPage, AppError> {
    let service = &state.service;
    let m = service.maintenance(id).await?;
    if !m.is_public() {
        return Err(AppError::NotFound);
    }
    let updates = service.store().list_updates(id, None).await?;
    let now = service.now();
    let rollouts = service
        .window_rollouts(id)
        .await?
        .iter()
        .map(|r| super::rollouts::rollout_view(r, &[], None, now))
        .collect();
    let mut w = window_view(&m, &updates, now);
    let nav = super::view::timeline_page(&mut w.updates, timeline, &format!("/maintenance/{id}"))
        .ok_or(AppError::NotFound)?;
    let about = if m.description.trim().is_empty() {
        format!("{}: {}.", w.state_label, w.progress)
    } else {
        format!("{}: {}", w.state_label, plain_text(&m.description))
    };
    let page = MaintenancePage {
        site: state.site.page(
            &format!("{} · {}", m.title, state.site.name),
            &about,
            &w.url,
        ),
        w,
        rollouts,
        nav,
        incidents: super::incidents::linked(state, crate::domain::Subject::Window(id)).await?,
    };
    Ok(html(page.render()?))
}

/// `GET /maintenance/{id}`.
pub async fn maintenance(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(query): Query<TimelineQuery>,
    request: Request,
) -> Result<Response, AppError> {
    let timeline = query.page()?;
    let key = super::view::timeline_url(&format!("/maintenance/{id}"), timeline);
    let page = state
        .pages
        .get_or_render(&key, state.service.freshness(), || {
            render_maintenance(&state, id, timeline)
        })
        .await?;
    Ok(page.respond(request.headers()))
}

#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    page: Option<u32>,
}

async fn render_history(state: &AppState, page: i64) -> Result<CachedPage, AppError> {
    let result = state
        .service
        .store()
        .finished_maintenances((page - 1) * HISTORY_PAGE_SIZE, HISTORY_PAGE_SIZE)
        .await?;
    let incidents = state
        .service
        .incidents(
            crate::store::IncidentFilter::Resolved,
            (page - 1) * HISTORY_PAGE_SIZE,
            HISTORY_PAGE_SIZE,
        )
        .await?;
    let components = state.service.components().await?;
    let now = state.service.now();
    // Page N holds the Nth page of each: past incidents, then past maintenance.
    let pages =
        ((result.total.max(incidents.total) + HISTORY_PAGE_SIZE - 1) / HISTORY_PAGE_SIZE).max(1);
    if page > pages {
        return Err(AppError::NotFound);
    }
    let view = HistoryPage {
        site: state.site.clone(),
        incidents: incidents
            .items
            .iter()
            .map(|i| super::incidents::incident_view(i, &[], &components, now))
            .collect(),
        incident_total: incidents.total,
        items: result.items.iter().map(summary_view).collect(),
        page,
        pages,
        total: result.total,
        newer: (page > 1).then(|| history_url(page - 1)),
        older: (page < pages).then(|| history_url(page + 1)),
    };
    Ok(html(view.render()?))
}

/// The address of history page `page`, as the pages link to it and the page cache keys it:
/// page 1 is plain `/history`.
fn history_url(page: i64) -> String {
    match page {
        1 => "/history".to_owned(),
        page => format!("/history?page={page}"),
    }
}

/// `GET /history?page=N`.
pub async fn history(
    State(state): State<AppState>,
    Query(query): Query<HistoryQuery>,
    request: Request,
) -> Result<Response, AppError> {
    let page = i64::from(query.page.unwrap_or(1));
    if page < 1 {
        return Err(AppError::BadRequest("page numbers start at 1".to_owned()));
    }
    let key = history_url(page);
    let page = state
        .pages
        .get_or_render(&key, state.service.freshness(), || {
            render_history(&state, page)
        })
        .await?;
    Ok(page.respond(request.headers()))
}
