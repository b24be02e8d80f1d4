//! `taskbox queues`: each queue's depth, oldest waiting job and throughput.

use std::process::ExitCode;

use serde_json::{Value, json};

use crate::api::QueueList;
use crate::cli::client::{ClientArgs, print};

/// Show the queues: depth, oldest waiting job, throughput.
#[derive(Debug, clap::Args)]
pub(crate) struct QueuesArgs {
    #[command(flatten)]
    client: ClientArgs,
}

pub(crate) async fn queues(args: QueuesArgs) -> anyhow::Result<ExitCode> {
    let client = args.client.client()?;
    let reply: QueueList = client.get("/v1/queues").await?;
    let rows: Vec<Value> = reply
        .queues
        .iter()
        .map(|queue| {
            let waiting = &queue.waiting;
            json!({
                "name": queue.name,
                "waiting": waiting.high + waiting.normal + waiting.low,
                "running": queue.running,
                "delayed": queue.delayed,
                "oldest_waiting_ms": queue.oldest_waiting_ms,
                "completed/min": queue.completed_last_minute,
                "failed/min": queue.failed_last_minute,
            })
        })
        .collect();
    let columns = [
        "name",
        "waiting",
        "running",
        "delayed",
        "oldest_waiting_ms",
        "completed/min",
        "failed/min",
    ];
    print(args.client.output, &reply, &rows, &columns);
    Ok(ExitCode::SUCCESS)
}
