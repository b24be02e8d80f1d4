//! A private redis-server for one test (on a free port, killed on drop), a queue on it, and
//! connections of the test's own, to look at Redis the way an operator would.

use std::time::Duration;

use taskbox_core::queue::Queue;
use taskbox_core::redis_server::{RedisOptions, RedisServer};

/// Starts a redis-server with `options` and connects a queue to it.
pub async fn start(options: RedisOptions) -> (RedisServer, Queue) {
    let redis = tokio::task::spawn_blocking(|| RedisServer::start(options))
        .await
        .unwrap()
        .expect("starting redis-server");
    let queue = taskbox_core::connect(&redis.url(), Duration::from_secs(5))
        .await
        .unwrap();
    (redis, queue)
}

/// A connection of the test's own to `redis`, for what no taskbox call shows.
pub async fn connection(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// `MEMORY USAGE` of job `id`'s record (of the default tenant's queue), counting every field:
/// by default Redis estimates from five sampled fields, and a sample holding a large one
/// multiplies it by the number of fields.
pub async fn job_record_size(redis: &RedisServer, id: &str) -> u64 {
    redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(format!("tb:{{default}}:job:{id}"))
        .arg("SAMPLES")
        .arg(0)
        .query_async(&mut connection(redis).await)
        .await
        .unwrap()
}
