//! `taskbox queues`: each queue's depth, oldest waiting job and throughput; pausing and
//! resuming one.

use std::process::ExitCode;

use serde_json::{Value, json};
use taskbox_core::queue::QueueStats;

use crate::api::QueueList;
use crate::cli::client::{ClientArgs, print};

/// Show the queues (depth, oldest waiting job, throughput), or pause or resume one.
#[derive(Debug, clap::Args)]
pub(crate) struct QueuesArgs {
    #[command(subcommand)]
    command: Option<QueuesCommand>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, clap::Subcommand)]
enum QueuesCommand {
    /// Pause a queue (admin): it takes jobs, but workers start none until it is resumed.
    Pause {
        /// The queue.
        name: String,
    },
    /// Resume a paused queue (admin).
    Resume {
        /// The queue.
        name: String,
    },
}

const COLUMNS: [&str; 8] = [
    "name",
    "state",
    "waiting",
    "running",
    "delayed",
    "oldest_waiting_ms",
    "completed/min",
    "failed/min",
];

pub(crate) async fn queues(args: QueuesArgs) -> anyhow::Result<ExitCode> {
    let client = args.client.client()?;
    let output = args.client.output;
    let (action, name) = match args.command {
        None => {
            let reply: QueueList = client.get("/v1/queues").await?;
            let rows: Vec<Value> = reply.queues.iter().map(row).collect();
            print(output, &reply, &rows, &COLUMNS);
            return Ok(ExitCode::SUCCESS);
        }
        Some(QueuesCommand::Pause { name }) => ("pause", name),
        Some(QueuesCommand::Resume { name }) => ("resume", name),
    };
    let path = format!("/v1/queues/{name}/{action}");
    let stats: QueueStats = client.post(&path, &json!({})).await?;
    print(output, &stats, &[row(&stats)], &COLUMNS);
    Ok(ExitCode::SUCCESS)
}

fn row(queue: &QueueStats) -> Value {
    let waiting = &queue.waiting;
    json!({
        "name": queue.name,
        "state": if queue.paused_at.is_some() { "paused" } else { "running" },
        "waiting": waiting.high + waiting.normal + waiting.low,
        "running": queue.running,
        "delayed": queue.delayed,
        "oldest_waiting_ms": queue.oldest_waiting_ms,
        "completed/min": queue.completed_last_minute,
        "failed/min": queue.failed_last_minute,
    })
}
