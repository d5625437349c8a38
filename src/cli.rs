//! The `herald` command line: subcommands and their dispatch.

use clap::{Parser, Subcommand};

use crate::config::{EXAMPLE, Settings, SettingsArgs};

#[derive(Debug, Parser)]
#[command(
    name = "herald",
    version,
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
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve { demo: false }) {
        Command::Serve { demo } => {
            let settings = Settings::load(&cli.settings)?;
            crate::telemetry::init_logging(&settings)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(crate::server::serve(settings, demo))
        }
        Command::Config(ConfigCommand::Example) => {
            print!("{EXAMPLE}");
            Ok(())
        }
        Command::Config(ConfigCommand::Show) => {
            let settings = Settings::load(&cli.settings)?;
            println!("{settings:#?}");
            Ok(())
        }
    }
}
