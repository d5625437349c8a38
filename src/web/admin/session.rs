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
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    name: String,
    password: String,
    next: Option<String>,
}

pub async fn login(State(state): State<AppState>, request: Request) -> Result<Response, AppError> {
    auth::same_origin(request.headers(), &state.settings.public_url)?;
    let ip = auth::client_ip(
        request.extensions(),
        request.headers(),
        &state.settings.trusted_proxies,
    );
    let Form(form) = Form::<LoginForm>::from_request(request, &state).await?;
    let next = safe_next(form.next.as_deref());
    let again = |status, error: String| {
        page(
            status,
            &LoginPage {
                site: state.site.clone(),
                error: Some(error),
                name: form.name.clone(),
                next: next.clone(),
            },
        )
    };
    let throttle = state.service.sign_ins();
    if let Err(wait) = throttle.begin(Scope::Login, &form.name, ip).await? {
        return again(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "Too many failed attempts. Try again {}.",
                auth::wait_text(wait)
            ),
        );
    }
    let checked = match state.service.verify_user(&form.name, &form.password).await {
        Err(ServiceError::Busy(why)) => {
            throttle.cancel(Scope::Login, &form.name, ip).await;
            return again(StatusCode::TOO_MANY_REQUESTS, format!("{why}."));
        }
        other => other?,
    };
    match checked {
        None => again(
            StatusCode::UNAUTHORIZED,
            "Wrong name or password.".to_owned(),
        ),
        Some(user) => {
            throttle.succeeded(Scope::Login, &form.name, ip).await;
            signed_in_at(&state, user, &next).await
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
    );
    let Form(form) = Form::<SetupForm>::from_request(request, &state).await?;
    let Some(code) = &state.setup_code else {
        return Ok(Redirect::to("/admin/login").into_response());
    };
    if state.service.store().count_users().await? > 0 {
        return Ok(Redirect::to("/admin/login").into_response());
    }
    let again = |status, error: String| {
        page(
            status,
            &SetupPage {
                site: state.site.clone(),
                error: Some(error),
                name: form.name.clone(),
            },
        )
    };
    if let Err(wait) = state.service.sign_ins().begin(Scope::Setup, "", ip).await? {
        return again(
            StatusCode::TOO_MANY_REQUESTS,
            format!("Too many wrong codes. Try again {}.", auth::wait_text(wait)),
        );
    }
    if !auth::constant_time_eq(form.code.trim().as_bytes(), code.expose().as_bytes()) {
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
    if let Some(cookie) = auth::session_from(&headers) {
        state.service.close_session(&cookie).await?;
    }
    let mut r = Redirect::to("/admin/login").into_response();
    let secure = state.settings.public_url.starts_with("https://");
    r.headers_mut().insert(
        header::SET_COOKIE,
        auth::session_cookie("", secure, Some(0)),
    );
    Ok(r)
}
