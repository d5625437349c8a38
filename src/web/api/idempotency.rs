//! `Idempotency-Key` on `/api/v1` writes (the IETF httpapi draft, Stripe's convention): a deploy
//! script that retries a POST after a timeout gets the first answer again instead of a second
//! update and a second announcement.
//!
//! The first request with a key claims it in the database (one claim wins across every
//! instance), runs, and stores its status and body for [`KEY_LIFETIME`]. The same key with the
//! same method, path and body replays that answer with `Idempotent-Replayed: true`; with
//! another request it is a 422. A retry that arrives while the first is still running waits
//! for its answer (up to [`WAIT_FOR_FIRST`], then a 409 with `Retry-After`). The request runs
//! on a task of its own, so a client that hangs up does not cut it short between its commit and
//! its stored answer: the retry then finds the answer.
//!
//! Answers that say "try again" (401, 408, 429, 5xx) are not kept: the key is released, and the
//! retry runs the request afresh.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument as _;

use super::ApiError;
use super::v1::BODY_LIMIT;
use crate::service::{KEY_LIFETIME, Service};
use crate::store::{KeyClaim, KeyedRequest, StoredAnswer};
use crate::web::AppState;

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// Set on a replayed answer.
pub const REPLAYED: &str = "idempotent-replayed";

/// How long a retry waits for the first request with its key to be answered.
const WAIT_FOR_FIRST: Duration = Duration::from_secs(10);

/// The operations a key applies to: every write the API declares (by method and route
/// template), so that any other method on a route still answers 405 before a key is looked
/// at.
#[derive(Clone)]
pub struct Keyed {
    state: AppState,
    writes: Arc<HashSet<(Method, String)>>,
}

impl Keyed {
    pub fn new(state: AppState, api: &utoipa::openapi::OpenApi) -> Self {
        let mut writes = HashSet::new();
        for (path, item) in &api.paths.paths {
            for (method, operation) in [
                (Method::POST, &item.post),
                (Method::PUT, &item.put),
                (Method::PATCH, &item.patch),
            ] {
                if operation.is_some() {
                    writes.insert((method, path.clone()));
                }
            }
        }
        Self {
            state,
            writes: Arc::new(writes),
        }
    }

    fn applies(&self, request: &Request) -> bool {
        request
            .extensions()
            .get::<MatchedPath>()
            .is_some_and(|route| {
                self.writes
                    .contains(&(request.method().clone(), route.as_str().to_owned()))
            })
    }
}

/// The key as sent: a plain token (Stripe) or a quoted string (the draft's sf-string).
fn parse_key(value: &HeaderValue) -> Option<&str> {
    let raw = value.to_str().ok()?.trim();
    let key = raw
        .strip_prefix('"')
        .and_then(|k| k.strip_suffix('"'))
        .unwrap_or(raw);
    (1..=255)
        .contains(&key.len())
        .then_some(key)
        .filter(|k| k.bytes().all(|b| b.is_ascii_graphic() && b != b'"'))
}

/// Whether an answer is one to replay: a retry must not run the request again.
fn kept(status: StatusCode) -> bool {
    !(status.is_server_error()
        || status == StatusCode::UNAUTHORIZED
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS)
}

/// The middleware, on every `/api/v1` route.
pub async fn layer(State(keyed): State<Keyed>, request: Request, next: Next) -> Response {
    if !keyed.applies(&request) {
        return next.run(request).await;
    }
    let state = keyed.state;
    let Some(value) = request.headers().get(HEADER) else {
        return next.run(request).await;
    };
    let Some(key) = parse_key(value).map(str::to_owned) else {
        return ApiError::BadKey.into_response();
    };
    // Without a credential the request is refused anyway, and there is no client to scope
    // the key to: let the route answer.
    let Some(credential) = request.headers().get(header::AUTHORIZATION).cloned() else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, BODY_LIMIT).await else {
        return ApiError::TooLarge.into_response();
    };
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let keyed = KeyedRequest::new(
        credential.as_bytes(),
        &key,
        parts.method.as_str(),
        target,
        &bytes,
    );
    let service = &state.service;
    let deadline = tokio::time::Instant::now() + WAIT_FOR_FIRST;
    loop {
        match service.claim_key(&keyed).await {
            Err(e) => return ApiError::from(e).into_response(),
            Ok(KeyClaim::Claimed) => break,
            Ok(KeyClaim::Answered(answer)) => return replay(answer),
            Ok(KeyClaim::Mismatch) => return ApiError::KeyReused.into_response(),
            Ok(KeyClaim::InFlight) => {
                if tokio::time::Instant::now() >= deadline {
                    return ApiError::KeyInUse.into_response();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let request = Request::from_parts(parts, Body::from(bytes));
    // Its own task: the answer is stored even when the client hangs up first. The request's
    // span goes with it, so the handler's logs keep their request id.
    let answered = tokio::spawn({
        let (service, keyed) = (service.clone(), keyed.clone());
        async move {
            let response = next.run(request).await;
            settle(&service, &keyed, response).await
        }
        .instrument(tracing::Span::current())
    });
    match answered.await {
        Ok(response) => response,
        Err(e) => {
            // A panic in the handler: no answer to keep, so a retry may run it again now
            // rather than wait out the claim.
            if let Err(e) = service.release_key(&keyed).await {
                tracing::warn!(error = %e, "could not release an idempotency key");
            }
            tracing::error!(error = %e, "a keyed API request's task ended without an answer");
            ApiError::App(crate::web::error::AppError::Internal(anyhow::anyhow!(
                "the request's task ended: {e}"
            )))
            .into_response()
        }
    }
}

/// Store the answer for replay, or release the key when the answer says "try again".
async fn settle(service: &Service, keyed: &KeyedRequest, response: Response) -> Response {
    if !kept(response.status()) {
        if let Err(e) = service.release_key(keyed).await {
            tracing::warn!(error = %e, "could not release an idempotency key");
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::error!(error = %e, "could not read a keyed API answer");
            let _ = service.release_key(keyed).await;
            return ApiError::App(crate::web::error::AppError::Internal(anyhow::anyhow!(e)))
                .into_response();
        }
    };
    let stored = match std::str::from_utf8(&bytes) {
        Ok(text) => {
            let answer = StoredAnswer {
                status: parts.status.as_u16(),
                content_type: parts
                    .headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("application/json")
                    .to_owned(),
                body: text.to_owned(),
            };
            service.answer_key(keyed, &answer).await
        }
        // Every API answer is JSON; anything else is not kept, and a retry runs afresh.
        Err(_) => service.release_key(keyed).await,
    };
    if let Err(e) = stored {
        // The change is committed and answered; a retry within the lifetime of the claim
        // waits, then runs the request again. Said loudly: that is the case keys exist for.
        tracing::error!(error = %e, "could not store the answer to an idempotency key");
    }
    Response::from_parts(parts, Body::from(bytes))
}

fn replay(answer: StoredAnswer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut response = (status, Bytes::from(answer.body)).into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&answer.content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

/// How long answers are kept, for the OpenAPI document.
pub fn lifetime_hours() -> i64 {
    KEY_LIFETIME.as_hours()
}
