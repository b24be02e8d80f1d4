//! `taskbox serve`: the roles of a production process (API, worker, scheduler) against a
//! shared Redis.

use std::process::ExitCode;
use std::sync::Arc;

use crate::cli::redis_url::RedisArgs;
use crate::cli::roles::{ApiArgs, WorkerArgs, run_roles, worker_runtime};
use taskbox_core::registry::Registry;

/// Run taskbox roles against a shared Redis.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    redis: RedisArgs,
    /// The roles this process plays, any of them (`scheduler` fires cron schedules).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "api,worker,scheduler"
    )]
    roles: Vec<ProcessRole>,
    #[command(flatten)]
    api: ApiArgs,
    #[command(flatten)]
    worker: WorkerArgs,
}

/// A part a `taskbox serve` process plays (not a token's role, which is `auth::Role`).
// The variants carry no doc comments: clap would turn them into a long list in `--help`,
// and the names say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ProcessRole {
    Api,
    Worker,
    Scheduler,
}

pub(crate) async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let plays = |role| args.roles.contains(&role);
    let (api, worker, scheduler) = (
        plays(ProcessRole::Api),
        plays(ProcessRole::Worker),
        plays(ProcessRole::Scheduler),
    );
    let host = args.api.host_config()?;
    let queue = host.configure_queue(args.redis.connect().await?).await?;
    let runtime = worker_runtime(&args.worker, &host)?;
    let registry = Registry::new(queue.clone(), Arc::clone(&runtime), host.registry());
    let api = api.then(|| args.api.api_config(&host));
    run_roles(
        queue,
        registry,
        runtime,
        api,
        worker
            .then(|| host.capabilities())
            .transpose()?
            .map(|caps| (&args.worker, caps, host.job_limits())),
        scheduler,
        args.api.metrics_listen,
    )
    .await
}
