//! Email subscribers (issue 28), the rules without I/O: what an address is (international
//! ones included), what a subscriber chose to receive, and when a confirmation may be sent
//! again. Storing, mailing and the pages build on these.

use jiff::{SignedDuration, Timestamp};

use super::ValidationError;

/// What a subscriber may choose to receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MailKind {
    /// Windows: announced, rescheduled, cancelled, started, steps, completed.
    Maintenance,
    /// Reminders before a window starts (its reminder offsets).
    Reminders,
    Incidents,
    /// Rollouts: started, failed, completed.
    Rollouts,
}

impl MailKind {
    pub const ALL: [Self; 4] = [
        Self::Maintenance,
        Self::Reminders,
        Self::Incidents,
        Self::Rollouts,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Maintenance => "maintenance",
            Self::Reminders => "reminders",
            Self::Incidents => "incidents",
            Self::Rollouts => "rollouts",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s.trim())
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Maintenance => "Maintenance",
            Self::Reminders => "Reminders before maintenance",
            Self::Incidents => "Incidents",
            Self::Rollouts => "Rollouts",
        }
    }
}

/// An email address as Herald keeps it: as the subscriber wrote it (an international domain
/// in Unicode, a UTF-8 local part), the domain as sent over SMTP (IDNA, ASCII), and the key
/// that tells two spellings of one address apart from two addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailAddress {
    /// As written, trimmed.
    pub shown: String,
    /// The local part with the domain in ASCII (punycode): what the mail is sent to.
    pub ascii_domain: String,
    /// Lowercase local part and ASCII domain: one subscription per key.
    pub key: String,
}

/// RFC 5321's limits: the whole path, the local part, one domain label.
const ADDRESS_MAX: usize = 254;
const LOCAL_MAX: usize = 64;
const LABEL_MAX: usize = 63;

impl EmailAddress {
    /// Parse what a person typed, with an error that says what is wrong with it. Quoted
    /// local parts, comments and IP-literal domains are refused: no real subscriber has one,
    /// and each is a way to smuggle something past a mail server.
    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        let bad = |why: &str| ValidationError::new("email", why);
        let shown = input.trim();
        if shown.is_empty() {
            return Err(bad("is required"));
        }
        if shown.chars().count() > ADDRESS_MAX {
            return Err(bad("is longer than an email address can be"));
        }
        let Some((local, domain)) = shown.rsplit_once('@') else {
            return Err(bad("needs an @, as in name@example.com"));
        };
        if local.is_empty() || local.len() > LOCAL_MAX {
            return Err(bad("needs a name before the @, at most 64 bytes"));
        }
        // Invisible characters (zero-width, direction overrides, soft hyphen, byte-order
        // mark) make one address look like another.
        if local.chars().any(|c| {
            matches!(c, '\u{00AD}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
        }) {
            return Err(bad("cannot contain invisible characters"));
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(bad(
                "cannot have a dot at the start or end of the name, or two in a row",
            ));
        }
        let allowed = |c: char| {
            c.is_alphanumeric()
                || "!#$%&'*+-/=?^_`{|}~.".contains(c)
                || (!c.is_ascii() && !c.is_control() && !c.is_whitespace())
        };
        if let Some(c) = local.chars().find(|c| !allowed(*c)) {
            return Err(bad(&format!("cannot contain {c:?} before the @")));
        }
        let ascii = idna::domain_to_ascii(domain)
            .map_err(|_| bad("has a domain that is not a valid name"))?;
        let labels: Vec<&str> = ascii.split('.').collect();
        if ascii.len() > 253 || local.len() + 1 + ascii.len() > ADDRESS_MAX {
            return Err(bad("is longer than an email address can be"));
        }
        if labels.len() < 2
            || labels.iter().any(|l| {
                l.is_empty()
                    || l.len() > LABEL_MAX
                    || l.starts_with('-')
                    || l.ends_with('-')
                    || !l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
            || labels
                .last()
                .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(bad(
                "has a domain that is not a valid name, as in example.com",
            ));
        }
        Ok(Self {
            shown: shown.to_owned(),
            ascii_domain: format!("{local}@{ascii}"),
            key: format!("{}@{ascii}", local.to_lowercase()),
        })
    }

    /// Whether sending to it needs the server's SMTPUTF8 (a non-ASCII local part).
    pub fn needs_smtputf8(&self) -> bool {
        !self.ascii_domain.is_ascii()
    }
}

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preferences {
    /// The components followed (by id); `None` for everything.
    pub components: Option<Vec<i64>>,
    pub kinds: Vec<MailKind>,
}

impl Default for Preferences {
    /// Everything, reminders included.
    fn default() -> Self {
        Self {
            components: None,
            kinds: MailKind::ALL.to_vec(),
        }
    }
}

impl Preferences {
    /// Whether a mail of `kind` about something affecting `affected` (component ids) goes to
    /// this subscriber: a kind they chose, and a component they follow. What names no
    /// component concerns the whole service and goes to everyone who chose its kind.
    pub fn wants(&self, kind: MailKind, affected: &[i64]) -> bool {
        self.kinds.contains(&kind)
            && match &self.components {
                None => true,
                Some(followed) => {
                    affected.is_empty() || affected.iter().any(|c| followed.contains(c))
                }
            }
    }
}

/// A subscriber as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    pub id: i64,
    /// Where mail goes: the address with its domain in ASCII (IDNA).
    pub send_to: String,
    /// As written.
    pub address: String,
    pub key: String,
    pub preferences: Preferences,
    pub confirmed_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub bounces: i64,
    pub bouncing_at: Option<Timestamp>,
}

/// A subscriber to add (or, for an address already there, its new choices).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSubscriber {
    pub address: EmailAddress,
    pub preferences: Preferences,
    /// Confirmed already (an operator's import, told so); else it waits for the confirmation.
    pub confirmed: bool,
}

/// Kinds written as a list (`maintenance;incidents`, commas or spaces also separate); empty:
/// every kind.
pub fn parse_kinds_list(text: &str) -> Result<Vec<MailKind>, ValidationError> {
    let mut kinds = Vec::new();
    for word in text
        .split(|c: char| c == ';' || c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
    {
        let kind = MailKind::parse(word).ok_or_else(|| {
            ValidationError::new(
                "kinds",
                format!(
                    "{word:?} is not one of {}",
                    MailKind::ALL.map(MailKind::as_str).join(", ")
                ),
            )
        })?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    if kinds.is_empty() {
        kinds = MailKind::ALL.to_vec();
    }
    kinds.sort();
    Ok(kinds)
}

/// What a mail is: news of one kind (to the subscribers who chose it), or a message to one
/// subscriber (the confirmation, or their manage link when they subscribe again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailPurpose {
    News(MailKind),
    Confirm,
    Manage,
}

impl MailPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::News(kind) => kind.as_str(),
            Self::Confirm => "confirm",
            Self::Manage => "manage",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "confirm" => Some(Self::Confirm),
            "manage" => Some(Self::Manage),
            other => MailKind::parse(other).map(Self::News),
        }
    }

    /// Which kind of news an announcement of `kind` is, for subscribers' choices.
    pub fn of_update(kind: super::UpdateKind) -> Self {
        use super::UpdateKind as K;
        Self::News(if kind == K::Reminder {
            MailKind::Reminders
        } else if kind.is_rollout() {
            MailKind::Rollouts
        } else if super::UpdateKind::INCIDENT.contains(&kind) {
            MailKind::Incidents
        } else {
            MailKind::Maintenance
        })
    }
}

/// Steps of a window fold: one arriving within this long of the window's last mail waits and
/// goes out with whatever else changed meanwhile.
pub const STEP_FOLD: SignedDuration = SignedDuration::from_mins(3);

/// A mail to queue: rendered once, sent to every subscriber it concerns with their own links
/// in the footer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMail {
    pub purpose: MailPurpose,
    /// The one subscriber it goes to (a confirmation); `None`: every subscriber who wants it.
    pub subscriber_id: Option<i64>,
    /// What it is about (`window:3`): mails of one thread reply to each other.
    pub thread: Option<String>,
    /// Component ids affected; empty: names none.
    pub components: Vec<i64>,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// This mail's Message-ID, and the one the thread's first mail takes (`<…@…>`).
    pub message_id: String,
    pub root_id: String,
    /// A step: waits up to [`STEP_FOLD`] after the thread's last mail, joined by what follows.
    pub folds: bool,
}

/// A queued mail, as a worker sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailFanout {
    pub id: i64,
    pub purpose: MailPurpose,
    pub subscriber_id: Option<i64>,
    pub components: Vec<i64>,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub message_id: String,
    pub in_reply_to: Option<String>,
    pub references: Option<String>,
    pub created_at: Timestamp,
}

impl MailFanout {
    /// Whether `s` gets this mail.
    pub fn goes_to(&self, s: &Subscriber) -> bool {
        match self.purpose {
            MailPurpose::News(kind) => {
                s.confirmed_at.is_some()
                    && s.bouncing_at.is_none()
                    && s.preferences.wants(kind, &self.components)
            }
            MailPurpose::Confirm | MailPurpose::Manage => self.subscriber_id == Some(s.id),
        }
    }
}

/// A run of subscribers of one fan-out that a worker holds under a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailBatch {
    pub id: i64,
    pub fanout_id: i64,
    pub last_id: i64,
    /// The last subscriber handled.
    pub cursor: i64,
    pub attempts: i64,
}

/// Permanent refusals in a row after which an address counts as bouncing and is not mailed.
pub const BOUNCE_LIMIT: i64 = 3;

/// What a subscriber's link lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkPurpose {
    /// Change what they follow, or unsubscribe (every mail carries it).
    Manage,
    /// Confirm the subscription (the confirmation mail alone carries it).
    Confirm,
}

/// The site's key for subscribers' links: a link carries an HMAC of its purpose, the
/// subscriber's id and address, so nothing stored is a credential, and a link stops working
/// when its subscriber is gone (a new subscription of the same address has a new id).
#[derive(Clone)]
pub struct LinkKey(Vec<u8>);

impl LinkKey {
    pub fn new(key: Vec<u8>) -> Self {
        Self(key)
    }

    fn mac(&self, purpose: LinkPurpose, id: i64, address_key: &str) -> hmac::Hmac<sha2::Sha256> {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.0)
            .expect("HMAC takes keys of any length");
        let purpose = match purpose {
            LinkPurpose::Manage => "manage",
            LinkPurpose::Confirm => "confirm",
        };
        mac.update(format!("{purpose}\n{id}\n{address_key}").as_bytes());
        mac
    }

    /// The token for a link: 128 bits of the MAC, base64url.
    pub fn token(&self, purpose: LinkPurpose, id: i64, address_key: &str) -> String {
        use base64::Engine as _;
        use hmac::Mac;
        let bytes = self.mac(purpose, id, address_key).finalize().into_bytes();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes[..16])
    }

    /// Whether `token` is the one for this purpose and subscriber (in constant time).
    pub fn verify(&self, purpose: LinkPurpose, id: i64, address_key: &str, token: &str) -> bool {
        use subtle::ConstantTimeEq as _;
        let expected = self.token(purpose, id, address_key);
        expected.len() == token.len() && bool::from(expected.as_bytes().ct_eq(token.as_bytes()))
    }
}

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkKey(…)")
    }
}

/// A subscriber's own pages, under the site's public URL.
pub fn manage_path(id: i64, token: &str) -> String {
    format!("/subscriptions/{id}/{token}")
}

pub fn confirm_path(id: i64, token: &str) -> String {
    format!("/subscriptions/{id}/{token}/confirm")
}

pub fn unsubscribe_path(id: i64, token: &str) -> String {
    format!("/subscriptions/{id}/{token}/unsubscribe")
}

/// At most one mail from the form per address this often, however often it is posted (the
/// store checks and marks it in one statement: `MailQueue::queue_personal_mail`).
pub const CONFIRMATION_INTERVAL: SignedDuration = SignedDuration::from_mins(10);
/// An unconfirmed subscription is forgotten this long after its last confirmation mail.
pub const CONFIRMATION_TTL: SignedDuration = SignedDuration::from_hours(48);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_and_keyed() {
        let a = EmailAddress::parse("  Ada.Lovelace+status@Example.COM ").unwrap();
        assert_eq!(a.shown, "Ada.Lovelace+status@Example.COM");
        assert_eq!(a.key, "ada.lovelace+status@example.com");
        assert!(!a.needs_smtputf8());
        // An international domain goes out in punycode; a UTF-8 name needs SMTPUTF8.
        let idn = EmailAddress::parse("jörg@bücher.example").unwrap();
        assert_eq!(idn.ascii_domain, "jörg@xn--bcher-kva.example");
        assert!(idn.needs_smtputf8());
        assert_eq!(
            EmailAddress::parse("JÖRG@BÜCHER.example").unwrap().key,
            idn.key,
            "one subscriber however it is spelt"
        );
        for (bad, why) in [
            ("", "required"),
            ("no-at-sign.example.com", "needs an @"),
            ("@example.com", "name before the @"),
            ("a..b@example.com", "two in a row"),
            ("a b@example.com", "cannot contain ' '"),
            ("a@localhost", "domain"),
            ("a@example..com", "domain"),
            ("a@-example.com", "domain"),
            ("a@1.2.3.4", "domain"),
            ("\"quoted\"@example.com", "cannot contain '\"'"),
            ("a@example.com\r\nBcc: x@evil.example", "cannot contain"),
            ("ad\u{200B}a@example.com", "invisible"),
            ("ada\u{202E}moc@example.com", "invisible"),
        ] {
            let e = EmailAddress::parse(bad).unwrap_err();
            assert_eq!(e.field, "email");
            assert!(e.message.contains(why), "{bad:?}: {}", e.message);
        }
        let long = format!("{}@example.com", "a".repeat(65));
        assert!(EmailAddress::parse(&long).is_err());
    }

    #[test]
    fn preferences_choose_kinds_and_components() {
        let everything = Preferences::default();
        assert!(everything.wants(MailKind::Incidents, &[3]));
        let api_incidents = Preferences {
            components: Some(vec![1]),
            kinds: vec![MailKind::Incidents],
        };
        assert!(api_incidents.wants(MailKind::Incidents, &[1, 2]));
        assert!(!api_incidents.wants(MailKind::Incidents, &[2]));
        assert!(
            api_incidents.wants(MailKind::Incidents, &[]),
            "the whole service"
        );
        assert!(!api_incidents.wants(MailKind::Maintenance, &[1]));
    }

    #[test]
    fn kinds_are_read_from_a_list() {
        assert_eq!(
            parse_kinds_list("incidents; maintenance,incidents").unwrap(),
            vec![MailKind::Maintenance, MailKind::Incidents]
        );
        assert_eq!(parse_kinds_list(" ").unwrap(), MailKind::ALL.to_vec());
        assert_eq!(parse_kinds_list("outages").unwrap_err().field, "kinds");
    }
}
