//! The host's figures for Prometheus: what its jobs did (and what the sandbox measured of
//! them), its queues, workers, scripts, schedules and API requests.
//!
//! One registry per process, as Prometheus client libraries keep: every area records into
//! [`metrics()`], and the API encodes it. Names follow the Prometheus conventions: the
//! `taskbox_` prefix, base units in the name, `_total` on counters. Labels take only values
//! of bounded number: tenants, queues, tasks and schedules past a cap each are counted under
//! [`OVERFLOW`], and never a job id, an attempt or an input.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use taskbox_runtime::{HostCalls, RunStats};

/// The media type of [`Metrics::encode`]: the Prometheus text format, version 0.0.4, which
/// every Prometheus scrapes.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The label value that stands for every value past a label's cap.
pub const OVERFLOW: &str = "other";

/// Distinct tenants with series of their own; the rest share [`OVERFLOW`].
const MAX_TENANTS: usize = 1000;
/// Distinct queues with series of their own.
const MAX_QUEUES: usize = 100;
/// Distinct task names with series of their own (enqueues name only tasks that a published
/// manifest declares, so this is a backstop).
const MAX_TASKS: usize = 1000;
/// Distinct schedules with a next-fire gauge of their own.
const MAX_SCHEDULES: usize = 1000;

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// A job's series: its tenant, queue and task.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    tenant: String,
    queue: String,
    task: String,
}

/// How an attempt ended: `completed`, or the kind of its failure (`out_of_fuel`, ...).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    tenant: String,
    queue: String,
    task: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    tenant: String,
    task: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantResult {
    tenant: String,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabel {
    tenant: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueState {
    queue: String,
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantQueueState {
    tenant: String,
    queue: String,
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScriptLabel {
    script: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScheduleLabels {
    tenant: String,
    schedule: String,
}

/// An API request's route (the pattern it matched, never its path), method and status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: Method,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

/// The methods the API answers; anything else is one value.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(clippy::upper_case_acronyms)]
pub enum Method {
    GET,
    HEAD,
    POST,
    PUT,
    PATCH,
    DELETE,
    OTHER,
}

impl Method {
    /// The method named `name`, [`Method::OTHER`] for one the API does not answer.
    pub fn of(name: &str) -> Self {
        match name {
            "GET" => Self::GET,
            "HEAD" => Self::HEAD,
            "POST" => Self::POST,
            "PUT" => Self::PUT,
            "PATCH" => Self::PATCH,
            "DELETE" => Self::DELETE,
            _ => Self::OTHER,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    wasmtime_version: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

type SeriesByName = HashMap<String, HashMap<String, HashMap<String, Arc<JobSeries>>>>;

fn seconds_buckets() -> Histogram {
    // 100 µs to about 2.5 minutes.
    Histogram::new(exponential_buckets(0.0001, 2.5, 16))
}

fn instantiate_buckets() -> Histogram {
    // 5 µs to about 1.5 s: a Rust guest instantiates in microseconds, Python in milliseconds.
    Histogram::new(exponential_buckets(0.000_005, 3.0, 12))
}

fn fuel_buckets() -> Histogram {
    Histogram::new(exponential_buckets(1e4, 10.0, 9))
}

fn memory_buckets() -> Histogram {
    // 64 KiB (one WebAssembly page) to 16 GiB.
    Histogram::new(exponential_buckets(65536.0, 4.0, 10))
}

fn script_buckets() -> Histogram {
    // 50 µs to about 3 s.
    Histogram::new(exponential_buckets(0.000_05, 3.0, 11))
}

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    /// Off, recording does nothing: the benchmark measures what recording costs.
    enabled: AtomicBool,
    tenants: Bounded,
    queues: Bounded,
    tasks: Bounded,
    schedules: Bounded,
    /// The series of each tenant, queue and task a worker ran, looked up once per job by
    /// the names as they come (nested, so that a lookup copies none of them).
    series: Mutex<SeriesByName>,
    enqueued: Family<JobLabels, Counter>,
    started: Family<JobLabels, Counter>,
    runs: Family<RunLabels, Counter>,
    retried: Family<JobLabels, Counter>,
    dead: Family<JobLabels, Counter>,
    wait: Histograms<JobLabels>,
    run_time: Histograms<JobLabels>,
    instantiate: Histogram,
    fuel: Histograms<TaskLabels>,
    peak_memory: Histograms<TaskLabels>,
    guest_http: Family<TenantResult, Counter>,
    guest_sql: Family<TenantResult, Counter>,
    guest_events: Family<TenantLabel, Counter>,
    queue_jobs: Family<QueueState, Gauge>,
    tenant_jobs: Family<TenantQueueState, Gauge>,
    oldest_waiting: Family<QueueLabel, Gauge<f64, AtomicU64>>,
    paused: Family<QueueLabel, Gauge>,
    slots: Gauge,
    slots_busy: Gauge,
    stale_outcomes: Counter,
    taken_over: Counter,
    scripts: Histograms<ScriptLabel>,
    module_cache: Family<ResultLabel, Counter>,
    cron_fires: Family<TenantResult, Counter>,
    cron_next: Family<ScheduleLabels, Gauge>,
    requests: Family<RequestLabels, Counter>,
    request_time: Histograms<RouteLabel>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// The series one job records into, looked up once when it starts.
#[derive(Debug)]
pub struct JobSeries {
    labels: JobLabels,
    started: Counter,
    completed: Counter,
    retried: Counter,
    dead: Counter,
    wait: Histogram,
    run_time: Histogram,
    fuel: Histogram,
    peak_memory: Histogram,
}

/// How a stored attempt left its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptEnd {
    /// It completed.
    Completed,
    /// It failed and the job will run again.
    Retrying,
    /// It failed and the job is dead.
    Dead,
    /// It ended otherwise (cancelled).
    Other,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("taskbox");
        let metrics = Self {
            registry: Registry::default(),
            enabled: AtomicBool::new(true),
            tenants: Bounded::new(MAX_TENANTS),
            queues: Bounded::new(MAX_QUEUES),
            tasks: Bounded::new(MAX_TASKS),
            schedules: Bounded::new(MAX_SCHEDULES),
            series: Mutex::default(),
            enqueued: Family::default(),
            started: Family::default(),
            runs: Family::default(),
            retried: Family::default(),
            dead: Family::default(),
            wait: Family::new_with_constructor(seconds_buckets),
            run_time: Family::new_with_constructor(seconds_buckets),
            instantiate: instantiate_buckets(),
            fuel: Family::new_with_constructor(fuel_buckets),
            peak_memory: Family::new_with_constructor(memory_buckets),
            guest_http: Family::default(),
            guest_sql: Family::default(),
            guest_events: Family::default(),
            queue_jobs: Family::default(),
            tenant_jobs: Family::default(),
            oldest_waiting: Family::default(),
            paused: Family::default(),
            slots: Gauge::default(),
            slots_busy: Gauge::default(),
            stale_outcomes: Counter::default(),
            taken_over: Counter::default(),
            scripts: Family::new_with_constructor(script_buckets),
            module_cache: Family::default(),
            cron_fires: Family::default(),
            cron_next: Family::default(),
            requests: Family::default(),
            request_time: Family::new_with_constructor(seconds_buckets),
        };
        let r = &mut registry;
        r.register(
            "build",
            "The taskbox version and the wasmtime version it runs guests with",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                wasmtime_version: taskbox_runtime::WASMTIME_VERSION,
            }),
        );
        r.register(
            "jobs_enqueued",
            "Jobs enqueued (by the API, by other jobs, by schedules)",
            metrics.enqueued.clone(),
        );
        r.register("jobs_started", "Attempts started", metrics.started.clone());
        r.register(
            "job_runs",
            "Attempts whose outcome was stored, by outcome: completed, or the kind of failure",
            metrics.runs.clone(),
        );
        r.register(
            "jobs_retried",
            "Failed attempts after which the job runs again",
            metrics.retried.clone(),
        );
        r.register(
            "jobs_dead",
            "Jobs that failed for good and went to the dead letters",
            metrics.dead.clone(),
        );
        r.register_with_unit(
            "job_wait",
            "From when a job was due to the start of its first attempt",
            Unit::Seconds,
            metrics.wait.clone(),
        );
        r.register_with_unit(
            "job_run",
            "Wall time of an attempt in the sandbox, from instantiation to the end of the call",
            Unit::Seconds,
            metrics.run_time.clone(),
        );
        r.register_with_unit(
            "sandbox_instantiate",
            "From the start of an attempt to its instance being ready",
            Unit::Seconds,
            metrics.instantiate.clone(),
        );
        r.register(
            "job_fuel_used",
            "Fuel (about one unit per WebAssembly instruction) an attempt burned",
            metrics.fuel.clone(),
        );
        r.register_with_unit(
            "job_peak_memory",
            "The most linear memory an attempt had at once",
            Unit::Bytes,
            metrics.peak_memory.clone(),
        );
        r.register(
            "guest_http_requests",
            "Outbound HTTP requests of jobs: sent (a response came), failed, or denied",
            metrics.guest_http.clone(),
        );
        r.register(
            "guest_sql_statements",
            "SQL statements of jobs: executed, or denied",
            metrics.guest_sql.clone(),
        );
        r.register(
            "guest_events_published",
            "Events jobs published",
            metrics.guest_events.clone(),
        );
        r.register(
            "queue_jobs",
            "Jobs in a queue by state: waiting, running, delayed (refreshed every few seconds)",
            metrics.queue_jobs.clone(),
        );
        r.register(
            "jobs",
            "A tenant's jobs in a queue by state, from the counts the queue keeps (refreshed \
             every few seconds)",
            metrics.tenant_jobs.clone(),
        );
        r.register_with_unit(
            "queue_oldest_waiting_age",
            "Age of the oldest job waiting to be taken (refreshed every few seconds)",
            Unit::Seconds,
            metrics.oldest_waiting.clone(),
        );
        r.register(
            "queue_paused",
            "1 while a queue is paused",
            metrics.paused.clone(),
        );
        r.register(
            "worker_slots",
            "Jobs this process's worker runs at once",
            metrics.slots.clone(),
        );
        r.register(
            "worker_slots_busy",
            "Jobs this process's worker is running",
            metrics.slots_busy.clone(),
        );
        r.register(
            "stale_outcomes",
            "Outcomes refused because a newer attempt owned the job",
            metrics.stale_outcomes.clone(),
        );
        r.register(
            "jobs_taken_over",
            "Jobs this worker took over from workers that stopped heartbeating",
            metrics.taken_over.clone(),
        );
        r.register_with_unit(
            "redis_script",
            "Time of a Redis script call, by script, from the call to its reply",
            Unit::Seconds,
            metrics.scripts.clone(),
        );
        r.register(
            "module_cache_lookups",
            "Modules a job needed: hit (compiled already) or miss (loaded from Redis)",
            metrics.module_cache.clone(),
        );
        r.register(
            "cron_fires",
            "Schedule fires by result: enqueued, or failed",
            metrics.cron_fires.clone(),
        );
        r.register(
            "cron_next_fire_timestamp",
            "When a schedule fires next, in seconds since the Unix epoch",
            metrics.cron_next.clone(),
        );
        r.register(
            "api_requests",
            "API requests by route, method and status",
            metrics.requests.clone(),
        );
        r.register_with_unit(
            "api_request",
            "Time to answer an API request, by route",
            Unit::Seconds,
            metrics.request_time.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// Turns recording on or off (on by default).
    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::Relaxed);
    }

    fn on(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Every series, in the Prometheus text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// Only `tenant`'s series, with their metrics' descriptions, in the Prometheus text
    /// format: the lines of [`Metrics::encode`] whose labels name the tenant.
    pub fn encode_tenant(&self, tenant: &str) -> String {
        let label = format!("tenant=\"{tenant}\"");
        let mut kept = String::new();
        // A family's description (HELP, TYPE, UNIT), written before its first kept sample.
        let mut header = String::new();
        let mut in_header = false;
        for line in self.encode().lines() {
            if line.starts_with('#') {
                if !in_header {
                    header.clear();
                }
                in_header = true;
                let _ = writeln!(header, "{line}");
            } else {
                in_header = false;
                if line.contains(&label) {
                    kept.push_str(&header);
                    header.clear();
                    let _ = writeln!(kept, "{line}");
                }
            }
        }
        kept
    }

    fn job_labels(&self, tenant: &str, queue: &str, task: &str) -> JobLabels {
        JobLabels {
            tenant: self.tenants.label(tenant),
            queue: self.queues.label(queue),
            task: self.tasks.label(task),
        }
    }

    /// Counts `count` jobs of `task` enqueued for `tenant` on `queue`.
    pub fn enqueued(&self, tenant: &str, queue: &str, task: &str, count: u64) {
        if self.on() {
            let labels = self.job_labels(tenant, queue, task);
            self.enqueued.get_or_create(&labels).inc_by(count);
        }
    }

    /// The series of jobs of `task` of `tenant` on `queue`, `None` while recording is off.
    pub fn job(&self, tenant: &str, queue: &str, task: &str) -> Option<Arc<JobSeries>> {
        if !self.on() {
            return None;
        }
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let found = series
            .get(tenant)
            .and_then(|queues| queues.get(queue))
            .and_then(|tasks| tasks.get(task));
        if let Some(found) = found {
            return Some(Arc::clone(found));
        }
        let labels = self.job_labels(tenant, queue, task);
        let by_task = TaskLabels {
            tenant: labels.tenant.clone(),
            task: labels.task.clone(),
        };
        let made = Arc::new(JobSeries {
            started: self.started.get_or_create_owned(&labels),
            completed: self.runs.get_or_create_owned(&RunLabels {
                tenant: labels.tenant.clone(),
                queue: labels.queue.clone(),
                task: labels.task.clone(),
                outcome: "completed",
            }),
            retried: self.retried.get_or_create_owned(&labels),
            dead: self.dead.get_or_create_owned(&labels),
            wait: self.wait.get_or_create_owned(&labels),
            run_time: self.run_time.get_or_create_owned(&labels),
            fuel: self.fuel.get_or_create_owned(&by_task),
            peak_memory: self.peak_memory.get_or_create_owned(&by_task),
            labels,
        });
        series
            .entry(tenant.to_owned())
            .or_default()
            .entry(queue.to_owned())
            .or_default()
            .insert(task.to_owned(), Arc::clone(&made));
        Some(made)
    }

    /// Counts a started attempt; `waited` is how long a first attempt waited to start.
    pub fn started(&self, job: &JobSeries, waited: Option<Duration>) {
        job.started.inc();
        if let Some(waited) = waited {
            job.wait.observe(waited.as_secs_f64());
        }
    }

    /// Records what the sandbox measured of a finished attempt and its host calls.
    pub fn ran(&self, job: &JobSeries, stats: &RunStats) {
        job.run_time.observe(stats.wall_time.as_secs_f64());
        job.fuel.observe(stats.fuel_used as f64);
        job.peak_memory.observe(stats.peak_memory as f64);
        if !stats.instantiate.is_zero() {
            self.instantiate.observe(stats.instantiate.as_secs_f64());
        }
        let HostCalls {
            http_sent,
            http_failed,
            http_denied,
            sql_statements,
            sql_denied,
            events_published,
        } = stats.calls;
        let tenant = &job.labels.tenant;
        let count = |family: &Family<TenantResult, Counter>, result, n| {
            if n > 0 {
                let labels = TenantResult {
                    tenant: tenant.clone(),
                    result,
                };
                family.get_or_create(&labels).inc_by(n);
            }
        };
        count(&self.guest_http, "sent", http_sent);
        count(&self.guest_http, "failed", http_failed);
        count(&self.guest_http, "denied", http_denied);
        count(&self.guest_sql, "executed", sql_statements);
        count(&self.guest_sql, "denied", sql_denied);
        if events_published > 0 {
            let labels = TenantLabel {
                tenant: tenant.clone(),
            };
            self.guest_events
                .get_or_create(&labels)
                .inc_by(events_published);
        }
    }

    /// Counts a stored attempt's outcome (`completed` or its failure's kind) and what it
    /// made of the job.
    pub fn stored(&self, job: &JobSeries, outcome: &'static str, end: AttemptEnd) {
        if end == AttemptEnd::Completed {
            job.completed.inc();
        } else {
            let labels = RunLabels {
                tenant: job.labels.tenant.clone(),
                queue: job.labels.queue.clone(),
                task: job.labels.task.clone(),
                outcome,
            };
            self.runs.get_or_create(&labels).inc();
        }
        match end {
            AttemptEnd::Retrying => job.retried.inc(),
            AttemptEnd::Dead => job.dead.inc(),
            AttemptEnd::Completed | AttemptEnd::Other => 0,
        };
    }

    /// Counts an outcome refused because a newer attempt owned the job.
    pub fn stale_outcome(&self) {
        self.stale_outcomes.inc();
    }

    /// Counts jobs taken over from lost workers.
    pub fn taken_over(&self, count: u64) {
        self.taken_over.inc_by(count);
    }

    /// This process's worker runs `slots` jobs at once.
    pub fn worker_slots(&self, slots: usize) {
        self.slots.set(slots as i64);
    }

    /// A job took (`true`) or gave back a worker slot.
    pub fn slot_busy(&self, busy: bool) {
        match busy {
            true => self.slots_busy.inc(),
            false => self.slots_busy.dec(),
        };
    }

    /// Records a call of Redis script `script` that took `took`.
    pub fn script_call(&self, script: &'static str, took: Duration) {
        if self.on() {
            self.scripts
                .get_or_create(&ScriptLabel { script })
                .observe(took.as_secs_f64());
        }
    }

    /// Counts a job's module found compiled (`hit`) or loaded.
    pub fn module_lookup(&self, hit: bool) {
        if self.on() {
            let result = if hit { "hit" } else { "miss" };
            self.module_cache
                .get_or_create(&ResultLabel { result })
                .inc();
        }
    }

    /// Counts a fire of a schedule of `tenant`: `enqueued` or `failed`.
    pub fn cron_fired(&self, tenant: &str, result: &'static str) {
        let labels = TenantResult {
            tenant: self.tenants.label(tenant),
            result,
        };
        self.cron_fires.get_or_create(&labels).inc();
    }

    /// Schedule `schedule` of `tenant` fires next at `at_secs` (Unix seconds).
    pub fn cron_next(&self, tenant: &str, schedule: &str, at_secs: i64) {
        let labels = ScheduleLabels {
            tenant: self.tenants.label(tenant),
            schedule: self.schedules.label(&format!("{tenant}/{schedule}")),
        };
        self.cron_next.get_or_create(&labels).set(at_secs);
    }

    /// Records an API request of `route` (its pattern) answered with `status` in `took`.
    pub fn api_request(&self, route: &str, method: Method, status: u16, took: Duration) {
        if !self.on() {
            return;
        }
        let labels = RequestLabels {
            route: route.to_owned(),
            method,
            status,
        };
        self.requests.get_or_create(&labels).inc();
        self.request_time
            .get_or_create(&RouteLabel {
                route: route.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// Sets the queue gauges to `depths`.
    pub fn queue_depths(&self, depths: &QueueDepths) {
        for queue in &depths.queues {
            let name = self.queues.label(&queue.name);
            for (state, count) in [
                ("waiting", queue.waiting),
                ("running", queue.running),
                ("delayed", queue.delayed),
            ] {
                let labels = QueueState {
                    queue: name.clone(),
                    state,
                };
                self.queue_jobs.get_or_create(&labels).set(count as i64);
            }
            let queue_label = QueueLabel { queue: name };
            self.oldest_waiting
                .get_or_create(&queue_label)
                .set(queue.oldest_waiting.as_secs_f64());
            self.paused
                .get_or_create(&queue_label)
                .set(i64::from(queue.paused));
        }
        // Summed first: tenants past the cap share one series.
        let mut tenants: HashMap<TenantQueueState, i64> = HashMap::new();
        for ((tenant, queue, state), count) in &depths.tenants {
            let labels = TenantQueueState {
                tenant: self.tenants.label(tenant),
                queue: self.queues.label(queue),
                state,
            };
            *tenants.entry(labels).or_default() += *count as i64;
        }
        for (labels, count) in tenants {
            self.tenant_jobs.get_or_create(&labels).set(count);
        }
    }
}

/// What the queue gauges show, read from Redis by the API's refresher.
#[derive(Debug, Default)]
pub struct QueueDepths {
    /// Each queue's depths.
    pub queues: Vec<QueueDepth>,
    /// Jobs by tenant, queue and state.
    pub tenants: BTreeMap<(String, String, &'static str), u64>,
}

/// One queue's depths.
#[derive(Debug)]
pub struct QueueDepth {
    /// The queue.
    pub name: String,
    /// Jobs waiting to be taken.
    pub waiting: u64,
    /// Jobs running.
    pub running: u64,
    /// Jobs delayed or waiting for a retry.
    pub delayed: u64,
    /// How long the oldest waiting job has waited.
    pub oldest_waiting: Duration,
    /// Whether the queue is paused.
    pub paused: bool,
}

/// The values a label has taken, up to a cap; values past it are [`OVERFLOW`].
#[derive(Debug)]
struct Bounded {
    max: usize,
    seen: Mutex<HashSet<String>>,
}

impl Bounded {
    fn new(max: usize) -> Self {
        Self {
            max,
            seen: Mutex::default(),
        }
    }

    fn label(&self, value: &str) -> String {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.contains(value) {
            return value.to_owned();
        }
        if seen.len() >= self.max {
            return OVERFLOW.to_owned();
        }
        seen.insert(value.to_owned());
        value.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_past_its_cap_is_counted_as_other() {
        let tasks = Bounded::new(2);
        assert_eq!(tasks.label("a"), "a");
        assert_eq!(tasks.label("b"), "b");
        assert_eq!(tasks.label("c"), OVERFLOW);
        assert_eq!(tasks.label("a"), "a");
    }
}
