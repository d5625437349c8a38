//! Admin UI sign-in: session cookies, the signed-in user as an extractor, CSRF checks for every
//! state-changing form, and login throttling per account and per client address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::AppState;
use super::error::AppError;
use crate::domain::{Role, User};
use crate::service::SESSION_LIFETIME;

pub const COOKIE: &str = "herald_session";
/// Behind https the cookie carries the `__Host-` prefix: browsers then accept it only when
/// Secure, for this exact host and path `/`, so a sibling subdomain cannot plant or shadow it.
pub const HOST_COOKIE: &str = "__Host-herald_session";

/// The session cookie a request carries, under either name.
pub fn session_from(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, HOST_COOKIE).or_else(|| cookie(headers, COOKIE))
}

/// The value of cookie `name` in the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
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
        crate::domain::Actor::User(self.user.name.clone())
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

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Not signed in: go to the login page, then come back.
pub struct SignInFirst(String);

impl IntoResponse for SignInFirst {
    fn into_response(self) -> Response {
        let next: String = form_urlencoded_byte_serialize(&self.0);
        Redirect::to(&format!("/admin/login?next={next}")).into_response()
    }
}

fn form_urlencoded_byte_serialize(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let here = parts.uri.path().to_owned();
        let Some(value) = session_from(&parts.headers) else {
            return Err(SignInFirst(here).into_response());
        };
        match state.service.session(value).await {
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

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// One account from one address: the limit a guesser hits.
    Pair(Scope, String, Option<IpAddr>),
    /// One address, any account: a spray from one place.
    Address(Scope, Option<IpAddr>),
    /// One account, any address: slowed down past its cap, never locked, so nobody can keep
    /// the admin out by guessing from elsewhere.
    Account(Scope, String),
}

struct Count {
    n: u32,
    since: Instant,
    last: Instant,
}

/// Sign-in attempts within a window. An attempt is counted *before* its password is checked
/// (one lock for the check and the count), so a burst of concurrent attempts checks at most
/// the limit's worth of passwords; a success takes its attempt back.
pub struct LoginThrottle {
    counts: Mutex<HashMap<Key, Count>>,
    window: Duration,
    per_pair: u32,
    per_address: u32,
    /// Past this many failures on one account from anywhere, each further attempt waits a
    /// growing delay (1 s, 2 s, 4 s … up to a minute) after the one before.
    account_slowdown: u32,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self {
            counts: Mutex::new(HashMap::new()),
            window: Duration::from_secs(15 * 60),
            per_pair: 5,
            per_address: 20,
            account_slowdown: 20,
        }
    }
}

fn account(name: &str) -> String {
    name.trim().to_lowercase()
}

impl LoginThrottle {
    fn keys(scope: Scope, name: &str, ip: Option<IpAddr>) -> [Key; 3] {
        [
            Key::Pair(scope, account(name), ip),
            Key::Address(scope, ip),
            Key::Account(scope, account(name)),
        ]
    }

    /// Count an attempt, or say how long to wait when it is over a limit (then nothing is
    /// counted and no password may be checked).
    pub fn begin(&self, scope: Scope, name: &str, ip: Option<IpAddr>) -> Result<(), Duration> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.retain(|_, c| c.since.elapsed() < self.window);
        let [pair, address, whole] = Self::keys(scope, name, ip);
        let wait_out = |c: Option<&Count>, limit: u32| {
            c.filter(|c| c.n >= limit)
                .map(|c| self.window.saturating_sub(c.since.elapsed()))
        };
        if let Some(wait) = wait_out(counts.get(&pair), self.per_pair)
            .into_iter()
            .chain(wait_out(counts.get(&address), self.per_address))
            .max()
        {
            return Err(wait);
        }
        if let Some(c) = counts.get(&whole)
            && c.n >= self.account_slowdown
        {
            let over = (c.n - self.account_slowdown).min(6);
            let delay = Duration::from_secs(1 << over).min(Duration::from_secs(60));
            let since_last = c.last.elapsed();
            if since_last < delay {
                return Err(delay - since_last);
            }
        }
        let now = Instant::now();
        for key in [pair, address, whole] {
            let c = counts.entry(key).or_insert(Count {
                n: 0,
                since: now,
                last: now,
            });
            c.n += 1;
            c.last = now;
        }
        Ok(())
    }

    /// The attempt begun for `name` from `ip` never had its password checked (no slot was
    /// free): it does not count.
    pub fn cancel(&self, scope: Scope, name: &str, ip: Option<IpAddr>) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        for key in Self::keys(scope, name, ip) {
            if let Some(c) = counts.get_mut(&key) {
                c.n = c.n.saturating_sub(1);
            }
        }
    }

    /// The attempt begun for `name` from `ip` was right: it was no failure.
    pub fn succeeded(&self, scope: Scope, name: &str, ip: Option<IpAddr>) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let [pair, address, whole] = Self::keys(scope, name, ip);
        counts.remove(&pair);
        for key in [address, whole] {
            if let Some(c) = counts.get_mut(&key) {
                c.n = c.n.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([192, 0, 2, last]))
    }

    #[test]
    fn a_guesser_is_stopped_without_locking_the_owner_out() {
        let t = LoginThrottle::default();
        for _ in 0..5 {
            t.begin(Scope::Login, "alice", ip(1)).unwrap();
        }
        assert!(
            t.begin(Scope::Login, "alice", ip(1)).is_err(),
            "the pair is over its limit"
        );
        // The owner, elsewhere, is not locked out.
        t.begin(Scope::Login, "Alice ", ip(2)).unwrap();
        t.succeeded(Scope::Login, "alice", ip(2));
        // The setup code's counters are its own.
        t.begin(Scope::Setup, "alice", ip(1)).unwrap();
    }

    #[test]
    fn many_addresses_slow_an_account_down_instead_of_locking_it() {
        let t = LoginThrottle::default();
        for i in 0..20 {
            t.begin(Scope::Login, "admin", ip(i)).unwrap();
        }
        // Past the cap: the next attempt right away must wait; it is not refused for 15 min.
        let wait = t.begin(Scope::Login, "admin", ip(100)).unwrap_err();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        std::thread::sleep(wait + Duration::from_millis(20));
        t.begin(Scope::Login, "admin", ip(101)).unwrap();
        let wait = t.begin(Scope::Login, "admin", ip(102)).unwrap_err();
        assert!(
            wait > Duration::from_millis(1000) && wait <= Duration::from_secs(2),
            "{wait:?}"
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

    #[test]
    fn one_address_spraying_accounts_is_stopped() {
        let t = LoginThrottle::default();
        for i in 0..20 {
            t.begin(Scope::Login, &format!("user{i}"), ip(7)).unwrap();
        }
        assert!(t.begin(Scope::Login, "user99", ip(7)).is_err());
        t.begin(Scope::Login, "user99", ip(8)).unwrap();
    }
}
