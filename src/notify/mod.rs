//! Announcements: the outbox workers that carry each delivery to its channel.
//!
//! A change commits its deliveries in the same transaction as the change itself
//! ([`crate::service::Service`]). Here one worker per channel claims that channel's due
//! deliveries (a short lease, no transaction held across HTTP), sends each outside any
//! transaction, then records the outcome: sent (with the remote id and the thread it
//! continues), a retry at a later time (transient errors, with exponential backoff and jitter,
//! or the server's `retry_after`), or failed (permanent errors, or the deadline passed).
//! Order holds per window and channel: a delivery waits while an earlier one of the same
//! window on the same channel is pending or failed. Channels never wait for each other.
//!
//! Exactly once in effect: Discord bot posts carry a nonce fixed at commit time; every posted
//! message id is recorded before anything else happens to the delivery; Bluesky posts use a
//! record key fixed at commit time and, after an attempt with an unknown outcome, Herald
//! looks the record up before writing it again.

pub mod bluesky;
pub mod discord;
pub mod mail;
pub mod render;
pub mod webhook;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::FutureExt;
use jiff::Timestamp;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::domain::{
    Channel, ChannelKind, Component, Delivery, DeliveryAction, Incident, IncidentUpdate,
    Maintenance, Rollout, RolloutUpdate, Subject, Thread, Update,
};
use crate::store::Store;

/// How long a claimed delivery stays its worker's, in request timeouts: longer than any
/// attempt can take (a Bluesky attempt with a session renewal makes up to a dozen requests,
/// a Discord one may also wait out a rate limit).
const LEASE_TIMEOUTS: u32 = 30;
/// Workers look at the outbox at least this often, in case a wake-up was missed.
const POLL: Duration = Duration::from_secs(15);
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(600);

/// What every sender needs besides its channel.
#[derive(Debug, Clone)]
pub struct NotifySettings {
    pub public_url: String,
    pub site_name: String,
    /// Discord API base for channels that name none (HERALD_DISCORD_API_URL).
    pub discord_api_url: Option<String>,
    pub deadline: Duration,
    /// Every request to Discord or Bluesky gives up after this long (an unknown outcome).
    pub request_timeout: Duration,
    /// Owns the deliveries this instance's workers claim (HERALD_INSTANCE_ID).
    pub instance_id: String,
    /// Let channels reach loopback, private and link-local addresses, and plain http
    /// (HERALD_ALLOW_PRIVATE_TARGETS): for a receiver on the operator's own network, and tests.
    pub allow_private_targets: bool,
    /// Mails give times in UTC and in this zone.
    pub timezone: jiff::tz::TimeZone,
    /// Mail to subscribers, when HERALD_SMTP_URL is set.
    pub mail: Option<crate::config::MailSettings>,
    /// Wakes the mail workers when the email channel queues a mail.
    pub mail_wake: Arc<tokio::sync::Notify>,
}

impl NotifySettings {
    /// What the outbox workers need from the settings.
    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        Self {
            public_url: settings.public_url.clone(),
            site_name: settings.site_name.clone(),
            discord_api_url: settings.announce.discord_api_url.clone(),
            deadline: settings.announce.delivery_deadline,
            request_timeout: settings.announce.delivery_timeout,
            instance_id: settings.instance_id.clone(),
            allow_private_targets: settings.announce.allow_private_targets,
            timezone: settings.mail.timezone.clone(),
            mail: settings
                .mail
                .smtp_url
                .is_some()
                .then(|| settings.mail.clone()),
            mail_wake: Arc::default(),
        }
    }

    /// The HTTP client every sender uses: each request bounded by `request_timeout`; names
    /// resolved by [`PublicOnly`] unless private targets are allowed, so the address checked is
    /// the one connected to (a name that turns private between a check and the connection,
    /// DNS rebinding, is refused all the same).
    pub fn http_client(&self) -> Result<reqwest::Client, SendError> {
        let mut builder = reqwest::Client::builder()
            // A redirect would carry the token or session to wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.request_timeout)
            .connect_timeout(self.request_timeout.min(Duration::from_secs(5)));
        if !self.allow_private_targets {
            builder = builder.dns_resolver(Arc::new(PublicOnly)).https_only(true);
        }
        builder
            .build()
            .map_err(|e| SendError::Permanent(format!("HTTP client: {e}")))
    }

    /// Whether a sender may talk to `url` (its API base, webhook address or PDS): https, no
    /// user name or password in it, and, as an address written out, not a private one; unless
    /// private targets are allowed. Names are checked when they are resolved ([`PublicOnly`]).
    pub fn check_target(&self, url: &str) -> Result<(), SendError> {
        let refuse = |why: String| Err(SendError::Permanent(why));
        let Ok(parsed) = reqwest::Url::parse(url) else {
            return refuse("the address is not a URL".into());
        };
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return refuse("the address carries a user name or password".into());
        }
        if self.allow_private_targets {
            return Ok(());
        }
        if parsed.scheme() != "https" {
            return refuse(format!(
                "{}:// is refused: Herald sends only over https (HERALD_ALLOW_PRIVATE_TARGETS \
                 allows http)",
                parsed.scheme()
            ));
        }
        let ip = parsed.host_str().and_then(|h| {
            h.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .ok()
        });
        match ip {
            Some(ip) if is_private(ip) => refuse(format!(
                "{ip} is a loopback, private or link-local address (HERALD_ALLOW_PRIVATE_TARGETS \
                 allows it)"
            )),
            _ => Ok(()),
        }
    }

    pub fn page_url(&self, window_id: i64) -> String {
        format!("{}/maintenance/{window_id}", self.public_url)
    }

    pub fn rollout_url(&self, rollout_id: i64) -> String {
        format!("{}/rollouts/{rollout_id}", self.public_url)
    }

    pub fn incident_url(&self, incident_id: i64) -> String {
        format!("{}/incidents/{incident_id}", self.public_url)
    }
}

/// Not on the public internet: loopback, private (RFC 1918), shared (RFC 6598), link-local
/// (169.254/16, where cloud metadata answers; fe80::/10), unique-local (fc00::/7),
/// unspecified, broadcast and multicast addresses, also written as IPv4-mapped IPv6.
pub fn is_private(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_private(IpAddr::V4(v4)),
            None => {
                let first = v6.segments()[0];
                v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (first & 0xfe00) == 0xfc00
                    || (first & 0xffc0) == 0xfe80
            }
        },
    }
}

/// Resolves names to their public addresses only: a channel cannot reach this machine or its
/// network by a name that points there.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<std::net::SocketAddr> =
                found.into_iter().filter(|a| !is_private(a.ip())).collect();
            if public.is_empty() {
                return Err(format!(
                    "{host} resolves to loopback, private or link-local addresses only \
                     (HERALD_ALLOW_PRIVATE_TARGETS allows them)"
                )
                .into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// A failed request as a maintainer may see it: what went wrong and its innermost cause (a
/// refused address, a TLS or connection error), never the URL (a webhook's holds its token).
pub fn transport_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "connection failed"
    };
    let mut cause: &dyn std::error::Error = e;
    let mut innermost = None;
    while let Some(next) = cause.source() {
        innermost = Some(next);
        cause = next;
    }
    match innermost {
        Some(cause) => format!("{kind}: {}", short_reason(&cause.to_string())),
        None => kind.to_owned(),
    }
}

/// What a receiver or an error says, made safe to show: one line, no control characters, at
/// most 120 characters.
pub fn short_reason(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let clean = clean.split_whitespace().collect::<Vec<_>>().join(" ");
    match clean.char_indices().nth(120) {
        Some((at, _)) => format!("{}…", &clean[..at]),
        None => clean,
    }
}

/// The most of an answer a sender reads: Discord's and Bluesky's are a few KiB; a server that
/// sends more is not one of them.
pub const ANSWER_MAX: usize = 1 << 20;

/// An answer's body, at most [`ANSWER_MAX`] bytes (an error past that).
pub async fn read_capped(mut response: reqwest::Response) -> Result<bytes::Bytes, String> {
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| e.without_url().to_string())?
    {
        if body.len() + chunk.len() > ANSWER_MAX {
            return Err(format!("the answer is longer than {ANSWER_MAX} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Why an attempt did not go through.
#[derive(Debug, Clone, PartialEq)]
pub enum SendError {
    /// Worth another attempt (connection error, timeout, 5xx, 429); `after` is the server's
    /// own wish (`retry_after`, `Retry-After`).
    Transient {
        reason: String,
        after: Option<Duration>,
    },
    /// Another attempt would fail the same way (401, 403, 404, an invalid payload).
    Permanent(String),
}

impl SendError {
    pub fn transient(reason: impl Into<String>) -> Self {
        Self::Transient {
            reason: reason.into(),
            after: None,
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Self::Transient { reason, .. } | Self::Permanent(reason) => reason,
        }
    }
}

/// A confirmed delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Message id or record URI; `None` when the receiver accepted the post without saying
    /// which it is (a relay answering 204): delivered, but it cannot be edited later.
    pub remote_id: Option<String>,
    /// Where a person can see it.
    pub remote_url: Option<String>,
    /// The thread as it stands after this delivery.
    pub thread: Option<Thread>,
}

/// What a delivery announces, as it stands at the attempt.
#[derive(Clone, Copy)]
pub enum About<'a> {
    Window {
        window: &'a Maintenance,
        update: &'a Update,
    },
    /// `update` is `None` for a refresh of Discord's live rollout message.
    Rollout {
        rollout: &'a Rollout,
        update: Option<&'a RolloutUpdate>,
    },
    Incident {
        incident: &'a Incident,
        update: &'a IncidentUpdate,
        /// Every component, to name the affected ones.
        components: &'a [Component],
    },
}

/// Everything one attempt needs.
pub struct Job<'a> {
    pub delivery: &'a Delivery,
    pub about: About<'a>,
    pub thread: Option<&'a Thread>,
    /// Whose thread `thread` is: the delivery's own subject, except that a Bluesky post about
    /// a rollout linked to a window goes into the window's thread when there is one.
    pub thread_key: Subject,
    /// The page the post links to: the window's or the rollout's.
    pub page_url: String,
}

impl Job<'_> {
    /// The window and the update a correction is about (only a window's updates are
    /// corrected).
    pub fn corrected(&self) -> Result<(&Maintenance, &Update), SendError> {
        match self.about {
            About::Window { window, update } => Ok((window, update)),
            About::Rollout { .. } | About::Incident { .. } => Err(SendError::Permanent(
                "only a window's updates are corrected".into(),
            )),
        }
    }
}

/// What [`Worker::deliver`] loads for an attempt.
enum Loaded {
    Window(Maintenance, Update),
    Rollout(Rollout, Option<RolloutUpdate>),
    Incident(Incident, IncidentUpdate, Vec<Component>),
}

/// A sender's way to record progress within an attempt (a posted message's id), so a retry
/// continues instead of posting again.
#[async_trait]
pub trait Progress: Send + Sync {
    async fn posted(&self, remote_id: &str, remote_url: Option<&str>);
    /// The first message of a thread (Discord's live message) exists: record it at once, so
    /// a later delivery that does not wait for this one edits it instead of posting another.
    async fn started_thread(&self, thread: &Thread);
}

/// One kind of destination.
#[async_trait]
pub trait Sender: Send + Sync {
    async fn send(&self, job: &Job<'_>, progress: &dyn Progress) -> Result<Sent, SendError>;
    /// The thread a rollout's announcements continue on channel `channel_id`, and the subject
    /// it is kept under: by default the rollout's own.
    async fn rollout_thread(
        &self,
        store: &dyn Store,
        channel_id: i64,
        rollout: &Rollout,
    ) -> crate::store::StoreResult<(Subject, Option<Thread>)> {
        let own = Subject::Rollout(rollout.id);
        Ok((own, store.get_thread(channel_id, own).await?))
    }
    /// Post a test message; returns a link or id to show.
    async fn test(&self, text: &str) -> Result<String, SendError>;
    /// Carry a correction of `original`, which this channel sent earlier (`job.delivery`'s
    /// action says which): the new text where the network lets a post be edited, else a
    /// correction in the thread; a withdrawal takes the post down where it can.
    async fn correct(
        &self,
        job: &Job<'_>,
        original: &Delivery,
        progress: &dyn Progress,
    ) -> Result<Sent, SendError>;
}

/// A channel whose sender cannot be built: every attempt fails with the reason.
struct Broken(String);

#[async_trait]
impl Sender for Broken {
    async fn send(&self, _: &Job<'_>, _: &dyn Progress) -> Result<Sent, SendError> {
        Err(SendError::Permanent(self.0.clone()))
    }

    async fn test(&self, _: &str) -> Result<String, SendError> {
        Err(SendError::Permanent(self.0.clone()))
    }

    async fn correct(
        &self,
        _: &Job<'_>,
        _: &Delivery,
        _: &dyn Progress,
    ) -> Result<Sent, SendError> {
        Err(SendError::Permanent(self.0.clone()))
    }
}

/// Build the sender for a channel.
pub fn sender_for(
    channel: &Channel,
    settings: &NotifySettings,
    store: &Arc<dyn Store>,
) -> Result<Arc<dyn Sender>, SendError> {
    Ok(match channel.kind {
        ChannelKind::DiscordWebhook | ChannelKind::DiscordBot => {
            Arc::new(discord::Discord::new(channel, settings)?)
        }
        ChannelKind::Bluesky => Arc::new(bluesky::Bluesky::new(channel, settings, store.clone())?),
        ChannelKind::Webhook => Arc::new(webhook::Webhook::new(channel, settings)?),
        ChannelKind::Email => Arc::new(mail::EmailChannel::new(channel, settings, store)),
    })
}

/// Exponential backoff with full jitter: attempt 1 waits up to 1 s, then 2, 4, … 10 min.
fn backoff(attempts: i64) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << attempts.clamp(1, 20).saturating_sub(1) as u32);
    let cap = exp.min(BACKOFF_MAX);
    let frac = f64::from(u32::from_le_bytes(crate::ids::random_bytes())) / f64::from(u32::MAX);
    // Half fixed, half random: never hammer at once, never wait for nothing.
    cap.mul_f64(0.5 + frac / 2.0)
}

/// The longest wait a receiver may ask for (`retry_after`, `Retry-After`, `ratelimit-reset`):
/// beyond it Herald asks again anyway, or gives up at the delivery's deadline.
pub const SERVER_WAIT_MAX: Duration = Duration::from_secs(3600);

/// A receiver's wish to be asked again in `seconds`, in the range Herald honours: negative
/// is now, more than [`SERVER_WAIT_MAX`] is that, and what is not a number is no wish. The one
/// place every channel's server-given wait goes through (a hostile endpoint's `1e20` or
/// `18446744073709551615` must neither panic nor wrap around into "at once").
pub fn server_wait(seconds: f64) -> Option<Duration> {
    if seconds.is_nan() {
        return None;
    }
    Some(Duration::from_secs_f64(
        seconds.clamp(0.0, SERVER_WAIT_MAX.as_secs_f64()),
    ))
}

/// A `Retry-After` header: seconds (RFC 9110 says an integer; a fraction is taken too) or an
/// HTTP date, through [`server_wait`].
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return server_wait(seconds);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let seconds = match at.duration_since(std::time::SystemTime::now()) {
        Ok(wait) => wait.as_secs_f64(),
        Err(_) => 0.0,
    };
    server_wait(seconds)
}

/// An outcome that could not be written is not lost silently: the lease lapses and the
/// delivery is tried again, but the log says why.
fn logged(delivery: i64, result: crate::store::StoreResult<()>) {
    if let Err(e) = result {
        warn!(delivery, error = %e, "could not record a delivery's outcome");
    }
}

fn now_ms() -> i64 {
    Timestamp::now().as_millisecond()
}

/// Builds the sender for a channel: [`sender_for`] in production; tests may put a recorder
/// (or a sender that misbehaves) behind the same seam.
pub type SenderFactory = Arc<
    dyn Fn(&Channel, &NotifySettings, &Arc<dyn Store>) -> Result<Arc<dyn Sender>, SendError>
        + Send
        + Sync,
>;

/// Starts and stops one worker per enabled channel as channels come and go.
pub struct Outbox {
    store: Arc<dyn Store>,
    /// Changes whenever the outbox has news ([`crate::service::Service::outbox_events`]).
    wake: watch::Receiver<u64>,
    settings: NotifySettings,
    cancel: CancellationToken,
    tracker: TaskTracker,
    senders: SenderFactory,
}

struct Running {
    channel: Channel,
    stop: CancellationToken,
}

impl Outbox {
    /// Spawn the supervisor on the current runtime. Workers finish the delivery in hand when
    /// `cancel` fires; wait on `tracker` for them.
    pub fn spawn(
        store: Arc<dyn Store>,
        wake: watch::Receiver<u64>,
        settings: NotifySettings,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) {
        Self::spawn_with(store, wake, settings, cancel, tracker, Arc::new(sender_for));
    }

    /// [`Outbox::spawn`] with senders from `senders`.
    pub fn spawn_with(
        store: Arc<dyn Store>,
        wake: watch::Receiver<u64>,
        settings: NotifySettings,
        cancel: CancellationToken,
        tracker: TaskTracker,
        senders: SenderFactory,
    ) {
        let outbox = Self {
            store,
            wake,
            settings,
            cancel,
            tracker: tracker.clone(),
            senders,
        };
        tracker.spawn(outbox.supervise().instrument(info_span!("outbox")));
    }

    async fn supervise(self) {
        match self.store.release_leases(&self.settings.instance_id).await {
            Ok(0) => {}
            Ok(n) => info!(
                deliveries = n,
                "took back the deliveries this instance held when it stopped"
            ),
            Err(e) => warn!(error = %e, "could not release old delivery leases"),
        }
        let mut wake = self.wake.clone();
        let mut running: HashMap<i64, Running> = HashMap::new();
        let mut sweep = tokio::time::interval(Duration::from_secs(30));
        loop {
            match self.store.list_channels().await {
                Ok(channels) => self.reconcile(&mut running, channels),
                Err(e) => warn!(error = %e, "could not list channels"),
            }
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                _ = wake.changed() => {}
                _ = sweep.tick() => self.expire().await,
            }
        }
        for r in running.values() {
            r.stop.cancel();
        }
    }

    fn reconcile(&self, running: &mut HashMap<i64, Running>, channels: Vec<Channel>) {
        running.retain(|id, r| {
            let keep = channels
                .iter()
                .any(|c| c.id == *id && c.enabled && *c == r.channel);
            if !keep {
                r.stop.cancel();
            }
            keep
        });
        for channel in channels.into_iter().filter(|c| c.enabled) {
            if running.contains_key(&channel.id) {
                continue;
            }
            let stop = self.cancel.child_token();
            let worker = Worker {
                store: self.store.clone(),
                wake: self.wake.clone(),
                settings: self.settings.clone(),
                channel: channel.clone(),
                stop: stop.clone(),
                senders: self.senders.clone(),
            };
            let span = info_span!("channel", id = channel.id, name = %channel.name);
            self.tracker.spawn(worker.run().instrument(span));
            running.insert(channel.id, Running { channel, stop });
        }
    }

    async fn expire(&self) {
        match self.store.expire_deliveries(Timestamp::now()).await {
            Ok(expired) => {
                let names: HashMap<i64, String> = match self.store.list_channels().await {
                    Ok(all) => all.into_iter().map(|c| (c.id, c.name)).collect(),
                    Err(_) => HashMap::new(),
                };
                for d in expired {
                    let channel = names
                        .get(&d.channel_id)
                        .cloned()
                        .unwrap_or_else(|| d.channel_id.to_string());
                    warn!(
                        delivery = d.id,
                        channel = d.channel_id,
                        "delivery passed its deadline"
                    );
                    metrics::counter!("herald_deliveries_total", "channel" => channel, "outcome" => "failed").increment(1);
                }
            }
            Err(e) => warn!(error = %e, "could not expire deliveries"),
        }
    }
}

struct Worker {
    store: Arc<dyn Store>,
    wake: watch::Receiver<u64>,
    settings: NotifySettings,
    channel: Channel,
    stop: CancellationToken,
    senders: SenderFactory,
}

/// Records a posted message's id on the delivery as soon as it is known.
struct DeliveryProgress<'a> {
    store: &'a dyn Store,
    id: i64,
    attempt: i64,
    channel_id: i64,
    thread_key: Subject,
}

#[async_trait]
impl Progress for DeliveryProgress<'_> {
    async fn posted(&self, remote_id: &str, remote_url: Option<&str>) {
        if let Err(e) = self
            .store
            .delivery_posted(self.id, self.attempt, remote_id, remote_url)
            .await
        {
            warn!(delivery = self.id, error = %e, "could not record the posted message");
        }
    }

    async fn started_thread(&self, thread: &Thread) {
        if let Err(e) = self
            .store
            .put_thread(self.channel_id, self.thread_key, thread, Timestamp::now())
            .await
        {
            warn!(delivery = self.id, error = %e, "could not record the new thread");
        }
    }
}

impl Worker {
    async fn run(self) {
        let sender = match (self.senders)(&self.channel, &self.settings, &self.store) {
            Ok(s) => s,
            Err(e) => {
                // Fail its deliveries with the reason (shown on the run view) rather than
                // leave them pending unexplained; fixing the channel restarts the worker.
                warn!(reason = e.reason(), "channel cannot send");
                Arc::new(Broken(e.reason().to_owned()))
            }
        };
        let mut wake = self.wake.clone();
        debug!("worker started");
        while !self.stop.is_cancelled() {
            let now = now_ms();
            let claimed = self
                .store
                .claim_delivery(
                    self.channel.id,
                    &self.settings.instance_id,
                    now,
                    now + (self.settings.request_timeout * LEASE_TIMEOUTS).as_millis() as i64,
                )
                .await;
            match claimed {
                Ok(Some(d)) => {
                    // The channel may have been edited since this worker started (a new
                    // token, say) and the supervisor not yet stopped it: a claim made with old
                    // settings goes back, uncounted, to the worker that has the new ones.
                    if !self.channel_is_current().await {
                        if let Err(e) = self.store.release_claim(d.id, d.attempts).await {
                            warn!(delivery = d.id, error = %e, "could not hand a delivery back");
                        }
                        break;
                    }
                    self.deliver(sender.as_ref(), d).await
                }
                Ok(None) => {
                    let due = self.store.next_due_ms(self.channel.id).await.ok().flatten();
                    let wait = due
                        .map(|t| Duration::from_millis((t - now_ms()).max(0) as u64))
                        .unwrap_or(POLL)
                        .min(POLL);
                    tokio::select! {
                        _ = self.stop.cancelled() => break,
                        _ = wake.changed() => {}
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                Err(e) => {
                    warn!(error = %e, "could not claim a delivery");
                    tokio::select! {
                        _ = self.stop.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
        debug!("worker stopped");
    }

    /// Whether the channel is still as this worker was started with.
    async fn channel_is_current(&self) -> bool {
        match self.store.get_channel(self.channel.id).await {
            Ok(Some(c)) => c == self.channel,
            Ok(None) => false,
            // Unknown: go on with what we have; the outcome write is fenced anyway.
            Err(_) => true,
        }
    }

    /// One delivery: load what it announces, attempt it, record the outcome.
    async fn deliver(&self, sender: &dyn Sender, d: Delivery) {
        let store = self.store.as_ref();
        let (loaded, thread_key, thread) = match self.load(sender, &d).await {
            Ok(Some(found)) => found,
            Ok(None) => {
                logged(
                    d.id,
                    store
                        .delivery_failed(d.id, d.attempts, "what it announces no longer exists")
                        .await,
                );
                return;
            }
            Err(e) => {
                warn!(delivery = d.id, error = %e, "could not load a delivery");
                logged(
                    d.id,
                    store
                        .delivery_retry(d.id, d.attempts, &e.to_string(), now_ms() + 1000)
                        .await,
                );
                return;
            }
        };
        let (about, page_url) = match &loaded {
            Loaded::Window(window, update) => (
                About::Window { window, update },
                self.settings.page_url(window.id),
            ),
            Loaded::Rollout(rollout, update) => (
                About::Rollout {
                    rollout,
                    update: update.as_ref(),
                },
                self.settings.rollout_url(rollout.id),
            ),
            Loaded::Incident(incident, update, components) => (
                About::Incident {
                    incident,
                    update,
                    components,
                },
                self.settings.incident_url(incident.id),
            ),
        };
        let job = Job {
            delivery: &d,
            about,
            thread: thread.as_ref(),
            thread_key,
            page_url,
        };
        let result = self.attempt(sender, &job).await;
        self.record(&d, thread_key, result).await;
    }

    /// What delivery `d` announces, the subject of the thread it continues and that thread;
    /// `None` when what it announces is gone.
    async fn load(
        &self,
        sender: &dyn Sender,
        d: &Delivery,
    ) -> crate::store::StoreResult<Option<(Loaded, Subject, Option<Thread>)>> {
        let store = self.store.as_ref();
        Ok(match d.subject {
            Subject::Window(id) => {
                let update = match d.update_id {
                    Some(u) => store.get_update(u).await?,
                    None => None,
                };
                let window = store.get_maintenance(id).await?;
                let thread = store.get_thread(d.channel_id, d.subject).await?;
                match (window, update) {
                    (Some(w), Some(u)) => Some((Loaded::Window(w, u), d.subject, thread)),
                    _ => None,
                }
            }
            Subject::Rollout(id) => {
                let Some(r) = store.get_rollout(id).await? else {
                    return Ok(None);
                };
                let update = match d.update_id {
                    Some(u) => match store.get_rollout_update(u).await? {
                        Some(u) => Some(u),
                        None => return Ok(None),
                    },
                    None => None,
                };
                let (key, thread) = sender.rollout_thread(store, d.channel_id, &r).await?;
                Some((Loaded::Rollout(r, update), key, thread))
            }
            Subject::Incident(id) => {
                let (Some(i), Some(u)) = (
                    store.get_incident(id).await?,
                    match d.update_id {
                        Some(u) => store.get_incident_update(u).await?,
                        None => None,
                    },
                ) else {
                    return Ok(None);
                };
                let components = store.list_components().await?;
                let thread = store.get_thread(d.channel_id, d.subject).await?;
                Some((Loaded::Incident(i, u, components), d.subject, thread))
            }
        })
    }

    /// One attempt at sending `job`, counted and timed. One bad payload (or a bug in a sender)
    /// must not end the channel's worker: a panic fails this delivery with the reason, and the
    /// worker goes on with the next.
    async fn attempt(&self, sender: &dyn Sender, job: &Job<'_>) -> Result<Sent, SendError> {
        let d = job.delivery;
        let started = Instant::now();
        let progress = DeliveryProgress {
            store: self.store.as_ref(),
            id: d.id,
            attempt: d.attempts,
            channel_id: d.channel_id,
            thread_key: job.thread_key,
        };
        let sent = async {
            match (d.action, d.corrects) {
                (DeliveryAction::Post, _) => sender.send(job, &progress).await,
                (_, Some(original)) => match self.store.get_delivery(original).await {
                    // It never went out (withdrawn or skipped before it was sent, or failed):
                    // nothing to correct where it was not posted.
                    Ok(Some(original)) if original.state != crate::domain::DeliveryState::Sent => {
                        Ok(Sent {
                            remote_id: None,
                            remote_url: None,
                            thread: job.thread.cloned(),
                        })
                    }
                    Ok(Some(original)) => sender.correct(job, &original, &progress).await,
                    Ok(None) => Err(SendError::Permanent(
                        "the post it corrects is no longer known".into(),
                    )),
                    Err(e) => Err(SendError::transient(format!(
                        "loading the post it corrects: {e}"
                    ))),
                },
                (_, None) => Err(SendError::Permanent(
                    "a correction that names no post".into(),
                )),
            }
        };
        let result = match std::panic::AssertUnwindSafe(sent).catch_unwind().await {
            Ok(result) => result,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".to_owned());
                tracing::error!(delivery = d.id, panic = %what, "sender panicked");
                Err(SendError::Permanent(format!(
                    "Herald's sender panicked: {what}"
                )))
            }
        };
        let channel = self.channel.name.clone();
        metrics::counter!("herald_delivery_attempts_total", "channel" => channel.clone())
            .increment(1);
        metrics::histogram!("herald_delivery_attempt_seconds", "channel" => channel)
            .record(started.elapsed().as_secs_f64());
        result
    }

    /// Record an attempt's outcome: sent (with the thread it started or continued), failed for
    /// good, or to be retried after a backoff (failed once past the deadline).
    async fn record(&self, d: &Delivery, thread_key: Subject, result: Result<Sent, SendError>) {
        let store = self.store.as_ref();
        // Metrics name channels as the admin UI does.
        let channel = self.channel.name.clone();
        let outcome = match result {
            Ok(sent) => {
                let recorded = store
                    .delivery_sent(
                        d.id,
                        d.attempts,
                        sent.remote_id.as_deref(),
                        sent.remote_url.as_deref(),
                        sent.thread.as_ref().map(|t| (thread_key, t)),
                        Timestamp::now(),
                    )
                    .await;
                if let Err(e) = recorded {
                    warn!(delivery = d.id, error = %e, "sent, but could not record it");
                    return;
                }
                let latency = (now_ms() - d.created_ms).max(0) as f64 / 1000.0;
                metrics::histogram!("herald_delivery_latency_seconds", "channel" => channel.clone())
                    .record(latency);
                debug!(
                    delivery = d.id,
                    kind = d.kind.as_str(),
                    latency,
                    "delivered"
                );
                "sent"
            }
            Err(SendError::Permanent(reason)) => {
                warn!(delivery = d.id, reason, "delivery failed");
                logged(d.id, store.delivery_failed(d.id, d.attempts, &reason).await);
                "failed"
            }
            Err(SendError::Transient { reason, after }) => {
                let wait = match after {
                    // The server said when; a little jitter keeps instances apart.
                    Some(after) => after + backoff(1).mul_f64(0.2),
                    None => backoff(d.attempts),
                };
                let wait = wait.min(SERVER_WAIT_MAX + BACKOFF_MAX);
                let next = now_ms().saturating_add(wait.as_millis() as i64);
                if next / 1000 >= d.deadline_at.as_second() {
                    let reason = format!("{reason}; gave up at the deadline");
                    warn!(delivery = d.id, reason, "delivery failed");
                    logged(d.id, store.delivery_failed(d.id, d.attempts, &reason).await);
                    "failed"
                } else {
                    info!(delivery = d.id, reason, attempt = d.attempts, retry_in = ?wait, "delivery will be retried");
                    logged(
                        d.id,
                        store.delivery_retry(d.id, d.attempts, &reason, next).await,
                    );
                    "retry"
                }
            }
        };
        metrics::counter!("herald_deliveries_total", "channel" => channel, "outcome" => outcome)
            .increment(1);
    }
}

#[cfg(test)]
mod wait_tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    fn header(value: &str) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        retry_after(&headers)
    }

    #[test]
    fn a_server_given_wait_stays_in_range() {
        assert_eq!(server_wait(1.5), Some(Duration::from_millis(1500)));
        assert_eq!(server_wait(-3.0), Some(Duration::ZERO));
        assert_eq!(server_wait(1e20), Some(SERVER_WAIT_MAX));
        assert_eq!(server_wait(f64::INFINITY), Some(SERVER_WAIT_MAX));
        assert_eq!(server_wait(f64::NEG_INFINITY), Some(Duration::ZERO));
        assert_eq!(server_wait(f64::NAN), None);
        assert_eq!(header("7"), Some(Duration::from_secs(7)));
        // u64::MAX seconds used to wrap the next attempt's time negative: due at once.
        assert_eq!(header("18446744073709551615"), Some(SERVER_WAIT_MAX));
        assert_eq!(header("-1"), Some(Duration::ZERO));
        assert_eq!(header("soon"), None);
        assert_eq!(
            header("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let later =
            httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(120));
        let wait = header(&later).unwrap();
        assert!(
            wait > Duration::from_secs(100) && wait <= Duration::from_secs(120),
            "{wait:?}"
        );
        let far = httpdate::fmt_http_date(
            std::time::SystemTime::now() + Duration::from_secs(400 * 86_400),
        );
        assert_eq!(header(&far), Some(SERVER_WAIT_MAX));
    }
}

#[cfg(test)]
mod target_tests {
    use super::*;

    fn settings(allow: bool) -> NotifySettings {
        NotifySettings {
            public_url: "https://status.example.com".into(),
            site_name: "Status".into(),
            discord_api_url: None,
            deadline: Duration::from_secs(60),
            request_timeout: Duration::from_secs(1),
            instance_id: "test".into(),
            allow_private_targets: allow,
            timezone: jiff::tz::TimeZone::UTC,
            mail: None,
            mail_wake: Arc::default(),
        }
    }

    #[test]
    fn private_addresses_are_known() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "162.159.128.233",
            "2606:4700::6810:84e5",
            "100.128.0.1",
        ] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn targets_are_public_https_without_credentials() {
        let strict = settings(false);
        assert!(strict.check_target("https://discord.com").is_ok());
        assert!(strict.check_target("https://bsky.social").is_ok());
        for refused in [
            "http://discord.com",
            "https://127.0.0.1:8080",
            "https://[::1]/api",
            "https://169.254.169.254/latest/meta-data",
            "https://10.0.0.5/hook",
            "https://user:pw@example.com/hook",
            "not a url",
        ] {
            assert!(
                matches!(strict.check_target(refused), Err(SendError::Permanent(_))),
                "{refused}"
            );
        }
        let allowed = settings(true);
        assert!(allowed.check_target("http://127.0.0.1:8080").is_ok());
        assert!(allowed.check_target("https://user:pw@example.com").is_err());
    }

    #[tokio::test]
    async fn names_that_resolve_to_private_addresses_are_refused_at_connect_time() {
        use reqwest::dns::Resolve as _;
        let refused = PublicOnly
            .resolve("localhost".parse().unwrap())
            .await
            .err()
            .expect("localhost is refused");
        assert!(refused.to_string().contains("HERALD_ALLOW_PRIVATE_TARGETS"));
        // Through the client: the error a maintainer sees says why.
        let client = settings(false).http_client().unwrap();
        let e = client.get("https://localhost:9/").send().await.unwrap_err();
        let said = transport_error(&e);
        assert!(said.contains("resolves to loopback"), "{said}");
    }

    #[test]
    fn reasons_are_short_and_one_line() {
        assert_eq!(short_reason("a\r\nb\tc"), "a b c");
        let long = "x".repeat(500);
        assert_eq!(short_reason(&long).chars().count(), 121);
    }
}
