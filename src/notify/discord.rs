//! Discord: a webhook, or a bot posting to a channel.
//!
//! Serenity builds the requests (routes, builders, models); Herald sends them with its own
//! reqwest client so it sees every status and header. Serenity's ratelimiter ignores a proxy
//! base and would sleep inside a worker for up to an hour; with it off, serenity's errors
//! drop `retry_after`, which Herald needs to honour 429s.
//!
//! Per window the announcement is one message (an embed) that is edited in place as the work
//! proceeds; milestones are posted as short messages of their own. No message can mention
//! anyone (`allowed_mentions.parse` is empty) except a role the channel names for the start.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderMap};
use serde::Deserialize;
use serenity::builder::{
    CreateAllowedMentions, CreateEmbed, CreateMessage, EditMessage, ExecuteWebhook,
};
use serenity::http::{LightMethod, Request, Route};
use serenity::model::channel::Nonce;
use serenity::model::id::{ChannelId, MessageId, RoleId, WebhookId};
use tokio::sync::OnceCell;

use super::render::{
    discord_embed, discord_incident_embed, discord_incident_message, discord_message,
    discord_rollout_embed, discord_rollout_message,
};
use super::{About, Job, NotifySettings, Progress, SendError, Sent};
use crate::domain::{Channel, ChannelKind, Thread, UpdateKind, WebhookUrl};

const DISCORD: &str = "https://discord.com";
/// Discord's error code for a crosspost of a message already published.
const ALREADY_CROSSPOSTED: i64 = 40033;
/// Discord's error code for a message that no longer exists.
const UNKNOWN_MESSAGE: i64 = 10008;
/// Channel type of an announcement channel.
const ANNOUNCEMENT_CHANNEL: u64 = 5;

enum Mode {
    Bot { token: String, channel: ChannelId },
    Webhook { id: WebhookId, token: String },
}

/// What Herald learns about the destination once: the guild (for message links) and whether
/// it is an announcement channel (to publish).
#[derive(Debug, Clone, Default)]
struct Place {
    guild_id: Option<String>,
    channel_id: Option<String>,
    announcement: bool,
}

pub struct Discord {
    http: reqwest::Client,
    /// Scheme and host that stand in for `https://discord.com`.
    base: String,
    mode: Mode,
    mention_role: Option<RoleId>,
    /// The channel as configured: which events get a message of their own.
    channel: Channel,
    site_name: String,
    place: OnceCell<Place>,
    /// Discord said the bucket is empty (`X-RateLimit-Remaining: 0`): no request before this.
    pause_until: std::sync::Mutex<Option<std::time::Instant>>,
}

/// Waits up to this long for a rate-limit bucket to refill inside an attempt; longer pauses
/// end the attempt and let the outbox schedule the retry.
const MAX_INLINE_PAUSE: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize)]
struct MessageRef {
    id: String,
    channel_id: String,
    #[serde(default)]
    guild_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    retry_after: Option<f64>,
}

/// An API base as given (`https://discord.com`, or with `/api` or `/api/v10`) reduced to
/// what replaces `https://discord.com` in serenity's routes.
pub fn api_base(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    let url = match url.rfind("/api") {
        Some(i)
            if url[i + 4..].is_empty()
                || url[i + 4..]
                    .strip_prefix("/v")
                    .is_some_and(|v| v.parse::<u8>().is_ok()) =>
        {
            &url[..i]
        }
        _ => url,
    };
    url.to_owned()
}

/// The answer to a request that did not succeed, as Herald's retry logic sees it.
fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8], what: &str) -> SendError {
    // Discord's own error (its message and code), shortened; anything else that answered is
    // not repeated, only its status.
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|b| b.message.as_deref())
        .map(super::short_reason);
    let code = parsed.as_ref().and_then(|b| b.code);
    let reason = match (message, code) {
        (Some(message), Some(code)) => {
            format!("{what}: Discord answered {status}: {message} (code {code})")
        }
        (Some(message), None) => format!("{what}: Discord answered {status}: {message}"),
        (None, _) => format!("{what}: Discord answered {status}"),
    };
    if status == StatusCode::TOO_MANY_REQUESTS {
        let after = parsed
            .and_then(|b| b.retry_after)
            .and_then(super::server_wait)
            .or_else(|| super::retry_after(headers));
        return SendError::Transient { reason, after };
    }
    if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
        return SendError::transient(reason);
    }
    SendError::Permanent(reason)
}

impl Discord {
    pub fn new(channel: &Channel, settings: &NotifySettings) -> Result<Self, SendError> {
        let default_base = channel
            .api_url
            .as_deref()
            .or(settings.discord_api_url.as_deref())
            .map(api_base);
        let (mode, base) = match channel.kind {
            ChannelKind::DiscordBot => {
                let id = channel
                    .target
                    .parse::<u64>()
                    .map_err(|_| SendError::Permanent("the channel id is not a number".into()))?;
                let token = channel.secret.expose().trim();
                let token = if token.starts_with("Bot ") {
                    token.to_owned()
                } else {
                    format!("Bot {token}")
                };
                (
                    Mode::Bot {
                        token,
                        channel: ChannelId::new(id.max(1)),
                    },
                    default_base.unwrap_or_else(|| DISCORD.to_owned()),
                )
            }
            ChannelKind::DiscordWebhook => {
                let hook =
                    WebhookUrl::parse(channel.secret.expose()).map_err(SendError::Permanent)?;
                (
                    Mode::Webhook {
                        id: WebhookId::new(hook.id.max(1)),
                        token: hook.token,
                    },
                    default_base.unwrap_or(hook.base),
                )
            }
            ChannelKind::Bluesky | ChannelKind::Webhook | ChannelKind::Email => {
                return Err(SendError::Permanent("not a Discord channel".into()));
            }
        };
        settings.check_target(&base)?;
        let http = settings.http_client()?;
        Ok(Self {
            http,
            base,
            mode,
            mention_role: channel
                .mention_role
                .as_deref()
                .and_then(|r| r.parse::<u64>().ok())
                .filter(|r| *r > 0)
                .map(RoleId::new),
            channel: channel.clone(),
            site_name: settings.site_name.clone(),
            place: OnceCell::new(),
            pause_until: std::sync::Mutex::new(None),
        })
    }

    /// Send one request; `Ok(None)` for a success without a body.
    async fn call(
        &self,
        request: Request<'_>,
        what: &str,
    ) -> Result<Option<serde_json::Value>, SendError> {
        let token = match &self.mode {
            Mode::Bot { token, .. } => token.as_str(),
            Mode::Webhook { .. } => "",
        };
        let builder = request
            .build(&self.http, token, Some(&self.base))
            .map_err(|e| SendError::Permanent(format!("{what}: {e}")))?;
        let mut request = builder
            .build()
            .map_err(|e| SendError::Permanent(format!("{what}: {}", e.without_url())))?;
        if token.is_empty() {
            // A webhook's token is in its URL; an empty Authorization header is noise.
            request.headers_mut().remove(AUTHORIZATION);
        }
        self.respect_rate_limit(what).await?;
        // A webhook's URL holds its token: never in an error that is stored or shown.
        let response =
            self.http.execute(request).await.map_err(|e| {
                SendError::transient(format!("{what}: {}", super::transport_error(&e)))
            })?;
        let status = response.status();
        let headers = response.headers().clone();
        self.note_rate_limit(&headers);
        let body = super::read_capped(response)
            .await
            .map_err(|e| SendError::transient(format!("{what}: reading the answer: {e}")))?;
        if !status.is_success() {
            return Err(classify(status, &headers, &body, what));
        }
        // Any 2xx is done: asking again would post again. An answer without a readable body
        // (a relay or proxy answering 204) only means Herald does not learn what was made.
        match serde_json::from_slice(&body) {
            Ok(value) => Ok(Some(value)),
            Err(e) => {
                if !body.is_empty() {
                    tracing::warn!(what, error = %e, "Discord's success answer is unreadable");
                }
                Ok(None)
            }
        }
    }

    /// Before a request: wait while Discord's bucket is empty, or give the attempt back with
    /// the time to wait if that is long.
    async fn respect_rate_limit(&self, what: &str) -> Result<(), SendError> {
        let until = *self.pause_until.lock().expect("not poisoned");
        let Some(wait) = until.and_then(|u| u.checked_duration_since(std::time::Instant::now()))
        else {
            return Ok(());
        };
        if wait > MAX_INLINE_PAUSE {
            return Err(SendError::Transient {
                reason: format!("{what}: waiting for Discord's rate limit to reset"),
                after: Some(wait),
            });
        }
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// After a response: remember when an emptied bucket refills.
    fn note_rate_limit(&self, headers: &HeaderMap) {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        if header("x-ratelimit-remaining") == Some(0.0)
            && let Some(after) = header("x-ratelimit-reset-after")
                .filter(|s| s.is_finite() && *s >= 0.0 && *s < 3600.0)
        {
            *self.pause_until.lock().expect("not poisoned") =
                Some(std::time::Instant::now() + Duration::from_secs_f64(after));
        }
    }

    /// The message an answer describes; `None` when it describes none (a 2xx without a body).
    fn message_from(value: Option<serde_json::Value>) -> Option<MessageRef> {
        value.and_then(|v| serde_json::from_value(v).ok())
    }

    fn json<T: serde::Serialize>(body: &T) -> Option<Vec<u8>> {
        Some(serde_json::to_vec(body).expect("builders serialise"))
    }

    async fn place(&self) -> Result<&Place, SendError> {
        self.place
            .get_or_try_init(|| async {
                let (route, what) = match &self.mode {
                    Mode::Bot { channel, .. } => (
                        Route::Channel {
                            channel_id: *channel,
                        },
                        "looking up the channel",
                    ),
                    Mode::Webhook { id, token } => (
                        Route::WebhookWithToken {
                            webhook_id: *id,
                            token,
                        },
                        "looking up the webhook",
                    ),
                };
                let value = self
                    .call(Request::new(route, LightMethod::Get), what)
                    .await?
                    .unwrap_or_default();
                let text = |key: &str| value.get(key).and_then(|v| v.as_str()).map(str::to_owned);
                Ok(Place {
                    guild_id: text("guild_id"),
                    channel_id: text("channel_id").or_else(|| text("id")),
                    announcement: matches!(self.mode, Mode::Bot { .. })
                        && value.get("type").and_then(|t| t.as_u64()) == Some(ANNOUNCEMENT_CHANNEL),
                })
            })
            .await
    }

    fn link(&self, place: &Place, message: &MessageRef) -> Option<String> {
        let guild = message.guild_id.as_ref().or(place.guild_id.as_ref())?;
        Some(format!(
            "https://discord.com/channels/{guild}/{}/{}",
            message.channel_id, message.id
        ))
    }

    /// Post a message: content and/or the embed. Bot messages carry `nonce`, so a repeat
    /// within Discord's window returns the first message instead of a second one. `None`: the
    /// post was accepted without the answer saying which message it made.
    async fn post(
        &self,
        content: Option<String>,
        embed: Option<CreateEmbed>,
        nonce: &str,
        mention: Option<RoleId>,
    ) -> Result<Option<MessageRef>, SendError> {
        let mut allowed = CreateAllowedMentions::new();
        if let Some(role) = mention {
            allowed = allowed.roles([role]);
        }
        let request = match &self.mode {
            Mode::Bot { channel, .. } => {
                let mut m = CreateMessage::new()
                    .allowed_mentions(allowed)
                    .nonce(Nonce::String(nonce.to_owned()))
                    .enforce_nonce(true);
                if let Some(content) = content {
                    m = m.content(content);
                }
                if let Some(embed) = embed {
                    m = m.embed(embed);
                }
                Request::new(
                    Route::ChannelMessages {
                        channel_id: *channel,
                    },
                    LightMethod::Post,
                )
                .body(Self::json(&m))
            }
            Mode::Webhook { id, token } => {
                let mut m = ExecuteWebhook::new().allowed_mentions(allowed);
                if let Some(content) = content {
                    m = m.content(content);
                }
                if let Some(embed) = embed {
                    m = m.embed(embed);
                }
                Request::new(
                    Route::WebhookWithToken {
                        webhook_id: *id,
                        token,
                    },
                    LightMethod::Post,
                )
                .body(Self::json(&m))
                .params(Some(vec![("wait", "true".to_owned())]))
            }
        };
        Ok(Self::message_from(self.call(request, "posting").await?))
    }

    /// A request on one message (`PATCH` with `edit`, or `DELETE`), by the bot or through the
    /// webhook; `None` when the id is not a message id.
    fn on_message(
        &self,
        message_id: &str,
        method: LightMethod,
        edit: Option<(Option<CreateEmbed>, Option<String>)>,
    ) -> Option<Request<'_>> {
        let mid = MessageId::new(message_id.parse::<u64>().ok()?.max(1));
        let request = match &self.mode {
            Mode::Bot { channel, .. } => Request::new(
                Route::ChannelMessage {
                    channel_id: *channel,
                    message_id: mid,
                },
                method,
            ),
            Mode::Webhook { id, token } => Request::new(
                Route::WebhookMessage {
                    webhook_id: *id,
                    token,
                    message_id: mid,
                },
                method,
            ),
        };
        let Some((embed, content)) = edit else {
            return Some(request);
        };
        // The same fields either way; a bot's and a webhook's edit builders differ in type.
        let mut m = EditMessage::new().allowed_mentions(CreateAllowedMentions::new());
        if let Some(embed) = embed {
            m = m.embed(embed);
        }
        if let Some(content) = content {
            m = m.content(content);
        }
        Some(request.body(Self::json(&m)))
    }

    /// Replace the announcement's embed. A message deleted in Discord is not an error: there
    /// is nothing left to keep current.
    async fn edit(&self, message_id: &str, embed: CreateEmbed) -> Result<(), SendError> {
        let Some(request) =
            self.on_message(message_id, LightMethod::Patch, Some((Some(embed), None)))
        else {
            return Ok(());
        };
        self.gone_is_fine(
            self.call(request, "editing the announcement").await,
            message_id,
        )
    }

    /// Replace a message's text (a corrected update's own message).
    async fn edit_content(&self, message_id: &str, content: String) -> Result<(), SendError> {
        let Some(request) =
            self.on_message(message_id, LightMethod::Patch, Some((None, Some(content))))
        else {
            return Ok(());
        };
        self.gone_is_fine(self.call(request, "editing the message").await, message_id)
    }

    /// Delete a message (a withdrawn update's own message).
    async fn delete(&self, message_id: &str) -> Result<(), SendError> {
        let Some(request) = self.on_message(message_id, LightMethod::Delete, None) else {
            return Ok(());
        };
        self.gone_is_fine(self.call(request, "deleting the message").await, message_id)
    }

    /// A message deleted in Discord already is not an error for an edit or a deletion.
    fn gone_is_fine(
        &self,
        result: Result<Option<serde_json::Value>, SendError>,
        message_id: &str,
    ) -> Result<(), SendError> {
        match result {
            Ok(_) => Ok(()),
            Err(SendError::Permanent(reason))
                if reason.contains(&format!("(code {UNKNOWN_MESSAGE})")) =>
            {
                tracing::warn!(message_id, "the message was deleted in Discord already");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Publish a message to the channels following this announcement channel.
    async fn crosspost(&self, place: &Place, message: &MessageRef) -> Result<(), SendError> {
        let Mode::Bot { channel, .. } = &self.mode else {
            return Ok(());
        };
        if !place.announcement {
            return Ok(());
        }
        let Ok(mid) = message.id.parse::<u64>() else {
            return Ok(());
        };
        let request = Request::new(
            Route::ChannelMessageCrosspost {
                channel_id: *channel,
                message_id: MessageId::new(mid.max(1)),
            },
            LightMethod::Post,
        );
        match self.call(request, "publishing").await {
            Ok(_) => Ok(()),
            Err(SendError::Permanent(reason))
                if reason.contains(&format!("(code {ALREADY_CROSSPOSTED})")) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Publish, but never let publishing hold up the window's live message: announcement
    /// channels allow about ten publishes an hour, so a long rate limit or a missing
    /// permission is logged and the delivery counts as done; a short hiccup is retried with
    /// the delivery (the posted id is recorded, so the retry only publishes).
    async fn publish(&self, place: &Place, message: &MessageRef) -> Result<(), SendError> {
        match self.crosspost(place, message).await {
            Err(e @ SendError::Transient { after, .. })
                if after.is_none_or(|a| a <= Duration::from_secs(60)) =>
            {
                Err(e)
            }
            Err(e) => {
                tracing::warn!(reason = e.reason(), "not publishing the message");
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    /// Delivered, but the answer did not say which message it made: nothing to link to or to
    /// edit later. Without a thread of its own, the window's next delivery posts a new live
    /// message rather than editing this one.
    fn sent_unknown(thread: Option<Thread>) -> Sent {
        Sent {
            remote_id: None,
            remote_url: None,
            thread,
        }
    }

    fn sent(&self, place: &Place, message: &MessageRef, thread: Thread) -> Sent {
        Sent {
            remote_id: Some(message.id.clone()),
            remote_url: self.link(place, message),
            thread: Some(thread),
        }
    }
}

#[async_trait::async_trait]
impl super::Sender for Discord {
    async fn send(&self, job: &Job<'_>, progress: &dyn Progress) -> Result<Sent, SendError> {
        let place = self.place().await?.clone();
        let d = job.delivery;
        let milestone = self.channel.posts_milestone(d.kind);
        let (embed, content, mention) = match job.about {
            About::Window { window, update } => {
                let mention = self
                    .mention_role
                    .filter(|_| d.kind == UpdateKind::Started && milestone);
                let content = milestone.then(|| {
                    let prefix = mention
                        .map(|role| format!("<@&{role}> "))
                        .unwrap_or_default();
                    discord_message(window, update, &job.page_url, &prefix)
                });
                // As of the last change to what is shown (loaded at delivery), not of the
                // delivery itself, which may come later.
                let as_of = window.updated_at.max(update.created_at);
                let embed = discord_embed(window, &job.page_url, &self.site_name, as_of);
                (embed, content, mention)
            }
            // Rollouts mention nobody: a deploy is not a call to arms.
            About::Rollout { rollout, update } => {
                let content = update
                    .filter(|_| milestone)
                    .map(|u| discord_rollout_message(rollout, u, &job.page_url));
                let as_of =
                    update.map_or(rollout.updated_at, |u| rollout.updated_at.max(u.created_at));
                let embed = discord_rollout_embed(rollout, &job.page_url, &self.site_name, as_of);
                (embed, content, None)
            }
            // Incidents mention nobody either: the live message and its updates say it all.
            About::Incident {
                incident,
                update,
                components,
            } => {
                let content = milestone
                    .then(|| discord_incident_message(incident, update, components, &job.page_url));
                let embed = discord_incident_embed(
                    incident,
                    update,
                    components,
                    &job.page_url,
                    &self.site_name,
                );
                (embed, content, None)
            }
        };

        // A message posted by an earlier attempt of this delivery is never posted again.
        let posted = match (&d.remote_id, &place.channel_id) {
            (Some(id), channel) => Some(MessageRef {
                id: id.clone(),
                channel_id: channel.clone().unwrap_or_default(),
                guild_id: None,
            }),
            (None, _) => None,
        };

        match job.thread {
            // The first message for this window or rollout: the live message itself, carrying
            // the milestone's words if there are any (a rollout's start; a window's milestone
            // when its announcement failed or the channel was added since).
            None => {
                let message = match posted {
                    Some(m) => m,
                    None => {
                        let Some(m) = self
                            .post(content, Some(embed), &d.idem_key, mention)
                            .await?
                        else {
                            return Ok(Self::sent_unknown(None));
                        };
                        let link = self.link(&place, &m);
                        progress.posted(&m.id, link.as_deref()).await;
                        progress
                            .started_thread(&Thread {
                                root_id: m.id.clone(),
                                ..Thread::default()
                            })
                            .await;
                        m
                    }
                };
                self.publish(&place, &message).await?;
                let thread = Thread {
                    root_id: message.id.clone(),
                    ..Thread::default()
                };
                Ok(self.sent(&place, &message, thread))
            }
            // This delivery posted the live message in an earlier attempt (recorded at
            // once): it only has publishing left, which that attempt did not finish.
            Some(thread) if posted.as_ref().is_some_and(|m| m.id == thread.root_id) => {
                let message = posted.expect("checked just above");
                self.publish(&place, &message).await?;
                Ok(self.sent(&place, &message, thread.clone()))
            }
            Some(thread) => {
                self.edit(&thread.root_id, embed).await?;
                let Some(content) = content else {
                    let root = MessageRef {
                        id: thread.root_id.clone(),
                        channel_id: place.channel_id.clone().unwrap_or_default(),
                        guild_id: None,
                    };
                    return Ok(self.sent(&place, &root, thread.clone()));
                };
                let message = match posted {
                    Some(m) => m,
                    None => {
                        let Some(m) = self.post(Some(content), None, &d.idem_key, mention).await?
                        else {
                            return Ok(Self::sent_unknown(Some(thread.clone())));
                        };
                        let link = self.link(&place, &m);
                        progress.posted(&m.id, link.as_deref()).await;
                        m
                    }
                };
                self.publish(&place, &message).await?;
                Ok(self.sent(&place, &message, thread.clone()))
            }
        }
    }

    async fn correct(
        &self,
        job: &Job<'_>,
        original: &crate::domain::Delivery,
        _: &dyn Progress,
    ) -> Result<Sent, SendError> {
        let (window, update) = job.corrected()?;
        let Some(message_id) = original.remote_id.as_deref() else {
            return Err(SendError::Permanent(
                "Discord did not say which message it made, so it cannot be corrected".into(),
            ));
        };
        let withdraw = job.delivery.action == crate::domain::DeliveryAction::Withdraw;
        if job.thread.is_some_and(|t| t.root_id == message_id) {
            // It went out as (or in) the live message, which shows the window as it is now:
            // drawing it again is the correction, and its words, if it carried them, are
            // replaced (or removed, for a withdrawal).
            let as_of = window
                .updated_at
                .max(update.edited_at.unwrap_or(update.created_at));
            let embed = discord_embed(window, &job.page_url, &self.site_name, as_of);
            self.edit(message_id, embed).await?;
            if self.channel.posts_milestone(update.kind) {
                let content = if withdraw {
                    String::new()
                } else {
                    discord_message(window, update, &job.page_url, "")
                };
                self.edit_content(message_id, content).await?;
            }
        } else if withdraw {
            self.delete(message_id).await?;
        } else {
            let content = discord_message(window, update, &job.page_url, "");
            self.edit_content(message_id, content).await?;
        }
        Ok(Sent {
            remote_id: Some(message_id.to_owned()),
            remote_url: original.remote_url.clone().filter(|_| !withdraw),
            thread: job.thread.cloned(),
        })
    }

    async fn test(&self, text: &str) -> Result<String, SendError> {
        let place = self.place().await?.clone();
        let nonce = format!("t{}", crate::ids::random_hex(20));
        match self.post(Some(text.to_owned()), None, &nonce, None).await? {
            Some(m) => Ok(self.link(&place, &m).unwrap_or(m.id)),
            None => Ok("delivered (the answer did not say which message it made)".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_bases() {
        assert_eq!(api_base("https://discord.com"), "https://discord.com");
        assert_eq!(
            api_base("https://discord.com/api/v10/"),
            "https://discord.com"
        );
        assert_eq!(api_base("http://127.0.0.1:5/api"), "http://127.0.0.1:5");
        assert_eq!(
            api_base("http://127.0.0.1:5/proxy"),
            "http://127.0.0.1:5/proxy"
        );
    }

    #[test]
    fn rate_limits_are_honoured() {
        let mut headers = HeaderMap::new();
        headers.insert(reqwest::header::RETRY_AFTER, "3".parse().unwrap());
        let body = br#"{"message":"You are being rate limited.","retry_after":1.5,"global":false}"#;
        let e = classify(StatusCode::TOO_MANY_REQUESTS, &headers, body, "posting");
        assert!(
            matches!(e, SendError::Transient { after: Some(d), .. } if d == Duration::from_millis(1500))
        );
        let e = classify(StatusCode::TOO_MANY_REQUESTS, &headers, b"", "posting");
        assert!(
            matches!(e, SendError::Transient { after: Some(d), .. } if d == Duration::from_secs(3))
        );
        let e = classify(
            StatusCode::UNAUTHORIZED,
            &headers,
            br#"{"message":"401: Unauthorized","code":0}"#,
            "posting",
        );
        assert_eq!(
            e,
            SendError::Permanent(
                "posting: Discord answered 401 Unauthorized: 401: Unauthorized (code 0)".into()
            )
        );
        let e = classify(StatusCode::BAD_GATEWAY, &headers, b"<html>", "posting");
        assert!(matches!(e, SendError::Transient { after: None, .. }));
        // A hostile relay's wish is clamped, never a panic (Duration::from_secs_f64(1e20)).
        let e = classify(
            StatusCode::TOO_MANY_REQUESTS,
            &HeaderMap::new(),
            br#"{"message":"slow down","retry_after":1e20}"#,
            "posting",
        );
        assert!(
            matches!(e, SendError::Transient { after: Some(d), .. } if d == crate::notify::SERVER_WAIT_MAX)
        );
    }
}
