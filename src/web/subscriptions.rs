//! Subscribing by email, without an account: the form (`/subscribe`, and its short form on the
//! public pages), the confirmation link, the page each subscriber manages their mail on, and
//! RFC 8058 one-click unsubscribe. A subscriber's pages are reached by signed links only
//! (`/subscriptions/{id}/{token}`); they are never cached and send no referrer.

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::AppState;
use super::error::{AppError, Path};
use super::view::Site;
use crate::domain::{LinkPurpose, MailKind, Preferences, Subscriber, ValidationError, manage_path};
use crate::service::ServiceError;

/// A component to tick.
pub struct Choice {
    pub value: String,
    pub label: String,
    pub checked: bool,
}

#[derive(Template)]
#[template(path = "public/subscribe.html")]
struct SubscribePage {
    site: Site,
    email: String,
    everything: bool,
    components: Vec<Choice>,
    kinds: Vec<Choice>,
    error_for: String,
    error: String,
    /// The form went through: say to look for the mail.
    sent: bool,
    enabled: bool,
    /// How often an address may be sent a mail from the form.
    interval_minutes: i64,
}

#[derive(Template)]
#[template(path = "public/subscription.html")]
struct SubscriptionPage {
    site: Site,
    /// manage, confirm, confirmed, unsubscribe, unsubscribed
    mode: &'static str,
    address: String,
    action: String,
    everything: bool,
    components: Vec<Choice>,
    kinds: Vec<Choice>,
    /// The field a refused save is about, and why.
    error_for: String,
    error: String,
    notice: String,
}

/// Pages behind a subscriber's link: not stored by caches, and the link not passed on.
fn private(status: StatusCode, body: String) -> Response {
    let mut response = (status, Html(body)).into_response();
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::HeaderName::from_static("x-robots-tag"),
        HeaderValue::from_static("noindex"),
    );
    response
}

/// What a form of choices says: "everything" or some components (by slug), and the kinds.
struct Chosen {
    email: String,
    everything: bool,
    slugs: Vec<String>,
    kinds: Vec<MailKind>,
    kinds_given: bool,
}

fn chosen(form: &[(String, String)]) -> Chosen {
    let mut c = Chosen {
        email: String::new(),
        everything: true,
        slugs: Vec::new(),
        kinds: Vec::new(),
        kinds_given: false,
    };
    let mut scope_given = false;
    for (k, v) in form {
        match k.as_str() {
            "email" => c.email = v.clone(),
            "scope" => {
                scope_given = true;
                c.everything = v != "some";
            }
            "components" => c.slugs.push(v.clone()),
            "kinds" => {
                c.kinds_given = true;
                c.kinds.extend(MailKind::parse(v));
            }
            // The short form says "every kind" by leaving the choice out.
            "kinds_shown" => c.kinds_given = true,
            _ => {}
        }
    }
    if !scope_given {
        c.everything = c.slugs.is_empty();
    }
    if !c.kinds_given {
        c.kinds = MailKind::ALL.to_vec();
    }
    c.kinds.sort();
    c.kinds.dedup();
    c
}

async fn choices(
    state: &AppState,
    everything: bool,
    followed: &[i64],
    slugs: &[String],
    kinds: &[MailKind],
) -> Result<(Vec<Choice>, Vec<Choice>), AppError> {
    let components = state
        .service
        .components()
        .await?
        .into_iter()
        .map(|c| Choice {
            checked: !everything && (followed.contains(&c.id) || slugs.contains(&c.slug)),
            value: c.slug,
            label: c.name,
        })
        .collect();
    let kinds = MailKind::ALL
        .into_iter()
        .map(|k| Choice {
            value: k.as_str().to_owned(),
            label: k.label().to_owned(),
            checked: kinds.contains(&k),
        })
        .collect();
    Ok((components, kinds))
}

/// The components a form chose, as ids (`None`: everything); an unknown slug is an error.
async fn preferences(state: &AppState, c: &Chosen) -> Result<Preferences, AppError> {
    let components = if c.everything {
        None
    } else {
        let all = state.service.components().await?;
        let mut ids = Vec::new();
        for slug in &c.slugs {
            let Some(found) = all.iter().find(|x| &x.slug == slug) else {
                return Err(ValidationError::new("components", "choose from the list").into());
            };
            ids.push(found.id);
        }
        if ids.is_empty() {
            return Err(ValidationError::new(
                "components",
                "choose at least one component, or everything",
            )
            .into());
        }
        Some(ids)
    };
    if c.kinds.is_empty() {
        return Err(ValidationError::new("kinds", "choose at least one kind of mail").into());
    }
    Ok(Preferences {
        components,
        kinds: c.kinds.clone(),
    })
}

/// A posted form's fields, in order (repeated names kept).
async fn form_pairs(body: axum::body::Body) -> Result<Vec<(String, String)>, AppError> {
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map_err(|_| AppError::BadRequest("the form is too large".into()))?;
    serde_urlencoded::from_bytes(&bytes)
        .map_err(|_| AppError::BadRequest("the form could not be read".into()))
}

fn site_page(state: &AppState, title: &str, path: &str) -> Site {
    state
        .site
        .page(title, &format!("{title} · {}", state.site.name), path)
}

/// `GET /subscribe`: the whole form, components and kinds to choose.
pub async fn form(State(state): State<AppState>) -> Result<Response, AppError> {
    let (components, kinds) = choices(&state, true, &[], &[], &MailKind::ALL).await?;
    let page = SubscribePage {
        site: site_page(&state, "Get updates by email", "/subscribe"),
        email: String::new(),
        everything: true,
        components,
        kinds,
        error_for: String::new(),
        error: String::new(),
        sent: false,
        enabled: state.service.mail_enabled(),
        interval_minutes: crate::domain::CONFIRMATION_INTERVAL.as_mins(),
    };
    Ok(private(StatusCode::OK, page.render()?))
}

/// `POST /subscribe`, from the whole form or the short one on the public pages. The answer
/// is the same for an address known or not.
pub async fn subscribe(
    State(state): State<AppState>,
    request: axum::extract::Request,
) -> Result<Response, AppError> {
    let client = super::auth::client_ip(
        request.extensions(),
        request.headers(),
        &state.settings.trusted_proxies,
        &state.settings.trusted_proxy_header,
    );
    let c = chosen(&form_pairs(request.into_body()).await?);
    let outcome = match preferences(&state, &c).await {
        Ok(p) => state
            .service
            .subscribe(&c.email, p, client)
            .await
            .map_err(AppError::from),
        Err(e) => Err(e),
    };
    let mut retry_after = None;
    let (status, error_for, error, sent) = match outcome {
        Ok(Ok(())) => (StatusCode::OK, String::new(), String::new(), true),
        Ok(Err(wait)) => {
            retry_after = Some(wait.as_secs().max(1));
            (
                StatusCode::TOO_MANY_REQUESTS,
                "email".to_owned(),
                format!(
                    "Too many requests from your network. Try again in {} minutes.",
                    wait.as_secs().div_ceil(60).max(1)
                ),
                false,
            )
        }
        Err(AppError::Domain(crate::domain::DomainError::Invalid(v))) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            v.field.to_string(),
            v.message.clone(),
            false,
        ),
        Err(e) => return Err(e),
    };
    let (components, kinds) = choices(&state, c.everything, &[], &c.slugs, &c.kinds).await?;
    let page = SubscribePage {
        site: site_page(&state, "Get updates by email", "/subscribe"),
        email: c.email,
        everything: c.everything,
        components,
        kinds,
        error_for,
        error,
        sent,
        enabled: state.service.mail_enabled(),
        interval_minutes: crate::domain::CONFIRMATION_INTERVAL.as_mins(),
    };
    let mut response = private(status, page.render()?);
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    Ok(response)
}

async fn subscription_page(
    state: &AppState,
    s: &Subscriber,
    token: &str,
    mode: &'static str,
    notice: &str,
) -> Result<SubscriptionPage, AppError> {
    let followed = s.preferences.components.clone().unwrap_or_default();
    let everything = s.preferences.components.is_none();
    let (components, kinds) =
        choices(state, everything, &followed, &[], &s.preferences.kinds).await?;
    Ok(SubscriptionPage {
        site: state.site.clone(),
        mode,
        address: s.address.clone(),
        action: manage_path(s.id, token),
        everything,
        components,
        kinds,
        error_for: String::new(),
        error: String::new(),
        notice: notice.to_owned(),
    })
}

fn gone(state: &AppState, mode: &'static str) -> Result<Response, AppError> {
    let page = SubscriptionPage {
        site: state.site.clone(),
        mode,
        address: String::new(),
        action: String::new(),
        everything: true,
        components: Vec::new(),
        kinds: Vec::new(),
        error_for: String::new(),
        error: String::new(),
        notice: String::new(),
    };
    Ok(private(
        if mode == "unknown" {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::OK
        },
        page.render()?,
    ))
}

/// `POST /subscriptions/{id}/{token}`: save new choices.
pub async fn save(
    State(state): State<AppState>,
    Path((id, token)): Path<(i64, String)>,
    request: axum::extract::Request,
) -> Result<Response, AppError> {
    let form = form_pairs(request.into_body()).await?;
    let s = match state
        .service
        .subscription(id, &token, LinkPurpose::Manage)
        .await
    {
        Ok(s) => s,
        Err(ServiceError::NotFound(_)) => return gone(&state, "unknown"),
        Err(e) => return Err(e.into()),
    };
    let mut c = chosen(&form);
    c.kinds_given = true;
    let result = match preferences(&state, &c).await {
        Ok(p) => state
            .service
            .update_subscription(id, &token, p)
            .await
            .map_err(AppError::from),
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => {
            Ok(Redirect::to(&format!("{}?saved=1", manage_path(s.id, &token))).into_response())
        }
        Err(AppError::Domain(crate::domain::DomainError::Invalid(v))) => {
            // The page again with what was ticked and the reason.
            let mut page = subscription_page(&state, &s, &token, "manage", "").await?;
            let (components, kinds) =
                choices(&state, c.everything, &[], &c.slugs, &c.kinds).await?;
            page.everything = c.everything;
            page.components = components;
            page.kinds = kinds;
            page.error_for = v.field.to_string();
            page.error = v.message;
            Ok(private(StatusCode::UNPROCESSABLE_ENTITY, page.render()?))
        }
        Err(e) => Err(e),
    }
}

/// `GET /subscriptions/{id}/{token}/confirm`: a button, not the confirmation itself (mail
/// scanners open links; only a person presses the button).
pub async fn confirm_page(
    State(state): State<AppState>,
    Path((id, token)): Path<(i64, String)>,
) -> Result<Response, AppError> {
    match state
        .service
        .subscription(id, &token, LinkPurpose::Confirm)
        .await
    {
        Ok(s) => {
            let mut page = subscription_page(&state, &s, &token, "confirm", "").await?;
            page.action = crate::domain::confirm_path(s.id, &token);
            Ok(private(StatusCode::OK, page.render()?))
        }
        Err(ServiceError::NotFound(_)) => gone(&state, "unknown"),
        Err(e) => Err(e.into()),
    }
}

/// `POST /subscriptions/{id}/{token}/confirm`: confirmed; on to the manage page.
pub async fn confirm(
    State(state): State<AppState>,
    Path((id, token)): Path<(i64, String)>,
) -> Result<Response, AppError> {
    match state.service.confirm_subscription(id, &token).await {
        Ok(s) => {
            let key = state.service.link_key().await?;
            let manage = key.token(LinkPurpose::Manage, s.id, &s.key);
            Ok(
                Redirect::to(&format!("{}?confirmed=1", manage_path(s.id, &manage)))
                    .into_response(),
            )
        }
        Err(ServiceError::NotFound(_)) => gone(&state, "unknown"),
        Err(e) => Err(e.into()),
    }
}

/// `GET /subscriptions/{id}/{token}/unsubscribe`: a button.
pub async fn unsubscribe_page(
    State(state): State<AppState>,
    Path((id, token)): Path<(i64, String)>,
) -> Result<Response, AppError> {
    match state
        .service
        .subscription(id, &token, LinkPurpose::Manage)
        .await
    {
        Ok(s) => {
            let mut page = subscription_page(&state, &s, &token, "unsubscribe", "").await?;
            page.action = crate::domain::unsubscribe_path(s.id, &token);
            Ok(private(StatusCode::OK, page.render()?))
        }
        Err(ServiceError::NotFound(_)) => gone(&state, "unsubscribed"),
        Err(e) => Err(e.into()),
    }
}

/// `POST /subscriptions/{id}/{token}/unsubscribe`: RFC 8058 one-click (a mail provider's
/// bare POST of `List-Unsubscribe=One-Click`, no cookie, no CSRF token) or the page's button.
pub async fn unsubscribe(
    State(state): State<AppState>,
    Path((id, token)): Path<(i64, String)>,
) -> Result<Response, AppError> {
    state.service.unsubscribe(id, &token).await?;
    gone(&state, "unsubscribed")
}

/// `?saved=1` / `?confirmed=1` after a change.
#[derive(serde::Deserialize)]
pub struct Done {
    pub saved: Option<String>,
    pub confirmed: Option<String>,
}

/// `GET /subscriptions/{id}/{token}`: what this subscriber gets (and what was just done).
pub async fn manage(
    State(state): State<AppState>,
    Path((id, token)): Path<(i64, String)>,
    super::error::Query(done): super::error::Query<Done>,
) -> Result<Response, AppError> {
    let notice = if done.confirmed.is_some() {
        "You are subscribed. Choose below what you want to get."
    } else if done.saved.is_some() {
        "Saved."
    } else {
        ""
    };
    match state
        .service
        .subscription(id, &token, LinkPurpose::Manage)
        .await
    {
        Ok(s) => {
            let page = subscription_page(&state, &s, &token, "manage", notice).await?;
            Ok(private(StatusCode::OK, page.render()?))
        }
        Err(ServiceError::NotFound(_)) => gone(&state, "unknown"),
        Err(e) => Err(e.into()),
    }
}
