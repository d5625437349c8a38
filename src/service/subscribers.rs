//! Email subscribers: importing them from another status page's export and exporting them
//! (`herald subscribers import|export`).

use super::{Service, ServiceError, ServiceResult};
use crate::domain::{
    CONFIRMATION_INTERVAL, CONFIRMATION_TTL, EmailAddress, LinkKey, LinkPurpose, MailPurpose,
    NewSubscriber, Preferences, Role, Subscriber, ValidationError, parse_kinds_list,
};
use crate::store::SubscriberCounts;

/// One row of an import, as read from the file (line numbers for the errors).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportRow {
    pub line: u64,
    pub email: String,
    /// Component slugs (`;`, `,` or spaces between); empty: everything.
    pub components: String,
    /// Kinds (`maintenance`, `reminders`, `incidents`, `rollouts`); empty: all of them.
    pub kinds: String,
    /// `true`/`false` (also yes/no, 1/0); empty counts as true.
    pub confirmed: String,
}

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportReport {
    pub added: u64,
    pub updated: u64,
    pub confirmed: u64,
}

fn yes(text: &str) -> Result<bool, ValidationError> {
    match text.trim().to_lowercase().as_str() {
        "" | "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        other => Err(ValidationError::new(
            "confirmed",
            format!("{other:?} is neither true nor false"),
        )),
    }
}

impl Service {
    /// Add subscribers from an import: all of them or, when any row is wrong, none (the error
    /// names every wrong line). A row is confirmed only with `confirmed` (the operator saying
    /// these addresses confirmed elsewhere) and unless its own column says false.
    pub async fn import_subscribers(
        &self,
        rows: &[ImportRow],
        confirmed: bool,
    ) -> ServiceResult<ImportReport> {
        self.require(Role::Admin)?;
        let components = self.components().await?;
        let mut problems = Vec::new();
        let mut new = Vec::with_capacity(rows.len());
        for row in rows {
            let parsed = (|| {
                let address = EmailAddress::parse(&row.email)?;
                let mut ids = Vec::new();
                for slug in row
                    .components
                    .split(|c: char| c == ';' || c == ',' || c.is_whitespace())
                    .filter(|s| !s.is_empty())
                {
                    let c = components.iter().find(|c| c.slug == slug).ok_or_else(|| {
                        ValidationError::new(
                            "components",
                            format!("no component has the slug {slug:?}"),
                        )
                    })?;
                    if !ids.contains(&c.id) {
                        ids.push(c.id);
                    }
                }
                Ok::<_, ValidationError>(NewSubscriber {
                    address,
                    preferences: Preferences {
                        components: (!ids.is_empty()).then_some(ids),
                        kinds: parse_kinds_list(&row.kinds)?,
                    },
                    // Checked whatever the flag says: every wrong line is named.
                    confirmed: yes(&row.confirmed)? && confirmed,
                })
            })();
            match parsed {
                Ok(s) => new.push(s),
                Err(e) => problems.push(format!("line {}: {} {}", row.line, e.field, e.message)),
            }
        }
        if !problems.is_empty() {
            return Err(ValidationError::new(
                "file",
                format!("nothing was imported:\n{}", problems.join("\n")),
            )
            .into());
        }
        let audit = self.audit_entry(
            "subscribers.import",
            format!(
                "{} rows{}",
                new.len(),
                if confirmed { ", confirmed" } else { "" }
            ),
        );
        let (added, updated) = self
            .store
            .import_subscribers(&new, self.now(), &audit)
            .await?;
        crate::telemetry::log_change(&audit);
        Ok(ImportReport {
            added,
            updated,
            confirmed: new.iter().filter(|s| s.confirmed).count() as u64,
        })
    }

    /// Every subscriber, in the order they came.
    pub async fn all_subscribers(&self) -> ServiceResult<Vec<Subscriber>> {
        self.require(Role::Admin)?;
        let mut all = Vec::new();
        loop {
            let after = all.last().map_or(0, |s: &Subscriber| s.id);
            let page = self.store.list_subscribers(after, 1000).await?;
            if page.is_empty() {
                return Ok(all);
            }
            all.extend(page);
        }
    }

    pub async fn subscriber_counts(&self) -> ServiceResult<SubscriberCounts> {
        Ok(self.store.count_subscribers().await?)
    }
}

/// Who mails subscribers: the site's name and the sender's domain (for Message-IDs).
#[derive(Debug, Clone)]
pub struct MailIdentity {
    pub site_name: String,
    pub domain: String,
}

/// Forms posted to subscribe from one client address (an IPv6 /64) within the sign-in
/// throttle's window (15 minutes).
pub const SUBSCRIBE_PER_ADDRESS: i64 = 10;

impl Service {
    /// This service mails subscribers as `identity` (HERALD_SMTP_URL is set).
    pub fn with_mail(mut self, identity: MailIdentity) -> Self {
        self.mail = Some(std::sync::Arc::new(identity));
        self
    }

    /// Whether the public can subscribe (mail is set up).
    pub fn mail_enabled(&self) -> bool {
        self.mail.is_some()
    }

    /// The key that signs subscribers' links: made at the site's first start, kept in the
    /// database so every instance and every restart agrees.
    pub async fn link_key(&self) -> ServiceResult<LinkKey> {
        Ok(self
            .link_key
            .get_or_try_init(|| async {
                let fresh = crate::ids::random_hex(32);
                let hex = self.store.site_secret("subscriber_links", &fresh).await?;
                let bytes = (0..hex.len())
                    .step_by(2)
                    .filter_map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                    .collect::<Vec<u8>>();
                Ok::<_, ServiceError>(LinkKey::new(bytes))
            })
            .await?
            .clone())
    }

    /// The key of subscribers' links once [`Service::link_key`] has read it.
    pub fn link_key_now(&self) -> anyhow::Result<LinkKey> {
        self.link_key
            .get()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("the key of subscribers' links is not read yet"))
    }

    /// Someone asked for mail at `email`. The answer is the same whoever they are: a new or
    /// unconfirmed address gets a confirmation mail, a confirmed one a mail with its manage
    /// link, at most one per address every ten minutes however often the form is posted. An
    /// unconfirmed subscription takes the choices of the latest form; a confirmed one changes
    /// only through its own link. `Err(wait)` inside: this client posted too often.
    pub async fn subscribe(
        &self,
        email: &str,
        preferences: Preferences,
        client: Option<std::net::IpAddr>,
    ) -> ServiceResult<Result<(), std::time::Duration>> {
        let Some(mail) = self.mail.clone() else {
            return Err(ValidationError::new(
                "email",
                "updates by email are not available on this site",
            )
            .into());
        };
        let address = EmailAddress::parse(email)?;
        let keys = [format!(
            "subscribe address {}",
            client.map_or_else(|| "-".to_owned(), crate::domain::client_key)
        )];
        let now_ms = self.now().as_millisecond();
        let window = crate::domain::SignInRule::default().window_ms();
        let rule = |counts: &mut [crate::domain::Attempts]| {
            let c = &mut counts[0];
            if c.since_ms <= now_ms - window || c.n == 0 {
                c.n = 0;
                c.since_ms = now_ms;
            }
            if c.n >= SUBSCRIBE_PER_ADDRESS {
                return Err(std::time::Duration::from_millis(
                    (c.since_ms + window - now_ms).max(0) as u64,
                ));
            }
            c.n += 1;
            c.last_ms = now_ms;
            Ok(())
        };
        if let Err(wait) = self.store.count_attempts(&keys, now_ms, &rule).await? {
            return Ok(Err(wait));
        }
        let now = self.now();
        let subscriber = match self.store.subscriber_by_key(&address.key).await? {
            Some(s) => s,
            None => {
                let new = NewSubscriber {
                    address: address.clone(),
                    preferences: preferences.clone(),
                    confirmed: false,
                };
                match self.store.insert_subscriber(&new, now).await {
                    Ok(s) => s,
                    // Two forms at once: the other made it.
                    Err(crate::store::StoreError::Duplicate(_)) => self
                        .store
                        .subscriber_by_key(&address.key)
                        .await?
                        .ok_or(ServiceError::NotFound("subscriber"))?,
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let purpose = if subscriber.confirmed_at.is_some() {
            MailPurpose::Manage
        } else {
            if subscriber.preferences != preferences {
                self.store
                    .set_subscriber_preferences(subscriber.id, &preferences)
                    .await?;
            }
            MailPurpose::Confirm
        };
        let mail =
            crate::notify::mail::personal_mail(purpose, &subscriber, &mail.site_name, &mail.domain);
        if self
            .store
            .queue_personal_mail(&mail, now - CONFIRMATION_INTERVAL, now)
            .await?
        {
            self.wake_outbox().await;
        }
        Ok(Ok(()))
    }

    /// The subscriber a link names, when its token is right (else not found: a wrong token
    /// and a missing subscriber look alike).
    pub async fn subscription(
        &self,
        id: i64,
        token: &str,
        purpose: LinkPurpose,
    ) -> ServiceResult<Subscriber> {
        let key = self.link_key().await?;
        match self.store.subscriber(id).await? {
            Some(s) if key.verify(purpose, s.id, &s.key, token) => Ok(s),
            _ => Err(ServiceError::NotFound("subscription")),
        }
    }

    /// Follow a confirmation link: the subscription is confirmed (again is fine).
    pub async fn confirm_subscription(&self, id: i64, token: &str) -> ServiceResult<Subscriber> {
        let s = self.subscription(id, token, LinkPurpose::Confirm).await?;
        if s.confirmed_at.is_none() {
            if self.now().duration_since(s.created_at) > CONFIRMATION_TTL {
                return Err(ServiceError::NotFound("subscription"));
            }
            self.store.confirm_subscriber(s.id, self.now()).await?;
        }
        self.store
            .subscriber(id)
            .await?
            .ok_or(ServiceError::NotFound("subscription"))
    }

    /// Change what a subscriber follows, through their link.
    pub async fn update_subscription(
        &self,
        id: i64,
        token: &str,
        preferences: Preferences,
    ) -> ServiceResult<Subscriber> {
        let s = self.subscription(id, token, LinkPurpose::Manage).await?;
        if preferences.kinds.is_empty() {
            return Err(ValidationError::new(
                "kinds",
                "choose at least one kind of mail, or unsubscribe",
            )
            .into());
        }
        self.store
            .set_subscriber_preferences(s.id, &preferences)
            .await?;
        self.store
            .subscriber(id)
            .await?
            .ok_or(ServiceError::NotFound("subscription"))
    }

    /// Unsubscribe through a link (one click from a mail client, or the manage page). The
    /// address is forgotten. Unsubscribing twice is fine.
    pub async fn unsubscribe(&self, id: i64, token: &str) -> ServiceResult<()> {
        match self.subscription(id, token, LinkPurpose::Manage).await {
            Ok(s) => {
                self.store.delete_subscriber(s.id, None).await?;
                Ok(())
            }
            Err(ServiceError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// An admin removes a subscriber.
    pub async fn remove_subscriber(&self, id: i64) -> ServiceResult<()> {
        self.require(Role::Admin)?;
        let audit = self.audit_entry("subscriber.remove", format!("subscriber {id}"));
        if !self.store.delete_subscriber(id, Some(&audit)).await? {
            return Err(ServiceError::NotFound("subscriber"));
        }
        crate::telemetry::log_change(&audit);
        Ok(())
    }

    /// Subscribers whose address contains `text`, for an admin.
    pub async fn find_subscribers(&self, text: &str) -> ServiceResult<Vec<Subscriber>> {
        self.require(Role::Admin)?;
        Ok(self.store.find_subscribers(text, 50).await?)
    }

    /// How the mail queue stands, for the admin page.
    pub async fn mail_backlog(&self) -> ServiceResult<crate::store::MailBacklog> {
        Ok(self.store.mail_backlog().await?)
    }
}
