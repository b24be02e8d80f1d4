//! `taskbox workers`: the workers that are alive, with their memory.

use std::process::ExitCode;

use bytesize::ByteSize;
use serde_json::{Value, json};

use crate::api::WorkerList;
use crate::cli::client::{ClientArgs, print};

/// Show the workers that are alive.
#[derive(Debug, clap::Args)]
pub(crate) struct WorkersArgs {
    #[command(flatten)]
    client: ClientArgs,
}

pub(crate) async fn workers(args: WorkersArgs) -> anyhow::Result<ExitCode> {
    let client = args.client.client()?;
    let reply: WorkerList = client.get("/v1/workers").await?;
    let iec = |bytes| ByteSize(bytes).display().iec().to_string();
    let rows: Vec<Value> = reply
        .workers
        .iter()
        .map(|worker| {
            json!({
                "id": worker.id,
                "host": worker.host,
                "queues": worker.queues,
                "concurrency": worker.concurrency,
                "in_flight": worker.in_flight,
                "resident_memory": iec(worker.resident_memory),
                "memory_bound": iec(worker.memory_bound),
                "started": crate::when::local_date(worker.started_at),
                "heartbeat": crate::when::ago(worker.last_heartbeat),
            })
        })
        .collect();
    let columns = [
        "id",
        "host",
        "queues",
        "concurrency",
        "in_flight",
        "resident_memory",
        "memory_bound",
        "started",
        "heartbeat",
    ];
    print(args.client.output, &reply, &rows, &columns);
    Ok(ExitCode::SUCCESS)
}
