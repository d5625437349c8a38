//! Channels and deliveries: adding and changing where announcements go, and an admin's Retry
//! and Skip on failed deliveries. Every change wakes the outbox workers.

use jiff::{SignedDuration, Timestamp};

use super::{Service, ServiceError, ServiceResult};
use crate::domain::{
    Channel, ChannelKind, ChannelSecret, ChannelSource, Delivery, NewChannel, Role, Subject,
    ValidationError,
};
use crate::store::StoreError;

impl Service {
    /// When a delivery created at `now` is given up.
    pub(super) fn deadline_from(&self, now: Timestamp) -> Timestamp {
        SignedDuration::try_from(self.delivery_deadline)
            .ok()
            .and_then(|d| now.checked_add(d).ok())
            .unwrap_or(Timestamp::MAX)
    }

    pub async fn channels(&self) -> ServiceResult<Vec<Channel>> {
        Ok(self.store.list_channels().await?)
    }

    pub async fn channel(&self, id: i64) -> ServiceResult<Channel> {
        self.store
            .get_channel(id)
            .await?
            .ok_or(ServiceError::NotFound("channel"))
    }

    fn duplicate_name(e: StoreError, name: &str) -> ServiceError {
        match e {
            StoreError::Duplicate(_) => {
                ValidationError::new("name", format!("a channel named {name:?} exists already"))
                    .into()
            }
            e => e.into(),
        }
    }

    /// Add a channel. A signed webhook given no secret gets a new one (read it from the
    /// returned channel, once: it is shown nowhere else).
    pub async fn create_channel(&self, new: NewChannel) -> ServiceResult<Channel> {
        self.require(Role::Admin)?;
        if new.kind.is_some_and(|k| !k.is_addable()) {
            return Err(ValidationError::new(
                "kind",
                "mail to subscribers is set up by HERALD_SMTP_URL and HERALD_MAIL_FROM",
            )
            .into());
        }
        let mut new = new;
        if new.kind == Some(ChannelKind::Webhook) && new.secret.expose().trim().is_empty() {
            new.secret = ChannelSecret::new(crate::ids::webhook_secret());
        }
        let new = new.validate(false)?;
        let channel = self
            .store
            .insert_channel(&new, ChannelSource::Admin, self.now())
            .await
            .map_err(|e| Self::duplicate_name(e, &new.name))?;
        self.store
            .audit(
                &self.actor.to_string(),
                "channel.create",
                Some(&channel.name),
                self.now(),
            )
            .await?;
        self.wake_outbox().await;
        Ok(channel)
    }

    /// Change a channel; an empty secret keeps the stored one.
    pub async fn edit_channel(&self, id: i64, new: NewChannel) -> ServiceResult<Channel> {
        self.require(Role::Admin)?;
        let current = self.channel(id).await?;
        let mut new = new;
        // The kind is fixed once created: a webhook's deliveries cannot become a bot's.
        new.kind = Some(current.kind);
        if new.target.trim().is_empty()
            && current.kind == crate::domain::ChannelKind::DiscordWebhook
        {
            new.target = current.target.clone();
        }
        let new = new.validate(true)?;
        let moved = current.address_changes(&new);
        if let Some(field) = moved.first() {
            if current.source == ChannelSource::Env {
                return Err(ValidationError::new(
                    field,
                    "this channel comes from the environment: change HERALD_DISCORD_* or \
                     HERALD_BLUESKY_* and restart Herald",
                )
                .into());
            }
            // A webhook's signing secret never leaves Herald (only signatures do), so a moved
            // webhook carries nothing that was not public.
            if new.secret.expose().is_empty() && current.kind != ChannelKind::Webhook {
                return Err(ValidationError::new(
                    "secret",
                    "enter the secret again: changing where a channel sends needs it, so a \
                     stored secret never goes to an address it was not given for",
                )
                .into());
            }
        }
        let changes = current.changes(&new);
        let channel = self
            .store
            .update_channel(id, &new)
            .await
            .map_err(|e| Self::duplicate_name(e, &new.name))?;
        if !moved.is_empty() {
            // A Bluesky session belongs to the PDS and account it was made with.
            self.store.set_channel_session(id, None).await?;
        }
        let what = if changes.is_empty() {
            channel.name.clone()
        } else {
            format!("{}: {}", channel.name, changes.join(", "))
        };
        self.store
            .audit(
                &self.actor.to_string(),
                "channel.edit",
                Some(&what),
                self.now(),
            )
            .await?;
        self.wake_outbox().await;
        Ok(channel)
    }

    /// A new signing secret for a signed webhook; the old one stops working at once. Returns
    /// the channel with it (shown once).
    pub async fn rotate_webhook_secret(&self, id: i64) -> ServiceResult<Channel> {
        self.require(Role::Admin)?;
        let current = self.channel(id).await?;
        if current.kind != ChannelKind::Webhook {
            return Err(ValidationError::new(
                "secret",
                "only a signed webhook has a signing secret",
            )
            .into());
        }
        let new = NewChannel {
            name: current.name.clone(),
            kind: Some(current.kind),
            target: current.target.clone(),
            secret: ChannelSecret::new(crate::ids::webhook_secret()),
            api_url: current.api_url.clone(),
            events: current.events.clone(),
            milestones: current.milestones.clone(),
            mention_role: current.mention_role.clone(),
            langs: current.langs.clone(),
            enabled: current.enabled,
        }
        .validate(true)?;
        let channel = self.store.update_channel(id, &new).await?;
        self.store
            .audit(
                &self.actor.to_string(),
                "channel.rotate_secret",
                Some(&channel.name),
                self.now(),
            )
            .await?;
        self.wake_outbox().await;
        Ok(channel)
    }

    pub async fn delete_channel(&self, id: i64) -> ServiceResult<()> {
        self.require(Role::Admin)?;
        let channel = self.channel(id).await?;
        self.store.delete_channel(id).await?;
        self.store
            .audit(
                &self.actor.to_string(),
                "channel.delete",
                Some(&channel.name),
                self.now(),
            )
            .await?;
        self.wake_outbox().await;
        Ok(())
    }

    /// A channel from the environment: created on first start; later starts refresh its
    /// address and secret and keep what an admin chose (events, milestones, mention).
    pub async fn ensure_env_channel(&self, new: NewChannel) -> ServiceResult<Channel> {
        let new = new.validate(false)?;
        // Instances starting together on one database may all find the channel missing: the
        // one whose insert loses to another's updates the channel that one made.
        let mut attempts = 0;
        let channel = loop {
            attempts += 1;
            let existing = self
                .store
                .list_channels()
                .await?
                .into_iter()
                .find(|c| c.name == new.name);
            match existing {
                Some(c) => {
                    let merged = NewChannel {
                        events: c.events.clone(),
                        milestones: c.milestones.clone(),
                        mention_role: c.mention_role.clone(),
                        enabled: c.enabled,
                        ..new.clone()
                    };
                    break self.store.update_channel(c.id, &merged).await?;
                }
                None => match self
                    .store
                    .insert_channel(&new, ChannelSource::Env, self.now())
                    .await
                {
                    Err(StoreError::Duplicate(_)) if attempts < 3 => continue,
                    inserted => break inserted?,
                },
            }
        };
        self.wake_outbox().await;
        Ok(channel)
    }

    /// A window's or a rollout's deliveries on every channel, oldest first.
    pub async fn deliveries(&self, subject: Subject) -> ServiceResult<Vec<Delivery>> {
        Ok(self.store.list_deliveries(subject).await?)
    }

    /// Deliveries not yet confirmed (pending or failed), oldest first.
    pub async fn unsent_deliveries(&self, limit: i64) -> ServiceResult<Vec<Delivery>> {
        Ok(self.store.unsent_deliveries(limit).await?)
    }

    /// Try a failed delivery again, with a fresh deadline.
    pub async fn retry_delivery(&self, id: i64) -> ServiceResult<Delivery> {
        self.require(Role::Maintainer)?;
        let now = Timestamp::now();
        if !self
            .store
            .retry_delivery(id, now.as_millisecond(), self.deadline_from(now))
            .await?
        {
            return Err(self.not_failed(id).await);
        }
        self.store
            .audit(
                &self.actor.to_string(),
                "delivery.retry",
                Some(&id.to_string()),
                self.now(),
            )
            .await?;
        self.wake_outbox().await;
        self.delivery(id).await
    }

    /// Give up a failed or waiting delivery for good, so the window's later deliveries may go.
    pub async fn skip_delivery(&self, id: i64) -> ServiceResult<Delivery> {
        self.require(Role::Maintainer)?;
        if !self
            .store
            .skip_delivery(id, Timestamp::now().as_millisecond())
            .await?
        {
            return Err(self.not_failed(id).await);
        }
        self.store
            .audit(
                &self.actor.to_string(),
                "delivery.skip",
                Some(&id.to_string()),
                self.now(),
            )
            .await?;
        self.wake_outbox().await;
        self.delivery(id).await
    }

    /// Hold a waiting delivery (one that keeps failing for a while, or whose post should wait)
    /// until Retry or Skip; the window's later deliveries on that channel wait behind it.
    pub async fn pause_delivery(&self, id: i64) -> ServiceResult<Delivery> {
        self.require(Role::Maintainer)?;
        let reason = format!("Paused by {}: Retry sends it, Skip drops it.", self.actor);
        if !self
            .store
            .pause_delivery(id, Timestamp::now().as_millisecond(), &reason)
            .await?
        {
            return Err(self.not_failed(id).await);
        }
        self.store
            .audit(
                &self.actor.to_string(),
                "delivery.pause",
                Some(&id.to_string()),
                self.now(),
            )
            .await?;
        self.delivery(id).await
    }

    pub async fn delivery(&self, id: i64) -> ServiceResult<Delivery> {
        self.store
            .get_delivery(id)
            .await?
            .ok_or(ServiceError::NotFound("delivery"))
    }

    async fn not_failed(&self, id: i64) -> ServiceError {
        match self.delivery(id).await {
            Ok(d) => ServiceError::Domain(
                crate::domain::RuleError::new(format!(
                    "only a failed or waiting delivery can be retried, skipped or paused, and not while it is being sent; this one is {}",
                    d.state.as_str()
                ))
                .into(),
            ),
            Err(e) => e,
        }
    }
}
