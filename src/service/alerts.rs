//! Incidents from monitors: one incident per alert group (Alertmanager's `groupKey`,
//! Grafana's group, an Uptime Kuma monitor). A notice repeating the group's last state changes
//! nothing and announces nothing; an alert joining the group adds one update; the group
//! resolving resolves the incident; firing again within the quiet time reopens it.

use std::collections::BTreeSet;
use std::time::Duration;

use super::incidents::IncidentChange;
use super::{Service, ServiceError, ServiceResult};
use crate::domain::{ComponentStatus, Impact, IncidentStatus, NewIncident, Role};
use crate::store::{AlertGroup, StoreError};

/// One notification from a monitor about one alert group, as its payload says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertNotice {
    /// `alertmanager`, `grafana` or `uptime-kuma`.
    pub source: String,
    pub group_key: String,
    /// The group as a whole: some alert in it fires.
    pub firing: bool,
    /// The identities of the firing alerts (fingerprints), with a line saying what each is.
    pub alerts: Vec<(String, String)>,
    /// A title for an incident this opens.
    pub title: String,
    pub impact: Impact,
    /// The components the firing alerts name, each with the status the alert gives it.
    pub components: Vec<(i64, ComponentStatus)>,
    /// What fired, for the maintainer publishing a draft (labels, links).
    pub detail: String,
}

/// How alerts become incidents (from the settings).
#[derive(Debug, Clone)]
pub struct AlertPolicy {
    pub quiet: Duration,
    /// Publish at once (else a draft).
    pub publish: bool,
}

/// What a notice did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertOutcome {
    Opened,
    /// A new alert joined the group: one update.
    Updated,
    Resolved,
    Reopened,
    /// The group's last state again (a repeat): nothing written, nothing announced.
    Unchanged,
    /// A resolution for a group Herald never saw firing, or a test notification.
    Ignored,
}

impl AlertOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Opened => "opened",
            Self::Updated => "updated",
            Self::Resolved => "resolved",
            Self::Reopened => "reopened",
            Self::Unchanged => "unchanged",
            Self::Ignored => "ignored",
        }
    }
}

/// How many alerts an update lists by name; the rest are counted.
const LISTED: usize = 10;

/// The alerts as a markdown list, at most [`LISTED`] of them (a group of hundreds still makes
/// an update within its length limit, so the monitor's notification is never refused for it).
fn lines(alerts: &[(String, String)]) -> String {
    let mut text = alerts
        .iter()
        .take(LISTED)
        .map(|(_, line)| format!("- {}", line.chars().take(300).collect::<String>()))
        .collect::<Vec<_>>()
        .join("\n");
    if alerts.len() > LISTED {
        text.push_str(&format!("\n- … and {} more", alerts.len() - LISTED));
    }
    text
}

fn ids(alerts: &[(String, String)]) -> Vec<String> {
    let set: BTreeSet<&String> = alerts.iter().map(|(id, _)| id).collect();
    set.into_iter().cloned().collect()
}

impl Service {
    /// Take a monitor's notice about an alert group: open, update, resolve or reopen the
    /// group's incident, or nothing for a repeat. Changes to one group queue behind each
    /// other in this process; across instances the group's key is unique in the database,
    /// so two instances opening the same group race and one of them retries as an update.
    pub async fn receive_alert(
        &self,
        notice: &AlertNotice,
        policy: &AlertPolicy,
    ) -> ServiceResult<(AlertOutcome, Option<i64>)> {
        self.require(Role::Reporter)?;
        let key = notice
            .source
            .bytes()
            .chain([0])
            .chain(notice.group_key.bytes())
            .fold(0i64, |h, b| h.wrapping_mul(131).wrapping_add(i64::from(b)));
        let _queue = self.alert_locks[key.rem_euclid(super::commit::STRIPES as i64) as usize]
            .lock()
            .await;
        for _ in 0..super::commit::MAX_CONFLICT_RETRIES {
            match self.alert_once(notice, policy).await {
                Err(ServiceError::Store(StoreError::Conflict)) => continue,
                Err(ServiceError::Store(StoreError::Database(sqlx::Error::Database(e))))
                    if e.is_unique_violation() =>
                {
                    // Another instance opened this group's incident first.
                    continue;
                }
                other => return other,
            }
        }
        Err(StoreError::Conflict.into())
    }

    async fn alert_once(
        &self,
        notice: &AlertNotice,
        policy: &AlertPolicy,
    ) -> ServiceResult<(AlertOutcome, Option<i64>)> {
        let now = self.now();
        let group = self
            .store
            .alert_group(&notice.source, &notice.group_key)
            .await?;
        let firing_ids = ids(&notice.alerts);
        let state = AlertGroup {
            source: notice.source.clone(),
            group_key: notice.group_key.clone(),
            incident_id: 0,
            firing: notice.firing,
            alerts: if notice.firing {
                firing_ids.clone()
            } else {
                Vec::new()
            },
            detail: notice.detail.clone(),
            changed_at: now,
            was: None,
        };
        let Some(group) = group else {
            if !notice.firing {
                return Ok((AlertOutcome::Ignored, None));
            }
            return self.open_from_alert(notice, policy, &state).await;
        };
        let id = group.incident_id;
        // Written only if the group is still as read here: a change another instance made
        // meanwhile makes this one start again from the group as it is then.
        let state = AlertGroup {
            incident_id: id,
            was: Some((group.firing, group.alerts.clone(), group.changed_at)),
            ..state
        };
        match (group.firing, notice.firing) {
            (true, true) => {
                let before: BTreeSet<&String> = group.alerts.iter().collect();
                let joined: Vec<(String, String)> = notice
                    .alerts
                    .iter()
                    .filter(|(id, _)| !before.contains(id))
                    .cloned()
                    .collect();
                if joined.is_empty() {
                    if group.alerts == firing_ids {
                        return Ok((AlertOutcome::Unchanged, Some(id)));
                    }
                    // Some alerts stopped while others fire: remembered, not announced.
                    self.change_incident("incident.alert", Role::Reporter, id, |_, _| {
                        Ok(IncidentChange {
                            updates: Vec::new(),
                            alert: Some(state.clone()),
                        })
                    })
                    .await?;
                    return Ok((AlertOutcome::Unchanged, Some(id)));
                }
                let body = format!(
                    "{} more alert{} firing:\n{}",
                    joined.len(),
                    if joined.len() == 1 { "" } else { "s" },
                    lines(&joined)
                );
                let components = notice.components.clone();
                self.change_incident("incident.alert", Role::Reporter, id, |i, now| {
                    if !i.is_open() {
                        // Resolved by hand while the group still fired: only remembered.
                        return Ok(IncidentChange {
                            updates: Vec::new(),
                            alert: Some(state.clone()),
                        });
                    }
                    let joined = i.joined_components(&components);
                    Ok(IncidentChange {
                        updates: vec![i.post_update(None, &body, joined, now)?],
                        alert: Some(state.clone()),
                    })
                })
                .await?;
                Ok((AlertOutcome::Updated, Some(id)))
            }
            (false, false) => Ok((AlertOutcome::Unchanged, Some(id))),
            (true, false) => {
                let (_, change) = self
                    .commit_incident("incident.alert", Role::Reporter, id, |i, now| {
                        if !i.is_open() {
                            return Ok(IncidentChange {
                                updates: Vec::new(),
                                alert: Some(state.clone()),
                            });
                        }
                        Ok(IncidentChange {
                            updates: vec![i.resolve(
                                "The alerts have resolved; the monitor reports everything back \
                             to normal.",
                                now,
                            )?],
                            alert: Some(state.clone()),
                        })
                    })
                    .await?;
                // Resolved by hand already: the group's state was only remembered.
                let outcome = if change.updates.is_empty() {
                    AlertOutcome::Unchanged
                } else {
                    AlertOutcome::Resolved
                };
                Ok((outcome, Some(id)))
            }
            (false, true) => {
                let incident = self.incident(id).await?;
                let quiet = jiff::SignedDuration::try_from(policy.quiet).unwrap_or_default();
                let within_quiet = now.duration_since(group.changed_at) <= quiet;
                if incident.is_open() || within_quiet {
                    let body = format!("The alert fired again:\n{}", lines(&notice.alerts));
                    let components = notice.components.clone();
                    let impact = notice.impact;
                    let (_, change) = self
                        .commit_incident("incident.alert", Role::Reporter, id, |i, now| {
                            // What fires now joins what the incident names; a higher
                            // impact raises the incident's.
                            let joined = i.joined_components(&components);
                            i.impact = i.impact.max(impact);
                            let update = if i.is_open() {
                                i.post_update(None, &body, joined, now)?
                            } else {
                                i.reopen(&body, joined, now)?
                            };
                            Ok(IncidentChange {
                                updates: vec![update],
                                alert: Some(state.clone()),
                            })
                        })
                        .await?;
                    let reopened = change
                        .updates
                        .iter()
                        .any(|u| u.kind == crate::domain::IncidentUpdateKind::Reopened);
                    return Ok((
                        if reopened {
                            AlertOutcome::Reopened
                        } else {
                            AlertOutcome::Updated
                        },
                        Some(id),
                    ));
                }
                // Long quiet: a new incident, and the group follows it from now on.
                self.open_from_alert(notice, policy, &state).await
            }
        }
    }

    async fn open_from_alert(
        &self,
        notice: &AlertNotice,
        policy: &AlertPolicy,
        state: &AlertGroup,
    ) -> ServiceResult<(AlertOutcome, Option<i64>)> {
        let body = format!(
            "Our monitoring reports a problem; we are investigating.\n\n{}",
            lines(&notice.alerts)
        );
        let new = NewIncident {
            title: notice.title.clone(),
            impact: notice.impact,
            status: IncidentStatus::Investigating,
            components: notice.components.clone(),
            body,
            publish: policy.publish,
            maintenance_id: None,
            rollout_id: None,
            source: notice.source.clone(),
        };
        let i = self.open_incident(new, Some(state)).await?;
        Ok((AlertOutcome::Opened, Some(i.id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_ids_are_a_set() {
        let a = vec![
            ("b".to_owned(), "B".to_owned()),
            ("a".to_owned(), "A".to_owned()),
            ("b".to_owned(), "B".to_owned()),
        ];
        assert_eq!(ids(&a), vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(lines(&a[..1]), "- B");
    }

    #[test]
    fn a_large_group_is_listed_within_an_update_s_limit() {
        let many: Vec<(String, String)> = (0..1000)
            .map(|n| (format!("fp{n}"), "x".repeat(2000)))
            .collect();
        let text = lines(&many);
        assert!(text.ends_with("- … and 990 more"), "{text}");
        assert!(text.chars().count() < crate::domain::limits::UPDATE_MAX - 200);
    }
}
