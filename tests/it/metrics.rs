//! Metrics and traces as an operator's Prometheus and OpenTelemetry collector see them: the
//! scrapes parsed with a strict parser of the Prometheus text format, and the spans of a `taskbox serve`
//! process received by an OTLP/HTTP receiver started here.
//!
//! The API and worker of most tests here run in this process, where every test binary's
//! host shares one registry (as a `taskbox` process has one): each test uses tenants and
//! queues of its own, and reads only their series.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openmetrics_parser::{MetricsExposition, PrometheusType, PrometheusValue};
use reqwest::StatusCode;
use serde_json::{Value, json};
use taskbox::api::ApiConfig;
use taskbox_core::auth::{Role, Tokens};
use taskbox_core::queue::Queue;
use taskbox_core::redis_server::{RedisOptions, RedisServer};
use taskbox_core::registry::{Registry, RegistryConfig};
use taskbox_core::worker::WorkerConfig;

use crate::support::private_redis::{self, TestRedis};
use crate::support::{guests, host, http_server, wait};

const ADMIN: &str = "metrics-admin-token";

/// The API and a worker in this process, on a Redis of their own.
struct Server {
    _redis: TestRedis,
    queue: Queue,
    url: String,
    http: reqwest::Client,
    _serving: host::Serving,
}

impl Server {
    async fn start() -> Self {
        let (redis, queue) = private_redis::start().await;
        let registry = Registry::new(queue.clone(), host::runtime(), RegistryConfig::default());
        let config = ApiConfig {
            admin_token: Some(ADMIN.into()),
            enqueue_rate: 100_000.0,
            enqueue_burst: 100_000.0,
            ..ApiConfig::default()
        };
        let serving = host::serve(
            &queue,
            registry,
            config,
            WorkerConfig::new(format!("metrics-{}", rand::random::<u32>())),
        )
        .await;
        Self {
            _redis: redis,
            queue,
            url: serving.url.clone(),
            http: reqwest::Client::new(),
            _serving: serving,
        }
    }

    async fn token(&self, tenant: &str) -> String {
        let tokens = Tokens::new(self.queue.store().clone());
        tokens.create(tenant, Role::Admin).await.unwrap()
    }

    /// Publishes the fixtures module for the tenant of `token`, with fuel enough for a no-op
    /// job and not for `spin`.
    async fn publish_fixtures(&self, token: &str) {
        let manifest = format!(
            "{}\n[limits]\nfuel = 5000000\n",
            host::manifest_text("fixtures")
        );
        let component = std::fs::read(guests::wasm("fixtures")).unwrap();
        let form = reqwest::multipart::Form::new()
            .text("manifest", manifest)
            .part("component", reqwest::multipart::Part::bytes(component));
        let response = self
            .http
            .post(format!("{}/v1/modules", self.url))
            .bearer_auth(token)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }

    async fn post(&self, token: &str, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    /// Enqueues `count` jobs of `task` in batches of 1000, each with an input of its own.
    async fn enqueue(&self, token: &str, task: &str, count: usize, extra: Value) {
        let jobs: Vec<Value> = (0..count)
            .map(|n| {
                let mut job = json!({
                    "module": "fixtures",
                    "task": task,
                    "input": {"n": n, "nonce": rand::random::<u64>()},
                    "max_retries": 0,
                });
                if let (Some(job), Some(extra)) = (job.as_object_mut(), extra.as_object()) {
                    job.extend(extra.clone());
                }
                job
            })
            .collect();
        for batch in jobs.chunks(1000) {
            self.post(token, "/v1/jobs/batch", json!({ "jobs": batch }))
                .await;
        }
    }

    /// A scrape of `path` with `token`: its status and text.
    async fn scrape(&self, path: &str, token: Option<&str>) -> (StatusCode, String) {
        let mut request = self.http.get(format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        (response.status(), response.text().await.unwrap())
    }
}

type Exposition = MetricsExposition<PrometheusType, PrometheusValue>;

/// `text` parsed as the Prometheus text format; a scrape it refuses fails the test.
fn parse(text: &str) -> Exposition {
    openmetrics_parser::prometheus::parse_prometheus(text)
        .unwrap_or_else(|err| panic!("the scrape is not in the Prometheus format: {err:?}\n{text}"))
}

/// The value of the sample of `family` whose labels include all of `labels`, summed over
/// the samples that match (0 when none does).
fn value(exposition: &Exposition, family: &str, labels: &[(&str, &str)]) -> f64 {
    let Some(family) = exposition.families.get(family) else {
        return 0.0;
    };
    family
        .iter_samples()
        .filter(|sample| {
            let set = sample.get_labelset().unwrap();
            labels
                .iter()
                .all(|(name, value)| set.get_label_value(name) == Some(*value))
        })
        .map(|sample| match &sample.value {
            PrometheusValue::Counter(counter) => counter.value.as_f64(),
            PrometheusValue::Gauge(gauge) => gauge.as_f64(),
            PrometheusValue::Histogram(histogram) => histogram.count.unwrap_or(0) as f64,
            other => panic!("no single value in {other:?}"),
        })
        .sum()
}

/// The sample lines of a scrape: one per series, and one per bucket of a histogram.
fn sample_lines(text: &str) -> usize {
    text.lines().filter(|line| !line.starts_with('#')).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_scrape_counts_each_outcome_exactly_and_follows_the_prometheus_conventions() {
    let server = Server::start().await;
    let tenant = "metrics-outcomes";
    let token = server.token(tenant).await;
    server.publish_fixtures(&token).await;
    let (completed, out_of_fuel) = (7, 3);
    server.enqueue(&token, "noop", completed, json!({})).await;
    server.enqueue(&token, "spin", out_of_fuel, json!({})).await;

    let runs = |exposition: &Exposition, outcome| {
        value(
            exposition,
            "taskbox_job_runs_total",
            &[("tenant", tenant), ("outcome", outcome)],
        )
    };
    let exposition = wait::until("every outcome counted", Duration::from_secs(60), || async {
        let (status, text) = server.scrape("/metrics", Some(ADMIN)).await;
        assert_eq!(status, StatusCode::OK);
        let exposition = parse(&text);
        let counted = runs(&exposition, "completed") + runs(&exposition, "out_of_fuel");
        (counted >= (completed + out_of_fuel) as f64).then_some((exposition, text))
    })
    .await;
    let (exposition, text) = exposition;
    assert_eq!(runs(&exposition, "completed"), completed as f64);
    assert_eq!(runs(&exposition, "out_of_fuel"), out_of_fuel as f64);
    let of_tenant = [("tenant", tenant)];
    let count = |family| value(&exposition, family, &of_tenant);
    assert_eq!(
        count("taskbox_jobs_enqueued_total"),
        (completed + out_of_fuel) as f64
    );
    assert_eq!(
        count("taskbox_jobs_started_total"),
        (completed + out_of_fuel) as f64
    );
    assert_eq!(count("taskbox_jobs_dead_total"), out_of_fuel as f64);
    assert_eq!(count("taskbox_jobs_retried_total"), 0.0);
    // The sandbox's own figures: one observation per attempt, by task.
    let spin = [("tenant", tenant), ("task", "spin")];
    assert_eq!(
        value(&exposition, "taskbox_job_fuel_used", &spin),
        out_of_fuel as f64
    );
    assert_eq!(
        value(&exposition, "taskbox_job_peak_memory_bytes", &spin),
        out_of_fuel as f64
    );
    assert!(
        text.contains(
            "taskbox_job_fuel_used_sum{tenant=\"metrics-outcomes\",task=\"spin\"} 15000000.0"
        ),
        "three attempts that burned all 5,000,000 of their fuel:\n{text}"
    );
    assert!(
        text.contains("taskbox_build_info{version=\""),
        "the build info is shown"
    );

    for family in exposition.families.values() {
        let name = &family.family_name;
        assert!(name.starts_with("taskbox_"), "{name} has the prefix");
        match family.family_type {
            PrometheusType::Counter => {
                assert!(
                    name.ends_with("_total"),
                    "the counter {name} ends in _total"
                );
            }
            PrometheusType::Histogram => assert!(
                name.ends_with("_seconds")
                    || name.ends_with("_bytes")
                    || name == "taskbox_job_fuel_used",
                "{name} is in seconds or bytes"
            ),
            _ => assert!(!name.ends_with("_total"), "{name} is not a counter"),
        }
        if name.contains("age") || name.contains("time") || name.contains("wait") {
            assert!(
                name.ends_with("_seconds") || name.ends_with("_timestamp"),
                "{name} says its unit"
            );
        }
        for label in family.get_label_names() {
            assert!(
                !["job", "id", "job_id", "attempt", "input"].contains(&label.as_str()),
                "{name} has no label {label}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_scrapes_only_its_own_series_and_ten_thousand_jobs_add_none() {
    let server = Server::start().await;
    let (ours, theirs) = ("metrics-ours", "metrics-theirs");
    let (token, other) = (server.token(ours).await, server.token(theirs).await);
    for token in [&token, &other] {
        server.publish_fixtures(token).await;
        server.enqueue(token, "noop", 10, json!({})).await;
    }
    let done = |count: usize| {
        let server = &server;
        let token = &token;
        async move {
            let (status, text) = server.scrape("/v1/metrics", Some(token)).await;
            assert_eq!(status, StatusCode::OK);
            let counted = value(
                &parse(&text),
                "taskbox_job_runs_total",
                &[("outcome", "completed")],
            );
            (counted >= count as f64).then_some(text)
        }
    };
    let first = wait::until("the first jobs counted", Duration::from_secs(60), || {
        done(10)
    })
    .await;

    let (status, _) = server.scrape("/v1/metrics", None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a tenant's metrics need its token"
    );
    let (status, _) = server.scrape("/metrics", Some(&token)).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "every tenant's metrics are the operator's"
    );
    assert!(
        !first.contains(theirs),
        "another tenant's series are not shown:\n{first}"
    );
    for family in parse(&first).families.values() {
        for sample in family.iter_samples() {
            let labels = sample.get_labelset().unwrap();
            assert_eq!(
                labels.get_label_value("tenant"),
                Some(ours),
                "{}",
                family.family_name
            );
        }
    }

    server.enqueue(&token, "noop", 10_000, json!({})).await;
    let after = wait::until(
        "ten thousand more jobs counted",
        Duration::from_secs(300),
        || done(10_010),
    )
    .await;
    assert_eq!(
        sample_lines(&after),
        sample_lines(&first),
        "ten thousand jobs with inputs of their own add no series:\n{after}"
    );
    assert!(sample_lines(&after) < 200, "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_queues_oldest_waiting_age_rises() {
    let server = Server::start().await;
    let token = server.token("metrics-paused").await;
    server.publish_fixtures(&token).await;
    let queue = "metrics-paused-queue";
    server
        .post(ADMIN, &format!("/v1/queues/{queue}/pause"), json!({}))
        .await;
    server
        .enqueue(&token, "noop", 1, json!({ "queue": queue }))
        .await;
    let refresh = tokio::spawn(taskbox::api::refresh_gauges(server.queue.clone()));
    let age = || async {
        let (_, text) = server.scrape("/metrics", Some(ADMIN)).await;
        let exposition = parse(&text);
        let labels = [("queue", queue)];
        let paused = value(&exposition, "taskbox_queue_paused", &labels);
        let age = value(
            &exposition,
            "taskbox_queue_oldest_waiting_age_seconds",
            &labels,
        );
        (paused == 1.0 && age > 0.0).then_some(age)
    };
    let first = wait::until("the age of the waiting job", Duration::from_secs(30), age).await;
    wait::until(
        "the age to rise while the queue stays paused",
        Duration::from_secs(30),
        || async { age().await.filter(|later| *later > first) },
    )
    .await;
    let waiting = wait::until("the gauges", Duration::from_secs(30), || async {
        let (_, text) = server.scrape("/metrics", Some(ADMIN)).await;
        let waiting = value(
            &parse(&text),
            "taskbox_queue_jobs",
            &[("queue", queue), ("state", "waiting")],
        );
        Some(waiting)
    })
    .await;
    assert_eq!(waiting, 1.0, "the job waits while the queue is paused");
    refresh.abort();
}

/// The spans an OTLP/HTTP receiver got, as JSON (`OTEL_EXPORTER_OTLP_PROTOCOL=http/json`).
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Value>>>);

impl Received {
    /// Starts a receiver on a free loopback port; returns its endpoint.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let received = self.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| async move {
                let export: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                received.0.lock().unwrap().push(export);
                "{}"
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        endpoint
    }

    /// Every span received with trace id `trace`.
    fn spans_of(&self, trace: &str) -> Vec<Value> {
        let exports = self.0.lock().unwrap().clone();
        exports
            .iter()
            .flat_map(|export| {
                export["resourceSpans"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .flat_map(|resource| {
                resource["scopeSpans"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .flat_map(|scope| scope["spans"].as_array().cloned().unwrap_or_default())
            .filter(|span| span["traceId"].as_str() == Some(trace))
            .collect()
    }
}

/// The value of a span's attribute `key`, as text.
fn attribute(span: &Value, key: &str) -> Option<String> {
    span["attributes"].as_array()?.iter().find_map(|attribute| {
        (attribute["key"] == key).then(|| {
            let value = &attribute["value"];
            value["stringValue"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| value.to_string())
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_trace_links_the_request_the_enqueue_the_run_and_the_jobs_outbound_request() {
    let received = Received::default();
    let endpoint = received.start().await;
    let target = http_server::Server::start().await;
    let redis = RedisServer::start(RedisOptions::default()).unwrap();
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "[http]\nallow_private_networks = true\n").unwrap();
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .unwrap()
            .port()
    };
    let (port, metrics_port) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_taskbox"))
        .args(["serve", "--redis", &redis.url(), "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--config")
        .arg(config.path())
        .arg("--metrics-listen")
        .arg(format!("127.0.0.1:{metrics_port}"))
        .env("TASKBOX_ADMIN_TOKEN", ADMIN)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _kill = KillOnDrop(&mut child);
    let http = reqwest::Client::new();
    wait::until("the API", Duration::from_secs(60), || async {
        let answer = http.get(format!("{url}/v1/readyz")).send().await.ok()?;
        answer.status().is_success().then_some(())
    })
    .await;
    let form = reqwest::multipart::Form::new()
        .text("manifest", host::manifest_text("fixtures-http"))
        .part(
            "component",
            reqwest::multipart::Part::bytes(std::fs::read(guests::wasm("fixtures_http")).unwrap()),
        );
    let uploaded = http
        .post(format!("{url}/v1/modules"))
        .bearer_auth(ADMIN)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), StatusCode::CREATED);

    let (trace, caller_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let enqueued: Value = http
        .post(format!("{url}/v1/jobs"))
        .bearer_auth(ADMIN)
        .header("traceparent", format!("00-{trace}-{caller_span}-01"))
        .json(&json!({
            "module": "fixtures-http",
            "task": "fetch",
            "input": {"url": target.url("/hello")},
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = enqueued["id"].as_str().unwrap().to_owned();
    wait::until("the job to complete", Duration::from_secs(60), || async {
        let job: Value = http
            .get(format!("{url}/v1/jobs/{id}"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (job["status"] == "completed").then_some(())
    })
    .await;

    let by_name = wait::until(
        "the trace's four spans",
        Duration::from_secs(60),
        || async {
            let spans = received.spans_of(trace);
            let by_name: HashMap<String, Value> = spans
                .into_iter()
                .map(|span| (span["name"].as_str().unwrap_or_default().to_owned(), span))
                .collect();
            ["api.request", "enqueue", "job.run", "guest.http"]
                .iter()
                .all(|name| by_name.contains_key(*name))
                .then_some(by_name)
        },
    )
    .await;
    let span_id = |name: &str| by_name[name]["spanId"].as_str().unwrap().to_owned();
    let parent = |name: &str| {
        by_name[name]["parentSpanId"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    let request = &by_name["api.request"];
    assert_eq!(
        attribute(request, "http.route").as_deref(),
        Some("/v1/jobs")
    );
    assert_eq!(
        parent("api.request"),
        caller_span,
        "the caller's span is the parent"
    );
    assert_eq!(parent("enqueue"), span_id("api.request"));
    assert_eq!(parent("job.run"), span_id("enqueue"));
    assert_eq!(parent("guest.http"), span_id("job.run"));
    assert_eq!(
        attribute(&by_name["job.run"], "job.id").as_deref(),
        Some(id.as_str())
    );
    assert_eq!(
        attribute(&by_name["job.run"], "outcome").as_deref(),
        Some("completed")
    );

    // The metrics listener needs no token, and counts the job's request by its result.
    let scrape = http
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(scrape.status(), StatusCode::OK);
    let exposition = parse(&scrape.text().await.unwrap());
    let sent = [("tenant", "default"), ("result", "sent")];
    assert_eq!(
        value(&exposition, "taskbox_guest_http_requests_total", &sent),
        1.0
    );

    let seen = target.seen();
    let sent = seen
        .iter()
        .find(|request| request.head.starts_with("GET /hello"))
        .expect("the job's request arrived");
    let header = format!("traceparent: 00-{trace}-{}-01", span_id("guest.http"));
    assert!(
        sent.head.to_ascii_lowercase().contains(&header),
        "the job's request carries its trace on ({header}):\n{}",
        sent.head
    );
}

struct KillOnDrop<'a>(&'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
