//! Taking jobs: new entries read with their start in one script call, entries a blocking read
//! took beyond the free slots, and entries taken over from lost workers.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::{RETRY_FIRST, RETRY_MOST, Worker};
use crate::queue::Delivery;
use crate::store::Connection;

/// The most entries one call takes.
pub(super) const MAX_BATCH: usize = 256;

impl Worker {
    /// A connection of its own for blocking reads, which would hold up the shared one.
    pub(super) async fn fetch_connection(&self) -> anyhow::Result<Connection> {
        Ok(self
            .queue
            .store()
            .dedicated_connection(Duration::from_secs(10))
            .await?)
    }

    /// Takes jobs and starts them, as many at a time as there are free slots, until `stop`
    /// turns true. A round under way when it does is finished, never cut short.
    pub(super) async fn fetch(
        self: Arc<Self>,
        slots: Arc<Semaphore>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut conn = None;
        // Entries a blocking read took beyond the free slots: held, and started first.
        let mut backlog = VecDeque::new();
        let mut retry_in = RETRY_FIRST;
        let takeover_every = self.config.visibility_timeout / 3;
        let mut next_takeover = tokio::time::Instant::now();
        let mut redis_full = self.redis_full.subscribe();
        // Which partition a round looks at first: with fewer free slots than partitions with
        // jobs, each partition is first in its turn, and none waits behind the others.
        let mut turn = 0;
        loop {
            let permits = tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => break,
                permits = free_slots(&slots) => permits,
            };
            // A job taken while Redis refuses outcomes would only add one more to keep.
            tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => break,
                _ = redis_full.wait_for(|full| !*full) => {}
            }
            let take_over = tokio::time::Instant::now() >= next_takeover;
            if take_over {
                next_takeover = tokio::time::Instant::now() + takeover_every;
            }
            turn += 1;
            let round = self
                .fetch_round(permits, &mut backlog, &mut conn, take_over, turn)
                .await;
            let Err(err) = round else {
                retry_in = RETRY_FIRST;
                continue;
            };
            tracing::warn!("taking jobs failed ({err:#}); trying again in {retry_in:?}");
            if lost_group(&err) {
                // Redis lost its data (or a stream was deleted): make the groups again.
                for partition in self.partitions().await.unwrap_or_default() {
                    if let Err(err) = self.queue.create_groups(&partition).await {
                        tracing::warn!("{err:#}");
                    }
                }
            }
            tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => break,
                () = tokio::time::sleep(retry_in) => {}
            }
            retry_in = (retry_in * 2).min(RETRY_MOST);
        }
        // Not started: another worker takes them over once they are idle.
        backlog.iter().for_each(|delivery| self.unhold(delivery));
    }

    /// One round of taking jobs for the slots of `permits`: when `take_over`, entries of
    /// workers that stopped heartbeating first; then, partition by partition from the
    /// `turn`th on, one script call that starts the entries read before and waiting (held)
    /// and reads new ones for the slots left, which wait for the next round. When nothing
    /// was started or read, blocks (a second at most) until new entries arrive and starts
    /// them.
    pub(super) async fn fetch_round(
        self: &Arc<Self>,
        mut permits: Vec<OwnedSemaphorePermit>,
        backlog: &mut VecDeque<Delivery>,
        conn: &mut Option<Connection>,
        take_over: bool,
        turn: usize,
    ) -> anyhow::Result<()> {
        let mut started = 0;
        if take_over {
            started += self.take_over(&mut permits).await?;
        }
        let mut partitions = self.partitions().await?;
        let first = turn % partitions.len().max(1);
        partitions.rotate_left(first);
        let mut read_any = false;
        for partition in &partitions {
            if permits.is_empty() {
                return Ok(());
            }
            let mut waiting = Vec::new();
            let mut others = VecDeque::with_capacity(backlog.len());
            for delivery in backlog.drain(..) {
                if delivery.partition == *partition && waiting.len() < permits.len() {
                    waiting.push(delivery);
                } else {
                    others.push_back(delivery);
                }
            }
            *backlog = others;
            let read = permits.len() - waiting.len();
            let (taken, read) = match self
                .queue
                .start_batch(partition, &self.config.id, &waiting, read)
                .await
            {
                Ok(replies) => replies,
                Err(err) => {
                    waiting.iter().for_each(|delivery| self.unhold(delivery));
                    return Err(err.context("starting jobs failed, they will run again"));
                }
            };
            started += self.launch(taken, &mut permits);
            read.iter().for_each(|delivery| self.hold(delivery));
            read_any |= !read.is_empty();
            backlog.extend(read);
        }
        if started > 0 || read_any || permits.is_empty() {
            return Ok(());
        }
        if partitions.is_empty() {
            // Every queue is paused: wait as long as a blocking read would, then look again.
            tokio::time::sleep(crate::queue::PAUSE_CACHED_FOR).await;
            return Ok(());
        }
        let connection = match conn {
            Some(connection) => connection,
            None => conn.insert(self.fetch_connection().await?),
        };
        let read = match self
            .queue
            .read_new(connection, &partitions, &self.config.id, permits.len())
            .await
        {
            Ok(read) => read,
            Err(err) => {
                *conn = None;
                return Err(err);
            }
        };
        // Entries of a queue paused while the read blocked wait, held, until it is resumed.
        let runnable = self.partitions().await?;
        let (mut read, paused): (Vec<_>, Vec<_>) = read
            .into_iter()
            .partition(|delivery| runnable.contains(&delivery.partition));
        // Each stream may give as many entries as there are slots: the rest wait, held.
        let waiting = read.split_off(permits.len().min(read.len()));
        waiting
            .iter()
            .chain(&paused)
            .for_each(|delivery| self.hold(delivery));
        backlog.extend(waiting);
        backlog.extend(paused);
        self.start_taken(read, &mut permits).await?;
        Ok(())
    }

    /// Starts entries this worker already took (by a blocking read or a takeover), no more
    /// than `permits`, with one script call per partition, and runs those that may run;
    /// returns how many. On a Redis error the entries are let go: they stay pending and are
    /// taken over once idle.
    pub(super) async fn start_taken(
        self: &Arc<Self>,
        taken: Vec<Delivery>,
        permits: &mut Vec<OwnedSemaphorePermit>,
    ) -> anyhow::Result<usize> {
        let mut by_partition: HashMap<String, Vec<Delivery>> = HashMap::new();
        for delivery in taken {
            by_partition
                .entry(delivery.partition.clone())
                .or_default()
                .push(delivery);
        }
        let mut started = 0;
        let mut failed = None;
        for (partition, deliveries) in by_partition {
            match self
                .queue
                .start_batch(&partition, &self.config.id, &deliveries, 0)
                .await
            {
                Ok((taken, _)) => started += self.launch(taken, permits),
                Err(err) => {
                    deliveries.iter().for_each(|delivery| self.unhold(delivery));
                    failed = Some(err);
                }
            }
        }
        match failed {
            Some(err) => Err(err.context("starting jobs failed, they will run again")),
            None => Ok(started),
        }
    }
}

/// The free slots, no more than [`MAX_BATCH`]; waits until there is one at least.
pub(super) async fn free_slots(slots: &Arc<Semaphore>) -> Vec<OwnedSemaphorePermit> {
    let first = Arc::clone(slots).acquire_owned().await;
    let mut permits = vec![first.expect("the slots are never closed")];
    while permits.len() < MAX_BATCH {
        match Arc::clone(slots).try_acquire_owned() {
            Ok(permit) => permits.push(permit),
            Err(_) => break,
        }
    }
    permits
}

/// Whether Redis refused a read because a consumer group is gone: it lost its data, or a
/// stream was deleted. Reads fail so until the groups are made again.
pub(super) fn lost_group(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<redis::RedisError>()
            .is_some_and(|err| err.code() == Some("NOGROUP"))
    })
}
