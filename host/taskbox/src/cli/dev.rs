//! `taskbox dev`, `taskbox serve`, `taskbox module ...` and `taskbox token create`: running
//! the API and workers, giving them modules, and letting people in.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use taskbox_runtime::{Limits, Runtime, RuntimeConfig};

use crate::api::{ApiConfig, DEFAULT_LISTEN, ENV_ADMIN_TOKEN};
use crate::auth::{DEFAULT_TENANT, Role, Tokens};
use crate::cli::client::{Client, ClientArgs, Output, print};
use crate::cli::redis_url::{RedisArgs, dev_url_file};
use crate::config::HostConfig;
use crate::grants::HostCapabilities;
use crate::manifest::{MANIFEST_FILE, Manifest};
use crate::queue::{DEFAULT_QUEUE, Queue, validate_name};
use crate::registry::Registry;
use crate::scheduler::Scheduler;
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
}

impl ApiArgs {
    fn host_config(&self) -> anyhow::Result<HostConfig> {
        self.config
            .as_deref()
            .map_or_else(|| Ok(HostConfig::default()), HostConfig::load)
    }

    fn api_config(&self, host: &HostConfig) -> ApiConfig {
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

/// Upload, list, show and delete task modules.
#[derive(Debug, clap::Args)]
pub(crate) struct ModuleArgs {
    #[command(subcommand)]
    command: ModuleCommand,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, clap::Subcommand)]
enum ModuleCommand {
    /// Upload a module: a directory with a `taskbox.toml`, or a `.wasm` with --manifest (or
    /// a `taskbox.toml` beside it).
    Push {
        /// The directory or the component.
        path: PathBuf,
        /// The manifest, when PATH is a component.
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
    /// List modules.
    Ls,
    /// Show a module's versions.
    Show {
        /// The module's name.
        name: String,
    },
    /// Show a module's settings, or replace them all with --set and --secret (admin).
    Settings {
        /// The module's name.
        name: String,
        /// A plain value, `KEY=VALUE` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        values: Vec<String>,
        /// A secret value, `KEY=VALUE` (repeatable); never shown again.
        #[arg(long = "secret", value_name = "KEY=VALUE")]
        secrets: Vec<String>,
        /// Remove every setting.
        #[arg(long, conflicts_with_all = ["values", "secrets"])]
        clear: bool,
    },
    /// Delete a version: `NAME@VERSION`.
    Rm {
        /// `NAME@VERSION`.
        target: String,
        /// Delete even while jobs for it are queued.
        #[arg(long)]
        force: bool,
    },
}

/// Create API tokens (talks to Redis directly: an operator's command).
#[derive(Debug, clap::Args)]
pub(crate) struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
    #[command(flatten)]
    redis: RedisArgs,
}

#[derive(Debug, clap::Subcommand)]
enum TokenCommand {
    /// Create a token and print it (only once: just its hash is stored).
    Create {
        /// The tenant it belongs to.
        #[arg(long)]
        tenant: String,
        /// viewer, operator or admin.
        #[arg(long, default_value = "operator")]
        role: Role,
    },
}

pub(crate) async fn dev(args: DevArgs) -> anyhow::Result<ExitCode> {
    let host = args.api.host_config()?;
    let (url, _server) = args.redis.url_or_private().await?;
    let queue = Queue::connect(&url, Duration::from_secs(30)).await?;
    std::fs::write(dev_url_file(), &url)
        .with_context(|| format!("writing {}", dev_url_file().display()))?;
    eprintln!("taskbox dev: Redis at {url}");
    let runtime = worker_runtime(&args.worker, &host)?;
    let registry = Registry::new(queue.clone(), Arc::clone(&runtime), host.registry());
    for path in &args.modules {
        let (manifest, _, bytes) = read_module(path, None)?;
        let published = registry.publish(DEFAULT_TENANT, manifest, bytes).await?;
        let module = published.module;
        eprintln!(
            "taskbox dev: module {}@{} ({})",
            module.name, module.version, module.digest
        );
    }
    let api = args.api.api_config(&host);
    eprintln!(
        "taskbox dev: API on http://{}/v1, worker running {} jobs at once; try `taskbox job enqueue MODULE/TASK --input JSON --wait`",
        api.listen, args.worker.concurrency
    );
    let worker = Some((&args.worker, host.capabilities()?, host.job_limits()));
    let result = run_roles(queue, registry, runtime, Some(api), worker, true).await;
    let _ = std::fs::remove_file(dev_url_file());
    result
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

pub(crate) async fn module(args: ModuleArgs) -> anyhow::Result<ExitCode> {
    let client = args.client.client()?;
    let output = args.client.output;
    match args.command {
        ModuleCommand::Push { path, manifest } => {
            let (_, text, bytes) = read_module(&path, manifest.as_deref())?;
            let module = upload(&client, text, bytes).await?;
            match output {
                Output::Json => print(output, &module, &[], &[]),
                Output::Table => println!(
                    "{}@{} {}",
                    module["name"].as_str().unwrap_or_default(),
                    module["version"].as_str().unwrap_or_default(),
                    module["digest"].as_str().unwrap_or_default()
                ),
            }
        }
        ModuleCommand::Ls => {
            let reply = client.get("/v1/modules").await?;
            let rows = reply["modules"].as_array().cloned().unwrap_or_default();
            print(
                output,
                &reply,
                &rows,
                &["name", "latest", "tasks", "versions"],
            );
        }
        ModuleCommand::Settings {
            name,
            values,
            secrets,
            clear,
        } => {
            let path = format!("/v1/modules/{name}/settings");
            let reply = match (values.is_empty() && secrets.is_empty(), clear) {
                (true, false) => client.get(&path).await?,
                _ => {
                    let body = serde_json::json!({
                        "config": key_values(&values)?,
                        "secrets": key_values(&secrets)?,
                    });
                    let request = client.request(reqwest::Method::PUT, &path).json(&body);
                    client.send(request).await?
                }
            };
            match output {
                Output::Json => print(output, &reply, &[], &[]),
                Output::Table => {
                    for (key, value) in reply["config"].as_object().into_iter().flatten() {
                        println!("{key} = {}", value.as_str().unwrap_or_default());
                    }
                    for key in reply["secrets"].as_array().into_iter().flatten() {
                        println!("{} = [secret]", key.as_str().unwrap_or_default());
                    }
                }
            }
        }
        ModuleCommand::Show { name } => {
            let reply = client.get(&format!("/v1/modules/{name}")).await?;
            let rows = reply["versions"].as_array().cloned().unwrap_or_default();
            print(
                output,
                &reply,
                &rows,
                &["version", "digest", "size", "imports"],
            );
        }
        ModuleCommand::Rm { target, force } => {
            let (name, version) = target
                .split_once('@')
                .with_context(|| format!("`{target}` is not NAME@VERSION"))?;
            client
                .delete(&format!("/v1/modules/{name}/{version}?force={force}"))
                .await?;
            println!("deleted {name}@{version}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn token(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let queue = args.redis.connect().await?;
    match args.command {
        TokenCommand::Create { tenant, role } => {
            let token = Tokens::new(queue).create(&tenant, role).await?;
            println!("{token}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Sends the manifest and component as a multipart upload, with a progress bar for big
/// components.
async fn upload(client: &Client, manifest: String, bytes: Vec<u8>) -> anyhow::Result<Value> {
    const CHUNK: usize = 256 << 10;
    let total = bytes.len() as u64;
    let bar = match total > 4 * CHUNK as u64 {
        true => ProgressBar::new(total).with_style(ProgressStyle::with_template(
            "uploading {bar:40} {bytes}/{total_bytes} {bytes_per_sec}",
        )?),
        false => ProgressBar::hidden(),
    };
    let chunks: Vec<Vec<u8>> = bytes.chunks(CHUNK).map(<[u8]>::to_vec).collect();
    let progress = bar.clone();
    let body = futures_util::stream::iter(chunks.into_iter().map(move |chunk| {
        progress.inc(chunk.len() as u64);
        Ok::<_, std::io::Error>(chunk)
    }));
    let component =
        reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(body), total)
            .file_name("component.wasm")
            .mime_str("application/wasm")?;
    let form = reqwest::multipart::Form::new()
        .text("manifest", manifest)
        .part("component", component);
    let reply = client
        .send(
            client
                .request(reqwest::Method::POST, "/v1/modules")
                .multipart(form),
        )
        .await;
    bar.finish_and_clear();
    reply
}

/// Reads a module from disk: a directory with a `taskbox.toml` (its `component`, or the only
/// `.wasm` in it), or a component with `manifest` or a `taskbox.toml` beside it. Returns the
/// manifest parsed and as written, and the component.
pub(crate) fn read_module(
    path: &Path,
    manifest: Option<&Path>,
) -> anyhow::Result<(Manifest, String, Vec<u8>)> {
    let (manifest_path, component) = match (path.is_dir(), manifest) {
        (true, _) => (path.join(MANIFEST_FILE), None),
        (false, Some(manifest)) => (manifest.to_owned(), Some(path.to_owned())),
        (false, None) => (
            path.parent().unwrap_or(Path::new(".")).join(MANIFEST_FILE),
            Some(path.to_owned()),
        ),
    };
    let text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("reading the manifest {}", manifest_path.display()))?;
    let parsed = Manifest::parse(&manifest_path.display().to_string(), &text)?;
    let dir = manifest_path.parent().unwrap_or(Path::new("."));
    let component = match (component, &parsed.component) {
        (Some(component), _) => component,
        (None, Some(relative)) => dir.join(relative),
        (None, None) => only_wasm_in(dir)?,
    };
    let bytes = std::fs::read(&component)
        .with_context(|| format!("reading the component {}", component.display()))?;
    Ok((parsed, text, bytes))
}

fn only_wasm_in(dir: &Path) -> anyhow::Result<PathBuf> {
    let wasm: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "wasm"))
        .collect();
    match wasm.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "{} has no .wasm file: name the component in the manifest (`component = \"...\"`)",
            dir.display()
        ),
        _ => bail!(
            "{} has several .wasm files: name the component in the manifest (`component = \"...\"`)",
            dir.display()
        ),
    }
}

fn worker_runtime(args: &WorkerArgs, host: &HostConfig) -> anyhow::Result<Arc<Runtime>> {
    Ok(Arc::new(Runtime::new(&RuntimeConfig {
        max_concurrent_jobs: u32::try_from(args.concurrency)?.max(1) * 2,
        cache_dir: args.cache_dir.clone(),
        module_cache_bytes: host.runtime.module_cache_size,
        ..RuntimeConfig::default()
    })?))
}

/// Runs the API, the worker and the scheduler (each when given) until SIGINT or SIGTERM.
async fn run_roles(
    queue: Queue,
    registry: Registry,
    runtime: Arc<Runtime>,
    api: Option<ApiConfig>,
    worker: Option<(&WorkerArgs, HostCapabilities, Limits)>,
    scheduler: bool,
) -> anyhow::Result<ExitCode> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let signal = tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let wait_for_stop = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
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

/// `KEY=VALUE` arguments as a JSON object; the error names the argument without `=`.
fn key_values(pairs: &[String]) -> anyhow::Result<serde_json::Map<String, Value>> {
    pairs
        .iter()
        .enumerate()
        .map(|(index, pair)| match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.into())),
            // Not echoed: it may be a secret typed without its key.
            _ => bail!("setting {} is not KEY=VALUE", index + 1),
        })
        .collect()
}
