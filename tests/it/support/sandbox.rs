//! One job of a compiled guest run in the shared sandbox runtime, with the capabilities a
//! test grants.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use taskbox_runtime::{Capabilities, JobInfo, JobReport, JobRequest, Limits, TaskModule};

use super::host;

/// The compiled guest `name` (`fixtures_http`, ...), loaded (compiled on first use).
pub fn module(name: &str) -> Arc<TaskModule> {
    host::runtime()
        .load(&std::fs::read(super::guests::wasm(name)).unwrap())
        .unwrap()
}

/// Runs `task` of guest `name` with `input` (as JSON), `capabilities` and a `timeout`.
pub async fn run(
    name: &str,
    task: &str,
    input: Value,
    capabilities: Capabilities,
    timeout: Duration,
) -> JobReport {
    let limits = Limits {
        timeout,
        ..Limits::default()
    };
    run_with_limits(name, task, input, capabilities, limits).await
}

/// [`run`] with all of the job's `limits` given.
pub async fn run_with_limits(
    name: &str,
    task: &str,
    input: Value,
    capabilities: Capabilities,
    limits: Limits,
) -> JobReport {
    let request = JobRequest {
        capabilities,
        limits,
        ..JobRequest::new(
            task,
            input.to_string(),
            JobInfo::adhoc(format!("{name}-test")),
        )
    };
    host::runtime().run(&module(name), request).await
}
