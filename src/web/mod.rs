//! HTTP: the router, shared state, and the layers every response passes through (request id,
//! tracing, metrics, security headers).

pub mod assets;
pub mod cache;
pub mod error;
pub mod ops;
pub mod public;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::config::Settings;
use crate::service::Service;

/// Everything handlers share; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub service: Service,
    pub settings: Arc<Settings>,
    pub site: public::Site,
    pub pages: Arc<cache::PageCache>,
    /// Set on the first shutdown signal: `/readyz` answers 503 from then on.
    pub draining: Arc<AtomicBool>,
    pub metrics: PrometheusHandle,
}

/// How long a rendered public page is served before it is rendered again even without a
/// change: pages show relative times ("running for 40 min").
const PAGE_MAX_AGE: Duration = Duration::from_secs(30);

impl AppState {
    pub fn new(service: Service, settings: Settings) -> Self {
        Self {
            service,
            site: public::Site::new(&settings.site_name),
            settings: Arc::new(settings),
            pages: Arc::new(cache::PageCache::new(PAGE_MAX_AGE)),
            draining: Arc::new(AtomicBool::new(false)),
            metrics: crate::telemetry::metrics_handle(),
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

/// Request ids: a per-process random prefix and a counter; unique, cheap, and sortable in logs.
#[derive(Clone)]
struct RequestIds {
    prefix: Arc<str>,
    next: Arc<AtomicU64>,
}

impl RequestIds {
    fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64 ^ u64::from(std::process::id()))
            .unwrap_or_default();
        Self {
            prefix: format!("{:08x}", seed as u32).into(),
            next: Arc::new(AtomicU64::new(1)),
        }
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{}-{n:x}", self.prefix))
            .ok()
            .map(RequestId::new)
    }
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Content-Security-Policy: only Herald's own assets, no inline script or style, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        HeaderName::from_static("permissions-policy"),
        HeaderValue::from_static("camera=(), microphone=(), geolocation=(), interest-cohort=()"),
    );
    response
}

async fn track_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "route" => route)
        .record(started.elapsed());
    response
}

async fn not_found() -> error::AppError {
    error::AppError::NotFound
}

/// The whole application.
pub fn router(state: AppState) -> Router {
    let trace = TraceLayer::new_for_http()
        .make_span_with(|request: &axum::http::Request<_>| {
            let id = request
                .headers()
                .get(&X_REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!(
                "request",
                method = %request.method(),
                path = %request.uri().path(),
                request_id = %id,
            )
        })
        .on_request(())
        .on_response(DefaultOnResponse::new().level(Level::DEBUG))
        // Server errors are logged where they happen, with their cause; a 503 from /readyz
        // while draining is not a failure.
        .on_failure(());
    Router::new()
        .route("/", get(public::index))
        .route("/maintenance/{id}", get(public::maintenance))
        .route("/history", get(public::history))
        .route("/static/{file}", get(assets::serve))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(not_found)
        .route_layer(middleware::from_fn(track_metrics))
        .layer(CatchPanicLayer::custom(|_| {
            error::AppError::Internal(anyhow::anyhow!("handler panicked")).into_response()
        }))
        .layer(middleware::from_fn(security_headers))
        .layer(PropagateRequestIdLayer::new(X_REQUEST_ID.clone()))
        .layer(trace)
        .layer(SetRequestIdLayer::new(
            X_REQUEST_ID.clone(),
            RequestIds::new(),
        ))
        .with_state(state)
}
