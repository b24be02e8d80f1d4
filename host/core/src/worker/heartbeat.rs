//! Keeping held entries alive, promoting due delayed jobs, and taking over the entries of
//! workers that stopped heartbeating.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;

use super::Worker;
use crate::metrics::metrics;
use crate::model::job::Priority;
use crate::queue::Delivery;

/// The most due jobs one promotion moves; the next, 50 ms later, moves more.
const PROMOTE_AT_ONCE: u32 = 1000;

/// How often a worker trims the history of its queues.
const TRIM_EVERY: Duration = Duration::from_secs(1);

/// The entries a worker holds of one queue, by stream (indexed by priority rank).
pub(super) type Held = [HashSet<String>; 3];

impl Worker {
    /// Promotes due delayed jobs and heartbeats held entries, forever. Never waits for a
    /// slot: a worker busy with long jobs keeps them.
    pub(super) async fn maintain(self: Arc<Self>) {
        let heartbeat_every = self.config.visibility_timeout / 3;
        // The first round reports the worker and heartbeats at once.
        let mut last_heartbeat = tokio::time::Instant::now()
            .checked_sub(heartbeat_every)
            .unwrap_or_else(tokio::time::Instant::now);
        let mut promote = tokio::time::interval(Duration::from_millis(50));
        loop {
            promote.tick().await;
            for partition in self.partitions().await.unwrap_or_default() {
                if let Err(err) = self.promote(&partition).await {
                    tracing::warn!("promoting delayed jobs of {partition} failed: {err:#}");
                }
            }
            if last_heartbeat.elapsed() >= heartbeat_every {
                last_heartbeat = tokio::time::Instant::now();
                if let Err(err) = self.queue.report_worker(&self.report()).await {
                    tracing::warn!("reporting this worker failed: {err:#}");
                }
                let held: Vec<String> = self.in_flight().keys().cloned().collect();
                for partition in held {
                    if let Err(err) = self.heartbeat(&partition).await {
                        tracing::warn!("heartbeat of {partition} failed: {err:#}");
                    }
                }
            }
        }
    }

    /// Drops the results and records of its queues' finished jobs past their retention or
    /// cap, forever; paused queues too. Apart from [`Worker::maintain`], so that a long trim
    /// delays no promotion.
    pub(super) async fn trim_history(self: Arc<Self>) {
        let mut every = tokio::time::interval(TRIM_EVERY);
        loop {
            every.tick().await;
            let partitions = match self.queue.partition_tags(&self.config.queues).await {
                Ok(partitions) => partitions,
                Err(err) => {
                    tracing::warn!("reading the partitions to trim failed: {err:#}");
                    continue;
                }
            };
            for partition in partitions {
                if let Err(err) = self.queue.trim_history(&partition).await {
                    tracing::warn!("trimming the history of {partition} failed: {err:#}");
                }
            }
        }
    }

    /// Moves the partition's due delayed jobs and retries onto its streams.
    pub(super) async fn promote(&self, queue: &str) -> anyhow::Result<()> {
        self.queue.promote(queue, PROMOTE_AT_ONCE).await?;
        Ok(())
    }

    /// Re-claims the held entries of the partition's streams, which resets their idle time.
    pub(super) async fn heartbeat(&self, queue: &str) -> anyhow::Result<()> {
        for priority in Priority::ALL {
            let entries: Vec<String> = self
                .in_flight()
                .get(queue)
                .map(|held| held[priority.rank()].iter().cloned().collect())
                .unwrap_or_default();
            if !entries.is_empty() {
                self.queue
                    .heartbeat(queue, priority, &self.config.id, &entries)
                    .await?;
            }
        }
        Ok(())
    }

    /// Takes over entries idle past the visibility timeout (their worker stopped
    /// heartbeating), no more than `permits`, and starts them; returns how many ran.
    pub(super) async fn take_over(
        self: &Arc<Self>,
        permits: &mut Vec<OwnedSemaphorePermit>,
    ) -> anyhow::Result<usize> {
        let mut started = 0;
        for queue in self.partitions().await? {
            for priority in Priority::ALL {
                if permits.is_empty() {
                    return Ok(started);
                }
                let deliveries: Vec<Delivery> = self
                    .queue
                    .take_over(
                        &queue,
                        priority,
                        &self.config.id,
                        self.config.visibility_timeout,
                        permits.len(),
                    )
                    .await?
                    .into_iter()
                    // Entries this worker holds went idle only because Redis was away longer
                    // than the visibility timeout: their jobs are still running here.
                    .filter(|delivery| !self.holds(delivery))
                    .inspect(|delivery| {
                        tracing::info!(entry = %delivery.entry, "taking over a job of a worker that stopped");
                    })
                    .collect();
                if !deliveries.is_empty() {
                    metrics().taken_over(deliveries.len() as u64);
                    started += self.start_taken(deliveries, permits).await?;
                }
            }
        }
        Ok(started)
    }

    /// Heartbeats the delivery's entry until [`Worker::unhold`].
    pub(super) fn hold(&self, delivery: &Delivery) {
        self.in_flight()
            .entry(delivery.partition.clone())
            .or_default()[delivery.priority.rank()]
        .insert(delivery.entry.clone());
    }

    /// Whether the delivery's entry is held by this worker.
    pub(super) fn holds(&self, delivery: &Delivery) -> bool {
        self.in_flight()
            .get(&delivery.partition)
            .is_some_and(|held| held[delivery.priority.rank()].contains(&delivery.entry))
    }

    /// Stops heartbeating the delivery's entry: if it is still pending, it goes idle and
    /// another worker takes it over.
    pub(super) fn unhold(&self, delivery: &Delivery) {
        if let Some(held) = self.in_flight().get_mut(&delivery.partition) {
            held[delivery.priority.rank()].remove(&delivery.entry);
        }
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
