//! calltrail: the system of record for AI voice-agent calls.
//!
//! Data path (docs/ARCHITECTURE.md): [`webhook`] verifies and [`domain::parse`]s
//! a delivery, an [`ingest`] writer applies it with the pure lifecycle rules of
//! [`domain`] and commits, then the webhook answers.

pub mod bus;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod db;
pub mod domain;
pub mod graphql;
pub mod ingest;
pub mod metrics;
pub mod requests;
pub mod serve;
pub mod service;
pub mod simulate;
pub mod startup;
pub mod telemetry;
#[cfg(test)]
mod test_db;
pub mod webhook;

pub use config::Config;
pub use startup::Application;
