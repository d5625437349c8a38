//! Settings, layered: built-in defaults < TOML file (`--config`, default `herald.toml` if present)
//! < `HERALD_*` environment < command-line flags.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

/// Flags (and their environment variables) shared by every subcommand that needs settings.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SettingsArgs {
    /// TOML configuration file [default: herald.toml if it exists]
    #[arg(long, global = true, env = "HERALD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, global = true, env = "HERALD_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Database URL: sqlite://FILE or postgres://… [default: sqlite://data/herald.db]
    #[arg(
        long,
        global = true,
        env = "HERALD_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Base URL used in links Herald posts [default: http://LISTEN]
    #[arg(long, global = true, env = "HERALD_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// Name shown on the status page [default: Status]
    #[arg(long, global = true, env = "HERALD_SITE_NAME", value_name = "NAME")]
    pub site_name: Option<String>,
    /// One sentence about the service, for search engines and link previews
    /// [default: "Maintenance and deployment status of SITE_NAME."]
    #[arg(
        long,
        global = true,
        env = "HERALD_SITE_DESCRIPTION",
        value_name = "TEXT"
    )]
    pub site_description: Option<String>,
    /// This instance's name among several on one database: it owns the deliveries it is
    /// sending, and takes back its own after a restart [default: HOSTNAME:PORT]
    #[arg(long, global = true, env = "HERALD_INSTANCE_ID", value_name = "NAME")]
    pub instance_id: Option<String>,
    /// The Discord invite the status page's Subscribe section links to [default: none]
    #[arg(long, global = true, env = "HERALD_DISCORD_INVITE", value_name = "URL")]
    pub discord_invite: Option<String>,
    /// The Bluesky profile the Subscribe section links to [default: none]
    #[arg(
        long,
        global = true,
        env = "HERALD_BLUESKY_PROFILE",
        value_name = "URL"
    )]
    pub bluesky_profile: Option<String>,
    /// Addresses or CIDRs of reverse proxies whose forwarding header (see
    /// --trusted-proxy-header) is believed (comma-separated) [default: none]
    #[arg(
        long,
        global = true,
        env = "HERALD_TRUSTED_PROXIES",
        value_name = "CIDRS"
    )]
    pub trusted_proxies: Option<String>,
    /// The header the trusted proxies name the client in: X-Forwarded-For, Forwarded,
    /// X-Real-IP or another (read right to left; no other header is believed)
    /// [default: X-Forwarded-For]
    #[arg(
        long,
        global = true,
        env = "HERALD_TRUSTED_PROXY_HEADER",
        value_name = "HEADER"
    )]
    pub trusted_proxy_header: Option<String>,
    /// Requests a second one API token may make (a burst of twice that is allowed); 0 turns
    /// the limit off [default: 200]
    #[arg(
        long,
        global = true,
        env = "HERALD_API_RATE_LIMIT",
        value_name = "PER_SECOND"
    )]
    pub api_rate_limit: Option<u32>,
    /// Log filter, e.g. info or herald=debug [default: info]
    #[arg(long, global = true, env = "HERALD_LOG", value_name = "FILTER")]
    pub log: Option<String>,
    /// Log format: text or json [default: text]
    #[arg(long, global = true, env = "HERALD_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// How long in-flight work may take to finish after SIGTERM [default: 30s]
    #[arg(long, global = true, env = "HERALD_DRAIN_TIMEOUT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub drain_timeout: Option<Duration>,
    /// Name of the first admin, created at start when no user exists
    #[arg(long, global = true, env = "HERALD_ADMIN_USER", value_name = "NAME")]
    pub admin_user: Option<String>,
    /// Password of the first admin (environment only: flags show in process lists)
    #[arg(skip)]
    pub admin_password: Option<Secret>,
    /// How long to keep serving (with /readyz failing) after SIGTERM before closing the
    /// listener, so a load balancer notices [default: 0s]
    #[arg(long, global = true, env = "HERALD_SHUTDOWN_DELAY", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub shutdown_delay: Option<Duration>,
    /// The alert label naming the component an alert is about [default: component]
    #[arg(
        long,
        global = true,
        env = "HERALD_ALERT_COMPONENT_LABEL",
        value_name = "LABEL"
    )]
    pub alert_component_label: Option<String>,
    /// An alert group that fires again within this long after it resolved reopens its
    /// incident instead of opening another [default: 1h]
    #[arg(long, global = true, env = "HERALD_ALERT_QUIET", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub alert_quiet: Option<Duration>,
    /// Monitors whose alerts publish their incident at once, comma-separated (alertmanager,
    /// grafana, uptime-kuma); others open drafts [default: none]
    #[arg(
        long,
        global = true,
        env = "HERALD_ALERT_PUBLISH",
        value_name = "SOURCES"
    )]
    pub alert_publish: Option<String>,
    /// The address subscribers' mail comes from, as `Name <status@example.com>` or a bare
    /// address (with HERALD_SMTP_URL)
    #[arg(long, global = true, env = "HERALD_MAIL_FROM", value_name = "ADDRESS")]
    pub mail_from: Option<String>,
    /// The site's time zone (IANA name): mails give times in UTC and in it [default: UTC]
    #[arg(long, global = true, env = "HERALD_TIMEZONE", value_name = "ZONE")]
    pub timezone: Option<String>,
    /// Discord channel id the bot token posts to (with HERALD_DISCORD_BOT_TOKEN)
    #[arg(
        long,
        global = true,
        env = "HERALD_DISCORD_CHANNEL_ID",
        value_name = "ID"
    )]
    pub discord_channel_id: Option<String>,
    /// Discord API base [default: https://discord.com]
    #[arg(
        long,
        global = true,
        env = "HERALD_DISCORD_API_URL",
        value_name = "URL"
    )]
    pub discord_api_url: Option<String>,
    /// Bluesky handle or DID to post as (with HERALD_BLUESKY_APP_PASSWORD)
    #[arg(
        long,
        global = true,
        env = "HERALD_BLUESKY_IDENTIFIER",
        value_name = "HANDLE"
    )]
    pub bluesky_identifier: Option<String>,
    /// Bluesky PDS [default: https://bsky.social]
    #[arg(
        long,
        global = true,
        env = "HERALD_BLUESKY_PDS_URL",
        value_name = "URL"
    )]
    pub bluesky_pds_url: Option<String>,
    /// Languages of Bluesky posts, comma-separated [default: en]
    #[arg(
        long,
        global = true,
        env = "HERALD_BLUESKY_LANGS",
        value_name = "LANGS"
    )]
    pub bluesky_langs: Option<String>,
    /// How long Herald keeps trying to deliver an announcement before marking it failed
    /// [default: 24h]
    #[arg(long, global = true, env = "HERALD_DELIVERY_DEADLINE", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub delivery_deadline: Option<Duration>,
    /// How long one request to Discord or Bluesky may take before it counts as failed
    /// [default: 10s]
    #[arg(long, global = true, env = "HERALD_DELIVERY_TIMEOUT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub delivery_timeout: Option<Duration>,
    /// Discord edits a live rollout message at most this often for drain counts and other
    /// non-milestone moves [default: 10s]
    #[arg(long, global = true, env = "HERALD_ROLLOUT_EDIT_INTERVAL", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub rollout_edit_interval: Option<Duration>,
    /// Let channels reach loopback, private and link-local addresses, and plain http (a
    /// receiver on your own network) [default: false]
    #[arg(long, global = true, env = "HERALD_ALLOW_PRIVATE_TARGETS", value_parser = clap::builder::BoolishValueParser::new(), value_name = "BOOL")]
    pub allow_private_targets: Option<bool>,
}

/// Announcement channels from the environment and delivery settings. Secrets come from the
/// environment only (HERALD_DISCORD_WEBHOOK_URL, HERALD_DISCORD_BOT_TOKEN,
/// HERALD_BLUESKY_APP_PASSWORD): flags show in process lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceSettings {
    pub discord_webhook_url: Option<Secret>,
    pub discord_bot_token: Option<Secret>,
    pub discord_channel_id: Option<String>,
    pub discord_api_url: Option<String>,
    pub bluesky_identifier: Option<String>,
    pub bluesky_app_password: Option<Secret>,
    pub bluesky_pds_url: String,
    pub bluesky_langs: Vec<String>,
    pub delivery_deadline: Duration,
    pub delivery_timeout: Duration,
    pub rollout_edit_interval: Duration,
    /// Channels may reach private addresses and plain http (HERALD_ALLOW_PRIVATE_TARGETS).
    pub allow_private_targets: bool,
}

pub const DEFAULT_BLUESKY_PDS_URL: &str = "https://bsky.social";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The TOML file: every key optional, unknown keys refused so typos do not pass silently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<SocketAddr>,
    database_url: Option<String>,
    public_url: Option<String>,
    site_name: Option<String>,
    site_description: Option<String>,
    instance_id: Option<String>,
    discord_invite: Option<String>,
    bluesky_profile: Option<String>,
    trusted_proxies: Option<String>,
    trusted_proxy_header: Option<String>,
    api_rate_limit: Option<u32>,
    log: Option<String>,
    log_format: Option<LogFormat>,
    #[serde(default, with = "opt_duration")]
    drain_timeout: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    shutdown_delay: Option<Duration>,
    alert_component_label: Option<String>,
    #[serde(default, with = "opt_duration")]
    alert_quiet: Option<Duration>,
    alert_publish: Option<String>,
    mail_from: Option<String>,
    timezone: Option<String>,
    #[serde(default)]
    components: Vec<ComponentSetting>,
    discord_channel_id: Option<String>,
    discord_api_url: Option<String>,
    bluesky_identifier: Option<String>,
    bluesky_pds_url: Option<String>,
    bluesky_langs: Option<String>,
    #[serde(default, with = "opt_duration")]
    delivery_deadline: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    delivery_timeout: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    rollout_edit_interval: Option<Duration>,
    allow_private_targets: Option<bool>,
}

mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        humantime::parse_duration(&text)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration: {e}")))
    }
}

/// A component declared in the configuration file; created at start if its slug is new.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ComponentSetting {
    pub slug: String,
    pub name: String,
    pub description: Option<String>,
    pub group: Option<String>,
}

/// A value that must never be printed: Debug and Display show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A database URL, printed with its password masked.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(Secret);

impl DatabaseUrl {
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(self.expose()))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redact_url(self.expose()))
    }
}

/// `scheme://user:password@host/…` → `scheme://user:***@host/…`; anything else unchanged.
pub fn redact_url(url: &str) -> String {
    // A password may also ride in the query (`?password=`, libpq's `sslpassword=`).
    let (url, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let query = query.map(|q| {
        let params: Vec<String> = q
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.to_ascii_lowercase().contains("password") => format!("{k}=***"),
                _ => p.to_owned(),
            })
            .collect();
        format!("?{}", params.join("&"))
    });
    let query = query.unwrap_or_default();
    let Some((scheme, rest)) = url.split_once("://") else {
        return format!("{url}{query}");
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{path}{query}")
            } else {
                format!("{url}{query}")
            }
        }
        None => format!("{url}{query}"),
    }
}

/// The effective settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub database_url: DatabaseUrl,
    pub public_url: String,
    pub site_name: String,
    /// `None`: "Maintenance and deployment status of SITE_NAME."
    pub site_description: Option<String>,
    /// This instance's name among those sharing the database (see [`default_instance_id`]).
    pub instance_id: String,
    /// Where the Subscribe section sends people who follow on Discord and Bluesky.
    pub discord_invite: Option<String>,
    pub bluesky_profile: Option<String>,
    pub log: String,
    pub log_format: LogFormat,
    pub drain_timeout: Duration,
    pub shutdown_delay: Duration,
    pub components: Vec<ComponentSetting>,
    /// Reverse proxies whose forwarding headers name the client.
    pub trusted_proxies: Vec<Cidr>,
    /// The one header they name it in (lowercase), e.g. `x-forwarded-for`.
    pub trusted_proxy_header: axum::http::HeaderName,
    /// Requests a second per API token (0: no limit).
    pub api_rate_limit: u32,
    /// The first admin, created at start if no user exists.
    pub admin: Option<(String, Secret)>,
    /// The bearer token `/metrics` asks of a scraper not on this machine
    /// (`HERALD_METRICS_TOKEN`, environment only).
    pub metrics_token: Option<Secret>,
    /// The file the settings came from, if any.
    pub config_file: Option<PathBuf>,
    pub announce: AnnounceSettings,
    pub alerts: AlertSettings,
    pub mail: MailSettings,
}

/// How monitors' alerts become incidents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertSettings {
    /// The label naming the component (its slug) an alert is about.
    pub component_label: String,
    /// A group firing again within this long after resolving reopens its incident.
    pub quiet: Duration,
    /// Sources whose incidents are published at once (others open drafts).
    pub publish: Vec<String>,
}

/// Mail to subscribers. Without an SMTP server nobody can subscribe (the form says so).
#[derive(Debug, Clone)]
pub struct MailSettings {
    /// `smtp://user:pass@host:587` (STARTTLS), `smtps://host:465` (TLS), or
    /// `smtp://host:25?tls=none` for a relay on the same machine (HERALD_SMTP_URL).
    pub smtp_url: Option<Secret>,
    /// The password, when not in the URL (HERALD_SMTP_PASSWORD).
    pub smtp_password: Option<Secret>,
    pub from: Option<String>,
    /// Mails give times in UTC and in this zone.
    pub timezone: jiff::tz::TimeZone,
    /// The zone's name as configured.
    pub timezone_name: String,
    /// DKIM: the selector (HERALD_DKIM_SELECTOR) and the private key (HERALD_DKIM_KEY: the
    /// key itself or a path to a file holding it): RSA as PKCS#1 PEM, or Ed25519 as base64.
    pub dkim: Option<(String, Secret)>,
}

impl MailSettings {
    fn load(args: &SettingsArgs, file: &FileSettings) -> anyhow::Result<Self> {
        let from = args
            .mail_from
            .clone()
            .or_else(|| file.mail_from.clone())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty());
        let timezone_name = args
            .timezone
            .clone()
            .or_else(|| file.timezone.clone())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "UTC".to_owned());
        let timezone = jiff::tz::TimeZone::get(&timezone_name).map_err(|e| {
            anyhow::anyhow!("HERALD_TIMEZONE {timezone_name:?} is not a time zone: {e}")
        })?;
        let smtp_url = env_secret("HERALD_SMTP_URL");
        if let Some(url) = &smtp_url {
            let scheme = url.expose().split("://").next().unwrap_or_default();
            if !matches!(scheme, "smtp" | "smtps") {
                bail!("HERALD_SMTP_URL must be an smtp:// or smtps:// URL");
            }
            if from.is_none() {
                bail!("HERALD_SMTP_URL is set but HERALD_MAIL_FROM is not");
            }
        }
        let dkim = match (
            env_secret("HERALD_DKIM_SELECTOR"),
            env_secret("HERALD_DKIM_KEY"),
        ) {
            (Some(selector), Some(key)) => {
                let pem = if !std::path::Path::new(key.expose()).is_file() {
                    key
                } else {
                    Secret::new(std::fs::read_to_string(key.expose()).map_err(|e| {
                        anyhow::anyhow!("HERALD_DKIM_KEY: reading {}: {e}", key.expose())
                    })?)
                };
                Some((selector.expose().to_owned(), pem))
            }
            (None, None) => None,
            _ => bail!("HERALD_DKIM_SELECTOR and HERALD_DKIM_KEY go together"),
        };
        Ok(Self {
            smtp_url,
            smtp_password: env_secret("HERALD_SMTP_PASSWORD"),
            from,
            timezone,
            timezone_name,
            dkim,
        })
    }
}

/// The monitors Herald takes alerts from, as `/api/v1/alerts/{source}` names them.
pub const ALERT_SOURCES: [&str; 3] = ["alertmanager", "grafana", "uptime-kuma"];

/// An address or a network (`10.0.0.0/8`, `::1`, `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(ipnet::IpNet);

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(addr) = s.parse::<std::net::IpAddr>() {
            return Ok(Self(addr.into()));
        }
        s.parse::<ipnet::IpNet>()
            .map(Self)
            .map_err(|_| format!("{s:?} is not an address or CIDR (the prefix: 0 to 32, or 128)"))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A single address as itself, a network with its prefix.
        if self.0.prefix_len() == self.0.max_prefix_len() {
            write!(f, "{}", self.0.addr())
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl Cidr {
    /// Whether `ip` is in the network; an IPv4-mapped IPv6 address counts as its IPv4 one.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
            v4 => v4,
        };
        self.0.contains(&ip)
    }
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/herald.db";

impl Settings {
    /// Layer defaults, the file, the environment and flags (clap already merged the last two).
    pub fn load(args: &SettingsArgs) -> anyhow::Result<Self> {
        let (file, config_file) = match &args.config {
            Some(path) => (read_file(path)?, Some(path.clone())),
            None if Path::new("herald.toml").exists() => {
                let path = PathBuf::from("herald.toml");
                (read_file(&path)?, Some(path))
            }
            None => (FileSettings::default(), None),
        };
        let announce = AnnounceSettings::load(args, &file)?;
        let mail = MailSettings::load(args, &file)?;
        let listen = args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default address"));
        let database_url = args
            .database_url
            .clone()
            .or(file.database_url)
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            bail!(
                "database_url must start with sqlite: or postgres://, got {}",
                redact_url(&database_url)
            );
        }
        let public_url = args
            .public_url
            .clone()
            .or(file.public_url)
            .unwrap_or_else(|| format!("http://{listen}"));
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            bail!("public_url must be an http:// or https:// URL, got {public_url:?}");
        }
        Ok(Self {
            listen,
            database_url: DatabaseUrl(Secret::new(database_url)),
            public_url: public_url.trim_end_matches('/').to_owned(),
            site_description: args
                .site_description
                .clone()
                .or(file.site_description)
                .map(|d| d.trim().to_owned())
                .filter(|d| !d.is_empty()),
            instance_id: match args.instance_id.clone().or(file.instance_id) {
                Some(id) if id.trim().is_empty() || id.trim().len() > 200 => {
                    bail!("instance_id must be 1 to 200 characters, got {id:?}")
                }
                Some(id) => id.trim().to_owned(),
                None => default_instance_id(listen),
            },
            discord_invite: link_setting(
                "HERALD_DISCORD_INVITE",
                args.discord_invite.clone().or(file.discord_invite),
            )?,
            bluesky_profile: link_setting(
                "HERALD_BLUESKY_PROFILE",
                args.bluesky_profile.clone().or(file.bluesky_profile),
            )?,
            site_name: args
                .site_name
                .clone()
                .or(file.site_name)
                .unwrap_or_else(|| "Status".to_owned()),
            log: args
                .log
                .clone()
                .or(file.log)
                .unwrap_or_else(|| "info".to_owned()),
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            drain_timeout: args
                .drain_timeout
                .or(file.drain_timeout)
                .unwrap_or(Duration::from_secs(30)),
            shutdown_delay: args
                .shutdown_delay
                .or(file.shutdown_delay)
                .unwrap_or(Duration::ZERO),
            alerts: AlertSettings {
                component_label: args
                    .alert_component_label
                    .clone()
                    .or(file.alert_component_label.clone())
                    .map(|l| l.trim().to_owned())
                    .filter(|l| !l.is_empty())
                    .unwrap_or_else(|| "component".to_owned()),
                quiet: args
                    .alert_quiet
                    .or(file.alert_quiet)
                    .unwrap_or(Duration::from_secs(3600)),
                publish: {
                    let list = args
                        .alert_publish
                        .clone()
                        .or(file.alert_publish.clone())
                        .unwrap_or_default();
                    let sources: Vec<String> = list
                        .split(',')
                        .map(|s| s.trim().to_lowercase())
                        .filter(|s| !s.is_empty())
                        .collect();
                    if let Some(bad) = sources
                        .iter()
                        .find(|s| !ALERT_SOURCES.contains(&s.as_str()))
                    {
                        anyhow::bail!(
                            "HERALD_ALERT_PUBLISH: {bad:?} is not a monitor Herald takes alerts \
                             from ({})",
                            ALERT_SOURCES.join(", ")
                        );
                    }
                    sources
                },
            },
            components: file.components.clone(),
            trusted_proxies: match args
                .trusted_proxies
                .clone()
                .or(file.trusted_proxies.clone())
            {
                None => Vec::new(),
                Some(list) => list
                    .split(',')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(|c| {
                        c.parse::<Cidr>()
                            .map_err(|e| anyhow::anyhow!("HERALD_TRUSTED_PROXIES: {e}"))
                    })
                    .collect::<anyhow::Result<_>>()?,
            },
            api_rate_limit: args.api_rate_limit.or(file.api_rate_limit).unwrap_or(200),
            trusted_proxy_header: {
                let name = args
                    .trusted_proxy_header
                    .clone()
                    .or(file.trusted_proxy_header.clone())
                    .unwrap_or_else(|| "X-Forwarded-For".to_owned());
                axum::http::HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
                    anyhow::anyhow!("HERALD_TRUSTED_PROXY_HEADER: {name:?} is not a header name")
                })?
            },
            admin: match (
                args.admin_user.clone(),
                args.admin_password
                    .clone()
                    .or_else(|| std::env::var("HERALD_ADMIN_PASSWORD").ok().map(Secret::new)),
            ) {
                (Some(user), Some(password)) => Some((user, password)),
                (None, None) => None,
                (Some(_), None) => {
                    bail!("HERALD_ADMIN_USER is set but HERALD_ADMIN_PASSWORD is not")
                }
                (None, Some(_)) => {
                    bail!("HERALD_ADMIN_PASSWORD is set but HERALD_ADMIN_USER is not")
                }
            },
            metrics_token: std::env::var("HERALD_METRICS_TOKEN")
                .ok()
                .filter(|t| !t.is_empty())
                .map(Secret::new),
            announce,
            mail,
            config_file,
        })
    }

    /// The effective settings as a configuration file `--config` accepts (`herald config
    /// show`): every key the file may hold, with the value in effect. Secrets, which come
    /// only from the environment, are named in comments and never printed; a database
    /// password is masked.
    pub fn to_toml(&self) -> String {
        use toml::Value;
        let text = |s: &str| Value::String(s.to_owned());
        let duration = |d: Duration| Value::String(humantime::format_duration(d).to_string());
        let mut t = toml::Table::new();
        t.insert("listen".into(), text(&self.listen.to_string()));
        t.insert("database_url".into(), text(&self.database_url.to_string()));
        t.insert("public_url".into(), text(&self.public_url));
        t.insert("site_name".into(), text(&self.site_name));
        if let Some(d) = &self.site_description {
            t.insert("site_description".into(), text(d));
        }
        t.insert("instance_id".into(), text(&self.instance_id));
        if let Some(v) = &self.discord_invite {
            t.insert("discord_invite".into(), text(v));
        }
        if let Some(v) = &self.bluesky_profile {
            t.insert("bluesky_profile".into(), text(v));
        }
        let proxies: Vec<String> = self.trusted_proxies.iter().map(Cidr::to_string).collect();
        t.insert("trusted_proxies".into(), text(&proxies.join(", ")));
        t.insert(
            "trusted_proxy_header".into(),
            text(self.trusted_proxy_header.as_str()),
        );
        t.insert(
            "api_rate_limit".into(),
            Value::Integer(i64::from(self.api_rate_limit)),
        );
        t.insert("log".into(), text(&self.log));
        t.insert(
            "log_format".into(),
            text(match self.log_format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            }),
        );
        t.insert("drain_timeout".into(), duration(self.drain_timeout));
        t.insert("shutdown_delay".into(), duration(self.shutdown_delay));
        t.insert(
            "alert_component_label".into(),
            text(&self.alerts.component_label),
        );
        t.insert("alert_quiet".into(), duration(self.alerts.quiet));
        t.insert(
            "alert_publish".into(),
            text(&self.alerts.publish.join(", ")),
        );
        if let Some(v) = &self.mail.from {
            t.insert("mail_from".into(), text(v));
        }
        t.insert("timezone".into(), text(&self.mail.timezone_name));
        let a = &self.announce;
        if let Some(v) = &a.discord_channel_id {
            t.insert("discord_channel_id".into(), text(v));
        }
        if let Some(v) = &a.discord_api_url {
            t.insert("discord_api_url".into(), text(v));
        }
        if let Some(v) = &a.bluesky_identifier {
            t.insert("bluesky_identifier".into(), text(v));
        }
        t.insert("bluesky_pds_url".into(), text(&a.bluesky_pds_url));
        t.insert("bluesky_langs".into(), text(&a.bluesky_langs.join(", ")));
        t.insert("delivery_deadline".into(), duration(a.delivery_deadline));
        t.insert("delivery_timeout".into(), duration(a.delivery_timeout));
        t.insert(
            "rollout_edit_interval".into(),
            duration(a.rollout_edit_interval),
        );
        t.insert(
            "allow_private_targets".into(),
            Value::Boolean(a.allow_private_targets),
        );
        let components: Vec<Value> = self
            .components
            .iter()
            .map(|c| {
                let mut table = toml::Table::new();
                table.insert("slug".into(), text(&c.slug));
                table.insert("name".into(), text(&c.name));
                if let Some(d) = &c.description {
                    table.insert("description".into(), text(d));
                }
                if let Some(g) = &c.group {
                    table.insert("group".into(), text(g));
                }
                Value::Table(table)
            })
            .collect();
        if !components.is_empty() {
            t.insert("components".into(), Value::Array(components));
        }
        let mut out = String::from(
            "# The settings in effect (defaults, the file, the environment and flags), as a file\n\
             # that --config accepts. Secrets come only from the environment and are not shown.\n",
        );
        for (set, name) in [
            (
                a.discord_webhook_url.is_some(),
                "HERALD_DISCORD_WEBHOOK_URL",
            ),
            (a.discord_bot_token.is_some(), "HERALD_DISCORD_BOT_TOKEN"),
            (
                a.bluesky_app_password.is_some(),
                "HERALD_BLUESKY_APP_PASSWORD",
            ),
            (
                self.admin.is_some(),
                "HERALD_ADMIN_USER / HERALD_ADMIN_PASSWORD",
            ),
            (self.metrics_token.is_some(), "HERALD_METRICS_TOKEN"),
        ] {
            if set {
                out.push_str(&format!("# {name} is set (***)\n"));
            }
        }
        out.push('\n');
        out.push_str(&toml::to_string(&t).expect("a TOML table serialises"));
        out
    }

    /// Settings for tests and tools: defaults with the given database.
    pub fn for_database(database_url: &str) -> Self {
        let args = SettingsArgs {
            database_url: Some(database_url.to_owned()),
            config: Some(PathBuf::from("/dev/null")),
            ..SettingsArgs::default()
        };
        Self::load(&args).expect("default settings are valid")
    }
}

/// The host's name and the port Herald listens on: unique for each instance, and the same for
/// one that restarts, so it takes back the deliveries it held when it stopped.
fn default_instance_id(listen: SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "herald".to_owned());
    format!("{host}:{}", listen.port())
}

/// An optional link to show people: empty is none, anything else must be http(s).
fn link_setting(name: &str, value: Option<String>) -> anyhow::Result<Option<String>> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(url) if url.starts_with("https://") || url.starts_with("http://") => {
            Ok(Some(url.to_owned()))
        }
        Some(url) => bail!("{name} must be an http:// or https:// URL, got {url:?}"),
    }
}

fn env_secret(name: &str) -> Option<Secret> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| Secret::new(v.trim()))
}

impl AnnounceSettings {
    fn load(args: &SettingsArgs, file: &FileSettings) -> anyhow::Result<Self> {
        let pick = |arg: &Option<String>, file: &Option<String>| {
            arg.clone()
                .or_else(|| file.clone())
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let this = Self {
            discord_webhook_url: env_secret("HERALD_DISCORD_WEBHOOK_URL"),
            discord_bot_token: env_secret("HERALD_DISCORD_BOT_TOKEN"),
            discord_channel_id: pick(&args.discord_channel_id, &file.discord_channel_id),
            discord_api_url: pick(&args.discord_api_url, &file.discord_api_url),
            bluesky_identifier: pick(&args.bluesky_identifier, &file.bluesky_identifier),
            bluesky_app_password: env_secret("HERALD_BLUESKY_APP_PASSWORD"),
            bluesky_pds_url: pick(&args.bluesky_pds_url, &file.bluesky_pds_url)
                .unwrap_or_else(|| DEFAULT_BLUESKY_PDS_URL.to_owned()),
            bluesky_langs: pick(&args.bluesky_langs, &file.bluesky_langs)
                .unwrap_or_else(|| "en".to_owned())
                .split(',')
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty())
                .collect(),
            delivery_deadline: args
                .delivery_deadline
                .or(file.delivery_deadline)
                .unwrap_or(Duration::from_secs(24 * 3600)),
            delivery_timeout: args
                .delivery_timeout
                .or(file.delivery_timeout)
                .unwrap_or(Duration::from_secs(10)),
            rollout_edit_interval: args
                .rollout_edit_interval
                .or(file.rollout_edit_interval)
                .unwrap_or(Duration::from_secs(10)),
            allow_private_targets: args
                .allow_private_targets
                .or(file.allow_private_targets)
                .unwrap_or(false),
        };
        match (&this.discord_bot_token, &this.discord_channel_id) {
            (Some(_), None) => {
                bail!("HERALD_DISCORD_BOT_TOKEN is set but HERALD_DISCORD_CHANNEL_ID is not")
            }
            (None, Some(_)) => {
                bail!("HERALD_DISCORD_CHANNEL_ID is set but HERALD_DISCORD_BOT_TOKEN is not")
            }
            _ => {}
        }
        match (&this.bluesky_identifier, &this.bluesky_app_password) {
            (Some(_), None) => {
                bail!("HERALD_BLUESKY_IDENTIFIER is set but HERALD_BLUESKY_APP_PASSWORD is not")
            }
            (None, Some(_)) => {
                bail!("HERALD_BLUESKY_APP_PASSWORD is set but HERALD_BLUESKY_IDENTIFIER is not")
            }
            _ => {}
        }
        Ok(this)
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileSettings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid configuration file {}", path.display()))
}

/// A commented configuration showing every key with its default.
pub const EXAMPLE: &str = r#"# Herald configuration. Every key is optional; the values shown are the defaults.
# Each key can also be set by an environment variable (shown after it), which wins over this file,
# and by a command-line flag of the same name, which wins over both.

# Address the HTTP server listens on.                          HERALD_LISTEN
listen = "127.0.0.1:8080"

# Where data lives: sqlite://FILE (created with its folder on first run)
# or postgres://user:password@host/db for several instances.  HERALD_DATABASE_URL
database_url = "sqlite://data/herald.db"

# Base URL of the public status page, used in links Herald posts. HERALD_PUBLIC_URL
# Defaults to http://<listen>.
# public_url = "https://status.example.com"

# Name shown at the top of the status page.                    HERALD_SITE_NAME
site_name = "Status"
# Reverse proxies whose forwarding header is believed, as addresses or CIDRs; from anyone
# else it is ignored.                                          HERALD_TRUSTED_PROXIES
# trusted_proxies = "127.0.0.1, 10.0.0.0/8"
# The one header they name the client in, read right to left (nginx and Traefik append to
# X-Forwarded-For; a client's own Forwarded or X-Real-IP is then not believed).
#                                                              HERALD_TRUSTED_PROXY_HEADER
trusted_proxy_header = "X-Forwarded-For"
# Requests a second one API token may make, with bursts of twice that (a 200-target rollout
# reporting every 2 s through one token makes 100); 0 turns it off.  HERALD_API_RATE_LIMIT
api_rate_limit = 200
# One sentence for search engines and link previews (Discord, Slack, Mastodon unfurls).
# site_description = "Maintenance and deployment status of Example."     HERALD_SITE_DESCRIPTION
# This instance's name among several sharing one PostgreSQL database; it must differ between
# instances and stay the same when one restarts. Defaults to HOSTNAME:PORT. HERALD_INSTANCE_ID
# instance_id = "herald-1"
# Where the status page's Subscribe section sends people.  HERALD_DISCORD_INVITE, HERALD_BLUESKY_PROFILE
# discord_invite = "https://discord.gg/example"
# bluesky_profile = "https://bsky.app/profile/status.example.com"

# Log filter (tracing EnvFilter syntax) and format (text or json). HERALD_LOG, HERALD_LOG_FORMAT
log = "info"
log_format = "text"

# /metrics answers scrapers on this machine (a loopback connection without forwarding
# headers); from elsewhere it asks for the bearer token in HERALD_METRICS_TOKEN (environment
# only), and without one it is not readable from elsewhere at all.

# After SIGTERM: keep serving this long with /readyz answering 503 so a load balancer stops
# sending traffic, then stop accepting and let in-flight work finish within drain_timeout.
# A second signal or the timeout forces the exit.  HERALD_SHUTDOWN_DELAY, HERALD_DRAIN_TIMEOUT
shutdown_delay = "0s"
drain_timeout = "30s"

# Incidents from monitors (POST /api/v1/alerts/alertmanager, /grafana, /uptime-kuma with a
# reporter token). The label naming the component an alert is about (Uptime Kuma: the
# monitor's name); a group that fires again within alert_quiet of resolving reopens its
# incident; the monitors whose incidents are published at once (others open drafts that a
# maintainer publishes).  HERALD_ALERT_COMPONENT_LABEL, HERALD_ALERT_QUIET, HERALD_ALERT_PUBLISH
alert_component_label = "component"
alert_quiet = "1h"
alert_publish = ""

# Mail to subscribers (the form on the public pages). The SMTP server comes from the
# environment only, as it may carry a password: HERALD_SMTP_URL (smtp://user:pass@host:587 with
# STARTTLS, smtps://host:465, smtp://localhost:25?tls=none for a local relay), HERALD_SMTP_PASSWORD
# when not in the URL, and for DKIM signing HERALD_DKIM_SELECTOR + HERALD_DKIM_KEY (RSA as
# PKCS#1 PEM or Ed25519 as base64, or a path to a file holding it). Mails give times in UTC and
# in the site's time zone.
# mail_from = "Example status <status@example.com>"      HERALD_MAIL_FROM
timezone = "UTC"                                      # HERALD_TIMEZONE

# Announcements. Channels are added in the admin UI (Channels) or from the environment:
#   HERALD_DISCORD_WEBHOOK_URL                          a Discord webhook
#   HERALD_DISCORD_BOT_TOKEN + HERALD_DISCORD_CHANNEL_ID  a Discord bot posting to a channel
#   HERALD_BLUESKY_IDENTIFIER + HERALD_BLUESKY_APP_PASSWORD  a Bluesky account
# Secrets (webhook URL, bot token, app password) are read from the environment only.
# discord_channel_id = "123456789012345678"             HERALD_DISCORD_CHANNEL_ID
# discord_api_url = "https://discord.com"               HERALD_DISCORD_API_URL
# bluesky_identifier = "status.example.com"             HERALD_BLUESKY_IDENTIFIER
bluesky_pds_url = "https://bsky.social"               # HERALD_BLUESKY_PDS_URL
bluesky_langs = "en"                                  # HERALD_BLUESKY_LANGS
# How long Herald keeps retrying a delivery before marking it failed. HERALD_DELIVERY_DEADLINE
delivery_deadline = "24h"
# How long one request to Discord or Bluesky may take.         HERALD_DELIVERY_TIMEOUT
delivery_timeout = "10s"
# Discord redraws a live rollout message at most this often for drain counts and other moves
# that are not milestones (a large rollout stays within Discord's rate limits).
rollout_edit_interval = "10s"                         # HERALD_ROLLOUT_EDIT_INTERVAL
# Channels reach only public addresses over https: a webhook, Discord API base or PDS that is
# (or resolves to) loopback, a private, link-local or unique-local address is refused, as is
# http://. Allow them for a receiver on your own network.  HERALD_ALLOW_PRIVATE_TARGETS
allow_private_targets = false

# Components of your service, created at start if their slug is new.
# [[components]]
# slug = "api"
# name = "API"
# description = "The public REST API"
# group = "Backend"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_in_urls() {
        assert_eq!(
            redact_url("postgres://herald:s3cret@db:5432/herald"),
            "postgres://herald:***@db:5432/herald"
        );
        assert_eq!(redact_url("postgres://db/herald"), "postgres://db/herald");
        assert_eq!(
            redact_url("postgres://db/herald?user=h&password=s3cret&sslmode=require"),
            "postgres://db/herald?user=h&password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://u:pw@db/h?sslpassword=x"),
            "postgres://u:***@db/h?sslpassword=***"
        );
        assert_eq!(
            redact_url("sqlite://data/herald.db"),
            "sqlite://data/herald.db"
        );
        let url = DatabaseUrl(Secret::new("postgres://u:pw@h/d"));
        assert!(!format!("{url:?} {url}").contains("pw"));
        assert_eq!(format!("{:?}", Secret::new("token")), "***");
    }

    #[test]
    fn example_configuration_parses() {
        let parsed: FileSettings = toml::from_str(EXAMPLE).unwrap();
        assert_eq!(parsed.listen, Some(DEFAULT_LISTEN.parse().unwrap()));
        assert_eq!(parsed.drain_timeout, Some(Duration::from_secs(30)));
    }

    #[test]
    fn layers_file_below_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\nsite_name = \"DecAPI\"\ndrain_timeout = \"5s\"\n\
             [[components]]\nslug = \"api\"\nname = \"API\"\n",
        )
        .unwrap();
        let args = SettingsArgs {
            config: Some(path),
            site_name: Some("From flag".into()),
            ..Default::default()
        };
        let s = Settings::load(&args).unwrap();
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.site_name, "From flag");
        assert_eq!(s.drain_timeout, Duration::from_secs(5));
        assert_eq!(s.public_url, "http://127.0.0.1:9000");
        assert_eq!(s.components.len(), 1);
    }

    #[test]
    fn refuses_unknown_keys_and_bad_urls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.toml");
        std::fs::write(&path, "listne = \"127.0.0.1:9000\"\n").unwrap();
        let err = Settings::load(&SettingsArgs {
            config: Some(path),
            ..Default::default()
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("listne"), "{err:#}");
        let err = Settings::load(&SettingsArgs {
            config: Some("/dev/null".into()),
            database_url: Some("mysql://x".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("database_url"));
    }
}
