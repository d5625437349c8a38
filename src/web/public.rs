//! The public pages: `/`, `/maintenance/{id}` and `/history`. Each is rendered into the page
//! cache from view structs that hold display-ready values, so templates stay free of logic.

use askama::Template;
use axum::extract::Request;
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use jiff::Timestamp;
use serde::Deserialize;

use super::AppState;
use super::assets::ASSETS;
use super::cache::{CachePolicy, CachedPage};
use super::error::{AppError, Path, Query};
use crate::domain::{
    ComponentStatus, Maintenance, Step, StepState, Update, WindowState, format_utc,
};
use crate::store::MaintenanceSummary;

/// What every page's frame needs, and what a link to the page unfurls into.
#[derive(Debug, Clone)]
pub struct Site {
    pub name: String,
    pub css: &'static str,
    pub js: &'static str,
    pub icon: &'static str,
    /// The site's own sentence (HERALD_SITE_DESCRIPTION).
    pub description: String,
    /// Base of absolute links (HERALD_PUBLIC_URL), for `og:url`.
    pub public_url: String,
    /// This page's title, description and path, when it has its own.
    pub page: Option<PageMeta>,
    pub follow: Follow,
}

/// Where people can follow along besides the page: the Subscribe section.
#[derive(Debug, Clone, Default)]
pub struct Follow {
    pub feed: String,
    pub calendar: String,
    /// The calendar as a `webcal://` subscription (calendar apps open these).
    pub webcal: String,
    pub discord: Option<String>,
    pub bluesky: Option<String>,
    pub badge_html: String,
    pub badge_markdown: String,
}

impl Follow {
    fn new(public_url: &str, site: &str, discord: Option<String>, bluesky: Option<String>) -> Self {
        let base = public_url.trim_end_matches('/');
        let host = base
            .strip_prefix("https://")
            .or_else(|| base.strip_prefix("http://"))
            .unwrap_or(base);
        Self {
            feed: "/feed.atom".to_owned(),
            calendar: "/calendar.ics".to_owned(),
            webcal: format!("webcal://{host}/calendar.ics"),
            discord,
            bluesky,
            badge_html: format!(
                "<a href=\"{base}/\"><img src=\"{base}/badge.svg\" alt=\"Status of {site}\" height=\"20\"></a>"
            ),
            badge_markdown: format!("[![Status of {site}]({base}/badge.svg)]({base}/)"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PageMeta {
    pub title: String,
    pub description: String,
    pub path: String,
}

impl Site {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            css: ASSETS.url("style.css"),
            js: ASSETS.url("time.js"),
            icon: ASSETS.url("icon.svg"),
            description: format!("Maintenance and deployment status of {name}."),
            public_url: String::new(),
            page: None,
            follow: Follow::new("", name, None, None),
        }
    }

    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        let site = Self::new(&settings.site_name);
        Self {
            description: settings
                .site_description
                .clone()
                .unwrap_or(site.description.clone()),
            public_url: settings.public_url.clone(),
            follow: Follow::new(
                &settings.public_url,
                &settings.site_name,
                settings.discord_invite.clone(),
                settings.bluesky_profile.clone(),
            ),
            ..site
        }
    }

    /// This site, on a page that says what it is about: the description is cut to what
    /// previews show (about 200 characters) as plain text.
    pub fn page(&self, title: &str, description: &str, path: &str) -> Self {
        let plain = description.split_whitespace().collect::<Vec<_>>().join(" ");
        let description = if plain.chars().count() > 200 {
            let mut cut: String = plain.chars().take(199).collect();
            cut.push('…');
            cut
        } else {
            plain
        };
        Self {
            page: Some(PageMeta {
                title: title.to_owned(),
                description,
                path: path.to_owned(),
            }),
            ..self.clone()
        }
    }

    pub fn meta_title(&self) -> &str {
        self.page.as_ref().map_or(&self.name, |p| &p.title)
    }

    pub fn meta_description(&self) -> &str {
        match &self.page {
            Some(p) if !p.description.is_empty() => &p.description,
            _ => &self.description,
        }
    }

    pub fn meta_url(&self) -> String {
        let path = self.page.as_ref().map_or("/", |p| p.path.as_str());
        format!("{}{path}", self.public_url)
    }
}

/// A point in time: machine-readable UTC for `<time datetime>`, readable UTC as its text (the
/// script rewrites it into the reader's zone).
#[derive(Debug, Clone)]
pub struct TimeView {
    pub iso: String,
    pub text: String,
}

impl TimeView {
    /// `<time>` showing date and time.
    pub fn full(&self) -> String {
        format!(
            "<time datetime=\"{}\" data-style=\"full\">{}</time>",
            self.iso, self.text
        )
    }

    /// `<time>` showing the time of day with its zone (for a time on a date already shown).
    pub fn clock_zone(&self) -> String {
        let clock = self.iso.get(11..16).unwrap_or_default();
        format!(
            "<time datetime=\"{}\" data-style=\"clockzone\" title=\"{}\">{clock} UTC</time>",
            self.iso, self.text
        )
    }

    /// `<time>` showing only the time of day (the date is in the title).
    pub fn clock(&self) -> String {
        let clock = self.iso.get(11..16).unwrap_or_default();
        format!(
            "<time datetime=\"{}\" data-style=\"clock\" title=\"{}\">{clock} UTC</time>",
            self.iso, self.text
        )
    }
}

pub fn time(t: Timestamp) -> TimeView {
    TimeView {
        iso: t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        text: format_utc(t),
    }
}

pub use crate::domain::human_duration;

/// Markdown as plain text (for descriptions in meta tags): the text of its paragraphs.
pub fn plain_text(source: &str) -> String {
    use pulldown_cmark::{Event, Parser};
    let mut out = String::new();
    for event in Parser::new(source) {
        match event {
            Event::Text(t) | Event::Code(t) => out.push_str(&t),
            Event::SoftBreak | Event::HardBreak | Event::End(_) => out.push(' '),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Markdown → sanitised HTML: raw HTML and script links in the source are stripped.
pub fn markdown(source: &str) -> String {
    let parser = pulldown_cmark::Parser::new_ext(
        source,
        pulldown_cmark::Options::ENABLE_STRIKETHROUGH | pulldown_cmark::Options::ENABLE_TABLES,
    );
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, parser);
    ammonia::Builder::default()
        .link_rel(Some("noopener noreferrer nofollow"))
        .clean(&html)
        .to_string()
}

#[derive(Debug, Clone)]
pub struct StepView {
    pub position: i64,
    pub title: String,
    pub description: Option<String>,
    pub state: &'static str,
    pub state_label: &'static str,
    pub mark: &'static str,
    pub started: Option<TimeView>,
    pub finished: Option<TimeView>,
    pub duration: Option<String>,
    pub note: Option<String>,
    pub attempts: i64,
    pub current: bool,
}

fn step_view(step: &Step, current: Option<i64>) -> StepView {
    StepView {
        position: step.position,
        title: step.title.clone(),
        description: step.description.clone(),
        state: step.state.as_str(),
        state_label: step.state.label(),
        mark: match step.state {
            StepState::Pending => "○",
            StepState::InProgress => "▶",
            StepState::Done => "✓",
            StepState::Failed => "✗",
            StepState::Skipped => "↷",
        },
        started: step.started_at.map(time),
        finished: step.finished_at.map(time),
        duration: step.duration().map(human_duration),
        note: step.note.clone(),
        attempts: step.attempts,
        current: current == Some(step.position),
    }
}

#[derive(Debug, Clone)]
pub struct UpdateView {
    pub kind: &'static str,
    pub label: &'static str,
    pub body: String,
    pub note: Option<String>,
    pub at: TimeView,
}

fn update_view(u: &Update) -> UpdateView {
    UpdateView {
        kind: u.kind.as_str(),
        label: u.kind.label(),
        body: u.body.clone(),
        note: u.note.clone(),
        at: time(u.created_at),
    }
}

#[derive(Debug, Clone)]
pub struct WindowView {
    pub id: i64,
    pub url: String,
    pub title: String,
    pub state: &'static str,
    pub state_label: &'static str,
    pub impact: &'static str,
    pub impact_label: &'static str,
    pub components: Vec<String>,
    pub hint: Option<String>,
    pub tentative: bool,
    pub starts_at: Option<TimeView>,
    pub ends_at: Option<TimeView>,
    /// The expected end falls on the start's (UTC) day: show only its time.
    pub ends_same_day: bool,
    /// "in 2 d 4 h" for windows that have not started.
    pub starts_in: Option<String>,
    pub started_at: Option<TimeView>,
    pub finished_at: Option<TimeView>,
    pub steps: Vec<StepView>,
    pub steps_total: usize,
    pub steps_done: usize,
    pub steps_settled: usize,
    pub progress: String,
    pub current: Option<StepView>,
    pub elapsed: Option<String>,
    pub overrun: Option<String>,
    pub took: Option<String>,
    pub has_failed_step: bool,
    pub description_html: String,
    pub updates: Vec<UpdateView>,
}

pub fn window_view(m: &Maintenance, updates: &[Update], now: Timestamp) -> WindowView {
    let current = m.current_step().map(|s| s.position);
    let steps: Vec<StepView> = m.steps.iter().map(|s| step_view(s, current)).collect();
    let total = m.steps.len();
    let done = m.steps_done();
    let progress = match total {
        0 => "No steps planned".to_owned(),
        n if done == n => format!("All {n} steps done"),
        n => format!("{done} of {n} done"),
    };
    WindowView {
        id: m.id,
        url: format!("/maintenance/{}", m.id),
        title: m.title.clone(),
        state: if m.is_overrunning(now) {
            "overrunning"
        } else {
            m.state.as_str()
        },
        state_label: if m.is_overrunning(now) {
            "In progress, overrunning"
        } else {
            m.state.label()
        },
        impact: m.impact.as_str(),
        impact_label: m.impact.label(),
        components: m.components.iter().map(|c| c.name.clone()).collect(),
        hint: m.schedule_hint.clone(),
        tentative: m.starts_at.is_none(),
        starts_at: m.starts_at.map(time),
        ends_at: m.ends_at.map(time),
        ends_same_day: match (m.starts_at.or(m.started_at), m.ends_at) {
            (Some(s), Some(e)) => {
                s.to_zoned(jiff::tz::TimeZone::UTC).date()
                    == e.to_zoned(jiff::tz::TimeZone::UTC).date()
            }
            _ => false,
        },
        starts_in: m.starts_at.filter(|_| m.state.is_upcoming()).map(|s| {
            match s.duration_since(now) {
                d if d.is_positive() => format!("in {}", human_duration(d)),
                d => format!("due {} ago", human_duration(-d)),
            }
        }),
        started_at: m.started_at.map(time),
        finished_at: m.finished_at.map(time),
        current: current.and_then(|p| steps.iter().find(|s| s.position == p).cloned()),
        steps,
        steps_total: total,
        steps_done: done,
        steps_settled: m.steps_settled(),
        progress,
        elapsed: (m.state == WindowState::InProgress)
            .then_some(m.started_at)
            .flatten()
            .map(|s| human_duration(now.duration_since(s))),
        overrun: m
            .is_overrunning(now)
            .then_some(m.ends_at)
            .flatten()
            .map(|end| human_duration(now.duration_since(end))),
        took: match (m.started_at, m.finished_at) {
            (Some(s), Some(f)) => Some(human_duration(f.duration_since(s))),
            _ => None,
        },
        has_failed_step: m.steps.iter().any(|s| s.state == StepState::Failed),
        description_html: markdown(&m.description),
        // A reminder is an announcement, not something that happened to the window.
        updates: updates
            .iter()
            .filter(|u| u.kind != crate::domain::UpdateKind::Reminder)
            .map(update_view)
            .collect(),
    }
}

#[derive(Debug, Clone)]
pub struct SummaryView {
    pub url: String,
    pub title: String,
    pub state: &'static str,
    pub state_label: &'static str,
    pub when: Option<TimeView>,
    pub took: Option<String>,
    pub steps: String,
}

fn summary_view(s: &MaintenanceSummary) -> SummaryView {
    SummaryView {
        url: format!("/maintenance/{}", s.id),
        title: s.title.clone(),
        state: s.state.as_str(),
        state_label: s.state.label(),
        when: s.started_at.or(s.starts_at).or(s.finished_at).map(time),
        took: match (s.started_at, s.finished_at) {
            (Some(a), Some(b)) => Some(human_duration(b.duration_since(a))),
            _ => None,
        },
        steps: match s.steps_total {
            0 => String::new(),
            n => format!("{} of {n} steps done", s.steps_done),
        },
    }
}

#[derive(Debug, Clone)]
pub struct ComponentView {
    pub name: String,
    pub description: Option<String>,
    pub status: &'static str,
    pub status_label: &'static str,
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
    active: &[WindowView],
    upcoming: &[WindowView],
    rollouts: &[super::rollouts::RolloutView],
) -> Banner {
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
}

#[derive(Template)]
#[template(path = "public/history.html")]
struct HistoryPage {
    site: Site,
    items: Vec<SummaryView>,
    page: i64,
    pages: i64,
    total: i64,
    newer: Option<String>,
    older: Option<String>,
}

/// Brotli quality for everything Herald compresses (pages, assets, the API reference), measured
/// on the 8.7 KB demo page: 5 compresses in 0.5 ms with 1.7 MB of encoder memory to 2.0 KB; 9
/// takes 8 ms and 9 MB for the same size; 11 takes 20 ms for 1.75 KB, and its large transient
/// buffers raised Herald's peak RSS from 17 to 86 MB at start. Renders happen under load.
pub const PAGE_BROTLI_QUALITY: u32 = 5;

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
    let mut groups: Vec<ComponentGroup> = Vec::new();
    for c in &components {
        let status = ComponentStatus::of(c.id, &open);
        let view = ComponentView {
            name: c.name.clone(),
            description: c.description.clone(),
            status: status.as_str(),
            status_label: status.label(),
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
    let banner = banner(&active, &upcoming, &rollouts);
    let summary = match &banner.detail {
        Some(d) => format!("{}. {d}", banner.headline),
        None => format!("{}. {}", banner.headline, state.site.description),
    };
    let page = IndexPage {
        site: state.site.page(&state.site.name, &summary, "/"),
        banner,
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

async fn render_maintenance(state: &AppState, id: i64) -> Result<CachedPage, AppError> {
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
    let w = window_view(&m, &updates, now);
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
    };
    Ok(html(page.render()?))
}

/// `GET /maintenance/{id}`.
pub async fn maintenance(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    request: Request,
) -> Result<Response, AppError> {
    let key = format!("/maintenance/{id}");
    let page = state
        .pages
        .get_or_render(&key, state.service.freshness(), || {
            render_maintenance(&state, id)
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
    let pages = ((result.total + HISTORY_PAGE_SIZE - 1) / HISTORY_PAGE_SIZE).max(1);
    if page > pages {
        return Err(AppError::NotFound);
    }
    let view = HistoryPage {
        site: state.site.clone(),
        items: result.items.iter().map(summary_view).collect(),
        page,
        pages,
        total: result.total,
        newer: (page > 1).then(|| match page - 1 {
            1 => "/history".to_owned(),
            p => format!("/history?page={p}"),
        }),
        older: (page < pages).then(|| format!("/history?page={}", page + 1)),
    };
    Ok(html(view.render()?))
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
    let key = format!("/history?page={page}");
    let page = state
        .pages
        .get_or_render(&key, state.service.freshness(), || {
            render_history(&state, page)
        })
        .await?;
    Ok(page.respond(request.headers()))
}

#[cfg(test)]
mod tests {
    use jiff::SignedDuration;

    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(SignedDuration::from_secs(40)), "40 s");
        assert_eq!(human_duration(SignedDuration::from_secs(180)), "3 min");
        assert_eq!(human_duration(SignedDuration::from_secs(3600)), "1 h");
        assert_eq!(
            human_duration(SignedDuration::from_secs(4320)),
            "1 h 12 min"
        );
        assert_eq!(
            human_duration(SignedDuration::from_secs(2 * 86400 + 4 * 3600)),
            "2 d 4 h"
        );
    }

    #[test]
    fn markdown_is_sanitised() {
        let html = markdown("**bold** <script>alert(1)</script> [x](javascript:alert(1))");
        assert!(html.contains("<strong>bold</strong>"));
        assert!(!html.contains("<script"));
        assert!(!html.contains("javascript:"));
    }
}
