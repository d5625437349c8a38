//! Channels (where announcements go) and deliveries (one event for one channel, kept until it
//! is confirmed sent). Which events a channel receives is decided here; how a delivery reaches
//! Discord or Bluesky lives in `crate::notify`.

use std::fmt;

use jiff::Timestamp;

use super::{UpdateKind, ValidationError, limits};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    DiscordWebhook,
    DiscordBot,
    Bluesky,
    /// An HTTP endpoint of the operator's choosing, sent JSON events signed as the Standard
    /// Webhooks specification says.
    Webhook,
    /// Mail to the subscribers (HERALD_SMTP_URL): made from the environment only. Its
    /// delivery hands the event to the mail fan-out (`crate::notify::mail`).
    Email,
}

impl ChannelKind {
    pub const ALL: [Self; 5] = [
        Self::DiscordWebhook,
        Self::DiscordBot,
        Self::Bluesky,
        Self::Webhook,
        Self::Email,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::DiscordWebhook => "discord_webhook",
            Self::DiscordBot => "discord_bot",
            Self::Bluesky => "bluesky",
            Self::Webhook => "webhook",
            Self::Email => "email",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::DiscordWebhook => "Discord webhook",
            Self::DiscordBot => "Discord bot",
            Self::Bluesky => "Bluesky",
            Self::Webhook => "Signed webhook",
            Self::Email => "Email to subscribers",
        }
    }

    /// Whether an admin may add one in the Channels form (email comes from the environment).
    pub fn is_addable(self) -> bool {
        self != Self::Email
    }

    pub fn is_discord(self) -> bool {
        matches!(self, Self::DiscordWebhook | Self::DiscordBot)
    }
}

/// Events a new channel receives: every lifecycle event and step outcome, not step starts
/// (a step start is usually followed within minutes by its outcome).
pub const DEFAULT_EVENTS: [UpdateKind; 11] = [
    UpdateKind::Announced,
    UpdateKind::Reminder,
    UpdateKind::Rescheduled,
    UpdateKind::Started,
    UpdateKind::StepDone,
    UpdateKind::StepFailed,
    UpdateKind::StepSkipped,
    UpdateKind::Note,
    UpdateKind::Overrunning,
    UpdateKind::Completed,
    UpdateKind::Cancelled,
];

/// Discord events that get a short message of their own in addition to the live
/// announcement being edited: the moments a reader wants a notification for.
pub const DEFAULT_MILESTONES: [UpdateKind; 8] = [
    UpdateKind::Reminder,
    UpdateKind::Rescheduled,
    UpdateKind::Started,
    UpdateKind::StepFailed,
    UpdateKind::Note,
    UpdateKind::Overrunning,
    UpdateKind::Completed,
    UpdateKind::Cancelled,
];

/// Rollout events a new Discord channel receives: all of them, so its live rollout message
/// follows every move (the ones that are not milestones are folded into one edit per
/// interval).
pub const DEFAULT_ROLLOUT_EVENTS_DISCORD: [UpdateKind; 17] = UpdateKind::ROLLOUT;

/// Rollout events that post to a new Bluesky channel: the moments worth a post. Drain counts
/// never post by themselves.
pub const DEFAULT_ROLLOUT_EVENTS_BLUESKY: [UpdateKind; 9] = [
    UpdateKind::RolloutStarted,
    UpdateKind::TargetFailed,
    UpdateKind::TargetForced,
    UpdateKind::RolloutStalled,
    UpdateKind::RolloutCompleted,
    UpdateKind::RolloutFailed,
    UpdateKind::RolloutAborted,
    UpdateKind::RolloutRolledBack,
    UpdateKind::RolloutNote,
];

/// Rollout events that get a Discord message of their own besides the live rollout message.
pub const DEFAULT_ROLLOUT_MILESTONES: [UpdateKind; 9] = DEFAULT_ROLLOUT_EVENTS_BLUESKY;

/// Incident events that get a Discord message of their own besides the live incident message
/// (which the opening is): every later one, without a ping.
pub const DEFAULT_INCIDENT_MILESTONES: [UpdateKind; 4] = [
    UpdateKind::IncidentUpdated,
    UpdateKind::IncidentResolved,
    UpdateKind::IncidentReopened,
    UpdateKind::IncidentPostmortem,
];

/// What subscribers are mailed about: every step of a window (steps fold into one mail per
/// few minutes), every incident event, and a rollout's start, failure and end.
pub const DEFAULT_EMAIL_EVENTS: [UpdateKind; 23] = [
    UpdateKind::Announced,
    UpdateKind::Reminder,
    UpdateKind::Rescheduled,
    UpdateKind::Started,
    UpdateKind::StepDone,
    UpdateKind::StepFailed,
    UpdateKind::StepSkipped,
    UpdateKind::Note,
    UpdateKind::Overrunning,
    UpdateKind::Completed,
    UpdateKind::Cancelled,
    UpdateKind::RolloutStarted,
    UpdateKind::RolloutStalled,
    UpdateKind::RolloutCompleted,
    UpdateKind::RolloutFailed,
    UpdateKind::RolloutAborted,
    UpdateKind::RolloutRolledBack,
    UpdateKind::RolloutNote,
    UpdateKind::IncidentOpened,
    UpdateKind::IncidentUpdated,
    UpdateKind::IncidentResolved,
    UpdateKind::IncidentReopened,
    UpdateKind::IncidentPostmortem,
];

/// Everything a new channel of `kind` receives, windows and rollouts. A signed webhook gets
/// every event (its receiver is a program that filters for itself) except drain counts.
pub fn default_events(kind: ChannelKind) -> Vec<UpdateKind> {
    if kind == ChannelKind::Email {
        return DEFAULT_EMAIL_EVENTS.to_vec();
    }
    if kind == ChannelKind::Webhook {
        return event_kinds()
            .filter(|k| *k != UpdateKind::RolloutDrain)
            .collect();
    }
    let rollout: &[UpdateKind] = if kind.is_discord() {
        &DEFAULT_ROLLOUT_EVENTS_DISCORD
    } else {
        &DEFAULT_ROLLOUT_EVENTS_BLUESKY
    };
    DEFAULT_EVENTS
        .iter()
        .chain(rollout)
        .chain(&UpdateKind::INCIDENT)
        .copied()
        .collect()
}

/// The milestones of a new Discord channel, windows and rollouts.
pub fn default_milestones() -> Vec<UpdateKind> {
    DEFAULT_MILESTONES
        .iter()
        .chain(&DEFAULT_ROLLOUT_MILESTONES)
        .chain(&DEFAULT_INCIDENT_MILESTONES)
        .copied()
        .collect()
}

/// Events a channel can choose: window, rollout and incident events (never the refresh,
/// which is how folded events are delivered, not an event).
pub fn event_kinds() -> impl Iterator<Item = UpdateKind> {
    UpdateKind::WINDOW
        .into_iter()
        .chain(UpdateKind::ROLLOUT)
        .chain(UpdateKind::INCIDENT)
}

/// Events that can get a Discord message of their own: all but the announcement and the
/// incident's opening, which are the live messages themselves, and drain counts, which only
/// redraw the live rollout message.
pub fn milestone_kinds() -> impl Iterator<Item = UpdateKind> {
    event_kinds().filter(|k| {
        !matches!(
            k,
            UpdateKind::Announced | UpdateKind::RolloutDrain | UpdateKind::IncidentOpened
        )
    })
}

/// A write-only value: shown nowhere, printed as `***`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ChannelSecret(String);

impl ChannelSecret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ChannelSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelSource {
    /// From `HERALD_DISCORD_*` / `HERALD_BLUESKY_*`: rewritten at every start.
    Env,
    Admin,
}

impl ChannelSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Env => "env",
            Self::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "env" => Some(Self::Env),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    pub id: i64,
    pub name: String,
    pub kind: ChannelKind,
    /// Webhook id, Discord channel id, or Bluesky handle/DID.
    pub target: String,
    pub secret: ChannelSecret,
    /// Discord API base or PDS URL; `None` for the service's own.
    pub api_url: Option<String>,
    pub events: Vec<UpdateKind>,
    pub milestones: Vec<UpdateKind>,
    pub mention_role: Option<String>,
    pub langs: Vec<String>,
    pub enabled: bool,
    pub source: ChannelSource,
}

impl Channel {
    /// The fields of a checked edit that change where this channel sends: its address
    /// (webhook or channel id, Bluesky account) and its API base or PDS. Such a change must
    /// come with the secret again, so a stored secret never follows an address it was not
    /// given for.
    pub fn address_changes(&self, new: &NewChannel) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if new.target != self.target {
            changed.push("target");
        }
        if new.api_url != self.api_url {
            changed.push("api_url");
        }
        changed
    }

    /// Every field a checked edit changes, for the audit log (the secret only as "secret").
    pub fn changes(&self, new: &NewChannel) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if new.name != self.name {
            changed.push("name");
        }
        changed.extend(self.address_changes(new));
        if !new.secret.expose().is_empty() && new.secret != self.secret {
            changed.push("secret");
        }
        if new.events != self.events {
            changed.push("events");
        }
        if new.milestones != self.milestones {
            changed.push("milestones");
        }
        if new.mention_role != self.mention_role {
            changed.push("mention_role");
        }
        if new.langs != self.langs {
            changed.push("langs");
        }
        if new.enabled != self.enabled {
            changed.push("enabled");
        }
        changed
    }

    pub fn receives(&self, kind: UpdateKind) -> bool {
        self.enabled
            && self.events.contains(&kind)
            // Drain counts never post to Bluesky by themselves.
            && (kind != UpdateKind::RolloutDrain || self.kind.is_discord())
    }

    /// Discord: whether this event also gets a short message of its own.
    pub fn posts_milestone(&self, kind: UpdateKind) -> bool {
        milestone_kinds().any(|k| k == kind) && self.milestones.contains(&kind)
    }
}

/// A channel as typed into the admin form or read from the environment, checked by
/// [`NewChannel::validate`]. An empty secret on an edit keeps the stored one.
#[derive(Debug, Clone, Default)]
pub struct NewChannel {
    pub name: String,
    pub kind: Option<ChannelKind>,
    pub target: String,
    pub secret: ChannelSecret,
    pub api_url: Option<String>,
    pub events: Vec<UpdateKind>,
    pub milestones: Vec<UpdateKind>,
    pub mention_role: Option<String>,
    pub langs: Vec<String>,
    pub enabled: bool,
}

/// A Discord webhook URL taken apart: `{base}/api[/vN]/webhooks/{id}/{token}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    /// Scheme and host (plus any path prefix before `/api`), e.g. `https://discord.com`.
    pub base: String,
    pub id: u64,
    pub token: String,
}

impl WebhookUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or("a webhook URL starts with https://")?;
        let Some(at) = rest.find("/api/") else {
            return Err(
                "a webhook URL looks like https://discord.com/api/webhooks/ID/TOKEN".into(),
            );
        };
        let base = &url[..url.len() - rest.len() + at];
        let mut parts = rest[at + "/api/".len()..].split('/');
        let mut next = parts.next();
        if next.is_some_and(|p| p.starts_with('v') && p[1..].parse::<u8>().is_ok()) {
            next = parts.next();
        }
        if next != Some("webhooks") {
            return Err(
                "a webhook URL looks like https://discord.com/api/webhooks/ID/TOKEN".into(),
            );
        }
        let id = parts
            .next()
            .and_then(|id| id.parse::<u64>().ok())
            .ok_or("the webhook URL has no numeric webhook id")?;
        let token = parts
            .next()
            .filter(|t| {
                !t.is_empty()
                    && t.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            })
            .ok_or("the webhook URL has no token")?;
        if parts.next().is_some_and(|p| !p.is_empty()) {
            return Err("the webhook URL has extra parts after the token".into());
        }
        Ok(Self {
            base: base.to_owned(),
            id,
            token: token.to_owned(),
        })
    }
}

fn check_url(field: &'static str, url: &str) -> Result<String, ValidationError> {
    let url = url.trim().trim_end_matches('/');
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| ValidationError::new(field, "give an http:// or https:// URL"))?;
    if rest.is_empty() || rest.contains(char::is_whitespace) {
        return Err(ValidationError::new(
            field,
            "give an http:// or https:// URL",
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    if authority.contains('@') {
        return Err(ValidationError::new(
            field,
            "the URL must not carry a user name or password",
        ));
    }
    if rest.contains('#') {
        return Err(ValidationError::new(
            field,
            "the URL must not have a #fragment",
        ));
    }
    // An API base is a prefix Herald appends paths to: a query would swallow them.
    if field == "api_url" && rest.contains('?') {
        return Err(ValidationError::new(
            field,
            "an API base has no ?query: give the address up to its path",
        ));
    }
    Ok(url.to_owned())
}

/// `whsec_` and the base64 of a key of 24 to 64 bytes (Standard Webhooks).
pub fn is_webhook_secret(s: &str) -> bool {
    use base64::Engine as _;
    s.strip_prefix("whsec_")
        .and_then(|k| base64::engine::general_purpose::STANDARD.decode(k).ok())
        .is_some_and(|key| (24..=64).contains(&key.len()))
}

fn is_snowflake(s: &str) -> bool {
    !s.is_empty() && s.len() <= 20 && s.parse::<u64>().is_ok()
}

impl NewChannel {
    /// Check every field; `has_secret` says whether a secret is stored already (an edit).
    pub fn validate(mut self, has_secret: bool) -> Result<Self, ValidationError> {
        self.name =
            super::clean_line("name", &self.name, limits::NAME_MAX, true)?.unwrap_or_default();
        let kind = self
            .kind
            .ok_or_else(|| ValidationError::new("kind", "choose what kind of channel this is"))?;
        self.target = self.target.trim().to_owned();
        let secret = self.secret.expose().trim().to_owned();
        match kind {
            ChannelKind::DiscordWebhook => {
                // The webhook URL is the secret: its token lets anyone post.
                if !secret.is_empty() {
                    let hook = WebhookUrl::parse(&secret)
                        .map_err(|m| ValidationError::new("secret", m))?;
                    self.target = hook.id.to_string();
                } else if !has_secret {
                    return Err(ValidationError::new("secret", "give the webhook URL"));
                }
            }
            ChannelKind::DiscordBot => {
                if !is_snowflake(&self.target) {
                    return Err(ValidationError::new(
                        "target",
                        "give the numeric id of the Discord channel",
                    ));
                }
                if secret.is_empty() && !has_secret {
                    return Err(ValidationError::new("secret", "give the bot token"));
                }
                if secret.contains(char::is_whitespace) && !secret.starts_with("Bot ") {
                    return Err(ValidationError::new("secret", "a bot token has no spaces"));
                }
            }
            ChannelKind::Webhook => {
                self.target = check_url("target", &self.target).map_err(|e| {
                    if e.message.starts_with("give an") {
                        ValidationError::new(
                            "target",
                            "give the http:// or https:// URL to send to",
                        )
                    } else {
                        e
                    }
                })?;
                if !secret.is_empty() && !is_webhook_secret(&secret) {
                    return Err(ValidationError::new(
                        "secret",
                        "a signing secret is whsec_ followed by base64 (leave it empty and \
                         Herald makes one)",
                    ));
                }
                if secret.is_empty() && !has_secret {
                    return Err(ValidationError::new("secret", "a signing secret is needed"));
                }
            }
            ChannelKind::Email => {
                // The sender's address; the SMTP server and its password are settings.
                if !self.target.contains('@') {
                    return Err(ValidationError::new(
                        "target",
                        "give the address mail comes from (HERALD_MAIL_FROM)",
                    ));
                }
            }
            ChannelKind::Bluesky => {
                let t = self.target.trim_start_matches('@');
                let ok = if t.starts_with("did:") {
                    t.len() > 8 && !t.contains(char::is_whitespace)
                } else {
                    t.contains('.')
                        && t.len() <= 253
                        && t.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
                };
                if !ok {
                    return Err(ValidationError::new(
                        "target",
                        "give a handle like status.example.com or a DID",
                    ));
                }
                self.target = t.to_owned();
                if secret.is_empty() && !has_secret {
                    return Err(ValidationError::new("secret", "give an app password"));
                }
            }
        }
        self.secret = ChannelSecret::new(secret);
        self.api_url = match self.api_url.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(url) => Some(check_url("api_url", url)?),
        };
        self.events.retain(|k| {
            *k != UpdateKind::RolloutRefresh
                && (kind.is_discord() || *k != UpdateKind::RolloutDrain)
        });
        self.milestones
            .retain(|k| milestone_kinds().any(|m| m == *k));
        if self.events.is_empty() {
            return Err(ValidationError::new(
                "events",
                "choose at least one event to announce",
            ));
        }
        if !self.events.contains(&UpdateKind::Announced) {
            return Err(ValidationError::new(
                "events",
                "the announcement starts each window's message or thread; keep it",
            ));
        }
        self.mention_role = match self.mention_role.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(role) if kind.is_discord() && is_snowflake(role) => Some(role.to_owned()),
            Some(_) if !kind.is_discord() => None,
            Some(_) => {
                return Err(ValidationError::new(
                    "mention_role",
                    "give the numeric id of the role to mention, or leave it empty",
                ));
            }
        };
        let mut langs = Vec::new();
        for lang in &self.langs {
            let lang = lang.trim();
            if lang.is_empty() {
                continue;
            }
            let ok = lang.len() <= 35
                && lang.split('-').all(|p| {
                    !p.is_empty() && p.len() <= 8 && p.chars().all(|c| c.is_ascii_alphanumeric())
                })
                && lang.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
            if !ok {
                return Err(ValidationError::new(
                    "langs",
                    format!("{lang:?} is not a language tag like en or pt-BR"),
                ));
            }
            langs.push(lang.to_owned());
        }
        if langs.len() > 3 {
            return Err(ValidationError::new(
                "langs",
                "Bluesky allows at most 3 languages",
            ));
        }
        if langs.is_empty() {
            langs.push("en".to_owned());
        }
        self.langs = langs;
        self.kind = Some(kind);
        Ok(self)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Waiting for its turn or for the next attempt.
    Pending,
    Sent,
    /// Given up: a permanent error or the deadline passed. Blocks later deliveries of the
    /// same window to the same channel until retried or skipped, so order holds.
    Failed,
    /// A failed delivery an admin chose not to retry.
    Skipped,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Sent, Self::Failed, Self::Skipped]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// What a delivery does on its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeliveryAction {
    /// Post the update (the usual).
    #[default]
    Post,
    /// The update was edited after it went out: send the new text where it was posted.
    Edit,
    /// The update was withdrawn: take the post down where the network allows it.
    Withdraw,
}

impl DeliveryAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Post => "post",
            Self::Edit => "edit",
            Self::Withdraw => "withdraw",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Post, Self::Edit, Self::Withdraw]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// What an announcement is about, and what a thread of posts belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject {
    Window(i64),
    Rollout(i64),
    Incident(i64),
}

impl Subject {
    pub fn window(self) -> Option<i64> {
        match self {
            Self::Window(id) => Some(id),
            _ => None,
        }
    }

    pub fn rollout(self) -> Option<i64> {
        match self {
            Self::Rollout(id) => Some(id),
            _ => None,
        }
    }

    pub fn id(self) -> i64 {
        match self {
            Self::Window(id) | Self::Rollout(id) | Self::Incident(id) => id,
        }
    }
}

/// One event for one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: i64,
    pub channel_id: i64,
    pub subject: Subject,
    /// The window's or the rollout's timeline entry; `None` for a refresh of Discord's live
    /// rollout message.
    pub update_id: Option<i64>,
    pub kind: UpdateKind,
    pub state: DeliveryState,
    pub attempts: i64,
    pub next_attempt_ms: i64,
    pub deadline_at: Timestamp,
    /// Discord nonce or Bluesky record key, fixed before the first attempt.
    pub idem_key: String,
    pub remote_id: Option<String>,
    pub remote_url: Option<String>,
    pub last_error: Option<String>,
    pub created_ms: i64,
    pub sent_at: Option<Timestamp>,
    pub action: DeliveryAction,
    /// An edit or withdrawal: the delivery it corrects.
    pub corrects: Option<i64>,
}

/// A correction to insert: `action` on channel `channel_id` for the delivery `corrects` of
/// update `update_id` of window `window_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCorrection {
    pub window_id: i64,
    pub update_id: i64,
    pub kind: UpdateKind,
    pub channel_id: i64,
    pub action: DeliveryAction,
    pub corrects: i64,
    pub idem_key: String,
    pub deadline_at: Timestamp,
    pub created_ms: i64,
}

/// A delivery to insert with the change that caused it: `update` indexes the change's updates
/// (`None` for a refresh of the live rollout message, which the store folds into the
/// channel's pending one, if any, and holds until `fold_ms` after the last redraw).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    pub update: Option<usize>,
    pub kind: UpdateKind,
    pub fold_ms: i64,
    pub channel_id: i64,
    pub idem_key: String,
    pub deadline_at: Timestamp,
    pub created_ms: i64,
}

/// Where a window's posts on one channel hang together.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Thread {
    /// Discord: the live announcement message id. Bluesky: the root post's URI.
    pub root_id: String,
    pub root_cid: Option<String>,
    /// Bluesky: the newest post in the thread.
    pub parent_id: Option<String>,
    pub parent_cid: Option<String>,
}

/// Which deliveries a change creates: one per public update and enabled channel receiving it.
/// `kinds` are the change's updates' kinds in order, `None` for one not announced. Drafts
/// announce nothing.
pub fn deliveries_for(
    public: bool,
    kinds: impl IntoIterator<Item = Option<UpdateKind>>,
    channels: &[Channel],
    mut key: impl FnMut(ChannelKind) -> String,
    deadline_at: Timestamp,
    created_ms: i64,
) -> Vec<NewDelivery> {
    if !public {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, kind) in kinds.into_iter().enumerate() {
        let Some(kind) = kind else { continue };
        for c in channels.iter().filter(|c| c.receives(kind)) {
            out.push(NewDelivery {
                update: Some(i),
                kind,
                fold_ms: 0,
                channel_id: c.id,
                idem_key: key(c.kind),
                deadline_at,
                created_ms,
            });
        }
    }
    out
}

/// Which deliveries a rollout change creates. Bluesky: one post per update the channel
/// receives. Discord: a delivery of its own for each milestone (a short message, and the live
/// message redrawn); every other event received, and drain counts, fold into one refresh of
/// the live message, at most one per `fold` (so a large rollout stays within Discord's rate
/// limits).
pub fn rollout_deliveries_for(
    change: &super::RolloutChange,
    channels: &[Channel],
    mut key: impl FnMut(ChannelKind) -> String,
    fold: std::time::Duration,
    deadline_at: Timestamp,
    created_ms: i64,
) -> Vec<NewDelivery> {
    let mut out = Vec::new();
    for c in channels.iter().filter(|c| c.enabled) {
        let announces_rollouts = UpdateKind::ROLLOUT.iter().any(|k| c.receives(*k));
        let mut refresh = (change.drain && c.receives(UpdateKind::RolloutDrain))
            || (change.redraw && announces_rollouts);
        for (i, u) in change.updates.iter().enumerate() {
            if !c.receives(u.kind) {
                continue;
            }
            if c.kind.is_discord() && !c.posts_milestone(u.kind) {
                refresh = true;
                continue;
            }
            out.push(NewDelivery {
                update: Some(i),
                kind: u.kind,
                fold_ms: 0,
                channel_id: c.id,
                idem_key: key(c.kind),
                deadline_at,
                created_ms,
            });
        }
        if refresh && c.kind.is_discord() {
            out.push(NewDelivery {
                update: None,
                kind: UpdateKind::RolloutRefresh,
                fold_ms: fold.as_millis() as i64,
                channel_id: c.id,
                idem_key: key(c.kind),
                deadline_at,
                created_ms,
            });
        }
    }
    out
}

/// Parse a comma-separated list of update kinds (as stored), ignoring unknown names.
pub fn parse_kinds(s: &str) -> Vec<UpdateKind> {
    s.split(',')
        .filter_map(|k| UpdateKind::parse(k.trim()))
        .collect()
}

pub fn join_kinds(kinds: &[UpdateKind]) -> String {
    kinds
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls() {
        let h = WebhookUrl::parse("https://discord.com/api/webhooks/123/abc-DEF_1").unwrap();
        assert_eq!(h.base, "https://discord.com");
        assert_eq!(h.id, 123);
        assert_eq!(h.token, "abc-DEF_1");
        let h = WebhookUrl::parse("http://127.0.0.1:9/api/v10/webhooks/5/t").unwrap();
        assert_eq!(h.base, "http://127.0.0.1:9");
        assert!(WebhookUrl::parse("https://discord.com/api/webhooks/x/abc").is_err());
        assert!(WebhookUrl::parse("https://discord.com/api/webhooks/1").is_err());
        assert!(WebhookUrl::parse("ftp://discord.com/api/webhooks/1/a").is_err());
        assert!(WebhookUrl::parse("https://discord.com/api/webhooks/1/a/b").is_err());
    }

    fn channel(kind: ChannelKind, target: &str, secret: &str) -> NewChannel {
        NewChannel {
            name: "ops".into(),
            kind: Some(kind),
            target: target.into(),
            secret: ChannelSecret::new(secret),
            events: DEFAULT_EVENTS.to_vec(),
            enabled: true,
            ..Default::default()
        }
    }

    #[test]
    fn channel_validation() {
        let c = channel(
            ChannelKind::DiscordWebhook,
            "",
            "https://discord.com/api/webhooks/42/tok",
        )
        .validate(false)
        .unwrap();
        assert_eq!(c.target, "42");
        assert_eq!(c.langs, ["en"]);
        let e = channel(ChannelKind::DiscordBot, "general", "t")
            .validate(false)
            .unwrap_err();
        assert_eq!(e.field, "target");
        let e = channel(ChannelKind::DiscordBot, "1", "")
            .validate(false)
            .unwrap_err();
        assert_eq!(e.field, "secret");
        channel(ChannelKind::DiscordBot, "1", "")
            .validate(true)
            .unwrap();
        let c = channel(ChannelKind::Bluesky, "@status.example.com", "pw")
            .validate(false)
            .unwrap();
        assert_eq!(c.target, "status.example.com");
        let mut c = channel(ChannelKind::Bluesky, "status.example.com", "pw");
        c.langs = vec!["en".into(), "de".into(), "fr".into(), "it".into()];
        assert_eq!(c.validate(false).unwrap_err().field, "langs");
        let mut c = channel(ChannelKind::Bluesky, "status.example.com", "pw");
        c.events = vec![UpdateKind::Started];
        assert_eq!(c.validate(false).unwrap_err().field, "events");
        let mut c = channel(ChannelKind::DiscordBot, "1", "t");
        c.mention_role = Some("@here".into());
        assert_eq!(c.validate(false).unwrap_err().field, "mention_role");
    }
}
