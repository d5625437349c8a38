//! Following Herald in the tools people already use: the Atom feed (RFC 4287), the iCalendar
//! feed (RFC 5545) and the status badge, for the whole site and per component
//! (`/components/{slug}/feed.atom`, `/components/{slug}/calendar.ics`,
//! `/components/{slug}/badge.svg`). All are public, cached like pages (rendered once per
//! change, ETag, compressed).
//!
//! Atom: one entry per public window and rollout (the 50 changed last), its `updated` the time
//! of its latest update, linking to its page. A component's feed has the windows affecting it
//! and the rollouts tied to those windows.
//!
//! iCalendar: one VEVENT per public window with a date (tentative ones have none and are left
//! out), UID `maintenance-{id}@{host}` for good, times in UTC, STATUS CONFIRMED or CANCELLED,
//! SEQUENCE raised on each reschedule and on cancelling (the changes RFC 5546 calls
//! significant), the window's URL and its description in plain text.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use jiff::Timestamp;

use super::AppState;
use super::cache::{CachePolicy, CachedPage};
use super::error::{AppError, Path};
use super::view::{markdown, plain_text};
use crate::domain::{Component, ComponentStatus, Maintenance, Rollout, WindowState};

/// How many windows (and rollouts) a feed or calendar holds.
const FEED_SIZE: i64 = 50;
const FEED_BROTLI_QUALITY: u32 = 5;

fn chrono_time(t: Timestamp) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(t.as_second(), 0).unwrap_or_default()
}

/// What a feed is about: the whole site or one component.
struct Scope {
    component: Option<Component>,
}

impl Scope {
    async fn of(state: &AppState, slug: Option<&str>) -> Result<Self, AppError> {
        let component = match slug {
            None => None,
            Some(slug) => Some(
                state
                    .service
                    .components()
                    .await?
                    .into_iter()
                    .find(|c| c.slug == slug)
                    .ok_or(AppError::NotFound)?,
            ),
        };
        Ok(Self { component })
    }

    fn includes(&self, m: &Maintenance) -> bool {
        self.component
            .as_ref()
            .is_none_or(|c| m.components.iter().any(|mc| mc.id == c.id))
    }

    fn path(&self, file: &str) -> String {
        match &self.component {
            None => format!("/{file}"),
            Some(c) => format!("/components/{}/{file}", c.slug),
        }
    }

    fn title(&self, site: &str) -> String {
        match &self.component {
            None => site.to_owned(),
            Some(c) => format!("{}: {site}", c.name),
        }
    }
}

/// Public windows in scope, changed last first.
async fn windows(state: &AppState, scope: &Scope) -> Result<Vec<Maintenance>, AppError> {
    Ok(state
        .service
        .store()
        .recent_public_maintenances(FEED_SIZE)
        .await?
        .into_iter()
        .filter(|m| scope.includes(m))
        .collect())
}

/// The rollouts under way and the 50 finished last.
pub(crate) async fn recent_rollouts(state: &AppState) -> Result<Vec<Rollout>, AppError> {
    let service = &state.service;
    let mut all = service.active_rollouts().await?;
    for summary in service.finished_rollouts(0, FEED_SIZE).await?.items {
        all.push(service.rollout(summary.id).await?);
    }
    Ok(all)
}

/// Rollouts in scope: every recent one for the site, those tied to the component's windows
/// for a component.
async fn rollouts(
    state: &AppState,
    scope: &Scope,
    windows: &[Maintenance],
) -> Result<Vec<Rollout>, AppError> {
    let mut all = recent_rollouts(state).await?;
    if scope.component.is_some() {
        all.retain(|r| {
            r.maintenance_id
                .is_some_and(|id| windows.iter().any(|w| w.id == id))
        });
    }
    Ok(all)
}

/// The cached answer at `key`, rendered by `render` (a future, so nothing runs unless the
/// cache misses).
async fn cached(
    state: &AppState,
    headers: &HeaderMap,
    key: String,
    content_type: &'static str,
    render: impl Future<Output = Result<String, AppError>>,
) -> Result<Response, AppError> {
    let page = state
        .pages
        .get_or_render(&key, state.service.freshness(), || async move {
            Ok::<_, AppError>(CachedPage::new(
                Bytes::from(render.await?),
                content_type,
                CachePolicy::Revalidate,
                FEED_BROTLI_QUALITY,
            ))
        })
        .await?;
    Ok(page.respond(headers))
}

/// What a feed route answers.
#[derive(Debug, Clone, Copy)]
pub enum Format {
    Atom,
    Calendar,
    Badge,
}

impl Format {
    fn file(self) -> &'static str {
        match self {
            Self::Atom => "feed.atom",
            Self::Calendar => "calendar.ics",
            Self::Badge => "badge.svg",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::Atom => "application/atom+xml; charset=utf-8",
            Self::Calendar => "text/calendar; charset=utf-8",
            Self::Badge => "image/svg+xml; charset=utf-8",
        }
    }
}

/// `GET /feed.atom`, `/calendar.ics`, `/badge.svg`.
pub async fn site(
    State(state): State<AppState>,
    headers: HeaderMap,
    format: Format,
) -> Result<Response, AppError> {
    answer(state, headers, None, format).await
}

/// `GET /components/{slug}/feed.atom`, `…/calendar.ics`, `…/badge.svg`.
pub async fn component(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    format: Format,
) -> Result<Response, AppError> {
    answer(state, headers, Some(slug), format).await
}

async fn answer(
    state: AppState,
    headers: HeaderMap,
    slug: Option<String>,
    format: Format,
) -> Result<Response, AppError> {
    let scope = Scope::of(&state, slug.as_deref()).await?;
    let render = async {
        match format {
            Format::Atom => render_atom(&state, &scope).await,
            Format::Calendar => render_calendar(&state, &scope).await,
            Format::Badge => render_badge(&state, &scope).await,
        }
    };
    cached(
        &state,
        &headers,
        scope.path(format.file()),
        format.content_type(),
        render,
    )
    .await
}

// ----- Atom ----------------------------------------------------------------------------------

/// One feed entry: its page, title, times, a plain summary, HTML content and the components
/// it concerns as categories.
fn feed_entry(
    url: String,
    title: String,
    (updated, published): (Timestamp, Option<Timestamp>),
    summary: String,
    html: String,
    components: &[&Component],
) -> atom_syndication::Entry {
    use atom_syndication::{Category, Content, Entry, Link, Text};
    Entry {
        id: url.clone(),
        title: Text::plain(title),
        updated: chrono_time(updated).fixed_offset(),
        published: published.map(|t| chrono_time(t).fixed_offset()),
        links: vec![Link {
            href: url,
            rel: "alternate".to_owned(),
            mime_type: Some("text/html".to_owned()),
            ..Link::default()
        }],
        summary: Some(Text::plain(summary)),
        content: Some(Content {
            value: Some(html),
            content_type: Some("html".to_owned()),
            ..Content::default()
        }),
        categories: components
            .iter()
            .map(|c| Category {
                term: c.slug.clone(),
                label: Some(c.name.clone()),
                ..Category::default()
            })
            .collect(),
        ..Entry::default()
    }
}

async fn render_atom(state: &AppState, scope: &Scope) -> Result<String, AppError> {
    use atom_syndication::{Entry, Feed, Generator, Link, Person, Text};
    let base = state.settings.public_url.trim_end_matches('/');
    let site = &state.site.name;
    let windows = windows(state, scope).await?;
    let rollouts = rollouts(state, scope, &windows).await?;
    let link = |href: String, rel: &str, mime: Option<&str>| Link {
        href,
        rel: rel.to_owned(),
        mime_type: mime.map(str::to_owned),
        ..Link::default()
    };

    let mut entries: Vec<(Timestamp, Entry)> = Vec::new();
    for m in &windows {
        let latest = state
            .service
            .store()
            .list_updates(m.id, Some(5))
            .await?
            .into_iter()
            .find(|u| u.kind != crate::domain::UpdateKind::Reminder);
        let updated = latest.as_ref().map_or(m.updated_at, |u| u.created_at);
        let url = format!("{base}/maintenance/{}", m.id);
        let view = super::view::window_view(m, &[], state.service.now());
        let mut summary = format!("{}. {}", view.state_label, when_text(m));
        if let Some(u) = &latest {
            summary.push_str(&format!(" Latest: {}", u.body));
            if let Some(note) = &u.note {
                summary.push_str(&format!(" ({note})"));
            }
        }
        let mut html = format!("<p><strong>{}</strong></p>", escape(&summary));
        html.push_str(&markdown(&m.description));
        let components: Vec<&Component> = m.components.iter().collect();
        let entry = feed_entry(
            url,
            format!("{}: {}", m.title, view.state_label),
            (updated, m.announced_at),
            summary,
            html,
            &components,
        );
        entries.push((updated, entry));
    }
    for r in &rollouts {
        let url = format!("{base}/rollouts/{}", r.id);
        let latest = state.service.rollout_updates(r.id, Some(1)).await?;
        let updated = latest.first().map_or(r.updated_at, |u| u.created_at);
        let mut summary = format!("{}. {}.", r.state.label(), r.public_text(&r.summary()));
        if let Some(u) = latest.first() {
            summary.push_str(&format!(" Latest: {}", r.public_text(&u.body)));
        }
        let mut html = format!("<p><strong>{}</strong></p>", escape(&summary));
        html.push_str(&markdown(&r.description));
        let entry = feed_entry(
            url,
            format!("{}: {}", r.title, r.state.label()),
            (updated, Some(r.created_at)),
            summary,
            html,
            &[],
        );
        entries.push((updated, entry));
    }
    // Incidents: the 20 most recent public ones (on a component's feed, those affecting it),
    // each entry updated with its newest update.
    let all_components = state.service.components().await?;
    let incidents = state
        .service
        .incidents(crate::store::IncidentFilter::Public, 0, 20)
        .await?
        .items;
    for i in incidents.iter().filter(|i| {
        scope
            .component
            .as_ref()
            .is_none_or(|c| i.components.iter().any(|(id, _)| *id == c.id))
    }) {
        let url = format!("{base}/incidents/{}", i.id);
        let latest = state.service.incident_updates(i.id, Some(5)).await?;
        let latest = latest.iter().find(|u| u.announced);
        let updated = latest.map_or(i.updated_at, |u| u.created_at.max(i.updated_at));
        let status = latest.map_or(i.status.label(), |u| u.kind.label(u.status));
        let affected = crate::notify::render::incident_components(i, &all_components);
        let mut summary = format!("{status}. {}.", i.impact.label());
        if !affected.is_empty() {
            summary.push_str(&format!(" Affects {affected}."));
        }
        let mut html = format!("<p><strong>{}</strong></p>", escape(&summary));
        if let Some(u) = latest {
            html.push_str(&markdown(&u.body));
        }
        if let Some(pm) = &i.postmortem {
            html.push_str("<h2>Postmortem</h2>");
            html.push_str(&markdown(pm));
        }
        let components: Vec<&Component> = i
            .components
            .iter()
            .filter_map(|(id, _)| all_components.iter().find(|c| c.id == *id))
            .collect();
        let entry = feed_entry(
            url,
            format!("Incident: {}: {status}", i.title),
            (updated, i.published_at),
            summary,
            html,
            &components,
        );
        entries.push((updated, entry));
    }
    entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    let updated = entries
        .first()
        .map_or_else(|| state.service.now(), |(t, _)| *t);
    let self_url = format!("{base}{}", scope.path("feed.atom"));
    let home = format!("{base}/");
    let feed = Feed {
        id: self_url.clone(),
        title: Text::plain(scope.title(site)),
        subtitle: Some(Text::plain(match &scope.component {
            None => format!("Maintenance and rollouts of {site}"),
            Some(c) => format!("Maintenance affecting {}", c.name),
        })),
        updated: chrono_time(updated).fixed_offset(),
        authors: vec![Person {
            name: site.clone(),
            uri: Some(home.clone()),
            ..Person::default()
        }],
        links: vec![
            link(self_url, "self", Some("application/atom+xml")),
            link(home, "alternate", Some("text/html")),
        ],
        generator: Some(Generator {
            value: "Herald".to_owned(),
            ..Generator::default()
        }),
        entries: entries.into_iter().map(|(_, e)| e).collect(),
        ..Feed::default()
    };
    Ok(feed.to_string())
}

/// The schedule in words, UTC.
fn when_text(m: &Maintenance) -> String {
    use crate::domain::format_utc;
    match (m.starts_at.or(m.started_at), m.ends_at) {
        (Some(s), Some(e)) => format!("{} to {}.", format_utc(s), format_utc(e)),
        (Some(s), None) => format!("From {}.", format_utc(s)),
        (None, _) => match &m.schedule_hint {
            Some(h) => format!("No date yet: {h}."),
            None => "No date yet.".to_owned(),
        },
    }
}

use crate::notify::render::escape_html as escape;

// ----- iCalendar -----------------------------------------------------------------------------

/// The host part of the public URL, for UIDs.
fn host(public_url: &str) -> &str {
    let rest = public_url
        .split_once("://")
        .map_or(public_url, |(_, rest)| rest);
    rest.split(['/', '?', '#']).next().unwrap_or(rest)
}

/// A SUMMARY on one line whatever an older row holds (titles are one line since they are
/// validated so; a lone CR would end the property early in some readers).
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The SEQUENCE of a window's event: reschedules, and one more once cancelled.
pub fn calendar_sequence(m: &Maintenance) -> u32 {
    let cancelled = u32::from(m.state == WindowState::Cancelled);
    u32::try_from(m.sequence)
        .unwrap_or(u32::MAX)
        .saturating_add(cancelled)
}

async fn render_calendar(state: &AppState, scope: &Scope) -> Result<String, AppError> {
    use icalendar::{Calendar, Component as _, Event, EventLike, EventStatus};
    let base = state.settings.public_url.trim_end_matches('/');
    let host = host(base);
    let mut cal = Calendar::empty();
    cal.append_property(("VERSION", "2.0"))
        .append_property(("PRODID", "-//Herald//Maintenance calendar//EN"))
        .append_property(("CALSCALE", "GREGORIAN"))
        .append_property(("METHOD", "PUBLISH"))
        .name(&scope.title(&state.site.name))
        .description(&match &scope.component {
            None => format!("Planned maintenance of {}", state.site.name),
            Some(c) => format!("Planned maintenance affecting {}", c.name),
        })
        .append_property(("REFRESH-INTERVAL;VALUE=DURATION", "PT1H"))
        .append_property(("X-PUBLISHED-TTL", "PT1H"));
    for m in windows(state, scope).await? {
        // A window without a date has no place in a calendar until it gets one (or starts).
        let Some(start) = m.starts_at.or(m.started_at) else {
            continue;
        };
        let url = format!("{base}/maintenance/{}", m.id);
        let mut description = String::new();
        let text = plain_text(&m.description);
        if !text.trim().is_empty() {
            description.push_str(text.trim());
            description.push_str("\n\n");
        }
        if !m.components.is_empty() {
            description.push_str("Affects: ");
            description.push_str(
                &m.components
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            description.push('\n');
        }
        description.push_str(&format!("Follow along: {url}"));
        let mut event = Event::new();
        event
            .uid(&format!("maintenance-{}@{host}", m.id))
            .summary(&one_line(&format!("Maintenance: {}", m.title)))
            .description(&description.replace("\r\n", "\n").replace('\r', "\n"))
            .url(&url)
            .starts(chrono_time(start))
            .sequence(calendar_sequence(&m))
            .timestamp(chrono_time(m.updated_at))
            .last_modified(chrono_time(m.updated_at))
            .created(chrono_time(m.created_at))
            .status(if m.state == WindowState::Cancelled {
                EventStatus::Cancelled
            } else {
                EventStatus::Confirmed
            });
        // The planned end, or the actual one once finished without a planned end.
        if let Some(end) = m.ends_at.or(m.finished_at).filter(|e| *e > start) {
            event.ends(chrono_time(end));
        }
        if !m.components.is_empty() {
            event.categories(m.components.iter().map(|c| c.name.as_str()));
        }
        cal.push(event.done());
    }
    Ok(cal.done().to_string())
}

// ----- badge ---------------------------------------------------------------------------------

async fn render_badge(state: &AppState, scope: &Scope) -> Result<String, AppError> {
    let open = state.service.store().open_public_maintenances().await?;
    let incidents = state.service.open_incidents().await?;
    let status = match &scope.component {
        Some(c) => ComponentStatus::shown(c, &open, &incidents),
        None => state
            .service
            .components()
            .await?
            .iter()
            .map(|c| ComponentStatus::shown(c, &open, &incidents))
            .max()
            .unwrap_or(ComponentStatus::Operational),
    };
    let label = match &scope.component {
        Some(c) => c.name.clone(),
        None => "status".to_owned(),
    };
    let (value, colour) = match status {
        ComponentStatus::Operational => ("operational", "#2e7d32"),
        ComponentStatus::UnderMaintenance => ("under maintenance", "#0b62a4"),
        ComponentStatus::Degraded => ("degraded", "#a15c00"),
        ComponentStatus::PartialOutage => ("partial outage", "#b34700"),
        ComponentStatus::MajorOutage => ("major outage", "#b00020"),
    };
    Ok(badge_svg(&label, value, colour))
}

/// Width of `text` in Verdana 11 px, as shields.io's flat badges measure it (close enough:
/// per-character classes rather than the full table).
fn text_width(text: &str) -> u32 {
    text.chars()
        .map(|c| match c {
            'i' | 'l' | 'j' | '.' | ',' | ':' | ';' | '\'' | '|' | '!' => 3.6,
            'f' | 't' | 'r' | ' ' | '(' | ')' | '-' | 'I' => 4.6,
            'm' | 'w' | 'M' | 'W' => 10.0,
            c if c.is_ascii_uppercase() => 7.6,
            c if c.is_ascii_digit() => 7.0,
            _ => 6.6,
        })
        .sum::<f64>()
        .ceil() as u32
}

/// A flat badge: grey label, coloured value, white text with a faint shadow; `<title>` and
/// `aria-label` carry the text for screen readers and hover.
pub fn badge_svg(label: &str, value: &str, colour: &str) -> String {
    let lw = text_width(label) + 10;
    let vw = text_width(value) + 10;
    let label = escape(label);
    let value = escape(value);
    let w = lw + vw;
    let (lx, vx) = (lw * 10 / 2, (lw + vw / 2) * 10);
    let (ltl, vtl) = ((lw - 10) * 10, (vw - 10) * 10);
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="20" role="img" aria-label="{label}: {value}"><title>{label}: {value}</title><linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient><clipPath id="r"><rect width="{w}" height="20" rx="3" fill="#fff"/></clipPath><g clip-path="url(#r)"><rect width="{lw}" height="20" fill="#555"/><rect x="{lw}" width="{vw}" height="20" fill="{colour}"/><rect width="{w}" height="20" fill="url(#s)"/></g><g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" text-rendering="geometricPrecision" font-size="110"><text aria-hidden="true" x="{lx}" y="150" fill="#010101" fill-opacity=".3" transform="scale(.1)" textLength="{ltl}">{label}</text><text x="{lx}" y="140" transform="scale(.1)" fill="#fff" textLength="{ltl}">{label}</text><text aria-hidden="true" x="{vx}" y="150" fill="#010101" fill-opacity=".3" transform="scale(.1)" textLength="{vtl}">{value}</text><text x="{vx}" y="140" transform="scale(.1)" fill="#fff" textLength="{vtl}">{value}</text></g></svg>"##
    )
}
