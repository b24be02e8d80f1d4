//! Partitioned queues. A queue of P partitions keeps its jobs under P hash tags (see
//! [`keys::partition_tag`]), so on a Redis Cluster they spread over up to P nodes. Each
//! partition is a queue of its own to the scripts: its streams, delayed set, dead letters,
//! jobs and idempotency keys. A job's id starts with its partition's tag, so it is found
//! without a scan.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::AsyncCommands as _;

use super::Queue;
use crate::store::keys;

/// The most partitions a queue may have.
pub const MAX_PARTITIONS: u32 = 64;

/// How long a process trusts the partition count it read: a queue given more partitions
/// is spread over them within this time, by every producer and worker.
const CACHED_FOR: Duration = Duration::from_secs(5);

/// Partition counts read recently, by queue.
#[derive(Debug, Default)]
pub(super) struct PartitionCounts(Mutex<HashMap<String, (u32, Instant)>>);

/// Why a queue's partitions could not be set.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// Fewer than one, or more than [`MAX_PARTITIONS`].
    #[error("a queue has 1 to {MAX_PARTITIONS} partitions, not {0}")]
    OutOfRange(u32),
    /// Fewer than it has: the jobs of a dropped partition would wait for nobody.
    #[error("queue {queue} has {current} partitions; a queue's partitions can only grow")]
    Shrinking {
        /// The queue.
        queue: String,
        /// Its partitions now.
        current: u32,
    },
    /// Redis failed.
    #[error(transparent)]
    Redis(#[from] anyhow::Error),
}

impl Queue {
    /// How many partitions `queue` has (1 unless set).
    pub async fn partitions(&self, queue: &str) -> anyhow::Result<u32> {
        {
            let cached = self.partition_counts.0.lock();
            let cached = cached.unwrap_or_else(PoisonError::into_inner);
            if let Some((count, read_at)) = cached.get(queue)
                && read_at.elapsed() < CACHED_FOR
            {
                return Ok(*count);
            }
        }
        let stored: Option<u32> = self
            .connection()
            .hget(keys::partitions(self.store.prefix()), queue)
            .await?;
        let count = stored.unwrap_or(1).clamp(1, MAX_PARTITIONS);
        self.partition_counts
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(queue.to_owned(), (count, Instant::now()));
        Ok(count)
    }

    /// Gives `queue` `partitions` partitions, never fewer than it has, and makes their
    /// consumer groups; returns the count.
    pub async fn set_partitions(
        &self,
        queue: &str,
        partitions: u32,
    ) -> Result<u32, PartitionError> {
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(PartitionError::OutOfRange(partitions));
        }
        self.partition_counts
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(queue);
        let current = self.partitions(queue).await?;
        if partitions < current {
            return Err(PartitionError::Shrinking {
                queue: queue.to_owned(),
                current,
            });
        }
        for index in 0..partitions {
            self.create_groups(&keys::partition_tag(queue, index))
                .await?;
        }
        let () = self
            .connection()
            .hset(keys::partitions(self.store.prefix()), queue, partitions)
            .await
            .map_err(anyhow::Error::from)?;
        self.partition_counts
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(queue.to_owned(), (partitions, Instant::now()));
        Ok(partitions)
    }

    /// The tags of every partition of `queues`, queue by queue.
    pub(crate) async fn partition_tags(&self, queues: &[String]) -> anyhow::Result<Vec<String>> {
        let mut tags = Vec::new();
        for queue in queues {
            let count = self.partitions(queue).await?;
            tags.extend((0..count).map(|index| keys::partition_tag(queue, index)));
        }
        Ok(tags)
    }
}

/// The partition of `partitions` a new job goes to: the same one for every use of an
/// idempotency key (of one tenant), so the key still finds its first job; a random one
/// otherwise.
pub(super) fn pick(partitions: u32, tenant: &str, idempotency_key: Option<&str>) -> u32 {
    if partitions <= 1 {
        return 0;
    }
    match idempotency_key {
        Some(key) => {
            (fnv1a([tenant.as_bytes(), b"\0", key.as_bytes()]) % u64::from(partitions)) as u32
        }
        None => rand::random_range(0..partitions),
    }
}

/// FNV-1a over `parts`: a hash that stays the same across processes and versions, as the
/// partition of an idempotency key must.
fn fnv1a<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in parts.into_iter().flatten() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idempotency_key_always_picks_one_partition_and_jobs_spread_over_all() {
        let first = pick(8, "acme", Some("order-17"));
        assert!((0..100).all(|_| pick(8, "acme", Some("order-17")) == first));
        assert_eq!(pick(1, "acme", None), 0);
        let mut seen = [0u32; 4];
        for _ in 0..4000 {
            seen[pick(4, "acme", None) as usize] += 1;
        }
        assert!(seen.iter().all(|&count| count > 800), "{seen:?}");
        // The key's partition depends on the tenant too: two tenants' keys are apart.
        let spread: std::collections::HashSet<u32> = (0..64)
            .map(|n| pick(8, &format!("t{n}"), Some("k")))
            .collect();
        assert!(spread.len() > 4, "{spread:?}");
    }
}
