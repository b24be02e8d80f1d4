//! taskbox: run untrusted background jobs as sandboxed WebAssembly components.
//!
//! The sandbox itself is the `taskbox-runtime` crate. This crate puts the Redis queue and
//! its workers around it, and is the `taskbox` command.

pub mod cli;
pub mod queue;
pub mod redis_server;
pub mod worker;
