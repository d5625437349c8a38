//! Rollouts on the public pages: the view of a rollout (version mix, one row per target with
//! its drain as a bar per label, drain time and estimate; forced, failed, stalled and stale
//! targets marked) and `GET /rollouts/{id}`. The status page and window pages show the same
//! card.

use askama::Template;
use axum::extract::{Request, State};
use axum::response::Response;
use jiff::Timestamp;

use super::AppState;
use super::error::{AppError, Path, Query};
use super::public::html;
use super::view::{Site, SummaryView, TimeView, UpdateView, markdown, time};
use crate::domain::human_duration;
use crate::domain::{Rollout, RolloutState, RolloutUpdate, Target, TargetState};
use crate::notify::render::rollout_status;
use crate::store::RolloutSummary;

/// One label of a drain: what is left now against what there was when draining began.
#[derive(Debug, Clone)]
pub struct CountBar {
    pub label: String,
    pub left: i64,
    pub start: i64,
    /// `start`, at least 1 (a `<progress>` needs a positive maximum).
    pub bar_max: i64,
}

#[derive(Debug, Clone)]
pub struct EstimateView {
    pub at: TimeView,
    pub within: String,
    pub basis: String,
}

#[derive(Debug, Clone)]
pub struct TargetView {
    pub position: i64,
    /// The real name (admin pages) and what the public sees.
    pub name: String,
    pub shown: String,
    pub state: &'static str,
    pub state_label: &'static str,
    pub mark: &'static str,
    pub version: Option<String>,
    pub on_new: bool,
    pub bars: Vec<CountBar>,
    pub drain_time: Option<String>,
    pub estimate: Option<EstimateView>,
    /// Draining with work left but nothing to estimate from: why.
    pub no_estimate: Option<&'static str>,
    pub forced: Option<String>,
    /// "no report for 3 min" when a moving target has gone silent.
    pub stale: Option<String>,
    pub note: Option<String>,
    pub changed: Option<TimeView>,
    pub last_report: Option<TimeView>,
    pub attempts: i64,
    pub moving: bool,
}

#[derive(Debug, Clone)]
pub struct RolloutView {
    pub id: i64,
    pub url: String,
    pub title: String,
    /// CSS class: the state, or `stalled` / `rolled_back`.
    pub state: &'static str,
    pub state_label: String,
    pub headline: String,
    pub from: Option<String>,
    pub to: String,
    pub total: usize,
    pub healthy: usize,
    pub progress: String,
    pub started_at: Option<TimeView>,
    pub finished_at: Option<TimeView>,
    pub elapsed: Option<String>,
    pub took: Option<String>,
    pub description_html: String,
    /// The window it belongs to: (url, title).
    pub window: Option<(String, String)>,
    pub rollback_of: Option<String>,
    pub rolled_back_by: Option<String>,
    pub stalled: bool,
    /// Something needs a reader's attention: a failed, forced or stale target, or a stall.
    pub attention: bool,
    pub targets: Vec<TargetView>,
    /// For the status page's card: the targets worth a look (moving, failed, forced, stale)
    /// when there are many, else all.
    pub card_targets: Vec<TargetView>,
    /// "and 195 more: 150 healthy, 45 pending".
    pub card_more: Option<String>,
    pub updates: Vec<UpdateView>,
    pub deadline: String,
}

/// Targets a card shows at most.
const CARD_TARGETS: usize = 8;

fn card(targets: &[TargetView]) -> (Vec<TargetView>, Option<String>) {
    if targets.len() <= CARD_TARGETS {
        return (targets.to_vec(), None);
    }
    let shown: Vec<TargetView> = targets
        .iter()
        .filter(|t| t.moving || t.state == "failed" || t.forced.is_some() || t.stale.is_some())
        .take(CARD_TARGETS)
        .cloned()
        .collect();
    let rest: Vec<&TargetView> = targets
        .iter()
        .filter(|t| !shown.iter().any(|s| s.position == t.position))
        .collect();
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for t in &rest {
        match counts.iter_mut().find(|(s, _)| *s == t.state) {
            Some((_, n)) => *n += 1,
            None => counts.push((t.state, 1)),
        }
    }
    let parts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    (
        shown,
        Some(format!("and {} more: {}", rest.len(), parts.join(", "))),
    )
}

fn mark(state: TargetState) -> &'static str {
    match state {
        TargetState::Pending => "○",
        TargetState::Draining => "◔",
        TargetState::Drained => "◑",
        TargetState::Updating => "↻",
        TargetState::Healthy => "✓",
        TargetState::Failed => "✗",
    }
}

pub fn target_view(r: &Rollout, t: &Target, now: Timestamp) -> TargetView {
    let version = r.version_of(t).map(str::to_owned);
    let estimate = t.drain_estimate().map(|e| {
        let within = match e.at.duration_since(now) {
            d if d.is_positive() => format!("in about {}", human_duration(d)),
            _ => "any moment now".to_owned(),
        };
        let rate = if e.per_minute >= 1.0 {
            format!("{:.0}", e.per_minute)
        } else {
            format!("{:.1}", e.per_minute)
        };
        EstimateView {
            at: time(e.at),
            within,
            basis: format!(
                "{rate} {}/min, the drain rate over the last {} min",
                e.label,
                crate::domain::DRAIN_WINDOW.as_mins()
            ),
        }
    });
    let draining = t.state == TargetState::Draining;
    TargetView {
        position: t.position,
        name: t.name.clone(),
        shown: r.public_name(t),
        state: t.state.as_str(),
        state_label: t.state.label(),
        mark: mark(t.state),
        on_new: version.as_deref() == Some(r.to_version.as_str()),
        version,
        bars: if matches!(t.state, TargetState::Draining | TargetState::Failed) {
            t.remaining
                .iter()
                .map(|(label, &left)| CountBar {
                    label: label.clone(),
                    left,
                    start: t
                        .drain_start_counts
                        .get(label)
                        .copied()
                        .unwrap_or(left)
                        .max(left),
                    bar_max: t
                        .drain_start_counts
                        .get(label)
                        .copied()
                        .unwrap_or(left)
                        .max(left)
                        .max(1),
                })
                .collect()
        } else {
            Vec::new()
        },
        drain_time: t
            .drain_time(now)
            .filter(|d| d.as_secs() > 0 && t.state != TargetState::Pending)
            .map(human_duration),
        no_estimate: (draining && estimate.is_none() && t.remaining_total() > 0).then_some(
            if t.samples.len() < 2 {
                "No estimate yet: it needs a second report with lower counts."
            } else {
                "No estimate: the counts are not going down."
            },
        ),
        estimate,
        forced: t.forced.then(|| {
            t.forced_reason
                .as_deref()
                .map_or_else(|| "forced".to_owned(), |f| r.public_text(f))
        }),
        stale: t.is_stale(r.stale_after, now).then(|| {
            let since = t.last_report_at.max(t.changed_at).unwrap_or(now);
            format!(
                "no report for {}",
                human_duration(now.duration_since(since))
            )
        }),
        // A forced target's note is its reason, shown with the marker already.
        note: t
            .note
            .as_deref()
            .filter(|n| !t.forced || t.forced_reason.as_deref() != Some(*n))
            .map(|n| r.public_text(n)),
        changed: t.changed_at.map(time),
        last_report: t.last_report_at.map(time),
        attempts: t.attempts,
        moving: t.state.is_moving(),
    }
}

fn update_view(r: &Rollout, u: &RolloutUpdate) -> UpdateView {
    UpdateView {
        kind: u.kind.as_str(),
        label: u.kind.label(),
        body: crate::web::view::text_with_times(&r.public_text(&u.body)),
        note: u
            .note
            .as_deref()
            .map(|n| crate::web::view::text_with_times(&r.public_text(n))),
        id: u.id,
        written: None,
        withdrawable: false,
        edited: None,
        at: time(u.created_at),
    }
}

pub fn rollout_view(
    r: &Rollout,
    updates: &[RolloutUpdate],
    window: Option<(i64, &str)>,
    now: Timestamp,
) -> RolloutView {
    let stalled = r.is_stalled(now);
    let targets: Vec<TargetView> = r.targets.iter().map(|t| target_view(r, t, now)).collect();
    let total = r.targets.len();
    let healthy = r.healthy();
    RolloutView {
        id: r.id,
        url: format!("/rollouts/{}", r.id),
        title: r.title.clone(),
        state: if stalled {
            "stalled"
        } else if r.rolled_back_by.is_some() {
            "rolled_back"
        } else {
            r.state.as_str()
        },
        state_label: rollout_status(r, now),
        headline: r.version_headline(),
        from: r.from_version.clone(),
        to: r.to_version.clone(),
        total,
        healthy,
        progress: format!("{healthy} of {total} healthy"),
        started_at: r.started_at.map(time),
        finished_at: r.finished_at.map(time),
        elapsed: (r.state.is_active())
            .then_some(r.started_at)
            .flatten()
            .map(|s| human_duration(now.duration_since(s))),
        took: match (r.started_at, r.finished_at) {
            (Some(s), Some(f)) => Some(human_duration(f.duration_since(s))),
            _ => None,
        },
        description_html: markdown(&r.description),
        window: window.map(|(id, title)| (format!("/maintenance/{id}"), title.to_owned())),
        rollback_of: r.rollback_of.map(|id| format!("/rollouts/{id}")),
        rolled_back_by: r.rolled_back_by.map(|id| format!("/rollouts/{id}")),
        attention: stalled
            || targets
                .iter()
                .any(|t| t.state == "failed" || t.forced.is_some() || t.stale.is_some()),
        stalled,
        card_targets: card(&targets).0,
        card_more: card(&targets).1,
        targets,
        updates: updates.iter().map(|u| update_view(r, u)).collect(),
        deadline: human_duration(r.progress_deadline),
    }
}

pub fn rollout_summary_view(s: &RolloutSummary) -> SummaryView {
    SummaryView {
        url: format!("/rollouts/{}", s.id),
        title: s.title.clone(),
        state: s.state.as_str(),
        state_label: match s.state {
            RolloutState::Completed => "Rollout completed",
            RolloutState::Failed => "Rollout failed",
            RolloutState::Aborted => "Rollout aborted",
            other => other.label(),
        },
        when: s.started_at.or(s.finished_at).map(time),
        took: match (s.started_at, s.finished_at) {
            (Some(a), Some(b)) => Some(human_duration(b.duration_since(a))),
            _ => None,
        },
        steps: match &s.from_version {
            Some(from) => format!(
                "{from} → {}, {} of {} targets healthy",
                s.to_version, s.targets_healthy, s.targets_total
            ),
            None => format!(
                "{}, {} of {} targets healthy",
                s.to_version, s.targets_healthy, s.targets_total
            ),
        },
    }
}

#[derive(Template)]
#[template(path = "public/rollout.html")]
struct RolloutPage {
    site: Site,
    r: RolloutView,
    nav: super::view::TimelineNav,
    incidents: Vec<super::incidents::IncidentLink>,
}

async fn render_rollout(
    state: &AppState,
    id: i64,
    timeline: usize,
) -> Result<super::cache::CachedPage, AppError> {
    let service = &state.service;
    let r = service.rollout(id).await?;
    let updates = service.rollout_updates(id, None).await?;
    let window = match r.maintenance_id {
        Some(w) => service
            .store()
            .get_maintenance(w)
            .await?
            .filter(|m| m.is_public()),
        None => None,
    };
    let mut view = rollout_view(
        &r,
        &updates,
        window.as_ref().map(|m| (m.id, m.title.as_str())),
        service.now(),
    );
    let nav = super::view::timeline_page(&mut view.updates, timeline, &format!("/rollouts/{id}"))
        .ok_or(AppError::NotFound)?;
    let page = RolloutPage {
        site: state.site.page(
            &format!("{} · {}", r.title, state.site.name),
            &format!(
                "{}: {}. {}.",
                view.state_label, view.headline, view.progress
            ),
            &view.url,
        ),
        r: view,
        nav,
        incidents: super::incidents::linked(state, crate::domain::Subject::Rollout(id)).await?,
    };
    Ok(html(page.render()?))
}

/// `GET /rollouts/{id}`.
pub async fn rollout(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(query): Query<super::public::TimelineQuery>,
    request: Request,
) -> Result<Response, AppError> {
    let timeline = query.page()?;
    let key = super::view::timeline_url(&format!("/rollouts/{id}"), timeline);
    let page = state
        .pages
        .get_or_render(&key, state.service.freshness(), || {
            render_rollout(&state, id, timeline)
        })
        .await?;
    Ok(page.respond(request.headers()))
}
