//! The progress of running jobs, on its way to Redis.
//!
//! Each running job has one slot that holds its latest report, which replaces any report
//! not yet written. The job's own task writes the slot to the job's hash and publishes it on
//! the channel `job:{id}` at most once per [`FLUSH_EVERY`], and writes the last report before
//! the job's outcome is stored. So a guest that reports in a loop costs one slot and a few
//! writes a second, and its reports stop when it ends.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::Script;
use taskbox_runtime::events::HOST_CHANNEL_PREFIX;
use taskbox_runtime::{Progress, ProgressSink};
use tokio::sync::Notify;

use crate::job_writes::JobWrites;
use crate::store::TimedInvoke as _;
use crate::store::keys::QueueKeys;

/// The shortest time between two writes of one job's progress.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// Where one job's progress goes: its hash, and its tenant's channel `job:{id}`.
pub(crate) struct ProgressTarget {
    pub(crate) keys: QueueKeys,
    pub(crate) job: String,
    pub(crate) tenant: String,
}

/// The latest report of one running job that is not yet written.
#[derive(Debug, Default)]
pub(crate) struct ProgressSlot {
    latest: Mutex<Option<Progress>>,
    reported: Notify,
}

impl ProgressSlot {
    /// The sink the job's sandbox reports to: it replaces the slot's report and never waits.
    pub(crate) fn sink(self: &Arc<Self>) -> ProgressSink {
        let slot = Arc::clone(self);
        Arc::new(move |progress: &Progress| {
            *slot.lock() = Some(progress.clone());
            slot.reported.notify_one();
        })
    }

    fn take(&self) -> Option<Progress> {
        self.lock().take()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Progress>> {
        lock(&self.latest)
    }
}

fn lock(report: &Mutex<Option<Progress>>) -> std::sync::MutexGuard<'_, Option<Progress>> {
    report.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes the progress of a worker's running jobs, as job-caused writes.
#[derive(Debug, Clone)]
pub(crate) struct ProgressWriter {
    writes: JobWrites,
    store: Script,
}

impl ProgressWriter {
    pub(crate) fn new(writes: JobWrites) -> Self {
        Self {
            writes,
            store: Script::new(include_str!("lua/store_progress.lua")),
        }
    }

    /// Runs `job`, whose sandbox reports to `slot`, while writing its reports at most once
    /// per [`FLUSH_EVERY`]; once it has ended, writes the report the tick held back, and
    /// returns what `job` returned.
    pub(crate) async fn while_running<T>(
        &self,
        to: &ProgressTarget,
        slot: &ProgressSlot,
        job: impl Future<Output = T>,
    ) -> T {
        // The report being written, until its write is done: the job's end cuts that write
        // short, and when no later report came, it is the last one and must still go out.
        let writing = Mutex::new(None);
        let flush = async {
            loop {
                slot.reported.notified().await;
                if let Some(progress) = slot.take() {
                    *lock(&writing) = Some(progress.clone());
                    self.write(to, &progress).await;
                    *lock(&writing) = None;
                }
                tokio::time::sleep(FLUSH_EVERY).await;
            }
        };
        let ended = tokio::select! {
            ended = job => ended,
            () = flush => unreachable!("flushing ends only with the job"),
        };
        if let Some(progress) = slot.take().or_else(|| lock(&writing).take()) {
            self.write(to, &progress).await;
        }
        ended
    }

    /// Stores `progress` on the job and publishes it as a `progress` event.
    async fn write(&self, to: &ProgressTarget, progress: &Progress) {
        let json = serde_json::to_string(progress).unwrap_or_default();
        let channel = format!("{HOST_CHANNEL_PREFIX}{}", to.job);
        // Stored and published: the report goes out twice.
        let _room = self.writes.room(2 * json.len() + channel.len()).await;
        let stored: redis::RedisResult<()> = self
            .store
            .key(to.keys.job(&to.job))
            .arg(&json)
            .invoke_timed("store_progress", &mut self.writes.queue().connection())
            .await;
        let published = match stored {
            Ok(()) => self
                .writes
                .events()
                .publish(&to.tenant, &channel, "progress", &json)
                .await
                .map(drop),
            Err(err) => Err(err.into()),
        };
        if let Err(err) = published {
            tracing::warn!(job = %to.job, "storing progress failed: {err:#}");
        }
    }
}
