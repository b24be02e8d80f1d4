//! The queue and its workers against a real `redis-server` (one per test, on a free port,
//! killed on drop) and real compiled guests.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use taskbox_core::events::{Events, JOBS_CHANNEL};
use taskbox_core::model::job::{Backoff, JobRecord, JobStatus, Priority};
use taskbox_core::queue::{
    CancelOutcome, EnqueueOptions, HistorySettings, JobFilter, MAX_RETRY_DELAY, NewJob, Queue,
    RetryError,
};
use taskbox_core::redis_server::RedisOptions;
use taskbox_core::registry::{Registry, RegistryConfig};
use taskbox_core::worker::{Worker, WorkerConfig, WorkerStats};
use taskbox_runtime::Limits;
use tokio::sync::oneshot;

use crate::support::private_redis::TestRedis;
use crate::support::{host, private_redis, wait};

/// The tenant every job of these tests belongs to.
const TENANT: &str = "default";

/// One runtime per test binary, shared by the in-process workers.
struct Harness {
    redis: TestRedis,
    queue: Queue,
}

impl Harness {
    /// On the suites' Redis: one server or a cluster (see `private_redis::TestRedis`).
    async fn start() -> Self {
        Self::on(private_redis::start().await).await
    }

    /// On one redis-server with `options`, for a test that caps or restarts it.
    async fn with(options: RedisOptions) -> Self {
        Self::on(private_redis::start_server(options).await).await
    }

    async fn on((redis, queue): (TestRedis, Queue)) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
            .with_test_writer()
            .try_init();
        let h = Self { redis, queue };
        h.publish_guests().await;
        h
    }

    /// Publishes the `hello` and `fixtures` guests. Publishing compiles, so no test's timing
    /// includes compiling.
    async fn publish_guests(&self) {
        for name in ["hello", "fixtures"] {
            self.publish_guest(name).await;
        }
    }

    /// Publishes the guest in `guests/{name}`.
    async fn publish_guest(&self, name: &str) {
        let registry = Registry::new(
            self.queue.clone(),
            host::runtime(),
            RegistryConfig::default(),
        );
        host::publish(&registry, TENANT, name).await;
    }

    /// A connection of the test's own, for looking at Redis the way an operator would.
    async fn redis_connection(&self) -> taskbox_core::store::Connection {
        private_redis::connection(&self.redis).await
    }

    /// Entries in the default queue's dead-letter stream.
    async fn dead_letter_entries(&self) -> usize {
        redis::cmd("XLEN")
            .arg("tb:{default}:dead")
            .query_async(&mut self.redis_connection().await)
            .await
            .unwrap()
    }

    /// Waits until `count` workers are idle: blocked in their read of new entries.
    async fn wait_for_idle_workers(&self, count: usize) {
        let conn = self.redis_connection().await;
        let what = format!("{count} workers blocked in XREADGROUP");
        wait::until(what, Duration::from_secs(30), || async {
            let clients: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query_async(&mut conn.clone())
                .await
                .unwrap();
            let blocked = clients
                .lines()
                .filter(|client| client.contains(" flags=b ") && client.contains("cmd=xreadgroup"))
                .count();
            (blocked == count).then_some(())
        })
        .await;
    }

    /// Waits until Redis answers again after a restart.
    async fn wait_for_redis(&self) {
        wait::until("Redis back", Duration::from_secs(30), || async {
            self.queue.ping().await.ok()
        })
        .await;
    }

    /// Starts a worker in this process; it stops (gracefully) when the handle drops.
    fn worker(&self, configure: impl FnOnce(&mut WorkerConfig)) -> WorkerHandle {
        let mut config = WorkerConfig::new(format!("test-worker-{}", rand_suffix()));
        config.concurrency = 4;
        configure(&mut config);
        let worker = Worker::new(self.queue.clone(), host::runtime(), config);
        let stats = worker.stats();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(worker.run(async {
            let _ = stopped.await;
        }));
        WorkerHandle {
            stop: Some(stop),
            task: Some(task),
            stats,
        }
    }

    /// Starts `taskbox serve` as a separate worker process, its stderr piped when `logs`.
    fn worker_process(&self, visibility: &str, concurrency: usize, logs: bool) -> WorkerProcess {
        self.worker_process_with(visibility, concurrency, logs, &[])
    }

    /// [`Harness::worker_process`] with further arguments of `taskbox serve`.
    fn worker_process_with(
        &self,
        visibility: &str,
        concurrency: usize,
        logs: bool,
        args: &[&str],
    ) -> WorkerProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_taskbox"))
            .args(["serve", "--redis", &self.redis.url()])
            .args(args)
            .args(["--roles", "worker"])
            .args(["--visibility-timeout", visibility])
            .args(["--concurrency", &concurrency.to_string()])
            .stdout(Stdio::null())
            .stderr(if logs { Stdio::piped() } else { Stdio::null() })
            .spawn()
            .expect("starting taskbox serve");
        WorkerProcess(child)
    }

    async fn enqueue(
        &self,
        module: &str,
        task: &str,
        input: Value,
        options: EnqueueOptions,
    ) -> String {
        self.queue
            .enqueue(
                TENANT,
                NewJob {
                    module: module.into(),
                    task: task.into(),
                    input: input.to_string().into_bytes(),
                    options,
                },
            )
            .await
            .unwrap()
            .id
    }

    async fn dead_letters(&self) -> Vec<JobRecord> {
        let dead = JobFilter {
            status: Some(JobStatus::Dead),
            ..JobFilter::default()
        };
        self.queue.list(TENANT, &dead, None, 10).await.unwrap().jobs
    }

    async fn job(&self, id: &str) -> JobRecord {
        self.queue.job(id).await.unwrap().expect("the job exists")
    }

    async fn wait(&self, id: &str, timeout: Duration) -> JobRecord {
        let job = self
            .queue
            .wait(id, timeout)
            .await
            .unwrap()
            .expect("the job exists");
        assert!(
            job.status.is_finished(),
            "job {id} still {} after {timeout:?}",
            job.status
        );
        job
    }

    /// The ids of the first page of `limit` of the tenant's jobs `filter` matches.
    async fn listed(&self, filter: &JobFilter, limit: usize) -> Vec<String> {
        let page = self.queue.list(TENANT, filter, None, limit).await.unwrap();
        page.jobs.into_iter().map(|job| job.id).collect()
    }

    /// Runs `count` greetings, each enqueued once the one before finished; their ids.
    async fn greet_one_after_another(&self, count: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for n in 0..count {
            let name = format!("n{n}");
            let id = self
                .enqueue(
                    "hello",
                    "greet",
                    json!({"name": name}),
                    EnqueueOptions::default(),
                )
                .await;
            self.wait(&id, Duration::from_secs(30)).await;
            ids.push(id);
        }
        ids
    }

    /// Waits until `check` holds for job `id`, polling Redis, failing after `timeout`.
    async fn wait_until(
        &self,
        id: &str,
        timeout: Duration,
        check: impl Fn(&JobRecord) -> bool,
    ) -> JobRecord {
        wait::until(format!("the condition on job {id}"), timeout, || async {
            let job = self.job(id).await;
            check(&job).then_some(job)
        })
        .await
    }
}

/// A worker process, killed (SIGKILL) and reaped when dropped, whatever the test did.
struct WorkerProcess(Child);

impl WorkerProcess {
    /// Reads the process's stderr (it must be piped) to its end; the receiver says once a
    /// line contains `marker`. Reading on keeps the pipe from filling up.
    fn watch_stderr(&mut self, marker: &'static str) -> oneshot::Receiver<()> {
        use std::io::BufRead as _;
        let stderr = self.0.stderr.take().expect("stderr is piped");
        let (seen, said) = oneshot::channel();
        std::thread::spawn(move || {
            let mut seen = Some(seen);
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains(marker)
                    && let Some(seen) = seen.take()
                {
                    let _ = seen.send(());
                }
            }
        });
        said
    }

    /// The process's stderr (it must be piped), line by line, until the process ends.
    fn stderr_lines(&mut self) -> tokio::sync::mpsc::UnboundedReceiver<String> {
        use std::io::BufRead as _;
        let stderr = self.0.stderr.take().expect("stderr is piped");
        let (send, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = send.send(line);
            }
        });
        lines
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} failed");
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

struct WorkerHandle {
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    stats: Arc<WorkerStats>,
}

impl WorkerHandle {
    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Waits until `count` reaches `expected` (a worker counts an outcome just after Redis has
/// stored it, so just after a waiter hears of it), then checks it went no further.
async fn assert_counted(what: &str, count: impl Fn() -> u64, expected: u64) {
    wait::until(what, Duration::from_secs(10), || async {
        (count() >= expected).then_some(())
    })
    .await;
    assert_eq!(count(), expected, "{what}");
}

/// Waits for the next line of `log` with `marker` in it, 20 s at most.
async fn next_line_with(log: &mut tokio::sync::mpsc::UnboundedReceiver<String>, marker: &str) {
    let next = async {
        while let Some(line) = log.recv().await {
            if line.contains(marker) {
                return;
            }
        }
        panic!("the log ended before a line with {marker:?}");
    };
    tokio::time::timeout(Duration::from_secs(20), next)
        .await
        .unwrap_or_else(|_| panic!("no line with {marker:?} within 20 s"));
}

fn rand_suffix() -> u32 {
    rand::random()
}

fn result_json(job: &JobRecord) -> Value {
    serde_json::from_slice(job.result.as_deref().expect("a result")).unwrap()
}

fn fast_backoff() -> Option<Backoff> {
    Some(Backoff {
        base: Duration::from_millis(200),
        max: Duration::from_secs(5),
        jitter: 0.25,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueued_job_completes_with_its_result() {
    let h = Harness::start().await;
    let _worker = h.worker(|_| {});
    let id = h
        .enqueue(
            "hello",
            "greet",
            json!({"name": "Ada"}),
            EnqueueOptions::default(),
        )
        .await;
    let job = h.wait(&id, Duration::from_secs(30)).await;
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(result_json(&job), json!({"message": "Hello, Ada!"}));
    assert_eq!((job.attempt, job.max_attempts), (1, 4));
    assert!(job.log.unwrap().contains("greeting Ada"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_modules_are_refused_at_enqueue() {
    let h = Harness::start().await;
    let err = h
        .queue
        .enqueue(
            TENANT,
            NewJob {
                module: "nope".into(),
                task: "greet".into(),
                input: Vec::new(),
                options: EnqueueOptions::default(),
            },
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("there is no module named `nope`"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_failures_retry_with_backoff_then_die_with_exact_tries() {
    let h = Harness::start().await;
    let _worker = h.worker(|_| {});
    let options = EnqueueOptions {
        max_retries: Some(2),
        backoff: fast_backoff(),
        ..EnqueueOptions::default()
    };
    let id = h
        .enqueue(
            "fixtures",
            "fail",
            json!({"kind": "retryable", "message": "flaky upstream"}),
            options,
        )
        .await;
    // When each attempt started (Redis time, ms): attempt n lasts until n + 1 starts.
    let mut started = Vec::new();
    for attempt in 1..=3 {
        let job = h
            .wait_until(&id, Duration::from_secs(30), |job| job.attempt == attempt)
            .await;
        started.push(job.started_at.unwrap());
    }
    // Gap n is the backoff after failed attempt n: 200 ms · 2^(n-1) nominal, plus at most 25%
    // jitter, plus the promotion tick (50 ms) and the attempt's own run time.
    for (n, gap) in started.windows(2).map(|w| w[1] - w[0]).enumerate() {
        let nominal = 200u64 << n;
        assert!(
            (nominal..nominal + nominal / 4 + 100).contains(&gap),
            "gap {} was {gap} ms; nominal {nominal} ms",
            n + 1
        );
    }
    let job = h.wait(&id, Duration::from_secs(30)).await;
    assert_eq!(job.status, JobStatus::Dead);
    assert_eq!(job.attempt, 3);
    let dead = h.dead_letters().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].id.as_str(), dead[0].task.as_str(), dead[0].attempt),
        (id.as_str(), "fail", 3)
    );
    assert_eq!(dead[0].error_kind(), Some("task_error"));
    assert_eq!(
        dead[0].error.as_ref().unwrap()["message"],
        "task error (retryable): flaky upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_and_retries_are_announced_on_the_tenants_jobs_channel() {
    let h = Harness::start().await;
    let _worker = h.worker(|_| {});
    let options = EnqueueOptions {
        max_retries: Some(1),
        backoff: fast_backoff(),
        ..EnqueueOptions::default()
    };
    let id = h
        .enqueue(
            "fixtures",
            "fail",
            json!({"kind": "retryable", "message": "flaky upstream"}),
            options,
        )
        .await;
    assert_eq!(
        h.wait(&id, Duration::from_secs(30)).await.status,
        JobStatus::Dead
    );
    assert!(h.queue.retry_dead(&id).await.unwrap());

    let events = Events::new(h.queue.store().clone());
    let announced = wait::until(
        "three events on the jobs channel",
        Duration::from_secs(10),
        || async {
            let replayed = events.replay(TENANT, JOBS_CHANNEL, "0").await.unwrap();
            (replayed.len() >= 3).then_some(replayed)
        },
    )
    .await;
    let names: Vec<&str> = announced
        .iter()
        .take(3)
        .map(|event| event.event.as_str())
        .collect();
    assert_eq!(names, ["job.retrying", "job.failed", "job.retried"]);
    let data: Vec<Value> = announced
        .iter()
        .map(|event| serde_json::from_str(&event.data).unwrap())
        .collect();
    for event in &data {
        assert_eq!(
            (event["id"].as_str(), event["task"].as_str()),
            (Some(id.as_str()), Some("fail")),
            "{event}"
        );
    }
    assert_eq!(data[0]["attempt"], 1);
    assert_eq!(data[0]["error_kind"], "task_error");
    assert_eq!(data[0]["error"], "task error (retryable): flaky upstream");
    assert!(data[0]["retry_in_ms"].as_u64().is_some(), "{}", data[0]);
    assert_eq!(
        (data[1]["attempt"].as_u64(), data[1]["retry_in_ms"].as_u64()),
        (Some(2), None)
    );
    assert!(data[1]["worker"].is_string(), "{}", data[1]);
    // Another tenant's channel of the same name hears nothing of it.
    assert!(
        events
            .replay("other", JOBS_CHANNEL, "0")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_task_error_is_kept_to_its_cap_in_the_job_and_the_dead_letters() {
    let h = Harness::start().await;
    let _worker = h.worker(|_| {});
    let id = h
        .enqueue(
            "fixtures",
            "huge_error",
            json!({"bytes": 20 << 20, "retryable": false}),
            EnqueueOptions::default(),
        )
        .await;
    let job = h.wait(&id, Duration::from_secs(60)).await;
    assert_eq!(
        (job.status, job.error_kind()),
        (JobStatus::Dead, Some("task_error"))
    );
    let message = job.error.as_ref().unwrap()["message"].as_str().unwrap();
    let kept = Limits::DEFAULT_ERROR_BYTES;
    // "é" is two bytes and the cap is even, so exactly the cap of them is kept.
    let expected = format!(
        "task error: {} [taskbox: truncated at {kept} bytes, {} more bytes dropped]",
        "é".repeat(kept / 2),
        (20 << 20) - kept
    );
    assert_eq!(message, expected);

    let mut conn = h.redis_connection().await;
    let record = private_redis::job_record_size(&h.redis, &id).await;
    assert!(record < 64 << 10, "the job record takes {record} bytes");
    let dead: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("tb:{default}:dead")
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let (_, fields) = &dead[0];
    let error = &fields.iter().find(|(name, _)| name == "error").unwrap().1;
    assert!(
        error.len() < 2 * kept,
        "the dead letter's error is {} bytes",
        error.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_of_u64_max_waits_the_longest_retry_delay_instead_of_dying() {
    let h = Harness::start().await;
    let _worker = h.worker(|_| {});
    let options = EnqueueOptions {
        max_retries: Some(3),
        ..EnqueueOptions::default()
    };
    let id = h
        .enqueue(
            "fixtures",
            "fail",
            json!({"kind": "retryable", "message": "later", "after_ms": u64::MAX}),
            options,
        )
        .await;
    let job = h
        .wait_until(&id, Duration::from_secs(30), |job| {
            job.status != JobStatus::Pending && job.status != JobStatus::Running
        })
        .await;
    assert_eq!(
        (job.status, job.attempt),
        (JobStatus::Retrying, 1),
        "{job:?}"
    );
    let waits = job.run_at.unwrap() - job.started_at.unwrap();
    let longest = MAX_RETRY_DELAY.as_millis() as u64;
    assert!(
        (longest..longest + 10_000).contains(&waits),
        "the retry waits {waits} ms"
    );
    assert_eq!(h.dead_letter_entries().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_succeeds_on_a_retry_completes() {
    let h = Harness::start().await;
    let _worker = h.worker(|_| {});
    let options = EnqueueOptions {
        max_retries: Some(3),
        backoff: fast_backoff(),
        ..EnqueueOptions::default()
    };
    let id = h
        .enqueue("hello", "flaky", json!({"succeed_on": 3}), options)
        .await;
    let job = h.wait(&id, Duration::from_secs(30)).await;
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(job.attempt, 3);
    assert_eq!(result_json(&job), json!("succeeded on attempt 3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deterministic_failures_go_straight_to_dead_letters_and_can_be_retried() {
    let h = Harness::start().await;
    let _worker = h.worker(|_| {});
    let id = h
        .enqueue("fixtures", "panic", Value::Null, EnqueueOptions::default())
        .await;
    let job = h.wait(&id, Duration::from_secs(30)).await;
    assert_eq!(
        (job.status, job.attempt, job.error_kind()),
        (JobStatus::Dead, 1, Some("trap"))
    );
    assert_eq!(h.dead_letter_entries().await, 1);

    assert!(h.queue.retry_dead(&id).await.unwrap());
    let job = h
        .wait_until(&id, Duration::from_secs(30), |job| {
            job.dead_retries == 1 && job.status == JobStatus::Dead
        })
        .await;
    assert_eq!(
        job.attempt, 1,
        "a retried dead job starts a new series of attempts"
    );
    assert_eq!(h.dead_letters().await.len(), 1);
    assert_eq!(
        h.dead_letter_entries().await,
        1,
        "one dead letter per dead job, not one per death"
    );
    assert_eq!(h.queue.purge_dead(TENANT, None).await.unwrap(), 1);
    assert!(h.dead_letters().await.is_empty());
    assert_eq!(h.dead_letter_entries().await, 0);
    assert!(
        h.queue.job(&id).await.unwrap().is_none(),
        "purged with its dead letter"
    );
    assert!(!h.queue.retry_dead("default-no-such-job").await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_job_does_not_run_early() {
    let h = Harness::start().await;
    let _worker = h.worker(|_| {});
    let options = EnqueueOptions {
        delay: Some(Duration::from_millis(700)),
        ..EnqueueOptions::default()
    };
    let id = h
        .enqueue("hello", "greet", json!({"name": "later"}), options)
        .await;
    let job = h.job(&id).await;
    assert_eq!(job.status, JobStatus::Scheduled);
    let job = h.wait(&id, Duration::from_secs(30)).await;
    assert_eq!(job.status, JobStatus::Completed);
    assert!(job.started_at.unwrap() >= job.created_at + 700, "{job:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_returns_the_first_job() {
    let h = Harness::start().await;
    let options = EnqueueOptions {
        idempotency_key: Some("order-42".into()),
        ..EnqueueOptions::default()
    };
    let first = h.queue.enqueue(
        TENANT,
        NewJob {
            module: "hello".into(),
            task: "greet".into(),
            input: b"{\"name\":\"once\"}".to_vec(),
            options: options.clone(),
        },
    );
    let first = first.await.unwrap();
    let second = h
        .queue
        .enqueue(
            TENANT,
            NewJob {
                module: "hello".into(),
                task: "greet".into(),
                input: b"{\"name\":\"twice\"}".to_vec(),
                options,
            },
        )
        .await
        .unwrap();
    assert!(first.created);
    assert!(!second.created);
    assert_eq!(first.id, second.id);
    assert_eq!(
        h.queue
            .list(TENANT, &JobFilter::default(), None, 10)
            .await
            .unwrap()
            .jobs
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priorities_run_first() {
    let h = Harness::start().await;
    let mut ids = Vec::new();
    for priority in [Priority::Low, Priority::Normal, Priority::High] {
        let options = EnqueueOptions {
            priority: Some(priority),
            ..EnqueueOptions::default()
        };
        ids.push(
            h.enqueue("hello", "greet", json!({"name": "p"}), options)
                .await,
        );
    }
    let _worker = h.worker(|config| config.concurrency = 1);
    let mut started = Vec::new();
    for id in &ids {
        started.push(
            h.wait(id, Duration::from_secs(30))
                .await
                .started_at
                .unwrap(),
        );
    }
    let (low, normal, high) = (started[0], started[1], started[2]);
    assert!(
        high <= normal && normal <= low,
        "high {high}, normal {normal}, low {low}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_queued_job_never_starts() {
    let h = Harness::start().await;
    let delay = |ms| EnqueueOptions {
        delay: Some(Duration::from_millis(ms)),
        ..EnqueueOptions::default()
    };
    let delayed = h
        .enqueue("hello", "greet", json!({"name": "x"}), delay(300))
        .await;
    let queued = h
        .enqueue(
            "hello",
            "greet",
            json!({"name": "y"}),
            EnqueueOptions::default(),
        )
        .await;
    for id in [&delayed, &queued] {
        assert_eq!(
            h.queue.cancel(id).await.unwrap(),
            Some(CancelOutcome::Cancelled)
        );
    }
    let worker = h.worker(|_| {});
    // Due after both: once it has completed, the worker has passed over the cancelled ones.
    let after = h
        .enqueue("hello", "greet", json!({"name": "z"}), delay(400))
        .await;
    h.wait(&after, Duration::from_secs(30)).await;
    for id in [&delayed, &queued] {
        let job = h.job(id).await;
        assert_eq!(
            (job.status, job.attempt),
            (JobStatus::Cancelled, 0),
            "{job:?}"
        );
    }
    assert_counted(
        "completed",
        || worker.stats.completed.load(Ordering::Relaxed),
        1,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_is_interrupted_by_its_cancel() {
    let h = Harness::start().await;
    let _worker = h.worker(|_| {});
    let id = h
        .enqueue("fixtures", "spin", Value::Null, EnqueueOptions::default())
        .await;
    h.wait_until(&id, Duration::from_secs(30), |job| {
        job.status == JobStatus::Running
    })
    .await;
    let cancelled_at = Instant::now();
    assert_eq!(
        h.queue.cancel(&id).await.unwrap(),
        Some(CancelOutcome::Cancelling)
    );
    let job = h.wait(&id, Duration::from_secs(5)).await;
    assert_eq!(job.status, JobStatus::Cancelled);
    // `spin` never ends by itself; its attempt's timeout is 30 s away.
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(10),
        "{:?}",
        cancelled_at.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_enqueues_in_one_round_trip_and_every_job_completes() {
    let h = Harness::start().await;
    let jobs = (0..200)
        .map(|i| NewJob {
            module: "hello".into(),
            task: "add".into(),
            input: json!({"numbers": [i, 1]}).to_string().into_bytes(),
            options: EnqueueOptions::default(),
        })
        .collect();
    let enqueued = h.queue.enqueue_batch(TENANT, jobs).await.unwrap();
    let _worker = h.worker(|config| config.concurrency = 16);
    for (i, job) in enqueued.iter().enumerate() {
        let job = h.wait(&job.id, Duration::from_secs(30)).await;
        assert_eq!(result_json(&job), json!({"sum": i + 1}));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_hands_unfinished_jobs_back_without_counting_an_attempt() {
    let h = Harness::start().await;
    let worker = h.worker(|config| config.grace = Duration::from_millis(200));
    let id = h
        .enqueue("fixtures", "spin", Value::Null, EnqueueOptions::default())
        .await;
    h.wait_until(&id, Duration::from_secs(30), |job| {
        job.status == JobStatus::Running
    })
    .await;
    let stats = Arc::clone(&worker.stats);
    worker.shutdown().await;
    let job = h.job(&id).await;
    assert_eq!(
        (job.status, job.attempt),
        (JobStatus::Pending, 0),
        "{job:?}"
    );
    assert_eq!(stats.released.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_loses_no_job() {
    let h = Harness::start().await;
    let jobs: Vec<NewJob> = (0..1000)
        .map(|i| NewJob {
            module: "fixtures".into(),
            task: "sleep".into(),
            input: json!({"ms": 5 + i % 10}).to_string().into_bytes(),
            options: EnqueueOptions::default(),
        })
        .collect();
    let ids: Vec<String> = h
        .queue
        .enqueue_batch(TENANT, jobs)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    let mut first = h.worker_process("2s", 16, false);
    // Kill it mid-run: once some jobs are done and many are not.
    let completed = JobFilter {
        status: Some(JobStatus::Completed),
        ..JobFilter::default()
    };
    wait::until("100 jobs completed", Duration::from_secs(60), || async {
        let page = h.queue.list(TENANT, &completed, None, 1000).await.unwrap();
        (page.jobs.len() >= 100).then_some(())
    })
    .await;
    first.kill();
    let mut second = h.worker_process("2s", 16, false);
    let mut reran = 0;
    for id in &ids {
        let job = h.wait(id, Duration::from_secs(60)).await;
        assert_eq!(job.status, JobStatus::Completed, "{job:?}");
        assert!(job.attempt <= 2, "{job:?}");
        if job.attempt == 2 {
            reran += 1;
        }
    }
    second.kill();
    println!("{reran} of 1000 jobs ran twice: those in flight when the worker was killed");
    assert!(
        reran <= 16,
        "{reran} jobs ran twice; at most the 16 in flight may"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_worker_cannot_overwrite_the_newer_attempt() {
    let h = Harness::start().await;
    let mut stalled = h.worker_process("1s", 1, true);
    let id = h
        .enqueue(
            "fixtures",
            "sleep",
            json!({"ms": 1500}),
            EnqueueOptions::default(),
        )
        .await;
    let first = h
        .wait_until(&id, Duration::from_secs(30), |job| {
            job.status == JobStatus::Running
        })
        .await;
    stalled.signal("-STOP");
    let mut second = h.worker_process("1s", 1, true);
    let job = h.wait(&id, Duration::from_secs(30)).await;
    assert_eq!((job.status, job.attempt), (JobStatus::Completed, 2));
    assert_ne!(job.worker, first.worker);
    stalled.signal("-CONT");
    // The stalled worker wakes up, finishes attempt 1, and is refused.
    let stderr = stalled.0.stderr.take().unwrap();
    let refused = tokio::task::spawn_blocking(move || {
        use std::io::BufRead as _;
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.contains("outcome refused: a newer attempt owns the job"))
    });
    let refused = tokio::time::timeout(Duration::from_secs(20), refused).await;
    stalled.kill();
    second.kill();
    assert!(
        matches!(refused, Ok(Ok(true))),
        "the stalled worker's outcome was not refused"
    );
    let after = h.job(&id).await;
    assert_eq!(
        (after.status, after.attempt, after.worker),
        (JobStatus::Completed, 2, job.worker)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_loses_nothing() {
    let mut h = Harness::with(RedisOptions {
        appendonly: true,
        ..RedisOptions::default()
    })
    .await;
    let _worker = h.worker(|config| {
        config.concurrency = 8;
        config.visibility_timeout = Duration::from_secs(2);
    });
    let jobs: Vec<NewJob> = (0..200)
        .map(|_| NewJob {
            module: "fixtures".into(),
            task: "sleep".into(),
            input: json!({"ms": 10}).to_string().into_bytes(),
            options: EnqueueOptions::default(),
        })
        .collect();
    let ids: Vec<String> = h
        .queue
        .enqueue_batch(TENANT, jobs)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    h.wait_until(&ids[20], Duration::from_secs(30), |job| {
        job.status == JobStatus::Completed
    })
    .await;
    tokio::task::block_in_place(|| h.redis.server().restart()).unwrap();
    for id in &ids {
        let finished = format!("job {id} finished after the restart");
        let job = wait::until(finished, Duration::from_secs(90), || async {
            let job = h.queue.job(id).await.ok().flatten()?;
            job.status.is_finished().then_some(job)
        })
        .await;
        assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_longer_than_the_visibility_timeout_on_a_full_worker_runs_once() {
    let h = Harness::start().await;
    let short = |config: &mut WorkerConfig| {
        config.concurrency = 1;
        config.visibility_timeout = Duration::from_secs(1);
    };
    let workers = [h.worker(short), h.worker(short)];
    // Idle, so the job is taken by a blocking read; the worker that takes it is then full.
    h.wait_for_idle_workers(2).await;
    let id = h
        .enqueue(
            "fixtures",
            "sleep",
            json!({"ms": 3500}),
            EnqueueOptions::default(),
        )
        .await;
    let job = h.wait(&id, Duration::from_secs(30)).await;
    assert_eq!(
        (job.status, job.attempt),
        (JobStatus::Completed, 1),
        "{job:?}"
    );
    let count = |counter: fn(&WorkerStats) -> &std::sync::atomic::AtomicU64| {
        workers
            .iter()
            .map(|worker| counter(&worker.stats).load(Ordering::Relaxed))
            .sum::<u64>()
    };
    assert_counted("completed", || count(|stats| &stats.completed), 1).await;
    assert_eq!(count(|stats| &stats.stale_rejected), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_leaves_no_job_marked_running() {
    let h = Harness::start().await;
    let jobs = (0..500)
        .map(|i| NewJob {
            module: "hello".into(),
            task: "add".into(),
            input: json!({"numbers": [i, 1]}).to_string().into_bytes(),
            options: EnqueueOptions::default(),
        })
        .collect();
    let enqueued = h.queue.enqueue_batch(TENANT, jobs).await.unwrap();
    let worker = h.worker(|config| config.concurrency = 16);
    wait::until("50 jobs completed", Duration::from_secs(30), || async {
        (worker.stats.completed.load(Ordering::Relaxed) >= 50).then_some(())
    })
    .await;
    // Stopping while jobs are being taken: every job the worker marked running, it runs.
    worker.shutdown().await;
    for job in &enqueued {
        let job = h.job(&job.id).await;
        assert!(
            matches!(
                (job.status, job.attempt),
                (JobStatus::Completed, 1) | (JobStatus::Pending, 0)
            ),
            "{job:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_last_attempt_dies_at_once_and_its_worker_cannot_finish_the_retried_job() {
    let h = Harness::start().await;
    let mut stalled = h.worker_process("1s", 1, true);
    let refused = stalled.watch_stderr("outcome refused: a newer attempt owns the job");
    // Once it has compiled the module, the stalled worker's attempt is all sleep.
    let warm_up = h
        .enqueue("fixtures", "noop", Value::Null, EnqueueOptions::default())
        .await;
    h.wait(&warm_up, Duration::from_secs(30)).await;
    let options = EnqueueOptions {
        max_retries: Some(0),
        ..EnqueueOptions::default()
    };
    let id = h
        .enqueue("fixtures", "sleep", json!({"ms": 5000}), options)
        .await;
    let first = h
        .wait_until(&id, Duration::from_secs(30), |job| {
            job.status == JobStatus::Running
        })
        .await;
    stalled.signal("-STOP");
    let worker = h.worker(|config| {
        config.concurrency = 1;
        config.visibility_timeout = Duration::from_secs(1);
    });
    // The other worker finds the only attempt lost: the job is dead, and whoever waits for
    // it hears so at once rather than at the end of their timeout.
    let waited = Instant::now();
    let dead = h
        .queue
        .wait(&id, Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert!(
        waited.elapsed() < Duration::from_secs(30),
        "{:?}",
        waited.elapsed()
    );
    assert_eq!(
        (dead.status, dead.attempt, dead.error_kind()),
        (JobStatus::Dead, 1, Some("worker_lost"))
    );
    assert_eq!(h.dead_letter_entries().await, 1);

    // Retried, attempt 1 of the new series runs on the other worker...
    assert!(h.queue.retry_dead(&id).await.unwrap());
    assert_eq!(
        h.dead_letter_entries().await,
        0,
        "retrying takes the dead letter away"
    );
    let retried = h
        .wait_until(&id, Duration::from_secs(30), |job| {
            job.status == JobStatus::Running && job.dead_retries == 1
        })
        .await;
    assert_eq!(retried.attempt, 1);
    assert_ne!(retried.worker, first.worker);
    // ...while the stalled worker wakes up and finishes its own attempt 1: it is refused.
    stalled.signal("-CONT");
    tokio::time::timeout(Duration::from_secs(20), refused)
        .await
        .expect("the stalled worker's outcome was not refused")
        .unwrap();
    let during = h.job(&id).await;
    assert_eq!(
        (during.status, &during.worker),
        (JobStatus::Running, &retried.worker),
        "{during:?}"
    );
    let job = h.wait(&id, Duration::from_secs(30)).await;
    assert_eq!(
        (job.status, job.attempt),
        (JobStatus::Completed, 1),
        "{job:?}"
    );
    assert_counted(
        "completed",
        || worker.stats.completed.load(Ordering::Relaxed),
        1,
    )
    .await;
    assert_eq!(worker.stats.stale_rejected.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cancelled_while_its_worker_is_gone_ends_cancelled_not_rerun() {
    let h = Harness::start().await;
    let mut lost = h.worker_process("1s", 1, false);
    let id = h
        .enqueue("fixtures", "spin", Value::Null, EnqueueOptions::default())
        .await;
    h.wait_until(&id, Duration::from_secs(30), |job| {
        job.status == JobStatus::Running
    })
    .await;
    lost.kill();
    assert_eq!(
        h.queue.cancel(&id).await.unwrap(),
        Some(CancelOutcome::Cancelling)
    );
    let _worker = h.worker(|config| config.visibility_timeout = Duration::from_secs(1));
    let job = h.wait(&id, Duration::from_secs(20)).await;
    assert_eq!(
        (job.status, job.attempt, job.error_kind()),
        (JobStatus::Cancelled, 1, Some("cancelled")),
        "{job:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_finished_while_redis_is_down_is_stored_when_it_is_back() {
    let mut h = Harness::with(RedisOptions {
        appendonly: true,
        ..RedisOptions::default()
    })
    .await;
    let mut worker = h.worker_process("2s", 1, true);
    let retrying = worker.watch_stderr("storing the outcome");
    // Once it has loaded the module (from Redis), the worker's next attempt needs Redis only
    // to store its outcome.
    let warm_up = h
        .enqueue("fixtures", "noop", Value::Null, EnqueueOptions::default())
        .await;
    h.wait(&warm_up, Duration::from_secs(30)).await;
    let id = h
        .enqueue(
            "fixtures",
            "sleep",
            json!({"ms": 300}),
            EnqueueOptions::default(),
        )
        .await;
    h.wait_until(&id, Duration::from_secs(30), |job| {
        job.status == JobStatus::Running
    })
    .await;
    tokio::task::block_in_place(|| h.redis.server().kill());
    tokio::time::timeout(Duration::from_secs(20), retrying)
        .await
        .expect("the worker did not try to store the outcome")
        .unwrap();
    tokio::task::block_in_place(|| h.redis.server().restart()).unwrap();
    h.wait_for_redis().await;
    let job = h.wait(&id, Duration::from_secs(30)).await;
    assert_eq!(
        (job.status, job.attempt),
        (JobStatus::Completed, 1),
        "the job ran again: {job:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_keeps_working_after_redis_loses_its_data() {
    let mut h = Harness::with(RedisOptions::default()).await;
    let _worker = h.worker(|_| {});
    let before = h
        .enqueue(
            "hello",
            "greet",
            json!({"name": "before"}),
            EnqueueOptions::default(),
        )
        .await;
    h.wait(&before, Duration::from_secs(30)).await;
    // No persistence: the restarted Redis is empty, consumer groups and modules included.
    tokio::task::block_in_place(|| h.redis.server().restart()).unwrap();
    h.wait_for_redis().await;
    h.publish_guests().await;
    let after = h
        .enqueue(
            "hello",
            "greet",
            json!({"name": "after"}),
            EnqueueOptions::default(),
        )
        .await;
    let job = h.wait(&after, Duration::from_secs(30)).await;
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    assert_eq!(result_json(&job), json!({"message": "Hello, after!"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_serves_every_queue_it_is_given() {
    let h = Harness::start().await;
    let _worker = h.worker(|config| {
        config.queues = vec!["default".into(), "emails".into()];
    });
    h.wait_for_idle_workers(1).await;
    let mut ids = Vec::new();
    for queue in ["emails", "default"] {
        let options = EnqueueOptions {
            queue: Some(queue.into()),
            ..EnqueueOptions::default()
        };
        ids.push(
            h.enqueue("hello", "greet", json!({"name": queue}), options)
                .await,
        );
    }
    for (id, queue) in ids.iter().zip(["emails", "default"]) {
        let job = h.wait(id, Duration::from_secs(30)).await;
        assert_eq!(
            (job.status, job.queue.as_str()),
            (JobStatus::Completed, queue)
        );
    }
}

/// Jobs that publish large events as fast as they can, for seconds, hold up neither the job
/// beside them nor the worker's own Redis calls: the other job completes before the flood
/// ends, the flooding jobs' events are all taken (they wait for room, they are not refused),
/// and nothing the worker asks Redis times out. Fifteen jobs with 4 MiB events have 60 MiB on
/// their way at once: on one connection shared with the rest, that timed out the job beside
/// them, the floods' own events and the worker's promoter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_flooding_events_do_not_stall_the_job_beside_them() {
    const FLOODERS: usize = 15;
    const EVENT_BYTES: usize = 4 << 20;
    let h = Harness::start().await;
    h.publish_guest("fixtures-grants").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("taskbox.toml");
    std::fs::write(
        &config,
        format!("[events]\nmax_event_size = \"{EVENT_BYTES}\"\n"),
    )
    .unwrap();
    let mut worker = h.worker_process_with(
        "30s",
        FLOODERS + 1,
        true,
        &["--config", config.to_str().unwrap()],
    );
    let mut log = worker.stderr_lines();
    let warm_up = h
        .enqueue(
            "fixtures-grants",
            "noop",
            Value::Null,
            EnqueueOptions::default(),
        )
        .await;
    h.wait(&warm_up, Duration::from_secs(30)).await;
    let mut floods = Vec::new();
    for flooder in 0..FLOODERS {
        let input = json!({
            "channel": format!("allowed:flood-{flooder}"),
            "bytes": EVENT_BYTES,
            "ms": 3000,
        });
        floods.push(
            h.enqueue(
                "fixtures-grants",
                "event_flood",
                input,
                EnqueueOptions::default(),
            )
            .await,
        );
    }
    for flood in &floods {
        h.wait_until(flood, Duration::from_secs(30), |job| {
            job.status == JobStatus::Running
        })
        .await;
    }
    let beside = h
        .enqueue(
            "fixtures-grants",
            "noop",
            Value::Null,
            EnqueueOptions::default(),
        )
        .await;
    let beside = h.wait(&beside, Duration::from_secs(10)).await;
    assert_eq!(beside.status, JobStatus::Completed, "{beside:?}");
    for flood in &floods {
        let flood = h.wait(flood, Duration::from_secs(30)).await;
        assert_eq!(flood.status, JobStatus::Completed, "{flood:?}");
        assert!(
            beside.finished_at < flood.finished_at,
            "the job beside the flood finished only after it: {beside:?}\n{flood:?}"
        );
        let flooded = result_json(&flood);
        assert!(
            flooded["published"].as_u64().unwrap() > 0 && flooded["refused"] == 0,
            "{flooded}"
        );
    }
    worker.kill();
    let mut timed_out = Vec::new();
    while let Some(line) = log.recv().await {
        if line.contains("timed out") {
            timed_out.push(line);
        }
    }
    assert!(timed_out.is_empty(), "{timed_out:#?}");
}

/// When Redis reaches its `maxmemory`, a worker keeps the outcome Redis refuses, and its job's
/// entry, and takes no new job (not even one promoted meanwhile) until Redis has room again;
/// then the outcome is stored, from the first attempt, and the waiting job runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_keeps_outcomes_waiting_and_new_jobs_queued_until_it_has_room() {
    let h = Harness::with(RedisOptions {
        maxmemory: Some(16 << 20),
        ..RedisOptions::default()
    })
    .await;
    let mut worker = h.worker_process("30s", 2, true);
    let mut log = worker.stderr_lines();
    let warm_up = h
        .enqueue("fixtures", "noop", Value::Null, EnqueueOptions::default())
        .await;
    h.wait(&warm_up, Duration::from_secs(30)).await;
    let finished_while_full = h
        .enqueue(
            "fixtures",
            "sleep",
            json!({"ms": 1500}),
            EnqueueOptions::default(),
        )
        .await;
    // Due while Redis is full; the promoter moves it onto its stream all the same.
    let promoted_while_full = h
        .enqueue(
            "hello",
            "greet",
            json!({"name": "later"}),
            EnqueueOptions {
                delay: Some(Duration::from_secs(5)),
                ..EnqueueOptions::default()
            },
        )
        .await;
    h.wait_until(&finished_while_full, Duration::from_secs(30), |job| {
        job.status == JobStatus::Running
    })
    .await;

    let mut redis = h.redis_connection().await;
    let chunk = vec![b'f'; 64 << 10];
    loop {
        let appended: redis::RedisResult<u64> = redis::cmd("APPEND")
            .arg("filler")
            .arg(&chunk)
            .query_async(&mut redis)
            .await;
        match appended {
            Ok(_) => {}
            Err(err) if err.code() == Some("OOM") => break,
            Err(err) => panic!("filling Redis failed: {err}"),
        }
    }
    // Redis counts its clients' buffers too, which come and go by tens of KiB: with the cap
    // a MiB under what it holds, it stays full until the filler goes.
    let memory: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut redis)
        .await
        .unwrap();
    let used: u64 = memory
        .lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(used - (1 << 20))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(
        h.job(&finished_while_full).await.status,
        JobStatus::Running,
        "the job finished before Redis was full"
    );
    let refused = "Redis is full, so the outcome waits here";
    next_line_with(&mut log, refused).await;
    let promoted = h.job(&promoted_while_full).await;
    assert_eq!(
        promoted.status,
        JobStatus::Scheduled,
        "the delayed job became due before the first outcome was refused: {promoted:?}"
    );
    h.wait_until(&promoted_while_full, Duration::from_secs(30), |job| {
        job.status != JobStatus::Scheduled
    })
    .await;
    // Two more tries of the outcome from now are a backoff step apart, a second at least by
    // now: long enough for a worker that still took jobs to take the promoted one, which it
    // has a free slot for.
    while log.try_recv().is_ok() {}
    for _ in 0..2 {
        next_line_with(&mut log, refused).await;
    }
    assert_eq!(
        (
            h.job(&finished_while_full).await.status,
            h.job(&promoted_while_full).await.status
        ),
        (JobStatus::Running, JobStatus::Pending),
        "while Redis is full, the outcome is not stored and no new job starts"
    );
    // Not even taken: an entry taken and not started would wait out the visibility timeout.
    let (taken, ..): (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg("tb:{default}:s:normal")
        .arg("workers")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(
        taken, 1,
        "the worker holds more than the finished job's entry"
    );

    let () = redis::cmd("DEL")
        .arg("filler")
        .query_async(&mut redis)
        .await
        .unwrap();
    let finished = h.wait(&finished_while_full, Duration::from_secs(30)).await;
    assert_eq!(
        (finished.status, finished.attempt, result_json(&finished)),
        (JobStatus::Completed, 1, json!(1500)),
        "{finished:?}"
    );
    let promoted = h.wait(&promoted_while_full, Duration::from_secs(30)).await;
    assert_eq!(
        (promoted.status, promoted.attempt),
        (JobStatus::Completed, 1),
        "{promoted:?}"
    );
}

/// The partition tag at the front of a job id: `default`, `default~1.40`, ...
fn partition_of(id: &str) -> &str {
    id.rsplit_once('-').unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_queue_spreads_its_jobs_and_one_worker_serves_every_partition_in_turn() {
    let h = Harness::start().await;
    assert_eq!(h.queue.set_partitions("default", 3).await.unwrap(), 3);
    let shrink = h.queue.set_partitions("default", 2).await.unwrap_err();
    assert!(shrink.to_string().contains("only grow"), "{shrink}");

    let mut ids = Vec::new();
    for n in 0..30 {
        ids.push(
            h.enqueue(
                "hello",
                "greet",
                json!({"name": n.to_string()}),
                EnqueueOptions::default(),
            )
            .await,
        );
    }
    let partitions: std::collections::BTreeSet<&str> =
        ids.iter().map(|id| partition_of(id)).collect();
    assert_eq!(partitions.len(), 3, "{partitions:?}");
    assert!(
        partitions
            .iter()
            .all(|tag| *tag == "default" || tag.starts_with("default~")),
        "{partitions:?}"
    );
    // An idempotency key finds its first job, whichever partition that went to.
    let keyed = EnqueueOptions {
        idempotency_key: Some("order-17".into()),
        ..EnqueueOptions::default()
    };
    let input = json!({"name": "keyed"});
    let first = h
        .enqueue("hello", "greet", input.clone(), keyed.clone())
        .await;
    assert_eq!(h.enqueue("hello", "greet", input, keyed).await, first);
    ids.push(first);
    let stats = h.queue.stats_of("default").await.unwrap();
    assert_eq!((stats.partitions, stats.waiting.normal), (3, 31));

    // One slot: each round starts one job, from the partitions in turn.
    let _worker = h.worker(|config| config.concurrency = 1);
    let mut finished = Vec::new();
    for id in &ids {
        let job = h.wait(id, Duration::from_secs(60)).await;
        assert_eq!(job.status, JobStatus::Completed, "{job:?}");
        assert_eq!(job.queue, "default");
        finished.push((job.finished_at.unwrap(), partition_of(id)));
    }
    finished.sort();
    let first_three: std::collections::BTreeSet<&str> = finished
        .iter()
        .take(3)
        .map(|(_, partition)| *partition)
        .collect();
    assert_eq!(first_three.len(), 3, "{finished:?}");
    let page = h
        .queue
        .list(TENANT, &JobFilter::default(), None, 100)
        .await
        .unwrap();
    assert_eq!(page.jobs.len(), ids.len());
}

/// The harness's queue keeping finished jobs as `settings` say, for workers started after.
fn keeping(h: &mut Harness, settings: HistorySettings) {
    h.queue = h.queue.clone().with_history(settings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_jobs_record_outlives_its_result_with_every_attempt_measured() {
    let mut h = Harness::start().await;
    keeping(
        &mut h,
        HistorySettings {
            results: Duration::ZERO,
            ..HistorySettings::default()
        },
    );
    let worker = h.worker(|config| config.id = "history-worker".into());
    let options = EnqueueOptions {
        max_retries: Some(3),
        backoff: fast_backoff(),
        ..EnqueueOptions::default()
    };
    let flaky = h
        .enqueue("hello", "flaky", json!({"succeed_on": 3}), options)
        .await;
    let dead = h
        .enqueue("fixtures", "panic", Value::Null, EnqueueOptions::default())
        .await;
    for id in [&flaky, &dead] {
        h.wait(id, Duration::from_secs(30)).await;
    }
    let flaky = h
        .wait_until(&flaky, Duration::from_secs(30), |job| job.results_expired)
        .await;
    assert_eq!(flaky.status, JobStatus::Completed);
    assert_eq!((flaky.result.as_ref(), flaky.log.as_ref()), (None, None));
    let outcomes: Vec<&str> = flaky.attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["failed", "failed", "completed"], "{flaky:?}");
    for (n, attempt) in flaky.attempts.iter().enumerate() {
        assert_eq!(attempt.attempt as usize, n + 1);
        assert_eq!(attempt.detail.worker, "history-worker");
        assert!(attempt.started_at > 0 && attempt.started_at <= attempt.ended_at);
        assert!(
            attempt.detail.fuel_used.is_some_and(|fuel| fuel > 0),
            "{attempt:?}"
        );
        assert!(attempt.detail.peak_memory.is_some_and(|bytes| bytes > 0));
    }
    assert_eq!(
        flaky.attempts[0].detail.error_kind.as_deref(),
        Some("task_error")
    );
    assert!(flaky.attempts[2].detail.error.is_none());
    assert!(flaky.attempts[0].ended_at <= flaky.attempts[1].started_at);

    // A dead job whose input is gone cannot run again, and stays dead with its dead letter.
    h.wait_until(&dead, Duration::from_secs(30), |job| job.results_expired)
        .await;
    assert!(matches!(
        h.queue.retry_dead(&dead).await,
        Err(RetryError::InputExpired)
    ));
    assert_eq!(h.job(&dead).await.status, JobStatus::Dead);
    assert_eq!(h.dead_letter_entries().await, 1);

    // More jobs than one trimming page, many finishing in the same millisecond: each loses
    // its results, none its record.
    let jobs = (0..1200)
        .map(|_| NewJob {
            module: "fixtures".into(),
            task: "noop".into(),
            input: b"null".to_vec(),
            options: EnqueueOptions::default(),
        })
        .collect();
    let enqueued = h.queue.enqueue_batch(TENANT, jobs).await.unwrap();
    wait::until(
        "every job of the batch finished and lost its results",
        Duration::from_secs(60),
        || async {
            for job in &enqueued {
                let job = h.job(&job.id).await;
                if !(job.status == JobStatus::Completed && job.results_expired) {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_keeps_its_cap_dropping_the_oldest_and_the_counts_follow() {
    let mut h = Harness::start().await;
    keeping(
        &mut h,
        HistorySettings {
            max_per_queue: 3,
            ..HistorySettings::default()
        },
    );
    let _worker = h.worker(|_| {});
    let ids = h.greet_one_after_another(5).await;
    wait::until(
        "the two oldest records trimmed",
        Duration::from_secs(30),
        || async {
            let mut kept = 0;
            for id in &ids[..2] {
                kept += usize::from(h.queue.job(id).await.unwrap().is_some());
            }
            (kept == 0).then_some(())
        },
    )
    .await;
    let listed = h.listed(&JobFilter::default(), 10).await;
    let newest: Vec<String> = ids[2..].iter().rev().cloned().collect();
    assert_eq!(listed, newest);
    let counts = h.queue.state_counts(TENANT).await.unwrap();
    assert_eq!(counts[&JobStatus::Completed], 3, "{counts:?}");
    assert_eq!(counts[&JobStatus::Pending], 0, "{counts:?}");
    assert_eq!(counts[&JobStatus::Running], 0, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counts_per_state_follow_every_change_of_state() {
    let h = Harness::start().await;
    let count = |status| {
        let queue = h.queue.clone();
        async move { queue.state_counts(TENANT).await.unwrap()[&status] }
    };
    let later = EnqueueOptions {
        delay: Some(Duration::from_secs(3600)),
        ..EnqueueOptions::default()
    };
    let scheduled = h
        .enqueue("hello", "greet", json!({"name": "later"}), later)
        .await;
    let greet = h
        .enqueue(
            "hello",
            "greet",
            json!({"name": "now"}),
            EnqueueOptions::default(),
        )
        .await;
    let panic = h
        .enqueue("fixtures", "panic", Value::Null, EnqueueOptions::default())
        .await;
    assert_eq!(
        (
            count(JobStatus::Pending).await,
            count(JobStatus::Scheduled).await
        ),
        (2, 1)
    );
    h.queue.cancel(&scheduled).await.unwrap();
    assert_eq!(
        (
            count(JobStatus::Scheduled).await,
            count(JobStatus::Cancelled).await
        ),
        (0, 1)
    );

    let _worker = h.worker(|_| {});
    for id in [&greet, &panic] {
        h.wait(id, Duration::from_secs(30)).await;
    }
    assert_eq!(
        (
            count(JobStatus::Pending).await,
            count(JobStatus::Running).await,
            count(JobStatus::Completed).await,
            count(JobStatus::Dead).await,
        ),
        (0, 0, 1, 1)
    );
    assert!(h.queue.retry_dead(&panic).await.unwrap());
    h.wait_until(&panic, Duration::from_secs(30), |job| {
        job.dead_retries == 1 && job.status == JobStatus::Dead
    })
    .await;
    assert_eq!(count(JobStatus::Dead).await, 1);
    assert_eq!(h.queue.purge_dead(TENANT, None).await.unwrap(), 1);
    let counts = h.queue.state_counts(TENANT).await.unwrap();
    let total: u64 = counts.values().sum();
    assert_eq!(
        (
            counts[&JobStatus::Dead],
            counts[&JobStatus::Completed],
            total
        ),
        (0, 1, 2),
        "{counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_found_by_a_prefix_of_their_id_and_by_when_they_were_created() {
    let h = Harness::start().await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let name = format!("n{n}");
        ids.push(
            h.enqueue(
                "hello",
                "greet",
                json!({"name": name}),
                EnqueueOptions::default(),
            )
            .await,
        );
    }
    let by_prefix = |prefix: String| {
        let queue = h.queue.clone();
        async move {
            let filter = JobFilter {
                id_prefix: Some(prefix),
                ..JobFilter::default()
            };
            let page = queue.list(TENANT, &filter, None, 2).await.unwrap();
            let ids: Vec<String> = page.jobs.into_iter().map(|job| job.id).collect();
            (ids, page.next_cursor.is_some())
        }
    };
    // Past the partition's tag ("default-"), twelve hex digits name one job.
    for id in &ids {
        assert_eq!(
            by_prefix(id[..20].to_owned()).await,
            (vec![id.clone()], false)
        );
    }
    // In the listing's order (jobs of one millisecond by id), as a listing without it.
    let newest = h.listed(&JobFilter::default(), 2).await;
    assert_eq!(by_prefix("default-".into()).await, (newest, true));
    assert_eq!(by_prefix("default-zz".into()).await, (vec![], false));
    // Another tenant's prefix search finds none of them.
    let filter = JobFilter {
        id_prefix: Some(ids[0].clone()),
        ..JobFilter::default()
    };
    assert!(
        h.queue
            .list("other", &filter, None, 10)
            .await
            .unwrap()
            .jobs
            .is_empty()
    );

    // A time range: from the newest job's millisecond on, then up to it.
    let newest = h.job(&ids[2]).await.created_at;
    let in_range = |created_after: Option<u64>, created_until: Option<u64>| {
        let queue = h.queue.clone();
        async move {
            let filter = JobFilter {
                created_after,
                created_until,
                ..JobFilter::default()
            };
            let jobs = queue.list(TENANT, &filter, None, 10).await.unwrap().jobs;
            let within = jobs.iter().all(|job| {
                created_after.is_none_or(|after| job.created_at >= after)
                    && created_until.is_none_or(|until| job.created_at <= until)
            });
            (within, jobs.len())
        }
    };
    let first = h.job(&ids[0]).await.created_at;
    assert!(in_range(Some(newest), None).await.0);
    assert!(in_range(Some(newest), None).await.1 >= 1);
    assert!(in_range(None, Some(first)).await.0);
    assert!(in_range(None, Some(first)).await.1 >= 1);
    assert_eq!(in_range(Some(first), Some(newest)).await, (true, 3));
    assert_eq!(in_range(Some(newest + 1), None).await, (true, 0));

    // Behind more newer jobs than one request reads, the range is still found at once.
    let later = (0..6000)
        .map(|_| NewJob {
            module: "hello".into(),
            task: "greet".into(),
            input: b"{}".to_vec(),
            options: EnqueueOptions {
                delay: Some(Duration::from_secs(3600)),
                ..EnqueueOptions::default()
            },
        })
        .collect::<Vec<_>>();
    for chunk in later.chunks(1000) {
        h.queue.enqueue_batch(TENANT, chunk.to_vec()).await.unwrap();
    }
    let (within, found) = in_range(None, Some(newest)).await;
    assert!(within && found >= 3, "{found} found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_jobs_are_listed_from_their_own_index_which_a_worker_rebuilds_when_missing() {
    let h = Harness::start().await;
    let worker = h.worker(|_| {});
    let dead = h
        .enqueue("fixtures", "panic", Value::Null, EnqueueOptions::default())
        .await;
    h.wait(&dead, Duration::from_secs(30)).await;
    h.greet_one_after_another(3).await;
    let listed = |dead_letters: Vec<JobRecord>| -> Vec<String> {
        dead_letters.into_iter().map(|job| job.id).collect()
    };
    assert_eq!(listed(h.dead_letters().await), std::slice::from_ref(&dead));
    worker.shutdown().await;

    // A Redis written before the index: a worker starting indexes the dead letters.
    let () = redis::cmd("DEL")
        .arg("tb:{default}:dead-jobs")
        .query_async(&mut h.redis_connection().await)
        .await
        .unwrap();
    assert!(h.dead_letters().await.is_empty());
    let worker = h.worker(|_| {});
    wait::until(
        "the dead job listed again",
        Duration::from_secs(30),
        || async { (listed(h.dead_letters().await) == [dead.clone()]).then_some(()) },
    )
    .await;
    // No worker to run it again (it would die again at once, back in the index).
    worker.shutdown().await;
    assert!(h.queue.retry_dead(&dead).await.unwrap());
    assert!(
        h.dead_letters().await.is_empty(),
        "a retried job leaves the index"
    );
}
