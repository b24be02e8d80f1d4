//! Paused queues. A paused queue takes jobs as before, but no worker starts one from it: its
//! waiting jobs wait, and the age of its oldest one grows. Resumed, it drains from where it
//! stopped. Jobs already running when it was paused run to their end.
//!
//! Workers look at the paused queues once a round, and read them from Redis no more than
//! once per [`CACHED_FOR`]: pausing takes effect within that time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use redis::AsyncCommands as _;

use super::Queue;
use crate::model::unix_millis;
use crate::store::keys;

/// How long a worker trusts the paused queues it read.
pub const CACHED_FOR: Duration = Duration::from_secs(1);

/// The paused queues, each with when it was paused (ms since the Unix epoch).
type Paused = Arc<HashMap<String, u64>>;

/// The paused queues as last read, and when.
#[derive(Debug, Default)]
pub(super) struct PausedQueues(Mutex<Option<(Paused, Instant)>>);

impl Queue {
    /// Pauses `queue`, listed among the queues from now on if it was not; false if it was
    /// paused already.
    pub async fn pause(&self, queue: &str) -> anyhow::Result<bool> {
        let now = unix_millis(SystemTime::now());
        let mut conn = self.connection();
        let paused: bool = conn
            .hset_nx(keys::paused(self.store.prefix()), queue, now)
            .await?;
        let () = conn.sadd(keys::queues(self.store.prefix()), queue).await?;
        self.forget_paused();
        Ok(paused)
    }

    /// Resumes `queue`; false if it was not paused.
    pub async fn resume(&self, queue: &str) -> anyhow::Result<bool> {
        let removed: u64 = self
            .connection()
            .hdel(keys::paused(self.store.prefix()), queue)
            .await?;
        self.forget_paused();
        Ok(removed > 0)
    }

    /// The paused queues, each with when it was paused (ms since the Unix epoch), as Redis
    /// has them now.
    pub async fn paused_queues(&self) -> anyhow::Result<HashMap<String, u64>> {
        Ok(self
            .connection()
            .hgetall(keys::paused(self.store.prefix()))
            .await?)
    }

    /// The paused queues, read at most [`CACHED_FOR`] ago.
    async fn recently_paused(&self) -> anyhow::Result<Paused> {
        if let Some((paused, read_at)) = &*self.lock_paused()
            && read_at.elapsed() < CACHED_FOR
        {
            return Ok(Arc::clone(paused));
        }
        let paused = Arc::new(self.paused_queues().await?);
        *self.lock_paused() = Some((Arc::clone(&paused), Instant::now()));
        Ok(paused)
    }

    /// The tags of the partitions of those of `queues` that are not paused, queue by queue:
    /// the partitions a worker may start jobs from.
    pub(crate) async fn runnable_partition_tags(
        &self,
        queues: &[String],
    ) -> anyhow::Result<Vec<String>> {
        let paused = self.recently_paused().await?;
        let running: Vec<String> = queues
            .iter()
            .filter(|queue| !paused.contains_key(*queue))
            .cloned()
            .collect();
        self.partition_tags(&running).await
    }

    fn forget_paused(&self) {
        *self.lock_paused() = None;
    }

    fn lock_paused(&self) -> std::sync::MutexGuard<'_, Option<(Paused, Instant)>> {
        self.paused.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
