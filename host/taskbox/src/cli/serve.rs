//! `taskbox serve`: the roles of a production process (API, worker, scheduler) against a
//! shared Redis.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::bail;

use crate::cli::redis_url::RedisArgs;
use crate::cli::roles::{ApiArgs, WorkerArgs, run_roles, worker_runtime};
use crate::registry::Registry;

/// Run taskbox roles against a shared Redis.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    redis: RedisArgs,
    /// The roles this process plays: `api`, `worker` and `scheduler` (cron), any of them.
    #[arg(long, value_delimiter = ',', default_value = "api,worker,scheduler")]
    roles: Vec<String>,
    #[command(flatten)]
    api: ApiArgs,
    #[command(flatten)]
    worker: WorkerArgs,
}

pub(crate) async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let (mut api, mut worker, mut scheduler) = (false, false, false);
    for role in &args.roles {
        match role.as_str() {
            "api" => api = true,
            "worker" => worker = true,
            "scheduler" => scheduler = true,
            other => bail!("unknown role `{other}`: the roles are `api`, `worker` and `scheduler`"),
        }
    }
    let host = args.api.host_config()?;
    let queue = args.redis.connect().await?;
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
    )
    .await
}
