//! Keeping held entries alive, promoting due delayed jobs, and taking over the entries of
//! workers that stopped heartbeating.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;

use super::Worker;
use super::fetch::Delivery;
use crate::queue::{GROUP, Priority};

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
            for queue in &self.config.queues {
                if let Err(err) = self.promote(queue).await {
                    tracing::warn!("promoting delayed jobs of {queue} failed: {err:#}");
                }
            }
            if last_heartbeat.elapsed() >= heartbeat_every {
                last_heartbeat = tokio::time::Instant::now();
                if let Err(err) = self.queue.report_worker(&self.report()).await {
                    tracing::warn!("reporting this worker failed: {err:#}");
                }
                for queue in &self.config.queues {
                    if let Err(err) = self.heartbeat(queue).await {
                        tracing::warn!("heartbeat of {queue} failed: {err:#}");
                    }
                }
            }
        }
    }

    /// Moves the queue's due delayed jobs and retries onto its streams.
    pub(super) async fn promote(&self, queue: &str) -> anyhow::Result<()> {
        let keys = self.queue.keys(queue);
        let [high, normal, low] = keys.streams();
        let _moved: u64 = self
            .queue
            .scripts_promote()
            .key(keys.delayed())
            .key(high)
            .key(normal)
            .key(low)
            .arg(1000)
            .arg(keys.job_prefix())
            .invoke_async(&mut self.queue.connection())
            .await?;
        Ok(())
    }

    /// Re-claims the held entries of the queue's streams, which resets their idle time.
    pub(super) async fn heartbeat(&self, queue: &str) -> anyhow::Result<()> {
        let mut conn = self.queue.connection();
        for stream in self.queue.keys(queue).streams() {
            let ids: Vec<String> = self
                .in_flight()
                .get(&stream)
                .map(|entries| entries.iter().cloned().collect())
                .unwrap_or_default();
            if ids.is_empty() {
                continue;
            }
            let _: redis::Value = redis::cmd("XCLAIM")
                .arg(&stream)
                .arg(GROUP)
                .arg(&self.config.id)
                .arg(0)
                .arg(&ids)
                .arg("JUSTID")
                .query_async(&mut conn)
                .await?;
        }
        Ok(())
    }

    /// Takes over entries idle past the visibility timeout (their worker stopped
    /// heartbeating), no more than `permits`, and starts them; returns how many ran.
    pub(super) async fn take_over(
        self: &Arc<Self>,
        permits: &mut Vec<OwnedSemaphorePermit>,
    ) -> anyhow::Result<usize> {
        let mut conn = self.queue.connection();
        let mut started = 0;
        for queue in &self.config.queues {
            for priority in Priority::ALL {
                if permits.is_empty() {
                    return Ok(started);
                }
                let claimed: redis::streams::StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                    .arg(self.queue.keys(queue).stream(priority))
                    .arg(GROUP)
                    .arg(&self.config.id)
                    .arg(self.config.visibility_timeout.as_millis() as u64)
                    .arg("0-0")
                    .arg("COUNT")
                    .arg(permits.len())
                    .query_async(&mut conn)
                    .await?;
                let deliveries: Vec<Delivery> = claimed
                    .claimed
                    .into_iter()
                    .map(|entry| Delivery {
                        queue: queue.clone(),
                        priority,
                        job: entry.get::<String>("id").unwrap_or_default(),
                        entry: entry.id,
                    })
                    // Entries this worker holds went idle only because Redis was away longer
                    // than the visibility timeout: their jobs are still running here.
                    .filter(|delivery| !self.holds(delivery))
                    .inspect(|delivery| {
                        tracing::info!(entry = %delivery.entry, "taking over a job of a worker that stopped");
                    })
                    .collect();
                if !deliveries.is_empty() {
                    started += self.start_taken(deliveries, permits).await?;
                }
            }
        }
        Ok(started)
    }

    /// Heartbeats the delivery's entry until [`Worker::unhold`].
    pub(super) fn hold(&self, delivery: &Delivery) {
        let stream = self.queue.keys(&delivery.queue).stream(delivery.priority);
        self.in_flight()
            .entry(stream)
            .or_default()
            .insert(delivery.entry.clone());
    }

    /// Whether the delivery's entry is held by this worker.
    pub(super) fn holds(&self, delivery: &Delivery) -> bool {
        let stream = self.queue.keys(&delivery.queue).stream(delivery.priority);
        self.in_flight()
            .get(&stream)
            .is_some_and(|entries| entries.contains(&delivery.entry))
    }

    /// Stops heartbeating the delivery's entry: if it is still pending, it goes idle and
    /// another worker takes it over.
    pub(super) fn unhold(&self, delivery: &Delivery) {
        let stream = self.queue.keys(&delivery.queue).stream(delivery.priority);
        if let Some(entries) = self.in_flight().get_mut(&stream) {
            entries.remove(&delivery.entry);
        }
    }

    pub(super) fn in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashSet<String>>> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
