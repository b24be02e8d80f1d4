//! Storing attempts' outcomes: batched per queue, fenced by attempt and entry, kept and sent
//! again while Redis refuses them.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use taskbox_runtime::{JobError, JobReport};
use tokio::sync::{mpsc, oneshot};

use super::fetch::Delivery;
use super::{RETRY_FIRST, RETRY_MOST, Worker};
use crate::queue::{Backoff, GROUP, MAX_RETRY_DELAY, Priority, Queue, unix_millis};

/// How long per-minute throughput counters are kept.
pub(super) const COUNTER_RETENTION: Duration = Duration::from_secs(3600);

/// The most outcomes one script call stores, and the most that wait for the next call; a job
/// whose outcome finds no room waits for it.
pub(super) const OUTCOMES_AT_ONCE: usize = 512;

/// How long storing a batch of outcomes may wait for its reply. Only other outcomes are ahead
/// of it on its connection, but a batch can carry hundreds of results and logs.
pub(super) const OUTCOME_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// An attempt's outcome on its way to Redis. The writer stores whatever outcomes are ready
/// with one script call per queue, and answers each through its [`Stored`].
pub(super) struct Outcome {
    queue: String,
    priority: Priority,
    entry: String,
    job: String,
    attempt: u32,
    outcome: &'static str,
    payload: Vec<u8>,
    kind: String,
    retry_delay: i64,
    log: String,
    stats: String,
    progress: String,
}

/// The writer's answer to one outcome: the job's new status (`None` when the attempt was
/// stale and refused), or the outcome handed back because Redis did not take it.
pub(super) type Stored = oneshot::Sender<Result<Option<String>, NotStored>>;

/// An outcome Redis did not take, handed back to be sent again.
pub(super) struct NotStored {
    outcome: Outcome,
    error: anyhow::Error,
    /// Redis refused it because it reached its `maxmemory`.
    out_of_memory: bool,
}

/// Stores outcomes in batches: while one batch is being written, the next one gathers.
pub(super) async fn store_outcomes(queue: Queue, mut outcomes: mpsc::Receiver<(Outcome, Stored)>) {
    let mut batch = Vec::with_capacity(OUTCOMES_AT_ONCE);
    while outcomes.recv_many(&mut batch, OUTCOMES_AT_ONCE).await > 0 {
        let mut by_queue: HashMap<String, (Vec<Outcome>, Vec<Stored>)> = HashMap::new();
        for (outcome, stored) in batch.drain(..) {
            let (outcomes, answers) = by_queue.entry(outcome.queue.clone()).or_default();
            outcomes.push(outcome);
            answers.push(stored);
        }
        for (name, (outcomes, answers)) in by_queue {
            match finish_batch(&queue, &name, &outcomes).await {
                Ok(statuses) => {
                    count_outcomes(&queue, &name, &statuses).await;
                    for (stored, status) in answers.into_iter().zip(statuses) {
                        let _ = stored.send(Ok(status));
                    }
                }
                Err(err) => {
                    let out_of_memory = crate::queue::is_out_of_memory(&err);
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
pub(super) async fn count_outcomes(queue: &Queue, name: &str, statuses: &[Option<String>]) {
    let completed = statuses
        .iter()
        .filter(|status| status.as_deref() == Some("completed"))
        .count();
    let failed = statuses
        .iter()
        .filter(|status| matches!(status.as_deref(), Some("retrying" | "dead")))
        .count();
    if completed + failed == 0 {
        return;
    }
    let minute = unix_millis(SystemTime::now()) / 60_000;
    let key = queue.keys(name).counts(minute);
    let counted: redis::RedisResult<()> = redis::pipe()
        .hincr(&key, "completed", completed)
        .ignore()
        .hincr(&key, "failed", failed)
        .ignore()
        .expire(&key, COUNTER_RETENTION.as_secs() as i64)
        .ignore()
        .query_async(&mut queue.connection())
        .await;
    if let Err(err) = counted {
        tracing::warn!("counting finished jobs failed: {err}");
    }
}

/// Stores `outcomes`, all of queue `name`, with one script call; one status per outcome.
pub(super) async fn finish_batch(
    queue: &Queue,
    name: &str,
    outcomes: &[Outcome],
) -> anyhow::Result<Vec<Option<String>>> {
    let keys = queue.keys(name);
    let [high, normal, low] = keys.streams();
    let mut invocation = queue.scripts_finish_batch().key(keys.delayed());
    invocation
        .key(keys.dead())
        .key(high)
        .key(normal)
        .key(low)
        .arg(GROUP)
        .arg(queue.retention().as_secs())
        .arg(keys.done_channel())
        .arg(keys.job_prefix());
    for outcome in outcomes {
        let stream = 1 + outcome.priority.rank();
        invocation
            .arg(&outcome.entry)
            .arg(stream)
            .arg(&outcome.job)
            .arg(outcome.attempt)
            .arg(outcome.outcome)
            .arg(&outcome.payload)
            .arg(&outcome.kind)
            .arg(outcome.retry_delay)
            .arg(&outcome.log)
            .arg(&outcome.stats)
            .arg(&outcome.progress);
    }
    let replies: Vec<redis::Value> = invocation.invoke_async(&mut queue.connection()).await?;
    replies
        .into_iter()
        .map(|reply| match reply {
            redis::Value::Int(0) => Ok(None),
            reply => Ok(Some(redis::from_redis_value(reply)?)),
        })
        .collect()
}

impl Worker {
    /// Stores an attempt's outcome. While Redis fails it tries again with capped backoff,
    /// the entry still held, so that no other worker runs the job again; it gives up only
    /// when handing jobs back after a shutdown's grace period.
    pub(super) async fn finish(
        &self,
        delivery: &Delivery,
        attempt: u32,
        report: JobReport,
        backoff: &Backoff,
    ) -> anyhow::Result<()> {
        let (name, payload, kind, retry_delay) = match &report.outcome {
            Ok(output) => ("completed", output.clone(), String::new(), -1i64),
            Err(JobError::Cancelled) if self.releasing.load(Ordering::SeqCst) => {
                ("released", Vec::new(), String::new(), -1)
            }
            Err(err @ JobError::Cancelled) => {
                ("cancelled", error_json(err), err.kind().to_owned(), -1)
            }
            Err(err) => {
                let delay = match err {
                    err if !err.is_retryable() => -1,
                    JobError::TaskError {
                        retry_after_ms: Some(after),
                        ..
                    } => retry_delay_ms(Duration::from_millis(*after)),
                    _ => retry_delay_ms(backoff.delay(attempt, rand::random::<f64>())),
                };
                ("failed", error_json(err), err.kind().to_owned(), delay)
            }
        };
        let mut outcome = Outcome {
            queue: delivery.queue.clone(),
            priority: delivery.priority,
            entry: delivery.entry.clone(),
            job: delivery.job.clone(),
            attempt,
            outcome: name,
            payload,
            kind,
            retry_delay,
            log: report.log,
            stats: serde_json::to_string(&report.stats)?,
            progress: match &report.progress {
                Some(progress) => serde_json::to_string(progress)?,
                None => String::new(),
            },
        };
        let mut retry_in = RETRY_FIRST;
        let status = loop {
            let (stored, status) = oneshot::channel();
            self.outcomes
                .send((outcome, stored))
                .await
                .map_err(|_| anyhow::anyhow!("the outcome writer stopped"))?;
            match status.await? {
                Ok(status) => {
                    if self.redis_full.send_replace(false) {
                        tracing::info!("Redis took an outcome again: taking new jobs again");
                    }
                    break status;
                }
                Err(not_stored) if self.releasing.load(Ordering::SeqCst) => {
                    return Err(not_stored.error);
                }
                Err(not_stored) => {
                    if not_stored.out_of_memory {
                        if !self.redis_full.send_replace(true) {
                            tracing::warn!(
                                "Redis is full (it reached its maxmemory): taking no new jobs \
                                 until it stores outcomes again"
                            );
                        }
                        tracing::warn!(job = %delivery.job, attempt, "Redis is full, so the outcome waits here, the job still held; trying again in {retry_in:?}");
                    } else {
                        tracing::warn!(job = %delivery.job, attempt, "{:#}; trying again in {retry_in:?}", not_stored.error);
                    }
                    outcome = not_stored.outcome;
                    tokio::time::sleep(retry_in).await;
                    retry_in = (retry_in * 2).min(RETRY_MOST);
                }
            }
        };
        let counter = match status.as_deref() {
            None => {
                tracing::warn!(job = %delivery.job, attempt, "outcome refused: a newer attempt owns the job");
                &self.stats.stale_rejected
            }
            Some("completed") => &self.stats.completed,
            Some("pending") => &self.stats.released,
            Some(_) => &self.stats.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// A retry's wait in milliseconds for `finish_batch.lua`, no longer than
/// [`MAX_RETRY_DELAY`]: a task's `retry_after` can be any `u64`, and a cast would wrap it
/// negative, which the script reads as "no retry".
pub(super) fn retry_delay_ms(delay: Duration) -> i64 {
    i64::try_from(delay.min(MAX_RETRY_DELAY).as_millis()).unwrap_or(i64::MAX)
}

pub(super) fn error_json(err: &JobError) -> Vec<u8> {
    let mut value = serde_json::to_value(err).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.insert("message".into(), err.to_string().into());
    }
    value.to_string().into_bytes()
}
