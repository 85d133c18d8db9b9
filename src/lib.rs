//! warden: watches a platform's channel partners in real time and enforces the rules of
//! the partner program. The binary (`src/main.rs`) is a thin shell over this library so
//! that tests can start the daemon in-process with [`app::run`].
#![forbid(unsafe_code)]

pub mod actors;
pub mod app;
pub mod cli;
pub mod config;
pub mod domain;
pub mod http;
pub mod kafka;
pub mod latency;
pub mod loadgen;
pub mod metrics;
pub mod outage;
pub mod people;
pub mod publish;
pub mod shutdown;
pub mod simulator;
pub mod store;
pub mod telemetry;
pub mod top_partners;
