//! The admin pages, one module per part: `session` (sign in, setup), the dashboard (here),
//! `windows` (planning and editing), `run` (running a window), `rollouts`, `channels`,
//! `components`, `accounts` (tokens, audit log, users, passwords). Forms post back to the same
//! service calls the API uses; a refused form is shown again with the reason next to the field
//! and what was typed kept. What every page shares (the frame, one way to answer a page,
//! field errors) is here.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use jiff::Timestamp;
use serde::Deserialize;

use super::AppState;
use super::auth::{self, CsrfForm, SignedIn};
use super::error::{AppError, Form, Path, Query};
use super::view::{Site, TimeView, WindowView, time, window_view};
use crate::domain::Scope;
use crate::domain::{
    Automation, DomainError, Impact, NewMaintenance, NewStep, Role, Schedule, StepAction,
    StepState, ValidationError, WindowAction, WindowState,
};
use crate::service::{PasswordCheck, ServiceError};

mod accounts;
pub mod channels;
mod components;
pub mod incidents;
pub mod rollouts;
mod run;
mod session;
pub mod subscribers;
mod windows;

pub use accounts::*;
pub use components::*;
pub use run::*;
pub use session::*;
pub use windows::*;

pub use channels::{
    channels, create_channel, delete_channel, delivery_action, edit_channel, rotate_channel_secret,
    test_channel,
};

/// What every admin page's frame needs.
#[derive(Debug, Clone)]
pub struct Me {
    pub name: String,
    pub csrf: String,
    pub is_admin: bool,
    /// The page's path, for the menu's `aria-current`.
    pub here: String,
    /// What the change that led here did, said once where the eye is.
    pub notice: Option<&'static str>,
}

impl Me {
    /// Whether the menu entry `href` is the page shown (or the section it is in).
    pub fn at(&self, href: &str) -> bool {
        self.here == href
            || (href != "/admin" && self.here.starts_with(&format!("{href}/")))
            || (href == "/admin"
                && self.here.starts_with("/admin/maintenances/")
                && !self.here.ends_with("/new"))
    }
}

fn me(s: &SignedIn) -> Me {
    Me {
        name: s.user.name.clone(),
        csrf: s.csrf.clone(),
        is_admin: s.user.role.allows(Role::Admin),
        here: s.here.clone(),
        notice: s.done.as_deref().and_then(done_notice),
    }
}

/// The notice a page shows after a change (`?done=` on the redirect that follows it, so a
/// reload shows the page, not the change again).
fn done_notice(code: &str) -> Option<&'static str> {
    Some(match code {
        "created" => "Saved as a draft: nothing is public until you announce it.",
        "announced" => "Announced: the window is public and its announcement is on its way.",
        "started" => "Started.",
        "completed" => "Completed.",
        "cancelled" => "Cancelled.",
        "step_started" => "Step started.",
        "step_done" => "Step marked done.",
        "step_failed" => "Step marked failed.",
        "step_skipped" => "Step skipped.",
        "scheduled" => "Schedule saved.",
        "posted" => "Update posted.",
        "corrected" => {
            "Corrected: the page shows the new text, and each channel that posted it gets the correction."
        }
        "withdrawn" => "Withdrawn: it is off the page, and taken down where each channel allows.",
        "saved" => "Saved.",
        "done" => "Done.",
        "plan" => "Plan saved.",
        "retried" => "Sending it again now.",
        "skipped" => "Skipped: the posts after it may go.",
        "paused" => "Paused: it waits until you press Retry or Skip.",
        "channel_added" => "Channel added.",
        "channel_saved" => "Channel saved.",
        "channel_removed" => "Channel removed.",
        "token_created" => "Token created.",
        "token_revoked" => "Token revoked: it stops working at once.",
        "component_added" => "Component added.",
        "component_saved" => "Component saved.",
        "component_removed" => "Component removed.",
        "component_status" => {
            "Status set: the status page shows it until you set it back to operational."
        }
        "user_added" => "User added.",
        "user_removed" => "User removed.",
        "user_role" => "Role changed; their sessions ended.",
        "user_password" => "Password set; their sessions ended.",
        "password" => "Password changed.",
        "rollout_created" => "Rollout created.",
        "incident_draft" => "Saved as a draft: nothing is public until you publish it.",
        "incident_opened" => {
            "Incident opened: it leads the status page and is on its way to the channels."
        }
        "incident_published" => {
            "Published: it leads the status page and is on its way to the channels."
        }
        "incident_resolved" => "Resolved.",
        "incident_reopened" => "Reopened.",
        _ => return None,
    })
}

/// Where to go after a change: `page`, saying what was done.
pub(crate) fn done(page: &str, code: &str) -> Response {
    Redirect::to(&format!("{page}?done={code}")).into_response()
}

fn page(status: StatusCode, t: &impl Template) -> Result<Response, AppError> {
    Ok((status, Html(t.render()?)).into_response())
}

// ----- dashboard -----------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "admin/dashboard.html")]
struct Dashboard {
    site: Site,
    me: Me,
    windows: Vec<WindowView>,
    rollouts: Vec<crate::web::rollouts::RolloutView>,
    /// Open incidents and drafts waiting to be published: (id, title, status, draft).
    incidents: Vec<(i64, String, &'static str, bool)>,
}

pub async fn dashboard(
    State(state): State<AppState>,
    signed_in: SignedIn,
) -> Result<Response, AppError> {
    let now = state.service.now();
    let windows = state
        .service
        .store()
        .open_maintenances()
        .await?
        .iter()
        .map(|m| window_view(m, &[], now))
        .collect();
    let rollouts = state
        .service
        .active_rollouts()
        .await?
        .iter()
        .map(|r| crate::web::rollouts::rollout_view(r, &[], None, now))
        .collect();
    let mut incidents = Vec::new();
    for filter in [
        crate::store::IncidentFilter::Drafts,
        crate::store::IncidentFilter::Open,
    ] {
        for i in state.service.incidents(filter, 0, 20).await?.items {
            if filter == crate::store::IncidentFilter::Drafts && !i.is_open() {
                continue;
            }
            incidents.push((i.id, i.title.clone(), i.status.label(), i.is_draft()));
        }
    }
    page(
        StatusCode::OK,
        &Dashboard {
            site: state.site.clone(),
            me: me(&signed_in),
            windows,
            rollouts,
            incidents,
        },
    )
}
