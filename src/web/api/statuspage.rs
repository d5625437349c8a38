//! `/api/v2`: Atlassian Statuspage's public API v2, same paths, shapes, field formats and
//! enums, so existing widgets, aggregators and exporters read Herald unchanged. Public, no
//! token, CORS open (`Access-Control-Allow-Origin: *`), cached like pages.
//!
//! # How Herald maps onto Statuspage
//!
//! - **Page**: `id` is a stable hash of `HERALD_PUBLIC_URL`, `time_zone` `Etc/UTC`.
//! - **Components**: one per component, `id` its slug; a component group becomes a group
//!   component (`group: true`, `components`: its children's ids, `id` `group-…`), children
//!   carry its `group_id`. Status: `operational`, `under_maintenance` while a window affecting
//!   it runs, `degraded_performance` while such a window has a failed step; a group shows its
//!   worst child.
//! - **Scheduled maintenances**: every public window with a date. `scheduled` → `scheduled`,
//!   `in_progress` → `in_progress` (also when overrunning), `completed` → `completed`,
//!   `cancelled` → `completed` (Statuspage has no cancelled maintenance; the last update says
//!   it was cancelled). A tentative window (no date yet) is left out: Statuspage requires
//!   `scheduled_for`. Herald's impact levels are Statuspage's. `incident_updates` are the
//!   window's timeline, newest first, each with the status the window had at that moment; the
//!   newest 50, as on the window's page (whose older pages hold the rest).
//! - **Rollouts**: a rollout tied to a window is part of that window. A rollout on its own is
//!   a scheduled maintenance too (`id` `rollout-{id}`, impact `none`, no components): pending
//!   → `scheduled`, in progress or paused → `in_progress`, finished (completed, failed,
//!   aborted) → `completed`.
//! - **Incidents**: Herald's incidents are Statuspage's: the same statuses (`postmortem` once
//!   the postmortem is published), impacts and timeline, each update with the status the
//!   incident had then and, where it changed them, its components' statuses. Drafts are left
//!   out. The 50 most recent public ones; `unresolved.json` those not resolved.
//! - **Status indicator**: the worst open incident's impact (`minor` "Minor Service Outage",
//!   `major` "Partial System Outage", `critical` "Major System Outage"); else `minor`
//!   ("Partially Degraded Service") while a window has a failed step or a rollout failed a
//!   target or stalled, else `maintenance` ("Service Under Maintenance") while a window or
//!   rollout is in progress, else `none` ("All Systems Operational").

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;
use jiff::Timestamp;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::domain::{
    Component, ComponentStatus, Impact, Incident, IncidentStatus, IncidentUpdateKind, Maintenance,
    Rollout, RolloutState, StepState, TargetState, UpdateKind, WindowState,
};
use crate::web::AppState;
use crate::web::cache::{CachePolicy, CachedPage};
use crate::web::error::AppError;

const BROTLI_QUALITY: u32 = 5;
/// Statuspage answers the 50 most recent maintenances.
const RECENT: usize = 50;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v2/summary.json", get(summary))
        .route("/api/v2/status.json", get(status))
        .route("/api/v2/components.json", get(components))
        .route("/api/v2/incidents.json", get(incidents))
        .route("/api/v2/incidents/unresolved.json", get(incidents))
        .route(
            "/api/v2/scheduled-maintenances.json",
            get(|s: State<AppState>, h: HeaderMap| maintenances(s, h, Which::All)),
        )
        .route(
            "/api/v2/scheduled-maintenances/upcoming.json",
            get(|s: State<AppState>, h: HeaderMap| maintenances(s, h, Which::Upcoming)),
        )
        .route(
            "/api/v2/scheduled-maintenances/active.json",
            get(|s: State<AppState>, h: HeaderMap| maintenances(s, h, Which::Active)),
        )
}

/// Statuspage's time format: milliseconds and an offset.
fn time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3f+00:00").to_string()
}

fn opt_time(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, |t| Value::String(time(t)))
}

/// Everything the v2 documents are made from, read once per answer.
struct Data {
    page: Value,
    components: Vec<Value>,
    maintenances: Vec<(&'static str, Value)>,
    /// Public incidents, newest first, each with whether it is unresolved.
    incidents: Vec<(bool, Value)>,
    indicator: &'static str,
    description: &'static str,
}

fn group_id(name: &str) -> String {
    let slug: String = name
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("group-{}", slug.trim_matches('-'))
}

/// A component as Statuspage shows it; `changed` is when a window affecting it last changed
/// (Herald keeps no history of component statuses).
fn component_json(
    c: &Component,
    status: ComponentStatus,
    changed: Timestamp,
    page_id: &str,
) -> Value {
    json!({
        "id": c.slug,
        "name": c.name,
        "status": status.as_str(),
        "created_at": time(changed),
        "updated_at": time(changed),
        "position": c.position,
        "description": c.description,
        "showcase": true,
        "start_date": Value::Null,
        "group_id": c.group_name.as_deref().map(group_id),
        "page_id": page_id,
        "group": false,
        "only_show_if_degraded": false,
    })
}

/// One entry of a maintenance's `incident_updates`.
fn incident_update(
    id: String,
    incident_id: String,
    status: &str,
    body: &str,
    at: Timestamp,
) -> Value {
    json!({
        "id": id,
        "incident_id": incident_id,
        "status": status,
        "body": body,
        "created_at": time(at),
        "updated_at": time(at),
        "display_at": time(at),
        "affected_components": Value::Null,
        "deliver_notifications": true,
        "custom_tweet": Value::Null,
        "tweet_id": Value::Null,
    })
}

/// Statuspage's status of an incident: `postmortem` once that is published.
fn incident_status(i: &Incident) -> &'static str {
    if i.postmortem_published_at.is_some() && !i.is_open() {
        "postmortem"
    } else {
        i.status.as_str()
    }
}

/// An incident in Statuspage's shape, with its newest 50 public updates.
async fn statuspage_incident(
    state: &AppState,
    i: &Incident,
    all: &[Component],
    component: &(dyn Fn(&Component) -> Value + Sync),
    page_id: &str,
    base: &str,
) -> Result<Value, AppError> {
    let updates = state
        .service
        .incident_updates(i.id, Some(crate::web::view::TIMELINE_PAGE as i64 * 2))
        .await?;
    let name = |id: i64| all.iter().find(|c| c.id == id);
    let mut previous: Vec<(i64, ComponentStatus)> = Vec::new();
    let mut oldest_first: Vec<_> = updates.iter().filter(|u| u.announced).collect();
    oldest_first.reverse();
    let mut entries: Vec<Value> = Vec::new();
    for u in &oldest_first {
        let status = if u.kind == IncidentUpdateKind::Postmortem {
            "postmortem"
        } else {
            u.status.as_str()
        };
        let mut entry = incident_update(
            format!("i{}", u.id),
            format!("incident-{}", i.id),
            status,
            &u.body,
            u.created_at,
        );
        if let Some(now) = &u.components {
            let old = |id: i64| {
                previous
                    .iter()
                    .find(|(p, _)| *p == id)
                    .map_or(ComponentStatus::Operational, |(_, s)| *s)
            };
            let mut changed: Vec<Value> = now
                .iter()
                .filter_map(|(id, s)| {
                    let c = name(*id)?;
                    Some(json!({"code": c.slug, "name": c.name,
                                "old_status": old(*id).as_str(), "new_status": s.as_str()}))
                })
                .collect();
            // Taken off the incident: back to operational.
            changed.extend(
                previous
                    .iter()
                    .filter(|(id, _)| !now.iter().any(|(n, _)| n == id))
                    .filter_map(|(id, s)| {
                        let c = name(*id)?;
                        Some(json!({"code": c.slug, "name": c.name,
                            "old_status": s.as_str(), "new_status": "operational"}))
                    }),
            );
            entry["affected_components"] = Value::Array(changed);
            previous = now.clone();
        }
        entries.push(entry);
    }
    entries.reverse();
    entries.truncate(crate::web::view::TIMELINE_PAGE);
    let monitoring_at = oldest_first
        .iter()
        .find(|u| u.status == IncidentStatus::Monitoring)
        .map(|u| u.created_at);
    Ok(json!({
        "id": format!("incident-{}", i.id),
        "name": i.title,
        "status": incident_status(i),
        "impact": i.impact.as_str(),
        "created_at": time(i.published_at.unwrap_or(i.created_at)),
        "updated_at": time(i.updated_at),
        "monitoring_at": opt_time(monitoring_at),
        "resolved_at": opt_time(i.resolved_at),
        "started_at": time(i.started_at),
        "shortlink": format!("{base}/incidents/{}", i.id),
        "page_id": page_id,
        "incident_updates": entries,
        "components": all
            .iter()
            .filter(|c| i.components.iter().any(|(id, _)| *id == c.id))
            .map(component)
            .collect::<Vec<_>>(),
    }))
}

/// The status a window had after each of its updates, oldest first.
fn window_update_status(kind: UpdateKind, running: &mut &'static str) -> &'static str {
    *running = match kind {
        UpdateKind::Started => "in_progress",
        UpdateKind::Completed | UpdateKind::Cancelled => "completed",
        UpdateKind::Announced | UpdateKind::Rescheduled if *running != "in_progress" => "scheduled",
        _ => running,
    };
    running
}

fn maintenance_status(m: &Maintenance) -> &'static str {
    match m.state {
        WindowState::InProgress => "in_progress",
        WindowState::Completed | WindowState::Cancelled => "completed",
        _ => "scheduled",
    }
}

fn rollout_status(state: RolloutState) -> &'static str {
    match state {
        RolloutState::Pending => "scheduled",
        RolloutState::InProgress | RolloutState::Paused => "in_progress",
        RolloutState::Completed | RolloutState::Failed | RolloutState::Aborted => "completed",
    }
}

impl Data {
    async fn load(state: &AppState) -> Result<Self, AppError> {
        let service = &state.service;
        let base = state.settings.public_url.trim_end_matches('/');
        let page_id: String = hex(&Sha256::digest(base.as_bytes()))[..12].to_owned();
        let open = service.store().open_public_maintenances().await?;
        let incidents = service.open_incidents().await?;
        let all = service.components().await?;
        let recent = service
            .store()
            .recent_public_maintenances(RECENT as i64)
            .await?;
        let epoch = recent
            .iter()
            .map(|m| m.created_at)
            .min()
            .unwrap_or_else(|| service.now());
        let changed = |c: &Component| {
            recent
                .iter()
                .filter(|m| m.components.iter().any(|mc| mc.id == c.id))
                .map(|m| m.updated_at)
                .max()
                .unwrap_or(epoch)
        };
        let component = |c: &Component| {
            component_json(
                c,
                ComponentStatus::shown(c, &open, &incidents),
                changed(c),
                &page_id,
            )
        };

        let mut components = Vec::new();
        let mut groups: Vec<(String, Vec<&Component>)> = Vec::new();
        for c in &all {
            components.push(component(c));
            if let Some(g) = &c.group_name {
                match groups.iter_mut().find(|(name, _)| name == g) {
                    Some((_, members)) => members.push(c),
                    None => groups.push((g.clone(), vec![c])),
                }
            }
        }
        for (name, members) in &groups {
            let status = members
                .iter()
                .map(|c| ComponentStatus::shown(c, &open, &incidents))
                .max()
                .unwrap_or(ComponentStatus::Operational);
            let first = members[0];
            let group_changed = members.iter().map(|c| changed(c)).max().unwrap_or(epoch);
            components.push(json!({
                "id": group_id(name),
                "name": name,
                "status": status.as_str(),
                "created_at": time(group_changed),
                "updated_at": time(group_changed),
                "position": first.position,
                "description": Value::Null,
                "showcase": false,
                "start_date": Value::Null,
                "group_id": Value::Null,
                "page_id": page_id,
                "group": true,
                "only_show_if_degraded": false,
                "components": members.iter().map(|c| c.slug.clone()).collect::<Vec<_>>(),
            }));
        }
        components.sort_by_key(|c| c["position"].as_i64().unwrap_or(0));

        let mut maintenances: Vec<(Timestamp, &'static str, Value)> = Vec::new();
        let mut updated = None;
        for m in &recent {
            updated = updated.max(Some(m.updated_at));
            let Some(start) = m.starts_at.or(m.started_at) else {
                continue;
            };
            let mut updates = service.store().list_updates(m.id, None).await?;
            updates.retain(|u| u.kind != UpdateKind::Reminder);
            updates.sort_by_key(|u| (u.created_at, u.id));
            let mut running = "scheduled";
            let mut incident_updates: Vec<Value> = updates
                .iter()
                .map(|u| {
                    let status = window_update_status(u.kind, &mut running);
                    let body = match &u.note {
                        Some(note) => format!("{} {note}", u.body),
                        None => u.body.clone(),
                    };
                    incident_update(
                        format!("u{}", u.id),
                        m.id.to_string(),
                        status,
                        &body,
                        u.created_at,
                    )
                })
                .collect();
            incident_updates.reverse();
            incident_updates.truncate(crate::web::view::TIMELINE_PAGE);
            let url = format!("{base}/maintenance/{}", m.id);
            let status = maintenance_status(m);
            let json = json!({
                "id": m.id.to_string(),
                "name": m.title,
                "status": status,
                "impact": m.impact.as_str(),
                "created_at": time(m.announced_at.unwrap_or(m.created_at)),
                "updated_at": time(m.updated_at),
                "monitoring_at": Value::Null,
                "resolved_at": opt_time(m.finished_at),
                "started_at": time(m.started_at.unwrap_or(start)),
                "scheduled_for": time(start),
                "scheduled_until": opt_time(m.ends_at.or(m.finished_at)),
                "shortlink": url,
                "page_id": page_id,
                "incident_updates": incident_updates,
                "components": all
                    .iter()
                    .filter(|c| m.components.iter().any(|mc| mc.id == c.id))
                    .map(component)
                    .collect::<Vec<_>>(),
            });
            maintenances.push((m.updated_at, status, json));
        }

        let rollouts = crate::web::feeds::recent_rollouts(state).await?;
        for r in rollouts.iter().filter(|r| r.maintenance_id.is_none()) {
            updated = updated.max(Some(r.updated_at));
            maintenances.push((
                r.updated_at,
                rollout_status(r.state),
                rollout_json(state, r, &page_id, base).await?,
            ));
        }
        maintenances.sort_by_key(|m| std::cmp::Reverse(m.0));
        maintenances.truncate(RECENT);

        let trouble = open.iter().any(|m| {
            m.state == WindowState::InProgress
                && m.steps.iter().any(|s| s.state == StepState::Failed)
        }) || rollouts.iter().any(|r| {
            r.state == RolloutState::InProgress
                && (r.stalled_at.is_some()
                    || r.targets.iter().any(|t| t.state == TargetState::Failed))
        });
        let working = open.iter().any(|m| m.state == WindowState::InProgress)
            || rollouts
                .iter()
                .any(|r| matches!(r.state, RolloutState::InProgress | RolloutState::Paused));
        let mut incident_list = Vec::new();
        for i in service
            .incidents(crate::store::IncidentFilter::Public, 0, RECENT as i64)
            .await?
            .items
        {
            updated = updated.max(Some(i.updated_at));
            let json = statuspage_incident(state, &i, &all, &component, &page_id, base).await?;
            incident_list.push((i.is_open(), json));
        }
        // A status set by hand counts as an incident of the matching impact would.
        let manual = all
            .iter()
            .filter_map(|c| c.manual.as_ref().map(|m| m.status))
            .filter_map(|s| match s {
                ComponentStatus::MajorOutage => Some(Impact::Critical),
                ComponentStatus::PartialOutage => Some(Impact::Major),
                ComponentStatus::Degraded => Some(Impact::Minor),
                _ => None,
            });
        let worst = incidents.iter().map(|i| i.impact).chain(manual).max();
        let (indicator, description) = if let Some(impact) = worst {
            match impact {
                Impact::Critical => ("critical", "Major System Outage"),
                Impact::Major => ("major", "Partial System Outage"),
                Impact::Minor | Impact::None => ("minor", "Minor Service Outage"),
            }
        } else if trouble {
            ("minor", "Partially Degraded Service")
        } else if working {
            ("maintenance", "Service Under Maintenance")
        } else {
            ("none", "All Systems Operational")
        };
        let page = json!({
            "id": page_id,
            "name": state.site.name,
            "url": format!("{base}/"),
            "time_zone": "Etc/UTC",
            "updated_at": time(updated.unwrap_or_else(|| service.now())),
        });
        Ok(Self {
            page,
            components,
            maintenances: maintenances.into_iter().map(|(_, s, v)| (s, v)).collect(),
            incidents: incident_list,
            indicator,
            description,
        })
    }

    fn status(&self) -> Value {
        json!({ "indicator": self.indicator, "description": self.description })
    }

    /// Public incidents, newest first; only the unresolved ones with `unresolved`.
    fn incidents(&self, unresolved: bool) -> Vec<&Value> {
        self.incidents
            .iter()
            .filter(|(open, _)| *open || !unresolved)
            .map(|(_, v)| v)
            .collect()
    }

    fn maintenances(&self, which: Which) -> Vec<&Value> {
        self.maintenances
            .iter()
            .filter(|(status, _)| match which {
                Which::All => true,
                Which::Upcoming => *status == "scheduled",
                Which::Active => matches!(*status, "in_progress" | "verifying"),
            })
            .map(|(_, v)| v)
            .collect()
    }
}

async fn rollout_json(
    state: &AppState,
    r: &Rollout,
    page_id: &str,
    base: &str,
) -> Result<Value, AppError> {
    let mut updates = state.service.rollout_updates(r.id, None).await?;
    updates.sort_by_key(|u| (u.created_at, u.id));
    let mut running = "scheduled";
    let mut incident_updates: Vec<Value> = updates
        .iter()
        .map(|u| {
            running = match u.kind {
                UpdateKind::RolloutStarted | UpdateKind::RolloutResumed => "in_progress",
                UpdateKind::RolloutCompleted
                | UpdateKind::RolloutFailed
                | UpdateKind::RolloutAborted => "completed",
                _ if running == "scheduled" => "in_progress",
                _ => running,
            };
            incident_update(
                format!("r{}", u.id),
                format!("rollout-{}", r.id),
                running,
                &r.public_text(&u.body),
                u.created_at,
            )
        })
        .collect();
    incident_updates.reverse();
    incident_updates.truncate(crate::web::view::TIMELINE_PAGE);
    let start = r.started_at.unwrap_or(r.created_at);
    Ok(json!({
        "id": format!("rollout-{}", r.id),
        "name": r.title,
        "status": rollout_status(r.state),
        "impact": "none",
        "created_at": time(r.created_at),
        "updated_at": time(r.updated_at),
        "monitoring_at": Value::Null,
        "resolved_at": opt_time(r.finished_at),
        "started_at": time(start),
        "scheduled_for": time(start),
        "scheduled_until": opt_time(r.finished_at),
        "shortlink": format!("{base}/rollouts/{}", r.id),
        "page_id": page_id,
        "incident_updates": incident_updates,
        "components": [],
    }))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Clone, Copy)]
enum Which {
    All,
    Upcoming,
    Active,
}

impl Which {
    fn key(self) -> &'static str {
        match self {
            Self::All => "/api/v2/scheduled-maintenances.json",
            Self::Upcoming => "/api/v2/scheduled-maintenances/upcoming.json",
            Self::Active => "/api/v2/scheduled-maintenances/active.json",
        }
    }
}

/// The cached JSON at `key` built from [`Data`], with CORS open.
async fn answer(
    state: &AppState,
    headers: &HeaderMap,
    key: &str,
    build: impl FnOnce(&Data) -> Value,
) -> Result<Response, AppError> {
    let page = state
        .pages
        .get_or_render(key, state.service.freshness(), || async move {
            let data = Data::load(state).await?;
            let body =
                serde_json::to_vec(&build(&data)).map_err(|e| AppError::Internal(e.into()))?;
            Ok::<_, AppError>(
                CachedPage::new(
                    Bytes::from(body),
                    "application/json; charset=utf-8",
                    CachePolicy::Revalidate,
                    BROTLI_QUALITY,
                )
                .for_any_origin(),
            )
        })
        .await?;
    Ok(page.respond(headers))
}

async fn summary(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, AppError> {
    answer(&state, &headers, "/api/v2/summary.json", |d| {
        json!({
            "page": d.page,
            "components": d.components,
            "incidents": d.incidents(true),
            "scheduled_maintenances": d.maintenances(Which::Upcoming)
                .into_iter()
                .chain(d.maintenances(Which::Active))
                .collect::<Vec<_>>(),
            "status": d.status(),
        })
    })
    .await
}

async fn status(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, AppError> {
    answer(
        &state,
        &headers,
        "/api/v2/status.json",
        |d| json!({ "page": d.page, "status": d.status() }),
    )
    .await
}

async fn components(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    answer(
        &state,
        &headers,
        "/api/v2/components.json",
        |d| json!({ "page": d.page, "components": d.components }),
    )
    .await
}

async fn incidents(
    State(state): State<AppState>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let key = uri.path().to_owned();
    let unresolved = key.ends_with("/unresolved.json");
    answer(
        &state,
        &headers,
        &key,
        |d| json!({ "page": d.page, "incidents": d.incidents(unresolved) }),
    )
    .await
}

async fn maintenances(
    State(state): State<AppState>,
    headers: HeaderMap,
    which: Which,
) -> Result<Response, AppError> {
    answer(
        &state,
        &headers,
        which.key(),
        |d| json!({ "page": d.page, "scheduled_maintenances": d.maintenances(which) }),
    )
    .await
}
