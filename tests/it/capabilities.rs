//! Host capabilities end to end: real compiled guests run by a real worker against a real
//! `redis-server`, events read back over real SSE from the API, and the `taskbox` CLI.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde_json::{Value, json};
use taskbox::api::ApiConfig;
use taskbox_core::auth::{Role, Tokens};
use taskbox_core::events::Events;
use taskbox_core::model::capabilities::HostCapabilities;
use taskbox_core::model::job::{JobRecord, JobStatus};
use taskbox_core::model::module::ModuleSettings;
use taskbox_core::progress::FLUSH_EVERY;
use taskbox_core::queue::{EnqueueOptions, NewJob, Queue};
use taskbox_core::registry::{Registry, RegistryConfig};
use taskbox_core::worker::WorkerConfig;
use taskbox_runtime::Limits;

use crate::support::private_redis::TestRedis;
use crate::support::{host, http_server, private_redis, wait};

const ADMIN: &str = "test-admin-token";
const TENANT: &str = "default";

/// Redis, the guests published, a worker with the given capabilities, and the API.
struct Host {
    redis: TestRedis,
    queue: Queue,
    url: String,
    _serving: host::Serving,
}

impl Host {
    async fn start(capabilities: HostCapabilities) -> Self {
        Self::start_with(capabilities, ApiConfig::default()).await
    }

    async fn start_with(capabilities: HostCapabilities, api: ApiConfig) -> Self {
        let (redis, queue) = private_redis::start().await;
        let registry = Registry::new(queue.clone(), host::runtime(), RegistryConfig::default());
        for tenant in [TENANT, "acme"] {
            for name in ["fixtures-grants", "hello", "report", "uploads", "webhook"] {
                host::publish(&registry, tenant, name).await;
            }
        }
        let api = ApiConfig {
            admin_token: Some(ADMIN.into()),
            ..api
        };
        let worker = WorkerConfig {
            capabilities,
            ..WorkerConfig::new(format!("capabilities-test-{}", std::process::id()))
        };
        let serving = host::serve(&queue, registry, api, worker).await;
        Self {
            redis,
            queue,
            url: serving.url.clone(),
            _serving: serving,
        }
    }

    /// A connection of the test's own, to look at Redis the way an operator would.
    async fn redis(&self) -> taskbox_core::store::Connection {
        private_redis::connection(&self.redis).await
    }

    async fn run_as(&self, tenant: &str, module: &str, task: &str, input: Value) -> JobRecord {
        let id = self.enqueue_as(tenant, module, task, input).await;
        self.wait(&id).await
    }

    async fn run(&self, module: &str, task: &str, input: Value) -> JobRecord {
        self.run_as(TENANT, module, task, input).await
    }

    async fn enqueue_as(&self, tenant: &str, module: &str, task: &str, input: Value) -> String {
        let job = NewJob {
            module: module.into(),
            task: task.into(),
            input: input.to_string().into_bytes(),
            options: EnqueueOptions::default(),
        };
        self.queue.enqueue(tenant, job).await.unwrap().id
    }

    async fn wait(&self, id: &str) -> JobRecord {
        let job = self
            .queue
            .wait(id, Duration::from_secs(30))
            .await
            .unwrap()
            .expect("the job exists");
        assert_eq!(job.status, JobStatus::Completed, "{job:?}");
        job
    }

    /// Asks for the SSE stream of `channel`.
    async fn sse_response(
        &self,
        token: &str,
        channel: &str,
        last_event_id: Option<&str>,
    ) -> reqwest::Response {
        let mut request = reqwest::Client::new()
            .get(format!("{}/v1/events/{channel}", self.url))
            .bearer_auth(token);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        request.send().await.unwrap()
    }

    /// Opens the SSE stream of `channel`; it is subscribed once this returns.
    async fn sse(&self, token: &str, channel: &str, last_event_id: Option<&str>) -> SseReader {
        let response = self.sse_response(token, channel, last_event_id).await;
        assert_eq!(response.status(), 200);
        SseReader::new(response)
    }

    /// How many connections of this process Redis has subscribed to `channel` of `tenant`,
    /// as `PUBSUB NUMSUB` (on a cluster `SHARDNUMSUB`) says.
    async fn subscribers(&self, tenant: &str, channel: &str) -> u64 {
        // A cluster carries the channel sharded, and counts its subscribers apart.
        let numsub = match private_redis::on_cluster() {
            true => "SHARDNUMSUB",
            false => "NUMSUB",
        };
        let counts: HashMap<String, u64> = redis::cmd("PUBSUB")
            .arg(numsub)
            .arg(format!("tb:events:{tenant}:{channel}"))
            .query_async(&mut self.redis().await)
            .await
            .unwrap();
        counts.values().sum()
    }
}

fn result(job: &JobRecord) -> Value {
    serde_json::from_slice(job.result.as_deref().unwrap_or(b"null")).unwrap()
}

/// Reads events off an SSE response.
struct SseReader {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<Vec<u8>>> + Send>>,
    pending: String,
}

/// One SSE event: id, name, data.
type Received = (String, String, String);

impl SseReader {
    fn new(response: reqwest::Response) -> Self {
        Self {
            body: Box::pin(
                response
                    .bytes_stream()
                    .map(|chunk| chunk.map(|bytes| bytes.to_vec())),
            ),
            pending: String::new(),
        }
    }

    /// The next event (keep-alives skipped), failing after 20 s.
    async fn next(&mut self) -> Received {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (String::new(), String::new(), Vec::new());
                for line in block.lines() {
                    match line.split_once(':') {
                        Some(("id", value)) => id = value.trim_start().to_owned(),
                        Some(("event", value)) => event = value.trim_start().to_owned(),
                        Some(("data", value)) => data.push(value.trim_start().to_owned()),
                        _ => {}
                    }
                }
                if !data.is_empty() {
                    return (id, event, data.join("\n"));
                }
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.body.next())
                .await
                .expect("no event within 20 s")
                .expect("the stream ended")
                .unwrap();
            self.pending.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_sse_clients_live_and_are_replayed_after_last_event_id() {
    let host = Host::start(HostCapabilities::default()).await;
    let mut live = host.sse(ADMIN, "allowed:room", None).await;
    for data in ["one", "two"] {
        let job = host
            .run(
                "fixtures-grants",
                "publish",
                json!({"channel": "allowed:room", "event": "said", "data": data}),
            )
            .await;
        assert_eq!(result(&job), json!({"ok": true}));
    }
    let (first, event, data) = live.next().await;
    assert_eq!((event.as_str(), data.as_str()), ("said", "one"));
    let (second, _, data) = live.next().await;
    assert_eq!(data, "two");
    drop(live);

    // Published while nobody listened: a client coming back with the last id it saw gets it.
    host.run(
        "fixtures-grants",
        "publish",
        json!({"channel": "allowed:room", "event": "said", "data": "three"}),
    )
    .await;
    let mut resumed = host.sse(ADMIN, "allowed:room", Some(&second)).await;
    let (third, _, data) = resumed.next().await;
    assert_eq!(data, "three");
    assert!(third > second && second > first, "{first} {second} {third}");
    let mut from_first = host.sse(ADMIN, "allowed:room", Some(&first)).await;
    assert_eq!(from_first.next().await.2, "two");
    assert_eq!(from_first.next().await.2, "three");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_clients_of_a_channel_share_one_redis_subscription() {
    let host = Host::start(HostCapabilities::default()).await;
    let mut first = host.sse(ADMIN, "allowed:shared", None).await;
    let mut second = host.sse(ADMIN, "allowed:shared", None).await;
    assert_eq!(host.subscribers(TENANT, "allowed:shared").await, 1);

    let events = Events::new(host.queue.store().clone());
    let id = events
        .publish(TENANT, "allowed:shared", "said", "to both")
        .await
        .unwrap();
    let expected = (id, "said".to_owned(), "to both".to_owned());
    assert_eq!(first.next().await, expected);
    assert_eq!(second.next().await, expected);

    // A client of another channel has a subscription of its own.
    let _other = host.sse(ADMIN, "allowed:other", None).await;
    assert_eq!(host.subscribers(TENANT, "allowed:other").await, 1);

    // The subscription goes with the channel's last client, and comes back with the next.
    drop(first);
    let id = events
        .publish(TENANT, "allowed:shared", "said", "to one")
        .await
        .unwrap();
    assert_eq!(second.next().await.0, id);
    drop(second);
    let gone = "the last client's going ends the subscription";
    wait::until(gone, Duration::from_secs(20), || async {
        (host.subscribers(TENANT, "allowed:shared").await == 0).then_some(())
    })
    .await;
    let mut third = host.sse(ADMIN, "allowed:shared", None).await;
    assert_eq!(host.subscribers(TENANT, "allowed:shared").await, 1);
    let id = events
        .publish(TENANT, "allowed:shared", "said", "again")
        .await
        .unwrap();
    assert_eq!(third.next().await.0, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_clients_past_the_caps_get_503_until_one_leaves() {
    let api = ApiConfig {
        max_event_streams: 3,
        max_event_streams_per_tenant: 2,
        ..ApiConfig::default()
    };
    let host = Host::start_with(HostCapabilities::default(), api).await;
    let acme = Tokens::new(host.queue.store().clone())
        .create("acme", Role::Viewer)
        .await
        .unwrap();
    let refused = async |token: &str, limit: &str| {
        let response = host.sse_response(token, "allowed:busy", None).await;
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "5");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "too_many_event_streams", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(limit), "{message}");
    };

    let first = host.sse(ADMIN, "allowed:busy", None).await;
    let _second = host.sse(ADMIN, "allowed:busy", None).await;
    refused(ADMIN, "[api] max_event_streams_per_tenant").await;
    // Another tenant is not refused for the first tenant's streams, but for the total.
    let mut of_acme = host.sse(&acme, "allowed:busy", None).await;
    refused(&acme, "[api] max_event_streams)").await;

    drop(first);
    wait::until(
        "a closed stream frees its place",
        Duration::from_secs(20),
        || async {
            let status = host
                .sse_response(ADMIN, "allowed:busy", None)
                .await
                .status();
            (status == 200).then_some(())
        },
    )
    .await;
    // The streams let in still work.
    let id = Events::new(host.queue.store().clone())
        .publish("acme", "allowed:busy", "said", "still here")
        .await
        .unwrap();
    assert_eq!(of_acme.next().await.0, id);

    // The API's description says so.
    let document: Value = reqwest::get(format!("{}/v1/openapi.json", host.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refusal = &document["paths"]["/v1/events/{channel}"]["get"]["responses"]["503"];
    assert!(refusal["headers"]["Retry-After"].is_object(), "{refusal}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_publish_only_where_granted_and_within_the_size_cap() {
    let host = Host::start(HostCapabilities {
        max_event_bytes: 1024,
        ..HostCapabilities::default()
    })
    .await;
    let cases = [
        (
            json!({"channel": "other:x", "data": "d"}),
            "Denied(\"other:x\")",
        ),
        (
            json!({"channel": "job:default-0", "data": "d"}),
            "InvalidChannel",
        ),
        (
            json!({"channel": "allowed: x", "data": "d"}),
            "InvalidChannel",
        ),
        (json!({"channel": "", "data": "d"}), "InvalidChannel"),
        (
            json!({"channel": "allowed:x", "event": "a\nb", "data": "d"}),
            "InvalidEvent",
        ),
        (
            json!({"channel": "allowed:x", "data": "x".repeat(2000)}),
            "TooLarge(1024)",
        ),
    ];
    for (input, expected) in cases {
        let job = host.run("fixtures-grants", "publish", input.clone()).await;
        let error = result(&job)["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(error.starts_with(expected), "{input}: {error}");
    }
    let denied = host
        .run(
            "fixtures-grants",
            "publish",
            json!({"channel": "other:x", "data": "d"}),
        )
        .await;
    assert!(
        denied
            .log
            .as_deref()
            .unwrap_or_default()
            .contains(r#"events denied for "other:x": "#),
        "{:?}",
        denied.log
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_hears_only_its_own_channels() {
    let host = Host::start(HostCapabilities::default()).await;
    let acme = Tokens::new(host.queue.store().clone())
        .create("acme", Role::Viewer)
        .await
        .unwrap();
    let mut default_stream = host.sse(ADMIN, "allowed:shared", None).await;
    let mut acme_stream = host.sse(&acme, "allowed:shared", None).await;
    for tenant in [TENANT, "acme"] {
        let input = json!({"channel": "allowed:shared", "data": tenant});
        host.run_as(tenant, "fixtures-grants", "publish", input)
            .await;
    }
    assert_eq!(default_stream.next().await.2, TENANT);
    assert_eq!(acme_stream.next().await.2, "acme");
    let events = Events::new(host.queue.store().clone());
    let acme_events = events
        .replay("acme", "allowed:shared", "0-0")
        .await
        .unwrap();
    assert_eq!(acme_events.len(), 1, "{acme_events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_stored_on_the_job_and_streamed_on_its_channel() {
    let host = Host::start(HostCapabilities::default()).await;
    let job = host
        .run("fixtures-grants", "progress", json!({"steps": 3}))
        .await;
    assert_eq!(job.progress.as_ref().unwrap()["percent"], 100);
    let mut stream = host
        .sse(ADMIN, &format!("job:{}", job.id), Some("0-0"))
        .await;
    // Reports that come faster than the worker writes them replace each other: the channel
    // has some of them, in order, and always the last.
    let mut percents = Vec::new();
    while percents.last() != Some(&100) {
        let (_, event, data) = stream.next().await;
        assert_eq!(event, "progress");
        let data: Value = serde_json::from_str(&data).unwrap();
        percents.push(data["percent"].as_u64().unwrap());
    }
    assert!(percents.is_sorted() && percents.len() <= 3, "{percents:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_progress_flood_keeps_one_small_report_and_writes_a_few() {
    let host = Host::start(HostCapabilities::default()).await;
    let (reports, bytes) = (1000, 1 << 20);
    let job = host
        .run(
            "fixtures-grants",
            "progress_flood",
            json!({"reports": reports, "bytes": bytes}),
        )
        .await;
    let progress = job.progress.as_ref().unwrap();
    assert_eq!(progress["percent"], 100);
    let kept = Limits::DEFAULT_PROGRESS_BYTES;
    assert_eq!(
        progress["message"].as_str().unwrap(),
        format!(
            "{} [taskbox: truncated at {kept} bytes, {} more bytes dropped]",
            "p".repeat(kept),
            bytes - kept
        )
    );
    let record = private_redis::job_record_size(&host.redis, &job.id).await;
    assert!(record < 64 << 10, "the job record takes {record} bytes");
    let mut conn = host.redis().await;
    // One write when the flood starts, one per tick while it lasts, one at its end; the
    // job's stats say how long it ran.
    let ran = job.stats.as_ref().unwrap()["wall_time_ms"]
        .as_u64()
        .unwrap();
    let most = 2 + ran / FLUSH_EVERY.as_millis() as u64;
    let written: u64 = redis::cmd("XLEN")
        .arg(format!("tb:events:default:job:{}", job.id))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        (1..=most).contains(&written),
        "{written} progress events for {reports} reports in {ran} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_enqueue_granted_targets_up_to_the_cap_and_children_know_their_parent() {
    let host = Host::start(HostCapabilities {
        max_enqueues: 3,
        ..HostCapabilities::default()
    })
    .await;
    let enqueue = |target: &str, input: Value| json!({"target": target, "input": input});
    let parent = host
        .run(
            "fixtures-grants",
            "enqueue",
            enqueue("hello/greet", json!({"name": "child"})),
        )
        .await;
    let child_id = result(&parent)["id"].as_str().unwrap().to_owned();
    let child = host.wait(&child_id).await;
    assert_eq!(
        (child.parent.as_deref(), child.depth),
        (Some(parent.id.as_str()), 1)
    );
    assert_eq!(result(&child)["message"], "Hello, child!");

    let cases = [
        (
            enqueue("hello/add", json!({"numbers": [1]})),
            "Denied(\"hello/add\")",
        ),
        (enqueue("fixtures/noop", json!(null)), "Denied"),
        (enqueue("no-such-task", json!(null)), "Invalid"),
        (enqueue("a/b/c", json!(null)), "Invalid"),
    ];
    for (input, expected) in cases {
        let job = host.run("fixtures-grants", "enqueue", input.clone()).await;
        let error = result(&job)["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(error.starts_with(expected), "{input}: {error}");
    }
    let fan_out = host
        .run("fixtures-grants", "fan_out", json!({"count": 5}))
        .await;
    let answer = result(&fan_out);
    assert_eq!(answer["enqueued"], 3, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().starts_with("Limit"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_enqueues_from_a_task_get_the_apis_checks_and_store_nothing() {
    let host = Host::start(HostCapabilities::default()).await;
    let big = 20 << 20;
    let cases = [
        (
            json!({"oversized": "input", "bytes": big}),
            "Invalid(\"the input is",
        ),
        (
            json!({"oversized": "target", "bytes": big}),
            "Invalid(\"the target is",
        ),
        (
            json!({"oversized": "queue", "bytes": big}),
            "Invalid(\"field `queue`",
        ),
        (
            json!({"oversized": "idempotency_key", "bytes": big}),
            "Invalid(\"field `idempotency_key`",
        ),
        (
            json!({"oversized": "delay", "ms": u64::MAX}),
            "Invalid(\"field `delay`",
        ),
    ];
    for (input, expected) in cases {
        let job = host
            .run("fixtures-grants", "enqueue_oversized", input.clone())
            .await;
        let error = result(&job)["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(error.starts_with(expected), "{input}: {error}");
        // The answer quotes the start of a value at most.
        assert!(error.len() < 400, "{input}: a {}-byte error", error.len());
    }
    // The API's input cap holds for tasks too; just under it is fine.
    let fits = host
        .run(
            "fixtures-grants",
            "enqueue_oversized",
            json!({"oversized": "input", "bytes": (1 << 20) - 100}),
        )
        .await;
    assert!(result(&fits)["id"].is_string(), "{:?}", result(&fits));

    let mut conn = host.redis().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*idem*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");
    let longest: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        longest.iter().all(|key| key.len() < 200),
        "a guest's value became a key name"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_long_target_is_logged_by_its_start() {
    let host = Host::start(HostCapabilities::default()).await;
    // Under the longest target, but not granted: denied, and the job's log says so.
    let job = host
        .run(
            "fixtures-grants",
            "enqueue",
            json!({"target": format!("other/{}", "t".repeat(240)), "input": null}),
        )
        .await;
    assert!(
        result(&job)["error"]
            .as_str()
            .unwrap()
            .starts_with("Denied"),
        "{:?}",
        result(&job)
    );
    let log = job.log.unwrap_or_default();
    let line = log
        .lines()
        .find(|line| line.contains("jobs denied for"))
        .unwrap_or_else(|| panic!("no denial in the log: {log}"));
    assert!(line.contains("… (246 bytes)") && line.len() < 250, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_jobs_stops_at_the_depth_cap() {
    let host = Host::start(HostCapabilities {
        max_chain_depth: 3,
        ..HostCapabilities::default()
    })
    .await;
    let mut job = host.run("fixtures-grants", "chain", Value::Null).await;
    let mut depths = vec![job.depth];
    while let Some(child) = result(&job)["child"].as_str() {
        let next = host.wait(child).await;
        assert_eq!(next.parent.as_deref(), Some(job.id.as_str()));
        depths.push(next.depth);
        job = next;
    }
    assert_eq!(depths, [0, 1, 2, 3]);
    let stopped = result(&job)["stopped"].as_str().unwrap().to_owned();
    assert!(stopped.starts_with("Limit"), "{stopped}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_key_longer_than_the_cap_is_never_found() {
    let (fits, too_long) = ("k".repeat(256), "k".repeat(257));
    let settings = ModuleSettings {
        config: BTreeMap::from([
            (fits.clone(), "fits".to_owned()),
            (too_long.clone(), "too long".to_owned()),
        ]),
        ..ModuleSettings::default()
    };
    let host = Host::start(HostCapabilities {
        modules: BTreeMap::from([("fixtures-grants".to_owned(), settings)]),
        ..HostCapabilities::default()
    })
    .await;
    let found = host
        .run("fixtures-grants", "config", json!({"key": fits}))
        .await;
    assert_eq!(result(&found)["value"], "fits");
    let refused = host
        .run("fixtures-grants", "config", json!({"key": too_long}))
        .await;
    assert_eq!(result(&refused)["value"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_settings_reach_their_tenant_only_and_secrets_stay_out_of_the_log() {
    let settings = ModuleSettings {
        config: BTreeMap::from([("region".to_owned(), "eu-west".to_owned())]),
        secrets: BTreeMap::from([("token".to_owned(), "s3cr3t-value".to_owned())]),
    };
    let host = Host::start(HostCapabilities {
        modules: BTreeMap::from([("fixtures-grants".to_owned(), settings)]),
        settings_refresh: Duration::ZERO,
        ..HostCapabilities::default()
    })
    .await;
    let region = host
        .run("fixtures-grants", "config", json!({"key": "region"}))
        .await;
    assert_eq!(result(&region)["value"], "eu-west");
    let token = host
        .run("fixtures-grants", "config", json!({"key": "token"}))
        .await;
    assert_eq!(result(&token)["value"], "s3cr3t-value");
    let log = token.log.clone().unwrap_or_default();
    assert!(
        log.contains("[secret]") && !log.contains("s3cr3t-value"),
        "{log}"
    );
    let id = host
        .enqueue_as(
            TENANT,
            "fixtures-grants",
            "config",
            json!({"key": "token", "fail": true}),
        )
        .await;
    let failed = host
        .queue
        .wait(&id, Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.status, JobStatus::Dead);
    let error = failed.error.unwrap().to_string();
    assert!(
        error.contains("[secret]") && !error.contains("s3cr3t-value"),
        "{error}"
    );
    // `fixtures-grants` of tenant acme is another module: the default tenant's settings are
    // not its.
    let other = host
        .run_as(
            "acme",
            "fixtures-grants",
            "config",
            json!({"key": "region"}),
        )
        .await;
    assert_eq!(result(&other)["value"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uploads_example_reports_progress_broadcasts_parts_and_enqueues_its_index() {
    let host = Host::start(HostCapabilities::default()).await;
    let mut watch = host.sse(ADMIN, "upload:u1", None).await;
    let input = json!({"id": "u1", "parts": ["a b c", "d e"]});
    let job = host.run("uploads", "process", input).await;
    let answer = result(&job);
    assert_eq!(answer["words"], 5, "{answer}");
    let index = host.wait(answer["index_job"].as_str().unwrap()).await;
    assert_eq!(result(&index), "indexed upload u1 (5 words)");
    let events: Vec<(String, String)> =
        [watch.next().await, watch.next().await, watch.next().await]
            .into_iter()
            .map(|(_, event, data)| (event, data))
            .collect();
    assert_eq!(events[0], ("part".into(), r#"{"part":1,"words":3}"#.into()));
    assert_eq!(events[1], ("part".into(), r#"{"part":2,"words":2}"#.into()));
    assert_eq!(events[2].0, "done");
    assert_eq!(job.progress.as_ref().unwrap()["percent"], 100);

    // The CLI replays the channel from the start.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_taskbox"))
        .args([
            "events",
            "upload:u1",
            "--after",
            "0-0",
            "--count",
            "3",
            "--output",
            "json",
        ])
        .args(["--server", &host.url, "--token", ADMIN])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let names: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    assert_eq!(names, ["part", "part", "done"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_set_over_the_api_reach_tasks_and_only_admins_set_them() {
    let host = Host::start(HostCapabilities {
        settings_refresh: Duration::ZERO,
        ..HostCapabilities::default()
    })
    .await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/modules/fixtures-grants/settings", host.url);
    let operator = Tokens::new(host.queue.store().clone())
        .create(TENANT, Role::Operator)
        .await
        .unwrap();
    let body = json!({"config": {"region": "eu"}, "secrets": {"token": "api-s3cr3t"}});
    let refused = http
        .put(&url)
        .bearer_auth(&operator)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let set = http
        .put(&url)
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    let shown: Value = http
        .get(&url)
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        shown,
        json!({"config": {"region": "eu"}, "secrets": ["token"]})
    );
    let token = host
        .run("fixtures-grants", "config", json!({"key": "token"}))
        .await;
    assert_eq!(result(&token)["value"], "api-s3cr3t");
    assert!(!token.log.unwrap_or_default().contains("api-s3cr3t"));

    // The CLI replaces them all; another tenant's module of that name is not found.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_taskbox"))
        .args([
            "module",
            "settings",
            "fixtures-grants",
            "--set",
            "region=us",
        ])
        .args(["--server", &host.url, "--token", ADMIN])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "region = us\n");
    let region = host
        .run("fixtures-grants", "config", json!({"key": "region"}))
        .await;
    assert_eq!(result(&region)["value"], "us");
    let gone = host
        .run("fixtures-grants", "config", json!({"key": "token"}))
        .await;
    assert_eq!(result(&gone)["value"], Value::Null);
    let acme = Tokens::new(host.queue.store().clone())
        .create("acme", Role::Admin)
        .await
        .unwrap();
    let other = http
        .get(format!("{}/v1/modules/no-such-module/settings", host.url))
        .bearer_auth(&acme)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_example_retries_a_5xx_and_delivers_with_its_secret() {
    let receiver = http_server::Server::start().await;
    let settings = ModuleSettings {
        config: BTreeMap::from([("endpoint".to_owned(), receiver.url("/flaky"))]),
        secrets: BTreeMap::from([("token".to_owned(), "hook-s3cr3t".to_owned())]),
    };
    let host = Host::start(HostCapabilities {
        http: taskbox_runtime::http::HttpLimits {
            allow_private_networks: true,
            ..Default::default()
        },
        modules: BTreeMap::from([("webhook".to_owned(), settings)]),
        ..HostCapabilities::default()
    })
    .await;
    let input = json!({"event": "order.paid", "payload": {"order": 42}});
    let job = host.run("webhook", "deliver", input).await;
    assert_eq!(result(&job), json!({"status": 200, "attempt": 2}));
    let seen = receiver.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let head = seen[1].head.to_ascii_lowercase();
    assert!(head.starts_with("post /flaky http/1.1"), "{head}");
    assert!(head.contains("authorization: bearer hook-s3cr3t"), "{head}");
    assert!(head.contains("x-webhook-event: order.paid"), "{head}");
    assert_eq!(seen[1].body, br#"{"order":42}"#);

    // Without the operator's allow_private_networks, the loopback receiver is out of reach:
    // the job fails for good (a denial is not worth retrying) and nothing more arrives.
    let strict = Host::start(HostCapabilities {
        modules: BTreeMap::from([(
            "webhook".to_owned(),
            ModuleSettings {
                config: BTreeMap::from([("endpoint".to_owned(), receiver.url("/hello"))]),
                ..ModuleSettings::default()
            },
        )]),
        ..HostCapabilities::default()
    })
    .await;
    let id = strict
        .enqueue_as(
            TENANT,
            "webhook",
            "deliver",
            json!({"event": "e", "payload": {}}),
        )
        .await;
    let denied = strict
        .queue
        .wait(&id, Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(denied.status, JobStatus::Dead, "{denied:?}");
    let error = denied.error.unwrap().to_string();
    assert!(
        error.contains("DestinationIpProhibited"),
        "the error names the refusal: {error}"
    );
    assert_eq!(receiver.seen().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_example_keeps_orders_in_its_own_database_across_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let databases = taskbox_runtime::sql::SqlDatabases::new(taskbox_runtime::sql::SqlConfig {
        self_dir: Some(dir.path().to_owned()),
        ..Default::default()
    })
    .unwrap();
    let host = Host::start(HostCapabilities {
        sql: Some(Arc::new(databases)),
        ..HostCapabilities::default()
    })
    .await;
    let order = |id: &str, customer: &str, total: f64| json!({"id": id, "customer": customer, "total": total});
    host.run("report", "record", order("o1", "ada", 10.0)).await;
    host.run("report", "record", order("o2", "bob", 2.5)).await;
    // Recording the same order again (a retried job) does not count it twice.
    let again = host.run("report", "record", order("o2", "bob", 2.5)).await;
    assert_eq!(
        result(&again),
        json!({"orders": 2, "revenue": 12.5, "customers": 2})
    );
    // Tenant acme's `report` has a database of its own.
    let acme = host.run_as("acme", "report", "totals", Value::Null).await;
    assert_eq!(
        result(&acme),
        json!({"orders": 0, "revenue": 0.0, "customers": 0})
    );
    assert!(dir.path().join("default--report.sqlite").exists());
}
