//! Admin UI sign-in: session cookies, the signed-in user as an extractor, CSRF checks for every
//! state-changing form, and the client's address the sign-in throttle counts by (the throttle
//! itself is `service::SignInThrottle`, its rule `domain::SignInRule`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

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

/// The session cookie a request carries: `__Host-herald_session` behind https, else
/// `herald_session`.
pub fn session_from(headers: &HeaderMap, secure: bool) -> Option<String> {
    // Behind https only the prefixed cookie counts: a plain one may have been planted by a
    // sibling subdomain (or over http), which the prefix rules out.
    cookie(headers, if secure { HOST_COOKIE } else { COOKIE })
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

/// A browser that signed in to an account before carries this (OWASP's device cookie): its
/// sign-ins are not slowed down by others' failures on the account. `__Host-` behind https.
pub const DEVICE_COOKIE: &str = "herald_device";
pub const HOST_DEVICE_COOKIE: &str = "__Host-herald_device";

/// The device cookie a request carries.
pub fn device_from(headers: &HeaderMap, secure: bool) -> Option<String> {
    cookie(
        headers,
        if secure {
            HOST_DEVICE_COOKIE
        } else {
            DEVICE_COOKIE
        },
    )
    .filter(|v| !v.is_empty())
}

/// `Set-Cookie` for a device cookie: a year, sent only to the admin's pages.
pub fn device_cookie(value: &str, secure: bool) -> HeaderValue {
    const YEAR: i64 = 365 * 86_400;
    let text = if secure {
        format!(
            "{HOST_DEVICE_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={YEAR}; Secure"
        )
    } else {
        format!("{DEVICE_COOKIE}={value}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={YEAR}")
    };
    HeaderValue::from_str(&text).expect("hex is a valid header value")
}

/// A one-time message for the next page at `path` (a secret to show once after a form, so the
/// form's answer can be a redirect that a reload does not repeat): short-lived, never sent to
/// scripts or to other paths, and only shown to the session that made it (`session` is its
/// CSRF token, whose first half binds the message). `value` empty clears it.
pub fn flash_cookie(
    name: &str,
    value: &str,
    path: &str,
    session: &str,
    secure: bool,
) -> HeaderValue {
    let (value, max_age) = if value.is_empty() {
        (String::new(), 0)
    } else {
        let bound = format!("{}.{value}", session_half(session));
        let encoded =
            percent_encoding::utf8_percent_encode(&bound, percent_encoding::NON_ALPHANUMERIC);
        (encoded.to_string(), 300)
    };
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .expect("percent-encoded text is a valid header value")
}

/// A flash cookie's value, decoded, if the session `session` made it.
pub fn flash(headers: &HeaderMap, name: &str, session: &str) -> Option<String> {
    let raw = cookie(headers, name).filter(|v| !v.is_empty())?;
    let decoded = percent_encoding::percent_decode_str(&raw)
        .decode_utf8_lossy()
        .into_owned();
    let (bound, value) = decoded.split_once('.')?;
    constant_time_eq(bound.as_bytes(), session_half(session).as_bytes()).then(|| value.to_owned())
}

fn session_half(csrf: &str) -> &str {
    &csrf[..csrf.len() / 2]
}

/// The signed-in user of an admin page.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub user: User,
    pub csrf: String,
    /// HERALD_PUBLIC_URL, which a form's Origin may match.
    pub public_url: String,
    /// The path of the page asked for (the menu marks where the user is).
    pub here: String,
    /// `?done=` of a page reached after a change: which notice to show.
    pub done: Option<String>,
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
        match Self::lookup(parts, state).await? {
            Some(signed_in) => Ok(signed_in),
            None => Err(SignInFirst(parts.uri.path().to_owned()).into_response()),
        }
    }
}

impl SignedIn {
    /// The live session the request carries, if any.
    async fn lookup(parts: &Parts, state: &AppState) -> Result<Option<Self>, Response> {
        let secure = state.settings.public_url.starts_with("https://");
        let Some(value) = session_from(&parts.headers, secure) else {
            return Ok(None);
        };
        match state.service.session(&value).await {
            Ok(found) => Ok(found.map(|(user, csrf)| Self {
                user,
                csrf,
                public_url: state.settings.public_url.clone(),
                here: parts.uri.path().to_owned(),
                done: parts.uri.query().and_then(|q| {
                    serde_urlencoded::from_str::<Vec<(String, String)>>(q)
                        .ok()?
                        .into_iter()
                        .find(|(k, _)| k == "done")
                        .map(|(_, v)| v)
                }),
            })),
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
        let (parts, body) = request.into_parts();
        let signed_in = SignedIn::lookup(&parts, state).await?;
        same_origin(&parts.headers, &state.settings.public_url)
            .map_err(IntoResponse::into_response)?;
        let bytes = axum::body::to_bytes(body, FORM_LIMIT).await.map_err(|_| {
            AppError::BadRequest("The form is larger than 1 MiB.".to_owned()).into_response()
        })?;
        // The session ended while the page was open: sign in first, keeping the form (a
        // redirect would drop it, and lead to a GET of an address that only takes forms).
        let Some(signed_in) = signed_in else {
            return Err(crate::web::admin::sign_in_to_resume(
                state,
                parts.uri.path(),
                &parts.headers,
                &bytes,
            ));
        };
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
/// nearest address in the one header the operator named (`HERALD_TRUSTED_PROXY_HEADER`) that
/// is not itself a trusted proxy, read right to left (each proxy appends what it saw, so what
/// a client wrote itself is on the left). No other header is read: a proxy that appends to
/// `X-Forwarded-For` passes a client's own `Forwarded` through untouched.
pub fn client_ip(
    extensions: &axum::http::Extensions,
    headers: &HeaderMap,
    trusted: &[crate::config::Cidr],
    header_name: &header::HeaderName,
) -> Option<IpAddr> {
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())?;
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let values = headers
        .get_all(header_name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    let forwarded: Vec<Option<IpAddr>> = if *header_name == header::FORWARDED {
        values
            .map(|element| {
                element.split(';').find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| forwarded_node(v))?
                })
            })
            .collect()
    } else {
        values.map(forwarded_node).collect()
    };
    // Right to left: each trusted proxy appended the address it saw. Something unreadable
    // before an untrusted address is found ends the walk at the nearest trusted hop: it was
    // not written by a proxy we trust.
    let mut nearest = peer;
    for ip in forwarded.into_iter().rev() {
        match ip {
            Some(ip) if is_trusted(ip) => nearest = ip,
            Some(ip) => return Some(ip),
            None => return Some(nearest),
        }
    }
    Some(nearest)
}

/// The client's address as [`client_ip`] finds it, for a handler.
pub struct ClientIp(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(client_ip(
            &parts.extensions,
            &parts.headers,
            &state.settings.trusted_proxies,
            &state.settings.trusted_proxy_header,
        )))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn from(peer: &str, headers: &[(&str, &str)], trusted: &[&str]) -> Option<IpAddr> {
        from_header(peer, headers, trusted, "x-forwarded-for")
    }

    fn from_header(
        peer: &str,
        headers: &[(&str, &str)],
        trusted: &[&str],
        name: &str,
    ) -> Option<IpAddr> {
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
        let name = axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        client_ip(&ext, &h, &trusted, &name)
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
            from_header("127.0.0.1:1", &fwd, &["127.0.0.1"], "forwarded"),
            "2001:db8::7".parse().ok()
        );
        // Only the header the operator named: behind a proxy that appends X-Forwarded-For, a
        // client's own Forwarded (varied per attempt to dodge the limits) is not believed.
        let both = [
            ("forwarded", "for=192.0.2.55"),
            ("x-forwarded-for", "203.0.113.9"),
        ];
        assert_eq!(
            from("127.0.0.1:1", &both, &["127.0.0.1"]),
            "203.0.113.9".parse().ok()
        );
        assert_eq!(
            from("127.0.0.1:1", &fwd, &["127.0.0.1"]),
            "127.0.0.1".parse().ok()
        );
        let real = [("x-real-ip", "198.51.100.23")];
        assert_eq!(
            from_header("127.0.0.1:1", &real, &["127.0.0.1"], "x-real-ip"),
            "198.51.100.23".parse().ok()
        );
        // Garbage the client wrote ends the walk at the nearest trusted hop.
        let junk = [("x-forwarded-for", "not-an-address, 10.0.0.9")];
        assert_eq!(
            from("10.0.0.5:4000", &junk, &["10.0.0.0/8"]),
            "10.0.0.9".parse().ok()
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
}
