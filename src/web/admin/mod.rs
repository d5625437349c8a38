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
use crate::service::ServiceError;

mod accounts;
pub mod channels;
mod components;
pub mod rollouts;
mod run;
mod session;
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
}

fn me(s: &SignedIn) -> Me {
    Me {
        name: s.user.name.clone(),
        csrf: s.csrf.clone(),
        is_admin: s.user.role.allows(Role::Admin),
    }
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
    page(
        StatusCode::OK,
        &Dashboard {
            site: state.site.clone(),
            me: me(&signed_in),
            windows,
            rollouts,
        },
    )
}
