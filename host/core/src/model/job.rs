//! Jobs as the queue stores them.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The largest job input accepted by default: 1 MiB.
pub const DEFAULT_MAX_INPUT: usize = 1 << 20;

/// Where a job is in its life.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Queued, waiting for a worker.
    Pending,
    /// Waiting for its `run_at` time.
    Scheduled,
    /// A worker is running it.
    Running,
    /// Failed; waiting for its retry.
    Retrying,
    /// Finished with a result.
    Completed,
    /// Failed for good: in the dead letters.
    Dead,
    /// Cancelled.
    Cancelled,
    /// Stored with a status this version of taskbox does not know (written by a newer one, or
    /// damaged). Such a job is still listed and shown, so that nothing drops out of view.
    Unknown,
}

impl JobStatus {
    /// Every status, in the order of a job's life.
    pub const ALL: [JobStatus; 8] = [
        Self::Pending,
        Self::Scheduled,
        Self::Running,
        Self::Retrying,
        Self::Completed,
        Self::Dead,
        Self::Cancelled,
        Self::Unknown,
    ];

    /// Whether the job has finished (and will change no more on its own).
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Completed | Self::Dead | Self::Cancelled)
    }

    /// The status's name, as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Scheduled => "scheduled",
            Self::Running => "running",
            Self::Retrying => "retrying",
            Self::Completed => "completed",
            Self::Dead => "dead",
            Self::Cancelled => "cancelled",
            Self::Unknown => "unknown",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
        .ok_or_else(|| format!("unknown job status `{s}` (pending, scheduled, running, retrying, completed, dead, cancelled, unknown)"))
    }
}

/// Which of a queue's streams a job goes to; workers take high before normal before low.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Taken first.
    High,
    /// The default.
    #[default]
    Normal,
    /// Taken last.
    Low,
}

impl Priority {
    /// Most urgent first.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    /// 0 for high, 1 for normal, 2 for low: the order workers take them in.
    pub(crate) fn rank(self) -> usize {
        self as usize
    }

    /// The priority's name, as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::High => "high",
            Self::Normal => "normal",
            Self::Low => "low",
        }
    }
}

impl FromStr for Priority {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|priority| priority.as_str() == s)
            .ok_or_else(|| format!("unknown priority `{s}` (high, normal, low)"))
    }
}

/// How long to wait before each retry: exponential from `base`, capped at `max`, plus up to
/// `jitter` (a fraction of the delay) at random so that failed jobs do not retry in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    /// The delay before the first retry.
    pub base: Duration,
    /// The longest delay.
    pub max: Duration,
    /// The random extra, as a fraction of the delay (0.0 to 1.0).
    pub jitter: f64,
}

impl Default for Backoff {
    /// 2 s, doubling up to 5 min, plus up to 25% jitter (Celery's `retry_backoff` with
    /// `retry_jitter`).
    fn default() -> Self {
        Self {
            base: Duration::from_secs(2),
            max: Duration::from_secs(300),
            jitter: 0.25,
        }
    }
}

impl Backoff {
    /// The nominal delay after failed attempt `attempt` (1-based), before jitter.
    pub fn nominal(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(31));
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The delay to wait: the nominal delay plus `random` (0.0 to 1.0) times the jitter.
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let nominal = self.nominal(attempt);
        nominal + nominal.mul_f64(self.jitter.clamp(0.0, 1.0) * random.clamp(0.0, 1.0))
    }
}

/// One job as stored, with everything known about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobRecord {
    /// The job id.
    pub id: String,
    /// The queue.
    pub queue: String,
    /// The tenant that enqueued it.
    pub tenant: String,
    /// The module's name.
    pub module: String,
    /// The module version it resolved to at enqueue time.
    pub version: Option<String>,
    /// The digest of that version.
    pub digest: String,
    /// The task.
    pub task: String,
    /// Where the job is.
    pub status: JobStatus,
    /// Attempts started so far.
    pub attempt: u32,
    /// Attempts allowed in all.
    pub max_attempts: u32,
    /// The stream it goes to.
    pub priority: Priority,
    /// The result, once completed (UTF-8 text where it is; see `result_base64` otherwise).
    #[serde(skip)]
    pub result: Option<Vec<u8>>,
    /// The last error, as the worker recorded it (`{"kind": ..., ...}`).
    #[schema(value_type = Object)]
    pub error: Option<serde_json::Value>,
    /// The job's log from its last attempt.
    pub log: Option<String>,
    /// The latest progress (`{"percent": .., "message": ..}`).
    #[schema(value_type = Object)]
    pub progress: Option<serde_json::Value>,
    /// What the last attempt consumed.
    #[schema(value_type = Object)]
    pub stats: Option<serde_json::Value>,
    /// Caller metadata, stored as given.
    #[schema(value_type = Object)]
    pub metadata: Option<serde_json::Value>,
    /// How often the job was retried from the dead letters.
    pub dead_retries: u32,
    /// Times, in ms since the Unix epoch.
    pub created_at: u64,
    /// When it is (or was) due.
    pub run_at: Option<u64>,
    /// When its last attempt started.
    pub started_at: Option<u64>,
    /// When it finished.
    pub finished_at: Option<u64>,
    /// The worker of its last attempt.
    pub worker: Option<String>,
    /// The job that enqueued it, if a job did.
    pub parent: Option<String>,
    /// How many jobs up its chain goes: 0 for a job enqueued from outside.
    pub depth: u32,
    /// Its entry in the dead-letter stream, while it is dead.
    #[serde(skip)]
    pub dead_entry: Option<String>,
    /// Its attempts, first to last (of the series since its last retry from the dead
    /// letters).
    pub attempts: Vec<AttemptRecord>,
    /// Whether its input, result and log are gone: a finished job keeps them for the result
    /// retention (24 h) and the rest of its record for the history retention (7 days).
    pub results_expired: bool,
}

/// One attempt of a job, as its timeline keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttemptRecord {
    /// Its number, from 1.
    #[serde(default)]
    pub attempt: u32,
    /// How it ended: `completed`, `failed`, `cancelled` or `worker_lost` (its worker stopped
    /// heartbeating and another took the job over).
    pub outcome: String,
    /// When it started and ended, in ms since the Unix epoch.
    pub started_at: u64,
    /// When it ended.
    pub ended_at: u64,
    /// What the worker that ran it told of it.
    #[serde(flatten)]
    pub detail: AttemptDetail,
}

/// What a worker tells of an attempt it ran, for the job's timeline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttemptDetail {
    /// The worker.
    pub worker: String,
    /// The error's kind, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    /// The error's message, cut to [`ATTEMPT_ERROR_BYTES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Fuel units burned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel_used: Option<u64>,
    /// Wall time, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_time_ms: Option<u64>,
    /// The most linear memory it had at once, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory: Option<u64>,
}

/// The most of an attempt's error message its timeline keeps, in bytes: the job's `error`
/// keeps the last one whole (up to the host's `max_error_size`), and a job has up to its
/// `max_attempts` entries.
pub const ATTEMPT_ERROR_BYTES: usize = 512;

/// The job-hash field of attempt `n`'s timeline entry.
pub(crate) fn attempt_field(n: u32) -> String {
    format!("attempt:{n}")
}

impl JobRecord {
    pub(crate) fn from_hash(
        queue: &str,
        id: &str,
        mut hash: HashMap<String, Vec<u8>>,
    ) -> Option<Self> {
        // An empty hash is a job that has expired; anything else is a job, whatever it holds.
        if hash.is_empty() {
            return None;
        }
        let mut text = |field: &str| {
            hash.remove(field)
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        };
        let status = text("status")
            .and_then(|status| status.parse().ok())
            .unwrap_or(JobStatus::Unknown);
        let number = |value: Option<String>| value.and_then(|v| v.parse::<u64>().ok());
        let json = |value: Option<String>| value.and_then(|v| serde_json::from_str(&v).ok());
        let record = Self {
            id: id.to_owned(),
            queue: queue.to_owned(),
            tenant: text("tenant").unwrap_or_default(),
            module: text("module").unwrap_or_default(),
            version: text("version"),
            digest: text("digest").unwrap_or_default(),
            task: text("task").unwrap_or_default(),
            status,
            attempt: number(text("attempt")).unwrap_or(0) as u32,
            max_attempts: number(text("max_attempts")).unwrap_or(1) as u32,
            priority: text("priority")
                .and_then(|p| p.parse().ok())
                .unwrap_or_default(),
            result: None,
            error: json(text("error")),
            log: text("log"),
            progress: json(text("progress")),
            stats: json(text("stats")),
            metadata: json(text("metadata")),
            dead_retries: number(text("dead_retries")).unwrap_or(0) as u32,
            created_at: number(text("created_at")).unwrap_or(0),
            run_at: number(text("run_at")),
            started_at: number(text("started_at")),
            finished_at: number(text("finished_at")),
            worker: text("worker"),
            parent: text("parent"),
            depth: number(text("depth")).unwrap_or(0) as u32,
            dead_entry: text("dead_entry"),
            attempts: Vec::new(),
            results_expired: false,
        };
        let attempts = (1..=record.attempt)
            .filter_map(|n| {
                let entry = hash.remove(&attempt_field(n))?;
                let entry: AttemptRecord = serde_json::from_slice(&entry).ok()?;
                Some(AttemptRecord {
                    attempt: n,
                    ..entry
                })
            })
            .collect();
        Some(Self {
            results_expired: record.status.is_finished() && !hash.contains_key("input"),
            result: hash.remove("result"),
            attempts,
            ..record
        })
    }

    /// The error's kind (`timeout`, `task_error`, ...), if the job failed.
    pub fn error_kind(&self) -> Option<&str> {
        self.error.as_ref()?.get("kind")?.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_only_adds() {
        let backoff = Backoff::default();
        assert_eq!(backoff.nominal(1), Duration::from_secs(2));
        assert_eq!(backoff.nominal(2), Duration::from_secs(4));
        assert_eq!(backoff.nominal(9), Duration::from_secs(300));
        assert_eq!(backoff.nominal(60), Duration::from_secs(300));
        assert_eq!(backoff.delay(2, 0.0), Duration::from_secs(4));
        assert_eq!(backoff.delay(2, 1.0), Duration::from_secs(5));
    }
}
