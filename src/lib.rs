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
