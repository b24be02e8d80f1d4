//! taskbox: run untrusted background jobs as sandboxed WebAssembly components.
//!
//! The sandbox itself is the `taskbox-runtime` crate. This crate puts the module registry,
//! the Redis queue and its workers, the cron scheduler and the HTTP API around it, and is the
//! `taskbox` command.

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod events;
pub mod grants;
pub mod job_writes;
pub mod manifest;
pub mod progress;
pub mod queue;
pub mod redis_server;
pub mod registry;
pub mod scheduler;
mod store;
pub mod worker;
