//! `taskbox:task/jobs`: enqueues further jobs (chains and fan-out) for tasks the module is
//! granted, through the host's [`JobSpawner`] (the queue, in a worker).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument as _;
use wasmtime::component::{HasSelf, Linker};

use crate::bindings::taskbox::task::jobs::{self, EnqueueOptions, Error};
use crate::capabilities::{CallingJob, glob_matches};
use crate::guest_text::quote;
use crate::job::JobState;
use crate::trace::TraceParent;

/// A job a task asks to enqueue, its target resolved to `module/task`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildJob {
    /// The module whose task runs.
    pub module: String,
    /// The task.
    pub task: String,
    /// The input bytes.
    pub input: Vec<u8>,
    /// The queue; none takes the task's.
    pub queue: Option<String>,
    /// The priority; none takes the task's.
    pub priority: Option<ChildPriority>,
    /// How long to wait before it may run.
    pub delay: Option<Duration>,
    /// Retries after the first attempt; none takes the task's.
    pub max_retries: Option<u32>,
    /// Enqueueing twice with the same key gives the first job.
    pub idempotency_key: Option<String>,
    /// The enqueuing job's trace context: the child's run continues its trace.
    pub traceparent: Option<TraceParent>,
}

/// The stream a child job goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildPriority {
    /// Taken first.
    High,
    /// The default.
    Normal,
    /// Taken last.
    Low,
}

/// Why a child job was not enqueued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpawnError {
    /// A limit (the chain's depth) would be passed.
    #[error("{0}")]
    Limit(String),
    /// The target or the options are not valid (no such module or task).
    #[error("{0}")]
    Invalid(String),
    /// The queue could not be reached.
    #[error("{0}")]
    Unavailable(String),
}

/// Enqueues the jobs tasks ask for. A worker makes one per job, which records the job as
/// the parent of each child and refuses chains deeper than its cap.
pub trait JobSpawner: Send + Sync + std::fmt::Debug {
    /// Enqueues `child` and returns its id.
    fn enqueue(
        &self,
        child: ChildJob,
    ) -> Pin<Box<dyn Future<Output = Result<String, SpawnError>> + Send + '_>>;
}

/// The tasks a job may enqueue, how many, and who enqueues them.
#[derive(Debug, Clone)]
pub struct JobGrant {
    /// Target patterns, `MODULE/TASK`; `*` stands for any run of characters.
    pub targets: Vec<String>,
    /// How many jobs one job may enqueue.
    pub max_enqueues: u32,
    /// Enqueues them.
    pub spawner: Arc<dyn JobSpawner>,
}

/// The longest target a task may name, `MODULE/TASK` or `MODULE@VERSION/TASK`, in bytes.
pub const MAX_TARGET_LEN: usize = 256;

impl JobGrant {
    /// 100 jobs per job.
    pub const DEFAULT_MAX_ENQUEUES: u32 = 100;
}

/// Per-job enqueue state.
#[derive(Debug)]
pub(crate) struct JobJobs {
    grant: Option<Arc<JobGrant>>,
    caller: CallingJob,
    enqueued: u32,
}

impl JobJobs {
    pub(crate) fn new(grant: Option<Arc<JobGrant>>, caller: CallingJob) -> Self {
        Self {
            grant,
            caller,
            enqueued: 0,
        }
    }
}

impl jobs::Host for JobJobs {
    async fn enqueue(
        &mut self,
        target: String,
        input: Vec<u8>,
        options: EnqueueOptions,
    ) -> Result<String, Error> {
        if target.len() > MAX_TARGET_LEN {
            return Err(Error::Invalid(format!(
                "the target is {} bytes, longer than {MAX_TARGET_LEN}",
                target.len()
            )));
        }
        let (module, task) = match target.split_once('/') {
            Some((module, task)) => (module.to_owned(), task.to_owned()),
            None => (self.caller.module.to_string(), target.clone()),
        };
        if module.is_empty() && !target.contains('/') {
            return Err(Error::Invalid(format!(
                "this job was run by hand, outside any module: name the target as MODULE/TASK, not {}",
                quote(&target)
            )));
        }
        if module.is_empty() || task.is_empty() || task.contains('/') {
            return Err(Error::Invalid(format!(
                "{} is not TASK or MODULE/TASK",
                quote(&target)
            )));
        }
        let full = format!("{module}/{task}");
        let grant = match &self.grant {
            Some(grant) if grant.targets.iter().any(|p| glob_matches(p, &full)) => grant,
            _ => {
                self.caller.denied(
                    "jobs",
                    &full,
                    "the task is not in the module's enqueue grants",
                );
                return Err(Error::Denied(full));
            }
        };
        if self.enqueued >= grant.max_enqueues {
            return Err(Error::Limit(format!(
                "this job has already enqueued {} jobs, the most one job may",
                grant.max_enqueues
            )));
        }
        let child = ChildJob {
            module,
            task,
            input,
            queue: options.queue,
            priority: options.priority.map(|priority| match priority {
                jobs::Priority::High => ChildPriority::High,
                jobs::Priority::Normal => ChildPriority::Normal,
                jobs::Priority::Low => ChildPriority::Low,
            }),
            delay: options.delay_ms.map(Duration::from_millis),
            max_retries: options.max_retries,
            idempotency_key: options.idempotency_key,
            traceparent: self.caller.traceparent.clone(),
        };
        let span = tracing::info_span!("guest.enqueue", target = %quote(&full));
        let id = grant
            .spawner
            .enqueue(child)
            .instrument(span)
            .await
            .map_err(|err| match err {
                SpawnError::Limit(message) => Error::Limit(message),
                SpawnError::Invalid(message) => Error::Invalid(message),
                SpawnError::Unavailable(message) => Error::Unavailable(message),
            })?;
        self.enqueued += 1;
        Ok(id)
    }
}

pub(crate) fn add_to_linker(linker: &mut Linker<JobState>) -> wasmtime::Result<()> {
    jobs::add_to_linker::<JobState, HasSelf<JobJobs>>(linker, |state| &mut state.jobs)
}
