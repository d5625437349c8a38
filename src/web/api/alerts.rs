//! `POST /api/v1/alerts/{source}`: monitors open and resolve incidents with nothing but their
//! own webhook configuration. Each payload is read into one [`AlertNotice`] about one alert
//! group; the service decides what it changes.
//!
//! - **Alertmanager** (webhook format version 4) and **Grafana** alerting (the same body plus
//!   `title`, `state`, `message`): the group is `groupKey`; the firing alerts are those with
//!   `status: firing`, told apart by `fingerprint`; the component is the label
//!   `HERALD_ALERT_COMPONENT_LABEL` (`component`) names; `severity` `critical` (or `page`)
//!   makes a major outage of major impact, `warning` a partial outage, anything else a
//!   degradation.
//! - **Uptime Kuma**: the group is the monitor; `heartbeat.status` 0 (down) fires, 1 (up)
//!   resolves, pending and maintenance beats are ignored, as is the test notification (no
//!   monitor); the component is the one whose slug or name is the monitor's name.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::v1::{Body, Params};
use super::{ApiResult, Bearer, ErrorBody};
use crate::domain::{Component, ComponentStatus, Impact, ValidationError};
use crate::service::{AlertNotice, AlertOutcome, AlertPolicy};
use crate::web::AppState;
use crate::web::error::AppError;

/// What Herald did with a notification.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertAnswer {
    /// `opened`, `updated`, `resolved`, `reopened`, `unchanged` (a repeat of the group's last
    /// state) or `ignored` (nothing to do: a resolution of a group never seen firing, a test
    /// notification).
    #[schema(pattern = "^(opened|updated|resolved|reopened|unchanged|ignored)$")]
    pub outcome: &'static str,
    /// The group's incident.
    pub incident_id: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupPayload {
    version: Option<String>,
    group_key: String,
    status: String,
    #[serde(default)]
    group_labels: BTreeMap<String, String>,
    #[serde(default)]
    common_labels: BTreeMap<String, String>,
    #[serde(default)]
    common_annotations: BTreeMap<String, String>,
    #[serde(rename = "externalURL")]
    external_url: Option<String>,
    alerts: Vec<GroupAlert>,
    /// Grafana's own title of the notification.
    title: Option<String>,
}

#[derive(Debug, Deserialize)]
struct GroupAlert {
    status: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    fingerprint: Option<String>,
}

#[derive(Debug, Deserialize)]
struct KumaPayload {
    heartbeat: Option<KumaBeat>,
    monitor: Option<KumaMonitor>,
    msg: Option<String>,
}

#[derive(Debug, Deserialize)]
struct KumaBeat {
    status: i64,
    msg: Option<String>,
}

#[derive(Debug, Deserialize)]
struct KumaMonitor {
    id: serde_json::Value,
    name: String,
    url: Option<String>,
}

fn invalid(message: String) -> ValidationError {
    ValidationError::new("body", message)
}

/// The component `name` stands for: by slug, else by name, either ignoring case.
fn component<'a>(all: &'a [Component], name: &str) -> Option<&'a Component> {
    let name = name.trim();
    all.iter()
        .find(|c| c.slug.eq_ignore_ascii_case(name))
        .or_else(|| all.iter().find(|c| c.name.eq_ignore_ascii_case(name)))
}

fn severity(labels: &BTreeMap<String, String>) -> (Impact, ComponentStatus) {
    match labels.get("severity").map(|s| s.to_lowercase()).as_deref() {
        Some("critical" | "page" | "emergency" | "error") => {
            (Impact::Major, ComponentStatus::MajorOutage)
        }
        Some("warning" | "warn" | "high") => (Impact::Minor, ComponentStatus::PartialOutage),
        _ => (Impact::Minor, ComponentStatus::Degraded),
    }
}

/// `text` on one line, control characters (tabs, escapes) as spaces: a monitor's words are
/// never a reason to refuse its notification (it would not send it again).
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// A short, one-line title of at most 200 characters (an incident's title limit).
fn title_of(text: &str) -> String {
    let line = one_line(text.lines().next().unwrap_or(""));
    let mut title: String = line.chars().take(200).collect();
    if title.is_empty() {
        title = "Alert".to_owned();
    }
    title
}

/// An Alertmanager or Grafana notification as a notice; `None` for Grafana's test
/// notification.
fn group_notice(
    source: &str,
    body: serde_json::Value,
    all: &[Component],
    label: &str,
) -> Result<Option<AlertNotice>, ValidationError> {
    let p: GroupPayload = serde_json::from_value(body)
        .map_err(|e| invalid(format!("not an {source} notification: {e}")))?;
    if source == "alertmanager" && p.version.as_deref().is_some_and(|v| v != "4") {
        return Err(invalid(format!(
            "Herald reads Alertmanager's webhook format version 4, not {:?}",
            p.version.unwrap_or_default()
        )));
    }
    let firing = match p.status.as_str() {
        "firing" => true,
        "resolved" => false,
        other => {
            return Err(invalid(format!(
                "status {other:?} is neither firing nor resolved"
            )));
        }
    };
    if p.group_key.trim().is_empty() || p.group_key.len() > 2000 {
        return Err(invalid("groupKey must be 1 to 2000 characters".into()));
    }
    // Grafana's "Test" button on a contact point sends a firing TestAlert: nothing broke.
    if source == "grafana"
        && !p.alerts.is_empty()
        && p.alerts
            .iter()
            .all(|a| a.labels.get("alertname").is_some_and(|n| n == "TestAlert"))
    {
        return Ok(None);
    }
    let mut impact = Impact::Minor;
    let mut components: Vec<(i64, ComponentStatus)> = Vec::new();
    let mut alerts = Vec::new();
    for a in p.alerts.iter().filter(|a| a.status == "firing") {
        let name = a
            .labels
            .get("alertname")
            .cloned()
            .unwrap_or_else(|| "alert".to_owned());
        let (level, status) = severity(&a.labels);
        impact = impact.max(level);
        let named = a.labels.get(label).and_then(|c| component(all, c));
        if let Some(c) = named {
            match components.iter_mut().find(|(id, _)| *id == c.id) {
                Some((_, s)) => *s = (*s).max(status),
                None => components.push((c.id, status)),
            }
        }
        let about = a
            .annotations
            .get("summary")
            .or_else(|| a.annotations.get("description"))
            .map(|s| format!(": {}", s.trim()))
            .unwrap_or_default();
        let line = one_line(&match named {
            Some(c) => format!("{name} ({}){about}", c.name),
            None => format!("{name}{about}"),
        });
        let id = a.fingerprint.clone().unwrap_or_else(|| {
            // Without a fingerprint, the labels are the alert's identity.
            format!("{:?}", a.labels)
        });
        alerts.push((id, line.chars().take(500).collect()));
    }
    let title = p
        .common_annotations
        .get("summary")
        .or_else(|| p.common_labels.get("alertname"))
        .or_else(|| p.group_labels.get("alertname"))
        .cloned()
        .or(p.title.clone())
        .unwrap_or_else(|| format!("Alert from {source}"));
    let detail = serde_json::json!({
        "groupLabels": p.group_labels,
        "commonLabels": p.common_labels,
        "externalURL": p.external_url,
    })
    .to_string();
    Ok(Some(AlertNotice {
        source: source.to_owned(),
        group_key: p.group_key,
        firing,
        alerts,
        title: title_of(&title),
        impact,
        components,
        detail,
    }))
}

/// An Uptime Kuma notification as a notice; `None` for one that is not about a monitor going
/// down or up (the test notification, a pending or maintenance beat).
fn kuma_notice(
    body: serde_json::Value,
    all: &[Component],
) -> Result<Option<AlertNotice>, ValidationError> {
    let p: KumaPayload = serde_json::from_value(body)
        .map_err(|e| invalid(format!("not an Uptime Kuma notification: {e}")))?;
    let (Some(beat), Some(monitor)) = (p.heartbeat, p.monitor) else {
        return Ok(None);
    };
    let firing = match beat.status {
        0 => true,
        1 => false,
        _ => return Ok(None),
    };
    let id = match &monitor.id {
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::String(s) if !s.is_empty() && s.len() <= 200 => s.clone(),
        _ => return Err(invalid("monitor.id must be a number".into())),
    };
    let named = component(all, &monitor.name);
    let why = beat
        .msg
        .or(p.msg)
        .map(|m| format!(": {}", m.trim()))
        .unwrap_or_default();
    let line = one_line(&format!("{} is down{why}", monitor.name.trim()));
    Ok(Some(AlertNotice {
        source: "uptime-kuma".to_owned(),
        group_key: format!("monitor:{id}"),
        firing,
        alerts: vec![(format!("monitor:{id}"), line.chars().take(500).collect())],
        title: title_of(&format!("{} is down", monitor.name.trim())),
        impact: Impact::Major,
        components: named
            .map(|c| vec![(c.id, ComponentStatus::MajorOutage)])
            .unwrap_or_default(),
        detail: serde_json::json!({"monitor": monitor.name, "url": monitor.url}).to_string(),
    }))
}

/// Take a monitor's webhook: Alertmanager (format version 4), Grafana alerting or Uptime
/// Kuma. One incident per alert group, a draft unless HERALD_ALERT_PUBLISH names the source;
/// repeats change nothing.
#[utoipa::path(post, path = "/alerts/{source}", tag = "alerts",
    params(("source" = String, Path, description = "The monitor",
        pattern = "^(alertmanager|grafana|uptime-kuma)$")),
    request_body(content = Object, description = "The monitor's own webhook body"),
    responses(
        (status = 200, description = "What the notification did", body = AlertAnswer),
        (status = "4XX", description = "Client error (422: a body that is not this monitor's notification)", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn receive_alert(
    State(state): State<AppState>,
    bearer: Bearer,
    Params(source): Params<String>,
    Body(body): Body<serde_json::Value>,
) -> ApiResult<Json<AlertAnswer>> {
    if !crate::config::ALERT_SOURCES.contains(&source.as_str()) {
        return Err(AppError::NotFound.into());
    }
    let all = state.service.components().await?;
    let settings = &state.settings.alerts;
    let notice = match source.as_str() {
        "uptime-kuma" => kuma_notice(body, &all)?,
        _ => group_notice(&source, body, &all, &settings.component_label)?,
    };
    let Some(notice) = notice else {
        return Ok(Json(AlertAnswer {
            outcome: AlertOutcome::Ignored.as_str(),
            incident_id: None,
        }));
    };
    let policy = AlertPolicy {
        quiet: settings.quiet,
        publish: settings.publish.contains(&source),
    };
    let (outcome, incident_id) = bearer
        .service(&state)
        .receive_alert(&notice, &policy)
        .await?;
    Ok(Json(AlertAnswer {
        outcome: outcome.as_str(),
        incident_id,
    }))
}
