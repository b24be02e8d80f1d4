//! `taskbox workers`: the workers that are alive, with their memory.

use std::process::ExitCode;

use bytesize::ByteSize;

use crate::cli::client::{ClientArgs, print};

/// Show the workers that are alive.
#[derive(Debug, clap::Args)]
pub(crate) struct WorkersArgs {
    #[command(flatten)]
    client: ClientArgs,
}

pub(crate) async fn workers(args: WorkersArgs) -> anyhow::Result<ExitCode> {
    let client = args.client.client()?;
    let reply = client.get("/v1/workers").await?;
    let mut rows = reply["workers"].as_array().cloned().unwrap_or_default();
    for row in &mut rows {
        for column in ["resident_memory", "memory_bound"] {
            if let Some(bytes) = row[column].as_u64() {
                row[column] = ByteSize(bytes).display().iec().to_string().into();
            }
        }
    }
    let columns = [
        "id",
        "host",
        "queues",
        "concurrency",
        "in_flight",
        "resident_memory",
        "memory_bound",
        "last_heartbeat",
    ];
    print(args.client.output, &reply, &rows, &columns);
    Ok(ExitCode::SUCCESS)
}
