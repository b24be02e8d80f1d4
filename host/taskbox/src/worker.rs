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
//! and never waits for a slot.
//!
//! What running jobs make Redis do never queues in front of that work, nor of the API's: their
//! events, enqueues and progress go out as [`JobWrites`], on a connection of their own, and
//! outcomes on another. When Redis refuses an outcome because it reached its `maxmemory`, the
//! worker keeps the outcome and its entry and tries again, and takes no new jobs until an
//! outcome is stored again: a job taken then could not store its own.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands as _, AsyncConnectionConfig};
use taskbox_runtime::{
    CancelHandle, JobError, JobInfo, JobReport, JobRequest, Limits, ModuleDigest, Runtime,
    TaskModule,
};
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

use crate::grants::{Grants, HostCapabilities, JobContext};
use crate::job_writes::JobWrites;
use crate::progress::{ProgressSlot, ProgressTarget, ProgressWriter};
use crate::queue::{Backoff, GROUP, MAX_RETRY_DELAY, Priority, Queue, WorkerInfo, unix_millis};

/// How long per-minute throughput counters are kept.
const COUNTER_RETENTION: Duration = Duration::from_secs(3600);

/// The most entries one call takes.
const MAX_BATCH: usize = 256;

/// The first wait before trying Redis again after a failure; it doubles up to [`RETRY_MOST`].
const RETRY_FIRST: Duration = Duration::from_millis(100);

/// The longest wait between tries.
const RETRY_MOST: Duration = Duration::from_secs(5);

/// The most outcomes one script call stores, and the most that wait for the next call; a job
/// whose outcome finds no room waits for it.
const OUTCOMES_AT_ONCE: usize = 512;

/// How long storing a batch of outcomes may wait for its reply. Only other outcomes are ahead
/// of it on its connection, but a batch can carry hundreds of results and logs.
const OUTCOME_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Stream entries this worker holds, by stream: those of its running jobs, from their
    /// start until their outcome is stored, and those read but waiting for a slot. Only these
    /// are heartbeated; an entry let go goes idle and is taken over by another worker.
    in_flight: Mutex<HashMap<String, HashSet<String>>>,
    /// Set when the grace period of a shutdown is over: running jobs are handed back.
    releasing: AtomicBool,
    started_at: SystemTime,
    grants: Grants,
    progress: ProgressWriter,
    outcomes: mpsc::Sender<(Outcome, Stored)>,
    /// True from an outcome Redis refused for its `maxmemory` until one is stored: no new
    /// jobs are taken meanwhile.
    redis_full: watch::Sender<bool>,
}

/// Cancel handles of the jobs this worker runs. A job's handle exists from just after its
/// start; a cancel that arrives in between is remembered for a while and applied when the
/// handle is made.
#[derive(Default)]
struct RunningJobs {
    handles: HashMap<String, CancelHandle>,
    early_cancels: HashMap<String, Instant>,
}

impl RunningJobs {
    /// How long a cancel for a job this worker does not (yet) run is remembered.
    const EARLY_CANCEL_MEMORY: Duration = Duration::from_secs(30);

    fn register(&mut self, job: &str) -> CancelHandle {
        let cancel = CancelHandle::new();
        if self.early_cancels.remove(job).is_some() {
            cancel.cancel();
        }
        self.handles.insert(job.to_owned(), cancel.clone());
        cancel
    }

    fn forget(&mut self, job: &str) {
        self.handles.remove(job);
    }

    fn cancel(&mut self, job: &str) {
        match self.handles.get(job) {
            Some(cancel) => cancel.cancel(),
            None => {
                self.early_cancels
                    .retain(|_, at| at.elapsed() < Self::EARLY_CANCEL_MEMORY);
                self.early_cancels.insert(job.to_owned(), Instant::now());
            }
        }
    }

    fn cancel_all(&self) {
        self.handles.values().for_each(CancelHandle::cancel);
    }
}

/// An attempt's outcome on its way to Redis. The writer stores whatever outcomes are ready
/// with one script call per queue, and answers each through its [`Stored`].
struct Outcome {
    queue: String,
    priority: Priority,
    entry: String,
    job: String,
    attempt: u32,
    outcome: &'static str,
    payload: Vec<u8>,
    kind: String,
    retry_delay: i64,
    log: String,
    stats: String,
    progress: String,
}

/// The writer's answer to one outcome: the job's new status (`None` when the attempt was
/// stale and refused), or the outcome handed back because Redis did not take it.
type Stored = oneshot::Sender<Result<Option<String>, NotStored>>;

/// An outcome Redis did not take, handed back to be sent again.
struct NotStored {
    outcome: Outcome,
    error: anyhow::Error,
    /// Redis refused it because it reached its `maxmemory`.
    out_of_memory: bool,
}

/// Stores outcomes in batches: while one batch is being written, the next one gathers.
async fn store_outcomes(queue: Queue, mut outcomes: mpsc::Receiver<(Outcome, Stored)>) {
    let mut batch = Vec::with_capacity(OUTCOMES_AT_ONCE);
    while outcomes.recv_many(&mut batch, OUTCOMES_AT_ONCE).await > 0 {
        let mut by_queue: HashMap<String, (Vec<Outcome>, Vec<Stored>)> = HashMap::new();
        for (outcome, stored) in batch.drain(..) {
            let (outcomes, answers) = by_queue.entry(outcome.queue.clone()).or_default();
            outcomes.push(outcome);
            answers.push(stored);
        }
        for (name, (outcomes, answers)) in by_queue {
            match finish_batch(&queue, &name, &outcomes).await {
                Ok(statuses) => {
                    count_outcomes(&queue, &name, &statuses).await;
                    for (stored, status) in answers.into_iter().zip(statuses) {
                        let _ = stored.send(Ok(status));
                    }
                }
                Err(err) => {
                    let out_of_memory = crate::queue::is_out_of_memory(&err);
                    for (outcome, stored) in outcomes.into_iter().zip(answers) {
                        let error = anyhow::anyhow!("storing the outcome failed: {err:#}");
                        let _ = stored.send(Err(NotStored {
                            outcome,
                            error,
                            out_of_memory,
                        }));
                    }
                }
            }
        }
    }
}

/// Adds stored outcomes to the queue's per-minute throughput counters.
async fn count_outcomes(queue: &Queue, name: &str, statuses: &[Option<String>]) {
    let completed = statuses
        .iter()
        .filter(|status| status.as_deref() == Some("completed"))
        .count();
    let failed = statuses
        .iter()
        .filter(|status| matches!(status.as_deref(), Some("retrying" | "dead")))
        .count();
    if completed + failed == 0 {
        return;
    }
    let minute = unix_millis(SystemTime::now()) / 60_000;
    let key = queue.keys(name).counts(minute);
    let counted: redis::RedisResult<()> = redis::pipe()
        .hincr(&key, "completed", completed)
        .ignore()
        .hincr(&key, "failed", failed)
        .ignore()
        .expire(&key, COUNTER_RETENTION.as_secs() as i64)
        .ignore()
        .query_async(&mut queue.connection())
        .await;
    if let Err(err) = counted {
        tracing::warn!("counting finished jobs failed: {err}");
    }
}

/// Stores `outcomes`, all of queue `name`, with one script call; one status per outcome.
async fn finish_batch(
    queue: &Queue,
    name: &str,
    outcomes: &[Outcome],
) -> anyhow::Result<Vec<Option<String>>> {
    let keys = queue.keys(name);
    let [high, normal, low] = keys.streams();
    let mut invocation = queue.scripts_finish_batch().key(keys.delayed());
    invocation
        .key(keys.dead())
        .key(high)
        .key(normal)
        .key(low)
        .arg(GROUP)
        .arg(queue.retention().as_secs())
        .arg(keys.done_channel())
        .arg(keys.job_prefix());
    for outcome in outcomes {
        let stream = 1 + outcome.priority.rank();
        invocation
            .arg(&outcome.entry)
            .arg(stream)
            .arg(&outcome.job)
            .arg(outcome.attempt)
            .arg(outcome.outcome)
            .arg(&outcome.payload)
            .arg(&outcome.kind)
            .arg(outcome.retry_delay)
            .arg(&outcome.log)
            .arg(&outcome.stats)
            .arg(&outcome.progress);
    }
    let replies: Vec<redis::Value> = invocation.invoke_async(&mut queue.connection()).await?;
    replies
        .into_iter()
        .map(|reply| match reply {
            redis::Value::Int(0) => Ok(None),
            reply => Ok(Some(redis::from_redis_value(reply)?)),
        })
        .collect()
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What `start_batch.lua` returns for a job that may run: attempt, max attempts, task,
/// module digest, input, timeout in ms, enqueue time, backoff as JSON, fuel, memory in
/// bytes (timeout, fuel and memory '' for the default), and tenant, module name, version and
/// chain depth ('' for 0).
type Started = (
    u32,
    u32,
    String,
    String,
    Vec<u8>,
    String,
    u64,
    String,
    String,
    String,
    (String, String, String, String),
);

/// A stream entry: which queue and stream it came from and the job it names.
struct Delivery {
    queue: String,
    priority: Priority,
    entry: String,
    job: String,
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

    /// The worker's counters.
    pub fn stats(&self) -> Arc<WorkerStats> {
        Arc::clone(&self.stats)
    }

    /// Runs until `shutdown` resolves, then stops fetching, lets running jobs finish within
    /// the grace period, and hands the rest back to the queue.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        for queue in &self.config.queues {
            self.create_groups(queue).await?;
        }
        let slots = Arc::new(Semaphore::new(self.config.concurrency));
        let background = [
            tokio::spawn(Arc::clone(&self).listen_for_cancels()),
            tokio::spawn(Arc::clone(&self).maintain()),
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

    /// Creates the consumer group of each of the queue's streams (and the streams), unless
    /// it exists.
    async fn create_groups(&self, queue: &str) -> anyhow::Result<()> {
        let mut conn = self.queue.connection();
        for stream in self.queue.keys(queue).streams() {
            let created: redis::RedisResult<()> =
                conn.xgroup_create_mkstream(&stream, GROUP, "0").await;
            if let Err(err) = created
                && err.code() != Some("BUSYGROUP")
            {
                return Err(err)
                    .with_context(|| format!("creating the consumer group of {stream}"));
            }
        }
        Ok(())
    }

    /// A connection of its own for blocking reads, which would hold up the shared one.
    async fn fetch_connection(&self) -> anyhow::Result<MultiplexedConnection> {
        let config =
            AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(10)));
        Ok(self
            .queue
            .client()
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }

    /// Takes jobs and starts them, as many at a time as there are free slots, until `stop`
    /// turns true. A round under way when it does is finished, never cut short.
    async fn fetch(self: Arc<Self>, slots: Arc<Semaphore>, mut stop: watch::Receiver<bool>) {
        let mut conn = None;
        // Entries a blocking read took beyond the free slots: held, and started first.
        let mut backlog = VecDeque::new();
        let mut retry_in = RETRY_FIRST;
        let takeover_every = self.config.visibility_timeout / 3;
        let mut next_takeover = tokio::time::Instant::now();
        let mut redis_full = self.redis_full.subscribe();
        loop {
            let permits = tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => break,
                permits = free_slots(&slots) => permits,
            };
            // A job taken while Redis refuses outcomes would only add one more to keep.
            tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => break,
                _ = redis_full.wait_for(|full| !*full) => {}
            }
            let take_over = tokio::time::Instant::now() >= next_takeover;
            if take_over {
                next_takeover = tokio::time::Instant::now() + takeover_every;
            }
            let round = self
                .fetch_round(permits, &mut backlog, &mut conn, take_over)
                .await;
            let Err(err) = round else {
                retry_in = RETRY_FIRST;
                continue;
            };
            tracing::warn!("taking jobs failed ({err:#}); trying again in {retry_in:?}");
            if lost_group(&err) {
                // Redis lost its data (or a stream was deleted): make the groups again.
                for queue in &self.config.queues {
                    if let Err(err) = self.create_groups(queue).await {
                        tracing::warn!("{err:#}");
                    }
                }
            }
            tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => break,
                () = tokio::time::sleep(retry_in) => {}
            }
            retry_in = (retry_in * 2).min(RETRY_MOST);
        }
        // Not started: another worker takes them over once they are idle.
        backlog.iter().for_each(|delivery| self.unhold(delivery));
    }

    /// One round of taking jobs for the slots of `permits`: first entries read before and
    /// waiting for a slot, then, when `take_over`, entries of workers that stopped
    /// heartbeating, then new entries, read and started in one script call per queue. When
    /// there are none, blocks (a second at most) until new entries arrive and starts them.
    async fn fetch_round(
        self: &Arc<Self>,
        mut permits: Vec<OwnedSemaphorePermit>,
        backlog: &mut VecDeque<Delivery>,
        conn: &mut Option<MultiplexedConnection>,
        take_over: bool,
    ) -> anyhow::Result<()> {
        let mut started = 0;
        if !backlog.is_empty() {
            let waited = backlog.drain(..permits.len().min(backlog.len())).collect();
            started += self.start_taken(waited, &mut permits).await?;
        }
        if take_over {
            started += self.take_over(&mut permits).await?;
        }
        for queue in &self.config.queues {
            if permits.is_empty() {
                return Ok(());
            }
            let taken = self.start_batch(queue, permits.len(), &[]).await?;
            started += self.launch(taken, &mut permits);
        }
        if started > 0 || permits.is_empty() {
            return Ok(());
        }
        let connection = match conn {
            Some(connection) => connection,
            None => conn.insert(self.fetch_connection().await?),
        };
        let mut read = match self.read(connection, permits.len()).await {
            Ok(read) => read,
            Err(err) => {
                *conn = None;
                return Err(err);
            }
        };
        // Each stream may give as many entries as there are slots: the rest wait, held.
        let waiting = read.split_off(permits.len().min(read.len()));
        waiting.iter().for_each(|delivery| self.hold(delivery));
        backlog.extend(waiting);
        self.start_taken(read, &mut permits).await?;
        Ok(())
    }

    /// One blocking read (a second at most) of up to `count` new entries per stream, over
    /// every stream of every queue served, most urgent first.
    async fn read(
        &self,
        conn: &mut MultiplexedConnection,
        count: usize,
    ) -> anyhow::Result<Vec<Delivery>> {
        let streams: Vec<(String, &String, Priority)> = self
            .config
            .queues
            .iter()
            .flat_map(|queue| {
                let keys = self.queue.keys(queue);
                Priority::ALL.map(|priority| (keys.stream(priority), queue, priority))
            })
            .collect();
        let names: Vec<&str> = streams.iter().map(|(name, ..)| name.as_str()).collect();
        let options = StreamReadOptions::default()
            .group(GROUP, &self.config.id)
            .count(count)
            .block(1000);
        let reply: Option<StreamReadReply> = conn
            .xread_options(&names, &vec![">"; names.len()], &options)
            .await?;
        let mut deliveries = Vec::new();
        for stream in reply.map(|reply| reply.keys).unwrap_or_default() {
            let Some((_, queue, priority)) = streams.iter().find(|(name, ..)| *name == stream.key)
            else {
                continue;
            };
            for entry in stream.ids {
                deliveries.push(Delivery {
                    queue: (*queue).clone(),
                    priority: *priority,
                    job: entry.get::<String>("id").unwrap_or_default(),
                    entry: entry.id,
                });
            }
        }
        deliveries.sort_by_key(|delivery| delivery.priority.rank());
        Ok(deliveries)
    }

    /// Starts entries this worker already took (by a blocking read or a takeover), no more
    /// than `permits`, with one script call per queue, and runs those that may run; returns
    /// how many. On a Redis error the entries are let go: they stay pending and are taken
    /// over once idle.
    async fn start_taken(
        self: &Arc<Self>,
        taken: Vec<Delivery>,
        permits: &mut Vec<OwnedSemaphorePermit>,
    ) -> anyhow::Result<usize> {
        let mut by_queue: HashMap<String, Vec<Delivery>> = HashMap::new();
        for delivery in taken {
            by_queue
                .entry(delivery.queue.clone())
                .or_default()
                .push(delivery);
        }
        let mut started = 0;
        let mut failed = None;
        for (queue, deliveries) in by_queue {
            match self.start_batch(&queue, 0, &deliveries).await {
                Ok(taken) => started += self.launch(taken, permits),
                Err(err) => {
                    deliveries.iter().for_each(|delivery| self.unhold(delivery));
                    failed = Some(err);
                }
            }
        }
        match failed {
            Some(err) => Err(err.context("starting jobs failed, they will run again")),
            None => Ok(started),
        }
    }

    /// Takes over entries idle past the visibility timeout (their worker stopped
    /// heartbeating), no more than `permits`, and starts them; returns how many ran.
    async fn take_over(
        self: &Arc<Self>,
        permits: &mut Vec<OwnedSemaphorePermit>,
    ) -> anyhow::Result<usize> {
        let mut conn = self.queue.connection();
        let mut started = 0;
        for queue in &self.config.queues {
            for priority in Priority::ALL {
                if permits.is_empty() {
                    return Ok(started);
                }
                let claimed: redis::streams::StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                    .arg(self.queue.keys(queue).stream(priority))
                    .arg(GROUP)
                    .arg(&self.config.id)
                    .arg(self.config.visibility_timeout.as_millis() as u64)
                    .arg("0-0")
                    .arg("COUNT")
                    .arg(permits.len())
                    .query_async(&mut conn)
                    .await?;
                let deliveries: Vec<Delivery> = claimed
                    .claimed
                    .into_iter()
                    .map(|entry| Delivery {
                        queue: queue.clone(),
                        priority,
                        job: entry.get::<String>("id").unwrap_or_default(),
                        entry: entry.id,
                    })
                    // Entries this worker holds went idle only because Redis was away longer
                    // than the visibility timeout: their jobs are still running here.
                    .filter(|delivery| !self.holds(delivery))
                    .inspect(|delivery| {
                        tracing::info!(entry = %delivery.entry, "taking over a job of a worker that stopped");
                    })
                    .collect();
                if !deliveries.is_empty() {
                    started += self.start_taken(deliveries, permits).await?;
                }
            }
        }
        Ok(started)
    }

    /// Runs each started job in a task of its own, with one of `permits`, holding its entry
    /// until its outcome is stored; lets go of the entries of the rest. Returns how many ran.
    fn launch(
        self: &Arc<Self>,
        taken: Vec<(Delivery, Option<Started>)>,
        permits: &mut Vec<OwnedSemaphorePermit>,
    ) -> usize {
        let mut launched = 0;
        for (delivery, started) in taken {
            let (Some(started), Some(permit)) = (started, permits.pop()) else {
                self.unhold(&delivery);
                continue;
            };
            self.hold(&delivery);
            let cancel = self.register(&delivery.job);
            let worker = Arc::clone(self);
            tokio::spawn(async move {
                if let Err(err) = worker.run_job(&delivery, started, cancel).await {
                    tracing::warn!(job = %delivery.job, "job not finished, it will run again: {err:#}");
                }
                worker.unhold(&delivery);
                worker.running().forget(&delivery.job);
                drop(permit);
            });
            launched += 1;
        }
        launched
    }

    /// Starts jobs with one script call: `read` new entries read by the script itself, then
    /// the `given` ones. Returns each entry with what its job needs to run, or `None` when it
    /// must not run (the script has dealt with it).
    async fn start_batch(
        &self,
        queue: &str,
        read: usize,
        given: &[Delivery],
    ) -> anyhow::Result<Vec<(Delivery, Option<Started>)>> {
        let keys = self.queue.keys(queue);
        let [high, normal, low] = keys.streams();
        let mut invocation = self.queue.scripts_start_batch().key(keys.dead());
        invocation
            .key(high)
            .key(normal)
            .key(low)
            .arg(&self.config.id)
            .arg(GROUP)
            .arg(self.queue.retention().as_secs())
            .arg(keys.job_prefix())
            .arg(keys.done_channel())
            .arg(read);
        for delivery in given {
            invocation
                .arg(&delivery.entry)
                .arg(&delivery.job)
                .arg(1 + delivery.priority.rank());
        }
        let replies: Vec<(String, usize, String, redis::Value)> = invocation
            .invoke_async(&mut self.queue.connection())
            .await?;
        replies
            .into_iter()
            .map(|(entry, stream, job, start)| {
                let delivery = Delivery {
                    queue: queue.to_owned(),
                    priority: Priority::ALL[stream.clamp(1, 3) - 1],
                    entry,
                    job,
                };
                let started = match start {
                    redis::Value::Int(0) => None,
                    start => Some(redis::from_redis_value(start)?),
                };
                Ok((delivery, started))
            })
            .collect()
    }

    /// Heartbeats the delivery's entry until [`Worker::unhold`].
    fn hold(&self, delivery: &Delivery) {
        let stream = self.queue.keys(&delivery.queue).stream(delivery.priority);
        self.in_flight()
            .entry(stream)
            .or_default()
            .insert(delivery.entry.clone());
    }

    /// Whether the delivery's entry is held by this worker.
    fn holds(&self, delivery: &Delivery) -> bool {
        let stream = self.queue.keys(&delivery.queue).stream(delivery.priority);
        self.in_flight()
            .get(&stream)
            .is_some_and(|entries| entries.contains(&delivery.entry))
    }

    /// Stops heartbeating the delivery's entry: if it is still pending, it goes idle and
    /// another worker takes it over.
    fn unhold(&self, delivery: &Delivery) {
        let stream = self.queue.keys(&delivery.queue).stream(delivery.priority);
        if let Some(entries) = self.in_flight().get_mut(&stream) {
            entries.remove(&delivery.entry);
        }
    }

    /// The cancel handle of a job that just started; already cancelled if a cancel for it
    /// arrived first.
    fn register(&self, job: &str) -> CancelHandle {
        self.running().register(job)
    }

    /// Runs one attempt in a fresh sandbox and stores its outcome.
    async fn run_job(
        &self,
        delivery: &Delivery,
        started: Started,
        cancel: CancelHandle,
    ) -> anyhow::Result<()> {
        let (
            attempt,
            max_attempts,
            task,
            digest,
            input,
            timeout_ms,
            created_at,
            backoff,
            fuel,
            memory,
            (tenant, module_name, version, depth),
        ) = started;
        let keys = self.queue.keys(&delivery.queue);
        let slot = Arc::new(ProgressSlot::default());
        let context = JobContext {
            id: delivery.job.clone(),
            tenant,
            module: module_name,
            version,
            depth: depth.parse().unwrap_or(0),
        };
        let loaded = match self.module(&digest).await {
            Ok(module) => self
                .grants
                .for_job(&context)
                .await
                .map(|grants| (module, grants)),
            Err(err) => Err(err),
        };
        let report = match loaded {
            Ok((module, grants)) => {
                let request = JobRequest {
                    task,
                    input,
                    info: JobInfo {
                        id: delivery.job.clone(),
                        module: context.module,
                        attempt,
                        max_attempts,
                        queue: delivery.queue.clone(),
                        enqueued_at: UNIX_EPOCH + Duration::from_millis(created_at),
                    },
                    limits: grants.limits.narrow(Limits {
                        timeout: timeout_ms
                            .parse()
                            .map_or(self.config.limits.timeout, Duration::from_millis),
                        fuel: fuel.parse().unwrap_or(self.config.limits.fuel),
                        memory: memory.parse().unwrap_or(self.config.limits.memory),
                        ..self.config.limits
                    }),
                    cancel,
                    progress: Some(slot.sink()),
                    capabilities: grants.capabilities,
                };
                let to = ProgressTarget {
                    keys,
                    job: delivery.job.clone(),
                    tenant: context.tenant,
                };
                let run = self.runtime.run(&module, request);
                self.progress.while_running(&to, &slot, run).await
            }
            Err(err) => JobReport {
                outcome: Err(err),
                stats: Default::default(),
                log: String::new(),
                progress: None,
            },
        };
        let backoff: Backoff = serde_json::from_str(&backoff).unwrap_or_default();
        self.finish(delivery, attempt, report, &backoff).await
    }

    /// Stores an attempt's outcome. While Redis fails it tries again with capped backoff,
    /// the entry still held, so that no other worker runs the job again; it gives up only
    /// when handing jobs back after a shutdown's grace period.
    async fn finish(
        &self,
        delivery: &Delivery,
        attempt: u32,
        report: JobReport,
        backoff: &Backoff,
    ) -> anyhow::Result<()> {
        let (name, payload, kind, retry_delay) = match &report.outcome {
            Ok(output) => ("completed", output.clone(), String::new(), -1i64),
            Err(JobError::Cancelled) if self.releasing.load(Ordering::SeqCst) => {
                ("released", Vec::new(), String::new(), -1)
            }
            Err(err @ JobError::Cancelled) => {
                ("cancelled", error_json(err), err.kind().to_owned(), -1)
            }
            Err(err) => {
                let delay = match err {
                    err if !err.is_retryable() => -1,
                    JobError::TaskError {
                        retry_after_ms: Some(after),
                        ..
                    } => retry_delay_ms(Duration::from_millis(*after)),
                    _ => retry_delay_ms(backoff.delay(attempt, rand::random::<f64>())),
                };
                ("failed", error_json(err), err.kind().to_owned(), delay)
            }
        };
        let mut outcome = Outcome {
            queue: delivery.queue.clone(),
            priority: delivery.priority,
            entry: delivery.entry.clone(),
            job: delivery.job.clone(),
            attempt,
            outcome: name,
            payload,
            kind,
            retry_delay,
            log: report.log,
            stats: serde_json::to_string(&report.stats)?,
            progress: match &report.progress {
                Some(progress) => serde_json::to_string(progress)?,
                None => String::new(),
            },
        };
        let mut retry_in = RETRY_FIRST;
        let status = loop {
            let (stored, status) = oneshot::channel();
            self.outcomes
                .send((outcome, stored))
                .await
                .map_err(|_| anyhow::anyhow!("the outcome writer stopped"))?;
            match status.await? {
                Ok(status) => {
                    if self.redis_full.send_replace(false) {
                        tracing::info!("Redis took an outcome again: taking new jobs again");
                    }
                    break status;
                }
                Err(not_stored) if self.releasing.load(Ordering::SeqCst) => {
                    return Err(not_stored.error);
                }
                Err(not_stored) => {
                    if not_stored.out_of_memory {
                        if !self.redis_full.send_replace(true) {
                            tracing::warn!(
                                "Redis is full (it reached its maxmemory): taking no new jobs \
                                 until it stores outcomes again"
                            );
                        }
                        tracing::warn!(job = %delivery.job, attempt, "Redis is full, so the outcome waits here, the job still held; trying again in {retry_in:?}");
                    } else {
                        tracing::warn!(job = %delivery.job, attempt, "{:#}; trying again in {retry_in:?}", not_stored.error);
                    }
                    outcome = not_stored.outcome;
                    tokio::time::sleep(retry_in).await;
                    retry_in = (retry_in * 2).min(RETRY_MOST);
                }
            }
        };
        let counter = match status.as_deref() {
            None => {
                tracing::warn!(job = %delivery.job, attempt, "outcome refused: a newer attempt owns the job");
                &self.stats.stale_rejected
            }
            Some("completed") => &self.stats.completed,
            Some("pending") => &self.stats.released,
            Some(_) => &self.stats.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The module with this digest: from the runtime's cache, else loaded once however many
    /// jobs ask for it at the same time.
    async fn module(&self, digest: &str) -> Result<Arc<TaskModule>, JobError> {
        if let Ok(parsed) = digest.parse::<ModuleDigest>()
            && let Some(module) = self.runtime.cached(parsed)
        {
            return Ok(module);
        }
        let cell = Arc::clone(self.loading().entry(digest.to_owned()).or_default());
        let loaded = cell
            .get_or_try_init(|| async {
                let bytes =
                    self.queue
                        .module_bytes(digest)
                        .await
                        .map_err(|err| JobError::Internal {
                            message: format!("{err:#}"),
                        })?;
                let runtime = Arc::clone(&self.runtime);
                tokio::task::spawn_blocking(move || runtime.load(&bytes))
                    .await
                    .map_err(|err| JobError::Internal {
                        message: format!("compiling the module panicked: {err}"),
                    })?
            })
            .await
            .cloned();
        let mut loading = self.loading();
        if loading
            .get(digest)
            .is_some_and(|current| Arc::ptr_eq(current, &cell))
        {
            loading.remove(digest);
        }
        loaded
    }

    /// Stops running jobs when asked on a queue's cancel channel.
    async fn listen_for_cancels(self: Arc<Self>) {
        loop {
            if let Err(err) = self.try_listen_for_cancels().await {
                tracing::warn!("listening for cancellations failed ({err:#}); listening again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }

    async fn try_listen_for_cancels(&self) -> anyhow::Result<()> {
        use futures_util::StreamExt as _;
        let mut pubsub = self.queue.client().get_async_pubsub().await?;
        for queue in &self.config.queues {
            pubsub
                .subscribe(self.queue.keys(queue).cancel_channel())
                .await?;
        }
        let mut messages = pubsub.on_message();
        while let Some(message) = messages.next().await {
            let job = String::from_utf8_lossy(message.get_payload_bytes()).into_owned();
            self.running().cancel(&job);
        }
        anyhow::bail!("the subscription ended")
    }

    /// Promotes due delayed jobs and heartbeats held entries, forever. Never waits for a
    /// slot: a worker busy with long jobs keeps them.
    async fn maintain(self: Arc<Self>) {
        let heartbeat_every = self.config.visibility_timeout / 3;
        // The first round reports the worker and heartbeats at once.
        let mut last_heartbeat = tokio::time::Instant::now()
            .checked_sub(heartbeat_every)
            .unwrap_or_else(tokio::time::Instant::now);
        let mut promote = tokio::time::interval(Duration::from_millis(50));
        loop {
            promote.tick().await;
            for queue in &self.config.queues {
                if let Err(err) = self.promote(queue).await {
                    tracing::warn!("promoting delayed jobs of {queue} failed: {err:#}");
                }
            }
            if last_heartbeat.elapsed() >= heartbeat_every {
                last_heartbeat = tokio::time::Instant::now();
                if let Err(err) = self.queue.report_worker(&self.report()).await {
                    tracing::warn!("reporting this worker failed: {err:#}");
                }
                for queue in &self.config.queues {
                    if let Err(err) = self.heartbeat(queue).await {
                        tracing::warn!("heartbeat of {queue} failed: {err:#}");
                    }
                }
            }
        }
    }

    /// Moves the queue's due delayed jobs and retries onto its streams.
    async fn promote(&self, queue: &str) -> anyhow::Result<()> {
        let keys = self.queue.keys(queue);
        let [high, normal, low] = keys.streams();
        let _moved: u64 = self
            .queue
            .scripts_promote()
            .key(keys.delayed())
            .key(high)
            .key(normal)
            .key(low)
            .arg(1000)
            .arg(keys.job_prefix())
            .invoke_async(&mut self.queue.connection())
            .await?;
        Ok(())
    }

    /// Re-claims the held entries of the queue's streams, which resets their idle time.
    async fn heartbeat(&self, queue: &str) -> anyhow::Result<()> {
        let mut conn = self.queue.connection();
        for stream in self.queue.keys(queue).streams() {
            let ids: Vec<String> = self
                .in_flight()
                .get(&stream)
                .map(|entries| entries.iter().cloned().collect())
                .unwrap_or_default();
            if ids.is_empty() {
                continue;
            }
            let _: redis::Value = redis::cmd("XCLAIM")
                .arg(&stream)
                .arg(GROUP)
                .arg(&self.config.id)
                .arg(0)
                .arg(&ids)
                .arg("JUSTID")
                .query_async(&mut conn)
                .await?;
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
            started_at: unix_millis(self.started_at),
            last_heartbeat: unix_millis(SystemTime::now()),
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, RunningJobs> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashSet<String>>> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn loading(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, Arc<OnceCell<Arc<TaskModule>>>>> {
        self.loading.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The free slots, no more than [`MAX_BATCH`]; waits until there is one at least.
async fn free_slots(slots: &Arc<Semaphore>) -> Vec<OwnedSemaphorePermit> {
    let first = Arc::clone(slots).acquire_owned().await;
    let mut permits = vec![first.expect("the slots are never closed")];
    while permits.len() < MAX_BATCH {
        match Arc::clone(slots).try_acquire_owned() {
            Ok(permit) => permits.push(permit),
            Err(_) => break,
        }
    }
    permits
}

/// Whether Redis refused a read because a consumer group is gone: it lost its data, or a
/// stream was deleted. Reads fail so until the groups are made again.
fn lost_group(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<redis::RedisError>()
            .is_some_and(|err| err.code() == Some("NOGROUP"))
    })
}

/// A retry's wait in milliseconds for `finish_batch.lua`, no longer than
/// [`MAX_RETRY_DELAY`]: a task's `retry_after` can be any `u64`, and a cast would wrap it
/// negative, which the script reads as "no retry".
fn retry_delay_ms(delay: Duration) -> i64 {
    i64::try_from(delay.min(MAX_RETRY_DELAY).as_millis()).unwrap_or(i64::MAX)
}

fn error_json(err: &JobError) -> Vec<u8> {
    let mut value = serde_json::to_value(err).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.insert("message".into(), err.to_string().into());
    }
    value.to_string().into_bytes()
}

/// This machine's name, as far as the environment says.
/// This process's resident set, from `/proc/self/status` (Linux).
fn resident_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

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
