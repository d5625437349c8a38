//! Admin UI sign-in: session cookies, the signed-in user as an extractor, CSRF checks for every
//! state-changing form, and login throttling per account and per client address.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::AppState;
use super::error::AppError;
use crate::domain::{Role, User};
use crate::service::SESSION_LIFETIME;
use crate::store::{Attempts, Store};
use sha2::{Digest, Sha256};

pub const COOKIE: &str = "herald_session";
/// Behind https the cookie carries the `__Host-` prefix: browsers then accept it only when
/// Secure, for this exact host and path `/`, so a sibling subdomain cannot plant or shadow it.
pub const HOST_COOKIE: &str = "__Host-herald_session";

/// The session cookie a request carries, under either name.
pub fn session_from(headers: &HeaderMap) -> Option<String> {
    cookie(headers, HOST_COOKIE).or_else(|| cookie(headers, COOKIE))
}

/// The value of cookie `name` in the request (every `Cookie` header, as browsers write them).
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value_trimmed().to_owned())
}

/// `Set-Cookie` for a session: HttpOnly, SameSite=Lax; behind https `__Host-` prefixed and
/// Secure (which needs Path=/), else scoped to /admin.
pub fn session_cookie(value: &str, secure: bool, max_age: Option<i64>) -> HeaderValue {
    let max_age = max_age.unwrap_or_else(|| SESSION_LIFETIME.as_secs());
    let text = if secure {
        format!("{HOST_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}; Secure")
    } else {
        format!("{COOKIE}={value}; Path=/admin; HttpOnly; SameSite=Lax; Max-Age={max_age}")
    };
    HeaderValue::from_str(&text).expect("hex and fixed text are a valid header value")
}

/// The signed-in user of an admin page.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub user: User,
    pub csrf: String,
    /// HERALD_PUBLIC_URL, which a form's Origin may match.
    pub public_url: String,
}

impl SignedIn {
    /// Who the audit log names for this user.
    pub fn actor(&self) -> crate::domain::Actor {
        crate::domain::Actor::User {
            name: self.user.name.clone(),
            role: self.user.role,
        }
    }

    /// The service, changing things in this user's name and with this user's role.
    pub fn service(&self, state: &crate::web::AppState) -> crate::service::Service {
        state.service.acting(self.actor())
    }

    /// Refuse a form whose CSRF token is not this session's.
    fn check_csrf(&self, sent: &str) -> Result<(), AppError> {
        if constant_time_eq(sent.as_bytes(), self.csrf.as_bytes()) {
            Ok(())
        } else {
            Err(AppError::Forbidden(
                "The form was stale or came from another site. Reload the page and try again."
                    .to_owned(),
            ))
        }
    }

    pub fn require(&self, role: Role) -> Result<(), AppError> {
        if self.user.role.allows(role) {
            Ok(())
        } else {
            Err(AppError::Forbidden(
                "Your role may not open this page; ask an admin.".to_owned(),
            ))
        }
    }
}

/// Whether two secrets are equal, in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

/// Not signed in: go to the login page, then come back.
pub struct SignInFirst(String);

impl IntoResponse for SignInFirst {
    fn into_response(self) -> Response {
        /// A query value; `/` stays readable (`next=/admin/rollouts/3`).
        const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'.')
            .remove(b'_')
            .remove(b'~')
            .remove(b'/');
        let next = percent_encoding::utf8_percent_encode(&self.0, QUERY_VALUE).to_string();
        Redirect::to(&format!("/admin/login?next={next}")).into_response()
    }
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let here = parts.uri.path().to_owned();
        let Some(value) = session_from(&parts.headers) else {
            return Err(SignInFirst(here).into_response());
        };
        match state.service.session(&value).await {
            Ok(Some((user, csrf))) => Ok(Self {
                user,
                csrf,
                public_url: state.settings.public_url.clone(),
            }),
            Ok(None) => Err(SignInFirst(here).into_response()),
            Err(e) => Err(AppError::from(e).into_response()),
        }
    }
}

/// A state-changing admin form, checked: sent by a signed-in user, from this site, with the
/// session's CSRF token (the form's `csrf` field). Handlers then check only the role. The
/// checks live here rather than in each handler; the form is read only once they pass, so a
/// stranger's malformed form gets the same answer as any other stranger's.
pub struct CsrfForm<T = NoFields> {
    pub signed_in: SignedIn,
    pub form: T,
}

/// A form with nothing in it but its CSRF token.
#[derive(Debug, serde::Deserialize)]
pub struct NoFields {}

#[derive(serde::Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: String,
}

/// An admin form is a few kilobytes; a rollout's target list the largest of them.
const FORM_LIMIT: usize = 1 << 20;

impl<T: serde::de::DeserializeOwned + Send> axum::extract::FromRequest<AppState> for CsrfForm<T> {
    type Rejection = Response;

    async fn from_request(
        request: axum::extract::Request,
        state: &AppState,
    ) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let signed_in = SignedIn::from_request_parts(&mut parts, state).await?;
        same_origin(&parts.headers, &state.settings.public_url)
            .map_err(IntoResponse::into_response)?;
        let bytes = axum::body::to_bytes(body, FORM_LIMIT).await.map_err(|_| {
            AppError::BadRequest("The form is larger than 1 MiB.".to_owned()).into_response()
        })?;
        let unreadable =
            |e: serde_urlencoded::de::Error| AppError::BadRequest(format!("Unreadable form: {e}."));
        let csrf: CsrfField =
            serde_urlencoded::from_bytes(&bytes).map_err(|e| unreadable(e).into_response())?;
        signed_in
            .check_csrf(&csrf.csrf)
            .map_err(IntoResponse::into_response)?;
        let form =
            serde_urlencoded::from_bytes(&bytes).map_err(|e| unreadable(e).into_response())?;
        Ok(Self { signed_in, form })
    }
}

/// Refuse state-changing requests that a browser says came from another site. Same-site
/// requests and those without the headers (non-browser clients) pass; the CSRF token is the
/// second line of defence.
///
/// An Origin is ours when it is the public URL's origin or names the Host the request was sent
/// to; without a Host header (HTTP/2 sends `:authority` instead) only the public URL counts.
pub fn same_origin(headers: &HeaderMap, public_url: &str) -> Result<(), AppError> {
    let cross = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site");
    let public_origin = public_url
        .split_once("://")
        .map(|(scheme, rest)| format!("{scheme}://{}", rest.split('/').next().unwrap_or("")))
        .unwrap_or_default();
    let origin_mismatch = match headers.get(header::ORIGIN).map(|v| v.to_str()) {
        None => false,
        Some(Err(_)) | Some(Ok("null")) => true,
        Some(Ok(origin)) => {
            let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
            let names_host = origin
                .split_once("://")
                .is_some_and(|(_, rest)| Some(rest) == host);
            !(origin.eq_ignore_ascii_case(&public_origin) || names_host)
        }
    };
    if cross || origin_mismatch {
        Err(AppError::Forbidden(
            "This form was sent from another site and has been refused.".to_owned(),
        ))
    } else {
        Ok(())
    }
}

/// The client's address: the connection's, unless that is a trusted proxy, in which case the
/// nearest address in `Forwarded` (or else `X-Forwarded-For`) that is not itself a trusted
/// proxy. Forwarding headers from anyone else are ignored: they are the client's to invent.
pub fn client_ip(
    extensions: &axum::http::Extensions,
    headers: &HeaderMap,
    trusted: &[crate::config::Cidr],
) -> Option<IpAddr> {
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())?;
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = if headers.contains_key(header::FORWARDED) {
        headers
            .get_all(header::FORWARDED)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    k.eq_ignore_ascii_case("for").then(|| forwarded_node(v))?
                })
            })
            .collect()
    } else {
        headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(forwarded_node)
            .collect()
    };
    // Right to left: each trusted proxy appended the address it saw.
    Some(
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !is_trusted(*ip))
            .unwrap_or(peer),
    )
}

/// An address as forwarding headers write it: `192.0.2.1`, `"[2001:db8::1]:4711"`,
/// `192.0.2.1:80`.
fn forwarded_node(v: &str) -> Option<IpAddr> {
    let v = v.trim().trim_matches('"');
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    v.parse()
        .ok()
        .or_else(|| v.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// "in 40 s", "in 12 min": how long a throttled visitor waits.
pub fn wait_text(wait: Duration) -> String {
    match wait.as_secs() {
        s if s < 60 => format!("in {} s", s.max(1)),
        s => format!("in {} min", s.div_ceil(60)),
    }
}

/// What a throttled attempt is for: sign-in names and the setup code never share counters
/// (an account called `setup` is just an account).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Login,
    Setup,
}

/// Sign-in attempts within a window, counted in the database so that every instance on it
/// throttles as one. An attempt is counted *before* its password is checked (the check and
/// the count are one step), so a burst of concurrent attempts checks at most the limit's
/// worth of passwords, however the burst is spread over instances; a success takes its
/// attempt back.
pub struct LoginThrottle {
    store: Arc<dyn Store>,
    window: Duration,
    per_pair: i64,
    per_address: i64,
    /// Past this many failures on one account from anywhere, each further attempt waits a
    /// growing delay (1 s, 2 s, 4 s … up to a minute) after the one before.
    account_slowdown: i64,
    /// When counters past the window were last dropped (unix ms).
    swept_ms: AtomicI64,
}

/// How often old counters are dropped.
const SWEEP_MS: i64 = 60_000;

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

impl LoginThrottle {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            window: Duration::from_secs(15 * 60),
            per_pair: 5,
            per_address: 20,
            account_slowdown: 20,
            swept_ms: AtomicI64::new(0),
        }
    }

    /// The three counters an attempt counts against: one account from one address (the limit
    /// a guesser hits), one address with any account (a spray from one place), and one
    /// account from any address (slowed down past its cap, never locked, so nobody can keep
    /// the admin out by guessing from elsewhere). The typed name is hashed: it may be a
    /// password typed into the wrong field, and it has no length limit.
    fn keys(scope: Scope, name: &str, ip: Option<IpAddr>) -> Vec<String> {
        let scope = match scope {
            Scope::Login => "login",
            Scope::Setup => "setup",
        };
        let account: String = Sha256::digest(name.trim().to_lowercase().as_bytes())
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect();
        let ip = ip.map_or_else(|| "-".to_owned(), |ip| ip.to_string());
        vec![
            format!("{scope} pair {ip} {account}"),
            format!("{scope} address {ip}"),
            format!("{scope} account {account}"),
        ]
    }

    fn window_ms(&self) -> i64 {
        self.window.as_millis() as i64
    }

    /// Count an attempt, or say how long to wait when it is over a limit (then nothing is
    /// counted and no password may be checked).
    pub async fn begin(
        &self,
        scope: Scope,
        name: &str,
        ip: Option<IpAddr>,
    ) -> Result<Result<(), Duration>, AppError> {
        let now = now_ms();
        self.sweep(now).await;
        let window = self.window_ms();
        let rule = |counts: &mut [Attempts]| {
            for c in counts.iter_mut() {
                if c.since_ms <= now - window || c.n == 0 {
                    // Past the window (or taken back to nothing): a fresh count.
                    c.n = 0;
                    c.since_ms = now;
                }
            }
            let wait_out = |c: &Attempts, limit: i64| {
                (c.n >= limit)
                    .then(|| Duration::from_millis((c.since_ms + window - now).max(0) as u64))
            };
            let [pair, address, account] = counts else {
                // Not the three counters asked for: refuse rather than guess.
                return Err(self.window);
            };
            if let Some(wait) = wait_out(pair, self.per_pair)
                .into_iter()
                .chain(wait_out(address, self.per_address))
                .max()
            {
                return Err(wait);
            }
            if account.n >= self.account_slowdown {
                let over = (account.n - self.account_slowdown).min(6);
                let delay = (1000i64 << over).min(60_000);
                let since_last = now - account.last_ms;
                if since_last < delay {
                    return Err(Duration::from_millis((delay - since_last) as u64));
                }
            }
            for c in counts.iter_mut() {
                c.n += 1;
                c.last_ms = now;
            }
            Ok(())
        };
        Ok(self
            .store
            .count_attempts(&Self::keys(scope, name, ip), now, &rule)
            .await?)
    }

    /// The attempt begun for `name` from `ip` never had its password checked (no slot was
    /// free): it does not count.
    pub async fn cancel(&self, scope: Scope, name: &str, ip: Option<IpAddr>) {
        self.take_back(scope, name, ip, false).await
    }

    /// The attempt begun for `name` from `ip` was right: it was no failure, and that account
    /// from that address starts afresh.
    pub async fn succeeded(&self, scope: Scope, name: &str, ip: Option<IpAddr>) {
        self.take_back(scope, name, ip, true).await
    }

    async fn take_back(&self, scope: Scope, name: &str, ip: Option<IpAddr>, clear_pair: bool) {
        let rule = |counts: &mut [Attempts]| {
            for (i, c) in counts.iter_mut().enumerate() {
                c.n = if clear_pair && i == 0 {
                    0
                } else {
                    (c.n - 1).max(0)
                };
            }
            Ok(())
        };
        // Taking back is a kindness, not a safeguard: a failure only leaves a count too high.
        if let Err(e) = self
            .store
            .count_attempts(&Self::keys(scope, name, ip), now_ms(), &rule)
            .await
        {
            tracing::warn!(error = %e, "could not take back a sign-in attempt");
        }
    }

    /// Drop counters past the window, at most once a minute per instance.
    async fn sweep(&self, now: i64) {
        let last = self.swept_ms.load(Ordering::Relaxed);
        if now - last < SWEEP_MS
            || self
                .swept_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        if let Err(e) = self.store.forget_attempts(now - self.window_ms()).await {
            tracing::warn!(error = %e, "could not drop old sign-in counters");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([192, 0, 2, last]))
    }

    async fn throttle() -> LoginThrottle {
        let store = crate::store::SqlStore::connect("sqlite::memory:")
            .await
            .unwrap();
        store.migrate().await.unwrap();
        LoginThrottle::new(Arc::new(store))
    }

    async fn allowed(t: &LoginThrottle, scope: Scope, name: &str, ip: Option<IpAddr>) -> bool {
        t.begin(scope, name, ip).await.unwrap().is_ok()
    }

    #[tokio::test]
    async fn a_guesser_is_stopped_without_locking_the_owner_out() {
        let t = throttle().await;
        for _ in 0..5 {
            assert!(allowed(&t, Scope::Login, "alice", ip(1)).await);
        }
        assert!(
            !allowed(&t, Scope::Login, "alice", ip(1)).await,
            "the pair is over its limit"
        );
        // The owner, elsewhere, is not locked out.
        assert!(allowed(&t, Scope::Login, "Alice ", ip(2)).await);
        t.succeeded(Scope::Login, "alice", ip(2)).await;
        // The setup code's counters are its own.
        assert!(allowed(&t, Scope::Setup, "alice", ip(1)).await);
    }

    #[tokio::test]
    async fn a_cancelled_attempt_does_not_count() {
        let t = throttle().await;
        for _ in 0..20 {
            assert!(allowed(&t, Scope::Login, "bob", ip(3)).await);
            t.cancel(Scope::Login, "bob", ip(3)).await;
        }
        assert!(allowed(&t, Scope::Login, "bob", ip(3)).await);
    }

    #[tokio::test]
    async fn many_addresses_slow_an_account_down_instead_of_locking_it() {
        let t = throttle().await;
        for i in 0..20 {
            assert!(allowed(&t, Scope::Login, "admin", ip(i)).await);
        }
        // Past the cap: the next attempt right away must wait; it is not refused for 15 min.
        let wait = t
            .begin(Scope::Login, "admin", ip(100))
            .await
            .unwrap()
            .unwrap_err();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        tokio::time::sleep(wait + Duration::from_millis(20)).await;
        let counted = std::time::Instant::now();
        assert!(allowed(&t, Scope::Login, "admin", ip(101)).await);
        let wait = t
            .begin(Scope::Login, "admin", ip(102))
            .await
            .unwrap()
            .unwrap_err();
        // The delay doubled to 2 s after the attempt just counted; however slow this machine
        // was between the two calls, what is left plus what passed is those 2 s.
        let passed = counted.elapsed();
        assert!(wait <= Duration::from_secs(2), "{wait:?}");
        assert!(
            wait + passed + Duration::from_millis(5) >= Duration::from_secs(2),
            "{wait:?} left after {passed:?}"
        );
    }

    fn from(peer: &str, headers: &[(&str, &str)], trusted: &[&str]) -> Option<IpAddr> {
        let mut ext = axum::http::Extensions::new();
        ext.insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let trusted: Vec<crate::config::Cidr> =
            trusted.iter().map(|c| c.parse().unwrap()).collect();
        client_ip(&ext, &h, &trusted)
    }

    #[test]
    fn forwarding_headers_are_believed_only_from_trusted_proxies() {
        let xff = [("x-forwarded-for", "203.0.113.9, 10.1.2.3")];
        // Not a trusted proxy: its headers are ignored.
        assert_eq!(
            from("198.51.100.7:4000", &xff, &[]),
            "198.51.100.7".parse().ok()
        );
        assert_eq!(
            from("198.51.100.7:4000", &xff, &["10.0.0.0/8"]),
            "198.51.100.7".parse().ok()
        );
        // From a trusted proxy: the nearest untrusted address, skipping proxies in the chain.
        assert_eq!(
            from("10.0.0.5:4000", &xff, &["10.0.0.0/8"]),
            "203.0.113.9".parse().ok()
        );
        let fwd = [(
            "forwarded",
            "for=198.51.100.1, for=\"[2001:db8::7]:4711\";proto=https",
        )];
        assert_eq!(
            from("127.0.0.1:1", &fwd, &["127.0.0.1"]),
            "2001:db8::7".parse().ok()
        );
        // A trusted proxy that forwards nothing is the client as far as Herald can tell.
        assert_eq!(
            from("127.0.0.1:1", &[], &["127.0.0.1"]),
            "127.0.0.1".parse().ok()
        );
        // Spoofed entries left of a real client are not believed.
        let spoof = [("x-forwarded-for", "1.1.1.1, 203.0.113.9")];
        assert_eq!(
            from("10.0.0.5:4000", &spoof, &["10.0.0.0/8"]),
            "203.0.113.9".parse().ok()
        );
    }

    fn origin_check(headers: &[(&str, &str)], public: &str) -> bool {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        same_origin(&h, public).is_ok()
    }

    #[test]
    fn forms_come_from_this_site_also_without_a_host_header() {
        let public = "https://status.example.com";
        // HTTP/2: no Host header; the public URL decides.
        assert!(origin_check(
            &[("origin", "https://status.example.com")],
            public
        ));
        assert!(!origin_check(&[("origin", "https://evil.example")], public));
        // HTTP/1.1 with a Host: the Host or the public URL.
        assert!(origin_check(
            &[
                ("origin", "http://127.0.0.1:8080"),
                ("host", "127.0.0.1:8080")
            ],
            public
        ));
        assert!(!origin_check(
            &[
                ("origin", "https://evil.example"),
                ("host", "127.0.0.1:8080")
            ],
            public
        ));
        assert!(!origin_check(&[("origin", "null")], public));
        assert!(!origin_check(&[("sec-fetch-site", "cross-site")], public));
        assert!(
            origin_check(&[], public),
            "non-browser clients send neither"
        );
    }

    #[test]
    fn the_cookie_is_host_prefixed_behind_https() {
        let c = session_cookie("abc", true, None);
        let c = c.to_str().unwrap();
        assert!(c.starts_with("__Host-herald_session=abc; Path=/;"), "{c}");
        assert!(c.contains("Secure") && c.contains("HttpOnly") && !c.contains("Domain"));
        let plain = session_cookie("abc", false, None);
        assert!(
            plain
                .to_str()
                .unwrap()
                .starts_with("herald_session=abc; Path=/admin;")
        );
    }

    #[test]
    fn cidrs_parse_and_match() {
        let c: crate::config::Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains("10.200.1.1".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(
            c.contains("::ffff:10.0.0.1".parse().unwrap()),
            "IPv4-mapped"
        );
        let v6: crate::config::Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<crate::config::Cidr>().is_err());
        assert!("localhost".parse::<crate::config::Cidr>().is_err());
        let all: crate::config::Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
    }

    #[tokio::test]
    async fn one_address_spraying_accounts_is_stopped() {
        let t = throttle().await;
        for i in 0..20 {
            assert!(allowed(&t, Scope::Login, &format!("user{i}"), ip(7)).await);
        }
        assert!(!allowed(&t, Scope::Login, "user99", ip(7)).await);
        assert!(allowed(&t, Scope::Login, "user99", ip(8)).await);
    }
}
