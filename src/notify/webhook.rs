//! Signed webhooks: each delivery is one JSON event POSTed to the channel's URL, signed as the
//! Standard Webhooks specification says (<https://www.standardwebhooks.com/>), so receivers
//! verify it with one of the specification's libraries:
//!
//! - `webhook-id`: the delivery's id, fixed when the change committed, the same on every
//!   retry (receivers drop duplicates by it);
//! - `webhook-timestamp`: the attempt's Unix time in seconds (receivers refuse old ones);
//! - `webhook-signature`: `v1,` and the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}` keyed
//!   with the channel's secret (`whsec_` + base64 key).
//!
//! The body: `{"type": "maintenance.started", "timestamp": "…", "data": {"maintenance": {…},
//! "update": {…}}}`, or `rollout.…` with `"rollout"`: the window or rollout as it is now, in the
//! same shape as `GET /api/v1/…` returns it, and the timeline entry the event is. 2xx is
//! delivered; 408, 429 and 5xx are retried (honouring `Retry-After`), like connection errors
//! and timeouts; any other answer fails the delivery with the status and the start of the body.

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::{About, Job, NotifySettings, Progress, SendError, Sender, Sent, read_capped};
use crate::domain::Channel;

/// The `webhook-signature` value for one message.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body.as_bytes());
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

pub struct Webhook {
    client: reqwest::Client,
    url: String,
    key: Vec<u8>,
    settings: NotifySettings,
}

impl Webhook {
    pub fn new(channel: &Channel, settings: &NotifySettings) -> Result<Self, SendError> {
        let key = channel
            .secret
            .expose()
            .strip_prefix("whsec_")
            .and_then(|k| BASE64.decode(k).ok())
            .ok_or_else(|| SendError::Permanent("the signing secret is not whsec_…".into()))?;
        settings.check_target(&channel.target)?;
        Ok(Self {
            client: settings.http_client()?,
            url: channel.target.clone(),
            key,
            settings: settings.clone(),
        })
    }

    async fn post(&self, id: &str, body: String) -> Result<(), SendError> {
        let timestamp = jiff::Timestamp::now().as_second();
        let signature = sign(&self.key, id, timestamp, &body);
        let response = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("user-agent", "Herald (signed webhook)")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                SendError::transient(format!("POST failed: {}", super::transport_error(&e)))
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let after = super::retry_after(response.headers());
        // Only the status: the receiver's body is whatever answered, not for a maintainer's
        // screen (a channel pointed at an internal service must not become a way to read it).
        let _ = read_capped(response).await;
        let reason = format!("the receiver answered {status}");
        if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
            Err(SendError::Transient { reason, after })
        } else {
            Err(SendError::Permanent(reason))
        }
    }
}

#[async_trait]
impl Sender for Webhook {
    async fn send(&self, job: &Job<'_>, _: &dyn Progress) -> Result<Sent, SendError> {
        let public_url = &self.settings.public_url;
        // What changes with time (a drain's length, staleness) is told as of the last change
        // to what is sent, not as of the delivery, which may come later (a retry, an outage
        // of the receiver): the state is loaded at delivery, so the time goes with it.
        let body = match job.about {
            About::Window { window, update } => json!({
                "type": format!("maintenance.{}", update.kind.as_str()),
                "timestamp": update.created_at,
                "data": {
                    "maintenance": crate::wire::maintenance_json(window, public_url, window.updated_at.max(update.created_at)),
                    "update": crate::wire::update_json(update),
                },
            }),
            About::Rollout {
                rollout,
                update: Some(update),
            } => json!({
                "type": format!("rollout.{}", update.kind.as_str()),
                "timestamp": update.created_at,
                "data": {
                    "rollout": crate::wire::rollout_json(rollout, public_url, rollout.updated_at.max(update.created_at)),
                    "update": crate::wire::rollout_update_json(update),
                },
            }),
            About::Rollout { update: None, .. } => {
                return Err(SendError::Permanent(
                    "a live-message refresh is Discord's; a webhook gets the events".into(),
                ));
            }
            About::Incident {
                incident,
                update,
                components,
            } => json!({
                "type": update.kind.event().as_str().replacen('_', ".", 1),
                "timestamp": update.created_at,
                "data": {
                    "incident": crate::wire::incident_json(incident, components, public_url),
                    "update": crate::wire::incident_update_json(update, components),
                },
            }),
        };
        let id = &job.delivery.idem_key;
        self.post(id, body.to_string()).await?;
        Ok(Sent {
            remote_id: Some(id.clone()),
            remote_url: None,
            thread: None,
        })
    }

    async fn correct(
        &self,
        job: &Job<'_>,
        original: &crate::domain::Delivery,
        _: &dyn Progress,
    ) -> Result<Sent, SendError> {
        let (window, update) = job.corrected()?;
        let what = match job.delivery.action {
            crate::domain::DeliveryAction::Withdraw => "update_withdrawn",
            _ => "update_edited",
        };
        let at = update.edited_at.unwrap_or(update.created_at);
        let body = json!({
            "type": format!("maintenance.{what}"),
            "timestamp": at,
            "data": {
                "maintenance": crate::wire::maintenance_json(window, &self.settings.public_url, window.updated_at.max(at)),
                "update": crate::wire::update_json(update),
                // The delivery it corrects, as the receiver got it (its webhook-id).
                "corrects": original.idem_key,
            },
        });
        let id = &job.delivery.idem_key;
        self.post(id, body.to_string()).await?;
        Ok(Sent {
            remote_id: Some(id.clone()),
            remote_url: None,
            thread: None,
        })
    }

    async fn test(&self, text: &str) -> Result<String, SendError> {
        let id = crate::ids::webhook_message_id();
        let body = json!({
            "type": "herald.test",
            "timestamp": jiff::Timestamp::now(),
            "data": { "message": text },
        });
        self.post(&id, body.to_string()).await?;
        Ok(format!("delivered as {id}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_the_specification_example() {
        // The example in the Standard Webhooks specification.
        let key = BASE64.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}
