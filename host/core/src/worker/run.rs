//! Running a started job: a task of its own, a fresh sandbox, the grants and limits of its
//! module.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use taskbox_runtime::trace::TraceParent;
use taskbox_runtime::{CancelHandle, JobError, JobInfo, JobReport, JobRequest, Limits};
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument as _;

use super::Worker;
use crate::grants::JobContext;
use crate::metrics::metrics;
use crate::model::unix_millis;
use crate::progress::{ProgressSlot, ProgressTarget};
use crate::queue::{Delivery, StartedJob};
use crate::store::keys;

impl Worker {
    /// Runs each started job in a task of its own, with one of `permits`, holding its entry
    /// until its outcome is stored; lets go of the entries of the rest. Returns how many ran.
    pub(super) fn launch(
        self: &Arc<Self>,
        taken: Vec<(Delivery, Option<StartedJob>)>,
        permits: &mut Vec<OwnedSemaphorePermit>,
    ) -> usize {
        let mut launched = 0;
        for (delivery, started) in taken {
            let (Some(started), Some(permit)) = (started, permits.pop()) else {
                self.unhold(&delivery);
                continue;
            };
            self.hold(&delivery);
            let cancel = self.register(&delivery.job);
            let worker = Arc::clone(self);
            metrics().slot_busy(true);
            tokio::spawn(async move {
                let span = tracing::info_span!(
                    "job.run",
                    job.id = %delivery.job,
                    tenant = %started.tenant,
                    task = %started.task,
                    attempt = started.attempt,
                    queue = keys::queue_of_tag(&delivery.partition),
                    fuel = tracing::field::Empty,
                    outcome = tracing::field::Empty,
                );
                if let Some(trace) = &started.trace {
                    trace.adopt(&span);
                }
                let run = worker.run_job(&delivery, started, cancel);
                if let Err(err) = run.instrument(span).await {
                    tracing::warn!(job = %delivery.job, "job not finished, it will run again: {err:#}");
                }
                worker.unhold(&delivery);
                worker.running().forget(&delivery.job);
                metrics().slot_busy(false);
                drop(permit);
            });
            launched += 1;
        }
        launched
    }

    /// Runs one attempt in a fresh sandbox and stores its outcome.
    pub(super) async fn run_job(
        &self,
        delivery: &Delivery,
        started: StartedJob,
        cancel: CancelHandle,
    ) -> anyhow::Result<()> {
        let queue = keys::queue_of_tag(&delivery.partition);
        let series = metrics().job(&started.tenant, queue, &started.task);
        if let Some(series) = &series {
            let due = started.run_at.max(started.created_at);
            let waited =
                (started.attempt == 1).then(|| unix_millis(SystemTime::now()).saturating_sub(due));
            metrics().started(series, waited.map(Duration::from_millis));
        }
        let trace = TraceParent::of_or(&tracing::Span::current(), started.trace);
        let context = JobContext {
            id: delivery.job.clone(),
            tenant: started.tenant,
            module: started.module,
            version: started.version,
            depth: started.depth,
        };
        let loaded = match self.module(&started.digest).await {
            Ok(_) if !started.unreadable.is_empty() => {
                let fields = started.unreadable.join("`, `");
                tracing::warn!(job = %delivery.job, "the job's stored `{fields}` cannot be read, so it does not run");
                Err(JobError::Internal {
                    message: format!("the job's stored `{fields}` cannot be read"),
                })
            }
            Ok(module) => self
                .grants
                .for_job(&context)
                .await
                .map(|grants| (module, grants)),
            Err(err) => Err(err),
        };
        let report = match loaded {
            Ok((module, grants)) => {
                let slot = Arc::new(ProgressSlot::default());
                let request = JobRequest {
                    task: started.task,
                    input: started.input,
                    info: JobInfo {
                        id: delivery.job.clone(),
                        module: context.module,
                        attempt: started.attempt,
                        max_attempts: started.max_attempts,
                        queue: queue.to_owned(),
                        enqueued_at: UNIX_EPOCH + Duration::from_millis(started.created_at),
                        traceparent: trace,
                    },
                    limits: grants.limits.narrow(Limits {
                        timeout: started.timeout.unwrap_or(self.config.limits.timeout),
                        fuel: started.fuel.unwrap_or(self.config.limits.fuel),
                        memory: started.memory.unwrap_or(self.config.limits.memory),
                        ..self.config.limits
                    }),
                    cancel,
                    progress: Some(slot.sink()),
                    capabilities: grants.capabilities,
                };
                let to = ProgressTarget {
                    keys: self.queue.keys(&delivery.partition),
                    job: delivery.job.clone(),
                    tenant: context.tenant,
                };
                // Boxed: the sandbox's future is about 10 KiB, and inline it made every job's
                // task that much bigger, copied as it was spawned (8 µs of CPU per job).
                let run = Box::pin(self.runtime.run(&module, request));
                self.progress.while_running(&to, &slot, run).await
            }
            Err(err) => JobReport {
                outcome: Err(err),
                stats: Default::default(),
                log: String::new(),
                progress: None,
            },
        };
        tracing::Span::current().record("fuel", report.stats.fuel_used);
        if let Some(series) = &series {
            metrics().ran(series, &report.stats);
        }
        self.finish(
            delivery,
            started.attempt,
            report,
            &started.backoff,
            series.as_deref(),
        )
        .await
    }
}
