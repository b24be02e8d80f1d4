//! The calls a worker makes, one typed function each: the scripts that start attempts, store
//! their outcomes and promote due jobs, and the stream commands that read, heartbeat and take
//! over entries. The worker names no key and builds no script arguments itself.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands as _, FromRedisValue, ParsingError, Value};
use taskbox_runtime::trace::TraceParent;

use super::{Backoff, GROUP, JobStatus, MAX_RETRY_DELAY, Period, Priority, Queue};
use crate::model::unix_millis;
use crate::store::{Connection, TimedInvoke as _};

/// How far a worker's clock may be behind Redis's before it promotes delayed jobs late.
const CLOCK_SKEW: Duration = Duration::from_secs(1);

/// A stream entry a worker took: which partition (its tag) and stream it came from and the
/// job it names.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) partition: String,
    pub(crate) priority: Priority,
    pub(crate) entry: String,
    pub(crate) job: String,
}

impl Delivery {
    fn from_entry(partition: &str, priority: Priority, entry: StreamId) -> Self {
        Self {
            partition: partition.to_owned(),
            priority,
            job: entry.get::<String>("id").unwrap_or_default(),
            entry: entry.id,
        }
    }
}

/// What a job needs for the attempt `start_batch.lua` began, read from the job's hash.
#[derive(Debug)]
pub(crate) struct StartedJob {
    pub(crate) attempt: u32,
    pub(crate) max_attempts: u32,
    pub(crate) task: String,
    pub(crate) digest: String,
    pub(crate) input: Vec<u8>,
    /// The job's own limits; `None` keeps the worker's.
    pub(crate) timeout: Option<Duration>,
    pub(crate) fuel: Option<u64>,
    pub(crate) memory: Option<u64>,
    /// When the job was enqueued, in milliseconds since the Unix epoch.
    pub(crate) created_at: u64,
    pub(crate) backoff: Backoff,
    pub(crate) tenant: String,
    pub(crate) module: String,
    pub(crate) version: String,
    /// The job's depth in its chain: 0 for a job enqueued from outside.
    pub(crate) depth: u32,
    /// When the job was due, in milliseconds since the Unix epoch (0 when not recorded).
    pub(crate) run_at: u64,
    /// The trace the job continues.
    pub(crate) trace: Option<TraceParent>,
    /// The fields that hold something this version cannot read (a damaged record, or one
    /// written by a newer taskbox): the job must not run with a default in their place.
    pub(crate) unreadable: Vec<&'static str>,
}

/// The job-hash fields `start_batch.lua` returns for a job that may run, in its reply's
/// order (`attempt` is the one it began).
pub(crate) const STARTED_FIELDS: [&str; 16] = [
    "attempt",
    "max_attempts",
    "task",
    "digest",
    "input",
    "timeout_ms",
    "fuel",
    "memory",
    "created_at",
    "backoff",
    "tenant",
    "module",
    "version",
    "depth",
    "run_at",
    "traceparent",
];

impl FromRedisValue for StartedJob {
    fn from_redis_value(value: Value) -> Result<Self, ParsingError> {
        let Value::Array(values) = value else {
            return Err("a started job is not an array".into());
        };
        if values.len() != STARTED_FIELDS.len() {
            return Err(format!("a started job is not {} values", STARTED_FIELDS.len()).into());
        }
        let mut fields = STARTED_FIELDS.into_iter().zip(values);
        let mut next = || fields.next().expect("as many values as fields");
        let mut unreadable = Vec::new();
        // Struct fields are evaluated in the order written, which is the reply's.
        let mut job = Self {
            attempt: decode(next())?,
            max_attempts: decode(next())?,
            task: decode(next())?,
            digest: decode(next())?,
            input: decode(next())?,
            timeout: setting(next(), &mut unreadable)?.map(Duration::from_millis),
            fuel: setting(next(), &mut unreadable)?,
            memory: setting(next(), &mut unreadable)?,
            created_at: decode(next())?,
            backoff: {
                let (name, value) = next();
                let text: String = decode((name, value))?;
                serde_json::from_str(&text).unwrap_or_else(|_| {
                    unreadable.push(name);
                    Backoff::default()
                })
            },
            tenant: decode(next())?,
            module: decode(next())?,
            version: decode(next())?,
            depth: 0,
            run_at: 0,
            trace: None,
            unreadable: Vec::new(),
        };
        job.depth = setting(next(), &mut unreadable)?.unwrap_or(0);
        job.run_at = setting(next(), &mut unreadable)?.unwrap_or(0);
        let trace: String = decode(next())?;
        job.trace = TraceParent::parse(&trace);
        job.unreadable = unreadable;
        Ok(job)
    }
}

/// One field of a started job; an error names it.
fn decode<T: FromRedisValue>((name, value): (&str, Value)) -> Result<T, ParsingError> {
    redis::from_redis_value(value).map_err(|err| format!("field `{name}`: {err}").into())
}

/// A job's optional number: '' when the job has none. One that does not parse is added to
/// `unreadable` rather than failing the whole batch's reply.
fn setting<T: FromStr>(
    (name, value): (&'static str, Value),
    unreadable: &mut Vec<&'static str>,
) -> Result<Option<T>, ParsingError> {
    let text: String = decode((name, value))?;
    if text.is_empty() {
        return Ok(None);
    }
    match text.parse() {
        Ok(value) => Ok(Some(value)),
        Err(_) => {
            unreadable.push(name);
            Ok(None)
        }
    }
}

/// How an attempt ended, as `finish_batch.lua` is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    Completed,
    Cancelled,
    /// Retried after the attempt's `retry_in`, or dead when it has none or was the last.
    Failed,
    /// Handed back at shutdown, to run again elsewhere.
    Released,
}

impl Ending {
    fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
            Self::Released => "released",
        }
    }
}

/// An attempt's outcome, to be stored by [`Queue::finish_batch`].
#[derive(Debug)]
pub(crate) struct FinishedAttempt {
    /// The tag of the job's partition.
    pub(crate) partition: String,
    pub(crate) priority: Priority,
    pub(crate) entry: String,
    pub(crate) job: String,
    pub(crate) attempt: u32,
    pub(crate) ending: Ending,
    /// The result when completed, else the error as JSON.
    pub(crate) payload: Vec<u8>,
    /// The error's kind; empty when completed.
    pub(crate) error_kind: String,
    /// When a failed attempt is retried; `None` for no retry.
    pub(crate) retry_in: Option<Duration>,
    pub(crate) log: String,
    /// The run's stats as JSON.
    pub(crate) stats: String,
    /// The last progress report as JSON, empty for none.
    pub(crate) progress: String,
    /// The attempt's entry in the job's timeline: an [`AttemptDetail`] as JSON.
    ///
    /// [`AttemptDetail`]: crate::model::job::AttemptDetail
    pub(crate) timeline: String,
}

impl FromRedisValue for JobStatus {
    fn from_redis_value(value: Value) -> Result<Self, ParsingError> {
        match &value {
            Value::BulkString(bytes) => std::str::from_utf8(bytes)?,
            Value::SimpleString(text) => text,
            _ => return Err("a job status is not a string".into()),
        }
        .parse()
        .map_err(ParsingError::from)
    }
}

impl Queue {
    /// Creates the consumer group of each of the queue's streams (and the streams), unless
    /// it exists.
    pub(crate) async fn create_groups(&self, queue: &str) -> anyhow::Result<()> {
        let mut conn = self.connection();
        for stream in self.keys(queue).streams() {
            let created: redis::RedisResult<()> =
                conn.xgroup_create_mkstream(&stream, GROUP, "0").await;
            if let Err(err) = created
                && err.code() != Some("BUSYGROUP")
            {
                return Err(err)
                    .with_context(|| format!("creating the consumer group of {stream}"));
            }
        }
        Ok(())
    }

    /// Begins the next attempt of the jobs of entries `worker` took from the partition
    /// tagged `partition`, and reads up to `read` new entries for its next call, with one
    /// `start_batch.lua` call. Returns each taken entry with its job's attempt, or `None`
    /// when the job must not run (the script acknowledged the entry and dealt with the job),
    /// and the entries read.
    pub(crate) async fn start_batch(
        &self,
        partition: &str,
        worker: &str,
        taken: &[Delivery],
        read: usize,
    ) -> anyhow::Result<(Vec<(Delivery, Option<StartedJob>)>, Vec<Delivery>)> {
        let keys = self.keys(partition);
        let [high, normal, low] = keys.streams();
        let mut invocation = self.scripts.start_batch.key(keys.dead());
        invocation
            .key(high)
            .key(normal)
            .key(low)
            .key(keys.states())
            .key(keys.finished())
            .key(keys.dead_index())
            .arg(worker)
            .arg(GROUP)
            .arg(self.record_lifetime())
            .arg(keys.done_channel())
            .arg(read);
        for delivery in taken {
            invocation
                .key(keys.job(&delivery.job))
                .arg(&delivery.entry)
                .arg(&delivery.job)
                .arg(1 + delivery.priority.rank());
        }
        type Started = (String, usize, String, Option<StartedJob>);
        let (started, read): (Vec<Started>, Vec<(String, usize, String)>) = invocation
            .invoke_timed("start_batch", &mut self.connection())
            .await?;
        let delivery = |entry, stream: usize, job| Delivery {
            partition: partition.to_owned(),
            priority: Priority::ALL[stream.clamp(1, 3) - 1],
            entry,
            job,
        };
        let started = started
            .into_iter()
            .map(|(entry, stream, job, started)| (delivery(entry, stream, job), started))
            .collect();
        let read = read
            .into_iter()
            .map(|(entry, stream, job)| delivery(entry, stream, job))
            .collect();
        Ok((started, read))
    }

    /// Stores `outcomes`, all of queue `queue`, with one `finish_batch.lua` call. Returns, per
    /// outcome and in order, the job's new status, or `None` when the attempt was stale (a
    /// newer one owns the job) and nothing was written.
    pub(crate) async fn finish_batch(
        &self,
        queue: &str,
        outcomes: &[FinishedAttempt],
    ) -> anyhow::Result<Vec<Option<JobStatus>>> {
        let keys = self.keys(queue);
        let [high, normal, low] = keys.streams();
        let mut invocation = self.scripts.finish_batch.key(keys.delayed());
        invocation
            .key(keys.dead())
            .key(high)
            .key(normal)
            .key(low)
            .key(keys.states())
            .key(keys.finished())
            .key(keys.dead_index())
            .arg(GROUP)
            .arg(self.record_lifetime())
            .arg(keys.done_channel());
        for outcome in outcomes {
            invocation
                .key(keys.job(&outcome.job))
                .arg(&outcome.entry)
                .arg(1 + outcome.priority.rank())
                .arg(&outcome.job)
                .arg(outcome.attempt)
                .arg(outcome.ending.as_str())
                .arg(&outcome.payload)
                .arg(&outcome.error_kind)
                .arg(outcome.retry_in.map_or(-1, retry_delay_ms))
                .arg(&outcome.log)
                .arg(&outcome.stats)
                .arg(&outcome.progress)
                .arg(&outcome.timeline);
        }
        Ok(invocation
            .invoke_timed("finish_batch", &mut self.connection())
            .await?)
    }

    /// Adds finished jobs to the queue's throughput counters, by minute and by hour.
    pub(crate) async fn count_finished(
        &self,
        queue: &str,
        completed: usize,
        failed: usize,
    ) -> redis::RedisResult<()> {
        let now = unix_millis(SystemTime::now());
        let mut pipe = redis::pipe();
        for period in [Period::Minute, Period::Hour] {
            let key = period.key(&self.keys(queue), now / period.millis());
            pipe.hincr(&key, "completed", completed)
                .ignore()
                .hincr(&key, "failed", failed)
                .ignore()
                .expire(&key, (period.millis() * (period.kept() + 1) / 1000) as i64)
                .ignore();
        }
        pipe.query_async(&mut self.connection()).await
    }

    /// Moves up to `most` of the partition's due delayed jobs and retries onto its streams;
    /// returns how many moved. The earliest ids are read first, and `promote.lua` is called
    /// only for those due by this host's clock, give or take [`CLOCK_SKEW`]: the script moves
    /// those due by Redis's clock, so a host whose clock is ahead costs a call, and one
    /// behind by more than the skew promotes late (other workers' clocks promote in time).
    pub(crate) async fn promote(&self, partition: &str, most: u32) -> anyhow::Result<u64> {
        let keys = self.keys(partition);
        let horizon = unix_millis(SystemTime::now()) + CLOCK_SKEW.as_millis() as u64;
        let earliest: Vec<String> = self
            .connection()
            .zrangebyscore_limit(keys.delayed(), "-inf", horizon, 0, most as isize)
            .await?;
        if earliest.is_empty() {
            return Ok(0);
        }
        let [high, normal, low] = keys.streams();
        let mut invocation = self.scripts.promote.key(keys.delayed());
        invocation.key(high).key(normal).key(low).key(keys.states());
        for id in &earliest {
            invocation.key(keys.job(id)).arg(id);
        }
        Ok(invocation
            .invoke_timed("promote", &mut self.connection())
            .await?)
    }

    /// Claims `entries` of one of the queue's streams for `worker` again, which resets their
    /// idle time.
    pub(crate) async fn heartbeat(
        &self,
        queue: &str,
        priority: Priority,
        worker: &str,
        entries: &[String],
    ) -> anyhow::Result<()> {
        let _: Value = redis::cmd("XCLAIM")
            .arg(self.keys(queue).stream(priority))
            .arg(GROUP)
            .arg(worker)
            .arg(0)
            .arg(entries)
            .arg("JUSTID")
            .query_async(&mut self.connection())
            .await?;
        Ok(())
    }

    /// Claims for `worker` up to `count` entries of one of the queue's streams that were idle
    /// for `idle`: their worker stopped heartbeating.
    pub(crate) async fn take_over(
        &self,
        queue: &str,
        priority: Priority,
        worker: &str,
        idle: Duration,
        count: usize,
    ) -> anyhow::Result<Vec<Delivery>> {
        let claimed: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(self.keys(queue).stream(priority))
            .arg(GROUP)
            .arg(worker)
            .arg(idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.connection())
            .await?;
        Ok(claimed
            .claimed
            .into_iter()
            .map(|entry| Delivery::from_entry(queue, priority, entry))
            .collect())
    }

    /// Blocking reads on `conn` (a second at most in all) for `worker` of up to `count` new
    /// entries per stream, partition by partition. Each partition has its own read, since two
    /// partitions' streams may lie in different cluster slots; with several partitions each
    /// read blocks for its share of the second, and the reads stop at the first partition
    /// with entries.
    pub(crate) async fn read_new(
        &self,
        conn: &mut Connection,
        partitions: &[String],
        worker: &str,
        count: usize,
    ) -> anyhow::Result<Vec<Delivery>> {
        let share = (READ_BLOCK / partitions.len().max(1) as u32).max(MIN_READ_BLOCK);
        for partition in partitions {
            let read = self
                .read_partition(conn, partition, worker, count, Some(share))
                .await?;
            if !read.is_empty() {
                return Ok(read);
            }
        }
        Ok(Vec::new())
    }

    /// One read on `conn` for `worker` of up to `count` new entries of each of the
    /// partition's streams, most urgent first; blocking up to `block` while there are none.
    pub(crate) async fn read_partition(
        &self,
        conn: &mut Connection,
        partition: &str,
        worker: &str,
        count: usize,
        block: Option<Duration>,
    ) -> anyhow::Result<Vec<Delivery>> {
        let streams = self.keys(partition).streams();
        let mut options = StreamReadOptions::default()
            .group(GROUP, worker)
            .count(count);
        if let Some(block) = block {
            options = options.block(block.as_millis() as usize);
        }
        let reply: Option<StreamReadReply> =
            conn.xread_options(&streams, &[">"; 3], &options).await?;
        let mut deliveries = Vec::new();
        for stream in reply.map(|reply| reply.keys).unwrap_or_default() {
            let Some(priority) = streams
                .iter()
                .position(|name| *name == stream.key)
                .map(|index| Priority::ALL[index])
            else {
                continue;
            };
            deliveries.extend(
                stream
                    .ids
                    .into_iter()
                    .map(|entry| Delivery::from_entry(partition, priority, entry)),
            );
        }
        deliveries.sort_by_key(|delivery| delivery.priority.rank());
        Ok(deliveries)
    }
}

/// How long a worker's blocking reads wait for new entries in all, before it looks again at
/// delayed jobs, takeovers and stopping.
const READ_BLOCK: Duration = Duration::from_secs(1);
/// The shortest a read of one queue blocks, however many queues a worker serves.
const MIN_READ_BLOCK: Duration = Duration::from_millis(100);

/// A retry's wait in milliseconds for `finish_batch.lua`, no longer than
/// [`MAX_RETRY_DELAY`]: a task's `retry_after` can be any `u64`, and a cast would wrap it
/// negative, which the script reads as "no retry".
fn retry_delay_ms(delay: Duration) -> i64 {
    i64::try_from(delay.min(MAX_RETRY_DELAY).as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    /// `start_batch.lua`'s reply for a job whose fuel and backoff fields hold these.
    fn reply(fuel: &str, backoff: &str) -> Value {
        let fields = [
            "2",
            "3",
            "send",
            "sha256:ab",
            "{}",
            "",
            fuel,
            "",
            "1700000000000",
            backoff,
            "acme",
            "mailer",
            "1.0.0",
            "",
            "1700000000500",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ];
        Value::Array(fields.map(text).into())
    }

    #[test]
    fn a_started_job_leaves_unset_limits_to_the_worker() {
        let backoff = Backoff {
            base: Duration::from_millis(10),
            max: Duration::from_secs(1),
            jitter: 0.5,
        };
        let backoff = serde_json::to_string(&backoff).unwrap();
        let started: StartedJob = redis::from_redis_value(reply("1000", &backoff)).unwrap();
        assert_eq!((started.attempt, started.max_attempts), (2, 3));
        assert_eq!(started.timeout, None);
        assert_eq!((started.fuel, started.memory), (Some(1000), None));
        assert_eq!(started.created_at, 1_700_000_000_000);
        assert_eq!(started.backoff.base, Duration::from_millis(10));
        assert_eq!((started.module.as_str(), started.depth), ("mailer", 0));
        assert_eq!(started.run_at, 1_700_000_000_500);
        assert_eq!(
            started.trace.as_ref().map(TraceParent::as_str),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        assert!(started.unreadable.is_empty());
        let short = Value::Array(vec![text("1")]);
        assert!(redis::from_redis_value::<StartedJob>(short).is_err());
    }

    #[test]
    fn a_started_job_names_the_stored_settings_it_cannot_read() {
        let started: StartedJob = redis::from_redis_value(reply("lots", "{oops")).unwrap();
        assert_eq!(started.unreadable, ["fuel", "backoff"]);
    }
}
