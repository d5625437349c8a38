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
use std::sync::atomic::{AtomicBool, Ordering};
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
}

/// How long a page may lag behind minor changes (drain counts, report times).
const MINOR_LAG: Duration = Duration::from_secs(1);

/// Public pages by path.
/// An error a render can end in, as far as the cache cares: the database being away, or not.
pub trait RenderError {
    fn is_unavailable(&self) -> bool;
    /// The error for a page that cannot be rendered because the database is known to be away.
    fn unavailable() -> Self;
}

impl RenderError for super::error::AppError {
    fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    fn unavailable() -> Self {
        Self::Unavailable(anyhow::anyhow!("the database is away"))
    }
}

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
    /// One render at a time: under a spike after a change, the first request renders and the
    /// others wait for its result instead of rendering the same page in parallel.
    render_lock: tokio::sync::Mutex<()>,
    max_age: Duration,
    max_entries: usize,
}

impl PageCache {
    pub fn new(max_age: Duration) -> Self {
        Self {
            away: Arc::new(AtomicBool::new(false)),
            probe: None,
            entries: RwLock::new(HashMap::new()),
            render_lock: tokio::sync::Mutex::new(()),
            max_age,
            max_entries: 512,
        }
    }

    fn fresh(&self, key: &str, now: Freshness) -> Option<Arc<CachedPage>> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(key)?;
        self.is_fresh(entry, now).then(|| entry.page.clone())
    }

    fn is_fresh(&self, entry: &Entry, now: Freshness) -> bool {
        let age = self.max_age.as_secs() as i64;
        let elapsed = entry.rendered.elapsed();
        entry.data.generation == now.generation
            && (entry.data.minor == now.minor || elapsed < MINOR_LAG)
            && elapsed < self.max_age
            && (now.clock - entry.data.clock).abs() < age
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

    /// The page whose key is exactly `target`, if it is fresh.
    pub fn fresh_page(&self, target: &str, now: Freshness) -> Option<Arc<CachedPage>> {
        self.fresh(target, now)
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
        // Known away: at once, from what is kept (or a 503), without waiting for a connection.
        if self.database_away() {
            return self.kept(key).ok_or_else(E::unavailable);
        }
        let _rendering = self.render_lock.lock().await;
        if let Some(page) = self.fresh(key, now) {
            return Ok(page);
        }
        if self.database_away() {
            return self.kept(key).ok_or_else(E::unavailable);
        }
        let started = Instant::now();
        let page = match render().await {
            Ok(page) => Arc::new(page),
            // The database is away (a failover, say): the page as last rendered, however old,
            // beats an error page. Visitors of a status page come when things break.
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
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.max_entries {
            // Crawlers walking deep history must not grow memory without bound.
            entries.retain(|_, e| e.data.generation == now.generation);
            if entries.len() >= self.max_entries {
                entries.clear();
            }
        }
        entries.insert(
            key.to_owned(),
            Entry {
                page: page.clone(),
                data: now,
                rendered: Instant::now(),
            },
        );
        Ok(page)
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
        return page.respond(request.headers());
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

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
