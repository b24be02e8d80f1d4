//! The HTTP API over real HTTP: a real server on a free port, a real `redis-server`, a worker
//! running real compiled guests, and the `taskbox` CLI as a client.

use std::process::Command;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use taskbox::api::ApiConfig;
use taskbox_core::auth::{Role, Tokens};
use taskbox_core::model::manifest::Policy;
use taskbox_core::queue::Queue;
use taskbox_core::registry::{Registry, RegistryConfig};
use taskbox_core::worker::WorkerConfig;

use crate::support::private_redis::TestRedis;
use crate::support::{guests, host, private_redis, wait};

const ADMIN: &str = "test-admin-token";

struct Server {
    redis: TestRedis,
    url: String,
    queue: Queue,
    http: reqwest::Client,
    _serving: host::Serving,
}

impl Server {
    async fn start() -> Self {
        Self::with(ApiConfig::default(), Policy::default()).await
    }

    /// An API with `config` and a worker, on a fresh Redis; the admin token is [`ADMIN`].
    async fn with(config: ApiConfig, policy: Policy) -> Self {
        let (redis, queue) = private_redis::start().await;
        let registry = Registry::new(
            queue.clone(),
            host::runtime(),
            RegistryConfig {
                policy,
                max_module_size: 16 << 20,
                ..RegistryConfig::default()
            },
        );
        let config = ApiConfig {
            admin_token: Some(ADMIN.into()),
            ..config
        };
        let worker = WorkerConfig::new(format!("api-test-{}", rand_suffix()));
        let serving = host::serve(&queue, registry, config, worker).await;
        Self {
            redis,
            url: serving.url.clone(),
            queue,
            http: reqwest::Client::new(),
            _serving: serving,
        }
    }

    fn request(&self, method: Method, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.url));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends `request`, returning the status and the JSON body (`null` when not JSON).
    async fn call(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = request.send().await.expect("the server answers");
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    async fn upload(
        &self,
        token: &str,
        manifest: String,
        component: Vec<u8>,
    ) -> (StatusCode, Value) {
        let form = reqwest::multipart::Form::new()
            .text("manifest", manifest)
            .part("component", reqwest::multipart::Part::bytes(component));
        self.call(
            self.request(Method::POST, "/v1/modules", Some(token))
                .multipart(form),
        )
        .await
    }

    async fn enqueue(&self, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(
            self.request(Method::POST, "/v1/jobs", Some(token))
                .json(&body),
        )
        .await
    }

    async fn token(&self, tenant: &str, role: Role) -> String {
        Tokens::new(self.queue.store().clone())
            .create(tenant, role)
            .await
            .unwrap()
    }

    /// The server still answers, and `tenant`'s module list is still `modules`.
    /// A connection to this server's Redis, for what no API call can do.
    async fn redis(&self) -> taskbox_core::store::Connection {
        private_redis::connection(&self.redis).await
    }

    /// The keys in this server's Redis that match `pattern`.
    async fn redis_keys(&self, pattern: &str) -> Vec<String> {
        redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut self.redis().await)
            .await
            .unwrap()
    }

    async fn assert_up_with_modules(&self, token: &str, modules: usize) {
        let (status, _) = self
            .call(self.request(Method::GET, "/v1/healthz", None))
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = self
            .call(self.request(Method::GET, "/v1/modules", Some(token)))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["modules"].as_array().unwrap().len(), modules, "{body}");
    }
}

fn rand_suffix() -> u32 {
    rand::random()
}

fn hello() -> Vec<u8> {
    std::fs::read(guests::wasm("hello")).unwrap()
}

/// Asserts a typed error answer.
fn assert_error(answer: &(StatusCode, Value), status: StatusCode, code: &str, mentions: &str) {
    let (got, body) = answer;
    assert_eq!(*got, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(mentions),
        "`{message}` should mention `{mentions}`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_enqueue_and_get_the_result_over_http() {
    let server = Server::start().await;
    let (status, module) = server
        .upload(ADMIN, host::manifest_text("hello"), hello())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{module}");
    assert_eq!(
        (module["name"].as_str(), module["version"].as_str()),
        (Some("hello"), Some("0.1.0"))
    );

    let (status, enqueued) = server
        .enqueue(
            ADMIN,
            json!({"module": "hello", "task": "greet", "input": {"name": "Ada"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{enqueued}");
    let id = enqueued["id"].as_str().unwrap();
    let (status, job) = server
        .call(server.request(Method::GET, &format!("/v1/jobs/{id}?wait=20s"), Some(ADMIN)))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["result"], json!({"message": "Hello, Ada!"}));
    assert_eq!(job["version"], "0.1.0");
    // Its one attempt in the timeline, with what the sandbox measured.
    assert_eq!(job["attempts"][0]["outcome"], "completed", "{job}");
    assert!(job["attempts"][0]["fuel_used"].as_u64() > Some(0), "{job}");
    assert_eq!(job["results_expired"], false);
    let (status, states) = server
        .call(server.request(Method::GET, "/v1/jobs/states", Some(ADMIN)))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (states["completed"].as_u64(), states["pending"].as_u64()),
        (Some(1), Some(0)),
        "{states}"
    );
    let other = server.token("other", Role::Viewer).await;
    let (_, theirs) = server
        .call(server.request(Method::GET, "/v1/jobs/states", Some(&other)))
        .await;
    assert_eq!(
        theirs["completed"], 0,
        "another tenant's counts are its own: {theirs}"
    );

    let response = server
        .request(Method::GET, &format!("/v1/jobs/{id}/logs"), Some(ADMIN))
        .send()
        .await
        .unwrap();
    assert!(response.text().await.unwrap().contains("greeting Ada"));

    let (_, queues) = server
        .call(server.request(Method::GET, "/v1/queues", Some(ADMIN)))
        .await;
    assert_eq!(queues["queues"][0]["name"], "default", "{queues}");
    let (_, workers) = server
        .call(server.request(Method::GET, "/v1/workers", Some(ADMIN)))
        .await;
    assert_eq!(workers["workers"].as_array().unwrap().len(), 1, "{workers}");
    // An operator sizing a host sees what the worker holds and the most it can come to.
    let worker = &workers["workers"][0];
    let (resident, bound) = (
        worker["resident_memory"].as_u64().unwrap(),
        worker["memory_bound"].as_u64().unwrap(),
    );
    assert!(0 < resident && resident < bound, "{worker}");

    let (status, document) = server
        .call(server.request(Method::GET, "/v1/openapi.json", None))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(document["paths"]["/v1/jobs/{id}"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_queue_takes_jobs_starts_none_and_drains_when_resumed() {
    let server = Server::start().await;
    let (status, module) = server
        .upload(ADMIN, host::manifest_text("hello"), hello())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{module}");
    let operator = server.token("default", Role::Operator).await;
    let pause = |token: &str, action: &str| {
        server.request(
            Method::POST,
            &format!("/v1/queues/default/{action}"),
            Some(token),
        )
    };
    assert_error(
        &server.call(pause(&operator, "pause")).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        "admin",
    );
    let (status, paused) = server.call(pause(ADMIN, "pause")).await;
    assert_eq!(status, StatusCode::OK, "{paused}");
    assert!(paused["paused_at"].as_u64().is_some(), "{paused}");

    let mut ids = Vec::new();
    for name in ["Ada", "Grace", "Edsger"] {
        let (status, enqueued) = server
            .enqueue(
                ADMIN,
                json!({"module": "hello", "task": "greet", "input": {"name": name}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{enqueued}");
        ids.push(enqueued["id"].as_str().unwrap().to_owned());
    }
    // Longer than a worker trusts what it read of the paused queues.
    let waited = 2 * taskbox_core::queue::PAUSE_CACHED_FOR.as_millis() as u64;
    let queue = wait::until(
        "the paused queue's oldest job ages",
        Duration::from_secs(20),
        || async {
            let (_, queues) = server
                .call(server.request(Method::GET, "/v1/queues", Some(ADMIN)))
                .await;
            let queue = queues["queues"][0].clone();
            (queue["oldest_waiting_ms"].as_u64() >= Some(waited)).then_some(queue)
        },
    )
    .await;
    // A worker may hold an entry it read as the queue was paused: it counts as taken (in
    // `running`), and its job stays queued.
    let taken = queue["running"].as_u64().unwrap();
    assert_eq!(
        queue["waiting"]["normal"].as_u64().unwrap() + taken,
        3,
        "{queue}"
    );
    assert!(taken <= 1, "{queue}");
    for id in &ids {
        let (_, job) = server
            .call(server.request(Method::GET, &format!("/v1/jobs/{id}"), Some(ADMIN)))
            .await;
        assert_eq!(job["status"], "pending", "{job}");
    }

    let (status, resumed) = server.call(pause(ADMIN, "resume")).await;
    assert_eq!(status, StatusCode::OK, "{resumed}");
    assert!(resumed["paused_at"].is_null(), "{resumed}");
    for id in &ids {
        let (_, job) = server
            .call(server.request(Method::GET, &format!("/v1/jobs/{id}?wait=20s"), Some(ADMIN)))
            .await;
        assert_eq!(job["status"], "completed", "{job}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_pushes_enqueues_and_waits_through_the_api() {
    let server = Server::start().await;
    let url = server.url.clone();
    let taskbox = move |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_taskbox"))
            .args(args)
            .env("TASKBOX_URL", &url)
            .env("TASKBOX_TOKEN", ADMIN)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "taskbox {args:?} failed\n--- stdout\n{}\n--- stderr\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let guests_hello = format!("{}/../../guests/hello", env!("CARGO_MANIFEST_DIR"));
    guests::wasm("hello");
    let pushed = tokio::task::spawn_blocking(move || {
        let pushed = taskbox(&["module", "push", &guests_hello]);
        let result = taskbox(&[
            "job",
            "enqueue",
            "hello/add",
            "--input",
            r#"{"numbers":[2,3]}"#,
            "--wait",
        ]);
        let listed = taskbox(&["job", "ls", "--output", "json"]);
        (pushed, result, listed)
    })
    .await
    .unwrap();
    assert!(pushed.0.starts_with("hello@0.1.0 "), "{}", pushed.0);
    assert_eq!(pushed.1.trim(), r#"{"sum":5}"#);
    let listed: Value = serde_json::from_str(&pushed.2).unwrap();
    assert_eq!(listed["jobs"][0]["task"], "add");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_gets_a_typed_4xx_and_nothing_is_stored() {
    let server = Server::start().await;
    let post = || server.request(Method::POST, "/v1/jobs", Some(ADMIN));

    let malformed = server
        .call(
            post()
                .header("content-type", "application/json")
                .body("{\"module\": "),
        )
        .await;
    assert_error(&malformed, StatusCode::BAD_REQUEST, "malformed_json", "");
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let nested = server
        .call(
            post()
                .header("content-type", "application/json")
                .body(nested),
        )
        .await;
    assert!(nested.0.is_client_error(), "{nested:?}");
    let wrong_type = server.call(post().body("module=hello")).await;
    assert_error(
        &wrong_type,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "JSON",
    );
    let unknown_field = server
        .call(post().json(&json!({"module": "hello", "task": "greet", "colour": "red"})))
        .await;
    assert_error(
        &unknown_field,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
        "colour",
    );
    let huge = "x".repeat(3 << 20);
    let too_big = server
        .call(post().json(&json!({"module": "hello", "task": "greet", "input": huge})))
        .await;
    assert_error(
        &too_big,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        "",
    );
    let bad_duration = server
        .call(post().json(&json!({"module": "hello", "task": "greet", "delay": "soon"})))
        .await;
    assert_error(
        &bad_duration,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
        "delay",
    );
    // The checks a task's `jobs.enqueue` shares: delays, names and keys, quoted by their start.
    let far = server
        .call(post().json(&json!({"module": "hello", "task": "greet", "delay": "400days"})))
        .await;
    assert_error(
        &far,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
        "field `delay`",
    );
    let long_key = "k".repeat(100_000);
    let keyed = server
        .call(
            post().json(&json!({"module": "hello", "task": "greet", "idempotency_key": long_key})),
        )
        .await;
    assert_error(
        &keyed,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
        "… (100000 bytes)",
    );
    let queue = server
        .call(post().json(&json!({"module": "hello", "task": "greet", "queue": "a b"})))
        .await;
    assert_error(
        &queue,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
        "field `queue`",
    );

    let random: Vec<u8> = (0..4096).map(|_| rand::random()).collect();
    let answer = server
        .upload(ADMIN, host::manifest_text("hello"), random)
        .await;
    assert_error(
        &answer,
        StatusCode::BAD_REQUEST,
        "invalid_module",
        "not a WebAssembly binary",
    );
    let core = b"\0asm\x01\0\0\0".to_vec();
    let answer = server
        .upload(ADMIN, host::manifest_text("hello"), core)
        .await;
    assert_error(
        &answer,
        StatusCode::BAD_REQUEST,
        "invalid_module",
        "core WebAssembly module",
    );
    let unknown = std::fs::read(guests::wasm("fixtures_unknown_import")).unwrap();
    let answer = server
        .upload(ADMIN, host::manifest_text("hello"), unknown)
        .await;
    assert_error(
        &answer,
        StatusCode::BAD_REQUEST,
        "missing_import",
        "acme:vault/secrets",
    );
    let filesystem = std::fs::read(guests::wasm("fixtures_filesystem")).unwrap();
    let answer = server
        .upload(ADMIN, host::manifest_text("hello"), filesystem)
        .await;
    assert_error(
        &answer,
        StatusCode::BAD_REQUEST,
        "missing_import",
        "wasi:filesystem",
    );

    let traversal = host::manifest_text("hello").replace("name = \"hello\"", "name = \"../x\"");
    let answer = server.upload(ADMIN, traversal, hello()).await;
    assert_error(
        &answer,
        StatusCode::BAD_REQUEST,
        "invalid_manifest",
        "invalid module name `../x`",
    );
    let not_semver =
        host::manifest_text("hello").replace("version = \"0.1.0\"", "version = \"1.0\"");
    let answer = server.upload(ADMIN, not_semver, hello()).await;
    assert_error(
        &answer,
        StatusCode::BAD_REQUEST,
        "invalid_manifest",
        "taskbox.toml:4: field `version`",
    );

    for path in [
        "/v1/modules/..%2Fx",
        "/v1/jobs/..%2Fx",
        "/v1/jobs/default-zz",
        "/v1/nope",
    ] {
        let answer = server
            .call(server.request(Method::GET, path, Some(ADMIN)))
            .await;
        assert_error(&answer, StatusCode::NOT_FOUND, "not_found", "");
    }
    server.assert_up_with_modules(ADMIN, 0).await;
}

/// How a client sends a request body.
#[derive(Debug, Clone, Copy)]
enum Sending {
    /// In pieces with pauses, still sending when the server has seen enough.
    Slowly,
    /// Only after the server's `100 Continue`, as curl does for large bodies.
    AfterContinue,
}

/// POSTs `body` to `/v1/jobs` over a plain TCP connection and returns the final answer's
/// status and JSON body, reading until the server closes the connection.
async fn raw_post(address: &str, body: &str, sending: Sending) -> (StatusCode, Value) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let expect = match sending {
        Sending::Slowly => "",
        Sending::AfterContinue => "Expect: 100-continue\r\n",
    };
    let head = format!(
        "POST /v1/jobs HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {ADMIN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n{expect}\r\n",
        body.len()
    );
    writer.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    if let Sending::AfterContinue = sending {
        let mut chunk = [0; 4096];
        while !answer.windows(4).any(|window| window == b"\r\n\r\n") {
            let read = reader.read(&mut chunk).await.unwrap();
            assert!(read > 0, "the server closed before answering the head");
            answer.extend_from_slice(&chunk[..read]);
        }
    }
    let continued = answer.starts_with(b"HTTP/1.1 100");
    let send_body = matches!(sending, Sending::Slowly) || continued;
    let body = body.as_bytes().to_vec();
    // The server may stop reading once it has answered: what is left unsent is no error here.
    let sender = tokio::spawn(async move {
        if !send_body {
            return;
        }
        for piece in body.chunks(64 << 10) {
            if writer.write_all(piece).await.is_err() {
                return;
            }
            if let Sending::Slowly = sending {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(30), reader.read_to_end(&mut answer))
        .await
        .expect("the server ends the connection after its answer")
        .expect("the server answers without resetting the connection");
    sender.await.unwrap();

    let text = String::from_utf8_lossy(&answer);
    let last = text
        .split("HTTP/1.1 ")
        .filter(|response| !response.is_empty() && !response.starts_with("100 "))
        .last()
        .unwrap_or_else(|| panic!("no final answer in {text:?}"));
    let status: u16 = last[..3].parse().unwrap();
    let json = last.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (
        StatusCode::from_u16(status).unwrap(),
        serde_json::from_str(json).unwrap_or(Value::Null),
    )
}

/// A client gets the 413 and its JSON error for a body over the cap, whatever it is still
/// sending when the server has read enough: the whole body at once, in slow pieces, or only
/// after `100 Continue`; and its next request is answered too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_cap_gets_its_413_however_it_is_sent() {
    let server = Server::start().await;
    let address = server.url.trim_start_matches("http://").to_owned();
    let body =
        json!({"module": "hello", "task": "greet", "input": "x".repeat(3 << 20)}).to_string();
    for _ in 0..50 {
        let all_at_once = server
            .call(
                server
                    .request(Method::POST, "/v1/jobs", Some(ADMIN))
                    .header("content-type", "application/json")
                    .body(body.clone()),
            )
            .await;
        assert_error(
            &all_at_once,
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "",
        );
        // The client's next request, on whatever connection its pool gives it, is answered.
        let (status, _) = server
            .call(server.request(Method::GET, "/v1/healthz", None))
            .await;
        assert_eq!(status, StatusCode::OK);
        for sending in [Sending::Slowly, Sending::AfterContinue] {
            let answer = raw_post(&address, &body, sending).await;
            assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "");
        }
    }
    let (status, listed) = server
        .call(server.request(Method::GET, "/v1/jobs", Some(ADMIN)))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["jobs"], json!([]), "no job was stored: {listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_sees_and_touches_only_its_own_things() {
    let server = Server::start().await;
    let alice = server.token("alice", Role::Admin).await;
    let bob = server.token("bob", Role::Admin).await;
    let viewer = server.token("alice", Role::Viewer).await;
    assert_eq!(
        server
            .upload(&alice, host::manifest_text("hello"), hello())
            .await
            .0,
        StatusCode::CREATED
    );
    let (_, job) = server
        .enqueue(
            &alice,
            json!({"module": "hello", "task": "greet", "input": {"name": "A"}}),
        )
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    let schedule = json!({"name": "daily", "cron": "@daily", "module": "hello", "task": "greet"});
    let (status, _) = server
        .call(
            server
                .request(Method::POST, "/v1/schedules", Some(&alice))
                .json(&schedule),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // An idempotency key is the tenant's own: Bob's use of Alice's key is a new job.
    let keyed = json!({"module": "hello", "task": "greet", "idempotency_key": "k1"});
    let (_, first) = server.enqueue(&alice, keyed.clone()).await;

    // Bob's view: no module, no job, no schedule; every id answers 404.
    let answer = server
        .enqueue(
            &bob,
            json!({"module": "hello", "task": "greet", "input": {"name": "B"}}),
        )
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "not_found", "hello");
    for (method, path) in [
        (Method::GET, format!("/v1/jobs/{id}")),
        (Method::GET, format!("/v1/jobs/{id}/logs")),
        (Method::POST, format!("/v1/jobs/{id}/cancel")),
        (Method::POST, format!("/v1/jobs/{id}/retry")),
        (Method::POST, format!("/v1/dead/{id}/retry")),
        (Method::GET, "/v1/modules/hello".to_owned()),
        (Method::DELETE, "/v1/modules/hello/0.1.0".to_owned()),
        (Method::GET, "/v1/schedules/daily".to_owned()),
        (Method::POST, "/v1/schedules/daily/pause".to_owned()),
        (Method::DELETE, "/v1/schedules/daily".to_owned()),
    ] {
        let answer = server
            .call(server.request(method.clone(), &path, Some(&bob)))
            .await;
        assert_error(&answer, StatusCode::NOT_FOUND, "not_found", "");
    }
    let (_, jobs) = server
        .call(server.request(Method::GET, "/v1/jobs", Some(&bob)))
        .await;
    assert_eq!(jobs["jobs"], json!([]));
    let (_, schedules) = server
        .call(server.request(Method::GET, "/v1/schedules", Some(&bob)))
        .await;
    assert_eq!(schedules["schedules"], json!([]));
    server.assert_up_with_modules(&bob, 0).await;
    server
        .upload(&bob, host::manifest_text("hello"), hello())
        .await;
    let (status, second) = server.enqueue(&bob, keyed).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_ne!(first["id"], second["id"]);
    server.assert_up_with_modules(&alice, 1).await;

    // Roles and tokens.
    let answer = server
        .enqueue(&viewer, json!({"module": "hello", "task": "greet"}))
        .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "forbidden", "operator");
    let (status, _) = server
        .call(server.request(Method::GET, &format!("/v1/jobs/{id}"), Some(&viewer)))
        .await;
    assert_eq!(status, StatusCode::OK);
    let answer = server
        .call(server.request(Method::GET, "/v1/jobs", None))
        .await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized", "token");
    let answer = server
        .call(server.request(Method::GET, "/v1/jobs", Some("tbx_forged")))
        .await;
    assert_error(
        &answer,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "not valid",
    );
}

/// A job whose stored status this version does not know (a newer version wrote it, or it was
/// damaged) is still shown and listed, as `unknown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_with_a_status_it_cannot_read_stays_in_view() {
    let server = Server::start().await;
    server
        .upload(ADMIN, host::manifest_text("hello"), hello())
        .await;
    // No worker serves `parked`, so nothing but this test touches the job.
    let (_, job) = server
        .enqueue(
            ADMIN,
            json!({"module": "hello", "task": "greet", "queue": "parked"}),
        )
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    let [key] = <[String; 1]>::try_from(server.redis_keys(&format!("*job:{id}")).await).unwrap();
    let () = redis::cmd("HSET")
        .arg(&key)
        .arg("status")
        .arg("paused-by-a-newer-taskbox")
        .query_async(&mut server.redis().await)
        .await
        .unwrap();

    let (status, shown) = server
        .call(server.request(Method::GET, &format!("/v1/jobs/{id}"), Some(ADMIN)))
        .await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["status"], "unknown", "{shown}");
    for _ in 0..2 {
        let (_, listed) = server
            .call(server.request(Method::GET, "/v1/jobs", Some(ADMIN)))
            .await;
        let ids: Vec<&str> = listed["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|job| job["id"].as_str())
            .collect();
        assert_eq!(
            ids,
            [id.as_str()],
            "listed, and still listed the second time"
        );
    }
}

/// When Redis reaches its `maxmemory`, an enqueue is answered 503 with an error that says so,
/// and stores nothing; once Redis has room again, enqueues work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_refuses_new_jobs_with_a_503_and_stores_nothing() {
    let server = Server::start().await;
    server
        .upload(ADMIN, host::manifest_text("hello"), hello())
        .await;
    let job = json!({"module": "hello", "task": "greet", "queue": "parked"});
    let mut redis = server.redis().await;
    let set_maxmemory = |bytes: u64| {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg(bytes)
            .to_owned()
    };

    let () = set_maxmemory(1).query_async(&mut redis).await.unwrap();
    let full = server.enqueue(ADMIN, job.clone()).await;
    let () = set_maxmemory(0).query_async(&mut redis).await.unwrap();
    assert_error(
        &full,
        StatusCode::SERVICE_UNAVAILABLE,
        "redis_out_of_memory",
        "maxmemory",
    );
    let (_, listed) = server
        .call(server.request(Method::GET, "/v1/jobs", Some(ADMIN)))
        .await;
    assert_eq!(listed["jobs"], json!([]), "nothing was stored: {listed}");
    let (status, enqueued) = server.enqueue(ADMIN, job).await;
    assert!(status.is_success(), "{status}: {enqueued}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_are_immutable_and_the_name_alone_means_the_latest() {
    let server = Server::start().await;
    assert_eq!(
        server
            .upload(ADMIN, host::manifest_text("hello"), hello())
            .await
            .0,
        StatusCode::CREATED
    );
    let again = server
        .upload(ADMIN, host::manifest_text("hello"), hello())
        .await;
    assert_eq!(
        again.0,
        StatusCode::OK,
        "the same bytes again are accepted as they are"
    );
    let other = std::fs::read(guests::wasm("fixtures")).unwrap();
    let other_digest = taskbox_runtime::ModuleDigest::of(&other).to_string();
    let answer = server
        .upload(ADMIN, host::manifest_text("hello"), other)
        .await;
    assert_error(
        &answer,
        StatusCode::CONFLICT,
        "version_exists",
        "hello@0.1.0",
    );
    let left_behind = server.redis_keys(&format!("*module*{other_digest}*")).await;
    assert_eq!(
        left_behind,
        Vec::<String>::new(),
        "a refused upload stores nothing"
    );
    let newer = host::manifest_text("hello").replace("version = \"0.1.0\"", "version = \"0.2.0\"");
    assert_eq!(
        server.upload(ADMIN, newer, hello()).await.0,
        StatusCode::CREATED
    );

    // No worker serves `parked`, so the job stays queued.
    let (_, job) = server
        .enqueue(
            ADMIN,
            json!({"module": "hello", "task": "greet", "queue": "parked"}),
        )
        .await;
    let (_, job) = server
        .call(server.request(
            Method::GET,
            &format!("/v1/jobs/{}", job["id"].as_str().unwrap()),
            Some(ADMIN),
        ))
        .await;
    assert_eq!(job["version"], "0.2.0");
    let answer = server
        .enqueue(ADMIN, json!({"module": "hello", "task": "nope"}))
        .await;
    assert_error(
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_job",
        "has no task `nope`",
    );

    let answer = server
        .call(server.request(Method::DELETE, "/v1/modules/hello/0.2.0", Some(ADMIN)))
        .await;
    assert_error(
        &answer,
        StatusCode::CONFLICT,
        "module_in_use",
        "1 queued job",
    );
    let (status, _) = server
        .call(server.request(
            Method::DELETE,
            "/v1/modules/hello/0.2.0?force=true",
            Some(ADMIN),
        ))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, shown) = server
        .call(server.request(Method::GET, "/v1/modules/hello", Some(ADMIN)))
        .await;
    assert_eq!(shown["versions"].as_array().unwrap().len(), 1, "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_answer_413_and_429_and_policy_names_the_field() {
    let config = ApiConfig {
        max_input: 1024,
        enqueue_rate: 0.5,
        enqueue_burst: 2.0,
        ..ApiConfig::default()
    };
    let policy = Policy {
        max_memory: 64 << 20,
        ..Policy::default()
    };
    let server = Server::with(config, policy).await;
    let greedy = host::manifest_text("hello").replace(
        "[tasks.greet]",
        "[limits]\nmemory = \"128MiB\"\n\n[tasks.greet]",
    );
    let answer = server.upload(ADMIN, greedy, hello()).await;
    assert_error(
        &answer,
        StatusCode::FORBIDDEN,
        "policy_exceeded",
        "limits.memory",
    );
    assert_eq!(
        server
            .upload(ADMIN, host::manifest_text("hello"), hello())
            .await
            .0,
        StatusCode::CREATED
    );

    let answer = server
        .enqueue(
            ADMIN,
            json!({"module": "hello", "task": "greet", "input": "x".repeat(2000)}),
        )
        .await;
    assert_error(
        &answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        "input_too_large",
        "input",
    );

    for _ in 0..2 {
        let (status, _) = server
            .enqueue(
                ADMIN,
                json!({"module": "hello", "task": "greet", "input": {"name": "r"}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let response = server
        .request(Method::POST, "/v1/jobs", Some(ADMIN))
        .json(&json!({"module": "hello", "task": "greet"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_page_with_cursors_without_gaps_or_repeats() {
    let server = Server::start().await;
    server
        .upload(ADMIN, host::manifest_text("hello"), hello())
        .await;
    let mut enqueued = Vec::new();
    for (i, queue) in ["a", "b", "a", "c", "b", "a", "c"].iter().enumerate() {
        let (_, job) = server
            .enqueue(ADMIN, json!({"module": "hello", "task": "greet", "queue": queue, "input": {"name": i.to_string()}}))
            .await;
        enqueued.push(job["id"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/v1/jobs?limit=3&cursor={cursor}"),
            None => "/v1/jobs?limit=3".to_owned(),
        };
        let (status, page) = server
            .call(server.request(Method::GET, &path, Some(ADMIN)))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let jobs = page["jobs"].as_array().unwrap();
        assert!(jobs.len() <= 3);
        seen.extend(
            jobs.iter()
                .map(|job| job["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let mut expected = enqueued.clone();
    expected.sort();
    let mut got = seen.clone();
    got.sort();
    assert_eq!(got, expected, "every job once");
    let (_, only_b) = server
        .call(server.request(Method::GET, "/v1/jobs?queue=b", Some(ADMIN)))
        .await;
    assert_eq!(only_b["jobs"].as_array().unwrap().len(), 2);
    let answer = server
        .call(server.request(Method::GET, "/v1/jobs?cursor=bogus", Some(ADMIN)))
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_query", "cursor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_a_scan_page_is_listed_searched_counted_and_retried_in_bulk() {
    let server = Server::start().await;
    let (status, _) = server
        .upload(
            ADMIN,
            host::manifest_text("fixtures"),
            std::fs::read(guests::wasm("fixtures")).unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // One batch: every job has the same creation time, more of them than a listing reads
    // at once.
    let jobs: Vec<Value> = (0..450)
        .map(|i| {
            json!({"module": "fixtures", "task": "fail", "max_retries": 0,
                        "input": {"kind": "fatal", "message": format!("m{}", i % 9)}})
        })
        .collect();
    let (status, reply) = server
        .call(
            server
                .request(Method::POST, "/v1/jobs/batch", Some(ADMIN))
                .json(&json!({"jobs": jobs})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let count = |query: &'static str| {
        let server = &server;
        async move {
            let (status, count) = server
                .call(server.request(Method::GET, &format!("/v1/jobs/count?{query}"), Some(ADMIN)))
                .await;
            assert_eq!(status, StatusCode::OK, "{count}");
            assert_eq!(count["complete"], true, "{count}");
            count["count"].as_u64().unwrap()
        }
    };
    wait::until("every job dies", Duration::from_secs(60), || async {
        (count("status=dead").await == 450).then_some(())
    })
    .await;

    let mut seen = std::collections::HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/v1/jobs?limit=100&cursor={cursor}"),
            None => "/v1/jobs?limit=100".to_owned(),
        };
        let (_, page) = server
            .call(server.request(Method::GET, &path, Some(ADMIN)))
            .await;
        for job in page["jobs"].as_array().unwrap() {
            assert!(
                seen.insert(job["id"].as_str().unwrap().to_owned()),
                "listed twice: {job}"
            );
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 450, "every job of the batch once");

    // Jobs whose input says `m4`: 50 of them.
    assert_eq!(count("status=dead&input=message%3Dm4").await, 50);
    let (_, found) = server
        .call(server.request(
            Method::GET,
            "/v1/jobs?status=dead&input=message%3Dm4&limit=500",
            Some(ADMIN),
        ))
        .await;
    assert_eq!(found["jobs"].as_array().unwrap().len(), 50, "{found}");
    let some_id = found["jobs"][0]["id"].as_str().unwrap();
    let (_, by_prefix) = server
        .call(server.request(
            Method::GET,
            &format!("/v1/jobs?id={}", &some_id[..20]),
            Some(ADMIN),
        ))
        .await;
    assert!(
        by_prefix["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|job| job["id"] == some_id)
    );

    let viewer = server.token("default", Role::Viewer).await;
    let bulk = json!({"action": "retry", "selection": {"status": "dead", "input": "message=m4"}});
    let (status, _) = server
        .call(
            server
                .request(Method::POST, "/v1/jobs/bulk", Some(&viewer))
                .json(&bulk),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, reply) = server
        .call(
            server
                .request(Method::POST, "/v1/jobs/bulk", Some(ADMIN))
                .json(&bulk),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(
        (reply["matched"].as_u64(), reply["acted"].as_u64()),
        (Some(50), Some(50))
    );
    // Exactly those were retried: they die again, each once more retried than the others.
    wait::until(
        "the retried jobs die again",
        Duration::from_secs(60),
        || async { (count("status=dead").await == 450).then_some(()) },
    )
    .await;
    let (_, all) = server
        .call(server.request(Method::GET, "/v1/jobs?limit=500", Some(ADMIN)))
        .await;
    for job in all["jobs"].as_array().unwrap() {
        let matched = job["id"].as_str().is_some_and(|id| {
            found["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|found| found["id"] == id)
        });
        assert_eq!(job["dead_retries"], u32::from(matched), "{job}");
    }
    let answer = server
        .call(server.request(Method::GET, "/v1/jobs?input=no-equals-sign", Some(ADMIN)))
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_query", "input");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_to_listen_off_loopback_without_an_admin_token() {
    let (_redis, queue) = private_redis::start().await;
    let registry = Registry::new(queue.clone(), host::runtime(), RegistryConfig::default());
    let config = ApiConfig {
        listen: "0.0.0.0:0".parse().unwrap(),
        ..ApiConfig::default()
    };
    let err = taskbox::api::serve(queue, registry, config, std::future::ready(()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("without an admin token"), "{err}");
}
