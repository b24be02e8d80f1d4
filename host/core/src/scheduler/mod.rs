//! Cron schedules: stored in Redis, fired by any number of schedulers without a leader.
//!
//! A schedule enqueues a job of a module's task at the times its cron expression names, in
//! its time zone (see [`expr`] for the syntax and the daylight-saving rules). Schedules come
//! from the API (`name`) and from module manifests (`module:name`, replaced whenever the
//! module's highest version changes).
//!
//! Every scheduler polls a sorted set of schedules by next fire time, on Redis's clock. A
//! fire's job is enqueued with the idempotency key `cron:{name}:{fire time}`, which the
//! enqueue script claims with SET NX in the same step that creates the job: however many
//! schedulers see a fire, exactly one job is created for it, and a scheduler that dies
//! mid-fire leaves either no claim or the job. Fires more than a minute late were missed
//! (no scheduler ran): the schedule's [`CatchUp`] policy says whether one of them still runs.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use redis::AsyncCommands as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::metrics::metrics;
use crate::model::cron::{CatchUp, CronExpr, FIRE_KEY_PREFIX, parse_zone};
use crate::model::names::{is_plain_name, validate_name};
use crate::queue::{EnqueueError, EnqueueOptions, NewJob, Queue};
use crate::registry::{self, RegistryError};
use crate::store::TimedInvoke as _;
use crate::store::keys::CronKeys;

/// How often a scheduler looks for due schedules, on average (each pause is jittered).
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// A fire this late was missed: no scheduler ran at its time.
pub const MISSED_AFTER: Duration = Duration::from_secs(60);
/// The most fires of one schedule enqueued in one look (a seconds schedule after a stall).
const MAX_FIRES_PER_LOOK: usize = 100;
/// The most schedules handled in one look; the rest wait for the next.
const MAX_DUE_PER_LOOK: isize = 500;

/// A schedule: which task to enqueue, with which input, when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Schedule {
    /// `name` for a schedule made over the API, `module:name` for one from a manifest.
    pub name: String,
    /// The cron expression.
    #[schema(example = "0 9 * * MON-FRI")]
    pub cron: String,
    /// The IANA time zone `cron` is read in.
    #[schema(example = "Europe/Paris")]
    pub timezone: String,
    /// The module; each fire runs its highest version at that time.
    pub module: String,
    /// The task.
    pub task: String,
    /// The job input (JSON).
    #[schema(value_type = Object)]
    pub input: Value,
    /// The queue; the task's from the manifest, else `default`, when none.
    pub queue: Option<String>,
    /// What happens to fires missed while no scheduler ran.
    pub catch_up: CatchUp,
    /// A paused schedule does not fire; when resumed, it goes on from its next fire.
    pub paused: bool,
    /// `api`, or `manifest` for one that the module's manifest declares.
    pub source: Source,
}

/// Where a schedule comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Made with the API or `taskbox cron add`.
    Api,
    /// Declared in the module's manifest: it changes only with the module.
    Manifest,
}

/// A schedule with what it did last and will do next.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleStatus {
    #[serde(flatten)]
    pub schedule: Schedule,
    /// When it fires next (RFC 3339, UTC); none while paused.
    pub next_fire: Option<String>,
    /// The last fire that enqueued a job.
    pub last_fire: Option<String>,
    /// That job's id.
    pub last_job: Option<String>,
    /// That job's status, while the job is kept.
    pub last_job_status: Option<String>,
    /// Why the last fire enqueued nothing (the module or task is gone), until one succeeds.
    pub last_error: Option<String>,
}

/// Why a schedule could not be stored or found.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// A field is invalid; the message names it.
    #[error("{0}")]
    Invalid(String),
    /// The module does not exist.
    #[error("{0}")]
    UnknownModule(String),
    /// The module has no such task.
    #[error("{0}")]
    UnknownTask(String),
    /// There is no such schedule.
    #[error("there is no schedule `{0}`")]
    NotFound(String),
    /// A schedule of that name exists.
    #[error("a schedule named `{0}` exists")]
    Exists(String),
    /// It belongs to a module's manifest.
    #[error(
        "schedule `{0}` comes from its module's manifest: push a version without it, or pause it"
    )]
    FromManifest(String),
    /// Redis failed.
    #[error(transparent)]
    Redis(#[from] anyhow::Error),
}

impl From<redis::RedisError> for ScheduleError {
    fn from(err: redis::RedisError) -> Self {
        Self::Redis(err.into())
    }
}

/// The schedules of all tenants, in Redis.
#[derive(Debug, Clone)]
pub struct Schedules {
    queue: Queue,
    advance: redis::Script,
}

fn member(tenant: &str, name: &str) -> String {
    format!("{tenant}/{name}")
}

fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Redis's clock.
async fn redis_now(queue: &Queue) -> anyhow::Result<DateTime<Utc>> {
    let (seconds, micros): (i64, i64) = redis::cmd("TIME")
        .query_async(&mut queue.connection())
        .await?;
    DateTime::from_timestamp_micros(seconds * 1_000_000 + micros).context("Redis TIME is invalid")
}

impl Schedule {
    /// Checks the fields: the expression, the zone, the queue and the names.
    pub fn check(&self) -> Result<(CronExpr, chrono_tz::Tz), ScheduleError> {
        let expr = CronExpr::parse(&self.cron).map_err(|err| {
            ScheduleError::Invalid(format!("field `cron`: `{}`: {err}", self.cron))
        })?;
        let zone = parse_zone(&self.timezone)
            .map_err(|err| ScheduleError::Invalid(format!("field `timezone`: {err}")))?;
        if let Some(queue) = &self.queue {
            validate_name("queue", queue)
                .map_err(|err| ScheduleError::Invalid(format!("field `queue`: {err}")))?;
        }
        let plain = match self.source {
            Source::Api => is_plain_name(&self.name),
            Source::Manifest => self
                .name
                .split_once(':')
                .is_some_and(|(module, name)| is_plain_name(module) && is_plain_name(name)),
        };
        if !plain {
            return Err(ScheduleError::Invalid(format!(
                "field `name`: `{}` is not a name: use 1 to 64 letters, digits, `-`, `_` or `.`",
                self.name
            )));
        }
        Ok((expr, zone))
    }
}

impl Schedules {
    /// The schedules stored in `queue`'s Redis.
    pub fn new(queue: Queue) -> Self {
        Self {
            queue,
            advance: redis::Script::new(include_str!("lua/advance.lua")),
        }
    }

    fn keys(&self) -> CronKeys {
        CronKeys::new(self.queue.store().prefix())
    }

    /// Stores a schedule made over the API, after checking its fields and that its module
    /// and task exist. Refused when the name is taken, unless `replace` (and the one it
    /// replaces is not a manifest's).
    pub async fn put(
        &self,
        tenant: &str,
        schedule: Schedule,
        replace: bool,
    ) -> Result<ScheduleStatus, ScheduleError> {
        schedule.check()?;
        let module = registry::resolve(self.queue.store(), tenant, &schedule.module, None)
            .await
            .map_err(|err| match err {
                RegistryError::NotFound(message) => ScheduleError::UnknownModule(message),
                other => ScheduleError::Redis(other.into()),
            })?;
        module
            .manifest
            .task(&schedule.task)
            .map_err(|err| ScheduleError::UnknownTask(err.to_string()))?;
        match self.stored(tenant, &schedule.name).await? {
            Some(old) if old.source == Source::Manifest => {
                return Err(ScheduleError::FromManifest(schedule.name));
            }
            Some(_) if !replace => return Err(ScheduleError::Exists(schedule.name)),
            _ => {}
        }
        self.store(tenant, &schedule).await?;
        self.status(tenant, &schedule.name)
            .await?
            .ok_or(ScheduleError::NotFound(schedule.name))
    }

    /// Writes `schedule`. A changed expression or zone, or a resume, counts fires from now;
    /// otherwise the schedule keeps its place.
    async fn store(&self, tenant: &str, schedule: &Schedule) -> Result<(), ScheduleError> {
        let (expr, zone) = schedule.check()?;
        let keys = self.keys();
        let member = member(tenant, &schedule.name);
        let old = self.stored(tenant, &schedule.name).await?;
        if old.as_ref() == Some(schedule) {
            return Ok(());
        }
        let json = serde_json::to_string(schedule).map_err(anyhow::Error::from)?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset(keys.schedules(tenant), &schedule.name, &json)
            .ignore();
        let keeps_place = old.is_some_and(|old| {
            !old.paused && old.cron == schedule.cron && old.timezone == schedule.timezone
        });
        if schedule.paused {
            pipe.zrem(keys.due(), &member).ignore();
        } else if !keeps_place {
            let now = redis_now(&self.queue).await?;
            pipe.hset(keys.state(&member), "after", millis(now))
                .ignore();
            match expr.fires_after(zone, now).next() {
                Some(next) => pipe.zadd(keys.due(), &member, millis(next)).ignore(),
                None => pipe.zrem(keys.due(), &member).ignore(),
            };
        }
        pipe.query_async::<()>(&mut self.queue.connection()).await?;
        Ok(())
    }

    async fn stored(&self, tenant: &str, name: &str) -> Result<Option<Schedule>, ScheduleError> {
        let json: Option<String> = self
            .queue
            .connection()
            .hget(self.keys().schedules(tenant), name)
            .await?;
        json.map(|json| serde_json::from_str(&json).map_err(anyhow::Error::from))
            .transpose()
            .map_err(ScheduleError::Redis)
    }

    /// Pauses or resumes a schedule.
    pub async fn set_paused(
        &self,
        tenant: &str,
        name: &str,
        paused: bool,
    ) -> Result<ScheduleStatus, ScheduleError> {
        let mut schedule = self
            .stored(tenant, name)
            .await?
            .ok_or_else(|| ScheduleError::NotFound(name.to_owned()))?;
        schedule.paused = paused;
        self.store(tenant, &schedule).await?;
        self.status(tenant, name)
            .await?
            .ok_or_else(|| ScheduleError::NotFound(name.to_owned()))
    }

    /// Enqueues schedule `name`'s job now, outside its fires (paused or not); the schedule
    /// itself is left as it is. Returns the job's id.
    pub async fn run_now(&self, tenant: &str, name: &str) -> Result<String, ScheduleError> {
        let schedule = self
            .stored(tenant, name)
            .await?
            .ok_or_else(|| ScheduleError::NotFound(name.to_owned()))?;
        let metadata = serde_json::json!({"schedule": schedule.name, "run_now": true});
        let enqueued = match job_of(&schedule, metadata, None) {
            Ok(job) => self.queue.enqueue(tenant, job).await,
            Err(err) => Err(err),
        };
        match enqueued {
            Ok(enqueued) => Ok(enqueued.id),
            Err(EnqueueError::UnknownModule(message)) => Err(ScheduleError::UnknownModule(message)),
            Err(EnqueueError::UnknownTask(message)) => Err(ScheduleError::UnknownTask(message)),
            Err(EnqueueError::Redis(err)) => Err(ScheduleError::Redis(err)),
            Err(err) => Err(ScheduleError::Invalid(err.to_string())),
        }
    }

    /// Deletes a schedule made over the API.
    pub async fn remove(&self, tenant: &str, name: &str) -> Result<(), ScheduleError> {
        match self.stored(tenant, name).await? {
            None => Err(ScheduleError::NotFound(name.to_owned())),
            Some(schedule) if schedule.source == Source::Manifest => {
                Err(ScheduleError::FromManifest(name.to_owned()))
            }
            Some(_) => self.delete(tenant, name).await,
        }
    }

    async fn delete(&self, tenant: &str, name: &str) -> Result<(), ScheduleError> {
        let keys = self.keys();
        let member = member(tenant, name);
        redis::pipe()
            .atomic()
            .hdel(keys.schedules(tenant), name)
            .zrem(keys.due(), &member)
            .del(keys.state(&member))
            .query_async::<()>(&mut self.queue.connection())
            .await?;
        Ok(())
    }

    /// Makes module `name`'s manifest schedules those of its highest version: new ones are
    /// added, changed ones replaced (a paused one stays paused), and ones it no longer
    /// declares, or all when the module is gone, deleted.
    pub async fn sync_module(&self, tenant: &str, name: &str) -> Result<(), ScheduleError> {
        let declared = match registry::resolve(self.queue.store(), tenant, name, None).await {
            Ok(module) => module.manifest.schedules,
            Err(RegistryError::NotFound(_)) => Vec::new(),
            Err(err) => return Err(ScheduleError::Redis(err.into())),
        };
        let prefix = format!("{name}:");
        let existing: HashMap<String, Schedule> = self
            .all(tenant)
            .await?
            .into_iter()
            .filter(|schedule| {
                schedule.source == Source::Manifest && schedule.name.starts_with(&prefix)
            })
            .map(|schedule| (schedule.name.clone(), schedule))
            .collect();
        let mut kept = Vec::new();
        for declared in declared {
            let full = format!("{prefix}{}", declared.name);
            let schedule = Schedule {
                paused: existing.get(&full).is_some_and(|old| old.paused),
                name: full,
                cron: declared.cron,
                timezone: declared.timezone.unwrap_or_else(|| "UTC".into()),
                module: name.to_owned(),
                task: declared.task,
                input: declared.input.unwrap_or(Value::Null),
                queue: declared.queue,
                catch_up: declared.catch_up.unwrap_or_default(),
                source: Source::Manifest,
            };
            self.store(tenant, &schedule).await?;
            kept.push(schedule.name);
        }
        for old in existing.keys().filter(|old| !kept.contains(old)) {
            self.delete(tenant, old).await?;
        }
        Ok(())
    }

    async fn all(&self, tenant: &str) -> Result<Vec<Schedule>, ScheduleError> {
        let stored: HashMap<String, String> = self
            .queue
            .connection()
            .hgetall(self.keys().schedules(tenant))
            .await?;
        let mut schedules = stored
            .values()
            .map(|json| serde_json::from_str(json))
            .collect::<Result<Vec<Schedule>, _>>()
            .map_err(anyhow::Error::from)?;
        schedules.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(schedules)
    }

    /// The tenant's schedules with their state, by name.
    pub async fn list(&self, tenant: &str) -> Result<Vec<ScheduleStatus>, ScheduleError> {
        let mut statuses = Vec::new();
        for schedule in self.all(tenant).await? {
            statuses.push(self.with_state(tenant, schedule).await?);
        }
        Ok(statuses)
    }

    /// One schedule with its state.
    pub async fn status(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<ScheduleStatus>, ScheduleError> {
        match self.stored(tenant, name).await? {
            Some(schedule) => Ok(Some(self.with_state(tenant, schedule).await?)),
            None => Ok(None),
        }
    }

    async fn with_state(
        &self,
        tenant: &str,
        schedule: Schedule,
    ) -> Result<ScheduleStatus, ScheduleError> {
        let keys = self.keys();
        let member = member(tenant, &schedule.name);
        let (state, next): (HashMap<String, String>, Option<i64>) = redis::pipe()
            .hgetall(keys.state(&member))
            .zscore(keys.due(), &member)
            .query_async(&mut self.queue.connection())
            .await?;
        let last_job = state.get("last_job").cloned();
        let last_job_status = match &last_job {
            Some(id) => self
                .queue
                .job(id)
                .await?
                .map(|job| job.status.as_str().to_owned()),
            None => None,
        };
        let time = |field: &str| {
            state
                .get(field)
                .and_then(|ms| ms.parse().ok())
                .map(|ms| rfc3339(from_millis(ms)))
        };
        Ok(ScheduleStatus {
            next_fire: next.map(|ms| rfc3339(from_millis(ms))),
            last_fire: time("last_fire"),
            last_job,
            last_job_status,
            last_error: state.get("last_error").cloned(),
            schedule,
        })
    }
}

/// Where a scheduler reads the time.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self, queue: &Queue) -> impl Future<Output = anyhow::Result<DateTime<Utc>>> + Send;
}

/// Redis's clock, which all schedulers share.
#[derive(Debug, Clone, Copy, Default)]
pub struct RedisClock;

impl Clock for RedisClock {
    async fn now(&self, queue: &Queue) -> anyhow::Result<DateTime<Utc>> {
        redis_now(queue).await
    }
}

/// Fires due schedules. Run as many as you like: each fire enqueues exactly one job.
#[derive(Debug)]
pub struct Scheduler<C = RedisClock> {
    schedules: Schedules,
    clock: C,
}

impl Scheduler<RedisClock> {
    /// A scheduler on Redis's clock.
    pub fn new(queue: Queue) -> Self {
        Self::with_clock(queue, RedisClock)
    }
}

impl<C: Clock> Scheduler<C> {
    /// A scheduler that reads the time from `clock`.
    pub fn with_clock(queue: Queue, clock: C) -> Self {
        Self {
            schedules: Schedules::new(queue),
            clock,
        }
    }

    /// Looks for due schedules about once a [`POLL_INTERVAL`] until `shutdown` resolves.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            if let Err(err) = self.tick().await {
                tracing::warn!("scheduler: {err:#}");
            }
            let pause = POLL_INTERVAL.mul_f64(rand::random_range(0.75..1.25));
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Fires what is due now; returns the jobs this scheduler created.
    pub async fn tick(&self) -> anyhow::Result<usize> {
        let queue = &self.schedules.queue;
        let now = self.clock.now(queue).await?;
        let keys = self.schedules.keys();
        let due: Vec<String> = queue
            .connection()
            .zrangebyscore_limit(keys.due(), "-inf", millis(now), 0, MAX_DUE_PER_LOOK)
            .await?;
        let mut created = 0;
        for member in due {
            match self.fire(&member, now).await {
                Ok(jobs) => created += jobs,
                Err(err) => tracing::warn!("schedule {member}: {err:#}"),
            }
        }
        Ok(created)
    }

    /// Enqueues the fires of one schedule that are due at `now`, then moves it on.
    async fn fire(&self, member: &str, now: DateTime<Utc>) -> anyhow::Result<usize> {
        let queue = &self.schedules.queue;
        let keys = self.schedules.keys();
        let (tenant, name) = member
            .split_once('/')
            .with_context(|| format!("malformed schedule member `{member}`"))?;
        let (json, state): (Option<String>, HashMap<String, String>) = redis::pipe()
            .hget(keys.schedules(tenant), name)
            .hgetall(keys.state(member))
            .query_async(&mut queue.connection())
            .await?;
        let Some(json) = json else {
            let () = queue.connection().zrem(keys.due(), member).await?;
            return Ok(0);
        };
        let schedule: Schedule = serde_json::from_str(&json)?;
        let (expr, zone) = schedule.check()?;
        let after = state
            .get("after")
            .and_then(|ms| ms.parse().ok())
            .map_or(now, from_millis);
        let horizon = now - TimeDelta::from_std(MISSED_AFTER)?;
        let mut fires: Vec<DateTime<Utc>> = expr
            .fires_after(zone, after.max(horizon))
            .take_while(|at| *at <= now)
            .take(MAX_FIRES_PER_LOOK)
            .collect();
        if fires.is_empty()
            && schedule.catch_up == CatchUp::Latest
            && let Some(missed) = expr.latest_at_or_before(zone, horizon)
            && missed > after
        {
            fires.push(missed);
        }
        let mut created = 0;
        let mut last = None;
        let mut error = None;
        for at in fires.iter().copied() {
            match self.enqueue(tenant, &schedule, at).await {
                Ok(Some(id)) => {
                    metrics().cron_fired(tenant, "enqueued");
                    created += 1;
                    last = Some((at, id));
                    error = None;
                }
                Ok(None) => {}
                Err(EnqueueError::Redis(err)) => {
                    metrics().cron_fired(tenant, "failed");
                    return Err(err);
                }
                Err(err) => {
                    metrics().cron_fired(tenant, "failed");
                    error = Some(err.to_string());
                }
            }
        }
        // Capped fires leave the rest for the next look.
        let handled = match fires.len() {
            MAX_FIRES_PER_LOOK => fires[MAX_FIRES_PER_LOOK - 1],
            _ => now,
        };
        let next = expr.fires_after(zone, handled).next();
        if let Some(next) = next {
            metrics().cron_next(tenant, name, next.timestamp());
        }
        let (last_fire, last_job) = last
            .map(|(at, id)| (millis(at).to_string(), id))
            .unwrap_or_default();
        let _: i64 = self
            .schedules
            .advance
            .key(keys.schedules(tenant))
            .key(keys.due())
            .key(keys.state(member))
            .arg(name)
            .arg(&json)
            .arg(millis(handled))
            .arg(
                next.map(millis)
                    .map(|ms| ms.to_string())
                    .unwrap_or_default(),
            )
            .arg(member)
            .arg(last_fire)
            .arg(last_job)
            .arg(error.unwrap_or_default())
            .invoke_timed("advance", &mut queue.connection())
            .await?;
        Ok(created)
    }

    /// Enqueues the job of the fire at `at`; `None` when another scheduler already did.
    async fn enqueue(
        &self,
        tenant: &str,
        schedule: &Schedule,
        at: DateTime<Utc>,
    ) -> Result<Option<String>, EnqueueError> {
        let job = job_of(
            schedule,
            serde_json::json!({"schedule": schedule.name, "fire_at": rfc3339(at)}),
            Some(fire_key(&schedule.name, at)),
        )?;
        let enqueued = self.schedules.queue.enqueue(tenant, job).await?;
        Ok(enqueued.created.then_some(enqueued.id))
    }
}

/// The job `schedule` enqueues, with `metadata` saying what enqueued it.
fn job_of(
    schedule: &Schedule,
    metadata: Value,
    idempotency_key: Option<String>,
) -> Result<NewJob, EnqueueError> {
    Ok(NewJob {
        module: schedule.module.clone(),
        task: schedule.task.clone(),
        input: serde_json::to_vec(&schedule.input).map_err(anyhow::Error::from)?,
        options: EnqueueOptions {
            queue: schedule.queue.clone(),
            idempotency_key,
            metadata: Some(metadata),
            ..EnqueueOptions::default()
        },
    })
}

/// The idempotency key that claims one fire of a schedule.
pub fn fire_key(name: &str, at: DateTime<Utc>) -> String {
    format!("{FIRE_KEY_PREFIX}{name}:{}", millis(at))
}
