//! The JSON APIs: `/api/v1` for automation (bearer tokens) and the OpenAPI document generated
//! from the same code, so it cannot drift. Every failure answers
//! `{"error": {"code", "message", "field"?}}` with a 4xx (or an opaque 500).

pub mod alerts;
pub mod idempotency;
pub mod incidents;
pub mod reference;
pub mod rollouts;
pub mod statuspage;
pub mod v1;

use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::{AppError, ErrorCause};
use crate::domain::{ApiToken, DomainError};

/// A failure on an API route.
#[derive(Debug)]
pub enum ApiError {
    App(AppError),
    /// Missing, malformed, unknown or revoked token.
    Unauthorized(&'static str),
    /// A valid token whose role may not do this.
    Forbidden(&'static str),
    TooLarge,
    /// An `Idempotency-Key` that is not 1–255 visible ASCII characters.
    BadKey,
    /// An `Idempotency-Key` sent before with a different request.
    KeyReused,
    /// An `Idempotency-Key` whose first request is still being answered.
    KeyInUse,
    /// This token made more requests than its rate allows: try again after this long.
    RateLimited(std::time::Duration),
}

impl<E: Into<AppError>> From<E> for ApiError {
    fn from(e: E) -> Self {
        Self::App(e.into())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable: `bad_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `illegal_transition`, `invalid`, `payload_too_large`, `idempotency_key_reused`,
    /// `idempotency_key_in_use`, `too_many_requests`, `unavailable`, `internal`.
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
    /// The input field an `invalid` error concerns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let wait = match &self {
            Self::RateLimited(wait) => Some(*wait),
            _ => None,
        };
        let (status, code, message, field, cause) = match self {
            Self::Unauthorized(why) => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                why.to_owned(),
                None,
                None,
            ),
            Self::Forbidden(why) => (
                StatusCode::FORBIDDEN,
                "forbidden",
                why.to_owned(),
                None,
                None,
            ),
            Self::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is larger than {} bytes", v1::BODY_LIMIT),
                None,
                None,
            ),
            Self::BadKey => (
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the Idempotency-Key header must be 1 to 255 visible ASCII characters".to_owned(),
                Some("Idempotency-Key".to_owned()),
                None,
            ),
            Self::KeyReused => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was sent before with a different request".to_owned(),
                Some("Idempotency-Key".to_owned()),
                None,
            ),
            Self::KeyInUse => (
                StatusCode::CONFLICT,
                "idempotency_key_in_use",
                "the first request with this Idempotency-Key is still being answered; \
                 try again shortly"
                    .to_owned(),
                Some("Idempotency-Key".to_owned()),
                None,
            ),
            Self::RateLimited(wait) => (
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                format!(
                    "this token made more requests than HERALD_API_RATE_LIMIT allows; try again \
                     in {} s",
                    wait.as_secs().max(1)
                ),
                None,
                None,
            ),
            Self::App(e) => {
                let field = match &e {
                    AppError::Domain(DomainError::Invalid(v)) => Some(v.field.to_owned()),
                    _ => None,
                };
                let message = match &e {
                    AppError::NotFound => "not found".to_owned(),
                    AppError::Internal(_) => "internal error; it has been logged".to_owned(),
                    AppError::Unavailable(_) => {
                        "the database cannot be reached right now; try again shortly".to_owned()
                    }
                    AppError::Domain(DomainError::Invalid(v)) => v.message.clone(),
                    other => other.to_string(),
                };
                let (status, code) = (e.status(), e.code());
                let cause = match e {
                    AppError::Internal(cause) | AppError::Unavailable(cause) => Some(cause),
                    _ => None,
                };
                (status, code, message, field, cause)
            }
        };
        let mut response = (
            status,
            Json(ErrorBody {
                error: ErrorDetail {
                    code: code.to_owned(),
                    message,
                    field,
                },
            }),
        )
            .into_response();
        let retry_after = match (status, code) {
            (StatusCode::SERVICE_UNAVAILABLE, _) => {
                Some(crate::web::error::RETRY_AFTER_UNAVAILABLE.to_owned())
            }
            (_, "idempotency_key_in_use") => Some("1".to_owned()),
            _ => wait.map(|w| w.as_secs().max(1).to_string()),
        };
        if let Some(seconds) = retry_after
            && let Ok(value) = HeaderValue::from_str(&seconds)
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"herald\""),
            );
        }
        if let Some(cause) = cause {
            response
                .extensions_mut()
                .insert(ErrorCause(std::sync::Arc::new(cause)));
        }
        response
    }
}

/// The API token a request carries (`Authorization: Bearer hrld_…`).
#[derive(Debug, Clone)]
pub struct Bearer(pub ApiToken);

impl Bearer {
    /// The service, changing things in this token's name and with its role.
    pub fn service(&self, state: &AppState) -> crate::service::Service {
        state.service.acting(self.actor_id())
    }

    pub fn actor_id(&self) -> crate::domain::Actor {
        crate::domain::Actor::Token {
            name: self.0.name.clone(),
            role: self.0.role,
        }
    }
}

impl FromRequestParts<AppState> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::Unauthorized(
                "missing token: send Authorization: Bearer <token>",
            ));
        };
        let secret = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or(ApiError::Unauthorized(
                "malformed Authorization header: expected Bearer <token>",
            ))?;
        match state.service.authenticate_token(secret).await {
            Ok(Some(token)) => {
                state
                    .api_rate
                    .take(token.id)
                    .map_err(ApiError::RateLimited)?;
                Ok(Self(token))
            }
            Ok(None) => {
                let client = crate::web::auth::client_ip(
                    &parts.extensions,
                    &parts.headers,
                    &state.settings.trusted_proxies,
                    &state.settings.trusted_proxy_header,
                );
                // Never the token itself: its first characters name it well enough.
                tracing::info!(
                    target: "herald::auth",
                    client = ?client,
                    token = secret.get(..9).unwrap_or(""),
                    path = %parts.uri.path(),
                    "refused an unknown or revoked API token"
                );
                Err(ApiError::Unauthorized("unknown or revoked token"))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Each API token's request rate: a token bucket per token, filled at `per_second` up to
/// twice that. Per instance (the load balancer spreads a token's requests; a limit meant to
/// stop a runaway script need not be exact), in memory, bounded by the number of live tokens.
pub struct TokenRate {
    per_second: f64,
    buckets: std::sync::Mutex<std::collections::HashMap<i64, (f64, std::time::Instant)>>,
}

impl TokenRate {
    /// `per_second` 0: no limit.
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second: f64::from(per_second),
            buckets: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Take one request for token `id`, or say how long until one is allowed.
    pub fn take(&self, id: i64) -> Result<(), std::time::Duration> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let burst = self.per_second * 2.0;
        let now = std::time::Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let (left, at) = buckets.entry(id).or_insert((burst, now));
        *left = (*left + now.duration_since(*at).as_secs_f64() * self.per_second).min(burst);
        *at = now;
        if *left >= 1.0 {
            *left -= 1.0;
            Ok(())
        } else {
            Err(std::time::Duration::from_secs_f64(
                (1.0 - *left) / self.per_second,
            ))
        }
    }
}

/// Unknown `/api` paths and methods answer in the API's error shape too.
pub async fn not_found() -> ApiError {
    ApiError::App(AppError::NotFound)
}

/// A list's `limit` (1 to 200, 50 by default) and `offset` (0 to 1,000,000), checked.
pub fn page_params(
    limit: Option<i64>,
    offset: Option<i64>,
) -> Result<(i64, i64), crate::domain::ValidationError> {
    let limit = limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(crate::domain::ValidationError::new(
            "limit",
            "must be from 1 to 200",
        ));
    }
    let offset = offset.unwrap_or(0);
    if !(0..=1_000_000).contains(&offset) {
        return Err(crate::domain::ValidationError::new(
            "offset",
            "must be from 0 to 1000000",
        ));
    }
    Ok((limit, offset))
}
