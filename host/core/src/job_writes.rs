//! The Redis writes running jobs cause: their events, the jobs they enqueue, their progress.
//!
//! A guest decides how many of these it makes and how large they are, so a worker sends them
//! on a connection of their own, never the one its API, promoter, heartbeats and job starts
//! use, and lets no more than [`JOB_WRITES_IN_FLIGHT`] bytes of them be under way at once. A
//! job that floods waits inside its own host call, on its own wall clock, for room; what is
//! under way stays small enough that no write waits long behind the others.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use taskbox_runtime::events::EventBus;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::events::Events;
use crate::queue::{EnqueueError, Enqueued, NewJob, Queue};

/// The most bytes of job-caused writes one worker has under way to Redis at once. A single
/// write larger than this (an operator may allow larger events) goes alone.
pub const JOB_WRITES_IN_FLIGHT: usize = 1 << 20;

/// How long a job-caused write may wait for its reply. Nothing but the other job-caused writes
/// under way, at most [`JOB_WRITES_IN_FLIGHT`] bytes, is ahead of it on its connection, so a
/// wait this long means Redis or the network is failing, not that the write queued.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Carries the writes of one worker's jobs.
#[derive(Debug, Clone)]
pub(crate) struct JobWrites {
    queue: Queue,
    events: Events,
    in_flight: Arc<Semaphore>,
}

impl JobWrites {
    /// Writes for jobs run from `queue`, on a connection of their own.
    pub(crate) fn new(queue: &Queue) -> Self {
        let queue = queue.with_own_connection(REPLY_TIMEOUT);
        Self {
            events: Events::new(queue.store().clone()),
            queue,
            in_flight: Arc::new(Semaphore::new(JOB_WRITES_IN_FLIGHT)),
        }
    }

    /// The queue on the connection of job-caused writes.
    pub(crate) fn queue(&self) -> &Queue {
        &self.queue
    }

    /// The events, on the connection of job-caused writes.
    pub(crate) fn events(&self) -> &Events {
        &self.events
    }

    /// Waits until `bytes` more may be under way; they count until the permit drops. Waiters
    /// are served in turn, so a flooding job cannot keep another job's write waiting.
    pub(crate) async fn room(&self, bytes: usize) -> SemaphorePermit<'_> {
        let wanted = bytes.clamp(1, JOB_WRITES_IN_FLIGHT);
        self.in_flight
            .acquire_many(u32::try_from(wanted).expect("the budget fits in u32"))
            .await
            .expect("the budget is never closed")
    }

    /// Publishes a job's event once there is room for it.
    pub(crate) async fn publish(
        &self,
        tenant: &str,
        channel: &str,
        event: &str,
        data: &str,
    ) -> anyhow::Result<String> {
        let _room = self.room(channel.len() + event.len() + data.len()).await;
        self.events.publish(tenant, channel, event, data).await
    }

    /// Enqueues a job a job asks for once there is room for its input.
    pub(crate) async fn enqueue(
        &self,
        tenant: &str,
        job: NewJob,
    ) -> Result<Enqueued, EnqueueError> {
        let _room = self.room(job.input.len()).await;
        self.queue.enqueue(tenant, job).await
    }
}

/// The event bus of one tenant's jobs.
#[derive(Debug, Clone)]
pub(crate) struct TenantBus {
    writes: JobWrites,
    tenant: String,
}

impl TenantBus {
    /// The bus of `tenant`'s jobs, publishing as job-caused writes.
    pub(crate) fn new(writes: JobWrites, tenant: &str) -> Self {
        Self {
            writes,
            tenant: tenant.to_owned(),
        }
    }
}

impl EventBus for TenantBus {
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        event: &'a str,
        data: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            self.writes
                .publish(&self.tenant, channel, event, data)
                .await
                .map(drop)
                .map_err(|err| format!("{err:#}"))
        })
    }
}
