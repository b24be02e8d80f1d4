//! Workers: take jobs from the queue's streams and run each in a fresh sandbox.
//!
//! Delivery is at least once. A job's stream entry is acknowledged only by the script that
//! stores its outcome. While a worker holds entries it heartbeats them (XCLAIM to itself
//! resets their idle time); entries idle past the visibility timeout belong to a worker that
//! died and are taken over (XAUTOCLAIM) by any other worker. Every outcome write is fenced by
//! the attempt number and the stream entry, so a worker that was presumed dead cannot
//! overwrite a newer attempt, not even one of a new series after a retry from the dead
//! letters.
//!
//! One task per worker takes jobs (`fetch`), always with free slots in hand, so it never
//! holds an entry it cannot start; another (`maintain`) heartbeats and promotes delayed jobs
//! and never waits for a slot; a third (`trim_history`) drops finished jobs' results and
//! records past their retention.
//!
//! What running jobs make Redis do never queues in front of that work, nor of the API's: their
//! events, enqueues and progress go out as [`JobWrites`], on a connection of their own, and
//! outcomes on another. When Redis refuses an outcome because it reached its `maxmemory`, the
//! worker keeps the outcome and its entry and tries again, and takes no new jobs until an
//! outcome is stored again: a job taken then could not store its own.

//! The worker's parts, one file per concern: [`fetch`] takes entries and starts their jobs,
//! [`run`] runs them, [`outcome`] stores what they did, [`heartbeat`] keeps held entries alive,
//! promotes delayed jobs, takes over those of lost workers and trims the history, [`cancel`]
//! stops running jobs on request, and [`modules`] loads each module once. Progress reports go
//! through [`crate::progress`].

mod cancel;
mod fetch;
mod heartbeat;
mod modules;
mod outcome;
mod run;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use taskbox_runtime::{Limits, Runtime, TaskModule};
use tokio::sync::{OnceCell, Semaphore, mpsc, watch};

use crate::grants::Grants;
use crate::job_writes::JobWrites;
use crate::model::capabilities::HostCapabilities;
use crate::model::unix_millis;
use crate::progress::ProgressWriter;
use crate::queue::{FinishedAttempt, Queue, WorkerInfo};

use cancel::RunningJobs;
use heartbeat::Held;
use outcome::{OUTCOME_REPLY_TIMEOUT, OUTCOMES_AT_ONCE, Stored, store_outcomes};

/// The first wait before trying Redis again after a failure; it doubles up to [`RETRY_MOST`].
const RETRY_FIRST: Duration = Duration::from_millis(100);

/// The longest wait between tries.
const RETRY_MOST: Duration = Duration::from_secs(5);

/// Environment variable for the number of jobs a worker runs at once.
pub const ENV_CONCURRENCY: &str = "TASKBOX_CONCURRENCY";

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The queues to serve.
    pub queues: Vec<String>,
    /// Jobs run at once.
    pub concurrency: usize,
    /// Stream entries idle this long belong to a dead worker and are run again.
    pub visibility_timeout: Duration,
    /// At shutdown, how long running jobs may take to finish before they are handed back.
    pub grace: Duration,
    /// This worker's name in the consumer groups.
    pub id: String,
    /// What the host offers the modules' capabilities.
    pub capabilities: HostCapabilities,
    /// The limits every job runs with; its module's timeout, fuel and memory replace these.
    pub limits: Limits,
}

impl WorkerConfig {
    /// 16 jobs at once on the default queue, 30 s visibility timeout, 25 s grace.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            queues: vec![crate::queue::DEFAULT_QUEUE.to_owned()],
            concurrency: 16,
            visibility_timeout: Duration::from_secs(30),
            grace: Duration::from_secs(25),
            id: id.into(),
            capabilities: HostCapabilities::default(),
            limits: Limits::default(),
        }
    }
}

/// Counters a worker keeps.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Jobs that completed.
    pub completed: AtomicU64,
    /// Attempts that failed (retried or dead).
    pub failed: AtomicU64,
    /// Outcomes refused because a newer attempt owned the job (this worker was presumed dead).
    pub stale_rejected: AtomicU64,
    /// Jobs handed back to the queue at shutdown.
    pub released: AtomicU64,
}

/// One worker process's job runner.
pub struct Worker {
    queue: Queue,
    runtime: Arc<Runtime>,
    config: WorkerConfig,
    stats: Arc<WorkerStats>,
    /// Modules being loaded, by digest: the cell makes concurrent first jobs of a module wait
    /// for one compile instead of each compiling it. A cell is removed once its load ends, so
    /// this holds no more than the jobs running; loaded modules are in the runtime's cache.
    loading: Mutex<HashMap<String, Arc<OnceCell<Arc<TaskModule>>>>>,
    running: Mutex<RunningJobs>,
    /// Stream entries this worker holds, by partition and stream: those of its running jobs,
    /// from their start until their outcome is stored, and those read but waiting for a
    /// slot. Only these are heartbeated; an entry let go goes idle and is taken over by
    /// another worker. A partition's sets are made when it is first held, and kept.
    in_flight: Mutex<HashMap<String, Held>>,
    /// Set when the grace period of a shutdown is over: running jobs are handed back.
    releasing: AtomicBool,
    started_at: SystemTime,
    grants: Grants,
    progress: ProgressWriter,
    outcomes: mpsc::Sender<(FinishedAttempt, Stored)>,
    /// True from an outcome Redis refused for its `maxmemory` until one is stored: no new
    /// jobs are taken meanwhile.
    redis_full: watch::Sender<bool>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker for `queue` that runs jobs in `runtime`.
    pub fn new(queue: Queue, runtime: Arc<Runtime>, config: WorkerConfig) -> Arc<Self> {
        let writes = JobWrites::new(&queue);
        let progress = ProgressWriter::new(writes.clone());
        let grants = Grants::new(config.capabilities.clone(), queue.clone(), writes);
        let (outcomes, to_store) = mpsc::channel(OUTCOMES_AT_ONCE);
        tokio::spawn(store_outcomes(
            queue.with_own_connection(OUTCOME_REPLY_TIMEOUT),
            to_store,
        ));
        Arc::new(Self {
            queue,
            runtime,
            config,
            stats: Arc::default(),
            loading: Mutex::default(),
            running: Mutex::default(),
            in_flight: Mutex::default(),
            releasing: AtomicBool::new(false),
            grants,
            started_at: SystemTime::now(),
            progress,
            outcomes,
            redis_full: watch::Sender::new(false),
        })
    }

    /// The tags of the partitions of the worker's queues that are not paused.
    pub(super) async fn partitions(&self) -> anyhow::Result<Vec<String>> {
        self.queue
            .runnable_partition_tags(&self.config.queues)
            .await
    }

    /// The worker's counters.
    pub fn stats(&self) -> Arc<WorkerStats> {
        Arc::clone(&self.stats)
    }

    /// Runs until `shutdown` resolves, then stops fetching, lets running jobs finish within
    /// the grace period, and hands the rest back to the queue.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        // Paused queues too: they are read once resumed.
        for partition in self.queue.partition_tags(&self.config.queues).await? {
            self.queue.create_groups(&partition).await?;
            let indexed = self.queue.index_dead_letters(&partition).await?;
            if indexed > 0 {
                tracing::info!("indexed {indexed} dead jobs of {partition} for listings");
            }
        }
        let slots = Arc::new(Semaphore::new(self.config.concurrency));
        crate::metrics::metrics().worker_slots(self.config.concurrency);
        let background = [
            tokio::spawn(Arc::clone(&self).listen_for_cancels()),
            tokio::spawn(Arc::clone(&self).maintain()),
            tokio::spawn(Arc::clone(&self).trim_history()),
        ];
        // Fetching is told to stop rather than dropped: a script call under way may have
        // marked jobs running, and those must be run.
        let (stop, stopping) = watch::channel(false);
        let stop_at_shutdown = async {
            shutdown.await;
            tracing::info!(worker = %self.config.id, "shutting down: no new jobs");
            let _ = stop.send(true);
        };
        tokio::join!(
            Arc::clone(&self).fetch(Arc::clone(&slots), stopping),
            stop_at_shutdown
        );
        let all = self.config.concurrency as u32;
        if tokio::time::timeout(self.config.grace, slots.acquire_many(all))
            .await
            .is_err()
        {
            tracing::info!("grace period over: handing unfinished jobs back to the queue");
            self.releasing.store(true, Ordering::SeqCst);
            self.running().cancel_all();
            let _all_back = slots.acquire_many(all).await;
        }
        for task in background {
            task.abort();
        }
        Ok(())
    }

    /// How this worker is doing, for `GET /v1/workers`.
    fn report(&self) -> WorkerInfo {
        WorkerInfo {
            id: self.config.id.clone(),
            host: host_name(),
            pid: std::process::id(),
            queues: self.config.queues.clone(),
            concurrency: self.config.concurrency,
            in_flight: self.running().handles.len(),
            resident_memory: resident_memory().unwrap_or(0),
            memory_bound: self.runtime.memory_bound(
                self.config.concurrency as u64,
                self.config
                    .capabilities
                    .policy
                    .max_memory
                    .max(self.config.limits.memory),
                self.config.limits.host_memory,
            ),
            stale_outcomes: self.stats.stale_rejected.load(Ordering::Relaxed),
            started_at: unix_millis(self.started_at),
            last_heartbeat: unix_millis(SystemTime::now()),
        }
    }
}

/// This process's resident set, from `/proc/self/status` (Linux).
fn resident_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// This machine's name, as far as the environment says.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "host".into())
}

/// A worker id unique to this process: host, pid and start time.
pub fn default_worker_id() -> String {
    let host = host_name();
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{host}-{}-{started}", std::process::id())
}
