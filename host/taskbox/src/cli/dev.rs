//! `taskbox dev`, `taskbox serve` and `taskbox module push`: running workers and giving them
//! modules.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use taskbox_runtime::{Runtime, RuntimeConfig};

use crate::cli::redis_url::{RedisArgs, dev_url_file};
use crate::queue::{DEFAULT_QUEUE, Queue, validate_name};
use crate::worker::{ENV_CONCURRENCY, Worker, WorkerConfig, default_worker_id};

/// Worker options shared by `dev` and `serve`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct WorkerArgs {
    /// Jobs run at once.
    #[arg(long, env = ENV_CONCURRENCY, default_value_t = 16)]
    concurrency: usize,
    /// Queues to serve (repeat the flag for several).
    #[arg(long = "queue", default_value = DEFAULT_QUEUE)]
    queues: Vec<String>,
    /// Jobs whose worker was silent this long are run again.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    visibility_timeout: Duration,
    /// At shutdown, how long running jobs may take before they are handed back.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "25s")]
    grace: Duration,
    /// Where precompiled modules are kept across restarts.
    #[arg(long, env = "TASKBOX_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
}

/// Everything in one process for development: a worker, and a private redis-server when no
/// Redis is given. Other `taskbox` commands find that Redis by themselves.
#[derive(Debug, clap::Args)]
pub(crate) struct DevArgs {
    #[command(flatten)]
    redis: RedisArgs,
    /// Push these modules at start, each named after its file (`hello.wasm` is `hello`).
    #[arg(long = "module", value_name = "FILE.wasm")]
    modules: Vec<PathBuf>,
    #[command(flatten)]
    worker: WorkerArgs,
}

/// Run taskbox roles against a shared Redis.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    redis: RedisArgs,
    /// The roles this process plays. Only `worker` exists so far.
    #[arg(long, value_delimiter = ',', default_value = "worker")]
    roles: Vec<String>,
    #[command(flatten)]
    worker: WorkerArgs,
}

/// Upload task modules.
#[derive(Debug, clap::Args)]
pub(crate) struct ModuleArgs {
    #[command(subcommand)]
    command: ModuleCommand,
    #[command(flatten)]
    redis: RedisArgs,
}

#[derive(Debug, clap::Subcommand)]
enum ModuleCommand {
    /// Store a component in Redis, where every worker finds it, under a name.
    Push {
        /// The component.
        file: PathBuf,
        /// Its name (default: the file's name without `.wasm`).
        #[arg(long)]
        name: Option<String>,
    },
}

pub(crate) async fn dev(args: DevArgs) -> anyhow::Result<ExitCode> {
    let (url, _server) = args.redis.url_or_private().await?;
    let queue = Queue::connect(&url, Duration::from_secs(30)).await?;
    std::fs::write(dev_url_file(), &url)
        .with_context(|| format!("writing {}", dev_url_file().display()))?;
    eprintln!("taskbox dev: Redis at {url}");
    for path in &args.modules {
        let (name, digest) = push(&queue, path, None).await?;
        eprintln!("taskbox dev: module `{name}` = {digest}");
    }
    eprintln!(
        "taskbox dev: worker running {} jobs at once; try `taskbox job enqueue MODULE/TASK --input JSON --wait`",
        args.worker.concurrency
    );
    let result = run_worker(queue, &args.worker).await;
    let _ = std::fs::remove_file(dev_url_file());
    result
}

pub(crate) async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    if let Some(role) = args.roles.iter().find(|role| role.as_str() != "worker") {
        bail!("unknown role `{role}`: this version of taskbox serve has only the `worker` role");
    }
    let queue = args.redis.connect().await?;
    run_worker(queue, &args.worker).await
}

pub(crate) async fn module(args: ModuleArgs) -> anyhow::Result<ExitCode> {
    let queue = args.redis.connect().await?;
    match args.command {
        ModuleCommand::Push { file, name } => {
            let (name, digest) = push(&queue, &file, name).await?;
            println!("{name} {digest}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Checks that the component loads here (so a broken module is refused at push, not at its
/// first job), then stores it.
async fn push(
    queue: &Queue,
    path: &Path,
    name: Option<String>,
) -> anyhow::Result<(String, String)> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading the module {}", path.display()))?;
    let name = match name {
        Some(name) => name,
        None => path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .with_context(|| format!("{} has no file name", path.display()))?,
    };
    validate_name("module", &name)?;
    let check = bytes.clone();
    tokio::task::spawn_blocking(move || {
        let runtime = Runtime::new(&RuntimeConfig {
            max_concurrent_jobs: 1,
            ..RuntimeConfig::default()
        })?;
        runtime
            .load(&check)
            .map(|_| ())
            .map_err(anyhow::Error::from)
    })
    .await?
    .with_context(|| format!("the module {} cannot run here", path.display()))?;
    let digest = queue.put_module(&name, &bytes).await?;
    Ok((name, digest.to_string()))
}

async fn run_worker(queue: Queue, args: &WorkerArgs) -> anyhow::Result<ExitCode> {
    for name in &args.queues {
        validate_name("queue", name)?;
    }
    let runtime = Arc::new(Runtime::new(&RuntimeConfig {
        max_concurrent_jobs: u32::try_from(args.concurrency)?.max(1) * 2,
        cache_dir: args.cache_dir.clone(),
        ..RuntimeConfig::default()
    })?);
    let config = WorkerConfig {
        queues: args.queues.clone(),
        concurrency: args.concurrency.max(1),
        visibility_timeout: args.visibility_timeout,
        grace: args.grace,
        ..WorkerConfig::new(default_worker_id())
    };
    let worker = Worker::new(queue, runtime, config);
    worker.run(shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
