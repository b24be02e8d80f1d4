//! taskbox: run untrusted background jobs as sandboxed WebAssembly components.
//!
//! The sandbox itself is the `taskbox-runtime` crate; this crate is the `taskbox` command.

pub mod cli;
