//! View structs the pages render: display-ready values (times in UTC and relative, Markdown
//! made safe HTML, a window's steps and timeline) shared by the public pages, the feeds and
//! the admin pages, so templates stay free of logic.

use jiff::Timestamp;

use super::assets::ASSETS;
use crate::domain::{
    Maintenance, Step, StepState, Update, WindowState, format_utc, human_duration,
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
    /// Mail is set up: the pages offer "Get updates by email".
    pub email: bool,
}

impl Follow {
    fn with_email(self, email: bool) -> Self {
        Self { email, ..self }
    }

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
            email: false,
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
            )
            .with_email(settings.mail.smtp_url.is_some()),
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

    /// This time as the end of something that began at `start`: only the time of day when
    /// both fall on one day, else the date too. The server judges in UTC; the page script
    /// judges again in the reader's zone (`data-same-day`), where the days may differ.
    pub fn end_after(&self, start: Option<&TimeView>) -> String {
        match start {
            Some(s) if s.iso.get(..10) == self.iso.get(..10) => {
                let clock = self.iso.get(11..16).unwrap_or_default();
                format!(
                    "<time datetime=\"{}\" data-style=\"clockzone\" data-same-day=\"{}\" title=\"{}\">{clock} UTC</time>",
                    self.iso, s.iso, self.text
                )
            }
            _ => self.full(),
        }
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

pub(super) fn step_view(step: &Step, current: Option<i64>) -> StepView {
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
    /// HTML: the text, escaped, with its times as `<time>` elements.
    pub body: String,
    /// HTML, as `body`.
    pub note: Option<String>,
    pub id: i64,
    /// What a maintainer wrote in it (its text or note), which the run view lets them correct.
    pub written: Option<String>,
    /// The update is a free-form one, which may be withdrawn.
    pub withdrawable: bool,
    pub edited: Option<TimeView>,
    pub at: TimeView,
}

pub(super) fn update_view(u: &Update) -> UpdateView {
    UpdateView {
        kind: u.kind.as_str(),
        label: if u.is_date_set() {
            "Date set"
        } else {
            u.kind.label()
        },
        body: text_with_times(&u.body),
        note: u.note.as_deref().map(text_with_times),
        id: u.id,
        written: u.written().map(str::to_owned),
        withdrawable: u.withdrawable().is_ok(),
        edited: u.edited_at.map(time),
        at: time(u.created_at),
    }
}

/// Plain text as HTML, its times (as Herald writes them, in UTC) as `<time>` elements that
/// the page shows in the reader's zone like every other time on it.
pub fn text_with_times(text: &str) -> String {
    crate::domain::map_utc_times(
        text,
        |part| {
            askama::filters::escape(part, askama::filters::Html)
                .map_or_else(|_| String::new(), |e| e.to_string())
        },
        |t| time(t).full(),
    )
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

impl WindowView {
    /// The expected end after the planned start (the schedule as announced).
    pub fn end_after_planned(&self) -> String {
        self.ends_at
            .as_ref()
            .map(|e| e.end_after(self.starts_at.as_ref()))
            .unwrap_or_default()
    }

    /// The expected end after the start shown beside it: the actual one once started (a
    /// window started days early ends on a day of its own).
    pub fn end_after_start(&self) -> String {
        self.ends_at
            .as_ref()
            .map(|e| e.end_after(self.started_at.as_ref().or(self.starts_at.as_ref())))
            .unwrap_or_default()
    }
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

pub(super) fn summary_view(s: &MaintenanceSummary) -> SummaryView {
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

#[cfg(test)]
mod tests {
    use jiff::SignedDuration;

    use super::*;
    use crate::domain::human_duration;

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

/// Timeline entries a public page shows at once, newest first; older ones are a link away (a
/// token posting thousands of notes must not make every visitor load them all).
pub const TIMELINE_PAGE: usize = 50;

/// Where a page's timeline stands: which page of it is shown, and the links to the others.
#[derive(Debug, Clone, Default)]
pub struct TimelineNav {
    pub page: usize,
    pub pages: usize,
    pub total: usize,
    pub newer: Option<String>,
    pub older: Option<String>,
}

/// The address of page `page` of the timeline on `base`.
pub fn timeline_url(base: &str, page: usize) -> String {
    match page {
        0 | 1 => base.to_owned(),
        n => format!("{base}?updates={n}"),
    }
}

/// Keep page `page` (from 1) of `entries` (newest first) and say where it stands; `None`
/// past the last page.
pub fn timeline_page<T>(entries: &mut Vec<T>, page: usize, base: &str) -> Option<TimelineNav> {
    let total = entries.len();
    let pages = total.div_ceil(TIMELINE_PAGE).max(1);
    if page == 0 || page > pages {
        return None;
    }
    let start = (page - 1) * TIMELINE_PAGE;
    entries.truncate((start + TIMELINE_PAGE).min(total));
    entries.drain(..start.min(entries.len()));
    Some(TimelineNav {
        page,
        pages,
        total,
        newer: (page > 1).then(|| timeline_url(base, page - 1)),
        older: (page < pages).then(|| timeline_url(base, page + 1)),
    })
}
