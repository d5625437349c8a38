//! Admin pages for announcements: channels (add, change, test, remove; secrets write-only),
//! the per-window delivery list with Retry and Skip, and previews of what each channel gets.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use jiff::Timestamp;
use serde::Deserialize;

use super::{Me, me, page};
use crate::domain::{
    Channel, ChannelKind, ChannelSecret, ChannelSource, DEFAULT_ROLLOUT_EVENTS_BLUESKY,
    DEFAULT_ROLLOUT_EVENTS_DISCORD, Delivery, DomainError, Maintenance, NewChannel, Role, Subject,
    Update, UpdateKind, ValidationError, default_events, default_milestones, event_kinds,
    milestone_kinds,
};
use crate::notify::render::{bluesky_post, discord_embed, discord_message};
use crate::notify::sender_for;
use crate::service::ServiceError;
use crate::web::AppState;
use crate::web::auth::{CsrfForm, SignedIn};
use crate::web::error::{AppError, Path};
use crate::web::view::{Site, TimeView, time};

pub struct ChannelRow {
    pub id: i64,
    pub name: String,
    pub kind: &'static str,
    pub kind_label: &'static str,
    pub target: String,
    pub api_url: String,
    pub from_env: bool,
    pub enabled: bool,
    pub events: Vec<(&'static str, &'static str, bool)>,
    pub milestones: Vec<(&'static str, &'static str, bool)>,
    pub mention_role: String,
    pub langs: String,
    pub is_discord: bool,
    pub event_count: usize,
}

fn kind_choices(
    chosen: &[UpdateKind],
    from: impl Iterator<Item = UpdateKind>,
) -> Vec<(&'static str, &'static str, bool)> {
    from.map(|k| (k.as_str(), k.label(), chosen.contains(&k)))
        .collect()
}

fn row(c: &Channel) -> ChannelRow {
    ChannelRow {
        id: c.id,
        name: c.name.clone(),
        kind: c.kind.as_str(),
        kind_label: c.kind.label(),
        target: c.target.clone(),
        api_url: c.api_url.clone().unwrap_or_default(),
        from_env: c.source == ChannelSource::Env,
        enabled: c.enabled,
        events: kind_choices(&c.events, event_kinds()),
        milestones: kind_choices(&c.milestones, milestone_kinds()),
        mention_role: c.mention_role.clone().unwrap_or_default(),
        langs: c.langs.join(", "),
        is_discord: c.kind.is_discord(),
        event_count: c.events.len(),
    }
}

/// The add form as typed (kept on error).
pub struct Draft {
    pub name: String,
    pub kind: String,
    pub target: String,
    pub api_url: String,
    pub events: Vec<(&'static str, &'static str, bool)>,
    pub milestones: Vec<(&'static str, &'static str, bool)>,
    pub mention_role: String,
    pub langs: String,
}

impl Default for Draft {
    fn default() -> Self {
        Self {
            name: String::new(),
            kind: "discord_webhook".into(),
            target: String::new(),
            api_url: String::new(),
            events: kind_choices(&default_events(ChannelKind::DiscordWebhook), event_kinds()),
            milestones: kind_choices(&default_milestones(), milestone_kinds()),
            mention_role: String::new(),
            langs: "en".into(),
        }
    }
}

#[derive(Template)]
#[template(path = "admin/channels.html")]
struct ChannelsPage {
    site: Site,
    me: Me,
    channels: Vec<ChannelRow>,
    kinds: Vec<(&'static str, &'static str)>,
    draft: Draft,
    /// Channel id the errors belong to (`None`: the add form).
    error_for: Option<i64>,
    errors: Vec<ValidationError>,
    notice: Option<String>,
    /// A signed webhook's secret, shown once after it was made: (channel name, secret).
    shown_secret: Option<(String, String)>,
}

impl ChannelsPage {
    fn error(&self, id: Option<i64>, field: &str) -> Option<&str> {
        if self.error_for != id {
            return None;
        }
        self.errors
            .iter()
            .find(|e| e.field == field)
            .map(|e| e.message.as_str())
    }
}

async fn channels_page(
    state: &AppState,
    signed_in: &SignedIn,
    status: StatusCode,
    draft: Draft,
    error_for: Option<i64>,
    errors: Vec<ValidationError>,
    notice: Option<String>,
) -> Result<Response, AppError> {
    channels_page_with(
        state, signed_in, status, draft, error_for, errors, notice, None,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn channels_page_with(
    state: &AppState,
    signed_in: &SignedIn,
    status: StatusCode,
    draft: Draft,
    error_for: Option<i64>,
    errors: Vec<ValidationError>,
    notice: Option<String>,
    shown_secret: Option<(String, String)>,
) -> Result<Response, AppError> {
    let channels = state.service.channels().await?.iter().map(row).collect();
    page(
        status,
        &ChannelsPage {
            site: state.site.clone(),
            me: me(signed_in),
            channels,
            kinds: ChannelKind::ALL
                .into_iter()
                .filter(|k| k.is_addable())
                .map(|k| (k.as_str(), k.label()))
                .collect(),
            draft,
            error_for,
            errors,
            notice,
            shown_secret,
        },
    )
}

/// What a form about channels leaves for the page its redirect leads to, once (the outcome
/// of a test message, a signing secret to show): a reload shows the page, and neither sends
/// another test nor makes another secret.
#[derive(Debug, Default, serde::Serialize, Deserialize)]
struct Flash {
    notice: Option<String>,
    /// (channel id, what went wrong with its test message)
    test_error: Option<(i64, String)>,
    /// (channel name, signing secret)
    secret: Option<(String, String)>,
}

const FLASH: &str = "herald_channels_flash";

/// Back to the channels page, carrying `flash` to it.
fn with_flash(state: &AppState, signed_in: &SignedIn, flash: &Flash) -> Response {
    let secure = state.settings.public_url.starts_with("https://");
    let mut r = Redirect::to("/admin/channels").into_response();
    let json = serde_json::to_string(flash).expect("a flash serialises");
    r.headers_mut().insert(
        axum::http::header::SET_COOKIE,
        crate::web::auth::flash_cookie(FLASH, &json, "/admin/channels", &signed_in.csrf, secure),
    );
    r
}

pub async fn channels(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    signed_in: SignedIn,
) -> Result<Response, AppError> {
    signed_in.require(Role::Admin)?;
    let flash: Option<Flash> = crate::web::auth::flash(&headers, FLASH, &signed_in.csrf)
        .and_then(|json| serde_json::from_str(&json).ok());
    let Some(flash) = flash else {
        return channels_page(
            &state,
            &signed_in,
            StatusCode::OK,
            Draft::default(),
            None,
            vec![],
            None,
        )
        .await;
    };
    let (error_for, errors) = match flash.test_error {
        Some((id, reason)) => (Some(id), vec![ValidationError::new("test", reason)]),
        None => (None, vec![]),
    };
    let mut r = channels_page_with(
        &state,
        &signed_in,
        StatusCode::OK,
        Draft::default(),
        error_for,
        errors,
        flash.notice,
        flash.secret,
    )
    .await?;
    let secure = state.settings.public_url.starts_with("https://");
    r.headers_mut().insert(
        axum::http::header::SET_COOKIE,
        crate::web::auth::flash_cookie(FLASH, "", "/admin/channels", "", secure),
    );
    r.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(r)
}

/// The channel form, as urlencoded pairs (checkbox groups repeat a name).
fn parse_form(pairs: Vec<(String, String)>) -> (NewChannel, Draft) {
    let mut new = NewChannel {
        enabled: false,
        ..NewChannel::default()
    };
    let mut draft = Draft {
        events: vec![],
        milestones: vec![],
        ..Draft::default()
    };
    let mut kind = String::new();
    for (k, v) in pairs {
        match k.as_str() {
            "name" => new.name = v,
            "kind" => kind = v,
            "target" => new.target = v,
            "secret" => new.secret = ChannelSecret::new(v),
            "api_url" => new.api_url = Some(v),
            "events" => new.events.extend(UpdateKind::parse(&v)),
            "milestones" => new.milestones.extend(UpdateKind::parse(&v)),
            "mention_role" => new.mention_role = Some(v),
            "langs" => new.langs = v.split(',').map(|l| l.trim().to_owned()).collect(),
            "enabled" => new.enabled = true,
            _ => {}
        }
    }
    new.kind = ChannelKind::parse(&kind);
    draft.name = new.name.clone();
    draft.kind = kind;
    draft.target = new.target.clone();
    draft.api_url = new.api_url.clone().unwrap_or_default();
    draft.events = kind_choices(&new.events, event_kinds());
    draft.milestones = kind_choices(&new.milestones, milestone_kinds());
    draft.mention_role = new.mention_role.clone().unwrap_or_default();
    draft.langs = new.langs.join(", ");
    (new, draft)
}

fn validation(e: ServiceError) -> Result<Vec<ValidationError>, AppError> {
    match e {
        ServiceError::Domain(DomainError::Invalid(v)) => Ok(vec![v]),
        e => Err(e.into()),
    }
}

pub async fn create_channel(
    State(state): State<AppState>,
    CsrfForm { signed_in, form }: CsrfForm<Vec<(String, String)>>,
) -> Result<Response, AppError> {
    let (mut new, draft) = parse_form(form);
    new.enabled = true;
    // The add form starts with Discord's rollout events (every move redraws its live
    // message). A Bluesky channel added with those left as they were gets Bluesky's defaults
    // instead: there, every ticked event is a post of its own.
    let rollout_ticked: Vec<UpdateKind> = new
        .events
        .iter()
        .copied()
        .filter(|k| k.is_rollout())
        .collect();
    if new.kind == Some(ChannelKind::Bluesky) && rollout_ticked == DEFAULT_ROLLOUT_EVENTS_DISCORD {
        new.events.retain(|k| !k.is_rollout());
        new.events.extend(DEFAULT_ROLLOUT_EVENTS_BLUESKY);
    }
    // A signed webhook left with the form's defaults gets every event but drain counts.
    if new.kind == Some(ChannelKind::Webhook)
        && new.events == default_events(ChannelKind::DiscordWebhook)
    {
        new.events = default_events(ChannelKind::Webhook);
    }
    match signed_in.service(&state).create_channel(new).await {
        Ok(c) => {
            let secret = (c.kind == ChannelKind::Webhook)
                .then(|| (c.name.clone(), c.secret.expose().to_owned()));
            Ok(with_flash(
                &state,
                &signed_in,
                &Flash {
                    notice: Some(format!("Added {}.", c.name)),
                    secret,
                    ..Flash::default()
                },
            ))
        }
        Err(e) => {
            let errors = validation(e)?;
            channels_page(
                &state,
                &signed_in,
                StatusCode::UNPROCESSABLE_ENTITY,
                draft,
                None,
                errors,
                None,
            )
            .await
        }
    }
}

pub async fn edit_channel(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    CsrfForm { signed_in, form }: CsrfForm<Vec<(String, String)>>,
) -> Result<Response, AppError> {
    let (new, _) = parse_form(form);
    match signed_in.service(&state).edit_channel(id, new).await {
        Ok(c) => Ok(with_flash(
            &state,
            &signed_in,
            &Flash {
                notice: Some(format!("Saved {}.", c.name)),
                ..Flash::default()
            },
        )),
        Err(e) => {
            let errors = validation(e)?;
            channels_page(
                &state,
                &signed_in,
                StatusCode::UNPROCESSABLE_ENTITY,
                Draft::default(),
                Some(id),
                errors,
                None,
            )
            .await
        }
    }
}

/// "New signing secret" of a signed webhook: shown once, the old one stops working.
pub async fn rotate_channel_secret(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    CsrfForm { signed_in, .. }: CsrfForm,
) -> Result<Response, AppError> {
    match signed_in.service(&state).rotate_webhook_secret(id).await {
        Ok(c) => Ok(with_flash(
            &state,
            &signed_in,
            &Flash {
                notice: Some(format!(
                    "{} has a new signing secret; the old one no longer verifies.",
                    c.name
                )),
                secret: Some((c.name.clone(), c.secret.expose().to_owned())),
                ..Flash::default()
            },
        )),
        Err(e) => {
            let errors = validation(e)?;
            channels_page(
                &state,
                &signed_in,
                StatusCode::UNPROCESSABLE_ENTITY,
                Draft::default(),
                Some(id),
                errors,
                None,
            )
            .await
        }
    }
}

pub async fn delete_channel(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    CsrfForm { signed_in, .. }: CsrfForm,
) -> Result<Response, AppError> {
    let name = state.service.channel(id).await?.name;
    signed_in.service(&state).delete_channel(id).await?;
    Ok(with_flash(
        &state,
        &signed_in,
        &Flash {
            notice: Some(format!("Removed {name}.")),
            ..Flash::default()
        },
    ))
}

/// "Send test message": posts at once (not through the outbox) and says what happened.
pub async fn test_channel(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    CsrfForm { signed_in, .. }: CsrfForm,
) -> Result<Response, AppError> {
    signed_in.require(Role::Admin)?;
    let channel = state.service.channel(id).await?;
    let settings = crate::notify::NotifySettings::from_settings(&state.settings);
    let text = format!(
        "Test message from {} ({}): announcements will arrive here.",
        state.settings.site_name, state.settings.public_url
    );
    let outcome = match sender_for(&channel, &settings, state.service.store()) {
        Ok(sender) => sender.test(&text).await,
        Err(e) => Err(e),
    };
    let flash = match outcome {
        Ok(link) => Flash {
            notice: Some(format!("Test message sent to {}: {link}", channel.name)),
            ..Flash::default()
        },
        Err(e) => Flash {
            test_error: Some((id, e.reason().to_owned())),
            ..Flash::default()
        },
    };
    Ok(with_flash(&state, &signed_in, &flash))
}

// ----- deliveries and previews on the run view ---------------------------------------------

pub struct DeliveryRow {
    pub id: i64,
    pub event: &'static str,
    pub channel: String,
    pub state: &'static str,
    pub attempts: i64,
    pub last_error: String,
    pub remote_url: Option<String>,
    pub sent_at: Option<TimeView>,
    /// Failed: Retry and Skip.
    pub can_retry: bool,
    /// Waiting to be sent (or retried): Send now, Skip and Pause.
    pub waiting: bool,
    /// Held by a maintainer until Retry or Skip.
    pub paused: bool,
    /// Sent, but the receiver did not say what it made: it cannot be edited later.
    pub blind: bool,
    /// Where Retry, Skip and Pause post.
    pub action: String,
}

/// Rows for the deliveries of the window or rollout whose admin page is at `page`.
pub fn delivery_rows(
    deliveries: &[Delivery],
    channels: &[Channel],
    page: &str,
) -> Vec<DeliveryRow> {
    deliveries
        .iter()
        .rev()
        .map(|d| DeliveryRow {
            action: format!("{page}/deliveries/{}", d.id),
            id: d.id,
            event: d.kind.label(),
            channel: channels
                .iter()
                .find(|c| c.id == d.channel_id)
                .map(|c| c.name.clone())
                .unwrap_or_else(|| format!("#{}", d.channel_id)),
            state: d.state.as_str(),
            attempts: d.attempts,
            last_error: d.last_error.clone().unwrap_or_default(),
            remote_url: d
                .remote_url
                .clone()
                .filter(|u| u.starts_with("https://") || u.starts_with("http://")),
            sent_at: d.sent_at.map(time),
            can_retry: d.state == crate::domain::DeliveryState::Failed,
            waiting: d.state == crate::domain::DeliveryState::Pending
                && d.next_attempt_ms < crate::store::HELD_MS,
            paused: d.state == crate::domain::DeliveryState::Pending
                && d.next_attempt_ms >= crate::store::HELD_MS,
            blind: d.state == crate::domain::DeliveryState::Sent && d.remote_id.is_none(),
        })
        .collect()
}

/// What a channel would get for the window's next announcement.
pub struct Preview {
    pub channel: String,
    pub kind_label: &'static str,
    pub is_discord: bool,
    /// Discord: the live message's embed (description and field values as HTML, shown as
    /// Discord shows them).
    pub title: String,
    pub description: String,
    pub fields: Vec<(String, String)>,
    /// Discord: the milestone message (HTML, as Discord shows it); Bluesky: the post text.
    pub text: String,
}

/// Discord's markdown as Discord shows it, for previews: bold, links, backslash escapes and
/// timestamp tags (`<t:…>`, as `<time>` in the reader's zone, which is what Discord does);
/// everything else as text.
pub fn discord_html(text: &str) -> String {
    let esc = |s: &str| {
        askama::filters::escape(s, askama::filters::Html)
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let mut out = String::with_capacity(text.len() + 32);
    let mut bold = false;
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        if let Some(tag) = rest.strip_prefix("<t:")
            && let Some(end) = tag.find('>').filter(|&e| e <= 24)
            && let Some(t) = tag[..end]
                .split(':')
                .next()
                .and_then(|n| n.parse::<i64>().ok())
                .and_then(|n| Timestamp::from_second(n).ok())
        {
            out.push_str(&time(t).full());
            i += 3 + end + 1;
        } else if rest.starts_with("**") {
            out.push_str(if bold { "</strong>" } else { "<strong>" });
            bold = !bold;
            i += 2;
        } else if let Some(link) = rest.strip_prefix('[')
            && let Some(close) = link.find("](")
            && let Some(end) = link[close + 2..].find(')')
            && link[close + 2..].starts_with("http")
        {
            let label = &link[..close];
            let href = &link[close + 2..close + 2 + end];
            out.push_str(&format!("<a href=\"{}\">{}</a>", esc(href), esc(label)));
            i += 1 + close + 2 + end + 1;
        } else if let Some(escaped) = rest.strip_prefix('\\')
            && let Some(c) = escaped.chars().next().filter(|c| c.is_ascii_punctuation())
        {
            out.push_str(&esc(&c.to_string()));
            i += 1 + c.len_utf8();
        } else {
            let c = rest.chars().next().expect("not at the end");
            out.push_str(&esc(&c.to_string()));
            i += c.len_utf8();
        }
    }
    if bold {
        out.push_str("</strong>");
    }
    out
}

/// Previews for every enabled channel: for a draft the announcement it would post, else what
/// the window's latest event looks like now.
pub fn previews(
    state: &AppState,
    m: &Maintenance,
    latest: Option<&Update>,
    channels: &[Channel],
) -> Vec<Preview> {
    let url = format!("{}/maintenance/{}", state.settings.public_url, m.id);
    let announce = Update {
        id: 0,
        maintenance_id: m.id,
        kind: UpdateKind::Announced,
        body: String::new(),
        note: None,
        step_position: None,
        created_at: state.service.now(),
        edited_at: None,
    };
    let update = latest.filter(|_| m.is_public()).unwrap_or(&announce);
    // A draft is previewed as announcing will make it (planned, or scheduled), not as a draft.
    let mut shown = m.clone();
    if !m.is_public() {
        let _ = shown.apply(
            crate::domain::WindowAction::Announce,
            None,
            state.service.now(),
        );
    }
    let m = &shown;
    channels
        .iter()
        .filter(|c| c.enabled)
        .map(|c| {
            let mut p = Preview {
                channel: c.name.clone(),
                kind_label: c.kind.label(),
                is_discord: c.kind.is_discord(),
                title: String::new(),
                description: String::new(),
                fields: vec![],
                text: String::new(),
            };
            if c.kind.is_discord() {
                let embed = serde_json::to_value(discord_embed(
                    m,
                    &url,
                    &state.settings.site_name,
                    state.service.now(),
                ))
                .unwrap_or_default();
                let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
                p.title = s(&embed["title"]);
                p.description = discord_html(&s(&embed["description"]));
                p.fields = embed["fields"]
                    .as_array()
                    .map(|f| {
                        f.iter()
                            .map(|f| (s(&f["name"]), discord_html(&s(&f["value"]))))
                            .collect()
                    })
                    .unwrap_or_default();
                if c.posts_milestone(update.kind) {
                    p.text = discord_html(&discord_message(m, update, &url, ""));
                }
            } else {
                p.text = bluesky_post(m, update, &url, update.kind == UpdateKind::Announced).text;
            }
            p
        })
        .collect()
}

#[derive(Debug, Deserialize)]
pub struct DeliveryForm {
    pub action: String,
}

pub async fn delivery_action(
    State(state): State<AppState>,
    Path((window, id)): Path<(i64, i64)>,
    CsrfForm { signed_in, form }: CsrfForm<DeliveryForm>,
) -> Result<Response, AppError> {
    let result = decide_delivery(&state, &signed_in, Subject::Window(window), id, &form).await?;
    super::after(
        &state,
        &signed_in,
        window,
        result.map(drop),
        super::RunState::default(),
        delivery_done(&form.action),
    )
    .await
}

/// The notice after an action on a delivery.
pub(crate) fn delivery_done(action: &str) -> &'static str {
    match action {
        "skip" => "skipped",
        "pause" => "paused",
        _ => "retried",
    }
}

/// An admin's Retry or Skip of a delivery about `subject`. A refusal comes back to show.
pub(crate) async fn decide_delivery(
    state: &AppState,
    signed_in: &SignedIn,
    subject: Subject,
    id: i64,
    form: &DeliveryForm,
) -> Result<Result<(), ServiceError>, AppError> {
    let delivery = state.service.delivery(id).await?;
    if delivery.subject != subject {
        return Err(ServiceError::NotFound("delivery").into());
    }
    let service = signed_in.service(state);
    Ok(match form.action.as_str() {
        "retry" => service.retry_delivery(id).await.map(drop),
        "skip" => service.skip_delivery(id).await.map(drop),
        "pause" => service.pause_delivery(id).await.map(drop),
        other => return Err(AppError::BadRequest(format!("unknown action {other:?}"))),
    })
}
