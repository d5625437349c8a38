//! Operations endpoints: liveness, readiness, Prometheus metrics.

use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use super::AppState;

/// `GET /healthz`: 200 while the process lives.
pub async fn healthz() -> impl IntoResponse {
    "ok\n"
}

/// `GET /readyz`: 200 when serving; 503 once draining or when the database does not answer.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let (status, body) = if state.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else if let Err(e) = ping(&state).await {
        tracing::warn!(error = %e, "readiness check: database unreachable");
        state.pages.mark_away();
        (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n")
    } else {
        state.pages.mark_back();
        (StatusCode::OK, "ready\n")
    };
    (status, body)
}

/// A database that takes longer than a load balancer's health check waits counts as away.
async fn ping(state: &AppState) -> Result<(), String> {
    match tokio::time::timeout(Duration::from_secs(2), state.service.store().ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 2 s".into()),
    }
}

/// Whether a request may read `/metrics`: it names channels, sign-in activity and the outbox,
/// which are not the public's. A scraper on this machine may (a loopback connection carrying
/// no forwarding header, so not the public through a reverse proxy on the same host); any
/// other needs `Authorization: Bearer HERALD_METRICS_TOKEN`.
fn may_read_metrics(
    state: &AppState,
    extensions: &axum::http::Extensions,
    headers: &axum::http::HeaderMap,
) -> bool {
    if let Some(token) = &state.settings.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if super::auth::constant_time_eq(given.trim().as_bytes(), token.expose().as_bytes()) {
            return true;
        }
    }
    let local = extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .is_some_and(|c| c.0.ip().is_loopback());
    let forwarded = ["forwarded", "x-forwarded-for", "x-real-ip"]
        .iter()
        .any(|h| headers.contains_key(*h));
    local && !forwarded
}

/// `GET /metrics`: Prometheus text format, for [`may_read_metrics`].
pub async fn metrics(
    State(state): State<AppState>,
    request: axum::extract::Request,
) -> axum::response::Response {
    if !may_read_metrics(&state, request.extensions(), request.headers()) {
        let why = if state.settings.metrics_token.is_some() {
            "Metrics need the bearer token in HERALD_METRICS_TOKEN.\n"
        } else {
            "Metrics are readable from this machine only (set HERALD_METRICS_TOKEN to scrape \
             them from elsewhere).\n"
        };
        return (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            why,
        )
            .into_response();
    }
    state.metrics.run_upkeep();
    // Is the database there? Asked first and briefly, so that a scrape while it is away still
    // answers within Prometheus' timeout (and says so), without waiting for connections.
    let database_up = !state.pages.database_away() && ping(&state).await.is_ok();
    metrics::gauge!("herald_database_up").set(if database_up { 1.0 } else { 0.0 });
    metrics::gauge!("herald_ready").set(if database_up && !state.is_draining() {
        1.0
    } else {
        0.0
    });
    // What the outbox holds, per channel, read at each scrape (when the database is away,
    // the last values stay).
    let backlog = async {
        let channels = state.service.channels().await.ok()?;
        let backlog = state.service.store().outbox_backlog().await.ok()?;
        Some((channels, backlog))
    };
    if database_up
        && let Ok(Some((channels, backlog))) =
            tokio::time::timeout(Duration::from_secs(2), backlog).await
    {
        let now_ms = jiff::Timestamp::now().as_millisecond();
        for c in channels {
            let (pending, oldest, failed) = backlog
                .iter()
                .find(|(id, ..)| *id == c.id)
                .map_or((0, None, 0), |(_, p, o, f)| (*p, *o, *f));
            let label = c.name.clone();
            metrics::gauge!("herald_outbox_pending", "channel" => label.clone())
                .set(pending as f64);
            metrics::gauge!("herald_outbox_failed", "channel" => label.clone()).set(failed as f64);
            metrics::gauge!("herald_outbox_oldest_pending_seconds", "channel" => label)
                .set(oldest.map_or(0.0, |o| (now_ms - o).max(0) as f64 / 1000.0));
        }
    }
    let (busy, idle) = state.service.store().pool_use();
    metrics::gauge!("herald_db_pool_connections", "state" => "busy").set(f64::from(busy));
    metrics::gauge!("herald_db_pool_connections", "state" => "idle").set(f64::from(idle));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::telemetry::render_metrics(&state.metrics),
    )
        .into_response()
}
