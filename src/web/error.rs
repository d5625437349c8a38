//! `AppError`: what any handler can fail with, and how each failure answers. Browser routes get
//! the error page; `/api` routes get `{"error": {"code", "message"}}`. 5xx answers say nothing
//! internal; the cause is logged inside the request's span.

use askama::Template;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::domain::DomainError;
use crate::service::ServiceError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    TooManyRequests(String),
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The database cannot be reached right now; the request may be repeated shortly.
    #[error("the database cannot be reached right now")]
    Unavailable(#[source] anyhow::Error),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

pub const UNAVAILABLE_MESSAGE: &str =
    "Herald cannot reach its database right now. Please try again in a moment.";

/// How long a client is asked to wait after a 503, in seconds.
pub const RETRY_AFTER_UNAVAILABLE: &str = "5";

impl From<crate::domain::ValidationError> for AppError {
    fn from(e: crate::domain::ValidationError) -> Self {
        Self::Domain(e.into())
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            Self::Unavailable(e.into())
        } else {
            Self::Internal(e.into())
        }
    }
}

impl From<ServiceError> for AppError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound(_) => Self::NotFound,
            ServiceError::Busy(why) => Self::TooManyRequests(why.to_owned()),
            ServiceError::Forbidden(why) => Self::Forbidden(why.to_owned()),
            ServiceError::Domain(d) => Self::Domain(d),
            ServiceError::Store(s) => s.into(),
        }
    }
}

impl From<askama::Error> for AppError {
    fn from(e: askama::Error) -> Self {
        Self::Internal(e.into())
    }
}

impl From<PathRejection> for AppError {
    // A path segment that does not parse (e.g. /maintenance/abc) names nothing that exists.
    fn from(_: PathRejection) -> Self {
        Self::NotFound
    }
}

impl From<axum::extract::rejection::FormRejection> for AppError {
    fn from(e: axum::extract::rejection::FormRejection) -> Self {
        Self::BadRequest(e.body_text())
    }
}

impl From<QueryRejection> for AppError {
    fn from(e: QueryRejection) -> Self {
        Self::BadRequest(e.body_text())
    }
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Domain(DomainError::Rule(_)) => StatusCode::CONFLICT,
            Self::Domain(DomainError::Invalid(_)) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable code in JSON errors.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::BadRequest(_) => "bad_request",
            Self::Forbidden(_) => "forbidden",
            Self::TooManyRequests(_) => "too_many_requests",
            Self::Domain(DomainError::Rule(_)) => "illegal_transition",
            Self::Domain(DomainError::Invalid(_)) => "invalid",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    fn public_message(&self) -> String {
        match self {
            Self::NotFound => "There is nothing at this address.".to_owned(),
            Self::Unavailable(_) => UNAVAILABLE_MESSAGE.to_owned(),
            Self::Internal(_) => {
                "Something went wrong on our side. It has been logged; please try again.".to_owned()
            }
            other => other.to_string(),
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    site: &'a super::view::Site,
    status: u16,
    reason: &'a str,
    message: &'a str,
}

/// What an error says to a person, carried on the response to the middleware, which renders
/// the page in the site's frame (with its name) since handlers' errors do not have the site
/// at hand. The body is the plain message until then.
#[derive(Debug, Clone)]
pub struct ErrorMessage(pub String);

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = self.public_message();
        let mut response = (status, message.clone()).into_response();
        response.extensions_mut().insert(ErrorMessage(message));
        if let Self::Unavailable(_) = self {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static(RETRY_AFTER_UNAVAILABLE),
            );
        }
        if let Self::Internal(cause) | Self::Unavailable(cause) = self {
            // Logged by the request middleware, with the request id, method and path.
            response
                .extensions_mut()
                .insert(ErrorCause(std::sync::Arc::new(cause)));
        }
        response
    }
}

/// Give an error response its HTML page, in the site's frame; the status and the other
/// headers (such as `Retry-After`) stay.
pub fn render_page(response: &mut Response, site: &super::view::Site) {
    let Some(ErrorMessage(message)) = response.extensions_mut().remove() else {
        return;
    };
    let status = response.status();
    let page = ErrorPage {
        site,
        status: status.as_u16(),
        reason: status.canonical_reason().unwrap_or("Error"),
        message: &message,
    };
    if let Ok(html) = page.render() {
        let h = response.headers_mut();
        h.insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("text/html; charset=utf-8"),
        );
        h.remove(axum::http::header::CONTENT_LENGTH);
        *response.body_mut() = axum::body::Body::from(html);
    }
}

/// The cause of a 5xx, carried on the response to the middleware that logs it.
#[derive(Debug, Clone)]
pub struct ErrorCause(pub std::sync::Arc<anyhow::Error>);

pub use extract::{Form, Path, Query};

/// The one place that wraps axum's extractors (banned elsewhere by clippy.toml).
#[allow(clippy::disallowed_types)]
mod extract {
    use axum::extract::{FromRequest, FromRequestParts};

    use super::AppError;

    /// `axum::extract::Path` whose rejection is an [`AppError`].
    #[derive(FromRequestParts)]
    #[from_request(via(axum::extract::Path), rejection(AppError))]
    pub struct Path<T>(pub T);

    /// `axum::Form` whose rejection is an [`AppError`].
    #[derive(FromRequest)]
    #[from_request(via(axum::Form), rejection(AppError))]
    pub struct Form<T>(pub T);

    /// `axum::extract::Query` whose rejection is an [`AppError`].
    #[derive(FromRequestParts)]
    #[from_request(via(axum::extract::Query), rejection(AppError))]
    pub struct Query<T>(pub T);
}
