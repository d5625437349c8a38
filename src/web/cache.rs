//! Rendered public pages kept in memory: rendered once per change, compressed once (brotli and
//! gzip), answered with an ETag so repeat visitors get a 304. The page cache drops an entry when
//! the service's change counter moves or the entry is older than its time limit (pages show
//! relative times such as "running for 40 min"). When a page cannot be rendered (the database
//! is away), the last rendering is served, however old.
//!
//! A page's key is its canonical request target (the path and query a link to it has). The
//! router's innermost layer ([`serve_fresh`]) answers a GET for exactly a fresh page's key from
//! here, before the handler and its extractors run; every other layer (request id, metrics,
//! security headers, error pages) applies to that answer as to any other.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::service::Freshness;

/// Brotli quality for everything Herald compresses (pages, assets, the API reference), measured
/// on the 8.7 KB demo page: 5 compresses in 0.5 ms with 1.7 MB of encoder memory to 2.0 KB; 9
/// takes 8 ms and 9 MB for the same size; 11 takes 20 ms for 1.75 KB, and its large transient
/// buffers raised Herald's peak RSS from 17 to 86 MB at start. Renders happen under load.
pub const PAGE_BROTLI_QUALITY: u32 = 5;

/// How a response may be cached by browsers and proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CachePolicy {
    /// Public pages: revalidate each time (cheap with the ETag).
    Revalidate,
    /// Hashed asset URLs: never change.
    Immutable,
}

impl CachePolicy {
    fn header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::Revalidate => "public, max-age=0, must-revalidate",
            Self::Immutable => "public, max-age=31536000, immutable",
        })
    }
}

/// A response body in every encoding, with its validators.
#[derive(Debug, Clone)]
pub struct CachedPage {
    status: StatusCode,
    identity: Bytes,
    gzip: Bytes,
    brotli: Bytes,
    etag: HeaderValue,
    hash: String,
    content_type: HeaderValue,
    cache_control: HeaderValue,
    /// `Access-Control-Allow-Origin: *` on every answer (the Statuspage-compatible JSON).
    any_origin: bool,
}

enum Encoding {
    Identity,
    Gzip,
    Brotli,
}

/// Pick the best encoding the client accepts (`q=0` means "not this one").
fn negotiate(headers: &HeaderMap) -> Encoding {
    let Some(accept) = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
    else {
        return Encoding::Identity;
    };
    let (mut br, mut gzip) = (false, false);
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let refused = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        match coding {
            "br" => br = !refused,
            "gzip" => gzip = !refused,
            "*" if !refused => {
                br = true;
                gzip = true;
            }
            _ => {}
        }
    }
    if br {
        Encoding::Brotli
    } else if gzip {
        Encoding::Gzip
    } else {
        Encoding::Identity
    }
}

impl CachedPage {
    /// Compress `body` once; `brotli_quality` 11 for assets built at start, lower for pages.
    pub fn new(
        body: Bytes,
        content_type: &'static str,
        policy: CachePolicy,
        brotli_quality: u32,
    ) -> Self {
        Self::with_status(StatusCode::OK, body, content_type, policy, brotli_quality)
    }

    pub fn with_status(
        status: StatusCode,
        body: Bytes,
        content_type: &'static str,
        policy: CachePolicy,
        brotli_quality: u32,
    ) -> Self {
        let hash = hex(&Sha256::digest(&body));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&body).expect("writing to memory cannot fail");
        let gzip = gz.finish().expect("writing to memory cannot fail");
        let mut brotli = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut brotli, 4096, brotli_quality, 22);
            w.write_all(&body).expect("writing to memory cannot fail");
        }
        // A weak validator: the same content in any encoding matches.
        let etag = HeaderValue::from_str(&format!("W/\"{}\"", &hash[..20]))
            .expect("hex is a valid header value");
        Self {
            status,
            identity: body,
            gzip: gzip.into(),
            brotli: brotli.into(),
            etag,
            hash,
            content_type: HeaderValue::from_static(content_type),
            cache_control: policy.header(),
            any_origin: false,
        }
    }

    /// Readable from any origin's scripts (CORS open), for public JSON that widgets fetch.
    pub fn for_any_origin(mut self) -> Self {
        self.any_origin = true;
        self
    }

    /// Hex SHA-256 of the uncompressed body.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    pub fn body(&self) -> &Bytes {
        &self.identity
    }

    fn not_modified(&self, headers: &HeaderMap) -> bool {
        let Some(inm) = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let ours = self.etag.to_str().unwrap_or_default();
        let ours = ours.trim_start_matches("W/");
        inm.split(',').any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/") == ours
        })
    }

    /// Answer a request: 304 when the client has it, else the best encoding it accepts.
    pub fn respond(&self, headers: &HeaderMap) -> Response {
        let mut response = if self.status == StatusCode::OK && self.not_modified(headers) {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            let (body, encoding) = match negotiate(headers) {
                Encoding::Brotli => (self.brotli.clone(), Some("br")),
                Encoding::Gzip => (self.gzip.clone(), Some("gzip")),
                Encoding::Identity => (self.identity.clone(), None),
            };
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = self.status;
            let h = response.headers_mut();
            h.insert(header::CONTENT_TYPE, self.content_type.clone());
            if let Some(encoding) = encoding {
                h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
            }
            response
        };
        let h = response.headers_mut();
        h.insert(header::ETAG, self.etag.clone());
        h.insert(header::CACHE_CONTROL, self.cache_control.clone());
        h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        if self.any_origin {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        }
        response
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Entry {
    page: Arc<CachedPage>,
    /// What the page was rendered from.
    data: Freshness,
    rendered: Instant,
    /// When it was last asked for (a tick of [`PageCache::ticks`]): the least recently used
    /// entry goes first when the cache is full.
    used: AtomicU64,
}

/// A page that does not exist, remembered briefly: asking again for it costs no query.
struct Missing {
    data: Freshness,
    rendered: Instant,
}

/// How long "there is no such page" is believed (unless something changes first).
const MISSING_FOR: Duration = Duration::from_secs(10);

/// A render that takes longer than this is given up: the database is taken as away (a halted
/// host answers nothing, and TCP would wait minutes) and the page as last rendered is served.
const RENDER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a page may lag behind minor changes (drain counts, report times).
const MINOR_LAG: Duration = Duration::from_secs(1);

/// Public pages by path.
/// An error a render can end in, as far as the cache cares: the database being away, or not.
pub trait RenderError {
    fn is_unavailable(&self) -> bool;
    /// The error for a page that cannot be rendered because the database is known to be away.
    fn unavailable() -> Self;
    /// The error for a page never rendered before while too many such renders are under way
    /// (a flood of made-up addresses).
    fn busy() -> Self;
    /// The page does not exist (remembered briefly, see [`MISSING_FOR`]).
    fn is_not_found(&self) -> bool;
    fn not_found() -> Self;
}

impl RenderError for super::error::AppError {
    fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    fn unavailable() -> Self {
        Self::Unavailable(anyhow::anyhow!("the database is away"))
    }

    fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound)
    }

    fn not_found() -> Self {
        Self::NotFound
    }

    fn busy() -> Self {
        Self::TooManyRequests("Too many requests for pages that do not exist. Try again.".into())
    }
}

/// Renders of pages not in the cache at once (each needs a database connection; SQLite's
/// pool has three): a flood of made-up addresses takes at most this many connections, and
/// `/` and the pages already kept render beside it.
const COLD_RENDERS: usize = 1;
/// How long a render of a page not in the cache waits for its turn before answering 429.
const COLD_WAIT: Duration = Duration::from_millis(250);

/// How often, while the database is away, one background probe asks whether it is back.
const AWAY_PROBE_EVERY: Duration = Duration::from_millis(500);

pub struct PageCache {
    /// The database is known to be away (a render failed for it): pages are answered from
    /// what was last rendered at once, and nothing waits for a connection, until a probe in
    /// the background finds it back. Without this, every request waited for the pool's
    /// timeout before falling back to the stale page.
    away: Arc<AtomicBool>,
    /// Pings the database for the probe (`None`: no probe; the next render tries).
    probe: Option<Arc<dyn crate::store::Store>>,
    entries: RwLock<HashMap<String, Entry>>,
    /// Pages found not to exist, by key (at most `max_entries`, oldest dropped first): kept
    /// apart so a flood of made-up addresses never pushes a real page out.
    missing: RwLock<HashMap<String, Missing>>,
    /// One render per key at a time: under a spike after a change, the first request renders
    /// and the others for the same page wait for its result (or get the page as last
    /// rendered meanwhile); renders of different pages do not wait for each other.
    rendering: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// A counter that orders uses, for the least-recently-used eviction.
    ticks: AtomicU64,
    /// Turns for rendering a page not kept (see [`COLD_RENDERS`]).
    cold: tokio::sync::Semaphore,
    max_age: Duration,
    max_entries: usize,
}

impl PageCache {
    pub fn new(max_age: Duration) -> Self {
        Self {
            away: Arc::new(AtomicBool::new(false)),
            probe: None,
            entries: RwLock::new(HashMap::new()),
            missing: RwLock::new(HashMap::new()),
            rendering: std::sync::Mutex::new(HashMap::new()),
            ticks: AtomicU64::new(0),
            cold: tokio::sync::Semaphore::new(COLD_RENDERS),
            max_age,
            max_entries: 512,
        }
    }

    /// At most `n` pages kept (and as many missing ones remembered).
    pub fn with_capacity(mut self, n: usize) -> Self {
        self.max_entries = n.max(1);
        self
    }

    fn fresh(&self, key: &str, now: Freshness) -> Option<Arc<CachedPage>> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(key)?;
        if !self.is_fresh(entry.data, entry.rendered, now) {
            return None;
        }
        entry.used.store(
            self.ticks.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        Some(entry.page.clone())
    }

    /// Whether `key` was found not to exist, recently and with nothing changed since.
    fn known_missing(&self, key: &str, now: Freshness) -> bool {
        let missing = self.missing.read().unwrap_or_else(|e| e.into_inner());
        missing.get(key).is_some_and(|m| {
            m.rendered.elapsed() < MISSING_FOR && self.is_fresh(m.data, m.rendered, now)
        })
    }

    fn is_fresh(&self, data: Freshness, rendered: Instant, now: Freshness) -> bool {
        let age = self.max_age.as_secs() as i64;
        let elapsed = rendered.elapsed();
        data.generation == now.generation
            && (data.minor == now.minor || elapsed < MINOR_LAG)
            && elapsed < self.max_age
            && (now.clock - data.clock).abs() < age
    }

    /// Remember that `key` does not exist, dropping the oldest such memory when full.
    fn remember_missing(&self, key: &str, now: Freshness) {
        let mut missing = self.missing.write().unwrap_or_else(|e| e.into_inner());
        if missing.len() >= self.max_entries && !missing.contains_key(key) {
            // Only an economy, under a flood of new addresses at thousands a second: start
            // afresh rather than search for the oldest each time.
            missing.clear();
        }
        missing.insert(
            key.to_owned(),
            Missing {
                data: now,
                rendered: Instant::now(),
            },
        );
    }

    /// Keep `page` at `key`, making room by dropping the least recently used page.
    fn keep(&self, key: &str, page: Arc<CachedPage>, now: Freshness) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.max_entries
            && !entries.contains_key(key)
            && let Some(coldest) = entries
                .iter()
                .min_by_key(|(_, e)| e.used.load(Ordering::Relaxed))
                .map(|(k, _)| k.clone())
        {
            entries.remove(&coldest);
        }
        entries.insert(
            key.to_owned(),
            Entry {
                page,
                data: now,
                rendered: Instant::now(),
                used: AtomicU64::new(self.ticks.fetch_add(1, Ordering::Relaxed)),
            },
        );
        drop(entries);
        let mut missing = self.missing.write().unwrap_or_else(|e| e.into_inner());
        missing.remove(key);
    }

    /// The lock that one render of `key` holds at a time.
    fn render_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut rendering = self.rendering.lock().unwrap_or_else(|e| e.into_inner());
        rendering.entry(key.to_owned()).or_default().clone()
    }

    /// Forget `key`'s render lock once nobody else holds or waits for it.
    fn release_render_lock(&self, key: &str, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut rendering = self.rendering.lock().unwrap_or_else(|e| e.into_inner());
        // Ours and the map's: nobody else waits.
        if Arc::strong_count(&lock) <= 2 {
            rendering.remove(key);
        }
    }

    /// A cache that, once a render fails for the database being away, probes `store` in the
    /// background until it answers again.
    pub fn with_probe(mut self, store: Arc<dyn crate::store::Store>) -> Self {
        self.probe = Some(store);
        self
    }

    /// Whether the database is known to be away right now.
    pub fn database_away(&self) -> bool {
        self.away.load(Ordering::Acquire)
    }

    /// The database failed to answer (a render, a request, the readiness check): answer from
    /// what is kept until a probe finds it back.
    pub fn mark_away(&self) {
        let Some(store) = self.probe.clone() else {
            return;
        };
        if self.away.swap(true, Ordering::AcqRel) {
            return; // a probe runs already
        }
        tracing::warn!("the database is away: pages are served as last rendered until it is back");
        let away = self.away.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(AWAY_PROBE_EVERY).await;
                if !away.load(Ordering::Acquire) {
                    return; // found back elsewhere (the readiness check)
                }
                let answered = tokio::time::timeout(Duration::from_secs(2), store.ping())
                    .await
                    .is_ok_and(|r| r.is_ok());
                if answered {
                    away.store(false, Ordering::Release);
                    tracing::info!("the database is back: pages are rendered again");
                    return;
                }
            }
        });
    }

    /// The database answered (the readiness check): render again.
    pub fn mark_back(&self) {
        if self.away.swap(false, Ordering::AcqRel) {
            tracing::info!("the database is back: pages are rendered again");
        }
    }

    /// The page as last rendered, however old (counted as stale).
    fn kept(&self, key: &str) -> Option<Arc<CachedPage>> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.get(key).map(|entry| {
            metrics::counter!("herald_page_stale_served_total").increment(1);
            entry.page.clone()
        })
    }

    /// The page whose key is exactly `target`, if it is fresh; `Some(None)` when it was
    /// found not to exist moments ago.
    pub fn fresh_page(&self, target: &str, now: Freshness) -> Option<Option<Arc<CachedPage>>> {
        if let Some(page) = self.fresh(target, now) {
            return Some(Some(page));
        }
        self.known_missing(target, now).then_some(None)
    }

    /// The page at `key` for the data as `now` describes it, rendering it with `render` if
    /// needed. `key` is the page's canonical request target (`/maintenance/3`,
    /// `/history?page=2`): a GET for exactly it may later be answered from here directly.
    /// Either clock moving on by the maximum age makes the page old: the wall clock in
    /// production, the service's own where a test moves it.
    pub async fn get_or_render<F, Fut, E>(
        &self,
        key: &str,
        now: Freshness,
        render: F,
    ) -> Result<Arc<CachedPage>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<CachedPage, E>>,
        E: RenderError,
    {
        if let Some(page) = self.fresh(key, now) {
            return Ok(page);
        }
        if self.known_missing(key, now) {
            return Err(E::not_found());
        }
        // Known away: at once, from what is kept (or a 503), without waiting for a connection.
        if self.database_away() {
            return self.kept(key).ok_or_else(E::unavailable);
        }
        let lock = self.render_lock(key);
        let result = async {
            let _rendering = match lock.try_lock() {
                Ok(guard) => guard,
                Err(_) => {
                    // Another request renders this page: the page as last rendered now, if
                    // there is one, else wait for that render.
                    if let Some(page) = self.kept_quietly(key) {
                        return Ok(page);
                    }
                    lock.lock().await
                }
            };
            if let Some(page) = self.fresh(key, now) {
                return Ok(page);
            }
            if self.known_missing(key, now) {
                return Err(E::not_found());
            }
            if self.database_away() {
                return self.kept(key).ok_or_else(E::unavailable);
            }
            // A page never kept waits its turn among such renders: a flood of made-up
            // addresses cannot take every database connection from the pages people read.
            let _cold = if self.kept_quietly(key).is_none() {
                match tokio::time::timeout(COLD_WAIT, self.cold.acquire()).await {
                    Ok(Ok(permit)) => Some(permit),
                    _ => return Err(E::busy()),
                }
            } else {
                None
            };
            let started = Instant::now();
            let rendered = match tokio::time::timeout(RENDER_TIMEOUT, render()).await {
                Ok(rendered) => rendered,
                Err(_) => {
                    tracing::warn!(
                        page = key,
                        "a render took over 5 s: the database is taken as away"
                    );
                    Err(E::unavailable())
                }
            };
            let page = match rendered {
                Ok(page) => Arc::new(page),
                Err(e) if e.is_not_found() => {
                    self.remember_missing(key, now);
                    return Err(e);
                }
                // The database is away (a failover, say): the page as last rendered, however
                // old, beats an error page. Visitors of a status page come when things break.
                Err(e) => {
                    if e.is_unavailable() {
                        self.mark_away();
                    }
                    return self.kept(key).ok_or(e);
                }
            };
            let label = key.split(['/', '?']).nth(1).unwrap_or("").to_owned();
            metrics::counter!("herald_page_renders_total", "page" => label).increment(1);
            metrics::histogram!("herald_page_render_seconds").record(started.elapsed());
            self.keep(key, page.clone(), now);
            Ok(page)
        }
        .await;
        self.release_render_lock(key, lock);
        result
    }

    /// The page as last rendered, if any, without counting it as a stale answer (it is
    /// moments old: its new render is under way).
    fn kept_quietly(&self, key: &str) -> Option<Arc<CachedPage>> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.get(key).map(|entry| entry.page.clone())
    }
}

/// The router's innermost layer: a GET for exactly the key of a fresh cached page is answered
/// from memory without running the handler. During
/// the spike of visitors an outage brings, nearly every request is one of these.
pub async fn serve_fresh(
    axum::extract::State(state): axum::extract::State<super::AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if request.method() == axum::http::Method::GET
        && let Some(target) = request.uri().path_and_query()
        && let Some(page) = state
            .pages
            .fresh_page(target.as_str(), state.service.freshness())
    {
        return match page {
            Some(page) => page.respond(request.headers()),
            None => super::error::AppError::NotFound.into_response(),
        };
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::error::AppError;
    use std::sync::atomic::AtomicUsize;

    const NOW: Freshness = Freshness {
        generation: 1,
        minor: 0,
        clock: 0,
    };

    fn page(text: &str) -> CachedPage {
        CachedPage::new(
            Bytes::from(text.to_owned()),
            "text/plain",
            CachePolicy::Revalidate,
            1,
        )
    }

    async fn body(cache: &PageCache, key: &str, renders: &AtomicUsize) -> Result<String, AppError> {
        let text = key.to_owned();
        cache
            .get_or_render(key, NOW, || async {
                renders.fetch_add(1, Ordering::SeqCst);
                if text.starts_with("/missing") {
                    Err(AppError::NotFound)
                } else {
                    Ok(page(&text))
                }
            })
            .await
            .map(|p| String::from_utf8(p.identity.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn the_least_recently_used_page_goes_first() {
        let cache = PageCache::new(Duration::from_secs(60)).with_capacity(2);
        let renders = AtomicUsize::new(0);
        body(&cache, "/", &renders).await.unwrap();
        body(&cache, "/history", &renders).await.unwrap();
        body(&cache, "/", &renders).await.unwrap(); // `/` is used again
        body(&cache, "/maintenance/1", &renders).await.unwrap(); // full: /history goes
        assert_eq!(renders.load(Ordering::SeqCst), 3);
        body(&cache, "/", &renders).await.unwrap();
        assert_eq!(renders.load(Ordering::SeqCst), 3, "`/` was kept");
        body(&cache, "/history", &renders).await.unwrap();
        assert_eq!(renders.load(Ordering::SeqCst), 4, "/history was dropped");
    }

    #[tokio::test]
    async fn a_missing_page_is_remembered_briefly_and_never_pushes_a_page_out() {
        let cache = PageCache::new(Duration::from_secs(60)).with_capacity(2);
        let renders = AtomicUsize::new(0);
        body(&cache, "/", &renders).await.unwrap();
        for i in 0..10 {
            let key = format!("/missing/{i}");
            assert!(matches!(
                body(&cache, &key, &renders).await,
                Err(AppError::NotFound)
            ));
            assert!(matches!(
                body(&cache, &key, &renders).await,
                Err(AppError::NotFound)
            ));
        }
        // Each missing page was asked for once; `/` was never pushed out.
        assert_eq!(renders.load(Ordering::SeqCst), 11);
        body(&cache, "/", &renders).await.unwrap();
        assert_eq!(renders.load(Ordering::SeqCst), 11);
        assert!(matches!(cache.fresh_page("/missing/9", NOW), Some(None)));
        // Something changed: the page may exist now.
        let later = Freshness {
            generation: 2,
            ..NOW
        };
        assert!(cache.fresh_page("/missing/9", later).is_none());
    }

    #[tokio::test]
    async fn a_slow_render_holds_only_its_own_page() {
        let cache = Arc::new(PageCache::new(Duration::from_secs(60)));
        let renders = AtomicUsize::new(0);
        body(&cache, "/maintenance/1", &renders).await.unwrap();
        let (release, held) = tokio::sync::oneshot::channel::<()>();
        let changed = Freshness {
            generation: 2,
            ..NOW
        };
        let slow = {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .get_or_render("/maintenance/1", changed, || async {
                        let _ = held.await;
                        Ok::<_, AppError>(page("new"))
                    })
                    .await
                    .unwrap()
            })
        };
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Another page renders meanwhile.
        let other = tokio::time::timeout(
            Duration::from_secs(1),
            cache.get_or_render("/", changed, || async { Ok::<_, AppError>(page("front")) }),
        )
        .await
        .expect("`/` waited for another page's render")
        .unwrap();
        assert_eq!(&other.identity[..], b"front");
        // The same page, while its new render is pending: the last good one, at once.
        let same = tokio::time::timeout(
            Duration::from_secs(1),
            cache.get_or_render("/maintenance/1", changed, || async {
                Ok::<_, AppError>(page("should not render"))
            }),
        )
        .await
        .expect("waited for the pending render")
        .unwrap();
        assert_eq!(&same.identity[..], b"/maintenance/1");
        release.send(()).unwrap();
        assert_eq!(&slow.await.unwrap().identity[..], b"new");
    }

    #[tokio::test(start_paused = true)]
    async fn a_render_that_hangs_is_given_up() {
        let cache = PageCache::new(Duration::from_secs(3600));
        let renders = AtomicUsize::new(0);
        body(&cache, "/", &renders).await.unwrap();
        let changed = Freshness {
            generation: 2,
            ..NOW
        };
        // A database host that stopped answering: the render never ends.
        let answer = cache
            .get_or_render("/", changed, || {
                std::future::pending::<Result<CachedPage, AppError>>()
            })
            .await
            .unwrap();
        assert_eq!(&answer.identity[..], b"/", "the page as last rendered");
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn negotiates_encodings() {
        assert!(matches!(negotiate(&headers(&[])), Encoding::Identity));
        assert!(matches!(
            negotiate(&headers(&[("accept-encoding", "gzip, deflate, br")])),
            Encoding::Brotli
        ));
        assert!(matches!(
            negotiate(&headers(&[("accept-encoding", "gzip, br;q=0")])),
            Encoding::Gzip
        ));
        assert!(matches!(
            negotiate(&headers(&[("accept-encoding", "identity")])),
            Encoding::Identity
        ));
    }

    #[test]
    fn compressed_bodies_round_trip() {
        let body = Bytes::from("<p>hello</p>".repeat(100));
        let page = CachedPage::new(body.clone(), "text/html", CachePolicy::Revalidate, 5);
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&page.gzip[..]), &mut out)
            .unwrap();
        assert_eq!(out, body);
        let mut out = Vec::new();
        std::io::Read::read_to_end(
            &mut brotli::Decompressor::new(&page.brotli[..], 4096),
            &mut out,
        )
        .unwrap();
        assert_eq!(out, body);
        assert!(page.brotli.len() < body.len() / 5);
    }

    #[test]
    fn etag_matches_in_any_form() {
        let page = CachedPage::new(Bytes::from("x"), "text/plain", CachePolicy::Revalidate, 5);
        let tag = page.etag.to_str().unwrap().to_owned();
        let strong = tag.trim_start_matches("W/").to_owned();
        for inm in [tag.as_str(), strong.as_str(), "\"nope\", *"] {
            let r = page.respond(&headers(&[("if-none-match", inm)]));
            assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{inm}");
        }
        let r = page.respond(&headers(&[("if-none-match", "\"other\"")]));
        assert_eq!(r.status(), StatusCode::OK);
    }
}
