//! `taskbox dev`: the API, a worker and (when no Redis is given) a private redis-server in
//! one process, with modules published at start.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::cli::module::read_module;
use crate::cli::redis_url::{RedisArgs, dev_url_file};
use crate::cli::roles::{ApiArgs, WorkerArgs, run_roles, worker_runtime};
use taskbox_core::auth::DEFAULT_TENANT;
use taskbox_core::registry::Registry;
use taskbox_core::scheduler::Schedules;

/// Everything in one process for development: the API, a worker, and a private
/// redis-server when no Redis is given. Other `taskbox` commands find the API by default.
#[derive(Debug, clap::Args)]
pub(crate) struct DevArgs {
    #[command(flatten)]
    redis: RedisArgs,
    /// Publish these modules at start: a directory with a `taskbox.toml`, or a `.wasm` with
    /// a `taskbox.toml` beside it.
    #[arg(long = "module", value_name = "PATH")]
    modules: Vec<PathBuf>,
    #[command(flatten)]
    api: ApiArgs,
    #[command(flatten)]
    worker: WorkerArgs,
}

pub(crate) async fn dev(args: DevArgs) -> anyhow::Result<ExitCode> {
    let host = args.api.host_config()?;
    let (url, _server) = args.redis.url_or_private().await?;
    let queue = taskbox_core::connect(&url, Duration::from_secs(30)).await?;
    std::fs::write(dev_url_file(), &url)
        .with_context(|| format!("writing {}", dev_url_file().display()))?;
    eprintln!("taskbox dev: Redis at {url}");
    let queue = host.configure_queue(queue).await?;
    let runtime = worker_runtime(&args.worker, &host)?;
    let registry = Registry::new(queue.clone(), Arc::clone(&runtime), host.registry());
    let schedules = Schedules::new(queue.clone());
    for path in &args.modules {
        let (manifest, _, bytes) = read_module(path, None)?;
        let module = registry
            .publish(DEFAULT_TENANT, manifest, bytes)
            .await?
            .module;
        schedules.sync_module(DEFAULT_TENANT, &module.name).await?;
        eprintln!(
            "taskbox dev: module {}@{} ({})",
            module.name, module.version, module.digest
        );
    }
    let api = args.api.api_config(&host);
    eprintln!(
        "taskbox dev: API on http://{0}/v1, dashboard on http://{0}/ui, worker running {1} jobs at once; try `taskbox job enqueue MODULE/TASK --input JSON --wait`",
        api.listen, args.worker.concurrency
    );
    let worker = Some((&args.worker, host.capabilities()?, host.job_limits()));
    let result = run_roles(
        queue,
        registry,
        runtime,
        Some(api),
        worker,
        true,
        args.api.metrics_listen,
    )
    .await;
    let _ = std::fs::remove_file(dev_url_file());
    result
}
