//! Herald: records maintenance windows and rollout progress, renders a public status page, and
//! announces every step.
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod demo;
pub mod domain;
pub mod ids;
pub mod notify;
pub mod scheduler;
pub mod server;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod web;
pub mod wire;

/// The commit this build comes from (12 hex digits), empty when built outside a git checkout.
pub const COMMIT: &str = env!("HERALD_COMMIT");

/// `0.1.0 (3f2a9c1b7d04)`: the version, and the commit when known.
pub fn version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        let version = env!("CARGO_PKG_VERSION");
        if COMMIT.is_empty() {
            version.to_owned()
        } else {
            format!("{version} ({COMMIT})")
        }
    })
}
