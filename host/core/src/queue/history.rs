//! What the queue keeps of finished jobs, and the counts of jobs per state.
//!
//! A finished job's record (who ran it, every attempt with its outcome, fuel, time and peak
//! memory) is kept for the history retention; its input, result and log only for the result
//! retention. Each partition keeps a set of its finished jobs scored by when they finished,
//! `finished`, and a mark of how far along it results were dropped. [`Queue::trim_history`],
//! which workers call every second, drops the results past their retention (moving the mark
//! on) and the records past theirs or past the cap, oldest first. The counts per state
//! are kept by the scripts that change a job's state, so a dashboard reads them instead of
//! scanning jobs.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use redis::AsyncCommands as _;

use crate::metrics::{QueueDepth, QueueDepths};
use crate::model::job::JobStatus;
use crate::model::unix_millis;
use crate::queue::Queue;
use crate::store::TimedInvoke as _;
use crate::store::keys;

/// How long finished jobs' input, result and log are kept by default: 24 hours.
pub const DEFAULT_RESULT_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// How long finished jobs' records are kept by default: 7 days.
pub const DEFAULT_HISTORY_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The most finished jobs' records a queue keeps by default.
pub const DEFAULT_HISTORY_CAP: u64 = 1_000_000;

/// A record nobody trims (no worker runs) still expires this long after the history
/// retention; trimming is what keeps the listing and the counts right.
const RECORD_GRACE: Duration = Duration::from_secs(24 * 3600);

/// Jobs one trimming script call looks at.
const TRIM_AT_ONCE: usize = 500;

/// Script calls one kind of trimming makes per partition per round at most: a worker trims
/// up to 50,000 jobs a second of each partition, more than one worker finishes.
const TRIM_ROUNDS: usize = 100;

/// How long the queue keeps finished jobs' records, and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistorySettings {
    /// How long a finished job's input, result and log are kept.
    pub results: Duration,
    /// How long a finished job's record is kept (its input, result and log go sooner, after
    /// the result retention).
    pub retention: Duration,
    /// The most records a queue keeps (split evenly among its partitions); past it the
    /// oldest go first.
    pub max_per_queue: u64,
}

impl Default for HistorySettings {
    fn default() -> Self {
        Self {
            results: DEFAULT_RESULT_RETENTION,
            retention: DEFAULT_HISTORY_RETENTION,
            max_per_queue: DEFAULT_HISTORY_CAP,
        }
    }
}

/// What one round of trimming did to a partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// Jobs whose input, result and log were dropped.
    pub results: u64,
    /// Records deleted: past the history retention, or past the cap.
    pub records: u64,
}

impl Queue {
    /// This queue, keeping finished jobs' records as `settings` say.
    pub fn with_history(self, settings: HistorySettings) -> Self {
        Self {
            history: settings,
            ..self
        }
    }

    /// The TTL the scripts give a finished job's record, in seconds.
    pub(crate) fn record_lifetime(&self) -> u64 {
        (self.history.retention + RECORD_GRACE).as_secs()
    }

    /// Drops the results of the partition's jobs past the result retention, and the records
    /// past the history retention or the cap, oldest first.
    pub async fn trim_history(&self, partition: &str) -> anyhow::Result<Trimmed> {
        let keys = self.keys(partition);
        let now = unix_millis(SystemTime::now());
        let mut trimmed = Trimmed::default();
        let results_until = now.saturating_sub(self.history.results.as_millis() as u64);
        let mut conn = self.connection();
        let mark: Option<u64> = conn.get(keys.results_dropped()).await?;
        let mut from = mark.map_or("-inf".to_owned(), |mark| format!("({mark}"));
        for _ in 0..TRIM_ROUNDS {
            let page: Vec<(String, u64)> = conn
                .zrangebyscore_limit_withscores(
                    keys.finished(),
                    &from,
                    results_until,
                    0,
                    TRIM_AT_ONCE as isize,
                )
                .await?;
            let Some(&(_, last)) = page.last() else {
                break;
            };
            let full = page.len() == TRIM_AT_ONCE;
            // A full page may end inside a millisecond: its last millisecond is left for the
            // next page, unless the whole page is that millisecond, which is then read whole.
            // The mark of a page that is not full stops short of its last millisecond, so a
            // job finishing later in that millisecond is not passed over (the next round
            // reads that millisecond again, to no effect on the jobs already done).
            let (ids, through): (Vec<String>, u64) = if !full {
                (page.into_iter().map(|(id, _)| id).collect(), last - 1)
            } else if page[0].1 == last {
                let all: Vec<String> = conn.zrangebyscore(keys.finished(), last, last).await?;
                (all, last)
            } else {
                let before = page.into_iter().filter(|(_, finished)| *finished < last);
                (before.map(|(id, _)| id).collect(), last - 1)
            };
            let mut invocation = self.scripts.drop_results.key(keys.results_dropped());
            invocation.arg(results_until).arg(through);
            for id in &ids {
                invocation.key(keys.job(id)).arg(id);
            }
            trimmed.results += invocation
                .invoke_timed::<u64>("drop_results", &mut conn)
                .await?;
            from = format!("({through}");
            if !full {
                break;
            }
        }
        let records_until = now.saturating_sub(self.history.retention.as_millis() as u64);
        let partitions = self
            .partition_tags(&[keys::queue_of_tag(partition).to_owned()])
            .await?
            .len()
            .max(1);
        let cap = self.history.max_per_queue.div_ceil(partitions as u64);
        for _ in 0..TRIM_ROUNDS {
            let mut conn = self.connection();
            let excess = conn
                .zcard::<_, u64>(keys.finished())
                .await?
                .saturating_sub(cap);
            // The oldest records: past the cap, or past the retention.
            let oldest: Vec<(String, u64)> = if excess > 0 {
                let last = excess.min(TRIM_AT_ONCE as u64) as isize - 1;
                conn.zrange_withscores(keys.finished(), 0, last).await?
            } else {
                conn.zrangebyscore_limit_withscores(
                    keys.finished(),
                    "-inf",
                    records_until,
                    0,
                    TRIM_AT_ONCE as isize,
                )
                .await?
            };
            let Some(&(_, newest)) = oldest.last() else {
                break;
            };
            let ids: Vec<String> = oldest.into_iter().map(|(id, _)| id).collect();
            trimmed.records += self
                .forget(partition, &ids, newest.max(records_until))
                .await?;
            if ids.len() < TRIM_AT_ONCE {
                break;
            }
        }
        Ok(trimmed)
    }

    /// Deletes the records of the partition's jobs `ids` that finished at or before `until`
    /// (ms since the Unix epoch), with their places in the listings, their dead letters and
    /// their counts; says how many.
    pub(crate) async fn forget(
        &self,
        partition: &str,
        ids: &[String],
        until: u64,
    ) -> anyhow::Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let keys = self.keys(partition);
        let mut tenants = redis::pipe();
        for id in ids {
            tenants.hget(keys.job(id), "tenant");
        }
        let tenants: Vec<Option<String>> = tenants.query_async(&mut self.connection()).await?;
        let mut invocation = self.scripts.forget.key(keys.finished());
        invocation
            .key(keys.states())
            .key(keys.dead())
            .key(keys.ids())
            .key(keys.dead_index())
            .arg(until);
        for (id, tenant) in ids.iter().zip(tenants) {
            // A record already gone names no tenant: its listing drops it when it reads it.
            invocation
                .key(keys.job(id))
                .key(keys.tenant_index(tenant.as_deref().unwrap_or_default()))
                .arg(id);
        }
        Ok(invocation
            .invoke_timed("forget", &mut self.connection())
            .await?)
    }

    /// Fills the partition's index of dead jobs from its dead letters when it has none yet
    /// but has dead letters: jobs that died under a taskbox without the index stay in the
    /// listings of dead jobs. Says how many it indexed.
    pub(crate) async fn index_dead_letters(&self, partition: &str) -> anyhow::Result<u64> {
        let keys = self.keys(partition);
        let mut conn = self.connection();
        let (indexed, letters): (bool, u64) = redis::pipe()
            .exists(keys.dead_index())
            .xlen(keys.dead())
            .query_async(&mut conn)
            .await?;
        if indexed || letters == 0 {
            return Ok(0);
        }
        let mut added = 0;
        let mut start = "-".to_owned();
        loop {
            let page: redis::streams::StreamRangeReply = conn
                .xrange_count(keys.dead(), &start, "+", TRIM_AT_ONCE)
                .await?;
            let Some(last) = page.ids.last() else {
                return Ok(added);
            };
            start = format!("({}", last.id);
            let ids: Vec<String> = page
                .ids
                .iter()
                .filter_map(|entry| entry.get::<String>("id"))
                .collect();
            let mut reads = redis::pipe();
            for id in &ids {
                reads
                    .cmd("HMGET")
                    .arg(keys.job(id))
                    .arg(&["status", "tenant", "created_at"]);
            }
            let jobs: Vec<(Option<String>, Option<String>, Option<u64>)> =
                reads.query_async(&mut conn).await?;
            let mut index = redis::pipe();
            for (id, job) in ids.iter().zip(jobs) {
                if let (Some(status), Some(tenant), Some(created_at)) = job
                    && status == "dead"
                {
                    index.zadd(keys.dead_index(), format!("{tenant}:{id}"), created_at);
                    added += 1;
                }
            }
            let () = index.query_async(&mut conn).await?;
        }
    }

    /// How many of `tenant`'s jobs are in each state, over every queue, from the counts the
    /// scripts keep. Jobs created by a taskbox that kept no counts yet are not in them, and a
    /// count never shows below zero.
    pub async fn state_counts(&self, tenant: &str) -> anyhow::Result<BTreeMap<JobStatus, u64>> {
        let tags = self.partition_tags(&self.queue_names().await?).await?;
        let statuses: Vec<JobStatus> = JobStatus::ALL
            .into_iter()
            .filter(|status| *status != JobStatus::Unknown)
            .collect();
        let fields: Vec<String> = statuses
            .iter()
            .map(|status| format!("{tenant}:{}", status.as_str()))
            .collect();
        let reads = tags
            .iter()
            .map(|tag| {
                let read = redis::cmd("HMGET")
                    .arg(self.keys(tag).states())
                    .arg(&fields)
                    .clone();
                (tag.as_str(), read)
            })
            .collect();
        let counts: Vec<Vec<Option<i64>>> = self.query_by_queue(reads).await?;
        let mut totals: BTreeMap<JobStatus, u64> = statuses.iter().map(|s| (*s, 0)).collect();
        for partition in counts {
            for (status, count) in statuses.iter().zip(partition) {
                let total = totals.entry(*status).or_default();
                *total = total.saturating_add_signed(count.unwrap_or(0));
            }
        }
        Ok(totals)
    }

    /// Every queue's depths and every tenant's jobs by queue and state, for the metrics'
    /// gauges: a few commands per partition, whatever the number of jobs.
    pub async fn depths(&self) -> anyhow::Result<QueueDepths> {
        let mut depths = QueueDepths::default();
        for stats in self.queue_stats().await? {
            let tags = self.tags_of(&stats.name).await?;
            let reads = tags
                .iter()
                .map(|tag| {
                    let read = redis::cmd("HGETALL").arg(self.keys(tag).states()).clone();
                    (tag.as_str(), read)
                })
                .collect();
            let partitions: Vec<BTreeMap<String, i64>> = self.query_by_queue(reads).await?;
            for (field, count) in partitions.into_iter().flatten() {
                let Some((tenant, status)) = field.rsplit_once(':') else {
                    continue;
                };
                let Ok(status) = status.parse::<JobStatus>() else {
                    continue;
                };
                let key = (tenant.to_owned(), stats.name.clone(), status.as_str());
                let total = depths.tenants.entry(key).or_default();
                *total = total.saturating_add_signed(count);
            }
            depths.queues.push(QueueDepth {
                waiting: stats.waiting.high + stats.waiting.normal + stats.waiting.low,
                running: stats.running,
                delayed: stats.delayed,
                oldest_waiting: Duration::from_millis(stats.oldest_waiting_ms),
                paused: stats.paused_at.is_some(),
                name: stats.name,
            });
        }
        Ok(depths)
    }
}
