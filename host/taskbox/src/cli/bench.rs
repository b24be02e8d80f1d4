//! `taskbox bench`: end-to-end throughput and latency of no-op jobs through Redis.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::StreamExt as _;
use taskbox_runtime::{Runtime, RuntimeConfig};

use crate::cli::module::read_module;
use crate::cli::redis_url::RedisArgs;
use taskbox_core::auth::DEFAULT_TENANT;
use taskbox_core::metrics::metrics;
use taskbox_core::queue::{EnqueueOptions, NewJob, Queue};
use taskbox_core::registry::{Registry, RegistryConfig};
use taskbox_core::worker::{Worker, WorkerConfig, WorkerStats, default_worker_id};

/// The queue the benchmark uses, so that it does not mix with real jobs.
const BENCH_QUEUE: &str = "bench";

/// Measure end to end: enqueue N no-op jobs, drain them with one worker in this process,
/// then time single jobs from enqueue to result at low load. Each job runs in its own fresh
/// sandbox. Without --redis, a private redis-server is started.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    redis: RedisArgs,
    /// The module to run: a directory with a `taskbox.toml` (by default the fixtures module,
    /// built in guests/).
    #[arg(long, default_value = "guests/fixtures")]
    module: PathBuf,
    /// The task to run.
    #[arg(long, default_value = "noop")]
    task: String,
    /// Jobs to enqueue and drain.
    #[arg(long, default_value_t = 50_000)]
    jobs: usize,
    /// Jobs the worker runs at once (no-op jobs are so short that a deep pipeline pays).
    #[arg(long, default_value_t = 512)]
    concurrency: usize,
    /// Jobs timed one at a time for the latency figures.
    #[arg(long, default_value_t = 1000)]
    samples: usize,
    /// Partitions of the benchmark's queue (it may have more from an earlier run: a queue's
    /// partitions only grow).
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Record the host's metrics while draining: on, off, or both (`--rounds` rounds of
    /// each, alternately, with both rates and their ratio).
    #[arg(long, value_enum, default_value = "on")]
    metrics: MetricsMode,
    /// Rounds of each with `--metrics both`.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

pub(crate) async fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let (manifest, _, bytes) = read_module(&args.module, None).with_context(|| {
        format!(
            "reading the module {} (build the guests first: cd guests && cargo build --release)",
            args.module.display()
        )
    })?;
    let (url, _server) = args.redis.url_or_private().await?;
    let queue = taskbox_core::connect(&url, Duration::from_secs(10)).await?;
    let runtime = Arc::new(Runtime::new(&RuntimeConfig {
        max_concurrent_jobs: u32::try_from(args.concurrency)?.max(1) * 2,
        ..RuntimeConfig::default()
    })?);
    let registry = Registry::new(
        queue.clone(),
        Arc::clone(&runtime),
        RegistryConfig::default(),
    );
    let module = registry
        .publish(DEFAULT_TENANT, manifest, bytes)
        .await?
        .module;
    let job = || NewJob {
        module: format!("{}@{}", module.name, module.version),
        task: args.task.clone(),
        input: b"null".to_vec(),
        options: EnqueueOptions {
            queue: Some(BENCH_QUEUE.into()),
            ..EnqueueOptions::default()
        },
    };

    let partitions = queue.partitions(BENCH_QUEUE).await?.max(args.partitions);
    let partitions = queue.set_partitions(BENCH_QUEUE, partitions).await?;
    println!(
        "taskbox bench: {} jobs of {}/{}, {partitions} partition(s), Redis at {url}",
        args.jobs, module.name, args.task
    );
    let failed = match args.metrics {
        MetricsMode::On | MetricsMode::Off => {
            metrics().set_enabled(args.metrics == MetricsMode::On);
            let round = drain(&queue, &runtime, &job, &args).await?;
            round.print(&args);
            round.failed
        }
        MetricsMode::Both => compare_metrics(&queue, &runtime, &job, &args).await?,
    };
    metrics().set_enabled(true);
    let worker = BenchWorker::start(&queue, &runtime, &args);
    let mut done = std::pin::pin!(queue.finished_jobs(BENCH_QUEUE).await?);
    let mut latencies = Vec::with_capacity(args.samples);
    for _ in 0..args.samples {
        let started = Instant::now();
        let id = queue.enqueue(DEFAULT_TENANT, job()).await?.id;
        loop {
            let finished = tokio::time::timeout(Duration::from_secs(10), done.next())
                .await
                .context("a job took over 10 s")?
                .context("the subscription ended")?;
            if finished == id.as_bytes() {
                break;
            }
        }
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let percentile =
        |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "latency:  p50 {:.2?}  p99 {:.2?}  (enqueue to result, one job at a time, {} samples)",
        percentile(0.50),
        percentile(0.99),
        args.samples
    );
    worker.stop().await?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Whether the host records its metrics while the benchmark drains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum MetricsMode {
    On,
    Off,
    /// Rounds with and without, alternately, to measure what recording costs.
    Both,
}

/// What one enqueue and drain measured.
#[derive(Debug)]
struct Drained {
    jobs: usize,
    enqueue: Duration,
    drain: Duration,
    cpu: Duration,
    redis_cpu: Duration,
    redis_commands: u64,
    failed: u64,
    /// Redis commands by primary, on a cluster.
    spread: Vec<String>,
}

impl Drained {
    fn rate(&self) -> f64 {
        self.jobs as f64 / self.drain.as_secs_f64()
    }

    fn print(&self, args: &BenchArgs) {
        println!(
            "enqueue:  {:>9.0} jobs/s  ({} jobs in {:.2?}, batches of 1000)",
            self.jobs as f64 / self.enqueue.as_secs_f64(),
            self.jobs,
            self.enqueue
        );
        println!(
            "drain:    {:>9.0} jobs/s  ({} jobs in {:.2?}, {} at once, {} failed)",
            self.rate(),
            self.jobs,
            self.drain,
            args.concurrency,
            self.failed
        );
        let per_job = |total: Duration| total.as_secs_f64() * 1e6 / self.jobs as f64;
        println!(
            "cost:     {:>6.1} µs CPU per job in this process, {:.1} µs in Redis, {:.2} Redis \
             commands per job (during the drain)",
            per_job(self.cpu),
            per_job(self.redis_cpu),
            self.redis_commands as f64 / self.jobs as f64
        );
        if !self.spread.is_empty() {
            println!(
                "spread:   Redis commands by primary: {}",
                self.spread.join(", ")
            );
        }
    }
}

/// A worker of the benchmark's queue in this process, running until stopped.
struct BenchWorker {
    stats: Arc<WorkerStats>,
    stop: tokio::sync::oneshot::Sender<()>,
    running: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl BenchWorker {
    fn start(queue: &Queue, runtime: &Arc<Runtime>, args: &BenchArgs) -> Self {
        let config = WorkerConfig {
            queues: vec![BENCH_QUEUE.into()],
            concurrency: args.concurrency,
            ..WorkerConfig::new(default_worker_id())
        };
        let worker = Worker::new(queue.clone(), Arc::clone(runtime), config);
        let stats = worker.stats();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(worker.run(async {
            let _ = stopped.await;
        }));
        Self {
            stats,
            stop,
            running,
        }
    }

    /// Stops taking jobs and waits for the running ones.
    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.running.await?
    }
}

/// Enqueues the benchmark's jobs, then drains them with a worker of its own.
async fn drain(
    queue: &Queue,
    runtime: &Arc<Runtime>,
    job: &impl Fn() -> NewJob,
    args: &BenchArgs,
) -> anyhow::Result<Drained> {
    let started = Instant::now();
    for chunk in (0..args.jobs).collect::<Vec<_>>().chunks(1000) {
        queue
            .enqueue_batch(DEFAULT_TENANT, chunk.iter().map(|_| job()).collect())
            .await?;
    }
    let enqueue = started.elapsed();
    let worker = BenchWorker::start(queue, runtime, args);
    let stats = Arc::clone(&worker.stats);
    let (cpu_before, redis_before) = (process_cpu(), queue.store().server_usage().await?);
    let started = Instant::now();
    while stats.completed.load(Ordering::Relaxed) + stats.failed.load(Ordering::Relaxed)
        < args.jobs as u64
    {
        if worker.running.is_finished() {
            bail!("the worker stopped: {:?}", worker.running.await);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let drain = started.elapsed();
    let (cpu, redis) = (
        process_cpu() - cpu_before,
        queue.store().server_usage().await?,
    );
    worker.stop().await?;
    let commands = redis.commands - redis_before.commands;
    let spread = match redis.commands_by_primary.len() {
        0 | 1 => Vec::new(),
        _ => redis
            .commands_by_primary
            .iter()
            .map(|(node, calls)| {
                let before = redis_before
                    .commands_by_primary
                    .iter()
                    .find_map(|(was, calls)| (was == node).then_some(*calls))
                    .unwrap_or(0);
                let share = (calls - before) as f64 * 100.0 / commands.max(1) as f64;
                format!("{node} {share:.0}%")
            })
            .collect(),
    };
    Ok(Drained {
        jobs: args.jobs,
        enqueue,
        drain,
        cpu,
        redis_cpu: redis.cpu.saturating_sub(redis_before.cpu),
        redis_commands: commands,
        failed: stats.failed.load(Ordering::Relaxed),
        spread,
    })
}

/// Drains `--rounds` times with metrics and as many without, alternately (which goes first
/// alternates too, so that a machine slowing down or warming up does not favour one), and
/// prints both rates and their ratio. Returns the jobs that failed.
async fn compare_metrics(
    queue: &Queue,
    runtime: &Arc<Runtime>,
    job: &impl Fn() -> NewJob,
    args: &BenchArgs,
) -> anyhow::Result<u64> {
    let (mut with, mut without) = (Vec::new(), Vec::new());
    // A first round unmeasured: the first drain of a process is slower (its pool, its
    // connections and the CPU's caches are cold) and would count against one side.
    let mut failed = drain(queue, runtime, job, args).await?.failed;
    for round in 0..args.rounds {
        let order = match round % 2 {
            0 => [true, false],
            _ => [false, true],
        };
        for on in order {
            metrics().set_enabled(on);
            let drained = drain(queue, runtime, job, args).await?;
            failed += drained.failed;
            let rounds = if on { &mut with } else { &mut without };
            rounds.push(drained);
        }
    }
    let mean = |rounds: &[Drained], figure: fn(&Drained) -> f64| {
        rounds.iter().map(figure).sum::<f64>() / rounds.len().max(1) as f64
    };
    let rate = |rounds: &[Drained]| mean(rounds, Drained::rate);
    let cpu = |rounds: &[Drained]| {
        mean(rounds, |round| {
            round.cpu.as_secs_f64() * 1e6 / round.jobs as f64
        })
    };
    for (name, rounds) in [("on", &with), ("off", &without)] {
        let rates: Vec<String> = rounds
            .iter()
            .map(|round| format!("{:.0}", round.rate()))
            .collect();
        println!(
            "metrics {name:<3}: {:>6.0} jobs/s drained, {:.1} µs CPU per job in this process \
             (means of {} rounds; rates {})",
            rate(rounds),
            cpu(rounds),
            rounds.len(),
            rates.join(", ")
        );
    }
    println!(
        "metrics cost: the drain with metrics at {:.1}% of the rate without, {:+.1} µs CPU per job",
        rate(&with) * 100.0 / rate(&without),
        cpu(&with) - cpu(&without)
    );
    Ok(failed)
}

/// The CPU time this process has used, user and system.
fn process_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole rusage into the buffer it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}
