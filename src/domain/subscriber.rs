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

/// At most one confirmation mail per address this often, however often the form is posted.
pub const CONFIRMATION_INTERVAL: SignedDuration = SignedDuration::from_mins(10);
/// An unconfirmed subscription is forgotten after this long.
pub const CONFIRMATION_TTL: SignedDuration = SignedDuration::from_hours(48);

/// Whether a confirmation mail may go to an address last sent one at `last` (never: `None`).
pub fn may_send_confirmation(last: Option<Timestamp>, now: Timestamp) -> bool {
    last.is_none_or(|at| now.duration_since(at) >= CONFIRMATION_INTERVAL)
}

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

    #[test]
    fn confirmations_are_spaced() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        assert!(may_send_confirmation(None, now));
        let recent = now.checked_sub(SignedDuration::from_mins(3)).unwrap();
        assert!(!may_send_confirmation(Some(recent), now));
        let old = now.checked_sub(CONFIRMATION_INTERVAL).unwrap();
        assert!(may_send_confirmation(Some(old), now));
    }
}
