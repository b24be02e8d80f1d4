//! Cancels: a queue's cancel channel stops the jobs this worker runs.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use taskbox_runtime::CancelHandle;

use super::Worker;

/// Cancel handles of the jobs this worker runs. A job's handle exists from just after its
/// start; a cancel that arrives in between is remembered for a while and applied when the
/// handle is made.
#[derive(Default)]
pub(super) struct RunningJobs {
    pub(super) handles: HashMap<String, CancelHandle>,
    pub(super) early_cancels: HashMap<String, Instant>,
}

impl RunningJobs {
    /// How long a cancel for a job this worker does not (yet) run is remembered.
    const EARLY_CANCEL_MEMORY: Duration = Duration::from_secs(30);

    pub(super) fn register(&mut self, job: &str) -> CancelHandle {
        let cancel = CancelHandle::new();
        if self.early_cancels.remove(job).is_some() {
            cancel.cancel();
        }
        self.handles.insert(job.to_owned(), cancel.clone());
        cancel
    }

    pub(super) fn forget(&mut self, job: &str) {
        self.handles.remove(job);
    }

    pub(super) fn cancel(&mut self, job: &str) {
        match self.handles.get(job) {
            Some(cancel) => cancel.cancel(),
            None => {
                self.early_cancels
                    .retain(|_, at| at.elapsed() < Self::EARLY_CANCEL_MEMORY);
                self.early_cancels.insert(job.to_owned(), Instant::now());
            }
        }
    }

    pub(super) fn cancel_all(&self) {
        self.handles.values().for_each(CancelHandle::cancel);
    }
}

/// How often the cancel listener looks whether its queues have new partitions to listen on.
const PARTITIONS_LOOKED_AT_EVERY: Duration = Duration::from_secs(5);

impl Worker {
    /// The cancel handle of a job that just started; already cancelled if a cancel for it
    /// arrived first.
    pub(super) fn register(&self, job: &str) -> CancelHandle {
        self.running().register(job)
    }

    /// Stops running jobs when asked on a partition's cancel channel.
    pub(super) async fn listen_for_cancels(self: Arc<Self>) {
        loop {
            if let Err(err) = self.try_listen_for_cancels().await {
                tracing::warn!("listening for cancellations failed ({err:#}); listening again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }

    /// Listens on the cancel channels of the partitions there are now, until the partitions
    /// change (then `Ok`, to listen on the new ones) or the subscription ends.
    pub(super) async fn try_listen_for_cancels(&self) -> anyhow::Result<()> {
        use futures_util::StreamExt as _;
        let mut partitions = self.partitions().await?;
        partitions.sort();
        let channels: Vec<String> = partitions
            .iter()
            .map(|partition| self.queue.keys(partition).cancel_channel())
            .collect();
        let mut messages = self.queue.store().subscribe(&channels).await?;
        let mut look_again = tokio::time::interval(PARTITIONS_LOOKED_AT_EVERY);
        loop {
            tokio::select! {
                message = messages.next() => {
                    let Some(message) = message else {
                        anyhow::bail!("the subscription ended");
                    };
                    let job = String::from_utf8_lossy(&message).into_owned();
                    self.running().cancel(&job);
                }
                _ = look_again.tick() => {
                    let mut now = self.partitions().await?;
                    now.sort();
                    if now != partitions {
                        return Ok(());
                    }
                }
            }
        }
    }

    pub(super) fn running(&self) -> std::sync::MutexGuard<'_, RunningJobs> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
