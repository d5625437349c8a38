//! The `herald` command line: subcommands and their dispatch.

pub mod rollout;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use std::io::{BufRead, IsTerminal};

use anyhow::{Context, bail};

use crate::config::{EXAMPLE, Settings, SettingsArgs};
use crate::domain::Role;
use crate::service::Service;
use crate::store::{CopyOptions, SqlStore};

#[derive(Debug, Parser)]
#[command(
    name = "herald",
    version = crate::version(),
    about = "Maintenance and rollout status page that announces every step on Discord and Bluesky"
)]
pub struct Cli {
    #[command(flatten)]
    pub settings: SettingsArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (what a bare `herald` does)
    Serve {
        /// Seed an empty database with the demo situations first
        #[arg(long)]
        demo: bool,
    },
    /// Configuration helpers
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage users of the admin UI
    #[command(subcommand)]
    User(UserCommand),
    /// Manage API tokens for automation
    #[command(subcommand)]
    Token(TokenCommand),
    /// Import and export email subscribers (CSV: email, components, kinds, confirmed)
    #[command(subcommand)]
    Subscribers(SubscribersCommand),
    /// Report a rollout target's state to a running Herald (for deploy scripts and SIGTERM
    /// handlers)
    #[command(
        after_help = "Exit status: 0 accepted; 2 usage error; 3 refused by Herald (4xx: \
        out of order, unknown rollout or target, invalid value, bad token; the reason is on \
        stderr); 4 Herald unreachable (or answering 5xx) for longer than --retry-for. \
        Nothing is printed on stdout."
    )]
    Report {
        #[command(flatten)]
        remote: rollout::Remote,
        /// Rollout id
        #[arg(long)]
        rollout: i64,
        /// Target (instance) name
        #[arg(long)]
        target: String,
        /// pending, draining, drained, updating, healthy or failed
        #[arg(long)]
        state: String,
        /// Live work left while draining, e.g. rooms=12,recordings=3
        #[arg(long, value_parser = rollout::parse_counts, value_name = "LABEL=N,...")]
        remaining: Option<std::collections::BTreeMap<String, u64>>,
        /// The version the target runs now
        #[arg(long)]
        version: Option<String>,
        /// Take the target down before its drain finished (say why with --note)
        #[arg(long)]
        forced: bool,
        /// A line for the rollout's timeline: why, or what happened
        #[arg(long)]
        note: Option<String>,
    },
    /// Follow rollouts from CI pipelines
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Copy and back up the database
    #[command(subcommand)]
    Db(DbCommand),
    /// Ask the server on this machine whether it is ready (GET /readyz on the address it
    /// listens on), for a container's HEALTHCHECK or a script
    #[command(
        after_help = "Exit status: 0 ready; 1 not ready, draining or not answering \
        within 2 s (the reason is on stderr)."
    )]
    Healthcheck,
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Make the configured database (a SQLite file, or Herald's tables in an existing
    /// PostgreSQL database) or bring it up to this version, as `serve` does when it starts:
    /// the one command besides `serve` that makes a database
    Init,
    /// Copy everything from one database to another (SQLite to PostgreSQL or back): users,
    /// tokens, windows, rollouts, channels, deliveries and the audit log; then compare the two
    /// and print the rows per table
    Copy {
        /// The database to read (sqlite://… or postgres://…): it must exist and hold Herald's
        /// tables; it is only read (a SQLite file is opened read-only)
        #[arg(long, value_name = "URL")]
        from: String,
        /// The database to write: a SQLite file is made if missing; a PostgreSQL database must
        /// exist (createdb) and gets Herald's tables if it has none
        #[arg(long, value_name = "URL")]
        to: String,
        /// Delete what the target holds first (else a target with data is refused); the rows
        /// to delete are counted and said first
        #[arg(long)]
        replace: bool,
        /// With --replace: go on although the source holds nothing (that empties the target)
        #[arg(long, requires = "replace")]
        empty_source: bool,
        /// Also copy the admin UI's sessions (else everyone signs in again)
        #[arg(long)]
        sessions: bool,
    },
    /// Write a consistent copy of the configured SQLite database to PATH, also while Herald
    /// serves from it
    Backup {
        /// The new file (never overwritten)
        path: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Wait until a rollout completes, printing a line on stderr each time it moves and its
    /// outcome on stdout
    #[command(
        after_help = "Exit status: 0 completed; 3 refused (unknown rollout, bad token); \
        4 Herald unreachable for longer than --retry-for; 5 failed or aborted (also rolled \
        back); 6 stalled (no progress within the rollout's deadline); 7 --timeout reached."
    )]
    Wait {
        #[command(flatten)]
        remote: rollout::Remote,
        /// Rollout id
        id: i64,
        /// Give up after this long
        #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
        timeout: Option<std::time::Duration>,
        /// How often to look
        #[arg(long, value_parser = humantime::parse_duration, default_value = "2s", value_name = "DURATION")]
        interval: std::time::Duration,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user; the password is read from the terminal, or from stdin's first line
    Add {
        name: String,
        #[arg(long, value_enum, default_value = "maintainer")]
        role: RoleArg,
    },
    /// Remove a user (their sessions end); the last admin cannot be removed
    Remove { name: String },
    /// Set a user's password (read like `add`); their sessions end
    Passwd { name: String },
    /// Change a user's role; their sessions end; the last admin cannot be demoted
    Role {
        name: String,
        #[arg(value_enum)]
        role: RoleArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (only the token, only this once)
    Create {
        name: String,
        #[arg(long, value_enum, default_value = "maintainer")]
        role: RoleArg,
        /// Refuse the token after this long (e.g. 90d, 12h) [default: never]
        #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
        expires: Option<std::time::Duration>,
    },
    /// List tokens (never their secrets)
    List,
    /// Revoke a token by id
    Revoke { id: i64 },
}

#[derive(Debug, Subcommand)]
pub enum SubscribersCommand {
    /// Add subscribers from a CSV file: email, components (slugs; empty for everything),
    /// kinds (maintenance, reminders, incidents, rollouts; empty for all), confirmed. A
    /// header row is optional. All rows or, when one is wrong, none; an address already
    /// subscribed gets the row's choices.
    #[command(
        after_help = "Without --confirmed every row waits for its own confirmation; with it,         rows are confirmed unless their confirmed column says false (for subscribers who         confirmed on another status page). Exit status: 0 imported; 1 nothing imported (the         wrong lines are on stderr)."
    )]
    Import {
        /// The CSV file (`-` for standard input)
        file: std::path::PathBuf,
        /// These addresses confirmed elsewhere: mail them without asking again
        #[arg(long)]
        confirmed: bool,
    },
    /// Print every subscriber as CSV, in the format `import` reads
    Export,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RoleArg {
    /// Reports rollout progress and posts monitors' alerts, nothing else (tokens only: the
    /// token on every instance and in each monitor's webhook)
    Reporter,
    /// Plans and runs windows and rollouts
    Maintainer,
    /// Also users, tokens, channels and components
    Admin,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Reporter => Role::Reporter,
            RoleArg::Maintainer => Role::Maintainer,
            RoleArg::Admin => Role::Admin,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print a commented example configuration file
    Example,
    /// Print the effective configuration (secrets masked)
    Show,
}

/// Parse the command line and run it.
pub fn main() -> anyhow::Result<()> {
    let matches = command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command.unwrap_or(Command::Serve { demo: false }) {
        Command::Serve { demo } => {
            let settings = Settings::load(&cli.settings)?;
            crate::telemetry::init_logging(&settings)?;
            // HTTP runs on its own per-CPU threads (server::run); this runtime only drives
            // start-up, signals and background tasks, so one worker is enough.
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            runtime.block_on(crate::server::serve(settings, demo))
        }
        Command::Config(ConfigCommand::Example) => {
            print!("{EXAMPLE}");
            Ok(())
        }
        Command::User(command) => with_service(&cli.settings, |service| async move {
            match command {
                UserCommand::Add { name, role } => {
                    let password = read_password()?;
                    let user = service.add_user(&name, &password, role.into()).await?;
                    eprintln!("added {} ({})", user.name, user.role.as_str());
                }
                UserCommand::Remove { name } => {
                    service.remove_user(&name).await?;
                    eprintln!("removed {name}; their sessions ended");
                }
                UserCommand::Passwd { name } => {
                    let password = read_password()?;
                    service.set_password(&name, &password).await?;
                    eprintln!("set the password of {name}; their sessions ended");
                }
                UserCommand::Role { name, role } => {
                    let role: Role = role.into();
                    service.set_role(&name, role).await?;
                    eprintln!("{name} is now {}; their sessions ended", role.as_str());
                }
            }
            Ok(())
        }),
        Command::Token(command) => with_service(&cli.settings, |service| async move {
            match command {
                TokenCommand::Create {
                    name,
                    role,
                    expires,
                } => {
                    let lifetime = expires
                        .map(jiff::SignedDuration::try_from)
                        .transpose()
                        .context("--expires is too long")?;
                    let new = service
                        .create_token_expiring(&name, role.into(), lifetime)
                        .await?;
                    println!("{}", new.secret.expose());
                    eprintln!(
                        "created token {} ({}, id {}); it is shown only now",
                        new.token.name,
                        new.token.role.as_str(),
                        new.token.id
                    );
                }
                TokenCommand::List => {
                    println!("id\tname\trole\tprefix\tcreated\tlast used\trevoked\texpires");
                    let show =
                        |t: Option<jiff::Timestamp>| t.map_or("-".to_owned(), |t| t.to_string());
                    for t in service.tokens().await? {
                        println!(
                            "{}\t{}\t{}\t{}…\t{}\t{}\t{}\t{}",
                            t.id,
                            t.name,
                            t.role.as_str(),
                            t.prefix,
                            t.created_at,
                            show(t.last_used_at),
                            show(t.revoked_at),
                            show(t.expires_at)
                        );
                    }
                }
                TokenCommand::Revoke { id } => {
                    service.revoke_token(id).await?;
                    eprintln!("revoked token {id}");
                }
            }
            Ok(())
        }),
        Command::Subscribers(command) => with_service(&cli.settings, |service| async move {
            match command {
                SubscribersCommand::Import { file, confirmed } => {
                    let rows = read_subscribers_csv(&file)?;
                    let report = service.import_subscribers(&rows, confirmed).await?;
                    eprintln!(
                        "imported {} rows: {} added, {} updated, {} confirmed",
                        rows.len(),
                        report.added,
                        report.updated,
                        report.confirmed
                    );
                }
                SubscribersCommand::Export => {
                    let components = service.components().await?;
                    let mut out = csv::Writer::from_writer(std::io::stdout().lock());
                    out.write_record(["email", "components", "kinds", "confirmed"])?;
                    for s in service.all_subscribers().await? {
                        let slugs = s
                            .preferences
                            .components
                            .iter()
                            .flatten()
                            .filter_map(|id| components.iter().find(|c| c.id == *id))
                            .map(|c| c.slug.as_str())
                            .collect::<Vec<_>>()
                            .join(";");
                        let kinds = s
                            .preferences
                            .kinds
                            .iter()
                            .map(|k| k.as_str())
                            .collect::<Vec<_>>()
                            .join(";");
                        let confirmed = if s.confirmed_at.is_some() {
                            "true"
                        } else {
                            "false"
                        };
                        out.write_record([s.address.as_str(), &slugs, &kinds, confirmed])?;
                    }
                    out.flush()?;
                }
            }
            Ok(())
        }),
        Command::Report {
            remote,
            rollout,
            target,
            state,
            remaining,
            version,
            forced,
            note,
        } => client_runtime()?.block_on(rollout::report(
            &remote,
            rollout::ReportArgs {
                rollout,
                target,
                state,
                remaining,
                version,
                forced,
                note,
            },
        )),
        Command::Rollout(RolloutCommand::Wait {
            remote,
            id,
            timeout,
            interval,
        }) => client_runtime()?.block_on(rollout::wait(&remote, id, timeout, interval)),
        Command::Db(DbCommand::Copy {
            from,
            to,
            replace,
            empty_source,
            sessions,
        }) => client_runtime()?.block_on(async {
            let redacted = |u: &str| crate::config::redact_url(u);
            let source = SqlStore::open_existing(&from, true)
                .await
                .with_context(|| format!("cannot read {}", redacted(&from)))?;
            let target = SqlStore::connect(&to)
                .await
                .with_context(|| format!("cannot open {}", redacted(&to)))?;
            if replace {
                // Everything the target holds is deleted, its sessions too.
                let held = target.row_count(true).await.unwrap_or(0);
                if held > 0 {
                    eprintln!(
                        "--replace: the {held} rows {} holds are deleted before the copy",
                        redacted(&to)
                    );
                }
            }
            let report = source
                .copy_to(
                    &target,
                    CopyOptions {
                        replace,
                        sessions,
                        empty_source,
                    },
                )
                .await
                .with_context(|| format!("cannot copy to {}", redacted(&to)))?;
            println!("table\trows");
            for (table, rows) in &report.tables {
                println!("{table}\t{rows}");
            }
            eprintln!(
                "copied {} rows from {} to {}; both hold the same",
                report.tables.iter().map(|(_, n)| n).sum::<u64>(),
                redacted(&from),
                redacted(&to)
            );
            Ok(())
        }),
        Command::Db(DbCommand::Init) => {
            let settings = Settings::load(&cli.settings)?;
            client_runtime()?.block_on(async {
                let store = SqlStore::connect(settings.database_url.expose())
                    .await
                    .with_context(|| {
                        format!("cannot open the database {}", settings.database_url)
                    })?;
                use crate::store::Store as _;
                store.migrate().await.with_context(|| {
                    format!("cannot migrate the database {}", settings.database_url)
                })?;
                let schema = store.schema_version().await?;
                eprintln!("{} is ready (schema {schema})", settings.database_url);
                Ok(())
            })
        }
        Command::Db(DbCommand::Backup { path }) => {
            let settings = Settings::load(&cli.settings)?;
            client_runtime()?.block_on(async {
                let store = existing_database(&settings, true).await?;
                store.backup_to(&path).await?;
                eprintln!("backed up {} to {}", settings.database_url, path.display());
                Ok(())
            })
        }
        Command::Healthcheck => {
            let settings = Settings::load(&cli.settings)?;
            client_runtime()?.block_on(healthcheck(settings.listen))
        }
        Command::Config(ConfigCommand::Show) => {
            let settings = Settings::load(&cli.settings)?;
            print!("{}", settings.to_toml());
            Ok(())
        }
    }
}

/// `/readyz` of the server listening on `listen`, reached on loopback when it listens on every
/// address.
async fn healthcheck(listen: std::net::SocketAddr) -> anyhow::Result<()> {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let url = format!("http://{addr}/readyz");
    let reply = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(2))
        .build()?
        .get(&url)
        .send()
        .await
        .with_context(|| format!("no answer from {url}"))?;
    let status = reply.status();
    if !status.is_success() {
        let body = reply.text().await.unwrap_or_default();
        bail!("{url} answered {status}: {}", body.trim());
    }
    Ok(())
}

/// The settings every command may need: where the configuration and the database are, and
/// how to log. The others only matter to `serve` (and `config`, which prints them all).
const SHARED_SETTINGS: [&str; 4] = ["config", "database_url", "log", "log_format"];

/// The command line, with each subcommand's help listing only the settings it uses: the
/// server's flags are global (so `herald --listen … serve` and `herald serve --listen …` both
/// work), and shown where they mean something.
pub fn command() -> clap::Command {
    let cmd = Cli::command();
    // A subcommand that has an argument of its own with a global's id is not given the
    // global: give the others hidden copies (still global, so their own subcommands inherit
    // them hidden). The values still reach the top level's settings.
    let globals: Vec<clap::Arg> = cmd
        .get_arguments()
        .filter(|a| a.is_global_set())
        .cloned()
        .collect();
    let hide = |sub: clap::Command, keep: &[&str]| {
        globals
            .iter()
            .filter(|a| !keep.contains(&a.get_id().as_str()))
            .fold(sub, |sub, a| sub.arg(a.clone().hide(true)))
    };
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    names
        .into_iter()
        .fold(cmd, |cmd, name| {
            let keep: Vec<&str> = match name.as_str() {
                "serve" | "config" => return cmd,
                // It asks the server on the address it listens on.
                "healthcheck" => [&SHARED_SETTINGS[..], &["listen"]].concat(),
                // They talk to a running Herald (--url, --token), not to its database.
                "report" | "rollout" => vec!["log", "log_format"],
                _ => SHARED_SETTINGS.to_vec(),
            };
            cmd.mut_subcommand(&name, |sub| hide(sub, &keep))
        })
        // `db copy` reads and writes the databases it is given, not the configured one.
        .mut_subcommand("db", |db| {
            db.mut_subcommand("copy", |copy| hide(copy, &["log", "log_format"]))
        })
}

fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Run `f` with a service on the configured database (migrated), on a small runtime.
/// The rows of a subscribers CSV file (`-`: standard input), with their line numbers; a
/// first row starting with `email` is a header.
fn read_subscribers_csv(file: &std::path::Path) -> anyhow::Result<Vec<crate::service::ImportRow>> {
    let input: Box<dyn std::io::Read> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?,
        )
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(input);
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("{}: not CSV", file.display()))?;
        let field = |n: usize| record.get(n).unwrap_or_default().to_owned();
        if i == 0 && field(0).eq_ignore_ascii_case("email") {
            continue;
        }
        if record.iter().all(str::is_empty) {
            continue;
        }
        rows.push(crate::service::ImportRow {
            line: record.position().map_or(i as u64 + 1, |p| p.line()),
            email: field(0),
            components: field(1),
            kinds: field(2),
            confirmed: field(3),
        });
    }
    Ok(rows)
}

fn with_service<F, Fut>(args: &SettingsArgs, f: F) -> anyhow::Result<()>
where
    F: FnOnce(Service) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let settings = Settings::load(args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        use crate::store::Store as _;
        let store = existing_database(&settings, false).await?;
        store
            .migrate()
            .await
            .with_context(|| format!("cannot migrate the database {}", settings.database_url))?;
        f(Service::new(std::sync::Arc::new(store)).acting(crate::domain::Actor::Cli)).await
    })
}

/// The server's database, which must exist: a command other than `serve` never makes one (a
/// token made in a new, empty database would be one the server does not know).
async fn existing_database(settings: &Settings, read_only: bool) -> anyhow::Result<SqlStore> {
    SqlStore::open_existing(settings.database_url.expose(), read_only)
        .await
        .with_context(|| {
            format!(
                "cannot use the database {}: point this command at the server's database with \
                 HERALD_DATABASE_URL, --database-url or database_url in --config FILE \
                 (`herald db init` or `herald serve` makes a new one)",
                settings.database_url
            )
        })
}

/// A password from the terminal (asked twice, not echoed) or from stdin's first line.
fn read_password() -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let second = rpassword::prompt_password("Again: ")?;
        if first != second {
            bail!("the passwords differ");
        }
        Ok(first)
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from stdin")?;
        Ok(line.trim_end_matches(['\n', '\r']).to_owned())
    }
}
