//! taskbox's core: everything around the sandbox that is not HTTP or a command line.
//!
//! The sandbox is the `taskbox-runtime` crate; this crate keeps modules and jobs in Redis
//! and runs them: the module registry, the job queue and its workers, the cron scheduler,
//! events, progress and API tokens. The `taskbox` crate puts the HTTP API and the CLI on top.

pub mod auth;
pub mod events;
pub mod grants;
pub mod job_writes;
pub mod model;
pub mod progress;
pub mod queue;
pub mod redis_server;
pub mod registry;
pub mod scheduler;
mod store;
pub mod worker;
