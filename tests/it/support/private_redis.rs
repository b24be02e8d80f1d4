//! A private Redis for one test (on free ports, killed on drop), a queue on it, and
//! connections of the test's own, to look at Redis the way an operator would.

use std::time::Duration;

use taskbox_core::queue::Queue;
use taskbox_core::redis_server::{RedisOptions, RedisServer};
use taskbox_core::store::{Connection, Store};

use super::cluster::RedisCluster;

/// The Redis a test runs against: one server, or a cluster of three primaries when
/// `TASKBOX_TEST_REDIS=cluster`, so that the suites which take their Redis from [`start`]
/// run unchanged against both. A test that needs one server (a memory cap, a restart)
/// takes it from [`start_server`].
#[derive(Debug)]
pub enum TestRedis {
    Server(RedisServer),
    Cluster(RedisCluster),
}

impl TestRedis {
    /// The URL taskbox connects to.
    pub fn url(&self) -> String {
        match self {
            Self::Server(server) => server.url(),
            Self::Cluster(cluster) => cluster.url(),
        }
    }

    /// The one server, for a test that stops and starts it.
    pub fn server(&mut self) -> &mut RedisServer {
        match self {
            Self::Server(server) => server,
            Self::Cluster(_) => panic!("a test that restarts Redis starts it with start_server"),
        }
    }
}

/// Whether the suites run against a cluster (`TASKBOX_TEST_REDIS=cluster`).
pub fn on_cluster() -> bool {
    std::env::var("TASKBOX_TEST_REDIS").is_ok_and(|redis| redis == "cluster")
}

/// Starts the suites' Redis (see [`TestRedis`]) and connects a queue to it.
pub async fn start() -> (TestRedis, Queue) {
    if !on_cluster() {
        return start_server(RedisOptions::default()).await;
    }
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3, 0))
        .await
        .unwrap()
        .expect("starting a Redis Cluster");
    connect(TestRedis::Cluster(cluster)).await
}

/// Starts one redis-server with `options` and connects a queue to it.
pub async fn start_server(options: RedisOptions) -> (TestRedis, Queue) {
    let server = tokio::task::spawn_blocking(|| RedisServer::start(options))
        .await
        .unwrap()
        .expect("starting redis-server");
    connect(TestRedis::Server(server)).await
}

async fn connect(redis: TestRedis) -> (TestRedis, Queue) {
    let queue = taskbox_core::connect(&redis.url(), Duration::from_secs(5))
        .await
        .unwrap();
    (redis, queue)
}

/// A connection of the test's own to `redis`, for what no taskbox call shows.
pub async fn connection(redis: &TestRedis) -> Connection {
    Store::connect(&redis.url(), Duration::from_secs(5))
        .await
        .unwrap()
        .connection()
}

/// `MEMORY USAGE` of job `id`'s record (of the default tenant's queue), counting every field:
/// by default Redis estimates from five sampled fields, and a sample holding a large one
/// multiplies it by the number of fields.
pub async fn job_record_size(redis: &TestRedis, id: &str) -> u64 {
    redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(format!("tb:{{default}}:job:{id}"))
        .arg("SAMPLES")
        .arg(0)
        .query_async(&mut connection(redis).await)
        .await
        .unwrap()
}
