//! HTTP: the router, shared state, and the one middleware every request passes through
//! (request id, tracing span, error logging, metrics, security headers).

pub mod admin;
pub mod api;
pub mod assets;
pub mod auth;
pub mod cache;
pub mod error;
pub mod feeds;
pub mod incidents;
pub mod ops;
pub mod public;
pub mod rollouts;
pub mod subscriptions;
pub mod view;

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics::Counter;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::catch_panic::CatchPanicLayer;
use tracing::Instrument;

use crate::config::Settings;
use crate::service::Service;

/// Everything handlers share. One `Arc` inside, so cloning it per request is one increment.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub service: Service,
    pub settings: Settings,
    pub site: view::Site,
    pub pages: cache::PageCache,
    /// Set on the first shutdown signal: `/readyz` answers 503 from then on.
    pub draining: Arc<AtomicBool>,
    pub metrics: PrometheusHandle,
    /// While no user exists: the code that lets the first visitor of `/admin/setup` become
    /// admin (printed in the log at start).
    pub setup_code: Option<crate::config::Secret>,
    /// Each API token's request rate (HERALD_API_RATE_LIMIT).
    pub api_rate: api::TokenRate,
}

impl Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// How long a rendered public page is served before it is rendered again even without a
/// change: pages show relative times ("running for 40 min").
const PAGE_MAX_AGE: Duration = Duration::from_secs(30);

impl AppState {
    pub fn new(service: Service, settings: Settings) -> Self {
        Self::with_setup_code(service, settings, None)
    }

    pub fn with_setup_code(
        service: Service,
        settings: Settings,
        setup_code: Option<crate::config::Secret>,
    ) -> Self {
        Self(Arc::new(Inner {
            setup_code,
            // Handlers change things as someone: `service.acting(signed_in.actor())`. One that
            // forgets is refused by the service, never let through.
            service: service.acting(crate::domain::Actor::Anonymous),
            site: view::Site::from_settings(&settings),
            api_rate: api::TokenRate::new(settings.api_rate_limit),
            settings,
            pages: cache::PageCache::new(PAGE_MAX_AGE).with_probe(service.store().clone()),
            draining: Arc::new(AtomicBool::new(false)),
            metrics: crate::telemetry::metrics_handle(),
        }))
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A request id: the client's (or proxy's) if it sent a sane one, else a per-process random
/// prefix and a counter: unique, cheap, and sortable in logs.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    static PREFIX: LazyLock<u32> = LazyLock::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u32 ^ std::process::id())
            .unwrap_or_default()
    });
    static NEXT: AtomicU64 = AtomicU64::new(1);
    if let Some(given) = headers.get(&X_REQUEST_ID)
        && !given.is_empty()
        && given.len() <= 64
        && given
            .as_bytes()
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
    {
        return given.clone();
    }
    // "prefix-counter" in hex, written without the formatting machinery (this runs per request).
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 8 + 1 + 16];
    let prefix = *PREFIX;
    for (i, b) in buf[..8].iter_mut().enumerate() {
        *b = HEX[(prefix >> (28 - 4 * i) & 0xf) as usize];
    }
    buf[8] = b'-';
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let digits = (16 - n.leading_zeros() as usize / 4).max(1);
    for i in 0..digits {
        buf[9 + i] = HEX[(n >> (4 * (digits - 1 - i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&buf[..9 + digits]).expect("hex is a valid header value")
}

/// Content-Security-Policy: only Herald's own assets, no inline script or style, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

fn security_headers(response: &mut Response, https: bool) {
    let h = response.headers_mut();
    // Served over https (the public URL says so): browsers keep to https for a year. Not
    // includeSubDomains or preload, which would bind hosts Herald does not own.
    if https {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    // The default cache policy, set here once: nothing is stored unless the handler says so
    // (public pages and hashed assets do, through `cache::CachePolicy`). Admin pages, errors,
    // API answers, health and metrics are never served from a cache.
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
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
}

/// The method as a metric label: the standard ones by name, anything else `other`, so made-up
/// methods cannot mint a series each on the public `/metrics`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Metric handles per route, registered once: looking them up by labels on every request
/// allocates and hashes, which shows on a page served at tens of thousands of requests a second.
struct RouteMetrics {
    duration: Arc<crate::telemetry::RequestDurations>,
    counts: RwLock<Vec<(&'static str, u16, Counter)>>,
}

impl RouteMetrics {
    fn record(route: &str, method: &Method, status: u16, elapsed: Duration) {
        let method = method_label(method);
        static ROUTES: LazyLock<RwLock<HashMap<String, Arc<RouteMetrics>>>> =
            LazyLock::new(Default::default);
        let found = ROUTES
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(route)
            .cloned();
        let metrics = found.unwrap_or_else(|| {
            let mut routes = ROUTES.write().unwrap_or_else(|e| e.into_inner());
            routes
                .entry(route.to_owned())
                .or_insert_with(|| {
                    Arc::new(RouteMetrics {
                        duration: crate::telemetry::RequestDurations::for_route(route),
                        counts: RwLock::new(Vec::new()),
                    })
                })
                .clone()
        });
        metrics.duration.record(elapsed);
        let counts = metrics.counts.read().unwrap_or_else(|e| e.into_inner());
        if let Some((_, _, counter)) = counts.iter().find(|(m, s, _)| *s == status && *m == method)
        {
            counter.increment(1);
            return;
        }
        drop(counts);
        let counter = metrics::counter!(
            "http_requests_total",
            "method" => method,
            "route" => route.to_owned(),
            "status" => status.to_string()
        );
        counter.increment(1);
        metrics
            .counts
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push((method, status, counter));
    }
}

/// Around every request: a request id (echoed in `x-request-id`), a tracing span carrying it,
/// the log line for server errors, metrics, and the security headers.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(request.headers());
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let uri = request.uri().clone();
    let span = tracing::debug_span!(
        "request",
        method = %method,
        path = %uri.path(),
        request_id = ?id,
    );
    // The database is known to be away (see `PageCache::database_away`): what needs it answers
    // 503 at once rather than after waiting for a connection; public pages are answered from
    // what was last rendered by their handlers.
    let needs_database = uri.path().starts_with("/admin") || uri.path().starts_with("/api/v1");
    let mut response = if needs_database && state.pages.database_away() {
        let away = error::AppError::Unavailable(anyhow::anyhow!("the database is away"));
        if uri.path().starts_with("/api/") {
            api::ApiError::App(away).into_response()
        } else {
            away.into_response()
        }
    } else {
        next.run(request).instrument(span).await
    };
    let status = response.status();
    if let Some(error::ErrorCause(cause)) = response.extensions_mut().remove() {
        if status == StatusCode::SERVICE_UNAVAILABLE {
            state.pages.mark_away();
            // An outage, not a bug: the cause without a backtrace (/readyz says the same).
            tracing::warn!(
                request_id = ?id,
                method = %method,
                path = %uri.path(),
                status = status.as_u16(),
                error = %cause,
                "request failed: database unavailable"
            );
        } else {
            tracing::error!(
                request_id = ?id,
                method = %method,
                path = %uri.path(),
                status = status.as_u16(),
                error = ?cause,
                "request failed"
            );
        }
    }
    // A page address asked with a method it does not take answers a page saying so, not a
    // bare 405 (the API keeps its own JSON answers).
    if response.status() == StatusCode::METHOD_NOT_ALLOWED
        && !uri.path().starts_with("/api")
        && response.extensions().get::<error::ErrorMessage>().is_none()
    {
        response
            .extensions_mut()
            .insert(error::ErrorMessage(format!(
                "This address does not take {method} requests."
            )));
    }
    error::render_page(&mut response, &state.site);
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let status = response.status().as_u16();
    // The access log: off unless asked for (HERALD_LOG="info,herald::access=debug").
    tracing::debug!(
        target: "herald::access",
        request_id = ?id,
        method = %method,
        path = %uri.path(),
        status,
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        "answered"
    );
    security_headers(
        &mut response,
        state.settings.public_url.starts_with("https://"),
    );
    response.headers_mut().insert(X_REQUEST_ID.clone(), id);
    RouteMetrics::record(route, &method, status, started.elapsed());
    response
}

async fn not_found() -> error::AppError {
    error::AppError::NotFound
}

/// The admin pages and the addresses their forms post to. A GET of a form's address (a
/// bookmark, a sign-in that came back to it) goes to the page the form is on rather than to a
/// bare 405.
fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/admin", get(admin::dashboard))
        .route("/admin/login", get(admin::login_page).post(admin::login))
        .route("/admin/logout", post(admin::logout))
        .route("/admin/setup", get(admin::setup_page).post(admin::setup))
        .route("/admin/maintenances/new", get(admin::new_window))
        .route("/admin/maintenances", post(admin::create_window))
        .route("/admin/maintenances/{id}", get(admin::run))
        .route(
            "/admin/maintenances/{id}/action",
            post(admin::window_action),
        )
        .route(
            "/admin/maintenances/{id}/steps/{position}",
            post(admin::step_action),
        )
        .route("/admin/maintenances/{id}/updates", post(admin::post_update))
        .route(
            "/admin/maintenances/{id}/updates/{update}",
            post(admin::correct_update),
        )
        .route("/admin/maintenances/{id}/schedule", post(admin::reschedule))
        .route(
            "/admin/maintenances/{id}/edit",
            get(admin::edit).post(admin::save_edit),
        )
        .route("/admin/maintenances/{id}/plan", post(admin::edit_plan))
        .route(
            "/admin/tokens",
            get(admin::tokens).post(admin::create_token),
        )
        .route("/admin/tokens/{id}/revoke", post(admin::revoke_token))
        .route("/admin/audit", get(admin::audit))
        .route("/admin/subscribers", get(admin::subscribers::subscribers))
        .route(
            "/admin/subscribers/{id}/delete",
            post(admin::subscribers::remove_subscriber),
        )
        .route(
            "/admin/components",
            get(admin::components).post(admin::create_component),
        )
        .route("/admin/components/{slug}", post(admin::edit_component))
        .route("/admin/users", get(admin::users).post(admin::add_user))
        .route("/admin/users/{name}", post(admin::account_action))
        .route(
            "/admin/password",
            get(admin::password_page).post(admin::change_password),
        )
        .route(
            "/admin/channels",
            get(admin::channels).post(admin::create_channel),
        )
        .route("/admin/channels/{id}", post(admin::edit_channel))
        .route("/admin/channels/{id}/delete", post(admin::delete_channel))
        .route("/admin/channels/{id}/test", post(admin::test_channel))
        .route(
            "/admin/channels/{id}/rotate",
            post(admin::rotate_channel_secret),
        )
        .route(
            "/admin/maintenances/{id}/deliveries/{delivery}",
            post(admin::delivery_action),
        )
        .route(
            "/admin/incidents",
            get(admin::incidents::list).post(admin::incidents::create),
        )
        .route("/admin/incidents/{id}", get(admin::incidents::run))
        .route(
            "/admin/incidents/{id}/updates",
            post(admin::incidents::post_update),
        )
        .route(
            "/admin/incidents/{id}/action",
            post(admin::incidents::action),
        )
        .route(
            "/admin/incidents/{id}/postmortem",
            post(admin::incidents::postmortem),
        )
        .route(
            "/admin/incidents/{id}/deliveries/{delivery}",
            post(admin::incidents::delivery),
        )
        .route("/admin/rollouts/new", get(admin::rollouts::new_rollout))
        .route("/admin/rollouts", post(admin::rollouts::create_rollout))
        .route("/admin/rollouts/{id}", get(admin::rollouts::run))
        .route("/admin/rollouts/{id}/action", post(admin::rollouts::action))
        .route(
            "/admin/rollouts/{id}/targets/{position}",
            post(admin::rollouts::target),
        )
        .route("/admin/rollouts/{id}/edit", post(admin::rollouts::edit))
        .route(
            "/admin/rollouts/{id}/updates",
            post(admin::rollouts::post_update),
        )
        .route(
            "/admin/rollouts/{id}/deliveries/{delivery}",
            post(admin::rollouts::delivery),
        )
        .method_not_allowed_fallback(|method: Method, uri: axum::http::Uri| async move {
            if method == Method::GET || method == Method::HEAD {
                axum::response::Redirect::to(&admin::form_page(uri.path())).into_response()
            } else {
                let mut r = error::AppError::BadRequest(format!(
                    "This address does not take {method} requests."
                ))
                .into_response();
                *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
                r
            }
        })
}

/// The whole application.
/// How long a client may pause while sending a request's body (tower-http's body timeout runs
/// between two parts of it; [`REQUEST_TIMEOUT`] bounds the whole).
pub const REQUEST_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long any request may take in all, its body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub fn router(state: AppState) -> Router {
    let (api_v1, openapi) = api::v1::routes(&state);
    let doc = serde_json::to_value(&openapi).expect("the OpenAPI document serialises");
    let openapi: Arc<str> = serde_json::to_string_pretty(&doc)
        .expect("the OpenAPI document serialises")
        .into();
    let reference = cache::CachedPage::new(
        api::reference::render(state.site.clone(), &doc)
            .expect("the API reference renders")
            .into(),
        "text/html; charset=utf-8",
        cache::CachePolicy::Revalidate,
        cache::PAGE_BROTLI_QUALITY,
    );
    Router::new()
        .merge(api_v1)
        .merge(api::statuspage::routes())
        .route(
            "/api/openapi.json",
            get(move || {
                let doc = openapi.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        doc.to_string(),
                    )
                }
            }),
        )
        .route(
            "/api",
            get(move |request: Request| {
                let page = reference.clone();
                async move { page.respond(request.headers()) }
            }),
        )
        .route("/", get(public::index))
        .route("/maintenance/{id}", get(public::maintenance))
        .route("/rollouts/{id}", get(rollouts::rollout))
        .route("/incidents/{id}", get(incidents::incident))
        .route("/history", get(public::history))
        .route(
            "/subscribe",
            get(subscriptions::form).post(subscriptions::subscribe),
        )
        .route(
            "/subscriptions/{id}/{token}",
            get(subscriptions::manage).post(subscriptions::save),
        )
        .route(
            "/subscriptions/{id}/{token}/confirm",
            get(subscriptions::confirm_page).post(subscriptions::confirm),
        )
        .route(
            "/subscriptions/{id}/{token}/unsubscribe",
            get(subscriptions::unsubscribe_page).post(subscriptions::unsubscribe),
        )
        .route(
            "/feed.atom",
            get(|s: State<AppState>, h: HeaderMap| feeds::site(s, h, feeds::Format::Atom)),
        )
        .route(
            "/components/{slug}/feed.atom",
            get(|s: State<AppState>, p: error::Path<String>, h: HeaderMap| {
                feeds::component(s, p, h, feeds::Format::Atom)
            }),
        )
        .route(
            "/calendar.ics",
            get(|s: State<AppState>, h: HeaderMap| feeds::site(s, h, feeds::Format::Calendar)),
        )
        .route(
            "/components/{slug}/calendar.ics",
            get(|s: State<AppState>, p: error::Path<String>, h: HeaderMap| {
                feeds::component(s, p, h, feeds::Format::Calendar)
            }),
        )
        .route(
            "/badge.svg",
            get(|s: State<AppState>, h: HeaderMap| feeds::site(s, h, feeds::Format::Badge)),
        )
        .route(
            "/components/{slug}/badge.svg",
            get(|s: State<AppState>, p: error::Path<String>, h: HeaderMap| {
                feeds::component(s, p, h, feeds::Format::Badge)
            }),
        )
        .route("/static/{file}", get(assets::serve))
        .merge(admin_routes())
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            cache::serve_fresh,
        ))
        .layer(CatchPanicLayer::custom(|_| {
            error::AppError::Internal(anyhow::anyhow!("handler panicked")).into_response()
        }))
        // A client trickling a body (a Content-Length of a megabyte, a byte every few
        // seconds) holds a connection no longer than this; nor does any request in all.
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            REQUEST_BODY_TIMEOUT,
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_unique_and_keep_a_sane_given_one() {
        let bare = || Request::new(axum::body::Body::empty());
        let a = request_id(bare().headers());
        let b = request_id(bare().headers());
        assert_ne!(a, b);
        let text = a.to_str().unwrap();
        assert_eq!(text.len(), 8 + 1 + text[9..].len());
        assert!(text[..8].bytes().all(|c| c.is_ascii_hexdigit()));
        let mut given = bare();
        given
            .headers_mut()
            .insert(&X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(given.headers()), "abc-123");
        let mut hostile = bare();
        hostile
            .headers_mut()
            .insert(&X_REQUEST_ID, HeaderValue::from_static("a b\"<script>"));
        assert_ne!(request_id(hostile.headers()), "a b\"<script>");
    }
}
