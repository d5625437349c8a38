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
        (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n")
    } else {
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

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.metrics.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::telemetry::render_metrics(&state.metrics),
    )
}
