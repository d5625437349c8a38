//! Signing in and out, and the first-run setup with the code from the log.

use super::*;

// ----- sign in -------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "admin/login.html")]
struct LoginPage {
    site: Site,
    error: Option<String>,
    name: String,
    next: String,
    resume: Option<Resume>,
}

/// A form sent after its session ended, carried through the sign-in page (as hidden fields) so
/// that nothing typed is lost: once signed in, it is offered again, to send or leave.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Resume {
    /// Where the form posts.
    #[serde(default)]
    resume_to: String,
    /// The page the form was on.
    #[serde(default)]
    resume_from: String,
    /// The form's fields, URL-encoded, without its CSRF token.
    #[serde(default)]
    resume: String,
    /// `1`: the form held passwords or secrets, which are not kept: it is to be filled again.
    #[serde(default)]
    resume_secrets: String,
}

impl Resume {
    /// A resume that points inside the admin area, or none.
    fn checked(self) -> Option<Self> {
        let inside = |p: &str| safe_next(Some(p)) == p;
        (inside(&self.resume_to) && inside(&self.resume_from)).then_some(self)
    }

    /// The kept fields, for showing and sending again.
    fn fields(&self) -> Vec<(String, String)> {
        serde_urlencoded::from_str(&self.resume).unwrap_or_default()
    }
}

/// Form fields that hold a password or a secret (a bot token, an app password, a webhook URL).
const SECRET_FIELDS: &[&str] = &["password", "current", "again", "secret", "code"];

/// The admin page a form at `path` (a POST-only address) belongs to: where a person who
/// followed that address, or whose form could not be kept, is sent.
pub fn form_page(path: &str) -> String {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["admin", "maintenances", id, "plan"] => format!("/admin/maintenances/{id}/edit"),
        [
            "admin",
            section @ ("maintenances" | "rollouts" | "incidents"),
            id,
            ..,
        ] if id.parse::<i64>().is_ok() => {
            format!("/admin/{section}/{id}")
        }
        ["admin", "incidents"] => "/admin/incidents".to_owned(),
        ["admin", section @ ("maintenances" | "rollouts")] => format!("/admin/{section}/new"),
        [
            "admin",
            section @ ("components" | "users" | "channels" | "tokens" | "password"),
            ..,
        ] => {
            format!("/admin/{section}")
        }
        _ => "/admin".to_owned(),
    }
}

/// A signed-out browser posted an admin form (the session expired while the page was open):
/// the sign-in page, carrying the form, instead of a redirect that would drop it.
pub fn sign_in_to_resume(
    state: &AppState,
    path: &str,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Response {
    let from = headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| {
            let origin = r.split_once("://").map(|(_, rest)| rest)?;
            let (host, path) = origin.split_at(origin.find('/')?);
            let host_ok = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .is_some_and(|h| h == host)
                || state.settings.public_url.contains(&format!("://{host}"));
            let path = path.split(['?', '#']).next().unwrap_or(path);
            (host_ok && safe_next(Some(path)) == path).then(|| path.to_owned())
        })
        .unwrap_or_else(|| form_page(path));
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(body).unwrap_or_default();
    // Passwords and secrets are not carried through the sign-in page or shown again: the
    // form asks for them anew.
    let dropped = fields
        .iter()
        .any(|(k, v)| SECRET_FIELDS.contains(&k.as_str()) && !v.is_empty());
    let kept: Vec<(String, String)> = fields
        .into_iter()
        .filter(|(k, _)| k != "csrf" && !SECRET_FIELDS.contains(&k.as_str()))
        .collect();
    let resume = Resume {
        resume_secrets: if dropped { "1" } else { "" }.to_owned(),
        resume_to: path.to_owned(),
        resume_from: from,
        resume: serde_urlencoded::to_string(&kept).unwrap_or_default(),
    }
    .checked();
    page(
        StatusCode::UNAUTHORIZED,
        &LoginPage {
            site: state.site.clone(),
            error: None,
            name: String::new(),
            next: resume
                .as_ref()
                .map_or_else(|| "/admin".to_owned(), |r| r.resume_from.clone()),
            resume,
        },
    )
    .unwrap_or_else(IntoResponse::into_response)
}

#[derive(Template)]
#[template(path = "admin/resume.html")]
struct ResumePage {
    site: Site,
    me: Me,
    resume: Resume,
    fields: Vec<(String, String)>,
}

impl ResumePage {
    /// A field as a person reads it: `schedule_hint` → "Schedule hint".
    fn label(name: &str) -> String {
        let mut words = name.replace('_', " ");
        if let Some(first) = words.get_mut(..1) {
            first.make_ascii_uppercase();
        }
        words
    }
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// Open a session for `user` and send the browser to `to` with its cookie.
async fn signed_in_at(
    state: &AppState,
    user: crate::domain::User,
    to: &str,
) -> Result<Response, AppError> {
    let session = state.service.open_session(user).await?;
    let secure = state.settings.public_url.starts_with("https://");
    let mut r = Redirect::to(to).into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        auth::session_cookie(session.cookie.expose(), secure, None),
    );
    Ok(r)
}

/// Signed in with a form kept from the expired session: the form again, with the new
/// session's token, to send or to leave for the page it was on.
async fn resume_page(
    state: &AppState,
    user: crate::domain::User,
    resume: Resume,
) -> Result<Response, AppError> {
    let session = state.service.open_session(user).await?;
    let secure = state.settings.public_url.starts_with("https://");
    let me = Me {
        name: session.user.name.clone(),
        csrf: session.csrf.clone(),
        is_admin: session.user.role.allows(Role::Admin),
        here: String::new(),
        notice: None,
    };
    let mut r = page(
        StatusCode::OK,
        &ResumePage {
            site: state.site.clone(),
            me,
            fields: resume.fields(),
            resume,
        },
    )?;
    r.headers_mut().insert(
        header::SET_COOKIE,
        auth::session_cookie(session.cookie.expose(), secure, None),
    );
    Ok(r)
}

/// Only paths inside the admin area: never an open redirect.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/admin") && !n.starts_with("//") && !n.contains('\\') => {
            n.to_owned()
        }
        _ => "/admin".to_owned(),
    }
}

pub async fn login_page(
    State(state): State<AppState>,
    Query(q): Query<LoginQuery>,
) -> Result<Response, AppError> {
    if state.setup_code.is_some() && state.service.store().count_users().await? == 0 {
        return Ok(Redirect::to("/admin/setup").into_response());
    }
    page(
        StatusCode::OK,
        &LoginPage {
            site: state.site.clone(),
            error: None,
            name: String::new(),
            next: safe_next(q.next.as_deref()),
            resume: None,
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    name: String,
    password: String,
    next: Option<String>,
    #[serde(flatten)]
    resume: Resume,
}

pub async fn login(State(state): State<AppState>, request: Request) -> Result<Response, AppError> {
    auth::same_origin(request.headers(), &state.settings.public_url)?;
    let ip = auth::client_ip(
        request.extensions(),
        request.headers(),
        &state.settings.trusted_proxies,
        &state.settings.trusted_proxy_header,
    );
    let secure = state.settings.public_url.starts_with("https://");
    let device = auth::device_from(request.headers(), secure);
    let Form(form) = Form::<LoginForm>::from_request(request, &state).await?;
    let next = safe_next(form.next.as_deref());
    let resume = form.resume.clone().checked();
    let again = |status, error: String| {
        page(
            status,
            &LoginPage {
                site: state.site.clone(),
                error: Some(error),
                name: form.name.clone(),
                next: next.clone(),
                resume: resume.clone(),
            },
        )
    };
    let checked = match state
        .service
        .check_password(&form.name, &form.password, ip, device.as_deref())
        .await
    {
        Err(ServiceError::Busy(why)) => {
            return again(StatusCode::TOO_MANY_REQUESTS, format!("{why}."));
        }
        other => other?,
    };
    match checked {
        PasswordCheck::Wait(wait) => again(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "Too many failed attempts. Try again {}.",
                auth::wait_text(wait)
            ),
        ),
        PasswordCheck::Wrong => {
            tracing::info!(
                target: "herald::auth",
                name = %form.name,
                client = ?ip,
                "sign-in failed: wrong name or password"
            );
            again(
                StatusCode::UNAUTHORIZED,
                "Wrong name or password.".to_owned(),
            )
        }
        PasswordCheck::Right { user, device } => {
            let mut r = match resume {
                Some(resume) => resume_page(&state, user, resume).await?,
                None => signed_in_at(&state, user, &next).await?,
            };
            r.headers_mut()
                .append(header::SET_COOKIE, auth::device_cookie(&device, secure));
            Ok(r)
        }
    }
}

use axum::extract::FromRequest;

#[derive(Template)]
#[template(path = "admin/setup.html")]
struct SetupPage {
    site: Site,
    error: Option<String>,
    name: String,
    /// The code as typed: kept when only the passwords were wrong.
    code: String,
}

/// `GET /admin/setup`: only while nobody can sign in.
pub async fn setup_page(State(state): State<AppState>) -> Result<Response, AppError> {
    if state.service.store().count_users().await? > 0 || state.setup_code.is_none() {
        return Ok(Redirect::to("/admin/login").into_response());
    }
    page(
        StatusCode::OK,
        &SetupPage {
            site: state.site.clone(),
            error: None,
            name: String::new(),
            code: String::new(),
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct SetupForm {
    #[serde(default)]
    code: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    again: String,
}

/// `POST /admin/setup`: the setup code from the log makes the first admin, once.
pub async fn setup(State(state): State<AppState>, request: Request) -> Result<Response, AppError> {
    auth::same_origin(request.headers(), &state.settings.public_url)?;
    let ip = auth::client_ip(
        request.extensions(),
        request.headers(),
        &state.settings.trusted_proxies,
        &state.settings.trusted_proxy_header,
    );
    let Form(form) = Form::<SetupForm>::from_request(request, &state).await?;
    let Some(code) = &state.setup_code else {
        return Ok(Redirect::to("/admin/login").into_response());
    };
    if state.service.store().count_users().await? > 0 {
        return Ok(Redirect::to("/admin/login").into_response());
    }
    let code_right = auth::constant_time_eq(form.code.trim().as_bytes(), code.expose().as_bytes());
    let again = |status, error: String| {
        page(
            status,
            &SetupPage {
                site: state.site.clone(),
                error: Some(error),
                name: form.name.clone(),
                code: if code_right {
                    form.code.clone()
                } else {
                    String::new()
                },
            },
        )
    };
    if let Err(wait) = state
        .service
        .sign_ins()
        .begin(Scope::Setup, "", ip, None)
        .await?
    {
        return again(
            StatusCode::TOO_MANY_REQUESTS,
            format!("Too many wrong codes. Try again {}.", auth::wait_text(wait)),
        );
    }
    if !code_right {
        return again(
            StatusCode::UNAUTHORIZED,
            "That is not the setup code in Herald's log.".to_owned(),
        );
    }
    if form.password != form.again {
        return again(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The two passwords differ.".to_owned(),
        );
    }
    let user = match state
        .service
        .add_first_admin(code, &form.name, &form.password)
        .await
    {
        Ok(Some(user)) => user,
        // Someone else used the code a moment ago.
        Ok(None) => return Ok(Redirect::to("/admin/login").into_response()),
        Err(ServiceError::Domain(DomainError::Invalid(e))) => {
            return again(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("The {} {}.", e.field, e.message),
            );
        }
        Err(e) => return Err(e.into()),
    };
    signed_in_at(&state, user, "/admin").await
}

pub async fn logout(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    _: CsrfForm,
) -> Result<Response, AppError> {
    let secure = state.settings.public_url.starts_with("https://");
    if let Some(cookie) = auth::session_from(&headers, secure) {
        state.service.close_session(&cookie).await?;
    }
    let mut r = Redirect::to("/admin/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        auth::session_cookie("", secure, Some(0)),
    );
    Ok(r)
}
