//! Random identifiers and secrets, in one place: session cookies and API tokens, the
//! idempotency key each delivery carries (a Discord nonce, a Bluesky record key, a webhook
//! message id) and webhook signing secrets. All from the OS random source.

use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::domain::ChannelKind;

/// `N` random bytes.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    bytes
}

/// A random lowercase hex string of `n` characters.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n.div_ceil(2)];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    let mut s: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    s.truncate(n);
    s
}

/// The idempotency key a new delivery gets before its first attempt: a Discord nonce (at
/// most 25 characters), a Bluesky record key (a TID) or a webhook's message id.
pub fn idem_key(kind: ChannelKind) -> String {
    match kind {
        ChannelKind::DiscordWebhook | ChannelKind::DiscordBot => format!("h{}", random_hex(20)),
        ChannelKind::Bluesky => new_tid(),
        ChannelKind::Webhook => webhook_message_id(),
        ChannelKind::Email => format!("m{}", random_hex(20)),
    }
}

/// A new record key: a TID (microseconds since 1970 and a random clock id, base32-sortable),
/// strictly increasing within this process.
pub fn new_tid() -> String {
    static LAST: AtomicU64 = AtomicU64::new(0);
    const ALPHABET: &[u8; 32] = b"234567abcdefghijklmnopqrstuvwxyz";
    let now = jiff::Timestamp::now().as_microsecond().max(0) as u64;
    let micros = LAST
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
            Some(now.max(last + 1))
        })
        .map_or(now, |last| now.max(last + 1));
    let clock = u64::from(u16::from_le_bytes(random_bytes()) & 0x3ff);
    let mut v = ((micros << 10) & 0x7fff_ffff_ffff_fc00) | clock;
    let mut out = [b'2'; 13];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(v & 31) as usize];
        v >>= 5;
    }
    String::from_utf8(out.to_vec()).expect("ASCII")
}

/// A new webhook signing secret: `whsec_` and 32 random bytes in base64.
pub fn webhook_secret() -> String {
    format!("whsec_{}", BASE64.encode(random_bytes::<32>()))
}

/// A new webhook message id (the `webhook-id` of one delivery, kept across its retries).
pub fn webhook_message_id() -> String {
    format!("msg_{}", random_hex(26))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_has_the_length_asked_and_differs_each_time() {
        assert_eq!(random_hex(25).len(), 25);
        assert!(random_hex(64).bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(random_hex(32), random_hex(32));
    }

    #[test]
    fn tids_increase_and_idem_keys_fit_each_kind() {
        let (a, b) = (new_tid(), new_tid());
        assert!(a < b, "{a} {b}");
        assert_eq!(a.len(), 13);
        assert!(idem_key(ChannelKind::DiscordBot).len() <= 25);
        assert!(idem_key(ChannelKind::Webhook).starts_with("msg_"));
        assert!(webhook_secret().starts_with("whsec_"));
    }
}
