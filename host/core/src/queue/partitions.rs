//! Partitioned queues. A queue of P partitions keeps its jobs under P hash tags, so on a
//! Redis Cluster they spread over up to P nodes. Each partition is a queue of its own to the
//! scripts: its streams, delayed set, dead letters, jobs and idempotency keys. A job's id
//! starts with its partition's tag, so it is found without a scan.
//!
//! The first partition's tag is the queue's name, so a queue of one partition keeps the keys
//! it always had. The others' tags are chosen, once, so that their cluster slots lie evenly
//! apart: a cluster's slots are split into ranges, one per primary, and P tags whose slots
//! are 16384 / P apart fall on P different primaries of a cluster of P even ranges (where a
//! tag's slot left to its hash, three partitions on three primaries shared one primary
//! between two of them). The tags are stored, so adding partitions later moves none.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::AsyncCommands as _;

use super::Queue;
use crate::store::keys;

/// The most partitions a queue may have.
pub const MAX_PARTITIONS: u32 = 64;

/// How long a process trusts the partition count it read: a queue given more partitions
/// is spread over them within this time, by every producer and worker.
const CACHED_FOR: Duration = Duration::from_secs(5);

/// The number of cluster slots.
const SLOTS: u32 = 16384;

/// How far from its target slot a new partition's slot may be.
const SLOT_TOLERANCE: u32 = 16;

/// A queue's partition tags, by index, and when they were read.
type ReadTags = (Arc<[String]>, Instant);

/// Partition tags read recently, by queue.
#[derive(Debug, Default)]
pub(super) struct PartitionTags(Mutex<HashMap<String, ReadTags>>);

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
        Ok(self.tags_of(queue).await?.len() as u32)
    }

    /// The tags of `queue`'s partitions, by index.
    pub(crate) async fn tags_of(&self, queue: &str) -> anyhow::Result<Arc<[String]>> {
        {
            let cached = self.partition_tags.0.lock();
            let cached = cached.unwrap_or_else(PoisonError::into_inner);
            if let Some((tags, read_at)) = cached.get(queue)
                && read_at.elapsed() < CACHED_FOR
            {
                return Ok(Arc::clone(tags));
            }
        }
        let stored: Option<String> = self
            .connection()
            .hget(keys::partitions(self.store.prefix()), queue)
            .await?;
        let mut tags: Vec<String> = match &stored {
            Some(stored) => stored.split(' ').map(str::to_owned).collect(),
            None => vec![queue.to_owned()],
        };
        tags.truncate(MAX_PARTITIONS as usize);
        let tags: Arc<[String]> = tags.into();
        self.remember_tags(queue, Arc::clone(&tags));
        Ok(tags)
    }

    fn remember_tags(&self, queue: &str, tags: Arc<[String]>) {
        self.partition_tags
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(queue.to_owned(), (tags, Instant::now()));
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
        self.partition_tags
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(queue);
        let current = self.tags_of(queue).await?;
        if (partitions as usize) < current.len() {
            return Err(PartitionError::Shrinking {
                queue: queue.to_owned(),
                current: current.len() as u32,
            });
        }
        let tags = placed(queue, &current, partitions);
        for tag in &tags {
            self.create_groups(tag).await?;
        }
        let () = self
            .connection()
            .hset(keys::partitions(self.store.prefix()), queue, tags.join(" "))
            .await
            .map_err(anyhow::Error::from)?;
        self.remember_tags(queue, tags.into());
        Ok(partitions)
    }

    /// The tags of every partition of `queues`, queue by queue.
    pub(crate) async fn partition_tags(&self, queues: &[String]) -> anyhow::Result<Vec<String>> {
        let mut tags = Vec::new();
        for queue in queues {
            tags.extend(self.tags_of(queue).await?.iter().cloned());
        }
        Ok(tags)
    }
}

/// The cluster slot of keys tagged `tag`.
fn slot(tag: &str) -> u32 {
    u32::from(crc16::State::<crc16::XMODEM>::calculate(tag.as_bytes())) % SLOTS
}

/// The tags of `count` partitions of `queue` whose first partitions have the tags `current`:
/// those, then new ones whose slots lie apart from theirs. Going from one partition to P,
/// the new slots are 16384 / P apart; adding to more, each new one goes into the middle of
/// the widest gap between the slots taken. The same arguments give the same tags, so two
/// processes that grow a queue at once agree.
fn placed(queue: &str, current: &[String], count: u32) -> Vec<String> {
    let mut tags = current.to_vec();
    let first = slot(queue);
    let even = current.len() <= 1;
    for index in tags.len() as u32..count {
        let target = match even {
            true => (first + index * SLOTS / count) % SLOTS,
            false => widest_gap_middle(&tags),
        };
        let tag = (0u32..)
            .map(|salt| match salt {
                0 => format!("{queue}~{index}"),
                salt => format!("{queue}~{index}.{salt}"),
            })
            .find(|tag| circular_distance(slot(tag), target) <= SLOT_TOLERANCE)
            .expect("some salt hits every window of slots");
        tags.push(tag);
    }
    tags
}

/// The slot in the middle of the widest gap between the slots of `tags`.
fn widest_gap_middle(tags: &[String]) -> u32 {
    let mut slots: Vec<u32> = tags.iter().map(|tag| slot(tag)).collect();
    slots.sort_unstable();
    let (start, width) = slots
        .iter()
        .zip(slots.iter().cycle().skip(1))
        .map(|(&from, &to)| (from, (to + SLOTS - from - 1) % SLOTS + 1))
        .max_by_key(|&(_, width)| width)
        .unwrap_or((0, SLOTS));
    (start + width / 2) % SLOTS
}

fn circular_distance(a: u32, b: u32) -> u32 {
    let apart = a.abs_diff(b);
    apart.min(SLOTS - apart)
}

/// The partition of `partitions` a new job goes to: the same one for every use of an
/// idempotency key (of one tenant), so the key still finds its first job; a random one
/// otherwise.
pub(super) fn pick(partitions: usize, tenant: &str, idempotency_key: Option<&str>) -> usize {
    if partitions <= 1 {
        return 0;
    }
    match idempotency_key {
        Some(key) => {
            (fnv1a([tenant.as_bytes(), b"\0", key.as_bytes()]) % partitions as u64) as usize
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
    fn partitions_fall_on_as_many_primaries_of_an_evenly_split_cluster() {
        // The primary of a slot in a cluster of `primaries` even ranges, as
        // `redis-cli --cluster create` splits it.
        let primary = |tag: &String, primaries: u32| slot(tag) * primaries / SLOTS;
        for queue in [
            "default",
            "bench",
            "emails",
            "q",
            "a-much-longer-queue-name",
        ] {
            for count in 2..=6 {
                let tags = placed(queue, &[queue.to_owned()], count);
                assert_eq!(tags.len(), count as usize);
                assert_eq!(tags[0], queue);
                let on: std::collections::HashSet<u32> =
                    tags.iter().map(|tag| primary(tag, count)).collect();
                assert_eq!(on.len(), count as usize, "{queue} {tags:?}");
            }
            // Growing keeps the tags there are and adds distinct ones.
            let three = placed(queue, &[queue.to_owned()], 3);
            let five = placed(queue, &three, 5);
            assert_eq!(five[..3], three[..]);
            let distinct: std::collections::HashSet<&String> = five.iter().collect();
            assert_eq!(distinct.len(), 5);
            assert_eq!(
                placed(queue, &three, 5),
                five,
                "the placement is deterministic"
            );
        }
    }

    #[test]
    fn an_idempotency_key_always_picks_one_partition_and_jobs_spread_over_all() {
        let first = pick(8, "acme", Some("order-17"));
        assert!((0..100).all(|_| pick(8, "acme", Some("order-17")) == first));
        assert_eq!(pick(1, "acme", None), 0);
        let mut seen = [0u32; 4];
        for _ in 0..4000 {
            seen[pick(4, "acme", None)] += 1;
        }
        assert!(seen.iter().all(|&count| count > 800), "{seen:?}");
        // The key's partition depends on the tenant too: two tenants' keys are apart.
        let spread: std::collections::HashSet<usize> = (0..64)
            .map(|n| pick(8, &format!("t{n}"), Some("k")))
            .collect();
        assert!(spread.len() > 4, "{spread:?}");
    }
}
