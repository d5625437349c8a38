//! Logs (tracing) and metrics (Prometheus text at `/metrics`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, Settings};

/// Install the global log subscriber. `RUST_LOG`, when set, wins over the configured filter.
pub fn init_logging(settings: &Settings) -> anyhow::Result<()> {
    let spec = match std::env::var("RUST_LOG") {
        Ok(f) if !f.is_empty() => f,
        _ => settings.log.clone(),
    };
    let mut filter = EnvFilter::try_new(&spec)?;
    if !spec.contains("sqlx") {
        // PostgreSQL's notices ("relation \"_sqlx_migrations\" already exists, skipping" at
        // every start) are not news; its warnings still are.
        filter = filter.add_directive("sqlx::postgres::notice=warn".parse()?);
    }
    // Colour only for a person at a terminal: a file, a pipe or journald gets plain text, and
    // NO_COLOR (https://no-color.org) turns it off everywhere.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match settings.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    }
    .map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}

/// One INFO line per change, with who made it: the audit log's entry, once it is committed
/// (target `herald::audit`).
pub fn log_change(audit: &crate::domain::NewAudit) {
    tracing::info!(
        target: "herald::audit",
        actor = %audit.actor,
        action = %audit.action,
        on = audit.target.as_deref().unwrap_or(""),
        "change"
    );
}

/// The process-wide Prometheus recorder, installed on first use (several test apps in one
/// process share it).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first, which Herald never does.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            metrics::gauge!(
                "herald_build_info",
                "version" => env!("CARGO_PKG_VERSION"),
                "commit" => crate::COMMIT,
            )
            .set(1.0);
            // Nothing is late until the scheduler has looked.
            metrics::gauge!("herald_scheduler_lag_seconds").set(0.0);
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_gauge!(
        "herald_build_info",
        "Always 1: the version and commit this process runs"
    );
    metrics::describe_gauge!(
        "herald_outbox_pending",
        "Deliveries waiting to be sent (or retried), by channel"
    );
    metrics::describe_gauge!(
        "herald_outbox_oldest_pending_seconds",
        metrics::Unit::Seconds,
        "Age of the oldest delivery waiting on a channel"
    );
    metrics::describe_gauge!(
        "herald_outbox_failed",
        "Deliveries that failed and wait for Retry or Skip, by channel"
    );
    metrics::describe_gauge!(
        "herald_db_pool_connections",
        "Database connections this process holds, by state (busy, idle)"
    );
    metrics::describe_gauge!(
        "herald_database_up",
        "1 when the database answered this scrape within 2 s, else 0"
    );
    metrics::describe_gauge!(
        "herald_ready",
        "1 when /readyz would answer 200 (not draining, database up), else 0"
    );
    metrics::describe_gauge!(
        "herald_scheduler_lag_seconds",
        metrics::Unit::Seconds,
        "How late the scheduler ran the last timed change that was due"
    );
    metrics::describe_counter!(
        "http_requests_total",
        "HTTP requests by route, method and status"
    );
    metrics::describe_counter!(
        "herald_page_renders_total",
        "Public pages rendered (cache misses), by page"
    );
    metrics::describe_histogram!(
        "herald_page_render_seconds",
        metrics::Unit::Seconds,
        "Time to render and compress a public page"
    );
}

/// Upper bounds of the latency buckets, in seconds, for every histogram.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// `http_request_duration_seconds` for one route, as bucket counters.
///
/// The exporter's own histograms keep every sample in memory until they are drained; at the
/// tens of thousands of requests a second a cached page is served at, that was megabytes of
/// samples (RSS climbing ~2 MiB a second between drains). Counting into fixed buckets costs
/// two atomic adds and no memory per request.
pub struct RequestDurations {
    route: String,
    /// Count per bucket (not cumulative), the last one for above the largest bound.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl RequestDurations {
    /// The histogram of `route`, created and listed for `/metrics` on first use.
    pub fn for_route(route: &str) -> Arc<Self> {
        let mut all = request_durations()
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(found) = all.iter().find(|h| h.route == route) {
            return found.clone();
        }
        let histogram = Arc::new(Self {
            route: route.to_owned(),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        });
        all.push(histogram.clone());
        histogram
    }

    pub fn record(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

fn request_durations() -> &'static RwLock<Vec<Arc<RequestDurations>>> {
    static ALL: OnceLock<RwLock<Vec<Arc<RequestDurations>>>> = OnceLock::new();
    ALL.get_or_init(Default::default)
}

/// Everything at `/metrics`: the exporter's metrics, then the request durations.
pub fn render_metrics(handle: &PrometheusHandle) -> String {
    let mut out = handle.render();
    let all = request_durations()
        .read()
        .unwrap_or_else(|e| e.into_inner());
    if all.is_empty() {
        return out;
    }
    out.push_str(
        "# HELP http_request_duration_seconds Time to answer HTTP requests, by route\n\
         # TYPE http_request_duration_seconds histogram\n",
    );
    for h in all.iter() {
        // Label values escaped as the text format says: backslash, quote, newline.
        let route = h
            .route
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let mut cumulative = 0;
        for (i, count) in h.buckets.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = BUCKETS.get(i).map_or("+Inf".to_owned(), f64::to_string);
            let _ = writeln!(
                out,
                "http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let sum = h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(
            out,
            "http_request_duration_seconds_sum{{route=\"{route}\"}} {sum}\n\
             http_request_duration_seconds_count{{route=\"{route}\"}} {cumulative}"
        );
    }
    out
}
