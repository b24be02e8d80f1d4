//! Storing attempts' outcomes: batched per queue, fenced by attempt and entry, kept and sent
//! again while Redis refuses them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use taskbox_runtime::{JobError, JobReport};
use tokio::sync::{mpsc, oneshot};

use super::{RETRY_FIRST, RETRY_MOST, Worker};
use crate::events::{JobEvent, JobEventKind};
use crate::metrics::{AttemptEnd, JobSeries, metrics};
use crate::model::job::{ATTEMPT_ERROR_BYTES, AttemptDetail, Backoff, JobStatus};
use crate::queue::{Delivery, Ending, FinishedAttempt, Queue};

/// The most outcomes one script call stores, and the most that wait for the next call; a job
/// whose outcome finds no room waits for it.
pub(super) const OUTCOMES_AT_ONCE: usize = 512;

/// How long storing a batch of outcomes may wait for its reply. Only other outcomes are ahead
/// of it on its connection, but a batch can carry hundreds of results and logs.
pub(super) const OUTCOME_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The writer's answer to one outcome: the job's new status (`None` when the attempt was
/// stale and refused), or the outcome handed back because Redis did not take it.
pub(super) type Stored = oneshot::Sender<Result<Option<JobStatus>, NotStored>>;

/// An outcome Redis did not take, handed back to be sent again.
pub(super) struct NotStored {
    outcome: FinishedAttempt,
    error: anyhow::Error,
    /// Redis refused it because it reached its `maxmemory`.
    out_of_memory: bool,
}

/// Stores outcomes in batches: while one batch is being written, the next one gathers. The
/// writer stores whatever outcomes are ready with one script call per queue, and answers each
/// through its [`Stored`].
pub(super) async fn store_outcomes(
    queue: Queue,
    mut outcomes: mpsc::Receiver<(FinishedAttempt, Stored)>,
) {
    let mut batch = Vec::with_capacity(OUTCOMES_AT_ONCE);
    while outcomes.recv_many(&mut batch, OUTCOMES_AT_ONCE).await > 0 {
        let mut by_queue: HashMap<String, (Vec<FinishedAttempt>, Vec<Stored>)> = HashMap::new();
        for (outcome, stored) in batch.drain(..) {
            let (outcomes, answers) = by_queue.entry(outcome.partition.clone()).or_default();
            outcomes.push(outcome);
            answers.push(stored);
        }
        for (name, (outcomes, answers)) in by_queue {
            match queue.finish_batch(&name, &outcomes).await {
                Ok(statuses) => {
                    count_outcomes(&queue, &name, &statuses).await;
                    for (stored, status) in answers.into_iter().zip(statuses) {
                        let _ = stored.send(Ok(status));
                    }
                }
                Err(err) => {
                    let out_of_memory = crate::store::is_out_of_memory(&err);
                    for (outcome, stored) in outcomes.into_iter().zip(answers) {
                        let error = anyhow::anyhow!("storing the outcome failed: {err:#}");
                        let _ = stored.send(Err(NotStored {
                            outcome,
                            error,
                            out_of_memory,
                        }));
                    }
                }
            }
        }
    }
}

/// Adds stored outcomes to the queue's per-minute throughput counters.
async fn count_outcomes(queue: &Queue, name: &str, statuses: &[Option<JobStatus>]) {
    let completed = statuses
        .iter()
        .filter(|status| **status == Some(JobStatus::Completed))
        .count();
    let failed = statuses
        .iter()
        .filter(|status| matches!(status, Some(JobStatus::Retrying | JobStatus::Dead)))
        .count();
    if completed + failed == 0 {
        return;
    }
    if let Err(err) = queue.count_finished(name, completed, failed).await {
        tracing::warn!("counting finished jobs failed: {err}");
    }
}

impl Worker {
    /// Stores an attempt's outcome and counts it, in the worker's stats and in `series`.
    pub(super) async fn finish(
        &self,
        delivery: &Delivery,
        attempt: u32,
        report: JobReport,
        backoff: &Backoff,
        series: Option<&JobSeries>,
    ) -> anyhow::Result<()> {
        let kind = match &report.outcome {
            Ok(_) => "completed",
            Err(err) => err.kind(),
        };
        tracing::Span::current().record("outcome", kind);
        let outcome = self.outcome(delivery, attempt, report, backoff)?;
        let failure = (outcome.ending == Ending::Failed).then(|| Failure {
            kind: outcome.error_kind.clone(),
            message: error_message(&outcome.payload),
            retry_in: outcome.retry_in,
        });
        let counter = match self.store(outcome).await? {
            None => {
                tracing::warn!(job = %delivery.job, attempt, "outcome refused: a newer attempt owns the job");
                metrics().stale_outcome();
                &self.stats.stale_rejected
            }
            Some(status) => {
                let end = match status {
                    JobStatus::Completed => Some(AttemptEnd::Completed),
                    JobStatus::Retrying => Some(AttemptEnd::Retrying),
                    JobStatus::Dead => Some(AttemptEnd::Dead),
                    // Handed back at shutdown: not an outcome.
                    JobStatus::Pending => None,
                    _ => Some(AttemptEnd::Other),
                };
                if let (Some(series), Some(end)) = (series, end) {
                    metrics().stored(series, kind, end);
                }
                if let Some(failure) = failure {
                    self.announce(delivery, status, failure).await;
                }
                self.counter(status)
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Publishes a stored failure on its tenant's jobs channel: `job.retrying` or
    /// `job.failed`. An event that cannot be published is logged, not retried: the job's
    /// record says the same.
    async fn announce(&self, delivery: &Delivery, status: JobStatus, failure: Failure) {
        let kind = match status {
            JobStatus::Retrying => JobEventKind::Retrying,
            JobStatus::Dead => JobEventKind::Failed,
            _ => return,
        };
        let published = async {
            let Some(job) = self.queue.job(&delivery.job).await? else {
                return Ok(());
            };
            let event = JobEvent {
                error_kind: Some(failure.kind),
                error: Some(failure.message),
                retry_in_ms: failure
                    .retry_in
                    .filter(|_| kind == JobEventKind::Retrying)
                    .map(|delay| delay.as_millis() as u64),
                worker: Some(self.config.id.clone()),
                ..JobEvent::of(&job)
            };
            self.queue
                .events()
                .job_event(&job.tenant, kind, &event)
                .await
                .map(drop)
        };
        if let Err(err) = published.await {
            tracing::warn!(job = %delivery.job, "publishing {} failed: {err:#}", kind.name());
        }
    }

    /// What `finish_batch.lua` is to store of an attempt's report.
    fn outcome(
        &self,
        delivery: &Delivery,
        attempt: u32,
        report: JobReport,
        backoff: &Backoff,
    ) -> anyhow::Result<FinishedAttempt> {
        let (ending, payload, error_kind, retry_in) = match &report.outcome {
            Ok(output) => (Ending::Completed, output.clone(), String::new(), None),
            Err(JobError::Cancelled) if self.releasing.load(Ordering::SeqCst) => {
                (Ending::Released, Vec::new(), String::new(), None)
            }
            Err(err @ JobError::Cancelled) => (
                Ending::Cancelled,
                error_json(err),
                err.kind().to_owned(),
                None,
            ),
            Err(err) => {
                let retry_in = match err {
                    err if !err.is_retryable() => None,
                    JobError::TaskError {
                        retry_after_ms: Some(after),
                        ..
                    } => Some(Duration::from_millis(*after)),
                    _ => Some(backoff.delay(attempt, rand::random::<f64>())),
                };
                (
                    Ending::Failed,
                    error_json(err),
                    err.kind().to_owned(),
                    retry_in,
                )
            }
        };
        let detail = AttemptDetail {
            worker: self.config.id.clone(),
            error_kind: Some(error_kind.clone()).filter(|kind| !kind.is_empty()),
            error: report.outcome.as_ref().err().map(|err| {
                taskbox_runtime::guest_text::truncate(err.to_string(), ATTEMPT_ERROR_BYTES)
            }),
            fuel_used: Some(report.stats.fuel_used),
            wall_time_ms: Some(report.stats.wall_time.as_millis() as u64),
            peak_memory: Some(report.stats.peak_memory),
        };
        Ok(FinishedAttempt {
            partition: delivery.partition.clone(),
            priority: delivery.priority,
            entry: delivery.entry.clone(),
            job: delivery.job.clone(),
            attempt,
            ending,
            payload,
            error_kind,
            retry_in,
            log: report.log,
            stats: serde_json::to_string(&report.stats)?,
            timeline: serde_json::to_string(&detail)?,
            progress: match &report.progress {
                Some(progress) => serde_json::to_string(progress)?,
                None => String::new(),
            },
        })
    }

    /// Hands `outcome` to the writer until it is stored, and returns the job's new status
    /// (`None` when the attempt was stale). While Redis fails it tries again with capped
    /// backoff, the entry still held, so that no other worker runs the job again; it gives up
    /// only when handing jobs back after a shutdown's grace period.
    async fn store(&self, mut outcome: FinishedAttempt) -> anyhow::Result<Option<JobStatus>> {
        let mut retry_in = RETRY_FIRST;
        loop {
            let (stored, status) = oneshot::channel();
            self.outcomes
                .send((outcome, stored))
                .await
                .map_err(|_| anyhow::anyhow!("the outcome writer stopped"))?;
            let not_stored = match status.await? {
                Ok(status) => {
                    if self.redis_full.send_replace(false) {
                        tracing::info!("Redis took an outcome again: taking new jobs again");
                    }
                    return Ok(status);
                }
                Err(not_stored) if self.releasing.load(Ordering::SeqCst) => {
                    return Err(not_stored.error);
                }
                Err(not_stored) => not_stored,
            };
            let (job, attempt) = (&not_stored.outcome.job, not_stored.outcome.attempt);
            if not_stored.out_of_memory {
                if !self.redis_full.send_replace(true) {
                    tracing::warn!(
                        "Redis is full (it reached its maxmemory): taking no new jobs until it \
                         stores outcomes again"
                    );
                }
                tracing::warn!(%job, attempt, "Redis is full, so the outcome waits here, the job still held; trying again in {retry_in:?}");
            } else {
                tracing::warn!(%job, attempt, "{:#}; trying again in {retry_in:?}", not_stored.error);
            }
            outcome = not_stored.outcome;
            tokio::time::sleep(retry_in).await;
            retry_in = (retry_in * 2).min(RETRY_MOST);
        }
    }

    /// The counter of a stored outcome's new status.
    fn counter(&self, status: JobStatus) -> &AtomicU64 {
        match status {
            JobStatus::Completed => &self.stats.completed,
            JobStatus::Pending => &self.stats.released,
            _ => &self.stats.failed,
        }
    }
}

/// An attempt's failure, as its event tells it.
struct Failure {
    kind: String,
    message: String,
    retry_in: Option<Duration>,
}

/// The message of an error as stored, cut for an event.
fn error_message(payload: &[u8]) -> String {
    let message = serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|error| error.get("message")?.as_str().map(crate::events::shown));
    message.unwrap_or_default()
}

/// A job's error as stored: its kind and fields, and its message.
fn error_json(err: &JobError) -> Vec<u8> {
    let mut value = serde_json::to_value(err).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.insert("message".into(), err.to_string().into());
    }
    value.to_string().into_bytes()
}
