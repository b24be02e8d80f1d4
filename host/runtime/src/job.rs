//! One job = one Store: the per-job state and the code that runs a task to its outcome.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wasmtime::component::ResourceTable;
use wasmtime::{Store, StoreContextMut, Trap, UpdateDeadline};
use wasmtime_wasi::{I32Exit, WasiCtx};

use crate::bindings;
use crate::cancel::CancelHandle;
use crate::capabilities::config::{self, ConfigValues};
use crate::capabilities::events::JobEvents;
use crate::capabilities::http::JobHttp;
use crate::capabilities::jobs::JobJobs;
use crate::capabilities::log::JobLog;
use crate::capabilities::progress::{JobProgress, ProgressSink};
use crate::capabilities::sql::JobSql;
use crate::capabilities::wasi;
use crate::capabilities::{CallingJob, Capabilities};
use crate::guest_text;
use crate::host_memory::{self, JobMemory, Meter};
use crate::limits::{Limits, MemoryLimiter};
use crate::module::{Entry, TaskModule};
use crate::outcome::{JobError, JobReport, RunStats};
use crate::trace::TraceParent;

/// How often a computing guest yields to the async executor, in fuel units (a few
/// milliseconds of work), so that one busy guest cannot starve the others on its thread.
const FUEL_YIELD_INTERVAL: u64 = 10_000_000;

/// What the job is, as the guest sees it in `job-info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    /// The job id.
    pub id: String,
    /// The name of the module the job runs (empty for a module run by hand, which then
    /// cannot enqueue its own tasks by their plain name).
    pub module: String,
    /// Which attempt this is, from 1.
    pub attempt: u32,
    /// Attempts allowed in all.
    pub max_attempts: u32,
    /// The queue the job came from.
    pub queue: String,
    /// When the job was enqueued.
    pub enqueued_at: SystemTime,
    /// The trace context of the job's run, which its host calls continue.
    pub traceparent: Option<TraceParent>,
}

impl JobInfo {
    /// A first and only attempt on the `default` queue, enqueued now: a job run by hand.
    pub fn adhoc(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            module: String::new(),
            attempt: 1,
            max_attempts: 1,
            queue: "default".into(),
            enqueued_at: SystemTime::now(),
            traceparent: None,
        }
    }
}

/// Everything needed to run one job.
pub struct JobRequest {
    /// The task to call inside the module.
    pub task: String,
    /// The task's input bytes (JSON by convention).
    pub input: Vec<u8>,
    /// What the guest is told about the job.
    pub info: JobInfo,
    /// The job's limits.
    pub limits: Limits,
    /// Cancels the job from elsewhere.
    pub cancel: CancelHandle,
    /// Receives progress reports as they happen.
    pub progress: Option<ProgressSink>,
    /// What the job may reach beyond its sandbox.
    pub capabilities: Capabilities,
}

impl JobRequest {
    /// A request with default limits, no cancellation and no progress sink.
    pub fn new(task: impl Into<String>, input: impl Into<Vec<u8>>, info: JobInfo) -> Self {
        Self {
            task: task.into(),
            input: input.into(),
            info,
            limits: Limits::default(),
            cancel: CancelHandle::new(),
            progress: None,
            capabilities: Capabilities::default(),
        }
    }
}

impl std::fmt::Debug for JobRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobRequest")
            .field("task", &self.task)
            .field("input_bytes", &self.input.len())
            .field("info", &self.info)
            .field("limits", &self.limits)
            .field("capabilities", &self.capabilities)
            .finish_non_exhaustive()
    }
}

/// The data of a job's Store: WASI, the capabilities' per-job state, and the limits'
/// bookkeeping.
pub(crate) struct JobState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) log: JobLog,
    pub(crate) progress: JobProgress,
    pub(crate) http: JobHttp,
    pub(crate) sql: JobSql,
    pub(crate) events: JobEvents,
    pub(crate) jobs: JobJobs,
    pub(crate) config: Arc<ConfigValues>,
    limiter: MemoryLimiter,
    host_memory: Meter,
    cancel: CancelHandle,
    deadline: Instant,
}

/// Why the epoch callback stopped the guest.
#[derive(Debug, thiserror::Error)]
enum Interrupted {
    #[error("the job's deadline passed")]
    Deadline,
    #[error("the job was cancelled")]
    Cancelled,
    #[error("the host holds more for the job than its host-memory limit")]
    HostMemory,
}

/// Runs at every epoch tick while the guest computes: stops it once cancelled or past its
/// deadline, and otherwise yields to the executor before going on.
fn on_epoch_tick(store: StoreContextMut<'_, JobState>) -> wasmtime::Result<UpdateDeadline> {
    let state = store.data();
    if state.cancel.is_cancelled() {
        return Err(wasmtime::Error::new(Interrupted::Cancelled));
    }
    if Instant::now() >= state.deadline {
        return Err(wasmtime::Error::new(Interrupted::Deadline));
    }
    if state.host_memory.exceeded() {
        return Err(wasmtime::Error::new(Interrupted::HostMemory));
    }
    Ok(UpdateDeadline::Yield(1))
}

/// Runs `request` in a fresh Store and instance of `module`. Never panics or hangs because of
/// the guest: every failure becomes a [`JobError`].
/// With `fuel` off, the limits' fuel budget is not applied and no fuel is reported used.
pub(crate) async fn run(module: &TaskModule, request: JobRequest, fuel: bool) -> JobReport {
    let memory = JobMemory::open(request.limits.host_memory);
    let report = memory
        .charging(run_charged(module, request, fuel, memory.meter()))
        .await;
    host_memory::give_back_after(report.stats.peak_host_memory);
    report
}

/// [`run`], with the host's allocations for the job counted on `host_memory`.
// Long because it is one job's life in order (its state, its Store and limits, the instance,
// the call, the report), and each step uses what the ones before made; split, the parts
// would pass most of their locals along.
async fn run_charged(
    module: &TaskModule,
    request: JobRequest,
    fuel: bool,
    host_memory: Meter,
) -> JobReport {
    let JobRequest {
        task,
        mut input,
        info,
        limits,
        cancel,
        progress,
        capabilities,
    } = request;
    let started = Instant::now();
    let deadline = started + limits.timeout;
    let log = JobLog::new(limits.log_bytes);
    let caller = CallingJob {
        job: info.id.as_str().into(),
        module: info.module.as_str().into(),
        deadline,
        log: log.clone(),
        denials: Arc::default(),
        calls: Arc::default(),
        traceparent: info.traceparent.clone(),
    };
    let calls = Arc::clone(&caller.calls);
    // A command's stdout is its output: kept up to the output limit, and counted beyond.
    let stdout = match module.entry() {
        Entry::Command(_) => Some(JobLog::new(limits.output_bytes)),
        Entry::Task(_) => None,
    };
    let wasi = match &stdout {
        Some(stdout) => {
            let program = match info.module.as_str() {
                "" => "task",
                module => module,
            };
            let args = [program, task.as_str()];
            wasi::command_context(&log, std::mem::take(&mut input), &args, stdout.clone())
        }
        None => wasi::context(&log),
    };
    let mut table = ResourceTable::new();
    table.set_max_capacity(crate::limits::MAX_HOST_RESOURCES);
    let state = JobState {
        wasi,
        table,
        log,
        progress: JobProgress {
            latest: None,
            sink: progress,
            max_message_bytes: limits.progress_bytes,
        },
        http: JobHttp::new(capabilities.http, caller.clone()),
        sql: JobSql::new(capabilities.sql, caller.clone()),
        events: JobEvents::new(capabilities.events, caller.clone()),
        jobs: JobJobs::new(capabilities.jobs, caller),
        config: capabilities.config,
        limiter: MemoryLimiter::new(limits.memory),
        host_memory,
        cancel: cancel.clone(),
        deadline,
    };
    let mut store = Store::new(module.engine(), state);
    store.limiter(|state| &mut state.limiter);
    let configured = match fuel {
        true => store
            .set_fuel(limits.fuel)
            .and_then(|()| store.fuel_async_yield_interval(Some(FUEL_YIELD_INTERVAL))),
        false => Ok(()),
    };
    if let Err(err) = configured {
        return JobReport {
            outcome: Err(JobError::Internal {
                message: format!("configuring fuel: {err}"),
            }),
            stats: RunStats::default(),
            log: String::new(),
            progress: None,
        };
    }
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(on_epoch_tick);

    let job = bindings::taskbox::task::types::JobInfo {
        id: info.id,
        task: task.clone(),
        attempt: info.attempt,
        max_attempts: info.max_attempts,
        queue: info.queue,
        enqueued_at: unix_millis(info.enqueued_at),
        deadline: unix_millis(SystemTime::now() + limits.timeout),
    };

    let mut instantiate = Duration::ZERO;
    let result = {
        let call = async {
            match module.entry() {
                Entry::Task(pre) => {
                    let instance = pre.instantiate_async(&mut store).await?;
                    instantiate = started.elapsed();
                    instance.call_run(&mut store, &task, &input, &job).await
                }
                Entry::Command(pre) => {
                    let command = pre.instantiate_async(&mut store).await?;
                    instantiate = started.elapsed();
                    exit_status(command.wasi_cli_run().call_run(&mut store).await)
                }
            }
        };
        // A guest back in WebAssembly is stopped by the epoch callback, which the allocator
        // brings forward when the job passes its limit; this stops one waiting in a host call,
        // when its task next wakes.
        let host_memory_exceeded = std::future::poll_fn(|_| match host_memory.exceeded() {
            true => Poll::Ready(()),
            false => Poll::Pending,
        });
        // The epoch callback stops a computing guest; these two stop one blocked in a host
        // call, by dropping the call.
        tokio::select! {
            biased;
            () = cancel.cancelled() => Err(Stopped::Cancelled),
            () = host_memory_exceeded => Err(Stopped::HostMemory),
            result = tokio::time::timeout_at(deadline.into(), call) => match result {
                Ok(result) => result.map_err(Stopped::Failed),
                Err(_elapsed) => Err(Stopped::Deadline),
            },
        }
    };

    let state = store.data();
    let (result, output_size) = match &stdout {
        Some(stdout) => match (result, stdout.contents()) {
            (Ok(Ok(_)), (kept, written)) => (Ok(Ok(kept)), written),
            // A program that failed is reported as failed, however much it wrote.
            (other, _) => (other, 0),
        },
        None => {
            let size = match &result {
                Ok(Ok(output)) => output.len(),
                _ => 0,
            };
            (result, size)
        }
    };
    let outcome = match result {
        _ if output_size > limits.output_bytes => Err(JobError::OutputTooLarge {
            size: output_size as u64,
            limit: limits.output_bytes as u64,
        }),
        Ok(Ok(output)) => Ok(output),
        Ok(Err(task_error)) => Err(match JobError::from(task_error) {
            JobError::TaskError {
                retryable,
                retry_after_ms,
                message,
            } => JobError::TaskError {
                retryable,
                retry_after_ms,
                // Secrets are hidden first: a cut through one must not leave half of it.
                message: guest_text::truncate(
                    config::redact(message, &state.config),
                    limits.error_bytes,
                ),
            },
            other => other,
        }),
        Err(Stopped::Deadline) => Err(timeout(&limits)),
        Err(Stopped::Cancelled) => Err(JobError::Cancelled),
        Err(Stopped::HostMemory) => Err(JobError::HostMemoryLimit {
            limit: limits.host_memory,
        }),
        Err(Stopped::Failed(err)) => Err(classify(&err, &limits, state.limiter.limit_hit())),
    };
    JobReport {
        outcome,
        stats: RunStats {
            fuel_used: match store.get_fuel() {
                Ok(left) => limits.fuel.saturating_sub(left),
                Err(_metering_off) => 0,
            },
            wall_time: started.elapsed(),
            peak_memory: state.limiter.peak(),
            peak_host_memory: host_memory.peak(),
            denied_egress: calls.http_denied.load(Ordering::Relaxed),
            instantiate,
            calls: calls.counts(),
        },
        log: config::redact(state.log.finish(), &state.config),
        progress: state.progress.latest.clone(),
    }
}

/// A command's exit as a task's result: exit 0 succeeds (the output is its stdout), any
/// other status is a fatal task error. A command has no network and no files, so what made
/// it fail would make it fail again; and WASI 0.2 carries only success or failure, not the
/// status itself, so a program could not ask for a retry anyway.
fn exit_status(
    exit: wasmtime::Result<Result<(), ()>>,
) -> wasmtime::Result<Result<Vec<u8>, bindings::taskbox::task::types::TaskError>> {
    use bindings::taskbox::task::types::TaskError;
    let succeeded = match exit {
        Ok(status) => status.is_ok(),
        Err(err) => match err.downcast_ref::<I32Exit>() {
            Some(I32Exit(code)) => *code == 0,
            None => return Err(err),
        },
    };
    Ok(match succeeded {
        true => Ok(Vec::new()),
        false => Err(TaskError::Fatal(
            "the program exited with a failure status (its stderr is in the job's log)".into(),
        )),
    })
}

/// How a call ended without returning.
enum Stopped {
    Failed(wasmtime::Error),
    Deadline,
    Cancelled,
    HostMemory,
}

/// Names the failure of a call that trapped or was interrupted.
fn classify(err: &wasmtime::Error, limits: &Limits, memory_limit_hit: bool) -> JobError {
    if let Some(interrupted) = err.downcast_ref::<Interrupted>() {
        return match interrupted {
            Interrupted::Deadline => timeout(limits),
            Interrupted::Cancelled => JobError::Cancelled,
            Interrupted::HostMemory => JobError::HostMemoryLimit {
                limit: limits.host_memory,
            },
        };
    }
    if let Some(exhausted) = err.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
        return JobError::Internal {
            message: format!("no free sandbox slot: {exhausted}"),
        };
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => JobError::OutOfFuel {
            budget: limits.fuel,
        },
        Some(Trap::StackOverflow) => JobError::StackOverflow,
        Some(Trap::Interrupt) => timeout(limits),
        // A guest whose allocation was refused usually aborts: report the cause, not the abort.
        _ if memory_limit_hit => JobError::MemoryLimit {
            limit: limits.memory,
        },
        Some(trap) => JobError::Trap {
            message: trap.to_string(),
        },
        None => JobError::Trap {
            message: format!("{err:#}"),
        },
    }
}

fn timeout(limits: &Limits) -> JobError {
    JobError::Timeout {
        timeout_ms: millis(limits.timeout),
    }
}

impl From<bindings::taskbox::task::types::TaskError> for JobError {
    fn from(error: bindings::taskbox::task::types::TaskError) -> Self {
        use bindings::taskbox::task::types::TaskError;
        match error {
            TaskError::Retryable(retry) => JobError::TaskError {
                retryable: true,
                retry_after_ms: retry.retry_after_ms,
                message: retry.message,
            },
            TaskError::Fatal(message) => JobError::TaskError {
                retryable: false,
                retry_after_ms: None,
                message,
            },
        }
    }
}

fn millis(duration: Duration) -> u64 {
    duration.as_millis().try_into().unwrap_or(u64::MAX)
}

fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, millis)
}
