//! Who may do what: roles, users and API tokens.

use super::{ValidationError, clean_line, limits};

/// `admin` manages users, tokens, channels and components; `maintainer` runs windows;
/// `reporter` (API tokens only) reports rollout progress and nothing else, for the token placed
/// on every instance. Each may do everything the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Reporter,
    Maintainer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reporter => "reporter",
            Self::Maintainer => "maintainer",
            Self::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "reporter" => Some(Self::Reporter),
            "maintainer" => Some(Self::Maintainer),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    /// Whether this role may do what `needed` may.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

pub const PASSWORD_MIN: usize = 12;
pub const PASSWORD_MAX: usize = 1024;

/// A user name: 1 to 64 of letters, digits, `.`, `_`, `-`, `@`.
pub fn validate_user_name(name: &str) -> Result<String, ValidationError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 {
        return Err(ValidationError::new("name", "must be 1 to 64 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
    {
        return Err(ValidationError::new(
            "name",
            "may contain only letters, digits, '.', '_', '-' and '@'",
        ));
    }
    Ok(name.to_owned())
}

pub fn validate_password(password: &str) -> Result<(), ValidationError> {
    let len = password.chars().count();
    if len < PASSWORD_MIN {
        return Err(ValidationError::new(
            "password",
            format!("must be at least {PASSWORD_MIN} characters long"),
        ));
    }
    if len > PASSWORD_MAX {
        return Err(ValidationError::new(
            "password",
            format!("must be at most {PASSWORD_MAX} characters long"),
        ));
    }
    Ok(())
}

pub fn validate_token_name(name: &str) -> Result<String, ValidationError> {
    Ok(clean_line("name", name, limits::NAME_MAX, true)?.unwrap_or_default())
}

/// A stored API token (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub prefix: String,
    pub created_by: String,
    pub created_at: jiff::Timestamp,
    pub last_used_at: Option<jiff::Timestamp>,
    pub revoked_at: Option<jiff::Timestamp>,
    /// After this it is refused (`None`: it never expires).
    pub expires_at: Option<jiff::Timestamp>,
}

impl ApiToken {
    /// Revoked, or past its expiry.
    pub fn is_live(&self, now: jiff::Timestamp) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}

/// A user of the admin UI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub created_at: jiff::Timestamp,
}

/// One audit-log entry: who did what to what, when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: i64,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub created_at: jiff::Timestamp,
}

/// An audit-log entry to write with the change it records, in the same transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAudit {
    pub actor: String,
    /// What was done, `area.verb` (`window.announce`, `rollout.abort`).
    pub action: String,
    /// What it was done to (`window 3 step 2`, `rollout 4: fishjam-2`).
    pub target: Option<String>,
    pub at: jiff::Timestamp,
}

/// Who made a change, as the audit log and timelines name them, and what they may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A signed-in user of the admin pages.
    User { name: String, role: Role },
    /// An API token, by its name.
    Token { name: String, role: Role },
    /// Time-driven changes.
    Scheduler,
    /// The `herald` command line (whoever runs it holds the database).
    Cli,
    /// Herald itself (start-up, the demo).
    System,
    /// Configuration read at start (the first admin, channels, components).
    Environment,
    /// The first visitor of `/admin/setup`, holding the setup code.
    Setup,
    /// Nobody in particular: a visitor of the public pages. May change nothing.
    Anonymous,
}

impl Actor {
    /// Whether this actor may do what `needed` may. Herald's own actors may do anything; an
    /// anonymous visitor nothing.
    pub fn may(&self, needed: Role) -> bool {
        match self {
            Self::User { role, .. } | Self::Token { role, .. } => role.allows(needed),
            Self::Scheduler | Self::Cli | Self::System | Self::Environment | Self::Setup => true,
            Self::Anonymous => false,
        }
    }
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::User { name, .. } => write!(f, "user:{name}"),
            Self::Token { name, .. } => write!(f, "token:{name}"),
            Self::Scheduler => f.write_str("scheduler"),
            Self::Cli => f.write_str("cli"),
            Self::System => f.write_str("system"),
            Self::Environment => f.write_str("environment"),
            Self::Setup => f.write_str("setup"),
            Self::Anonymous => f.write_str("anonymous"),
        }
    }
}
