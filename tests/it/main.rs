//! The integration tests, one binary (linking the whole crate once instead of once per file).
//! Each module is the file of the same name; `common` holds the helpers and the fake servers.

mod admin;
mod announce;
mod announce_crash;
mod announce_pds;
mod api;
mod browser;
mod browser_admin;
mod channels;
mod cli;
mod common;
mod db;
mod deploy;
mod drain;
mod ecosystem;
mod fakes;
mod idempotency;
mod incidents;
mod instances;
mod mail;
mod pages;
mod roles;
mod rollout_cli;
mod rollouts;
mod scheduler;
mod snapshots;
mod store;
