//! Finding the Redis that a command talks to.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use taskbox_core::queue::Queue;
use taskbox_core::redis_server::{RedisOptions, RedisServer};

/// Environment variable naming the Redis URL.
pub const ENV_REDIS_URL: &str = "TASKBOX_REDIS_URL";

/// Where to find Redis.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RedisArgs {
    /// Redis URL, e.g. `redis://127.0.0.1:6379`, or a cluster
    /// `redis+cluster://host:port,host:port`. Without it, the Redis of a running
    /// `taskbox dev` is used.
    #[arg(long, env = ENV_REDIS_URL, global = true)]
    redis: Option<String>,
}

impl RedisArgs {
    /// The given Redis URL, or else that of a private redis-server started now (stopped
    /// when the returned server drops).
    pub(crate) async fn url_or_private(&self) -> anyhow::Result<(String, Option<RedisServer>)> {
        Ok(match &self.redis {
            Some(url) => (url.clone(), None),
            None => {
                let server =
                    tokio::task::spawn_blocking(|| RedisServer::start(RedisOptions::default()))
                        .await??;
                (server.url(), Some(server))
            }
        })
    }

    /// Connects to the given Redis, or to the one `taskbox dev` started.
    pub(crate) async fn connect(&self) -> anyhow::Result<Queue> {
        let url = match &self.redis {
            Some(url) => url.clone(),
            None => std::fs::read_to_string(dev_url_file())
                .map(|url| url.trim().to_owned())
                .context(
                    "no Redis given: pass --redis or set TASKBOX_REDIS_URL, or start `taskbox dev`",
                )?,
        };
        taskbox_core::connect(&url, Duration::from_secs(5)).await
    }
}

/// Where `taskbox dev` writes the URL of its private Redis for the other commands.
pub(crate) fn dev_url_file() -> PathBuf {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .or_else(|| std::env::var_os("HOME"))
        .map_or_else(std::env::temp_dir, PathBuf::from);
    base.join(".taskbox-dev-redis-url")
}
