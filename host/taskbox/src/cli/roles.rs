//! What `serve` and `dev` share: the API's and the worker's options, and running the roles
//! of a host process until it is told to stop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use taskbox_runtime::{Limits, Runtime, RuntimeConfig};

use crate::api::{ApiConfig, DEFAULT_LISTEN, ENV_ADMIN_TOKEN};
use crate::config::HostConfig;
use taskbox_core::model::capabilities::HostCapabilities;
use taskbox_core::model::names::validate_name;
use taskbox_core::queue::{DEFAULT_QUEUE, Queue};
use taskbox_core::registry::Registry;
use taskbox_core::scheduler::Scheduler;
use taskbox_core::worker::{ENV_CONCURRENCY, Worker, WorkerConfig, default_worker_id};

/// Worker options shared by `dev` and `serve`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct WorkerArgs {
    /// Jobs run at once.
    #[arg(long, env = ENV_CONCURRENCY, default_value_t = 16)]
    pub(crate) concurrency: usize,
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

/// API options shared by `dev` and `serve`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ApiArgs {
    /// Where the API listens.
    #[arg(long, env = "TASKBOX_LISTEN", default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// The operator's token (admin of the `default` tenant). Required off loopback; without
    /// it a loopback API is open to anyone on the machine.
    #[arg(long, env = ENV_ADMIN_TOKEN, hide_env_values = true)]
    admin_token: Option<String>,
    /// The host configuration: policy for manifests and API limits (TOML).
    #[arg(long, env = "TASKBOX_CONFIG")]
    config: Option<PathBuf>,
    /// Also serve `GET /metrics` here, without a token, for a scraper on a private network
    /// (whatever roles the process plays).
    #[arg(long, env = "TASKBOX_METRICS_LISTEN")]
    pub(crate) metrics_listen: Option<SocketAddr>,
}

impl ApiArgs {
    pub(crate) fn host_config(&self) -> anyhow::Result<HostConfig> {
        self.config
            .as_deref()
            .map_or_else(|| Ok(HostConfig::default()), HostConfig::load)
    }

    pub(crate) fn api_config(&self, host: &HostConfig) -> ApiConfig {
        ApiConfig {
            listen: self.listen,
            admin_token: self.admin_token.clone(),
            max_body: usize::try_from(host.api.max_body).unwrap_or(usize::MAX),
            max_input: usize::try_from(host.api.max_input).unwrap_or(usize::MAX),
            enqueue_rate: host.api.enqueue_rate,
            enqueue_burst: host.api.enqueue_burst,
            max_event_streams: host.api.max_event_streams,
            max_event_streams_per_tenant: host.api.max_event_streams_per_tenant,
            ..ApiConfig::default()
        }
    }
}

pub(crate) fn worker_runtime(args: &WorkerArgs, host: &HostConfig) -> anyhow::Result<Arc<Runtime>> {
    Ok(Arc::new(Runtime::new(&RuntimeConfig {
        max_concurrent_jobs: u32::try_from(args.concurrency)?.max(1) * 2,
        cache_dir: args.cache_dir.clone(),
        module_cache_bytes: host.runtime.module_cache_size,
        ..RuntimeConfig::default()
    })?))
}

/// Runs the API, the worker and the scheduler (each when given), and the metrics listener
/// (when it has an address), until SIGINT or SIGTERM.
pub(crate) async fn run_roles(
    queue: Queue,
    registry: Registry,
    runtime: Arc<Runtime>,
    api: Option<ApiConfig>,
    worker: Option<(&WorkerArgs, HostCapabilities, Limits)>,
    scheduler: bool,
    metrics_listen: Option<SocketAddr>,
) -> anyhow::Result<ExitCode> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let signal = tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let wait_for_stop = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    // The queue gauges are read where they are served.
    let gauges = (api.is_some() || metrics_listen.is_some())
        .then(|| tokio::spawn(crate::api::refresh_gauges(queue.clone())));
    let metrics = metrics_listen.map(|listen| {
        let stop = wait_for_stop(stopped.clone());
        tokio::spawn(crate::api::serve_metrics(listen, stop))
    });
    let api = api.map(|config| {
        let (queue, registry) = (queue.clone(), registry.clone());
        let stop = wait_for_stop(stopped.clone());
        tokio::spawn(crate::api::serve(queue, registry, config, stop))
    });
    let scheduler = scheduler.then(|| {
        let scheduler = Scheduler::new(queue.clone());
        let stop = wait_for_stop(stopped.clone());
        tokio::spawn(async move { scheduler.run(stop).await })
    });
    let worker_result = match worker {
        Some((args, capabilities, limits)) => {
            let stop = wait_for_stop(stopped.clone());
            run_worker(queue, runtime, args, capabilities, limits, stop).await
        }
        None => Ok(()),
    };
    if worker_result.is_err() {
        // Dropping the stop sender stops the other roles.
        signal.abort();
    }
    if let Some(api) = api {
        api.await??;
    }
    if let Some(scheduler) = scheduler {
        scheduler.await?;
    }
    if let Some(metrics) = metrics {
        metrics.await??;
    }
    if let Some(gauges) = gauges {
        gauges.abort();
    }
    worker_result?;
    Ok(ExitCode::SUCCESS)
}

async fn run_worker(
    queue: Queue,
    runtime: Arc<Runtime>,
    args: &WorkerArgs,
    capabilities: HostCapabilities,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    for name in &args.queues {
        validate_name("queue", name)?;
    }
    let config = WorkerConfig {
        queues: args.queues.clone(),
        concurrency: args.concurrency.max(1),
        visibility_timeout: args.visibility_timeout,
        grace: args.grace,
        capabilities,
        limits,
        ..WorkerConfig::new(default_worker_id())
    };
    Worker::new(queue, runtime, config).run(shutdown).await
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
