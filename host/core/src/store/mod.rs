//! What taskbox keeps in Redis, and the connection it is kept over. [`keys`] names every key
//! and pub/sub channel of every area (queues, registry, cron, events, tokens, workers), so that
//! one file answers "which keys does taskbox write?" and no other file spells a key; [`Store`]
//! owns the connections every area reads and writes them with.

mod connection;
pub(crate) mod keys;
#[cfg(debug_assertions)]
mod slots;

use std::time::Duration;

use anyhow::{Context as _, bail};
pub use connection::Connection;
use connection::Server;
use futures_util::stream::BoxStream;

/// A script call whose time the metrics record, by the script's name.
pub(crate) trait TimedInvoke {
    /// Invokes the script on `conn`, as `invoke_async` does.
    async fn invoke_timed<T: redis::FromRedisValue>(
        &self,
        script: &'static str,
        conn: &mut Connection,
    ) -> redis::RedisResult<T>;
}

impl TimedInvoke for redis::ScriptInvocation<'_> {
    async fn invoke_timed<T: redis::FromRedisValue>(
        &self,
        script: &'static str,
        conn: &mut Connection,
    ) -> redis::RedisResult<T> {
        let started = std::time::Instant::now();
        let reply = self.invoke_async(conn).await;
        crate::metrics::metrics().script_call(script, started.elapsed());
        reply
    }
}

/// The prefix of every key taskbox writes.
pub const DEFAULT_PREFIX: &str = "tb:";
/// How long idempotency keys are kept (finished jobs: see `queue::HistorySettings`).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// The Redis that holds everything, one server or a cluster: where it is, one shared
/// connection (which reconnects by itself) and the prefix of every key. Cheap to clone:
/// clones share the connection.
#[derive(Clone)]
pub struct Store {
    server: Server,
    conn: Connection,
    prefix: String,
    retention: Duration,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("prefix", &self.prefix)
            .field("cluster", &self.server.is_cluster())
            .finish_non_exhaustive()
    }
}

/// How long the shared connection waits for a reply. The redis crate gives up after 500 ms,
/// but a worker's replies are read by the same threads that run its guests: with 16 hostile
/// jobs on a busy 2-core machine they came later than that, and jobs failed (`reading the
/// settings of ...: timed out`), guests' enqueues and events answered `unavailable`, and
/// stored outcomes were stored again. 10 s, as the worker's own fetch connection waits.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The oldest Redis with every command the queue uses (XAUTOCLAIM).
const MIN_REDIS_VERSION: (u32, u32) = (6, 2);

/// The oldest Redis a cluster can be: sharded pub/sub (SPUBLISH, SSUBSCRIBE) came in 7.0.
const MIN_CLUSTER_VERSION: (u32, u32) = (7, 0);

/// How a script publishes on one server: `publish(channel, message)` and
/// `listeners(channel)`, the number of subscribers.
const PUBSUB_LUA: &str = include_str!("lua/pubsub.lua");
/// The same on a cluster, over sharded channels, which only the node of the channel's slot
/// carries (plain PUBLISH would go to every node).
const SHARDED_PUBSUB_LUA: &str = include_str!("lua/sharded_pubsub.lua");

impl Store {
    /// Connects to the Redis at `url` (one server, or `redis+cluster://host:port,...`),
    /// retrying with capped backoff for up to `patience` while it does not answer or, for a
    /// cluster, while a primary says it cannot serve every slot; refuses a Redis too old
    /// for taskbox and warns when it may evict keys.
    pub async fn connect(url: &str, patience: Duration) -> anyhow::Result<Self> {
        let server = Server::parse(url).with_context(|| format!("bad Redis URL {url}"))?;
        let started = std::time::Instant::now();
        let mut delay = Duration::from_millis(100);
        let mut conn = loop {
            let attempt = async {
                let mut conn = server.connect(REPLY_TIMEOUT).await?;
                if server.is_cluster() {
                    check_cluster_state(&mut conn).await?;
                }
                anyhow::Ok(conn)
            };
            match attempt.await {
                Ok(conn) => break conn,
                Err(err) if started.elapsed() < patience => {
                    tracing::warn!(
                        "Redis at {url} is not ready ({err:#}); trying again in {delay:?}"
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(err) => return Err(err.context(format!("connecting to Redis at {url}"))),
            }
        };
        check_server(&mut conn, server.is_cluster()).await?;
        Ok(Self {
            server,
            conn,
            prefix: DEFAULT_PREFIX.to_owned(),
            retention: DEFAULT_RETENTION,
        })
    }

    /// The payloads published on `channels` from now on, on a connection of its own (a
    /// subscribed connection carries nothing else), until that connection ends.
    pub(crate) async fn subscribe(
        &self,
        channels: &[String],
    ) -> redis::RedisResult<BoxStream<'static, Vec<u8>>> {
        self.server.subscribe(channels).await
    }

    /// `source` as a script, after the functions that publish on this Redis (see
    /// `store/lua/pubsub.lua`).
    pub(crate) fn publishing_script(&self, source: &str) -> redis::Script {
        let pubsub = if self.server.is_cluster() {
            SHARDED_PUBSUB_LUA
        } else {
            PUBSUB_LUA
        };
        redis::Script::new(&[pubsub, source].concat())
    }

    /// A connection of its own, made now, whose replies may take up to `response_timeout`:
    /// for a caller whose commands block (`XREADGROUP ... BLOCK`) and must not hold up, or
    /// wait behind, the shared connection.
    pub(crate) async fn dedicated_connection(
        &self,
        response_timeout: Duration,
    ) -> redis::RedisResult<Connection> {
        self.server.connect(response_timeout).await
    }

    /// The shared connection.
    pub fn connection(&self) -> Connection {
        self.conn.clone()
    }

    /// This store on a connection of its own, made at its first use, whose replies may take
    /// up to `response_timeout`: what it carries queues behind nothing of the shared
    /// connection's, and nothing of the shared connection's behind it.
    pub(crate) fn with_own_connection(&self, response_timeout: Duration) -> Self {
        let conn = self
            .server
            .connect_lazy(response_timeout)
            .expect("a lazy connection without push settings is always made");
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

/// What Redis has done since it started, summed over a cluster's primaries: for a
/// benchmark to take the difference of two.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerUsage {
    /// Its CPU time, user and system.
    pub cpu: Duration,
    /// The commands it has run (a script's own calls count too).
    pub commands: u64,
    /// The commands each primary has run, by address (one entry, with no address, for one
    /// server).
    pub commands_by_primary: Vec<(String, u64)>,
}

impl Store {
    /// What Redis has done so far (`INFO cpu` and `INFO commandstats` of every primary).
    pub async fn server_usage(&self) -> anyhow::Result<ServerUsage> {
        let mut conn = self.connection();
        let cpu: Vec<(String, String)> =
            conn.on_each_primary(redis::cmd("INFO").arg("cpu")).await?;
        let seconds: f64 = cpu
            .iter()
            .flat_map(|(_, info)| info.lines())
            .filter_map(|line| {
                let value = line
                    .strip_prefix("used_cpu_user:")
                    .or_else(|| line.strip_prefix("used_cpu_sys:"))?;
                value.trim().parse::<f64>().ok()
            })
            .sum();
        let stats: Vec<(String, String)> = conn
            .on_each_primary(redis::cmd("INFO").arg("commandstats"))
            .await?;
        let mut commands_by_primary: Vec<(String, u64)> = stats
            .into_iter()
            .map(|(address, stats)| {
                let calls = stats
                    .lines()
                    .filter_map(|line| {
                        let calls = line.split_once("calls=")?.1;
                        calls.split(',').next()?.parse::<u64>().ok()
                    })
                    .sum();
                (address, calls)
            })
            .collect();
        commands_by_primary.sort();
        Ok(ServerUsage {
            cpu: Duration::from_secs_f64(seconds),
            commands: commands_by_primary.iter().map(|(_, calls)| calls).sum(),
            commands_by_primary,
        })
    }
}

/// The value of field `name` in the reply of `INFO` or `CLUSTER INFO` (`name:value` lines).
fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// Errs, naming the node, when a primary of a cluster says the cluster is not serving every
/// slot (`cluster_state:fail`): jobs of the slots nobody serves could be neither enqueued
/// nor run.
async fn check_cluster_state(conn: &mut Connection) -> anyhow::Result<()> {
    let states: Vec<(String, String)> = conn
        .on_each_primary(redis::cmd("CLUSTER").arg("INFO"))
        .await?;
    for (node, info) in states {
        let state = info_field(&info, "cluster_state").unwrap_or("unknown");
        if state != "ok" {
            bail!("the cluster is not serving every slot: {node} says cluster_state:{state}");
        }
    }
    Ok(())
}

/// Refuses a Redis without the commands taskbox needs, warns when Redis may evict keys
/// (which would lose jobs) or has no memory cap, and logs its memory against that cap; on a
/// cluster, each primary.
async fn check_server(conn: &mut Connection, cluster: bool) -> anyhow::Result<()> {
    let (least, needs) = if cluster {
        (MIN_CLUSTER_VERSION, "for sharded pub/sub on a cluster")
    } else {
        (MIN_REDIS_VERSION, "for XAUTOCLAIM")
    };
    let servers: Vec<(String, String)> = conn
        .on_each_primary(redis::cmd("INFO").arg("server"))
        .await?;
    for (_, info) in servers {
        let version = info_field(&info, "redis_version").unwrap_or("0.0.0");
        let mut parts = version
            .split('.')
            .map(|part| part.parse::<u32>().unwrap_or(0));
        let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        if found < least {
            bail!(
                "Redis {version} is too old: taskbox needs {}.{} or newer ({needs})",
                least.0,
                least.1
            );
        }
    }
    let policies: Vec<(String, Vec<String>)> = conn
        .on_each_primary(redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy"))
        .await
        .unwrap_or_default();
    for (node, policy) in policies {
        if let Some(policy) = policy.get(1)
            && policy != "noeviction"
        {
            tracing::warn!(
                "Redis{} maxmemory-policy is `{policy}`: under memory pressure Redis may \
                 evict jobs. Set it to `noeviction`.",
                at(&node)
            );
        }
    }
    let memories: Vec<(String, String)> = conn
        .on_each_primary(redis::cmd("INFO").arg("memory"))
        .await?;
    for (node, memory) in memories {
        let field = |name: &str| {
            info_field(&memory, name)
                .and_then(|value| value.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let (used, max) = (field("used_memory"), field("maxmemory"));
        if max == 0 {
            tracing::warn!(
                "Redis{} has no `maxmemory` ({} used): it grows until the host runs out of \
                 memory. Set `maxmemory` (with `maxmemory-policy noeviction`), and taskbox \
                 answers 503 to new jobs when it is reached instead of losing any.",
                at(&node),
                bytesize::ByteSize::b(used)
            );
        } else {
            tracing::info!(
                "Redis{} memory: {} used of a {} `maxmemory`",
                at(&node),
                bytesize::ByteSize::b(used),
                bytesize::ByteSize::b(max)
            );
        }
    }
    Ok(())
}

/// ` at <node>` for a cluster's node, nothing for one server.
fn at(node: &str) -> String {
    if node.is_empty() {
        String::new()
    } else {
        format!(" at {node}")
    }
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
