//! The Redis job queue: enqueue, inspect, wait for, cancel and retry jobs.
//!
//! Queues are Redis Streams read through one consumer group; a job is a hash; delayed jobs
//! and retries wait in one sorted set per queue; dead letters are a stream. Every state
//! transition that touches more than one key is one Lua script (`lua/*.lua`, each with a
//! header naming its KEYS, ARGV and return value).

mod attempts;
mod bulk;
#[cfg(test)]
mod fields;
mod history;
mod partitions;
mod pause;
mod query;

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::bail;
use futures_util::future::BoxFuture;
use futures_util::{StreamExt as _, TryFutureExt as _};
use redis::{AsyncCommands as _, Script};
use taskbox_runtime::guest_text::quote;
use taskbox_runtime::trace::TraceParent;

use crate::events::{Events, JobEvent, JobEventKind};
use crate::metrics::metrics;
use crate::model::job::{Backoff, JobRecord, JobStatus, Priority};
use crate::model::module::ModuleVersion;
use crate::model::names::validate_name;
use crate::model::{millis, unix_millis};
use crate::store::keys::{self, QueueKeys};
use crate::store::{Connection, Store, TimedInvoke as _};

pub(crate) use attempts::{Delivery, Ending, FinishedAttempt, StartedJob};
pub use bulk::{BulkAction, BulkProgress};
pub use history::{
    DEFAULT_HISTORY_CAP, DEFAULT_HISTORY_RETENTION, DEFAULT_RESULT_RETENTION, HistorySettings,
    Trimmed,
};
use partitions::PartitionTags;
pub use partitions::{MAX_PARTITIONS, PartitionError};
pub use pause::CACHED_FOR as PAUSE_CACHED_FOR;
use pause::PausedQueues;
pub use query::{
    BadCursor, InputMatch, JobFilter, JobPage, MAX_INPUT_MATCH, Period, PeriodCounts,
    PriorityCounts, QueueStats, WorkerInfo,
};

/// The queue jobs go to when none is named.
pub const DEFAULT_QUEUE: &str = "default";
/// The consumer group of every stream.
pub(crate) const GROUP: &str = "workers";
/// Retries after the first attempt when neither the task nor the caller says.
pub const DEFAULT_MAX_RETRIES: u32 = 3;
/// The longest a failed job waits for its retry. A task's `retry_after` (or a backoff)
/// asking for more waits this long.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(24 * 3600);

/// Options of one enqueue; all have defaults.
#[derive(Debug, Clone, Default)]
pub struct EnqueueOptions {
    /// The queue; the task's queue in the manifest, else [`DEFAULT_QUEUE`], when none.
    pub queue: Option<String>,
    /// The priority; the task's in the manifest, else normal, when none.
    pub priority: Option<Priority>,
    /// Run no earlier than this from now.
    pub delay: Option<Duration>,
    /// Run no earlier than this time (wins over `delay`).
    pub run_at: Option<SystemTime>,
    /// Retries after the first attempt; the manifest's, else [`DEFAULT_MAX_RETRIES`], when
    /// none.
    pub max_retries: Option<u32>,
    /// The wall-clock limit of each attempt; the manifest's, else the runtime's default,
    /// when none.
    pub timeout: Option<Duration>,
    /// The retry backoff; the manifest's, else [`Backoff::default`], when none.
    pub backoff: Option<Backoff>,
    /// Enqueueing twice with the same key returns the first job's id.
    pub idempotency_key: Option<String>,
    /// The W3C trace context the job continues, when nothing exports this process's spans.
    pub trace: Option<TraceParent>,
    /// Stored with the job as given.
    pub metadata: Option<serde_json::Value>,
    /// The job that enqueued this one.
    pub parent: Option<Parent>,
    /// Answer only once a replica of the job's Redis has it (`WAIT 1`), so that a failover
    /// right after the answer cannot lose it; see [`Enqueued::replicated`].
    pub durable: bool,
}

/// The job that enqueued a job, as the child records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parent {
    /// The parent's id.
    pub id: String,
    /// The child's depth in its chain: 1 for a job enqueued by a job enqueued from outside.
    pub depth: u32,
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// The module: `name` (its highest version) or `name@version`.
    pub module: String,
    /// The task in the module.
    pub task: String,
    /// The input bytes (JSON by convention).
    pub input: Vec<u8>,
    /// How to enqueue it.
    pub options: EnqueueOptions,
}

/// The longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 200;
/// The longest module version a job may name, in bytes.
pub const MAX_VERSION_LEN: usize = 128;
/// The furthest ahead a job may be delayed (by `delay` or `run_at`).
pub const MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Why a job is refused before anything of it is written. Messages quote at most the start
/// of a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidJob {
    /// The input is larger than the host accepts.
    #[error("the input is {size} bytes, more than the {max} bytes allowed")]
    InputTooLarge {
        /// The input's size.
        size: usize,
        /// The cap.
        max: usize,
    },
    /// A field is not valid.
    #[error("field `{field}`: {message}")]
    Field {
        /// The field: `module`, `task`, `queue`, `idempotency_key`, `delay` or `run_at`.
        field: &'static str,
        /// Why.
        message: String,
    },
}

impl NewJob {
    /// Checks what the job's enqueuer chose: names, sizes and delays. The API checks every
    /// job it is given with this, and so does a task's `jobs.enqueue`; the scheduler's
    /// jobs come from checked schedules.
    pub fn check(&self, max_input: usize) -> Result<(), InvalidJob> {
        let field = |field, message: String| InvalidJob::Field { field, message };
        if self.input.len() > max_input {
            return Err(InvalidJob::InputTooLarge {
                size: self.input.len(),
                max: max_input,
            });
        }
        let (name, version) = match self.module.split_once('@') {
            Some((name, version)) => (name, Some(version)),
            None => (self.module.as_str(), None),
        };
        validate_name("module", name).map_err(|err| field("module", err.to_string()))?;
        if let Some(version) = version
            && (version.is_empty() || version.len() > MAX_VERSION_LEN)
        {
            return Err(field(
                "module",
                format!(
                    "the version is 1 to {MAX_VERSION_LEN} bytes, not {}",
                    version.len()
                ),
            ));
        }
        validate_name("task", &self.task).map_err(|err| field("task", err.to_string()))?;
        let options = &self.options;
        if let Some(queue) = &options.queue {
            validate_name("queue", queue).map_err(|err| field("queue", err.to_string()))?;
        }
        if let Some(key) = &options.idempotency_key {
            if key.is_empty()
                || key.len() > MAX_IDEMPOTENCY_KEY_LEN
                || key.contains(char::is_control)
            {
                return Err(field(
                    "idempotency_key",
                    format!(
                        "use 1 to {MAX_IDEMPOTENCY_KEY_LEN} bytes of printable characters, not {}",
                        quote(key)
                    ),
                ));
            }
            if key.starts_with(crate::model::cron::FIRE_KEY_PREFIX) {
                return Err(field(
                    "idempotency_key",
                    format!(
                        "keys starting with `{}` belong to cron schedules",
                        crate::model::cron::FIRE_KEY_PREFIX
                    ),
                ));
            }
        }
        if let Some(delay) = options.delay
            && delay > MAX_DELAY
        {
            return Err(field("delay", too_far(delay)));
        }
        if let Some(run_at) = options.run_at
            && let Ok(ahead) = run_at.duration_since(SystemTime::now())
            && ahead > MAX_DELAY
        {
            return Err(field("run_at", too_far(ahead)));
        }
        Ok(())
    }
}

fn too_far(ahead: Duration) -> String {
    format!(
        "{} ahead is further than the {} a job may wait",
        humantime::format_duration(Duration::from_secs(ahead.as_secs())),
        humantime::format_duration(MAX_DELAY)
    )
}

/// What an enqueue did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    /// The job's id.
    pub id: String,
    /// The queue it is on.
    pub queue: String,
    /// False when the idempotency key had been used: `id` is the earlier job's.
    pub created: bool,
    /// For a durable enqueue, whether a replica acknowledged the job within
    /// [`DURABLE_WAIT`]; None when durability was not asked for.
    pub replicated: Option<bool>,
}

/// Why jobs could not be enqueued. Nothing of the batch was enqueued.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// The module does not exist (for this tenant).
    #[error("{0}")]
    UnknownModule(String),
    /// The module has no such task.
    #[error("{0}")]
    UnknownTask(String),
    /// A queue name or another option is not valid.
    #[error("{0}")]
    Invalid(String),
    /// Redis failed.
    #[error(transparent)]
    Redis(#[from] anyhow::Error),
}

impl From<redis::RedisError> for EnqueueError {
    fn from(err: redis::RedisError) -> Self {
        Self::Redis(err.into())
    }
}

/// Why a dead job was not retried.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    /// Its input is gone: a finished job keeps it for the result retention only.
    #[error("its input is no longer kept (a finished job keeps it for the result retention)")]
    InputExpired,
    /// Redis failed.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// What cancelling did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job had not started and never will.
    Cancelled,
    /// The job is running; its worker has been told to stop it.
    Cancelling,
    /// The job had already finished with this status.
    AlreadyFinished(JobStatus),
}

/// How long a durable enqueue waits for a replica to acknowledge its jobs.
pub const DURABLE_WAIT: Duration = Duration::from_secs(2);

/// One partition's part of an enqueued batch: its jobs' places in the batch, the script call
/// that creates them, and whether any of them asked to be durable.
struct PartitionBatch<'a> {
    indexes: Vec<usize>,
    /// The task of each job, for the metrics.
    tasks: Vec<String>,
    invocation: redis::ScriptInvocation<'a>,
    durable: bool,
}

/// The Lua scripts, loaded once.
#[derive(Debug)]
struct Scripts {
    enqueue: Script,
    start_batch: Script,
    finish_batch: Script,
    promote: Script,
    cancel: Script,
    retry_dead: Script,
    drop_results: Script,
    forget: Script,
}

/// A script's source: its shared fragments from `lua/lib`, which define functions it calls,
/// then its own file.
macro_rules! source {
    ($file:literal $(, $fragment:literal)*) => {
        concat!(
            $(include_str!(concat!("lua/lib/", $fragment, ".lua")),)*
            include_str!(concat!("lua/", $file, ".lua"))
        )
    };
}

impl Scripts {
    /// The scripts for `store`; those that publish, with its way of publishing.
    fn new(store: &Store) -> Self {
        Self {
            enqueue: Script::new(source!("enqueue", "clock", "history")),
            start_batch: store.publishing_script(source!(
                "start_batch",
                "clock",
                "dead_letter",
                "history"
            )),
            finish_batch: store.publishing_script(source!(
                "finish_batch",
                "clock",
                "dead_letter",
                "history"
            )),
            promote: Script::new(source!("promote", "clock", "history")),
            cancel: store.publishing_script(source!("cancel", "clock", "history")),
            retry_dead: Script::new(source!("retry_dead", "history")),
            drop_results: Script::new(source!("drop_results")),
            forget: Script::new(source!("forget", "history")),
        }
    }
}

/// Finds the module version a job names, for [`Queue::enqueue_batch`]: the queue knows no
/// more of modules than this. The registry's `Modules` is the one taskbox uses.
pub trait ModuleSource: Send + Sync {
    /// Module `name` of `tenant` at `version`, or its highest version.
    fn resolve<'a>(
        &'a self,
        tenant: &'a str,
        name: &'a str,
        version: Option<&'a str>,
    ) -> BoxFuture<'a, Result<ModuleVersion, EnqueueError>>;
}

/// A client of the queue. Cheap to clone: clones share the store's connection.
#[derive(Clone)]
pub struct Queue {
    store: Store,
    modules: Arc<dyn ModuleSource>,
    scripts: Arc<Scripts>,
    partition_tags: Arc<PartitionTags>,
    paused: Arc<PausedQueues>,
    history: HistorySettings,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Queue {
    /// The queue in `store`, enqueueing jobs for the module versions `modules` finds.
    pub fn new(store: Store, modules: Arc<dyn ModuleSource>) -> Self {
        Self {
            scripts: Arc::new(Scripts::new(&store)),
            store,
            modules,
            partition_tags: Arc::default(),
            paused: Arc::default(),
            history: HistorySettings::default(),
        }
    }

    /// The Redis the queue is kept in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn keys(&self, queue: &str) -> QueueKeys {
        QueueKeys::new(self.store.prefix(), queue)
    }

    pub(crate) fn connection(&self) -> Connection {
        self.store.connection()
    }

    /// Sends `commands`, each on the keys of its queue, in one pipeline per queue (two
    /// queues' keys may lie in different cluster slots, and a pipeline reaches one node);
    /// the replies come back in the commands' order.
    pub(crate) async fn query_by_queue<T: redis::FromRedisValue>(
        &self,
        commands: Vec<(&str, redis::Cmd)>,
    ) -> redis::RedisResult<Vec<T>> {
        let count = commands.len();
        let mut pipes: BTreeMap<&str, (redis::Pipeline, Vec<usize>)> = BTreeMap::new();
        for (index, (queue, cmd)) in commands.into_iter().enumerate() {
            let (pipe, indexes) = pipes.entry(queue).or_default();
            pipe.add_command(cmd);
            indexes.push(index);
        }
        let replies = futures_util::future::try_join_all(pipes.values().map(|(pipe, _)| {
            let mut conn = self.connection();
            async move { pipe.query_async::<Vec<T>>(&mut conn).await }
        }))
        .await?;
        let mut ordered: Vec<Option<T>> = (0..count).map(|_| None).collect();
        for ((_, indexes), replies) in pipes.values().zip(replies) {
            for (index, reply) in indexes.iter().zip(replies) {
                ordered[*index] = Some(reply);
            }
        }
        Ok(ordered.into_iter().flatten().collect())
    }

    /// This queue on a connection of its own (see [`Store::with_own_connection`]).
    pub(crate) fn with_own_connection(&self, response_timeout: Duration) -> Self {
        Self {
            store: self.store.with_own_connection(response_timeout),
            ..self.clone()
        }
    }

    /// Enqueues one job for `tenant`.
    pub async fn enqueue(&self, tenant: &str, job: NewJob) -> Result<Enqueued, EnqueueError> {
        Ok(self.enqueue_batch(tenant, vec![job]).await?.remove(0))
    }

    /// Enqueues many jobs for `tenant` in one round trip. Each names a module of the tenant
    /// and a task its manifest declares; the manifest's settings fill in what the job leaves
    /// out. Each job keeps the trace context of this call's span (see [`taskbox_runtime::trace`]).
    #[tracing::instrument(name = "enqueue", skip_all, fields(%tenant, jobs = jobs.len()))]
    pub async fn enqueue_batch(
        &self,
        tenant: &str,
        jobs: Vec<NewJob>,
    ) -> Result<Vec<Enqueued>, EnqueueError> {
        let mut modules = HashMap::new();
        for job in &jobs {
            if !modules.contains_key(&job.module) {
                let (name, version) = match job.module.split_once('@') {
                    Some((name, version)) => (name, Some(version)),
                    None => (job.module.as_str(), None),
                };
                let module = self.modules.resolve(tenant, name, version).await?;
                modules.insert(job.module.clone(), module);
            }
        }
        // One script call per partition: a partition's keys share a slot, two partitions'
        // may not.
        let mut batches: BTreeMap<String, PartitionBatch> = BTreeMap::new();
        let count = jobs.len();
        let mut partitions = HashMap::new();
        for job in &jobs {
            let queue = queue_for(job, &modules)?;
            if let Entry::Vacant(entry) = partitions.entry(queue) {
                let tags = self.tags_of(entry.key()).await?;
                entry.insert(tags);
            }
        }
        for (index, job) in jobs.into_iter().enumerate() {
            let durable = job.options.durable;
            let queue = queue_for(&job, &modules)?;
            let key = job.options.idempotency_key.as_deref();
            let tags = &partitions[&queue];
            let tag = tags[partitions::pick(tags.len(), tenant, key)].clone();
            let batch = batches
                .entry(tag.clone())
                .or_insert_with_key(|tag| PartitionBatch {
                    indexes: Vec::new(),
                    tasks: Vec::new(),
                    invocation: self.enqueue_call(tenant, tag),
                    durable: false,
                });
            batch.tasks.push(job.task.clone());
            self.add_job(&mut batch.invocation, tenant, &tag, job, &modules)?;
            batch.indexes.push(index);
            batch.durable |= durable;
        }
        let mut known: Vec<&str> = batches.keys().map(|tag| keys::queue_of_tag(tag)).collect();
        known.dedup();
        let mut conn = self.connection();
        let register = conn
            .sadd::<_, _, ()>(keys::queues(self.store.prefix()), known)
            .map_err(EnqueueError::from);
        let sent = futures_util::future::try_join_all(batches.iter().map(|(tag, batch)| {
            let mut pipe = redis::pipe();
            pipe.invoke_script(&batch.invocation);
            if batch.durable {
                pipe.cmd("WAIT").arg(1).arg(DURABLE_WAIT.as_millis() as u64);
            }
            self.enqueue_pipeline(tag, pipe)
        }));
        let (replies, ()) = futures_util::future::try_join(sent, register).await?;
        let mut enqueued: Vec<Option<Enqueued>> = (0..count).map(|_| None).collect();
        for ((tag, batch), mut replies) in batches.iter().zip(replies) {
            let queue = keys::queue_of_tag(tag);
            let replicated = match batch.durable {
                true => {
                    let acknowledged = replies.pop().unwrap_or(redis::Value::Nil);
                    Some(
                        redis::from_redis_value::<u32>(acknowledged)
                            .map_err(redis::RedisError::from)?
                            > 0,
                    )
                }
                false => None,
            };
            let created: Vec<(String, u8)> =
                redis::from_redis_value(replies.into_iter().next().unwrap_or(redis::Value::Nil))
                    .map_err(redis::RedisError::from)?;
            for ((index, task), (id, created)) in
                batch.indexes.iter().zip(&batch.tasks).zip(created)
            {
                if created == 1 {
                    metrics().enqueued(tenant, queue, task, 1);
                }
                enqueued[*index] = Some(Enqueued {
                    id,
                    queue: queue.to_owned(),
                    created: created == 1,
                    replicated,
                });
            }
        }
        Ok(enqueued.into_iter().flatten().collect())
    }

    /// Runs one partition's enqueue call, loading the script first where it is not yet
    /// loaded.
    async fn enqueue_pipeline(
        &self,
        partition: &str,
        pipe: redis::Pipeline,
    ) -> Result<Vec<redis::Value>, EnqueueError> {
        let mut conn = self.connection();
        let started = std::time::Instant::now();
        let replies = pipe.query_async(&mut conn).await;
        metrics().script_call("enqueue", started.elapsed());
        match replies {
            Ok(replies) => Ok(replies),
            Err(err)
                if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                // The first use of the script on this server (or on the node of
                // `partition`'s slot, which may have just taken over): load it, then try
                // again.
                tracing::debug!("loading the enqueue script for partition {partition}");
                self.scripts
                    .enqueue
                    .prepare_invoke()
                    .load_async(&mut conn)
                    .await?;
                Ok(pipe.query_async(&mut conn).await?)
            }
            Err(err) => Err(err.into()),
        }
    }

    /// The enqueue script's call for jobs of `tenant` into the partition tagged `tag`,
    /// without its jobs yet.
    fn enqueue_call(&self, tenant: &str, tag: &str) -> redis::ScriptInvocation<'_> {
        let keys = self.keys(tag);
        let [high, normal, low] = keys.streams();
        let mut invocation = self.scripts.enqueue.key(high);
        invocation
            .key(normal)
            .key(low)
            .key(keys.delayed())
            .key(keys.tenant_index(tenant))
            .key(keys.states())
            .key(keys.ids())
            .arg(self.store.retention().as_secs())
            .arg(tenant);
        invocation
    }

    /// Adds `job` to `invocation`, an enqueue call of [`Queue::enqueue_call`] for the
    /// partition tagged `tag`, with what its module's manifest fills in.
    fn add_job(
        &self,
        invocation: &mut redis::ScriptInvocation<'_>,
        tenant: &str,
        tag: &str,
        job: NewJob,
        modules: &HashMap<String, ModuleVersion>,
    ) -> Result<(), EnqueueError> {
        let module = &modules[&job.module];
        let manifest = &module.manifest;
        let task = manifest
            .task(&job.task)
            .map_err(|err| EnqueueError::UnknownTask(err.to_string()))?;
        let options = &job.options;
        let keys = self.keys(tag);
        let id = new_job_id(tag);
        // A delay counts from the job's creation, which Redis's clock dates.
        let (run_at, delay) = match (options.run_at, options.delay) {
            (Some(at), _) => (unix_millis(at), 0),
            (None, Some(delay)) => (0, millis(delay)),
            (None, None) => (0, 0),
        };
        let priority = options.priority.or(task.priority).unwrap_or_default();
        let backoff = options
            .backoff
            .or(task.backoff.map(Backoff::from))
            .unwrap_or_default();
        let backoff = serde_json::to_vec(&backoff).map_err(anyhow::Error::from)?;
        let max_attempts = options
            .max_retries
            .or(task.max_retries)
            .unwrap_or(DEFAULT_MAX_RETRIES)
            .saturating_add(1);
        let timeout = options.timeout.or(task.timeout).or(manifest.limits.timeout);
        let idempotency = options.idempotency_key.as_deref().unwrap_or_default();
        let mut fields: Vec<(&str, Vec<u8>)> = vec![
            ("tenant", tenant.into()),
            ("module", module.name.as_bytes().to_vec()),
            ("version", module.version.as_bytes().to_vec()),
            ("digest", module.digest.as_bytes().to_vec()),
            ("task", job.task.into_bytes()),
            ("input", job.input),
            ("max_attempts", max_attempts.to_string().into_bytes()),
            ("priority", priority.as_str().into()),
            ("backoff", backoff),
        ];
        if let Some(timeout) = timeout {
            fields.push(("timeout_ms", millis(timeout).to_string().into_bytes()));
        }
        if let Some(fuel) = manifest.limits.fuel {
            fields.push(("fuel", fuel.to_string().into_bytes()));
        }
        if let Some(memory) = manifest.limits.memory {
            fields.push(("memory", memory.to_string().into_bytes()));
        }
        if let Some(metadata) = &options.metadata {
            fields.push(("metadata", metadata.to_string().into_bytes()));
        }
        if let Some(parent) = &options.parent {
            fields.push(("parent", parent.id.as_bytes().to_vec()));
            fields.push(("depth", parent.depth.to_string().into_bytes()));
        }
        if let Some(trace) = TraceParent::of_or(&tracing::Span::current(), options.trace.clone()) {
            fields.push(("traceparent", trace.as_str().into()));
        }
        let idempotency_key = match idempotency {
            "" => keys.job(&id),
            key => keys.idempotency(tenant, key),
        };
        invocation
            .key(keys.job(&id))
            .key(idempotency_key)
            .arg(&id)
            .arg(1 + priority.rank())
            .arg(run_at)
            .arg(delay)
            .arg(idempotency)
            .arg(fields.len() * 2);
        for (field, value) in fields {
            invocation.arg(field).arg(value);
        }
        Ok(())
    }

    /// Job `id`, if it exists (a finished job's record goes after the history retention).
    pub async fn job(&self, id: &str) -> anyhow::Result<Option<JobRecord>> {
        let Some(tag) = partition_of(id) else {
            return Ok(None);
        };
        let hash: HashMap<String, Vec<u8>> =
            self.connection().hgetall(self.keys(tag).job(id)).await?;
        Ok(JobRecord::from_hash(keys::queue_of_tag(tag), id, hash))
    }

    /// Waits until job `id` finishes or `timeout` passes, and returns it as it then is. Push
    /// based: it listens on the queue's channel of finished jobs, no polling.
    pub async fn wait(&self, id: &str, timeout: Duration) -> anyhow::Result<Option<JobRecord>> {
        let Some(tag) = partition_of(id) else {
            return Ok(None);
        };
        let mut finished = self
            .store
            .subscribe(&[self.keys(tag).done_channel()])
            .await?;
        // Subscribed first, then looked: a job finishing in between is not missed.
        let job = self.job(id).await?;
        if job.as_ref().is_none_or(|job| job.status.is_finished()) {
            return Ok(job);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, finished.next()).await {
                Ok(Some(finished)) => {
                    if finished == id.as_bytes() {
                        return self.job(id).await;
                    }
                }
                Ok(None) => bail!("the Redis connection closed while waiting for job {id}"),
                Err(_elapsed) => return self.job(id).await,
            }
        }
    }

    /// The ids of the jobs of `queue` (of every partition it has now) that finish from now
    /// on, as they finish, on a connection of their own.
    pub async fn finished_jobs(
        &self,
        queue: &str,
    ) -> anyhow::Result<impl futures_util::Stream<Item = Vec<u8>> + use<>> {
        let channels: Vec<String> = self
            .partition_tags(&[queue.to_owned()])
            .await?
            .iter()
            .map(|tag| self.keys(tag).done_channel())
            .collect();
        Ok(self.store.subscribe(&channels).await?)
    }

    /// Cancels job `id`.
    pub async fn cancel(&self, id: &str) -> anyhow::Result<Option<CancelOutcome>> {
        let Some(tag) = partition_of(id) else {
            return Ok(None);
        };
        let keys = self.keys(tag);
        let status: Option<String> = self
            .scripts
            .cancel
            .key(keys.job(id))
            .key(keys.delayed())
            .key(keys.states())
            .key(keys.finished())
            .arg(id)
            .arg(self.record_lifetime())
            .arg(keys.cancel_channel())
            .arg(keys.done_channel())
            .invoke_timed("cancel", &mut self.connection())
            .await?;
        Ok(status.map(|status| match status.as_str() {
            "cancelled" => CancelOutcome::Cancelled,
            "cancelling" => CancelOutcome::Cancelling,
            other => CancelOutcome::AlreadyFinished(other.parse().unwrap_or(JobStatus::Unknown)),
        }))
    }

    /// Gives dead job `id` a new series of attempts and removes its dead letter; false when it
    /// is not dead.
    pub async fn retry_dead(&self, id: &str) -> Result<bool, RetryError> {
        let (Some(tag), Some(job)) = (partition_of(id), self.job(id).await?) else {
            return Ok(false);
        };
        let keys = self.keys(tag);
        let retried: Option<u8> = self
            .scripts
            .retry_dead
            .key(keys.job(id))
            .key(keys.stream(job.priority))
            .key(keys.dead())
            .key(keys.states())
            .key(keys.finished())
            .key(keys.dead_index())
            .arg(id)
            .invoke_timed("retry_dead", &mut self.connection())
            .await
            .map_err(anyhow::Error::from)?;
        match retried {
            None => return Ok(false),
            Some(0) => return Err(RetryError::InputExpired),
            Some(_) => {}
        }
        let event = JobEvent::of(&job);
        if let Err(err) = self
            .events()
            .job_event(&job.tenant, JobEventKind::Retried, &event)
            .await
        {
            tracing::warn!(job = %id, "publishing job.retried failed: {err:#}");
        }
        Ok(true)
    }

    /// The events of this queue's Redis: the jobs channel's among them.
    pub(crate) fn events(&self) -> Events {
        Events::new(self.store.clone())
    }
}

/// The queue `job` goes to: its own, its task's in the manifest, or the default.
fn queue_for(
    job: &NewJob,
    modules: &HashMap<String, ModuleVersion>,
) -> Result<String, EnqueueError> {
    let task = modules[&job.module]
        .manifest
        .task(&job.task)
        .map_err(|err| EnqueueError::UnknownTask(err.to_string()))?;
    let queue = job
        .options
        .queue
        .clone()
        .or_else(|| task.queue.clone())
        .unwrap_or_else(|| DEFAULT_QUEUE.into());
    validate_name("queue", &queue).map_err(|err| EnqueueError::Invalid(err.to_string()))?;
    Ok(queue)
}

/// The tag of the job's partition (the queue's name for its first), a dash, and 128 random
/// bits as 32 hex digits: a job's id says where the job lives.
fn new_job_id(tag: &str) -> String {
    format!("{tag}-{:032x}", rand::random::<u128>())
}

/// The partition tag of job `id`, if `id` is shaped like a job id.
pub(crate) fn partition_of(id: &str) -> Option<&str> {
    let (tag, random) = id.rsplit_once('-')?;
    let (queue, index) = match tag.rsplit_once('~') {
        Some((queue, index)) => (queue, Some(index)),
        None => (tag, None),
    };
    let shaped = random.len() == 32
        && random.bytes().all(|b| b.is_ascii_hexdigit())
        && validate_name("queue", queue).is_ok()
        && index.is_none_or(|text| {
            let (index, salt) = text.split_once('.').unwrap_or((text, "0"));
            let canonical = |text: &str| text.parse::<u32>().is_ok_and(|n| n.to_string() == text);
            canonical(index)
                && canonical(salt)
                && index
                    .parse()
                    .is_ok_and(|index| (1..MAX_PARTITIONS).contains(&index))
        });
    shaped.then_some(tag)
}
