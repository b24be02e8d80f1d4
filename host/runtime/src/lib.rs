//! The taskbox sandbox: runs one job of an untrusted WebAssembly component in a fresh
//! wasmtime Store, with fuel, wall-clock, memory and stack limits, and turns every way it can
//! end into a typed [`JobReport`].
//!
//! This crate knows nothing of Redis or HTTP servers, so it can be built, tested and
//! benchmarked alone; `taskbox-core` puts a queue and workers around it, and `taskbox` an API.
//!
//! ```no_run
//! use taskbox_runtime::{JobInfo, JobRequest, Runtime, RuntimeConfig};
//!
//! # async fn example() -> anyhow::Result<()> {
//! let runtime = Runtime::new(&RuntimeConfig::default())?;
//! let module = runtime.load(&std::fs::read("hello.wasm")?)?;
//! let request = JobRequest::new("greet", r#"{"name":"Ada"}"#, JobInfo::adhoc("job-1"));
//! let report = runtime.run(&module, request).await;
//! match report.outcome {
//!     Ok(output) => println!("{}", String::from_utf8_lossy(&output)),
//!     Err(err) => eprintln!("{} failed: {err}", err.kind()),
//! }
//! # Ok(())
//! # }
//! ```

mod bindings;
mod cancel;
mod capabilities;
pub mod guest_text;
pub mod host_memory;
mod job;
mod limits;
pub mod lru;
mod module;
mod outcome;
mod runtime;
mod swap;
pub mod trace;

/// The wasmtime release that runs the guests (the version `Cargo.toml` pins).
pub const WASMTIME_VERSION: &str = "48.0.8";

pub use cancel::CancelHandle;
pub use capabilities::Capabilities;
pub use capabilities::progress::ProgressSink;
pub use capabilities::{config, events, http, jobs, sql};
pub use job::{JobInfo, JobRequest};
pub use limits::Limits;
pub use module::{
    Abi, InvalidDigest, ModuleDigest, TaskModule, componentize_command, is_core_module,
};
pub use outcome::{HostCalls, JobError, JobReport, Progress, RunStats};
pub use runtime::{DEFAULT_MODULE_CACHE_BYTES, EPOCH_TICK, Runtime, RuntimeConfig};

#[cfg(test)]
mod tests {
    #[test]
    fn the_wasmtime_version_named_is_the_one_built() {
        let lock = include_str!("../../../Cargo.lock");
        let named = format!(
            "name = \"wasmtime\"\nversion = \"{}\"",
            super::WASMTIME_VERSION
        );
        assert!(lock.contains(&named), "Cargo.lock has no {named}");
    }
}
