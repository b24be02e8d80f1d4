//! What running a job produced: output or a typed failure, with what it cost.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a job did not produce output. Each variant is a distinct `kind` that callers branch on:
/// the queue retries some and dead-letters the others (see [`JobError::is_retryable`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobError {
    /// The task returned an error.
    #[error("task error{}: {message}", if *retryable { " (retryable)" } else { "" })]
    TaskError {
        /// Whether the task said trying again may help.
        retryable: bool,
        /// The earliest retry the task asked for, in milliseconds.
        retry_after_ms: Option<u64>,
        /// The task's message.
        message: String,
    },
    /// The guest trapped: a panic, an `unreachable`, a bad memory access.
    #[error("trap: {message}")]
    Trap {
        /// The trap and where it happened.
        message: String,
    },
    /// The guest burned its whole fuel budget.
    #[error("out of fuel after {budget} units")]
    OutOfFuel {
        /// The budget it had.
        budget: u64,
    },
    /// The job ran past its wall-clock limit (computing or blocked in a host call).
    #[error("timeout after {}", human_millis(*timeout_ms))]
    Timeout {
        /// The limit, in milliseconds.
        timeout_ms: u64,
    },
    /// The guest needed more linear memory than it may have.
    #[error("memory limit of {limit} bytes reached")]
    MemoryLimit {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The host held more memory on the job's behalf than the job may make it hold.
    #[error("host memory limit of {limit} bytes reached")]
    HostMemoryLimit {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The guest recursed past the WebAssembly stack limit.
    #[error("stack overflow")]
    StackOverflow,
    /// The job was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// The task returned more output than the host keeps.
    #[error("output of {size} bytes exceeds the limit of {limit} bytes")]
    OutputTooLarge {
        /// The output's size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The module is not a valid component for this host.
    #[error("invalid module: {message}")]
    InvalidModule {
        /// What is wrong with it.
        message: String,
    },
    /// The module imports something the host does not provide.
    #[error("module imports `{name}`, which this host does not provide")]
    MissingImport {
        /// The import's name, such as `wasi:filesystem/types@0.2.0`.
        name: String,
    },
    /// A failure of the host itself, not of the guest.
    #[error("internal error: {message}")]
    Internal {
        /// What failed.
        message: String,
    },
}

impl JobError {
    /// The stable snake_case name of this kind of failure, as stored on job records.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TaskError { .. } => "task_error",
            Self::Trap { .. } => "trap",
            Self::OutOfFuel { .. } => "out_of_fuel",
            Self::Timeout { .. } => "timeout",
            Self::MemoryLimit { .. } => "memory_limit",
            Self::HostMemoryLimit { .. } => "host_memory_limit",
            Self::StackOverflow => "stack_overflow",
            Self::Cancelled => "cancelled",
            Self::OutputTooLarge { .. } => "output_too_large",
            Self::InvalidModule { .. } => "invalid_module",
            Self::MissingImport { .. } => "missing_import",
            Self::Internal { .. } => "internal",
        }
    }

    /// Whether running the job again might succeed. Deterministic sandbox failures (a trap,
    /// running out of fuel or memory, a bad module) would fail the same way again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::TaskError { retryable, .. } => *retryable,
            Self::Timeout { .. } | Self::Internal { .. } => true,
            Self::Trap { .. }
            | Self::OutOfFuel { .. }
            | Self::MemoryLimit { .. }
            | Self::HostMemoryLimit { .. }
            | Self::StackOverflow
            | Self::Cancelled
            | Self::OutputTooLarge { .. }
            | Self::InvalidModule { .. }
            | Self::MissingImport { .. } => false,
        }
    }
}

/// Milliseconds as people write them: `2s`, `1.5s`, `250ms`.
fn human_millis(ms: u64) -> String {
    match ms {
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms if ms > 1000 => format!("{}s", ms as f64 / 1000.0),
        ms => format!("{ms}ms"),
    }
}

/// What a job consumed, whatever its outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStats {
    /// Fuel units burned.
    pub fuel_used: u64,
    /// Wall time from the start of instantiation to the end of the call (milliseconds in
    /// JSON).
    #[serde(rename = "wall_time_ms", with = "crate::limits::duration_millis")]
    pub wall_time: Duration,
    /// The most linear memory the job had at once, in bytes.
    pub peak_memory: u64,
    /// The most heap the host held on the job's behalf at once, in bytes (0 where host
    /// memory is not counted).
    #[serde(default)]
    pub peak_host_memory: u64,
    /// Outbound HTTP requests the host refused (not allowed by the manifest or the policy,
    /// or to a private address).
    #[serde(default)]
    pub denied_egress: u64,
    /// From the start of the job to its instance being ready; for the host's metrics, not
    /// stored with the job.
    #[serde(skip)]
    pub instantiate: Duration,
    /// What the job asked of its capabilities; for the host's metrics, not stored.
    #[serde(skip)]
    pub calls: HostCalls,
}

/// How many times a job used its capabilities, and how those calls ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostCalls {
    /// Outbound HTTP requests that got a response.
    pub http_sent: u64,
    /// Outbound HTTP requests allowed that failed (no connection, timeout, a cap).
    pub http_failed: u64,
    /// Outbound HTTP requests refused.
    pub http_denied: u64,
    /// SQL statements run.
    pub sql_statements: u64,
    /// SQL statements refused (not granted, or denied by the database's permissions).
    pub sql_denied: u64,
    /// Events published.
    pub events_published: u64,
}

/// The latest progress a job reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// 0 to 100.
    pub percent: u8,
    /// What the job is doing.
    pub message: String,
}

/// Everything one run of a job produced.
#[derive(Debug)]
pub struct JobReport {
    /// The task's output, or why there is none.
    pub outcome: Result<Vec<u8>, JobError>,
    /// What the run consumed.
    pub stats: RunStats,
    /// Guest stdout, stderr and `log` lines, bounded by [`crate::Limits::log_bytes`].
    pub log: String,
    /// The last progress the job reported, if any.
    pub progress: Option<Progress>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_read_like_people_write_them() {
        let err = JobError::Timeout { timeout_ms: 2000 };
        assert_eq!(err.to_string(), "timeout after 2s");
        let err = JobError::Timeout { timeout_ms: 1500 };
        assert_eq!(err.to_string(), "timeout after 1.5s");
        let err = JobError::Timeout { timeout_ms: 250 };
        assert_eq!(err.to_string(), "timeout after 250ms");
    }

    #[test]
    fn serializes_with_its_kind() {
        let json = serde_json::to_value(JobError::OutOfFuel { budget: 7 }).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "out_of_fuel", "budget": 7})
        );
        assert_eq!(JobError::OutOfFuel { budget: 7 }.kind(), "out_of_fuel");
    }
}
