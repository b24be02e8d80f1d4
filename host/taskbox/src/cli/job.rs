//! `taskbox job ...`: enqueueing, inspecting, waiting for, cancelling and retrying jobs
//! through the HTTP API; also how a page of jobs is printed (shared with `dead ls`).

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use reqwest::Method;
use serde_json::Value;

use crate::api::{EnqueueRequest, EnqueuedJob, JobPageView, JobView, StatusReply};
use crate::cli::client::{Client, ClientArgs, Output, print};
use taskbox_core::model::job::{JobStatus, Priority};

/// Enqueue, inspect, wait for, cancel and retry jobs.
#[derive(Debug, clap::Args)]
pub(crate) struct JobArgs {
    #[command(subcommand)]
    command: JobCommand,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, clap::Subcommand)]
enum JobCommand {
    /// Enqueue a job of MODULE/TASK (MODULE may be `name@version`) and print its id, or with
    /// --wait its result.
    Enqueue(EnqueueArgs),
    /// Show a job.
    Get {
        /// The job id.
        id: String,
    },
    /// Wait until a job finishes, then show it.
    Wait {
        /// The job id.
        id: String,
        /// Give up after this long.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
        timeout: Duration,
    },
    /// Print the log of a job's last attempt.
    Logs {
        /// The job id.
        id: String,
    },
    /// Cancel a job: it never starts, or it is stopped where it runs.
    Cancel {
        /// The job id.
        id: String,
    },
    /// Retry a dead job: a new series of attempts under the same id.
    Retry {
        /// The job id.
        id: String,
    },
    /// List jobs, newest first.
    Ls {
        /// Only jobs with this status.
        #[arg(long)]
        status: Option<JobStatus>,
        /// Only jobs of this task.
        #[arg(long)]
        task: Option<String>,
        /// Only jobs of this module.
        #[arg(long)]
        module: Option<String>,
        /// Only jobs on this queue.
        #[arg(long)]
        queue: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Continue after a previous page (its `next_cursor`).
        #[arg(long)]
        cursor: Option<String>,
    },
}

/// What `job enqueue` sends.
#[derive(Debug, clap::Args)]
struct EnqueueArgs {
    /// `MODULE/TASK`.
    target: String,
    /// The input, as JSON.
    #[arg(long, default_value = "null", value_parser = parse_json)]
    input: Value,
    /// Wait for the result and print it; exit 1 if the job fails.
    #[arg(long)]
    wait: bool,
    /// The queue (default: the task's in the manifest, else `default`).
    #[arg(long)]
    queue: Option<String>,
    /// Run no earlier than this from now (`10s`, `5m`).
    #[arg(long)]
    delay: Option<String>,
    /// Run no earlier than this time (RFC 3339, e.g. `2026-12-01T09:00:00Z`).
    #[arg(long, conflicts_with = "delay")]
    run_at: Option<String>,
    /// high, normal or low.
    #[arg(long)]
    priority: Option<Priority>,
    /// Retries after the first attempt (default: the manifest's, else 3).
    #[arg(long)]
    max_retries: Option<u32>,
    /// Wall-clock limit of each attempt (default: the manifest's, else 30s).
    #[arg(long)]
    timeout: Option<String>,
    /// Enqueueing again with the same key returns the first job's id.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// JSON stored with the job as given.
    #[arg(long, value_parser = parse_json)]
    metadata: Option<Value>,
    /// Answer only once a Redis replica has the job (see "Failover" in docs/operations.md).
    #[arg(long)]
    durable: bool,
}

impl EnqueueArgs {
    /// The API request, and whether to wait for the result.
    fn into_request(self) -> anyhow::Result<(EnqueueRequest, bool)> {
        let (module, task) = self
            .target
            .split_once('/')
            .with_context(|| format!("`{}` is not MODULE/TASK", self.target))?;
        let request = EnqueueRequest {
            module: module.to_owned(),
            task: task.to_owned(),
            input: self.input,
            queue: self.queue,
            priority: self.priority,
            delay: self.delay,
            run_at: self.run_at,
            max_retries: self.max_retries,
            timeout: self.timeout,
            idempotency_key: self.idempotency_key,
            metadata: self.metadata,
            durable: self.durable,
            traceparent: None,
        };
        Ok((request, self.wait))
    }
}

const JOB_COLUMNS: &[&str] = &[
    "id", "status", "module", "task", "attempt", "queue", "created",
];

pub(crate) async fn job(args: JobArgs) -> anyhow::Result<ExitCode> {
    let client = args.client.client()?;
    let output = args.client.output;
    match args.command {
        JobCommand::Enqueue(enqueue_args) => {
            let (request, wait) = enqueue_args.into_request()?;
            enqueue(&client, &request, wait, output).await
        }
        JobCommand::Get { id } => {
            let job: JobView = client.get(&format!("/v1/jobs/{id}")).await?;
            print_job(&job);
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Wait { id, timeout } => {
            let job = wait_for(&client, &id, Some(timeout)).await?;
            print_job(&job);
            if job.job.status.is_finished() {
                return Ok(ExitCode::SUCCESS);
            }
            eprintln!(
                "error: job {id} is still {} after {timeout:?}",
                job.job.status
            );
            Ok(ExitCode::FAILURE)
        }
        JobCommand::Logs { id } => {
            let response = client
                .answer(client.request(Method::GET, &format!("/v1/jobs/{id}/logs")))
                .await?;
            print!("{}", response.text().await?);
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Cancel { id } => {
            let reply: StatusReply = client.post(&format!("/v1/jobs/{id}/cancel"), &()).await?;
            // `cancelling` is the API's word for a cancel its worker has still to carry out.
            match reply.status.as_str() {
                "cancelling" => println!("cancelling {id}: its worker stops it"),
                _ => println!("cancelled {id}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Retry { id } => retry(&client, &id).await,
        JobCommand::Ls {
            status,
            task,
            module,
            queue,
            limit,
            cursor,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            let filters = [
                ("status", status.map(|s| s.to_string())),
                ("task", task),
                ("module", module),
                ("queue", queue),
                ("cursor", cursor),
            ];
            query.extend(filters.into_iter().filter_map(|(k, v)| Some((k, v?))));
            let page: JobPageView = client
                .send(client.request(Method::GET, "/v1/jobs").query(&query))
                .await?;
            print_page(output, &page);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Enqueues the job and prints its id, or with `wait` its result.
async fn enqueue(
    client: &Client,
    request: &EnqueueRequest,
    wait: bool,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let enqueued: EnqueuedJob = client.post("/v1/jobs", request).await?;
    if enqueued.replicated == Some(false) {
        eprintln!(
            "warning: no Redis replica acknowledged job {} in time: it is enqueued, but a \
             failover now could lose it",
            enqueued.id
        );
    }
    if !wait {
        match output {
            Output::Json => print(output, &enqueued, &[], &[]),
            Output::Table => println!("{}", enqueued.id),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let job = wait_for(client, &enqueued.id, None).await?;
    print_result(&job, output)
}

/// Waits for job `id` in long polls of at most a minute, for `timeout` in all (forever when
/// `None`).
async fn wait_for(client: &Client, id: &str, timeout: Option<Duration>) -> anyhow::Result<JobView> {
    let deadline = timeout.map(|timeout| tokio::time::Instant::now() + timeout);
    loop {
        let left = deadline.map_or(Duration::from_secs(60), |deadline| {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        });
        let wait = left.min(Duration::from_secs(60)).as_millis().max(1);
        let job: JobView = client.get(&format!("/v1/jobs/{id}?wait={wait}ms")).await?;
        let out_of_time = deadline.is_some_and(|deadline| tokio::time::Instant::now() >= deadline);
        if job.job.status.is_finished() || out_of_time {
            return Ok(job);
        }
    }
}

pub(crate) async fn retry(client: &Client, id: &str) -> anyhow::Result<ExitCode> {
    let _: StatusReply = client.post(&format!("/v1/jobs/{id}/retry"), &()).await?;
    println!("retrying {id}");
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn parse_json(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|err| format!("not JSON: {err}"))
}

fn print_job(job: &JobView) {
    println!("{}", serde_json::to_string_pretty(job).unwrap_or_default());
}

/// Prints a page of jobs (of `job ls` or `dead ls`).
pub(crate) fn print_page(output: Output, page: &JobPageView) {
    let rows: Vec<Value> = page
        .jobs
        .iter()
        .map(|view| {
            let job = &view.job;
            serde_json::json!({
                "id": job.id,
                "status": job.status,
                "module": job.module,
                "task": job.task,
                "attempt": format!("{}/{}", job.attempt, job.max_attempts),
                "queue": job.queue,
                "created": crate::when::ago(job.created_at),
            })
        })
        .collect();
    print(output, page, &rows, JOB_COLUMNS);
    if output == Output::Table
        && let Some(cursor) = &page.next_cursor
    {
        eprintln!("more: --cursor {cursor}");
    }
}

/// Prints a finished job's result on stdout, or its error on stderr.
fn print_result(view: &JobView, output: Output) -> anyhow::Result<ExitCode> {
    if output == Output::Json {
        print_job(view);
    }
    let job = &view.job;
    if job.status == JobStatus::Completed {
        if output == Output::Table {
            let mut out = std::io::stdout().lock();
            match (&view.result, &view.result_base64) {
                (_, Some(encoded)) => {
                    out.write_all(&base64::engine::general_purpose::STANDARD.decode(encoded)?)?;
                }
                (Some(result), None) => write!(out, "{result}")?,
                (None, None) => write!(out, "null")?,
            }
            out.write_all(b"\n")?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let message = job
        .error
        .as_ref()
        .and_then(|error| error["message"].as_str())
        .unwrap_or("no error recorded");
    eprintln!("error: job {} {}: {message}", job.id, job.status);
    Ok(ExitCode::FAILURE)
}
