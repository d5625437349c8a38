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

/// `Set-Cookie` for a session: HttpOnly, SameSite=Lax, Secure behind https, scoped to /admin.
pub fn session_cookie(value: &str, secure: bool, max_age: Option<i64>) -> HeaderValue {
    let max_age = max_age.unwrap_or_else(|| SESSION_LIFETIME.as_secs());
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/admin; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .expect("hex and fixed text are a valid header value")
}

/// The signed-in user of an admin page.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub user: User,
    pub csrf: String,
}

impl SignedIn {
    /// Refuse a form whose CSRF token is not this session's.
    pub fn check_csrf(&self, sent: &str) -> Result<(), AppError> {
        if constant_time_eq(sent.as_bytes(), self.csrf.as_bytes()) {
            Ok(())
        } else {
            Err(AppError::Forbidden(
                "The form was stale or came from another site. Reload the page and try again."
                    .to_owned(),
            ))
        }
    }

    /// Everything a state-changing form must pass: sent from this site, with this session's
    /// CSRF token, by a user whose role allows it.
    pub fn authorize_form(
        &self,
        headers: &HeaderMap,
        csrf: &str,
        role: Role,
    ) -> Result<(), AppError> {
        same_origin(headers)?;
        self.check_csrf(csrf)?;
        self.require(role)
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
        let Some(value) = cookie(&parts.headers, COOKIE) else {
            return Err(SignInFirst(here).into_response());
        };
        match state.service.session(value).await {
            Ok(Some((user, csrf))) => Ok(Self { user, csrf }),
            Ok(None) => Err(SignInFirst(here).into_response()),
            Err(e) => Err(AppError::from(e).into_response()),
        }
    }
}

/// Refuse state-changing requests that a browser says came from another site. Same-site
/// requests and those without the headers (non-browser clients) pass; the CSRF token is the
/// second line of defence.
pub fn same_origin(headers: &HeaderMap) -> Result<(), AppError> {
    let cross = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site");
    let origin_mismatch = match (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) {
        (Some("null"), _) => true,
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .map(|(_, rest)| rest)
            .is_none_or(|rest| rest != host),
        _ => false,
    };
    if cross || origin_mismatch {
        Err(AppError::Forbidden(
            "This form was sent from another site and has been refused.".to_owned(),
        ))
    } else {
        Ok(())
    }
}

/// The client's address, from the connection (never from X-Forwarded-For).
pub fn client_ip(parts_ext: &axum::http::Extensions) -> Option<IpAddr> {
    parts_ext
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

/// Failed logins per account and per address within a window; past the limit, refuse early.
pub struct LoginThrottle {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
    window: Duration,
    per_account: u32,
    per_address: u32,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self {
            failures: Mutex::new(HashMap::new()),
            window: Duration::from_secs(15 * 60),
            per_account: 5,
            per_address: 20,
        }
    }
}

impl LoginThrottle {
    fn keys(name: &str, ip: Option<IpAddr>) -> [(String, bool); 2] {
        [
            (format!("user:{}", name.trim().to_lowercase()), true),
            (
                format!(
                    "ip:{}",
                    ip.map_or("unknown".to_owned(), |ip| ip.to_string())
                ),
                false,
            ),
        ]
    }

    /// `Some(wait)` while either key is over its limit.
    pub fn blocked(&self, name: &str, ip: Option<IpAddr>) -> Option<Duration> {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.retain(|_, (_, since)| since.elapsed() < self.window);
        Self::keys(name, ip)
            .iter()
            .filter_map(|(key, account)| {
                let limit = if *account {
                    self.per_account
                } else {
                    self.per_address
                };
                let (count, since) = failures.get(key)?;
                (*count >= limit).then(|| self.window.saturating_sub(since.elapsed()))
            })
            .max()
    }

    pub fn failed(&self, name: &str, ip: Option<IpAddr>) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        for (key, _) in Self::keys(name, ip) {
            failures.entry(key).or_insert((0, Instant::now())).0 += 1;
        }
    }

    pub fn succeeded(&self, name: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(&format!("user:{}", name.trim().to_lowercase()));
    }
}
