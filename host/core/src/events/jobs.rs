//! The host's events about jobs that fail and are retried, on each tenant's channel
//! [`JOBS_CHANNEL`]: `job.retrying` when an attempt failed and another follows, `job.failed`
//! when a job failed for good (it is dead), and `job.retried` when someone gives a dead job a
//! new series of attempts. Whoever watches a tenant's failures follows one channel, over SSE
//! or `taskbox events`, and replays what it missed as on any channel.

use serde::Serialize;

use super::Events;
use crate::model::job::JobRecord;

/// The channel of a tenant's job failures and retries. It is under the host's prefix
/// (`job:`), where guests may not publish, so no guest can forge one.
pub const JOBS_CHANNEL: &str = "job:events";

/// The most of an error's message an event carries: the rest is on the job.
pub const ERROR_SHOWN: usize = 1024;

/// Which of the three.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEventKind {
    /// An attempt failed; another follows after `retry_in_ms`.
    Retrying,
    /// The job failed for good: it is in the dead letters.
    Failed,
    /// A dead job was given a new series of attempts.
    Retried,
}

impl JobEventKind {
    /// The event's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Retrying => "job.retrying",
            Self::Failed => "job.failed",
            Self::Retried => "job.retried",
        }
    }
}

/// What a job event says, as its JSON data.
#[derive(Debug, Clone, Serialize)]
pub struct JobEvent {
    /// The job.
    pub id: String,
    /// Its queue.
    pub queue: String,
    /// Its module.
    pub module: String,
    /// Its task.
    pub task: String,
    /// The attempt that failed (for `job.retried`, the last one before it died).
    pub attempt: u32,
    /// The attempts it may make in a series.
    pub max_attempts: u32,
    /// The error's kind (`trap`, `out_of_fuel`, `task_error`, ...), for a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    /// The error's message, its first [`ERROR_SHOWN`] bytes, for a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the next attempt is due, for `job.retrying`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
    /// The worker that ran the failed attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

impl JobEvent {
    /// The event of `job` as stored, without the failure's details.
    pub fn of(job: &JobRecord) -> Self {
        Self {
            id: job.id.clone(),
            queue: job.queue.clone(),
            module: job.module.clone(),
            task: job.task.clone(),
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            error_kind: None,
            error: None,
            retry_in_ms: None,
            worker: None,
        }
    }
}

/// `message`, cut to [`ERROR_SHOWN`] bytes on a character boundary.
pub(crate) fn shown(message: &str) -> String {
    let mut end = message.len().min(ERROR_SHOWN);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message[..end].to_owned()
}

impl Events {
    /// Publishes `event` as `kind` on `tenant`'s [`JOBS_CHANNEL`].
    pub async fn job_event(
        &self,
        tenant: &str,
        kind: JobEventKind,
        event: &JobEvent,
    ) -> anyhow::Result<String> {
        self.publish(
            tenant,
            JOBS_CHANNEL,
            kind.name(),
            &serde_json::to_string(event)?,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::{ERROR_SHOWN, shown};

    #[test]
    fn an_events_error_is_cut_on_a_character_boundary() {
        let long = "é".repeat(ERROR_SHOWN);
        let cut = shown(&long);
        assert!(cut.len() <= ERROR_SHOWN && cut.len() >= ERROR_SHOWN - 1);
        assert_eq!(shown("short"), "short");
    }
}
