//! `taskbox job ...`: enqueueing, inspecting, waiting for, cancelling and retrying jobs
//! through the HTTP API; also how a page of jobs is printed (shared with `dead ls`).

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use reqwest::Method;
use serde_json::Value;

use crate::api::{EnqueueRequest, EnqueuedJob, StatusReply};
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
    Enqueue {
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
    },
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

const JOB_COLUMNS: &[&str] = &["id", "status", "module", "task", "attempt", "queue"];

pub(crate) async fn job(args: JobArgs) -> anyhow::Result<ExitCode> {
    let client = args.client.client()?;
    let output = args.client.output;
    match args.command {
        JobCommand::Enqueue {
            target,
            input,
            wait,
            queue,
            delay,
            run_at,
            priority,
            max_retries,
            timeout,
            idempotency_key,
            metadata,
        } => {
            let (module, task) = target
                .split_once('/')
                .with_context(|| format!("`{target}` is not MODULE/TASK"))?;
            let request = EnqueueRequest {
                module: module.to_owned(),
                task: task.to_owned(),
                input,
                queue,
                priority,
                delay,
                run_at,
                max_retries,
                timeout,
                idempotency_key,
                metadata,
            };
            let enqueued: EnqueuedJob = client.post("/v1/jobs", &request).await?;
            if !wait {
                match output {
                    Output::Json => print(output, &enqueued, &[], &[]),
                    Output::Table => println!("{}", enqueued.id),
                }
                return Ok(ExitCode::SUCCESS);
            }
            let id = enqueued.id;
            let job = wait_for(&client, &id, None).await?;
            print_result(&job, output)
        }
        JobCommand::Get { id } => {
            let job = client.get(&format!("/v1/jobs/{id}")).await?;
            print_job(&job);
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Wait { id, timeout } => {
            let job = wait_for(&client, &id, Some(timeout)).await?;
            print_job(&job);
            let status = job["status"].as_str().unwrap_or_default();
            match status
                .parse::<JobStatus>()
                .is_ok_and(JobStatus::is_finished)
            {
                true => Ok(ExitCode::SUCCESS),
                false => {
                    eprintln!("error: job {id} is still {status} after {timeout:?}");
                    Ok(ExitCode::FAILURE)
                }
            }
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
            let page = client
                .send(client.request(Method::GET, "/v1/jobs").query(&query))
                .await?;
            print_page(output, &page);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Waits for job `id` in long polls of at most a minute, for `timeout` in all (forever when
/// `None`).
async fn wait_for(client: &Client, id: &str, timeout: Option<Duration>) -> anyhow::Result<Value> {
    let deadline = timeout.map(|timeout| tokio::time::Instant::now() + timeout);
    loop {
        let left = deadline.map_or(Duration::from_secs(60), |deadline| {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        });
        let wait = left.min(Duration::from_secs(60)).as_millis().max(1);
        let job: Value = client.get(&format!("/v1/jobs/{id}?wait={wait}ms")).await?;
        let finished = job["status"]
            .as_str()
            .and_then(|status| status.parse::<JobStatus>().ok())
            .is_some_and(JobStatus::is_finished);
        let out_of_time = deadline.is_some_and(|deadline| tokio::time::Instant::now() >= deadline);
        if finished || out_of_time {
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

fn print_job(job: &Value) {
    println!("{}", serde_json::to_string_pretty(job).unwrap_or_default());
}

pub(crate) fn print_page(output: Output, page: &Value) {
    let rows: Vec<Value> = page["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|job| {
            let mut row = job.clone();
            row["attempt"] = format!("{}/{}", job["attempt"], job["max_attempts"]).into();
            row
        })
        .collect();
    print(output, page, &rows, JOB_COLUMNS);
    if output == Output::Table
        && let Some(cursor) = page["next_cursor"].as_str()
    {
        eprintln!("more: --cursor {cursor}");
    }
}

/// Prints a finished job's result on stdout, or its error on stderr.
fn print_result(job: &Value, output: Output) -> anyhow::Result<ExitCode> {
    if output == Output::Json {
        print_job(job);
    }
    if job["status"] == "completed" {
        if output == Output::Table {
            let mut out = std::io::stdout().lock();
            match (&job["result"], job["result_base64"].as_str()) {
                (_, Some(encoded)) => {
                    out.write_all(&base64::engine::general_purpose::STANDARD.decode(encoded)?)?;
                }
                (result, None) => write!(out, "{result}")?,
            }
            out.write_all(b"\n")?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let message = job["error"]["message"]
        .as_str()
        .unwrap_or("no error recorded");
    eprintln!(
        "error: job {} {}: {message}",
        job["id"].as_str().unwrap_or_default(),
        job["status"].as_str().unwrap_or_default()
    );
    Ok(ExitCode::FAILURE)
}
