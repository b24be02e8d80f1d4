//! `taskbox token create`: letting people in (talks to Redis directly).

use std::process::ExitCode;

use crate::cli::redis_url::RedisArgs;
use taskbox_core::auth::{Role, Tokens};

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

pub(crate) async fn token(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let queue = args.redis.connect().await?;
    match args.command {
        TokenCommand::Create { tenant, role } => {
            let token = Tokens::new(queue.store().clone())
                .create(&tenant, role)
                .await?;
            println!("{token}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
