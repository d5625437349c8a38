//! `Idempotency-Key`: how long an answer is kept for replay, and when a claimed key whose
//! caller never answered may be claimed again. The HTTP side is `web::api::idempotency`.

use jiff::SignedDuration;
use sha2::{Digest, Sha256};

use super::{Service, ServiceResult};
use crate::store::{KeyClaim, KeyedRequest, StoredAnswer};

/// How long a key's answer is replayed (what the IETF draft and Stripe suggest).
pub const KEY_LIFETIME: SignedDuration = SignedDuration::from_hours(24);

/// A claimed key still unanswered after this belongs to a request that died with its process;
/// a retry may then run the request again. Far longer than any request takes.
const ABANDONED_AFTER: SignedDuration = SignedDuration::from_secs(120);

/// Expired keys are deleted by whichever claim comes first after this long.
const PRUNE_EVERY_SECS: i64 = 600;

impl KeyedRequest {
    /// The key `key` of the client holding `credential`, for a request of `method` to `target`
    /// (path and query) with `body`. Only hashes of the credential and request are kept.
    pub fn new(credential: &[u8], key: &str, method: &str, target: &str, body: &[u8]) -> Self {
        let fingerprint = Sha256::new()
            .chain_update(method.as_bytes())
            .chain_update(b"\n")
            .chain_update(target.as_bytes())
            .chain_update(b"\n")
            .chain_update(body)
            .finalize();
        Self {
            scope: hex(&Sha256::digest(credential)),
            key: key.to_owned(),
            fingerprint: hex(&fingerprint),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Service {
    /// Claim a request's key: it is this caller's to answer, or answered (replay it), or being
    /// answered, or used for another request.
    pub async fn claim_key(&self, request: &KeyedRequest) -> ServiceResult<KeyClaim> {
        let now = self.now();
        let claim = self
            .store
            .claim_key(request, now, now - KEY_LIFETIME, now - ABANDONED_AFTER)
            .await?;
        if claim == KeyClaim::Claimed {
            let last = self.keys_pruned.load(std::sync::atomic::Ordering::Relaxed);
            if now.as_second() - last >= PRUNE_EVERY_SECS
                && self
                    .keys_pruned
                    .compare_exchange(
                        last,
                        now.as_second(),
                        std::sync::atomic::Ordering::Relaxed,
                        std::sync::atomic::Ordering::Relaxed,
                    )
                    .is_ok()
                && let Err(e) = self.store.forget_keys(now - KEY_LIFETIME).await
            {
                tracing::warn!(error = %e, "could not delete expired idempotency keys");
            }
        }
        Ok(claim)
    }

    /// Keep the answer to a claimed key for replay.
    pub async fn answer_key(
        &self,
        request: &KeyedRequest,
        answer: &StoredAnswer,
    ) -> ServiceResult<()> {
        Ok(self.store.answer_key(request, answer).await?)
    }

    /// Give a claimed key up: its answer is not one to replay.
    pub async fn release_key(&self, request: &KeyedRequest) -> ServiceResult<()> {
        Ok(self.store.release_key(request).await?)
    }
}
