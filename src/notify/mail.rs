//! Mail to subscribers.
//!
//! Two halves. The email channel (made from HERALD_SMTP_URL) is a channel like the others: a
//! change commits one delivery for it, and its [`EmailChannel`] sender turns that delivery into
//! one queued mail (`mail_fanouts`): rendered once, for however many subscribers. Steps of a
//! window fold into the thread's mail not yet begun. Then [`Mailer`] workers, on every
//! instance, cut queued mails into batches of subscribers, each held under a lease, and send
//! them one message at a time over pooled SMTP connections, recording each accepted message
//! before the next: after a crash only the messages in flight can go twice. A slow or dead
//! mail server holds up only these workers, never the channels, the pages or the API.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::{PoolConfig, response::Severity};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use super::render::{MailWords, escape_html, mail_incident, mail_rollout, mail_window};
use super::{About, Job, NotifySettings, Progress, SendError, Sender, Sent};
use crate::config::MailSettings;
use crate::domain::{
    BOUNCE_LIMIT, CONFIRMATION_TTL, Delivery, DeliveryAction, LinkKey, LinkPurpose, MailBatch,
    MailFanout, MailPurpose, NewMail, Subscriber, UpdateKind, confirm_path, manage_path,
    unsubscribe_path,
};
use crate::store::Store;

/// Subscribers per batch: a batch is what one worker holds at a time.
pub const BATCH: i64 = 200;
/// Workers per instance, each sending one message at a time over a connection of the pool.
/// A message costs a few round trips and, as lettre writes the body and its end separately, a
/// delayed acknowledgement (about 40 ms on Linux): a worker sends about 25 a second, and
/// twelve keep well ahead of the 100,000-subscriber target (bench/mail-fanout.sh) while
/// staying under mail servers' usual limits on connections per client.
const WORKERS: usize = 12;
/// How long a claimed batch stays its worker's without progress.
const LEASE: Duration = Duration::from_secs(120);
/// Idle workers look at the queue this often (folded steps come due on their own).
const POLL: Duration = Duration::from_secs(1);
/// A recipient the server keeps refusing for now is given up after this long.
const GIVE_UP: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);
/// Sent mail is kept this long (the admin page counts what is queued), then forgotten.
const KEEP_SENT: jiff::SignedDuration = jiff::SignedDuration::from_hours(7 * 24);
/// Marks in a queued mail's words where each subscriber's own links go.
const MANAGE_MARK: &str = "\u{1}manage\u{1}";
const CONFIRM_MARK: &str = "\u{1}confirm\u{1}";

/// The HTML part of a mail: each paragraph escaped, the link to the page as a button-like
/// link; styles inline, as mail clients want them.
fn html_section(words: &MailWords, page_url: &str, link_text: &str) -> String {
    let mut html = String::new();
    for (i, p) in words.paragraphs.iter().enumerate() {
        let text = escape_html(p).replace('\n', "<br>");
        if i == 0 {
            html.push_str(&format!(
                "<p style=\"font-size:17px;font-weight:600;margin:0 0 12px\">{text}</p>\n"
            ));
        } else {
            html.push_str(&format!("<p style=\"margin:0 0 10px\">{text}</p>\n"));
        }
    }
    if !page_url.is_empty() {
        html.push_str(&format!(
            "<p style=\"margin:14px 0 18px\"><a href=\"{}\" style=\"color:#0b57d0\">{}</a></p>\n",
            escape_html(page_url),
            escape_html(link_text)
        ));
    }
    html
}

fn text_section(words: &MailWords, page_url: &str, link_text: &str) -> String {
    let mut text = words.paragraphs.join("\n\n");
    if !page_url.is_empty() {
        text.push_str(&format!("\n\n{link_text}: {page_url}\n"));
    }
    text
}

/// What one queued mail says, for the email channel's delivery.
fn event_mail(
    job: &Job<'_>,
    settings: &NotifySettings,
    domain: &str,
) -> Result<NewMail, SendError> {
    let d = job.delivery;
    let zone = &settings.timezone;
    let (thread, root_at, words, components, folds) = match job.about {
        About::Window { window, update } => {
            let mut words = mail_window(window, update, zone);
            match d.action {
                DeliveryAction::Post => {}
                DeliveryAction::Edit => words.paragraphs.insert(0, "Correction:".into()),
                DeliveryAction::Withdraw => {
                    words.paragraphs = vec![format!(
                        "Withdrawn: an earlier update about {} was taken back.",
                        window.title
                    )];
                }
            }
            let folds = d.action == DeliveryAction::Post
                && matches!(
                    update.kind,
                    UpdateKind::StepStarted | UpdateKind::StepDone | UpdateKind::StepSkipped
                );
            (
                format!("window.{}", window.id),
                window.created_at,
                words,
                window.components.iter().map(|c| c.id).collect(),
                folds,
            )
        }
        About::Rollout {
            rollout,
            update: Some(update),
        } => (
            format!("rollout.{}", rollout.id),
            rollout.created_at,
            mail_rollout(rollout, update),
            Vec::new(),
            false,
        ),
        About::Rollout { update: None, .. } => {
            return Err(SendError::Permanent(
                "a live-message refresh is not mailed".into(),
            ));
        }
        About::Incident {
            incident,
            update,
            components,
        } => (
            format!("incident.{}", incident.id),
            incident.created_at,
            mail_incident(incident, update, components, zone),
            incident.components.iter().map(|(id, _)| *id).collect(),
            false,
        ),
    };
    let link_text = "Follow it on the status page";
    Ok(NewMail {
        purpose: MailPurpose::of_update(d.kind),
        subscriber_id: None,
        thread: Some(thread.clone()),
        components,
        subject: format!("[{}] {}", settings.site_name, words.subject),
        text: text_section(&words, &job.page_url, link_text),
        html: html_section(&words, &job.page_url, link_text),
        message_id: format!("<herald.{thread}.{}@{domain}>", d.idem_key),
        root_id: format!("<herald.{thread}.{}@{domain}>", root_at.as_second()),
        folds,
    })
}

/// The domain of the sender's address: Message-IDs are made under it.
fn mail_domain(from: &str) -> String {
    from.rsplit('@')
        .next()
        .unwrap_or("localhost")
        .trim_end_matches('>')
        .trim()
        .to_owned()
}

/// The email channel's sender: each delivery becomes one queued mail.
pub struct EmailChannel {
    store: Arc<dyn Store>,
    settings: NotifySettings,
    domain: String,
}

impl EmailChannel {
    pub fn new(
        channel: &crate::domain::Channel,
        settings: &NotifySettings,
        store: &Arc<dyn Store>,
    ) -> Self {
        Self {
            store: store.clone(),
            settings: settings.clone(),
            domain: mail_domain(&channel.target),
        }
    }
}

#[async_trait]
impl Sender for EmailChannel {
    async fn send(&self, job: &Job<'_>, _progress: &dyn Progress) -> Result<Sent, SendError> {
        let mail = event_mail(job, &self.settings, &self.domain)?;
        let fanout = self
            .store
            .queue_event_mail(job.delivery.id, &mail, Timestamp::now())
            .await
            .map_err(|e| SendError::transient(format!("queueing the mail: {e}")))?;
        self.settings.mail_wake.notify_waiters();
        Ok(Sent {
            remote_id: Some(format!("mail {fanout}")),
            remote_url: None,
            thread: None,
        })
    }

    async fn test(&self, _text: &str) -> Result<String, SendError> {
        let Some(mail) = &self.settings.mail else {
            return Err(SendError::Permanent("HERALD_SMTP_URL is not set".into()));
        };
        let transport = transport(mail).map_err(SendError::Permanent)?;
        match transport.test_connection().await {
            Ok(true) => Ok("the mail server answered".into()),
            Ok(false) => Err(SendError::transient("the mail server did not answer")),
            Err(e) => Err(SendError::transient(format!("the mail server: {e}"))),
        }
    }

    async fn correct(
        &self,
        job: &Job<'_>,
        _original: &Delivery,
        progress: &dyn Progress,
    ) -> Result<Sent, SendError> {
        // A mail cannot be taken back: the correction goes out in the thread.
        self.send(job, progress).await
    }
}

/// The SMTP transport HERALD_SMTP_URL names, its connections pooled.
pub fn transport(mail: &MailSettings) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let url = mail
        .smtp_url
        .as_ref()
        .ok_or_else(|| "HERALD_SMTP_URL is not set".to_owned())?;
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(&lettre_url(url.expose())?)
        .map_err(|e| format!("HERALD_SMTP_URL: {e}"))?
        .timeout(Some(Duration::from_secs(30)))
        .pool_config(PoolConfig::new().max_size(WORKERS as u32 * 2));
    if let Some(password) = &mail.smtp_password {
        let user = reqwest::Url::parse(url.expose())
            .ok()
            .map(|u| u.username().to_owned())
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                "HERALD_SMTP_PASSWORD is set but HERALD_SMTP_URL names no user".to_owned()
            })?;
        let user = percent_encoding::percent_decode_str(&user)
            .decode_utf8_lossy()
            .into_owned();
        builder = builder.credentials(Credentials::new(user, password.expose().to_owned()));
    }
    Ok(builder.build())
}

/// HERALD_SMTP_URL as lettre reads it. `smtp://` means STARTTLS, required (lettre would send
/// in the clear without `?tls=`): a password never crosses the network unencrypted by
/// default. `?tls=none` says so for a relay on the same machine; `?tls=opportunistic` as in
/// lettre.
fn lettre_url(url: &str) -> Result<String, String> {
    let mut parsed =
        reqwest::Url::parse(url).map_err(|e| format!("HERALD_SMTP_URL is not a URL: {e}"))?;
    if parsed.scheme() != "smtp" {
        return Ok(url.to_owned());
    }
    let mut pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    match pairs.iter().position(|(k, _)| k == "tls") {
        None => pairs.push(("tls".into(), "required".into())),
        Some(i) if pairs[i].1 == "none" => {
            pairs.remove(i);
        }
        Some(_) => {}
    }
    if pairs.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    Ok(parsed.to_string())
}

/// The mail workers of this instance.
pub struct Mailer {
    store: Arc<dyn Store>,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    key: LinkKey,
    public_url: String,
    site_name: String,
    owner: String,
    dkim: Option<lettre::message::dkim::DkimConfig>,
    wake: Arc<tokio::sync::Notify>,
    /// Bumped when a change queues something (a confirmation mail among them).
    outbox: tokio::sync::watch::Receiver<u64>,
    /// The workers' writes to the queue go one at a time: on SQLite, a dozen writers polling
    /// for the lock starve each other (and the rest of Herald) for seconds.
    writes: tokio::sync::Mutex<()>,
    cancel: CancellationToken,
}

/// How a send went wrong.
enum Failure {
    /// The server refused this address for good (5xx but authentication; or the client
    /// could not send to it): count a bounce.
    Refused(String),
    /// This address, for now (4xx to it): retry later, give up after a day.
    Deferred(String),
    /// The server (down, refusing everyone, a bad password): retry the batch later.
    Server(String),
}

fn classify(e: &lettre::transport::smtp::Error) -> Failure {
    let text = super::short_reason(&e.to_string());
    if e.is_client() {
        // Refused before anything was sent: this address cannot go through this server (a
        // UTF-8 name and no SMTPUTF8).
        return Failure::Refused(text);
    }
    match e.status() {
        Some(code) if code.severity == Severity::PermanentNegativeCompletion => {
            // Authentication refused is the operator's to fix, not the address's.
            if matches!(u16::from(code), 530 | 534 | 535 | 538) {
                Failure::Server(text)
            } else {
                Failure::Refused(text)
            }
        }
        Some(code) if code.severity == Severity::TransientNegativeCompletion => {
            let n = u16::from(code);
            // 421: the service is closing; 454: TLS or auth not available now.
            if n == 421 || n == 454 {
                Failure::Server(text)
            } else {
                Failure::Deferred(text)
            }
        }
        _ => Failure::Server(text),
    }
}

fn backoff(attempts: i64) -> Duration {
    let secs = 2u64.saturating_pow(attempts.clamp(0, 9) as u32).min(600);
    Duration::from_secs(secs)
}

impl Mailer {
    /// Start the workers when mail is set up; they stop with `cancel` after the message in
    /// hand.
    pub fn spawn(
        store: Arc<dyn Store>,
        outbox: tokio::sync::watch::Receiver<u64>,
        settings: &NotifySettings,
        key: LinkKey,
        cancel: CancellationToken,
        tracker: &TaskTracker,
    ) -> anyhow::Result<()> {
        let Some(mail) = &settings.mail else {
            return Ok(());
        };
        let from: Mailbox = mail
            .from
            .as_deref()
            .unwrap_or_default()
            .parse()
            .map_err(|e| anyhow::anyhow!("HERALD_MAIL_FROM: {e}"))?;
        let dkim = match &mail.dkim {
            None => None,
            Some((selector, key)) => {
                // What lettre reads: RSA as PKCS#1 PEM, Ed25519 as its 32 bytes in base64.
                let key = key.expose().trim();
                let algorithm = if key.contains("BEGIN RSA PRIVATE KEY") {
                    lettre::message::dkim::DkimSigningAlgorithm::Rsa
                } else if key.starts_with("-----BEGIN") {
                    anyhow::bail!(
                        "HERALD_DKIM_KEY: give an RSA key as PKCS#1 PEM (BEGIN RSA PRIVATE KEY; \
                         openssl rsa -traditional converts one) or an Ed25519 key as base64"
                    );
                } else {
                    lettre::message::dkim::DkimSigningAlgorithm::Ed25519
                };
                let key = lettre::message::dkim::DkimSigningKey::new(key, algorithm)
                    .map_err(|e| anyhow::anyhow!("HERALD_DKIM_KEY: {e}"))?;
                Some(lettre::message::dkim::DkimConfig::default_config(
                    selector.clone(),
                    from.email.domain().to_owned(),
                    key,
                ))
            }
        };
        let mailer = Arc::new(Self {
            store,
            transport: transport(mail).map_err(|e| anyhow::anyhow!(e))?,
            from,
            key,
            public_url: settings.public_url.clone(),
            site_name: settings.site_name.clone(),
            owner: settings.instance_id.clone(),
            dkim,
            wake: settings.mail_wake.clone(),
            outbox,
            writes: tokio::sync::Mutex::new(()),
            cancel,
        });
        let workers = tracker.clone();
        tracker.spawn(async move {
            // What this instance id held before a crash goes on at once, not after the lease.
            let owners: Vec<String> = (0..WORKERS).map(|n| mailer.worker(n)).collect();
            match mailer.store.release_mail_leases(&owners).await {
                Ok(0) => {}
                Ok(n) => info!(batches = n, "took back this instance's mail batches"),
                Err(e) => warn!(error = %e, "could not take back this instance's mail batches"),
            }
            for n in 0..WORKERS {
                let mailer = mailer.clone();
                workers.spawn(
                    async move { mailer.run(n).await }.instrument(info_span!("mailer", worker = n)),
                );
            }
        });
        info!(workers = WORKERS, "mail workers started");
        Ok(())
    }

    /// Worker `n`'s name on the leases it holds: its own, so a batch whose lease ran out
    /// while it waited on a slow server goes to another worker and this one stops at once.
    fn worker(&self, n: usize) -> String {
        format!("{}#{n}", self.owner)
    }

    async fn run(self: Arc<Self>, n: usize) {
        let owner = self.worker(n);
        let mut outbox = self.outbox.clone();
        let mut expired_at = Timestamp::UNIX_EPOCH;
        while !self.cancel.is_cancelled() {
            let now = Timestamp::now();
            if n == 0 && now.duration_since(expired_at) > jiff::SignedDuration::from_mins(10) {
                expired_at = now;
                match self.store.expire_unconfirmed(now - CONFIRMATION_TTL).await {
                    Ok(0) => {}
                    Ok(gone) => info!(gone, "forgot unconfirmed subscriptions"),
                    Err(e) => warn!(error = %e, "could not forget unconfirmed subscriptions"),
                }
                if let Err(e) = self.store.prune_mail(now - KEEP_SENT).await {
                    warn!(error = %e, "could not forget sent mail");
                }
            }
            let now_ms = now.as_millisecond();
            match self
                .write(
                    self.store
                        .claim_mail_batch(&owner, now_ms, LEASE.as_millis() as i64, BATCH),
                )
                .await
            {
                Ok(Some(batch)) => {
                    if let Err(e) = self.send_batch(&batch, &owner).await {
                        warn!(batch = batch.id, error = %e, "mail batch interrupted");
                        self.pause(Duration::from_secs(1)).await;
                    }
                }
                Ok(None) => {
                    let wake = self.wake.notified();
                    tokio::select! {
                        _ = self.cancel.cancelled() => break,
                        _ = wake => {}
                        _ = outbox.changed() => {}
                        _ = tokio::time::sleep(POLL) => {}
                    }
                }
                Err(e) => {
                    warn!(error = %e, "could not claim a mail batch");
                    self.pause(Duration::from_secs(1)).await;
                }
            }
        }
        debug!("mail worker stopped");
    }

    /// One of the workers' writes, after the others' ([`Mailer::writes`]).
    async fn write<T>(&self, write: impl std::future::Future<Output = T>) -> T {
        let _turn = self.writes.lock().await;
        write.await
    }

    async fn pause(&self, d: Duration) {
        tokio::select! {
            _ = self.cancel.cancelled() => {}
            _ = tokio::time::sleep(d) => {}
        }
    }

    async fn send_batch(&self, batch: &MailBatch, owner: &str) -> crate::store::StoreResult<()> {
        let Some(fanout) = self.store.mail_fanout(batch.fanout_id).await? else {
            return Ok(());
        };
        let subscribers = self
            .store
            .mail_batch_subscribers(batch, fanout.subscriber_id)
            .await?;
        for s in subscribers {
            if self.cancel.is_cancelled() {
                // The lease runs out and another worker (or this one restarted) goes on.
                return Ok(());
            }
            if !fanout.goes_to(&s) {
                continue;
            }
            let lease_until = Timestamp::now().as_millisecond() + LEASE.as_millis() as i64;
            let outcome = match self.message(&fanout, &s) {
                Ok(message) => self.transport.send(message).await.map_err(|e| classify(&e)),
                Err(why) => Err(Failure::Refused(why)),
            };
            match outcome {
                Ok(_) => {
                    metrics::counter!("herald_mails_sent_total").increment(1);
                    if !self
                        .write(self.store.mail_advance(batch.id, owner, s.id, lease_until))
                        .await?
                    {
                        warn!(batch = batch.id, "lost the lease on a mail batch");
                        return Ok(());
                    }
                    if s.bounces > 0 {
                        self.write(self.store.mail_reached(s.id)).await?;
                    }
                }
                Err(Failure::Refused(why)) => {
                    metrics::counter!("herald_mails_refused_total").increment(1);
                    info!(subscriber = s.id, reason = %why, "the mail server refused an address");
                    if !self
                        .write(self.store.mail_bounced(
                            batch.id,
                            owner,
                            s.id,
                            BOUNCE_LIMIT,
                            Timestamp::now(),
                            lease_until,
                        ))
                        .await?
                    {
                        return Ok(());
                    }
                }
                Err(Failure::Deferred(why))
                    if Timestamp::now().duration_since(fanout.created_at) > GIVE_UP =>
                {
                    warn!(subscriber = s.id, reason = %why, "gave up a mail deferred for a day");
                    if !self
                        .write(self.store.mail_advance(batch.id, owner, s.id, lease_until))
                        .await?
                    {
                        return Ok(());
                    }
                }
                Err(Failure::Deferred(why) | Failure::Server(why)) => {
                    metrics::counter!("herald_mail_retries_total").increment(1);
                    let wait = backoff(batch.attempts);
                    warn!(batch = batch.id, reason = %why, retry_in = ?wait, "mail deferred");
                    let next = Timestamp::now().as_millisecond() + wait.as_millis() as i64;
                    self.write(self.store.mail_retry_later(batch.id, owner, next, &why))
                        .await?;
                    return Ok(());
                }
            }
        }
        self.write(
            self.store
                .mail_batch_done(batch.id, owner, Timestamp::now()),
        )
        .await
    }

    /// The message for one subscriber: the queued words with their own links.
    fn message(&self, fanout: &MailFanout, s: &Subscriber) -> Result<Message, String> {
        let manage_token = self.key.token(LinkPurpose::Manage, s.id, &s.key);
        let manage = format!("{}{}", self.public_url, manage_path(s.id, &manage_token));
        let unsubscribe = format!(
            "{}{}",
            self.public_url,
            unsubscribe_path(s.id, &manage_token)
        );
        let confirm = format!(
            "{}{}",
            self.public_url,
            confirm_path(s.id, &self.key.token(LinkPurpose::Confirm, s.id, &s.key))
        );
        let fill = |t: &str| {
            t.replace(MANAGE_MARK, &manage)
                .replace(CONFIRM_MARK, &confirm)
        };
        let (footer_text, footer_html) = match fanout.purpose {
            MailPurpose::Confirm => (
                format!(
                    "\n\n-- \nYou get this because someone asked {} to send updates to this \
                     address. If it was not you, ignore it: nothing more will come.\n",
                    self.site_name
                ),
                format!(
                    "<p style=\"color:#555;font-size:13px;margin-top:24px\">You get this because \
                     someone asked {} to send updates to this address. If it was not you, ignore \
                     it: nothing more will come.</p>",
                    escape_html(&self.site_name)
                ),
            ),
            _ => (
                format!(
                    "\n\n-- \nYou follow {} by email.\nChoose what you get: {manage}\nUnsubscribe: \
                     {unsubscribe}\n",
                    self.site_name
                ),
                format!(
                    "<p style=\"color:#555;font-size:13px;margin-top:24px\">You follow {} by \
                     email. <a href=\"{}\">Choose what you get</a> · <a href=\"{}\">Unsubscribe</a></p>",
                    escape_html(&self.site_name),
                    escape_html(&manage),
                    escape_html(&unsubscribe)
                ),
            ),
        };
        let text = format!("{}{footer_text}", fill(&fanout.text));
        let html = format!(
            "<!doctype html><html><body style=\"font-family:system-ui,-apple-system,Segoe UI,\
             Roboto,sans-serif;font-size:15px;line-height:1.5;color:#1a1a1a;max-width:600px\">\n{}{}\
             </body></html>",
            fill(&fanout.html),
            footer_html
        );
        let to = Mailbox::new(
            None,
            s.send_to
                .parse()
                .map_err(|e| format!("the address cannot be mailed: {e}"))?,
        );
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(&fanout.subject)
            .message_id(Some(fanout.message_id.clone()))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe"),
                format!("<{unsubscribe}>"),
            ))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                "List-Unsubscribe=One-Click".to_owned(),
            ))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("Auto-Submitted"),
                "auto-generated".to_owned(),
            ));
        if let Some(r) = &fanout.in_reply_to {
            builder = builder.in_reply_to(r.clone());
        }
        if let Some(r) = &fanout.references {
            builder = builder.references(r.clone());
        }
        let mut message = builder
            .multipart(
                MultiPart::alternative()
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(text),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(html),
                    ),
            )
            .map_err(|e| format!("building the message: {e}"))?;
        if let Some(dkim) = &self.dkim {
            message.sign(dkim);
        }
        Ok(message)
    }
}

/// A personal mail (the confirmation, or the manage link for one already subscribed).
pub fn personal_mail(
    purpose: MailPurpose,
    subscriber: &Subscriber,
    site_name: &str,
    domain: &str,
) -> NewMail {
    let (subject, words, link, link_text) = match purpose {
        MailPurpose::Confirm => (
            format!("Confirm your subscription to {site_name}"),
            vec![
                format!("Please confirm that you want updates from {site_name} by email."),
                format!(
                    "Nothing will be sent to you until you confirm. The link works for {} hours.",
                    CONFIRMATION_TTL.as_hours()
                ),
            ],
            CONFIRM_MARK,
            "Confirm my subscription",
        ),
        _ => (
            format!("Your subscription to {site_name}"),
            vec![
                format!(
                    "Someone asked to subscribe this address to {site_name}, and it is \
                     subscribed already."
                ),
                "To change what you get, or to unsubscribe, use the link below.".to_owned(),
            ],
            MANAGE_MARK,
            "Choose what you get",
        ),
    };
    let words = MailWords {
        subject: subject.clone(),
        paragraphs: words,
    };
    let id = format!(
        "<herald.{}.{}.{}@{domain}>",
        purpose.as_str(),
        subscriber.id,
        crate::ids::random_hex(12)
    );
    NewMail {
        purpose,
        subscriber_id: Some(subscriber.id),
        thread: None,
        components: Vec::new(),
        subject,
        text: text_section(&words, link, link_text),
        html: html_section(&words, link, link_text),
        message_id: id.clone(),
        root_id: id,
        folds: false,
    }
}

pub fn domain_of(from: Option<&str>) -> String {
    from.map_or_else(|| "localhost".to_owned(), mail_domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_failures_are_told_apart() {
        use lettre::transport::smtp::response::{Category, Code, Detail};
        let _ = Code::new(
            Severity::PermanentNegativeCompletion,
            Category::MailSystem,
            Detail::Zero,
        );
        assert_eq!(mail_domain("Status <status@example.com>"), "example.com");
        assert_eq!(mail_domain("status@example.org"), "example.org");
        assert_eq!(
            lettre_url("smtp://u:p@mail.example.com:587").unwrap(),
            "smtp://u:p@mail.example.com:587?tls=required"
        );
        assert_eq!(
            lettre_url("smtp://127.0.0.1:25?tls=none").unwrap(),
            "smtp://127.0.0.1:25"
        );
        assert_eq!(
            lettre_url("smtps://mail.example.com").unwrap(),
            "smtps://mail.example.com"
        );
        assert!(backoff(0) < backoff(3));
        assert_eq!(backoff(50), Duration::from_secs(512));
    }
}
