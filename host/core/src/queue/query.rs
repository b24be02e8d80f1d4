//! Reading the queue for people: job listings with filters and cursors, dead letters, queue
//! depths and throughput, and the workers that are alive.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use redis::AsyncCommands as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::model::job::{JobRecord, JobStatus, Priority};
use crate::model::unix_millis;
use crate::queue::{Queue, partition_of};
use crate::store::keys::{self, QueueKeys};

/// Which jobs to list; `None` matches any.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only jobs with this status.
    pub status: Option<JobStatus>,
    /// Only jobs of this task.
    pub task: Option<String>,
    /// Only jobs of this module.
    pub module: Option<String>,
    /// Only jobs on this queue.
    pub queue: Option<String>,
    /// Only jobs whose id starts with this.
    pub id_prefix: Option<String>,
    /// Only jobs whose JSON input holds a value at a path.
    pub input: Option<InputMatch>,
    /// Only jobs created at or after this time (ms since the Unix epoch). A listing stops
    /// reading at it.
    pub created_after: Option<u64>,
    /// Only jobs created at or before this time (ms since the Unix epoch): a bulk action
    /// leaves alone the jobs that arrived after it began.
    pub created_until: Option<u64>,
}

/// A value at a path in a job's JSON input: `customer.id=42` matches `{"customer": {"id":
/// 42}}` and `{"customer": {"id": "42"}}`; a number in the path indexes an array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputMatch {
    path: Vec<String>,
    value: String,
}

/// The longest input match accepted, in bytes.
pub const MAX_INPUT_MATCH: usize = 256;

impl std::str::FromStr for InputMatch {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() > MAX_INPUT_MATCH {
            return Err(format!(
                "an input match is at most {MAX_INPUT_MATCH} bytes, not {}",
                text.len()
            ));
        }
        let (path, value) = text
            .split_once('=')
            .ok_or_else(|| "an input match is `path.to.field=value`".to_owned())?;
        let path: Vec<String> = path.trim().split('.').map(str::to_owned).collect();
        if path.iter().any(String::is_empty) {
            return Err("an input match's path has an empty step".to_owned());
        }
        Ok(Self {
            path,
            value: value.trim().to_owned(),
        })
    }
}

impl InputMatch {
    /// Whether `input` (a job's input bytes) holds the value at the path.
    pub fn matches(&self, input: &[u8]) -> bool {
        let Ok(mut node) = serde_json::from_slice::<serde_json::Value>(input) else {
            return false;
        };
        for step in &self.path {
            node = match node {
                serde_json::Value::Object(mut object) => match object.remove(step) {
                    Some(next) => next,
                    None => return false,
                },
                serde_json::Value::Array(mut items) => match step.parse::<usize>() {
                    Ok(index) if index < items.len() => items.swap_remove(index),
                    _ => return false,
                },
                _ => return false,
            };
        }
        match node {
            serde_json::Value::String(text) => text == self.value,
            other => serde_json::to_string(&other).is_ok_and(|text| text == self.value),
        }
    }
}

impl JobFilter {
    fn matches(&self, job: &JobRecord) -> bool {
        self.status.is_none_or(|status| status == job.status)
            && self.task.as_ref().is_none_or(|task| *task == job.task)
            && self
                .module
                .as_ref()
                .is_none_or(|module| *module == job.module)
    }

    /// Whether an index entry may match, before its job is read.
    fn may_match(&self, position: &Position) -> bool {
        self.id_prefix
            .as_ref()
            .is_none_or(|prefix| position.id.starts_with(prefix.as_str()))
            && self
                .created_until
                .is_none_or(|until| position.created_at <= until)
            && self
                .created_after
                .is_none_or(|after| position.created_at >= after)
    }
}

/// The index of jobs a listing reads, newest first by creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Index {
    /// A tenant's jobs on a partition: job ids.
    Jobs,
    /// A partition's dead jobs, every tenant's: `tenant:id`.
    Dead,
}

impl Index {
    /// The index's key on a partition, and the member that stands for `tenant`'s job `id`.
    fn entry(self, keys: &QueueKeys, tenant: &str, id: &str) -> (String, String) {
        match self {
            Self::Jobs => (keys.tenant_index(tenant), id.to_owned()),
            Self::Dead => (keys.dead_index(), format!("{tenant}:{id}")),
        }
    }

    /// The job id a member stands for, if it is one of `tenant`'s jobs.
    fn id_of(self, tenant: &str, member: String) -> Option<String> {
        match self {
            Self::Jobs => Some(member),
            Self::Dead => member
                .strip_prefix(tenant)?
                .strip_prefix(':')
                .map(str::to_owned),
        }
    }
}

/// One page of a listing, newest first.
#[derive(Debug, Clone)]
pub struct JobPage {
    /// The jobs.
    pub jobs: Vec<JobRecord>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// A cursor that is not one this API gave out.
#[derive(Debug, thiserror::Error)]
#[error("`cursor` is not valid: pass the `next_cursor` of the previous page")]
pub struct BadCursor;

/// A position in a listing: the creation time and id of the last job shown. Listings go
/// newest first, ties by id descending, as `ZREVRANGEBYSCORE` returns them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Position {
    created_at: u64,
    id: String,
}

impl Position {
    fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{}:{}", self.created_at, self.id))
    }

    fn decode(cursor: &str) -> Result<Self, BadCursor> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor)
            .map_err(|_| BadCursor)?;
        let text = String::from_utf8(bytes).map_err(|_| BadCursor)?;
        let (created_at, id) = text.split_once(':').ok_or(BadCursor)?;
        Ok(Self {
            created_at: created_at.parse().map_err(|_| BadCursor)?,
            id: id.to_owned(),
        })
    }
}

/// The most ids a lookup by id prefix reads from one partition's id index; a prefix matching
/// more is too short to narrow a listing, which then scans as without it.
const PREFIX_LOOKUP: usize = 1000;

/// Index entries read per queue per round of a listing.
const SCAN_PAGE: usize = 200;
/// Rounds one listing request makes at most before it returns what it found, with a cursor.
const SCAN_ROUNDS: usize = 25;

/// Workers silent this long are no longer listed.
const WORKER_SILENCE: Duration = Duration::from_secs(90);

/// One queue's state.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueueStats {
    /// The queue.
    pub name: String,
    /// Its partitions (each a hash tag of its own; see `docs/operations.md`).
    pub partitions: u32,
    /// When it was paused (ms since the Unix epoch), if it is: workers start none of its
    /// jobs until it is resumed.
    pub paused_at: Option<u64>,
    /// Jobs waiting for a worker, by priority.
    pub waiting: PriorityCounts,
    /// Jobs a worker is running.
    pub running: u64,
    /// Delayed jobs and retries waiting for their time.
    pub delayed: u64,
    /// How long the oldest waiting job has waited, in ms (0 when none waits).
    pub oldest_waiting_ms: u64,
    /// Jobs completed in the last full minute.
    pub completed_last_minute: u64,
    /// Attempts failed in the last full minute.
    pub failed_last_minute: u64,
}

/// A length of time the queue counts finished jobs by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// A minute; the last hour's are kept.
    Minute,
    /// An hour; the last day's are kept.
    Hour,
}

impl Period {
    /// Its length in ms.
    pub fn millis(self) -> u64 {
        match self {
            Self::Minute => 60_000,
            Self::Hour => 3_600_000,
        }
    }

    /// How many of the latest are kept, the current one among them.
    pub fn kept(self) -> u64 {
        match self {
            Self::Minute => 60,
            Self::Hour => 24,
        }
    }

    /// The key of the counts of period `n` (since the Unix epoch).
    pub(crate) fn key(self, keys: &QueueKeys, n: u64) -> String {
        match self {
            Self::Minute => keys.counts(n),
            Self::Hour => keys.hourly_counts(n),
        }
    }
}

/// What finished in one period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PeriodCounts {
    /// The period, counted from the Unix epoch in periods of its length.
    pub period: u64,
    /// Jobs completed in it.
    pub completed: u64,
    /// Attempts failed in it.
    pub failed: u64,
}

/// A count per priority.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct PriorityCounts {
    /// High priority.
    pub high: u64,
    /// Normal priority.
    pub normal: u64,
    /// Low priority.
    pub low: u64,
}

/// A worker, as it last reported itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerInfo {
    /// Its id in the consumer groups.
    pub id: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// The queues it serves.
    pub queues: Vec<String>,
    /// Jobs it runs at once.
    pub concurrency: usize,
    /// Jobs it is running.
    pub in_flight: usize,
    /// Its resident memory when it reported, in bytes (0 where the OS does not say).
    #[serde(default)]
    pub resident_memory: u64,
    /// The most resident memory its jobs can make it hold, in bytes: with every slot
    /// running a job at the largest memory the policy allows and at its host-memory limit,
    /// plus what its sandbox pool keeps and its module cache (its own baseline comes on top).
    #[serde(default)]
    pub memory_bound: u64,
    /// Outcomes it finished after another worker had taken their jobs over (it was cut off
    /// or stalled past the visibility timeout): refused, as the job's newer attempt owns it.
    #[serde(default)]
    pub stale_outcomes: u64,
    /// When it started, in ms since the Unix epoch.
    pub started_at: u64,
    /// Its last heartbeat, in ms since the Unix epoch.
    pub last_heartbeat: u64,
}

impl Queue {
    /// `tenant`'s jobs matching `filter`, newest first, `limit` at most, from `cursor` on.
    pub async fn list(
        &self,
        tenant: &str,
        filter: &JobFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> anyhow::Result<JobPage> {
        let mut after = cursor.map(Position::decode).transpose()?;
        let queues = match &filter.queue {
            Some(queue) => vec![queue.clone()],
            None => self.queue_names().await?,
        };
        let queues = self.partition_tags(&queues).await?;
        if let Some(prefix) = &filter.id_prefix
            && let Some(found) = self.ids_with_prefix(&queues, prefix).await?
        {
            return self.page_of(tenant, filter, found, after, limit).await;
        }
        // Dead jobs are few among many: their own index finds them without reading the rest.
        let index = match filter.status {
            Some(JobStatus::Dead) => Index::Dead,
            _ => Index::Jobs,
        };
        let mut conn = self.connection();
        let mut jobs = Vec::new();
        for _ in 0..SCAN_ROUNDS {
            let (candidates, exhausted) = self
                .candidates(tenant, index, &queues, after.as_ref(), filter)
                .await?;
            if candidates.is_empty() {
                return Ok(JobPage {
                    jobs,
                    next_cursor: None,
                });
            }
            let last = candidates.last().map(|(position, _)| position.clone());
            let candidates: Vec<_> = candidates
                .into_iter()
                .filter(|(position, _)| filter.may_match(position))
                .collect();
            let reads = candidates
                .iter()
                .map(|(position, queue)| {
                    (
                        queue.as_str(),
                        redis::Cmd::hgetall(self.keys(queue).job(&position.id)),
                    )
                })
                .collect();
            let hashes: Vec<HashMap<String, Vec<u8>>> = self.query_by_queue(reads).await?;
            for ((position, queue), hash) in candidates.into_iter().zip(hashes) {
                let input_matches = filter.input.as_ref().is_none_or(|wanted| {
                    hash.get("input").is_some_and(|input| wanted.matches(input))
                });
                match JobRecord::from_hash(keys::queue_of_tag(queue), &position.id, hash) {
                    // Expired (nothing left of it): drop it from the index too.
                    None => {
                        let (key, member) = index.entry(&self.keys(queue), tenant, &position.id);
                        let () = conn.zrem(key, member).await?;
                    }
                    Some(job) if input_matches && filter.matches(&job) => jobs.push(job),
                    Some(_) => {}
                }
                after = Some(position);
                if jobs.len() == limit {
                    return Ok(JobPage {
                        jobs,
                        next_cursor: after.map(|position| position.encode()),
                    });
                }
            }
            if exhausted {
                return Ok(JobPage {
                    jobs,
                    next_cursor: None,
                });
            }
            // The round's entries passed over unread are behind the listing too.
            if last.is_some() {
                after = last;
            }
        }
        Ok(JobPage {
            jobs,
            next_cursor: after.map(|position| position.encode()),
        })
    }

    /// The ids starting with `prefix` in the id indexes of the partitions tagged `tags`, each
    /// with its tag; `None` when the prefix is not selective (more than [`PREFIX_LOOKUP`] in
    /// a partition), so the listing scans as it does without one.
    async fn ids_with_prefix(
        &self,
        tags: &[String],
        prefix: &str,
    ) -> anyhow::Result<Option<Vec<(String, String)>>> {
        let mut past = prefix.as_bytes().to_vec();
        past.insert(0, b'[');
        // Ids are ASCII: every id starting with the prefix sorts before it followed by 0xff.
        past.push(0xff);
        let reads = tags
            .iter()
            .map(|tag| {
                let range = redis::cmd("ZRANGEBYLEX")
                    .arg(self.keys(tag).ids())
                    .arg(format!("[{prefix}"))
                    .arg(&past)
                    .arg("LIMIT")
                    .arg(0)
                    .arg(PREFIX_LOOKUP + 1)
                    .clone();
                (tag.as_str(), range)
            })
            .collect();
        let ranges: Vec<Vec<String>> = self.query_by_queue(reads).await?;
        if ranges.iter().any(|ids| ids.len() > PREFIX_LOOKUP) {
            return Ok(None);
        }
        Ok(Some(
            tags.iter()
                .zip(ranges)
                .flat_map(|(tag, ids)| ids.into_iter().map(move |id| (tag.clone(), id)))
                .collect(),
        ))
    }

    /// A page of `tenant`'s jobs among `found` (ids with their partitions' tags) matching
    /// `filter`, newest first, after `after`.
    async fn page_of(
        &self,
        tenant: &str,
        filter: &JobFilter,
        found: Vec<(String, String)>,
        after: Option<Position>,
        limit: usize,
    ) -> anyhow::Result<JobPage> {
        let limit = limit.max(1);
        let reads = found
            .iter()
            .map(|(tag, id)| (tag.as_str(), redis::Cmd::hgetall(self.keys(tag).job(id))))
            .collect();
        let hashes: Vec<HashMap<String, Vec<u8>>> = self.query_by_queue(reads).await?;
        let mut matching = Vec::new();
        for ((tag, id), hash) in found.into_iter().zip(hashes) {
            let input_matches = filter
                .input
                .as_ref()
                .is_none_or(|wanted| hash.get("input").is_some_and(|input| wanted.matches(input)));
            let Some(job) = JobRecord::from_hash(keys::queue_of_tag(&tag), &id, hash) else {
                // Gone, and left in the index by a record that expired untrimmed.
                let () = self.connection().zrem(self.keys(&tag).ids(), &id).await?;
                continue;
            };
            let position = Position {
                created_at: job.created_at,
                id,
            };
            if job.tenant == tenant
                && input_matches
                && filter.matches(&job)
                && filter.may_match(&position)
                && after.as_ref().is_none_or(|after| position < *after)
            {
                matching.push((position, job));
            }
        }
        matching.sort_by(|a, b| b.0.cmp(&a.0));
        let next_cursor = (matching.len() > limit).then(|| matching[limit - 1].0.encode());
        matching.truncate(limit);
        Ok(JobPage {
            jobs: matching.into_iter().map(|(_, job)| job).collect(),
            next_cursor,
        })
    }

    /// The next index entries after `after` across `queues`, newest first, and whether they
    /// are the last. Only entries that no unread entry of another queue could precede are
    /// returned, so merging the queues keeps the order.
    async fn candidates<'q>(
        &self,
        tenant: &str,
        index: Index,
        queues: &'q [String],
        after: Option<&Position>,
        filter: &JobFilter,
    ) -> anyhow::Result<(Vec<(Position, &'q String)>, bool)> {
        let mut conn = self.connection();
        // The index is read between the filter's times, so a range far back is found
        // without reading what came after it.
        let max = match (after, filter.created_until) {
            (Some(after), Some(until)) => after.created_at.min(until).to_string(),
            (Some(after), None) => after.created_at.to_string(),
            (None, Some(until)) => until.to_string(),
            (None, None) => "+inf".to_owned(),
        };
        let min = filter
            .created_after
            .map_or("-inf".to_owned(), |after| after.to_string());
        let mut merged = Vec::new();
        let mut floor: Option<Position> = None;
        for queue in queues {
            let (key, _) = index.entry(&self.keys(queue), tenant, "");
            // Jobs of one batch share their creation time: past a page of them that were all
            // read already (or, in the index of dead jobs, all of other tenants), the next page
            // of the same score is looked at.
            let mut offset = 0;
            let (positions, full) = loop {
                let entries: Vec<(String, u64)> = conn
                    .zrevrangebyscore_limit_withscores(&key, &max, &min, offset, SCAN_PAGE as isize)
                    .await?;
                let full = entries.len() == SCAN_PAGE;
                let positions: Vec<Position> = entries
                    .into_iter()
                    .filter_map(|(member, created_at)| {
                        let id = index.id_of(tenant, member)?;
                        Some(Position { created_at, id })
                    })
                    .filter(|position| after.is_none_or(|after| position < after))
                    .collect();
                if !positions.is_empty() || !full {
                    break (positions, full);
                }
                offset += SCAN_PAGE as isize;
            };
            if full && let Some(last) = positions.last() {
                floor = floor.max(Some(last.clone()));
            }
            merged.extend(positions.into_iter().map(|position| (position, queue)));
        }
        merged.sort_by(|a, b| Reverse(&a.0).cmp(&Reverse(&b.0)));
        let exhausted = floor.is_none();
        if let Some(floor) = floor {
            merged.retain(|(position, _)| *position >= floor);
        }
        Ok((merged, exhausted))
    }

    /// Deletes `tenant`'s dead jobs (on `queue`, or on every queue) with their dead letters;
    /// says how many.
    pub async fn purge_dead(&self, tenant: &str, queue: Option<&str>) -> anyhow::Result<u64> {
        let filter = JobFilter {
            status: Some(JobStatus::Dead),
            queue: queue.map(str::to_owned),
            ..JobFilter::default()
        };
        let mut purged = 0;
        let mut cursor = None;
        loop {
            let page = self.list(tenant, &filter, cursor.as_deref(), 500).await?;
            if page.jobs.is_empty() {
                return Ok(purged);
            }
            self.delete_finished(tenant, &page.jobs).await?;
            purged += page.jobs.len() as u64;
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(purged),
            }
        }
    }

    /// The states of `tenant`'s `limit` newest jobs, newest first: each job's id, status,
    /// attempt and progress, and nothing more of it (a job's input, result and log may be
    /// large, and a dashboard asks for this twice a second).
    pub async fn newest_states(
        &self,
        tenant: &str,
        limit: usize,
    ) -> anyhow::Result<Vec<(String, Vec<Option<String>>)>> {
        self.newest_fields(tenant, limit, &["status", "attempt", "progress"])
            .await
    }

    /// `fields` of `tenant`'s `limit` newest jobs, newest first, with each job's id.
    pub async fn newest_fields(
        &self,
        tenant: &str,
        limit: usize,
        fields: &[&str],
    ) -> anyhow::Result<Vec<(String, Vec<Option<String>>)>> {
        let tags = self.partition_tags(&self.queue_names().await?).await?;
        let reads = tags
            .iter()
            .map(|tag| {
                let index = self.keys(tag).tenant_index(tenant);
                let newest = redis::cmd("ZRANGE")
                    .arg(index)
                    .arg("+inf")
                    .arg("-inf")
                    .arg("BYSCORE")
                    .arg("REV")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit)
                    .arg("WITHSCORES")
                    .clone();
                (tag.as_str(), newest)
            })
            .collect();
        let indexes: Vec<Vec<(String, u64)>> = self.query_by_queue(reads).await?;
        let mut newest: Vec<(u64, String, &str)> = indexes
            .into_iter()
            .zip(&tags)
            .flat_map(|(entries, tag)| {
                entries
                    .into_iter()
                    .map(move |(id, created_at)| (created_at, id, tag.as_str()))
            })
            .collect();
        newest.sort_by(|a, b| (b.0, &b.1).cmp(&(a.0, &a.1)));
        newest.truncate(limit);
        let reads = newest
            .iter()
            .map(|(_, id, tag)| {
                let read = redis::cmd("HMGET")
                    .arg(self.keys(tag).job(id))
                    .arg(fields)
                    .clone();
                (*tag, read)
            })
            .collect();
        let states: Vec<Vec<Option<String>>> = self.query_by_queue(reads).await?;
        Ok(newest
            .into_iter()
            .map(|(_, id, _)| id)
            .zip(states)
            .collect())
    }

    /// The status, attempt and progress of `tenant`'s job `id`, and nothing more of it (see
    /// [`Queue::newest_states`]); `None` for no such job of the tenant.
    pub async fn job_state(
        &self,
        tenant: &str,
        id: &str,
    ) -> anyhow::Result<Option<Vec<Option<String>>>> {
        let Some(tag) = partition_of(id) else {
            return Ok(None);
        };
        let mut fields: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.keys(tag).job(id))
            .arg(&["tenant", "status", "attempt", "progress"])
            .query_async(&mut self.connection())
            .await?;
        if fields.first().and_then(Option::as_deref) != Some(tenant) {
            return Ok(None);
        }
        fields.remove(0);
        Ok(Some(fields))
    }

    /// Deletes `tenant`'s finished `jobs`, each with its place in the listing, its dead
    /// letter and its count.
    pub(crate) async fn delete_finished(
        &self,
        tenant: &str,
        jobs: &[JobRecord],
    ) -> anyhow::Result<()> {
        let mut by_partition: HashMap<&str, Vec<String>> = HashMap::new();
        for job in jobs.iter().filter(|job| job.tenant == tenant) {
            let partition = partition_of(&job.id).unwrap_or(&job.queue);
            by_partition
                .entry(partition)
                .or_default()
                .push(job.id.clone());
        }
        for (partition, ids) in by_partition {
            self.forget(partition, &ids, u64::MAX).await?;
        }
        Ok(())
    }

    /// How many of `tenant`'s jobs of module `name@version` have not finished.
    pub async fn unfinished_jobs_of(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
    ) -> anyhow::Result<usize> {
        let mut unfinished = 0;
        let mut cursor = None;
        let filter = JobFilter {
            module: Some(name.to_owned()),
            ..JobFilter::default()
        };
        loop {
            let page = self.list(tenant, &filter, cursor.as_deref(), 500).await?;
            unfinished += page
                .jobs
                .iter()
                .filter(|job| job.version.as_deref() == Some(version) && !job.status.is_finished())
                .count();
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(unfinished),
            }
        }
    }

    /// The queues jobs were ever enqueued on.
    pub async fn queue_names(&self) -> anyhow::Result<Vec<String>> {
        let mut names: Vec<String> = self
            .connection()
            .smembers(keys::queues(self.store.prefix()))
            .await?;
        names.sort();
        Ok(names)
    }

    /// Every queue's depths and throughput.
    pub async fn queue_stats(&self) -> anyhow::Result<Vec<QueueStats>> {
        let paused = self.paused_queues().await?;
        let mut stats = Vec::new();
        for name in self.queue_names().await? {
            stats.push(self.summed_stats(&name, paused.get(&name).copied()).await?);
        }
        Ok(stats)
    }

    /// The depths and throughput of queue `name`, summed over its partitions.
    pub async fn stats_of(&self, name: &str) -> anyhow::Result<QueueStats> {
        let paused_at = self.paused_queues().await?.get(name).copied();
        self.summed_stats(name, paused_at).await
    }

    /// The depths and throughput of queue `name`, paused since `paused_at`.
    async fn summed_stats(&self, name: &str, paused_at: Option<u64>) -> anyhow::Result<QueueStats> {
        let tags = self.tags_of(name).await?;
        let mut stats = QueueStats {
            name: name.to_owned(),
            partitions: tags.len() as u32,
            paused_at,
            waiting: PriorityCounts::default(),
            running: 0,
            delayed: 0,
            oldest_waiting_ms: 0,
            completed_last_minute: 0,
            failed_last_minute: 0,
        };
        for tag in tags.iter() {
            let part = self.partition_stats(tag).await?;
            stats.waiting.high += part.waiting.high;
            stats.waiting.normal += part.waiting.normal;
            stats.waiting.low += part.waiting.low;
            stats.running += part.running;
            stats.delayed += part.delayed;
            stats.oldest_waiting_ms = stats.oldest_waiting_ms.max(part.oldest_waiting_ms);
            stats.completed_last_minute += part.completed_last_minute;
            stats.failed_last_minute += part.failed_last_minute;
        }
        Ok(stats)
    }

    /// The depths and throughput of the partition tagged `tag`.
    async fn partition_stats(&self, tag: &str) -> anyhow::Result<QueueStats> {
        let keys = self.keys(tag);
        let mut conn = self.connection();
        let now = unix_millis(SystemTime::now());
        let mut waiting = PriorityCounts::default();
        let mut running = 0;
        let mut oldest: Option<u64> = None;
        for priority in Priority::ALL {
            let stream = keys.stream(priority);
            let (length, groups): (u64, redis::Value) = redis::pipe()
                .xlen(&stream)
                .cmd("XINFO")
                .arg("GROUPS")
                .arg(&stream)
                .query_async(&mut conn)
                .await
                .unwrap_or((0, redis::Value::Nil));
            let (pending, delivered) = group_info(groups);
            running += pending;
            let count = length.saturating_sub(pending);
            match priority {
                Priority::High => waiting.high = count,
                Priority::Normal => waiting.normal = count,
                Priority::Low => waiting.low = count,
            }
            if count > 0 {
                let next: redis::streams::StreamRangeReply = conn
                    .xrange_count(&stream, format!("({delivered}"), "+", 1)
                    .await?;
                if let Some(entry) = next.ids.first() {
                    let enqueued = entry
                        .id
                        .split('-')
                        .next()
                        .and_then(|ms| ms.parse::<u64>().ok())
                        .unwrap_or(now);
                    oldest = Some(oldest.map_or(enqueued, |oldest| oldest.min(enqueued)));
                }
            }
        }
        let delayed: u64 = conn.zcard(keys.delayed()).await?;
        let minute = now / 60_000 - 1;
        let counts: HashMap<String, u64> = conn.hgetall(keys.counts(minute)).await?;
        Ok(QueueStats {
            name: tag.to_owned(),
            partitions: 1,
            paused_at: None,
            waiting,
            running,
            delayed,
            oldest_waiting_ms: oldest.map_or(0, |oldest| now.saturating_sub(oldest)),
            completed_last_minute: counts.get("completed").copied().unwrap_or(0),
            failed_last_minute: counts.get("failed").copied().unwrap_or(0),
        })
    }

    /// Jobs completed and attempts failed in each kept `period` (the last hour's minutes, the
    /// last day's hours) over every queue, oldest first; the current one last, so far.
    pub async fn throughput(&self, period: Period) -> anyhow::Result<Vec<PeriodCounts>> {
        let count = period.kept();
        let now = unix_millis(SystemTime::now()) / period.millis();
        let first = now + 1 - count;
        let tags = self.partition_tags(&self.queue_names().await?).await?;
        let mut reads = Vec::new();
        for tag in &tags {
            for n in first..=now {
                reads.push((
                    tag.as_str(),
                    redis::Cmd::hgetall(period.key(&self.keys(tag), n)),
                ));
            }
        }
        let counts: Vec<HashMap<String, u64>> = self.query_by_queue(reads).await?;
        let mut totals: Vec<PeriodCounts> = (first..=now)
            .map(|n| PeriodCounts {
                period: n,
                completed: 0,
                failed: 0,
            })
            .collect();
        for (index, counts) in counts.iter().enumerate() {
            let total = &mut totals[index % count as usize];
            total.completed += counts.get("completed").copied().unwrap_or(0);
            total.failed += counts.get("failed").copied().unwrap_or(0);
        }
        Ok(totals)
    }

    /// Records how a worker is doing; listed by [`Queue::workers`] while it keeps reporting.
    pub(crate) async fn report_worker(&self, worker: &WorkerInfo) -> anyhow::Result<()> {
        let () = self
            .connection()
            .hset(
                keys::workers(self.store.prefix()),
                &worker.id,
                serde_json::to_string(worker)?,
            )
            .await?;
        Ok(())
    }

    /// The workers that reported recently; forgets those silent for long.
    pub async fn workers(&self) -> anyhow::Result<Vec<WorkerInfo>> {
        let mut conn = self.connection();
        let key = keys::workers(self.store.prefix());
        let stored: HashMap<String, String> = conn.hgetall(&key).await?;
        let now = unix_millis(SystemTime::now());
        let silence = WORKER_SILENCE.as_millis() as u64;
        let mut workers = Vec::new();
        for (id, json) in stored {
            match serde_json::from_str::<WorkerInfo>(&json) {
                Ok(worker) if now.saturating_sub(worker.last_heartbeat) < silence => {
                    workers.push(worker);
                }
                _ => {
                    let () = conn.hdel(&key, &id).await?;
                }
            }
        }
        workers.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(workers)
    }

    /// Whether Redis answers.
    pub async fn ping(&self) -> anyhow::Result<()> {
        let () = redis::cmd("PING")
            .query_async(&mut self.connection())
            .await?;
        Ok(())
    }
}

/// The consumer group's pending count and last delivered id, from `XINFO GROUPS`.
fn group_info(groups: redis::Value) -> (u64, String) {
    let groups: Vec<HashMap<String, redis::Value>> =
        redis::from_redis_value(groups).unwrap_or_default();
    let Some(group) = groups.into_iter().next() else {
        return (0, "0-0".to_owned());
    };
    let pending = group
        .get("pending")
        .and_then(|value| redis::from_redis_value_ref::<u64>(value).ok())
        .unwrap_or(0);
    let delivered = group
        .get("last-delivered-id")
        .and_then(|value| redis::from_redis_value_ref::<String>(value).ok())
        .unwrap_or_else(|| "0-0".to_owned());
    (pending, delivered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let position = Position {
            created_at: 1_700_000_000_123,
            id: "default-abc".into(),
        };
        assert_eq!(Position::decode(&position.encode()).unwrap(), position);
        assert!(Position::decode("not a cursor").is_err());
        assert!(
            Position::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("x"))
                .is_err()
        );
    }

    #[test]
    fn an_input_match_finds_a_value_at_its_path() {
        let wanted: InputMatch = "customer.id=42".parse().unwrap();
        assert!(wanted.matches(br#"{"customer": {"id": 42}}"#));
        assert!(wanted.matches(br#"{"customer": {"id": "42"}}"#));
        assert!(!wanted.matches(br#"{"customer": {"id": 43}}"#));
        assert!(!wanted.matches(br#"{"customer": 42}"#));
        assert!(!wanted.matches(b"not json"));
        let item: InputMatch = "items.1.sku=b".parse().unwrap();
        assert!(item.matches(br#"{"items": [{"sku": "a"}, {"sku": "b"}]}"#));
        assert!(!item.matches(br#"{"items": [{"sku": "a"}]}"#));
    }

    #[test]
    fn an_input_match_that_cannot_be_read_says_why() {
        assert!("no-equals".parse::<InputMatch>().is_err());
        assert!("a..b=1".parse::<InputMatch>().is_err());
        assert!(
            format!("a={}", "x".repeat(300))
                .parse::<InputMatch>()
                .is_err()
        );
    }
}
