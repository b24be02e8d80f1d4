//! Enqueue further jobs: chains and fan-out. The module's manifest grants the targets
//! (`enqueue = ["thumbnails/*"]`); a child records the job that enqueued it as its parent.
//!
//! ```no_run
//! # fn example() -> Result<(), taskbox_guest::jobs::EnqueueError> {
//! use taskbox_guest::jobs::{self, Options};
//!
//! // `resize` of this module, then `notify` of module `mailer`, a minute later.
//! let resize = jobs::enqueue("resize", &serde_json::json!({"width": 640}))?;
//! let options = Options { delay_ms: Some(60_000), ..Options::default() };
//! jobs::enqueue_with("mailer/notify", &serde_json::json!({"after": resize}), options)?;
//! # Ok(())
//! # }
//! ```

use serde::Serialize;

use crate::TaskError;
use crate::bindings::taskbox::task::jobs::{self, EnqueueOptions, Error};

pub use crate::bindings::taskbox::task::jobs::Priority;

/// How to enqueue a job; every field may be left to the task's defaults.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The queue; none takes the task's.
    pub queue: Option<String>,
    /// The priority; none takes the task's.
    pub priority: Option<Priority>,
    /// Run no earlier than this many milliseconds from now.
    pub delay_ms: Option<u64>,
    /// Retries after the first attempt; none takes the task's.
    pub max_retries: Option<u32>,
    /// Enqueueing twice with the same key returns the first job's id.
    pub idempotency_key: Option<String>,
}

/// Why a job was not enqueued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnqueueError {
    /// The manifest does not grant this target.
    Denied(String),
    /// This job has enqueued as many jobs, or its chain is as deep, as the host allows.
    Limit(String),
    /// The target or the options are not valid (no such module or task).
    Invalid(String),
    /// The queue is unavailable: worth retrying the job.
    Unavailable(String),
}

impl std::fmt::Display for EnqueueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Denied(target) => write!(f, "not granted enqueueing `{target}`"),
            Self::Limit(reason) | Self::Invalid(reason) => f.write_str(reason),
            Self::Unavailable(reason) => write!(f, "the queue is unavailable: {reason}"),
        }
    }
}

impl std::error::Error for EnqueueError {}

/// An unavailable queue is retryable; everything else is a bug in the task.
impl From<EnqueueError> for TaskError {
    fn from(error: EnqueueError) -> Self {
        match error {
            EnqueueError::Unavailable(_) => TaskError::retryable(error.to_string()),
            _ => TaskError::fatal(error.to_string()),
        }
    }
}

/// Enqueues `target` (`TASK` of this module, or `MODULE/TASK`) with `input` as JSON and
/// returns the new job's id.
pub fn enqueue<T: Serialize + ?Sized>(target: &str, input: &T) -> Result<String, EnqueueError> {
    enqueue_with(target, input, Options::default())
}

/// [`enqueue`] with options.
pub fn enqueue_with<T: Serialize + ?Sized>(
    target: &str,
    input: &T,
    options: Options,
) -> Result<String, EnqueueError> {
    let input = serde_json::to_vec(input)
        .map_err(|err| EnqueueError::Invalid(format!("the input is not serializable: {err}")))?;
    enqueue_bytes(target, &input, options)
}

/// Enqueues `target` with raw input bytes.
pub fn enqueue_bytes(target: &str, input: &[u8], options: Options) -> Result<String, EnqueueError> {
    let options = EnqueueOptions {
        queue: options.queue,
        priority: options.priority,
        delay_ms: options.delay_ms,
        max_retries: options.max_retries,
        idempotency_key: options.idempotency_key,
    };
    jobs::enqueue(target, input, &options).map_err(|error| match error {
        Error::Denied(target) => EnqueueError::Denied(target),
        Error::Limit(reason) => EnqueueError::Limit(reason),
        Error::Invalid(reason) => EnqueueError::Invalid(reason),
        Error::Unavailable(reason) => EnqueueError::Unavailable(reason),
    })
}
