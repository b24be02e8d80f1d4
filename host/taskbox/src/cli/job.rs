//! `taskbox job ...` and `taskbox dead ...`: jobs and dead letters.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::cli::redis_url::RedisArgs;
use crate::queue::{
    CancelOutcome, DEFAULT_QUEUE, EnqueueOptions, JobRecord, JobStatus, NewJob, Priority, Queue,
};

/// Enqueue, inspect, wait for and cancel jobs.
#[derive(Debug, clap::Args)]
pub(crate) struct JobArgs {
    #[command(subcommand)]
    command: JobCommand,
    #[command(flatten)]
    redis: RedisArgs,
    /// The queue.
    #[arg(long, global = true, default_value = DEFAULT_QUEUE)]
    queue: String,
}

#[derive(Debug, clap::Subcommand)]
enum JobCommand {
    /// Enqueue a job of MODULE/TASK and print its id (or, with --wait, its result).
    Enqueue {
        /// `MODULE/TASK`.
        target: String,
        /// The input (JSON by convention).
        #[arg(long, default_value = "null")]
        input: String,
        /// Wait for the result and print it; exit 1 if the job fails.
        #[arg(long)]
        wait: bool,
        /// Run no earlier than this from now (`10s`, `5m`).
        #[arg(long, value_parser = humantime::parse_duration)]
        delay: Option<Duration>,
        /// high, normal or low.
        #[arg(long, default_value = "normal")]
        priority: Priority,
        /// Retries after the first attempt (default 3).
        #[arg(long)]
        max_retries: Option<u32>,
        /// Wall-clock limit of each attempt (default 30s).
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
        /// Enqueueing again with the same key returns the first job's id.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Run no earlier than this time (RFC 3339, e.g. `2026-12-01T09:00:00Z`).
        #[arg(long, value_parser = humantime::parse_rfc3339_weak, conflicts_with = "delay")]
        run_at: Option<std::time::SystemTime>,
        /// JSON stored with the job as given.
        #[arg(long, value_parser = parse_json)]
        metadata: Option<serde_json::Value>,
    },
    /// Show a job as JSON.
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
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

/// List, retry and purge dead letters: jobs that failed for good.
#[derive(Debug, clap::Args)]
pub(crate) struct DeadArgs {
    #[command(subcommand)]
    command: DeadCommand,
    #[command(flatten)]
    redis: RedisArgs,
    /// The queue.
    #[arg(long, global = true, default_value = DEFAULT_QUEUE)]
    queue: String,
}

#[derive(Debug, clap::Subcommand)]
enum DeadCommand {
    /// List dead letters, newest first.
    Ls {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Give a dead job a new series of attempts.
    Retry {
        /// The job id.
        id: String,
    },
    /// Delete all dead letters of the queue.
    Purge,
}

pub(crate) async fn job(args: JobArgs) -> anyhow::Result<ExitCode> {
    let queue = args.redis.connect().await?;
    let name = args.queue.as_str();
    match args.command {
        JobCommand::Enqueue {
            target,
            input,
            wait,
            delay,
            priority,
            max_retries,
            timeout,
            idempotency_key,
            run_at,
            metadata,
        } => {
            let (module, task) = target
                .split_once('/')
                .with_context(|| format!("`{target}` is not MODULE/TASK"))?;
            let enqueued = queue
                .enqueue(NewJob {
                    module: module.to_owned(),
                    task: task.to_owned(),
                    input: input.into_bytes(),
                    options: EnqueueOptions {
                        queue: Some(name.to_owned()),
                        priority,
                        delay,
                        max_retries,
                        timeout,
                        idempotency_key,
                        run_at,
                        metadata,
                        ..EnqueueOptions::default()
                    },
                })
                .await?;
            if !wait {
                println!("{}", enqueued.id);
                return Ok(ExitCode::SUCCESS);
            }
            let job = queue
                .wait(name, &enqueued.id, Duration::from_secs(3600))
                .await?
                .context("the job disappeared")?;
            print_result(&job)
        }
        JobCommand::Get { id } => {
            print_json(&found(queue.job(name, &id).await?, &id)?)?;
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Wait { id, timeout } => {
            let job = found(queue.wait(name, &id, timeout).await?, &id)?;
            print_json(&job)?;
            Ok(if job.status.is_finished() {
                ExitCode::SUCCESS
            } else {
                eprintln!("error: job {id} is still {} after {timeout:?}", job.status);
                ExitCode::FAILURE
            })
        }
        JobCommand::Cancel { id } => {
            match queue.cancel(name, &id).await? {
                None => bail!("there is no job {id} on queue {name}"),
                Some(CancelOutcome::Cancelled) => println!("cancelled {id}"),
                Some(CancelOutcome::Cancelling) => println!("cancelling {id}: its worker stops it"),
                Some(CancelOutcome::AlreadyFinished(status)) => {
                    println!("job {id} had already finished: {status}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Retry { id } => retry(&queue, name, &id).await,
        JobCommand::Ls {
            status,
            task,
            limit,
        } => {
            let jobs = queue.list(name, status, task.as_deref(), limit).await?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{:<32}  {:<10}  {:<7}  TASK",
                "ID", "STATUS", "ATTEMPT"
            )?;
            for job in jobs {
                writeln!(
                    out,
                    "{:<32}  {:<10}  {:<7}  {}/{}",
                    job.id,
                    job.status.to_string(),
                    format!("{}/{}", job.attempt, job.max_attempts),
                    job.module,
                    job.task
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(crate) async fn dead(args: DeadArgs) -> anyhow::Result<ExitCode> {
    let queue = args.redis.connect().await?;
    let name = args.queue.as_str();
    match args.command {
        DeadCommand::Ls { limit } => {
            let letters = queue.dead_letters(name, limit).await?;
            let mut out = std::io::stdout().lock();
            for letter in letters {
                writeln!(out, "{}", serde_json::to_string(&letter)?)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        DeadCommand::Retry { id } => retry(&queue, name, &id).await,
        DeadCommand::Purge => {
            println!("purged {} dead letters", queue.purge_dead(name).await?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn retry(queue: &Queue, name: &str, id: &str) -> anyhow::Result<ExitCode> {
    if !queue.retry_dead(name, id).await? {
        bail!("job {id} is not dead on queue {name}: only dead jobs can be retried");
    }
    println!("retrying {id}");
    Ok(ExitCode::SUCCESS)
}

fn parse_json(text: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text).map_err(|err| format!("not JSON: {err}"))
}

fn found(job: Option<JobRecord>, id: &str) -> anyhow::Result<JobRecord> {
    job.with_context(|| format!("there is no job {id} (finished jobs expire after 24 h)"))
}

fn print_json(job: &JobRecord) -> anyhow::Result<()> {
    let mut value = serde_json::to_value(job)?;
    if let Some(result) = &job.result {
        value["result"] = match serde_json::from_slice(result) {
            Ok(json) => json,
            Err(_) => String::from_utf8_lossy(result).into_owned().into(),
        };
    }
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

/// Prints a finished job's result on stdout, or its error on stderr.
fn print_result(job: &JobRecord) -> anyhow::Result<ExitCode> {
    match (job.status, &job.result) {
        (JobStatus::Completed, Some(result)) => {
            let mut out = std::io::stdout().lock();
            out.write_all(result)?;
            out.write_all(b"\n")?;
            Ok(ExitCode::SUCCESS)
        }
        (status, _) => {
            let message = job
                .error
                .as_ref()
                .and_then(|error| error.get("message"))
                .and_then(|message| message.as_str())
                .unwrap_or("no error recorded");
            eprintln!("error: job {} {status}: {message}", job.id);
            Ok(ExitCode::FAILURE)
        }
    }
}
