//! What taskbox keeps in Redis, and the connection it is kept over. [`keys`] names every key
//! and pub/sub channel of every area (queues, registry, cron, events, tokens, workers), so that
//! one file answers "which keys does taskbox write?" and no other file spells a key; [`Store`]
//! owns the connections every area reads and writes them with.

pub(crate) mod keys;

use std::time::Duration;

use anyhow::{Context as _, bail};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// The prefix of every key taskbox writes.
pub const DEFAULT_PREFIX: &str = "tb:";
/// How long finished jobs (and idempotency keys) are kept.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// The Redis that holds everything: a client, one shared multiplexed connection (which
/// reconnects by itself after Redis restarts) and the prefix of every key. Cheap to clone:
/// clones share the connection.
#[derive(Clone)]
pub struct Store {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
    retention: Duration,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// The shared connection's settings. The redis crate gives up on a reply after 500 ms, but a
/// worker's replies are read by the same threads that run its guests: with 16 hostile jobs on
/// a busy 2-core machine they came later than that, and jobs failed (`reading the settings
/// of ...: timed out`), guests' enqueues and events answered `unavailable`, and stored
/// outcomes were stored again. 10 s, as the worker's own fetch connection waits.
fn connection_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new().set_response_timeout(Some(Duration::from_secs(10)))
}

/// The oldest Redis with every command the queue uses (XAUTOCLAIM).
const MIN_REDIS_VERSION: (u32, u32) = (6, 2);

impl Store {
    /// Connects to Redis at `url`, retrying with capped backoff for up to `patience`; refuses
    /// a Redis too old for taskbox and warns when it may evict keys.
    pub async fn connect(url: &str, patience: Duration) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).with_context(|| format!("bad Redis URL {url}"))?;
        let started = std::time::Instant::now();
        let mut delay = Duration::from_millis(100);
        let mut conn = loop {
            match ConnectionManager::new_with_config(client.clone(), connection_config()).await {
                Ok(conn) => break conn,
                Err(err) if started.elapsed() < patience => {
                    tracing::warn!(
                        "Redis at {url} is not answering ({err}); trying again in {delay:?}"
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(err) => {
                    return Err(err).with_context(|| format!("connecting to Redis at {url}"));
                }
            }
        };
        check_server(&mut conn).await?;
        Ok(Self {
            client,
            conn,
            prefix: DEFAULT_PREFIX.to_owned(),
            retention: DEFAULT_RETENTION,
        })
    }

    /// A connection for pub/sub, of its own: a subscribed connection carries nothing else.
    pub(crate) async fn pubsub(&self) -> redis::RedisResult<redis::aio::PubSub> {
        self.client.get_async_pubsub().await
    }

    /// A connection of its own, made now, whose replies may take up to `response_timeout`:
    /// for a caller whose commands block (`XREADGROUP ... BLOCK`) and must not hold up, or
    /// wait behind, the shared connection.
    pub(crate) async fn dedicated_connection(
        &self,
        response_timeout: Duration,
    ) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let config =
            redis::AsyncConnectionConfig::new().set_response_timeout(Some(response_timeout));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    pub(crate) fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// This store on a connection of its own, made at its first use, whose replies may take
    /// up to `response_timeout`: what it carries queues behind nothing of the shared
    /// connection's, and nothing of the shared connection's behind it.
    pub(crate) fn with_own_connection(&self, response_timeout: Duration) -> Self {
        let config = ConnectionManagerConfig::new().set_response_timeout(Some(response_timeout));
        let conn = ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            .expect("a connection manager without push settings is always made");
        Self {
            conn,
            ..self.clone()
        }
    }

    pub(crate) fn retention(&self) -> Duration {
        self.retention
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// What Redis has done since it started: for a benchmark to take the difference of two.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerUsage {
    /// Its CPU time, user and system.
    pub cpu: Duration,
    /// The commands it has run (a script's own calls count too).
    pub commands: u64,
}

impl Store {
    /// What Redis has done so far (`INFO cpu` and `INFO commandstats`).
    pub async fn server_usage(&self) -> anyhow::Result<ServerUsage> {
        let mut conn = self.connection();
        let cpu: String = redis::cmd("INFO").arg("cpu").query_async(&mut conn).await?;
        let seconds: f64 = cpu
            .lines()
            .filter_map(|line| {
                let value = line
                    .strip_prefix("used_cpu_user:")
                    .or_else(|| line.strip_prefix("used_cpu_sys:"))?;
                value.trim().parse::<f64>().ok()
            })
            .sum();
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await?;
        let commands = stats
            .lines()
            .filter_map(|line| {
                let calls = line.split_once("calls=")?.1;
                calls.split(',').next()?.parse::<u64>().ok()
            })
            .sum();
        Ok(ServerUsage {
            cpu: Duration::from_secs_f64(seconds),
            commands,
        })
    }
}

/// Refuses a Redis without the stream commands the queue needs, warns when Redis may evict
/// keys (which would lose jobs) or has no memory cap, and logs its memory against that cap.
async fn check_server(conn: &mut ConnectionManager) -> anyhow::Result<()> {
    let info: String = redis::cmd("INFO").arg("server").query_async(conn).await?;
    let version = info
        .lines()
        .find_map(|line| line.strip_prefix("redis_version:"))
        .unwrap_or("0.0.0")
        .trim()
        .to_owned();
    let mut parts = version
        .split('.')
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if found < MIN_REDIS_VERSION {
        bail!(
            "Redis {version} is too old: taskbox needs {}.{} or newer (for XAUTOCLAIM)",
            MIN_REDIS_VERSION.0,
            MIN_REDIS_VERSION.1
        );
    }
    let policy: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(conn)
        .await
        .unwrap_or_default();
    if let Some(policy) = policy.get(1)
        && policy != "noeviction"
    {
        tracing::warn!(
            "Redis maxmemory-policy is `{policy}`: under memory pressure Redis may evict jobs. \
             Set it to `noeviction`."
        );
    }
    let memory: String = redis::cmd("INFO").arg("memory").query_async(conn).await?;
    let field = |name: &str| {
        memory
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|value| value.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let (used, max) = (field("used_memory"), field("maxmemory"));
    if max == 0 {
        tracing::warn!(
            "Redis has no `maxmemory` ({} used): it grows until the host runs out of memory. \
             Set `maxmemory` (with `maxmemory-policy noeviction`), and taskbox answers 503 \
             to new jobs when it is reached instead of losing any.",
            bytesize::ByteSize::b(used)
        );
    } else {
        tracing::info!(
            "Redis memory: {} used of a {} `maxmemory`",
            bytesize::ByteSize::b(used),
            bytesize::ByteSize::b(max)
        );
    }
    Ok(())
}

/// Whether `err` is Redis refusing a write because it reached its `maxmemory`, alone or in a
/// pipeline.
pub fn is_out_of_memory(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<redis::RedisError>()
            .cloned()
            .and_then(redis::RedisError::into_server_errors)
            .is_some_and(|errors| errors.iter().any(|(_, error)| error.code() == "OOM"))
    })
}
