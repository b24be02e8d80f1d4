//! taskbox: run untrusted background jobs as sandboxed WebAssembly components.
//!
//! The sandbox is the `taskbox-runtime` crate, and the registry, queue, workers and
//! scheduler around it are `taskbox-core`. This crate is what faces people: the HTTP API,
//! the configuration file and the `taskbox` command.

pub mod api;
pub mod cli;
pub mod config;
pub mod traces;
mod ui;
mod when;
