//! Cron schedules against a real `redis-server`: several schedulers on an injected clock over
//! simulated hours and days, catch-up after downtime, daylight-saving transitions, manifest
//! schedules following their module, and the API and CLI with a real scheduler and worker.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use taskbox::api::{ApiConfig, router, serve_router};
use taskbox_core::model::cron::{CatchUp, CronExpr, parse_zone};
use taskbox_core::model::job::{JobRecord, JobStatus};
use taskbox_core::model::manifest::Manifest;
use taskbox_core::queue::{JobFilter, Queue};
use taskbox_core::registry::{Registry, RegistryConfig};
use taskbox_core::scheduler::{Clock, Schedule, Scheduler, Schedules, Source};
use taskbox_core::worker::{Worker, WorkerConfig};

use crate::support::private_redis::TestRedis;
use crate::support::{guests, host, private_redis, wait};

const TENANT: &str = "default";

/// A clock the test moves; each scheduler may read it a little off, as real hosts do.
#[derive(Debug, Clone)]
struct TestClock {
    now: Arc<AtomicI64>,
    skew_ms: i64,
}

impl Clock for TestClock {
    async fn now(&self, _: &Queue) -> anyhow::Result<DateTime<Utc>> {
        let ms = self.now.load(Ordering::SeqCst) + self.skew_ms;
        Ok(DateTime::from_timestamp_millis(ms).unwrap())
    }
}

/// Redis with the hello module published.
struct Setup {
    redis: TestRedis,
    queue: Queue,
    registry: Registry,
    schedules: Schedules,
}

impl Setup {
    async fn start() -> Self {
        let (redis, queue) = private_redis::start().await;
        let registry = Registry::new(queue.clone(), host::runtime(), RegistryConfig::default());
        let setup = Self {
            redis,
            schedules: Schedules::new(queue.clone()),
            queue,
            registry,
        };
        setup.publish("0.1.0", "").await;
        setup
    }

    /// Publishes hello as `version`, with `extra` appended to its manifest, and syncs its
    /// schedules, as the API does.
    async fn publish(&self, version: &str, extra: &str) {
        let text = host::manifest_text("hello")
            .replace("version = \"0.1.0\"", &format!("version = \"{version}\""))
            + extra;
        let manifest = Manifest::parse("taskbox.toml", &text).unwrap();
        let bytes = std::fs::read(guests::wasm("hello")).unwrap();
        self.registry
            .publish(TENANT, manifest, bytes)
            .await
            .unwrap();
        self.schedules.sync_module(TENANT, "hello").await.unwrap();
    }

    /// Deletes hello at `version`, as the API does.
    async fn delete(&self, version: &str) {
        self.registry
            .delete(TENANT, "hello", version, false)
            .await
            .unwrap();
        self.schedules.sync_module(TENANT, "hello").await.unwrap();
    }

    async fn add(&self, name: &str, cron: &str, timezone: &str, catch_up: CatchUp) {
        let schedule = Schedule {
            name: name.into(),
            cron: cron.into(),
            timezone: timezone.into(),
            module: "hello".into(),
            task: "greet".into(),
            input: json!({"name": name}),
            queue: None,
            catch_up,
            paused: false,
            source: Source::Api,
        };
        self.schedules.put(TENANT, schedule, false).await.unwrap();
    }

    /// Redis's time now: schedules count their fires from it.
    async fn redis_now(&self) -> DateTime<Utc> {
        let mut connection = private_redis::connection(&self.redis).await;
        let (seconds, micros): (i64, i64) = redis::cmd("TIME")
            .query_async(&mut connection)
            .await
            .unwrap();
        DateTime::from_timestamp_micros(seconds * 1_000_000 + micros).unwrap()
    }

    /// Every job the schedules made: schedule name → fire times, in order.
    async fn fires(&self) -> BTreeMap<String, Vec<DateTime<Utc>>> {
        let mut fires: BTreeMap<String, Vec<DateTime<Utc>>> = BTreeMap::new();
        for job in self.jobs().await {
            let metadata = job.metadata.expect("a scheduled job says its schedule");
            let at = DateTime::parse_from_rfc3339(metadata["fire_at"].as_str().unwrap())
                .unwrap()
                .with_timezone(&Utc);
            fires
                .entry(metadata["schedule"].as_str().unwrap().to_owned())
                .or_default()
                .push(at);
        }
        for times in fires.values_mut() {
            times.sort();
        }
        fires
    }

    async fn jobs(&self) -> Vec<JobRecord> {
        let mut jobs = Vec::new();
        let mut cursor = None;
        loop {
            let page = self
                .queue
                .list(TENANT, &JobFilter::default(), cursor.as_deref(), 500)
                .await
                .unwrap();
            jobs.extend(page.jobs);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return jobs,
            }
        }
    }
}

/// What `cron` fires in `zone` in (from, to].
fn expected(cron: &str, zone: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    CronExpr::parse(cron)
        .unwrap()
        .fires_after(parse_zone(zone).unwrap(), from)
        .take_while(|at| *at <= to)
        .collect()
}

fn schedulers(setup: &Setup, now: &Arc<AtomicI64>, skews: &[i64]) -> Vec<Scheduler<TestClock>> {
    skews
        .iter()
        .map(|skew_ms| {
            let clock = TestClock {
                now: Arc::clone(now),
                skew_ms: *skew_ms,
            };
            Scheduler::with_clock(setup.queue.clone(), clock)
        })
        .collect()
}

/// Moves the clock from its time to `to` in `step`s, every scheduler looking at each step
/// at once; returns the jobs they say they created.
async fn run_until(
    schedulers: &[Scheduler<TestClock>],
    now: &AtomicI64,
    to: DateTime<Utc>,
    step: TimeDelta,
) -> usize {
    let mut created = 0;
    while now.load(Ordering::SeqCst) < to.timestamp_millis() {
        let next =
            (now.load(Ordering::SeqCst) + step.num_milliseconds()).min(to.timestamp_millis());
        now.store(next, Ordering::SeqCst);
        let ticks = schedulers.iter().map(Scheduler::tick);
        for result in futures_util::future::join_all(ticks).await {
            created += result.unwrap();
        }
    }
    created
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_schedulers_enqueue_exactly_one_job_per_fire() {
    let setup = Setup::start().await;
    setup
        .add("every-30s", "*/30 * * * * *", "UTC", CatchUp::Latest)
        .await;
    setup
        .add("every-5m", "*/5 * * * *", "UTC", CatchUp::Latest)
        .await;
    setup
        .add("hourly-paris", "@hourly", "Europe/Paris", CatchUp::Skip)
        .await;
    let start = setup.redis_now().await;
    let now = Arc::new(AtomicI64::new(start.timestamp_millis()));
    // Three schedulers whose clocks disagree by up to 0.7 s, as separate hosts' would.
    let schedulers = schedulers(&setup, &now, &[-400, 0, 300]);
    let end = start + TimeDelta::hours(2);
    let created = run_until(&schedulers, &now, end, TimeDelta::seconds(7)).await;

    let fires = setup.fires().await;
    // The last step's fires may be seen only by the schedulers whose clocks run ahead.
    let seen_until = end - TimeDelta::milliseconds(400);
    for (name, cron, zone) in [
        ("every-30s", "*/30 * * * * *", "UTC"),
        ("every-5m", "*/5 * * * *", "UTC"),
        ("hourly-paris", "@hourly", "Europe/Paris"),
    ] {
        let want = expected(cron, zone, start, seen_until);
        let got: Vec<_> = fires[name]
            .iter()
            .copied()
            .filter(|at| *at <= seen_until)
            .collect();
        assert_eq!(
            got, want,
            "{name}: one job per fire, none missing, none twice"
        );
    }
    let total: usize = fires.values().map(Vec::len).sum();
    assert_eq!(
        created, total,
        "every job was counted by exactly one scheduler"
    );
    assert!(total >= 240 + 24 + 2, "{total} jobs");

    // Each schedule shows its last fire, its job and its next fire.
    let status = setup
        .schedules
        .status(TENANT, "every-5m")
        .await
        .unwrap()
        .unwrap();
    let last = fires["every-5m"].last().unwrap();
    assert_eq!(
        status.last_fire.as_deref(),
        Some(
            last.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                .as_str()
        )
    );
    assert_eq!(status.last_job_status.as_deref(), Some("pending"));
    let next = DateTime::parse_from_rfc3339(status.next_fire.as_deref().unwrap()).unwrap();
    assert_eq!(next, *last + TimeDelta::minutes(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_downtime_latest_runs_one_late_fire_and_skip_runs_none() {
    let setup = Setup::start().await;
    setup
        .add("latest", "*/10 * * * *", "UTC", CatchUp::Latest)
        .await;
    setup
        .add("skip", "*/10 * * * *", "UTC", CatchUp::Skip)
        .await;
    let start = setup.redis_now().await;
    let now = Arc::new(AtomicI64::new(start.timestamp_millis()));
    let before = schedulers(&setup, &now, &[0]);
    let down_at = start + TimeDelta::minutes(30);
    run_until(&before, &now, down_at, TimeDelta::seconds(10)).await;
    let on_time = setup.fires().await;
    assert_eq!(
        on_time["latest"],
        expected("*/10 * * * *", "UTC", start, down_at)
    );
    assert_eq!(on_time["skip"], on_time["latest"]);
    drop(before);

    // About two and a half hours later a scheduler starts again, five minutes past a fire: a
    // fire less than a minute old at a restart is on time, not missed, and runs for `skip` too.
    let ten_minutes = TimeDelta::minutes(10).num_milliseconds();
    let later = (down_at + TimeDelta::minutes(150)).timestamp_millis();
    let up_at =
        DateTime::from_timestamp_millis((later / ten_minutes + 1) * ten_minutes + ten_minutes / 2)
            .unwrap();
    now.store(up_at.timestamp_millis(), Ordering::SeqCst);
    let after = schedulers(&setup, &now, &[0]);
    assert_eq!(after[0].tick().await.unwrap(), 1, "one late run in all");
    let fires = setup.fires().await;
    let missed = expected(
        "*/10 * * * *",
        "UTC",
        down_at,
        up_at - TimeDelta::minutes(1),
    );
    assert_eq!(
        fires["latest"][on_time["latest"].len()..],
        [*missed.last().unwrap()],
        "latest: the latest missed fire ran once"
    );
    assert_eq!(fires["skip"], on_time["skip"], "skip: no missed fire ran");

    // Then both go on from the next fire.
    let end = up_at + TimeDelta::minutes(30);
    run_until(&after, &now, end, TimeDelta::seconds(10)).await;
    let fires = setup.fires().await;
    let later = expected("*/10 * * * *", "UTC", up_at, end);
    assert_eq!(fires["skip"][on_time["skip"].len()..], later[..]);
    assert_eq!(fires["latest"][on_time["latest"].len() + 1..], later[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daylight_saving_skipped_hour_fires_once_and_repeated_hour_once() {
    let setup = Setup::start().await;
    let zone = "America/New_York";
    setup
        .add("at-0230", "30 2 * * *", zone, CatchUp::Skip)
        .await;
    setup
        .add("at-0130", "30 1 * * *", zone, CatchUp::Skip)
        .await;
    setup
        .add("half-hourly", "*/30 * * * *", zone, CatchUp::Skip)
        .await;
    let now = Arc::new(AtomicI64::new(0));
    let scheduler = schedulers(&setup, &now, &[0]);
    let local = |text: &str| {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    };
    let shown = |times: &[DateTime<Utc>]| -> Vec<String> {
        let zone = parse_zone(zone).unwrap();
        times
            .iter()
            .map(|at| at.with_timezone(&zone).to_rfc3339())
            .collect()
    };

    // Spring forward: 2027-03-14 02:00 EST jumps to 03:00 EDT.
    now.store(
        local("2027-03-13T23:00:00-05:00").timestamp_millis(),
        Ordering::SeqCst,
    );
    scheduler[0].tick().await.unwrap();
    run_until(
        &scheduler,
        &now,
        local("2027-03-15T04:00:00-04:00"),
        TimeDelta::seconds(30),
    )
    .await;
    let fires = setup.fires().await;
    assert_eq!(
        shown(&fires["at-0230"]),
        ["2027-03-14T03:00:00-04:00", "2027-03-15T02:30:00-04:00"],
        "02:30 did not exist on the 14th: it ran once, when the clock jumped"
    );
    let around: Vec<String> = shown(&fires["half-hourly"])
        .into_iter()
        .filter(|at| at.starts_with("2027-03-14T0"))
        .take(5)
        .collect();
    assert_eq!(
        around,
        [
            "2027-03-14T00:00:00-05:00",
            "2027-03-14T00:30:00-05:00",
            "2027-03-14T01:00:00-05:00",
            "2027-03-14T01:30:00-05:00",
            "2027-03-14T03:00:00-04:00",
        ]
    );

    // Fall back: 2027-11-07 02:00 EDT goes back to 01:00 EST.
    now.store(
        local("2027-11-06T23:00:00-04:00").timestamp_millis(),
        Ordering::SeqCst,
    );
    scheduler[0].tick().await.unwrap();
    run_until(
        &scheduler,
        &now,
        local("2027-11-08T04:00:00-05:00"),
        TimeDelta::seconds(30),
    )
    .await;
    let fires = setup.fires().await;
    let november: Vec<String> = shown(&fires["at-0130"])
        .into_iter()
        .filter(|at| at.starts_with("2027-11"))
        .collect();
    assert_eq!(
        november,
        ["2027-11-07T01:30:00-04:00", "2027-11-08T01:30:00-05:00"],
        "01:30 happened twice on the 7th: it ran once, the first time"
    );
    let around: Vec<String> = shown(&fires["half-hourly"])
        .into_iter()
        .filter(|at| at.starts_with("2027-11-07T0"))
        .take(4)
        .collect();
    assert_eq!(
        around,
        [
            "2027-11-07T00:00:00-04:00",
            "2027-11-07T00:30:00-04:00",
            "2027-11-07T01:00:00-04:00",
            "2027-11-07T01:30:00-04:00",
        ]
    );
    assert!(
        shown(&fires["half-hourly"]).contains(&"2027-11-07T02:00:00-05:00".to_owned()),
        "after the repeated hour it goes on"
    );
}

#[tokio::test]
async fn manifest_schedules_follow_the_module_and_bad_schedules_are_refused() {
    let setup = Setup::start().await;
    setup
        .publish(
            "0.2.0",
            "\n[[schedules]]\nname = \"nightly\"\ncron = \"0 3 * * *\"\ntask = \"greet\"\n\
             input = { name = \"night\" }\ntimezone = \"Europe/Berlin\"\n\
             [[schedules]]\nname = \"weekly\"\ncron = \"@weekly\"\ntask = \"add\"\n",
        )
        .await;
    let names = |list: Vec<taskbox_core::scheduler::ScheduleStatus>| -> Vec<String> {
        list.into_iter().map(|s| s.schedule.name).collect()
    };
    let listed = setup.schedules.list(TENANT).await.unwrap();
    assert_eq!(names(listed.clone()), ["hello:nightly", "hello:weekly"]);
    assert_eq!(listed[0].schedule.timezone, "Europe/Berlin");
    assert_eq!(listed[0].schedule.input, json!({"name": "night"}));
    assert_eq!(listed[0].schedule.source, Source::Manifest);
    let next = DateTime::parse_from_rfc3339(listed[0].next_fire.as_deref().unwrap()).unwrap();
    assert_eq!(
        next.with_timezone(&parse_zone("Europe/Berlin").unwrap())
            .format("%H:%M")
            .to_string(),
        "03:00"
    );

    // A manifest's schedule is paused, not removed, by hand; and it stays paused.
    let refused = setup.schedules.remove(TENANT, "hello:nightly").await;
    assert!(refused.unwrap_err().to_string().contains("manifest"));
    setup
        .schedules
        .set_paused(TENANT, "hello:nightly", true)
        .await
        .unwrap();

    // A new highest version replaces the schedules; an older upload changes nothing.
    setup
        .publish(
            "0.3.0",
            "\n[[schedules]]\nname = \"nightly\"\ncron = \"0 4 * * *\"\ntask = \"greet\"\n",
        )
        .await;
    setup.publish("0.1.5", "").await;
    let listed = setup.schedules.list(TENANT).await.unwrap();
    assert_eq!(names(listed.clone()), ["hello:nightly"]);
    assert_eq!(listed[0].schedule.cron, "0 4 * * *");
    assert!(listed[0].schedule.paused && listed[0].next_fire.is_none());

    // Deleting that version brings back the schedules of the one now highest.
    setup.delete("0.3.0").await;
    let listed = setup.schedules.list(TENANT).await.unwrap();
    assert_eq!(names(listed), ["hello:nightly", "hello:weekly"]);
    for version in ["0.2.0", "0.1.5", "0.1.0"] {
        setup.delete(version).await;
    }
    assert!(setup.schedules.list(TENANT).await.unwrap().is_empty());
}

async fn cli(url: &str, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_taskbox"))
        .args(args)
        .args(["--server", url])
        .output()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_and_manifest_schedules_run_jobs_on_time_through_a_worker() {
    let setup = Setup::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = router(
        setup.queue.clone(),
        setup.registry.clone(),
        ApiConfig::default(),
    );
    let worker = Worker::new(
        setup.queue.clone(),
        host::runtime(),
        WorkerConfig::new(format!("cron-test-{}", std::process::id())),
    );
    let scheduler = Scheduler::new(setup.queue.clone());
    tokio::spawn(async move {
        tokio::select! {
            _ = serve_router(listener, app, std::future::pending()) => {}
            _ = worker.run(std::future::pending()) => {}
            () = scheduler.run(std::future::pending()) => {}
        }
    });

    // Bad input is refused, naming the column or the field, and nothing is stored.
    let bad = cli(&url, &["cron", "add", "x", "0 0 32 * *", "hello/greet"]).await;
    assert!(!bad.status.success());
    let message = String::from_utf8_lossy(&bad.stderr);
    assert!(
        message.contains("column 5 (day of month): 32 is out of range 1-31"),
        "{message}"
    );
    let bad = cli(
        &url,
        &[
            "cron",
            "add",
            "x",
            "@daily",
            "hello/greet",
            "--tz",
            "Moon/Base",
        ],
    )
    .await;
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown time zone `Moon/Base`"));
    let bad = cli(&url, &["cron", "add", "x", "@daily", "hello/nope"]).await;
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no task `nope`"));
    let bad = cli(&url, &["cron", "add", "x", "@daily", "nothing/greet"]).await;
    assert!(!bad.status.success());
    assert!(setup.schedules.list(TENANT).await.unwrap().is_empty());

    let added = cli(
        &url,
        &[
            "cron",
            "add",
            "every-2s",
            "*/2 * * * * *",
            "hello/greet",
            "--input",
            r#"{"name":"cron"}"#,
        ],
    )
    .await;
    assert!(added.status.success(), "{added:?}");
    let again = cli(&url, &["cron", "add", "every-2s", "@daily", "hello/greet"]).await;
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    setup
        .publish(
            "0.2.0",
            "\n[[schedules]]\nname = \"each-second\"\ncron = \"* * * * * *\"\ntask = \"add\"\n\
             input = { numbers = [2, 3] }\n",
        )
        .await;

    // Both produce completed jobs, each started within a second of its fire time.
    let done = wait::until("both schedules' jobs", Duration::from_secs(15), || async {
        let jobs: Vec<JobRecord> = setup
            .jobs()
            .await
            .into_iter()
            .filter(|job| job.status == JobStatus::Completed)
            .collect();
        let of = |name: &str| {
            jobs.iter()
                .filter(|job| job.metadata.as_ref().unwrap()["schedule"] == name)
                .count()
        };
        (of("every-2s") >= 2 && of("hello:each-second") >= 2).then_some(jobs)
    })
    .await;
    for job in &done {
        let metadata = job.metadata.as_ref().unwrap();
        let fire = DateTime::parse_from_rfc3339(metadata["fire_at"].as_str().unwrap()).unwrap();
        let created = job.created_at as i64;
        let late = created - fire.timestamp_millis();
        assert!((0..1500).contains(&late), "{} ms late: {job:?}", late);
        match metadata["schedule"].as_str().unwrap() {
            "every-2s" => {
                assert_eq!(fire.timestamp() % 2, 0);
                assert_eq!(
                    job.result.as_deref(),
                    Some(&br#"{"message":"Hello, cron!"}"#[..])
                );
            }
            _ => assert_eq!(job.result.as_deref(), Some(&br#"{"sum":5}"#[..])),
        }
    }

    // `cron ls` shows the last job and its status; pause stops the fires.
    let listed = cli(&url, &["cron", "ls", "--output", "json"]).await;
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let every = listed["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "every-2s")
        .unwrap();
    assert!(
        every["last_job"].is_string() && every["next_fire"].is_string(),
        "{every}"
    );
    let paused = cli(&url, &["cron", "pause", "every-2s", "--output", "json"]).await;
    let paused: Value = serde_json::from_slice(&paused.stdout).unwrap();
    assert_eq!(paused["paused"], true);
    assert!(paused["next_fire"].is_null());
    let removed = cli(&url, &["cron", "rm", "every-2s"]).await;
    assert!(removed.status.success(), "{removed:?}");
    let refused = cli(&url, &["cron", "rm", "hello:each-second"]).await;
    assert!(String::from_utf8_lossy(&refused.stderr).contains("manifest"));

    // `cron next` previews fire times without a server.
    let next = tokio::process::Command::new(env!("CARGO_BIN_EXE_taskbox"))
        .args([
            "cron",
            "next",
            "0 9 * * MON-FRI",
            "--tz",
            "Asia/Tokyo",
            "-n",
            "3",
        ])
        .output()
        .await
        .unwrap();
    let lines: Vec<String> = String::from_utf8_lossy(&next.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for line in lines {
        let at = DateTime::parse_from_rfc3339(&line).unwrap();
        assert_eq!(at.format("%H:%M %:z").to_string(), "09:00 +09:00");
        assert!(!["Sat", "Sun"].contains(&at.format("%a").to_string().as_str()));
    }
}
