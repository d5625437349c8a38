//! Accounts (admins): API tokens, the audit log, users, and everyone's own password.

use super::*;

// ----- tokens and audit log (admins) ---------------------------------------------------------

pub struct TokenRow {
    id: i64,
    name: String,
    role: &'static str,
    prefix: String,
    last_used: Option<TimeView>,
    revoked: bool,
    expires: Option<TimeView>,
    expired: bool,
}

#[derive(Template)]
#[template(path = "admin/tokens.html")]
struct TokensPage {
    site: Site,
    me: Me,
    tokens: Vec<TokenRow>,
    created: Option<String>,
    error: Option<String>,
    /// What was typed and chosen, kept when the form is refused.
    form: TokenForm,
}

async fn tokens_page(
    state: &AppState,
    signed_in: &SignedIn,
    status: StatusCode,
    created: Option<String>,
    error: Option<String>,
    form: TokenForm,
) -> Result<Response, AppError> {
    let tokens = signed_in
        .service(state)
        .tokens()
        .await?
        .into_iter()
        .map(|t| TokenRow {
            expired: t.revoked_at.is_none() && !t.is_live(state.service.now()),
            id: t.id,
            name: t.name,
            role: t.role.as_str(),
            prefix: t.prefix,
            last_used: t.last_used_at.map(time),
            revoked: t.revoked_at.is_some(),
            expires: t.expires_at.map(time),
        })
        .collect();
    page(
        status,
        &TokensPage {
            site: state.site.clone(),
            me: me(signed_in),
            tokens,
            created,
            error,
            form,
        },
    )
}

/// The cookie that carries a new token's secret from the form's redirect to the page that
/// shows it, once.
const NEW_TOKEN: &str = "herald_new_token";

pub async fn tokens(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    signed_in: SignedIn,
) -> Result<Response, AppError> {
    signed_in.require(Role::Admin)?;
    let created = auth::flash(&headers, NEW_TOKEN, &signed_in.csrf);
    let mut r = tokens_page(
        &state,
        &signed_in,
        StatusCode::OK,
        created.clone(),
        None,
        TokenForm::default(),
    )
    .await?;
    if created.is_some() {
        let secure = state.settings.public_url.starts_with("https://");
        r.headers_mut().insert(
            header::SET_COOKIE,
            auth::flash_cookie(NEW_TOKEN, "", "/admin/tokens", "", secure),
        );
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            axum::http::HeaderValue::from_static("no-store"),
        );
    }
    Ok(r)
}

#[derive(Debug, Default, Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
    /// Days until it is refused; empty or 0: never.
    #[serde(default)]
    expires: String,
}

pub async fn create_token(
    State(state): State<AppState>,
    CsrfForm { signed_in, form }: CsrfForm<TokenForm>,
) -> Result<Response, AppError> {
    let role = Role::parse(&form.role).unwrap_or(Role::Maintainer);
    let lifetime = match form.expires.trim() {
        "" | "0" | "never" => None,
        days => match days.parse::<i64>() {
            Ok(d) if (1..=3650).contains(&d) => Some(jiff::SignedDuration::from_hours(24 * d)),
            _ => {
                return tokens_page(
                    &state,
                    &signed_in,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    None,
                    Some("The expiry must be a number of days from 1 to 3650, or never.".into()),
                    form,
                )
                .await;
            }
        },
    };
    match signed_in
        .service(&state)
        .create_token_expiring(&form.name, role, lifetime)
        .await
    {
        Ok(new) => {
            // Shown once by the page the redirect leads to: a reload shows the list, and
            // makes no second token.
            let secure = state.settings.public_url.starts_with("https://");
            let mut r = done("/admin/tokens", "token_created");
            r.headers_mut().insert(
                header::SET_COOKIE,
                auth::flash_cookie(
                    NEW_TOKEN,
                    new.secret.expose(),
                    "/admin/tokens",
                    &signed_in.csrf,
                    secure,
                ),
            );
            Ok(r)
        }
        Err(ServiceError::Domain(DomainError::Invalid(e))) => {
            let error = Some(format!("The {} {}.", e.field, e.message));
            tokens_page(
                &state,
                &signed_in,
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
                error,
                form,
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn revoke_token(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    CsrfForm { signed_in, .. }: CsrfForm,
) -> Result<Response, AppError> {
    signed_in.service(&state).revoke_token(id).await?;
    Ok(done("/admin/tokens", "token_revoked"))
}

pub struct AuditRow {
    at: TimeView,
    actor: String,
    action: String,
    target: String,
}

#[derive(Template)]
#[template(path = "admin/audit.html")]
struct AuditPage {
    site: Site,
    me: Me,
    entries: Vec<AuditRow>,
    actor: String,
    window: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    /// Only entries by this actor (`user:alice`, `token:deploy`).
    #[serde(default)]
    actor: String,
    /// Only entries about this window (its id).
    #[serde(default)]
    window: String,
}

pub async fn audit(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Query(q): Query<AuditQuery>,
) -> Result<Response, AppError> {
    signed_in.require(Role::Admin)?;
    let actor = Some(q.actor.trim()).filter(|a| !a.is_empty());
    let window = match q.window.trim() {
        "" => None,
        w => Some(format!(
            "window {}",
            w.parse::<i64>()
                .map_err(|_| AppError::BadRequest("window is a window's number".to_owned()))?
        )),
    };
    let entries = signed_in
        .service(&state)
        .audit_filtered(200, actor, window.as_deref())
        .await?
        .into_iter()
        .map(|e| AuditRow {
            at: time(e.created_at),
            actor: e.actor,
            action: e.action,
            target: e.target.unwrap_or_default(),
        })
        .collect();
    page(
        StatusCode::OK,
        &AuditPage {
            site: state.site.clone(),
            me: me(&signed_in),
            entries,
            actor: q.actor.trim().to_owned(),
            window: q.window.trim().to_owned(),
        },
    )
}

#[derive(Template)]
#[template(path = "admin/users.html")]
struct UsersPage {
    site: Site,
    me: Me,
    users: Vec<(String, &'static str, TimeView)>,
    /// The field a refusal concerns, and why.
    error: Option<(&'static str, String)>,
    name: String,
    /// A refused change to one user's row: (user, why).
    row_error: Option<(String, String)>,
    notice: Option<String>,
}

impl UsersPage {
    fn row_error_for(&self, user: &str) -> Option<&str> {
        self.row_error
            .as_ref()
            .filter(|(u, _)| u == user)
            .map(|(_, e)| e.as_str())
    }
}

async fn users_page(
    state: &AppState,
    signed_in: &SignedIn,
    status: StatusCode,
    error: Option<(&'static str, String)>,
    name: String,
) -> Result<Response, AppError> {
    users_page_with(state, signed_in, status, error, name, None, None).await
}

async fn users_page_with(
    state: &AppState,
    signed_in: &SignedIn,
    status: StatusCode,
    error: Option<(&'static str, String)>,
    name: String,
    row_error: Option<(String, String)>,
    notice: Option<String>,
) -> Result<Response, AppError> {
    let users = signed_in
        .service(state)
        .users()
        .await?
        .into_iter()
        .map(|u| (u.name, u.role.as_str(), time(u.created_at)))
        .collect();
    page(
        status,
        &UsersPage {
            site: state.site.clone(),
            me: me(signed_in),
            users,
            error,
            name,
            row_error,
            notice,
        },
    )
}

pub async fn users(
    State(state): State<AppState>,
    signed_in: SignedIn,
) -> Result<Response, AppError> {
    signed_in.require(Role::Admin)?;
    users_page(&state, &signed_in, StatusCode::OK, None, String::new()).await
}

#[derive(Debug, Deserialize)]
pub struct UserForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    role: String,
}

pub async fn add_user(
    State(state): State<AppState>,
    CsrfForm { signed_in, form }: CsrfForm<UserForm>,
) -> Result<Response, AppError> {
    let role = Role::parse(&form.role).unwrap_or(Role::Maintainer);
    match signed_in
        .service(&state)
        .add_user(&form.name, &form.password, role)
        .await
    {
        Ok(_) => Ok(done("/admin/users", "user_added")),
        Err(ServiceError::Domain(DomainError::Invalid(e))) => {
            let error = Some((e.field, format!("The {} {}.", e.field, e.message)));
            users_page(
                &state,
                &signed_in,
                StatusCode::UNPROCESSABLE_ENTITY,
                error,
                form.name,
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize)]
pub struct AccountForm {
    /// `remove`, `role` or `password`.
    action: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    password: String,
}

/// `POST /admin/users/{name}`: remove a user, change their role or set their password; each
/// ends their sessions. The last admin stays.
pub async fn account_action(
    State(state): State<AppState>,
    Path(name): Path<String>,
    CsrfForm { signed_in, form }: CsrfForm<AccountForm>,
) -> Result<Response, AppError> {
    let service = signed_in.service(&state);
    let (result, code) = match form.action.as_str() {
        "remove" => (service.remove_user(&name).await, "user_removed"),
        "role" => {
            let role = Role::parse(&form.role)
                .ok_or_else(|| AppError::BadRequest(format!("unknown role {:?}", form.role)))?;
            (service.set_role(&name, role).await, "user_role")
        }
        "password" => (
            service.set_password(&name, &form.password).await,
            "user_password",
        ),
        other => return Err(AppError::BadRequest(format!("unknown action {other:?}"))),
    };
    match result {
        // Changing one's own role or password ends one's own session too.
        Ok(()) if name == signed_in.user.name && form.action != "remove" => {
            Ok(Redirect::to("/admin/login").into_response())
        }
        Ok(()) => Ok(done("/admin/users", code)),
        Err(ServiceError::Domain(e)) => {
            let (status, why) = refusal(&e);
            users_page_with(
                &state,
                &signed_in,
                status,
                None,
                String::new(),
                Some((name, why)),
                None,
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Template)]
#[template(path = "admin/password.html")]
struct PasswordPage {
    site: Site,
    me: Me,
    error: Option<(&'static str, String)>,
}

#[derive(Debug, Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    current: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    again: String,
}

/// `GET /admin/password`: any signed-in user changes their own password.
pub async fn password_page(
    State(state): State<AppState>,
    signed_in: SignedIn,
) -> Result<Response, AppError> {
    page(
        StatusCode::OK,
        &PasswordPage {
            site: state.site.clone(),
            me: me(&signed_in),
            error: None,
        },
    )
}

/// `POST /admin/password`: the current password, then the new one twice. Every session of the
/// user ends; they sign in again with the new password.
pub async fn change_password(
    State(state): State<AppState>,
    auth::ClientIp(ip): auth::ClientIp,
    headers: axum::http::HeaderMap,
    CsrfForm { signed_in, form }: CsrfForm<PasswordForm>,
) -> Result<Response, AppError> {
    let again = |status, field: &'static str, why: String| {
        page(
            status,
            &PasswordPage {
                site: state.site.clone(),
                me: me(&signed_in),
                error: Some((field, why)),
            },
        )
    };
    let name = signed_in.user.name.clone();
    // As a sign-in: a stolen session cannot guess the password here faster than at the door.
    let secure = state.settings.public_url.starts_with("https://");
    let device = auth::device_from(&headers, secure);
    match state
        .service
        .check_password(&name, &form.current, ip, device.as_deref())
        .await
    {
        Ok(PasswordCheck::Right { .. }) => {}
        Ok(PasswordCheck::Wrong) => {
            return again(
                StatusCode::UNAUTHORIZED,
                "current",
                "That is not your current password.".to_owned(),
            );
        }
        Ok(PasswordCheck::Wait(wait)) => {
            return again(
                StatusCode::TOO_MANY_REQUESTS,
                "current",
                format!(
                    "Too many wrong passwords. Try again {}.",
                    auth::wait_text(wait)
                ),
            );
        }
        Err(ServiceError::Busy(why)) => {
            return again(StatusCode::TOO_MANY_REQUESTS, "current", format!("{why}."));
        }
        Err(e) => return Err(e.into()),
    }
    if form.password != form.again {
        return again(
            StatusCode::UNPROCESSABLE_ENTITY,
            "again",
            "The two new passwords differ.".to_owned(),
        );
    }
    match signed_in
        .service(&state)
        .set_password(&name, &form.password)
        .await
    {
        Ok(()) => Ok(Redirect::to("/admin/login").into_response()),
        Err(ServiceError::Domain(DomainError::Invalid(e))) => again(
            StatusCode::UNPROCESSABLE_ENTITY,
            "password",
            format!("The new password {}.", e.message),
        ),
        Err(e) => Err(e.into()),
    }
}
