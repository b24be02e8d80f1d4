//! `taskbox dead ...`: listing, retrying and purging dead letters.

use std::process::ExitCode;

use reqwest::Method;

use crate::api::{JobPageView, Purged};
use crate::cli::client::ClientArgs;
use crate::cli::job::{print_page, retry};

/// List, retry and purge dead letters: jobs that failed for good.
#[derive(Debug, clap::Args)]
pub(crate) struct DeadArgs {
    #[command(subcommand)]
    command: DeadCommand,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, clap::Subcommand)]
enum DeadCommand {
    /// List dead letters, newest first.
    Ls {
        /// Only this queue's.
        #[arg(long)]
        queue: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Give a dead job a new series of attempts.
    Retry {
        /// The job id.
        id: String,
    },
    /// Delete dead letters (all of them, or one queue's).
    Purge {
        /// Only this queue's.
        #[arg(long)]
        queue: Option<String>,
    },
}

pub(crate) async fn dead(args: DeadArgs) -> anyhow::Result<ExitCode> {
    let client = args.client.client()?;
    let output = args.client.output;
    match args.command {
        DeadCommand::Ls { queue, limit } => {
            let mut query = vec![("limit", limit.to_string())];
            query.extend(queue.map(|queue| ("queue", queue)));
            let page: JobPageView = client
                .send(client.request(Method::GET, "/v1/dead").query(&query))
                .await?;
            print_page(output, &page);
            Ok(ExitCode::SUCCESS)
        }
        DeadCommand::Retry { id } => retry(&client, &id).await,
        DeadCommand::Purge { queue } => {
            let query: Vec<(&str, String)> =
                queue.map(|queue| ("queue", queue)).into_iter().collect();
            let reply: Purged = client
                .send(client.request(Method::DELETE, "/v1/dead").query(&query))
                .await?;
            println!("purged {} dead letters", reply.purged);
            Ok(ExitCode::SUCCESS)
        }
    }
}
