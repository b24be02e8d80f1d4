//! Each language's example module end to end through a worker: published with its manifest,
//! then jobs for a result, an event heard on its channel, a row in the module's own SQLite
//! database, a request to a local HTTP server, and a request to a host the manifest does not
//! allow, reported as denied. Plain WASI programs, a Rust `bin` and a C program, run as
//! command modules.
//!
//! The Python, JavaScript and C examples are built by their build scripts with the
//! toolchains `guests/toolchains.sh` installs (into guests/.tools and guests/js/node_modules).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::{Value, json};
use taskbox_core::events::{Events, Subscriptions};
use taskbox_core::model::capabilities::HostCapabilities;
use taskbox_core::model::job::{JobRecord, JobStatus};
use taskbox_core::model::manifest::Manifest;
use taskbox_core::queue::{EnqueueOptions, NewJob, Queue};
use taskbox_core::registry::{Registry, RegistryConfig, RegistryError};
use taskbox_core::worker::{Worker, WorkerConfig};
use taskbox_runtime::http::HttpLimits;
use taskbox_runtime::sql::{SqlConfig, SqlDatabases};

use crate::support::private_redis::TestRedis;
use crate::support::{guests, host, http_server, private_redis, wait};

const TENANT: &str = "default";
/// The text each example is given to store and to announce.
const TEXT: &str = "written by the languages test";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs a guest build script with the toolchains of guests/toolchains.sh first on PATH.
/// Builds run one at a time: the machine has two cores.
fn build(what: &str, command: &mut Command) {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let tools = repo().join("guests/.tools");
    let path = std::env::join_paths(
        [tools.join("bin"), tools.join("venv/bin")]
            .into_iter()
            .chain(std::env::split_paths(
                &std::env::var_os("PATH").unwrap_or_default(),
            )),
    )
    .unwrap();
    command
        .env("PATH", path)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET");
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("building {what}: could not run {command:?}: {err}"));
    assert!(
        output.status.success(),
        "building {what} failed ({command:?}); are the toolchains installed? \
         (bash guests/toolchains.sh)\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

/// The Python example, built once per test binary.
fn python_example() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = repo().join("guests/python");
        build(
            "the Python example",
            Command::new("bash").arg(dir.join("build.sh")),
        );
        dir.join("example/example.wasm")
    })
}

/// The JavaScript example, built once per test binary.
fn javascript_example() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = repo().join("guests/js");
        build(
            "the JavaScript example",
            Command::new("node")
                .args(["build.mjs", "example"])
                .current_dir(&dir),
        );
        dir.join("example/example.wasm")
    })
}

/// The C guests (the example task module and the sort program), built once per test binary.
fn c_guests() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = repo().join("guests/c");
        build(
            "the C guests",
            Command::new("bash").arg(dir.join("build.sh")),
        );
        dir.join("target")
    })
}

/// Redis, a worker offering SQLite and outbound HTTP (loopback included), and a local HTTP
/// server.
struct Host {
    _redis: TestRedis,
    queue: Queue,
    registry: Registry,
    sqlite: tempfile::TempDir,
    http: http_server::Server,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Host {
    async fn start() -> Self {
        let (redis, queue) = private_redis::start().await;
        // The Python and JavaScript components take minutes to compile in a debug build on
        // two cores, two at a time.
        let registry = Registry::new(
            queue.clone(),
            host::runtime(),
            RegistryConfig {
                compile_timeout: Duration::from_secs(900),
                ..RegistryConfig::default()
            },
        );
        let sqlite = tempfile::tempdir().unwrap();
        let databases = SqlDatabases::new(SqlConfig {
            self_dir: Some(sqlite.path().to_owned()),
            ..SqlConfig::default()
        })
        .unwrap();
        let capabilities = HostCapabilities {
            sql: Some(Arc::new(databases)),
            http: HttpLimits {
                allow_private_networks: true,
                ..HttpLimits::default()
            },
            ..HostCapabilities::default()
        };
        let worker = Worker::new(
            queue.clone(),
            host::runtime(),
            WorkerConfig {
                capabilities,
                ..WorkerConfig::new(format!("languages-test-{}", std::process::id()))
            },
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            tokio::select! {
                _ = worker.run(std::future::pending()) => {}
                _ = stopped => {}
            }
        });
        Self {
            _redis: redis,
            queue,
            registry,
            sqlite,
            http: http_server::Server::start().await,
            _stop: stop,
        }
    }

    /// Publishes the module of the manifest at `manifest` (relative to the repository) with
    /// the bytes of `wasm`.
    async fn publish(&self, manifest: &str, wasm: &Path) -> Result<(), RegistryError> {
        let manifest = read_manifest(manifest);
        let bytes = std::fs::read(wasm).unwrap();
        self.registry.publish(TENANT, manifest, bytes).await?;
        Ok(())
    }

    /// Enqueues a job and waits until it has finished, successfully or not.
    async fn run(&self, module: &str, task: &str, input: Value) -> JobRecord {
        let job = NewJob {
            module: module.into(),
            task: task.into(),
            input: input.to_string().into_bytes(),
            options: EnqueueOptions::default(),
        };
        let id = self.queue.enqueue(TENANT, job).await.unwrap().id;
        self.finished(&id).await
    }

    /// Waits until job `id` has finished, successfully or not.
    async fn finished(&self, id: &str) -> JobRecord {
        // Python and JavaScript modules compile at their first job: give it time.
        wait::until(
            format!("job {id} finished"),
            Duration::from_secs(300),
            || async {
                let job = self.queue.wait(id, Duration::from_secs(5)).await.unwrap();
                let job = job.expect("the job exists");
                matches!(job.status, JobStatus::Completed | JobStatus::Dead).then_some(job)
            },
        )
        .await
    }

    /// Runs a job that must complete, and returns its result as JSON.
    async fn result(&self, module: &str, task: &str, input: Value) -> Value {
        let job = self.run(module, task, input).await;
        assert_eq!(job.status, JobStatus::Completed, "{job:#?}");
        serde_json::from_slice(job.result.as_deref().unwrap_or(b"null")).unwrap()
    }

    /// How many rows of `table` in `module`'s own database have `TEXT` in `column`.
    fn rows_with_text(&self, module: &str, table: &str, column: &str) -> i64 {
        let file = self
            .sqlite
            .path()
            .join(format!("{TENANT}--{module}.sqlite"));
        let db = rusqlite::Connection::open(&file)
            .unwrap_or_else(|err| panic!("opening {}: {err}", file.display()));
        db.query_row(
            &format!("SELECT count(*) FROM {table} WHERE {column} = ?1"),
            [TEXT],
            |row| row.get(0),
        )
        .unwrap()
    }
}

fn read_manifest(path: &str) -> Manifest {
    let path = repo().join(path);
    let text = std::fs::read_to_string(&path).unwrap();
    Manifest::parse(&path.to_string_lossy(), &text).unwrap()
}

/// One language's example, in its own words: the four capabilities are the same.
struct Example {
    /// The manifest, relative to the repository.
    manifest: &'static str,
    /// The module's name.
    module: &'static str,
    /// The input of `note`, which stores `TEXT` in the table `notes`...
    note: Value,
    /// ...in this column.
    notes_column: &'static str,
    /// The input of `announce`, which publishes `TEXT`...
    announce: Value,
    /// ...on this channel...
    channel: &'static str,
    /// ...as this event.
    event: &'static str,
}

/// Publishes `example` and checks each capability through a worker.
async fn check_example(wasm: &Path, example: Example) {
    let host = Host::start().await;
    host.publish(example.manifest, wasm)
        .await
        .unwrap_or_else(|err| panic!("publishing {}: {err}", example.module));
    let module = example.module;

    let noop = host.run(module, "noop", Value::Null).await;
    assert_eq!(noop.status, JobStatus::Completed, "{noop:#?}");

    let note = host.result(module, "note", example.note).await;
    assert!(note.to_string().contains(TEXT), "{note}");
    assert_eq!(
        host.rows_with_text(module, "notes", example.notes_column),
        1
    );

    let mut heard = Subscriptions::new(Events::new(host.queue.store().clone()))
        .subscribe(TENANT, example.channel)
        .await
        .unwrap();
    host.result(module, "announce", example.announce).await;
    let event = tokio::time::timeout(Duration::from_secs(20), heard.next())
        .await
        .expect("no event within 20 s")
        .expect("the subscription ended");
    assert_eq!(event.event, example.event);
    assert!(event.data.contains(TEXT), "{event:?}");

    let fetched = host
        .result(module, "fetch", json!({"url": host.http.url("/hello")}))
        .await;
    assert_eq!(fetched["status"], 200, "{fetched}");
    assert!(
        host.http
            .seen()
            .iter()
            .any(|seen| seen.head.starts_with("GET /hello ")),
        "{:?}",
        host.http.seen()
    );

    let denied = host
        .run(module, "fetch", json!({"url": "http://example.net/"}))
        .await;
    assert_eq!(denied.status, JobStatus::Dead, "{denied:#?}");
    let log = denied.log.unwrap_or_default();
    assert!(log.contains("http denied for"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_runs_end_to_end() {
    let example = Example {
        manifest: "guests/python/example/taskbox.toml",
        module: "pyexample",
        note: json!({"body": TEXT}),
        notes_column: "body",
        announce: json!({"topic": "news", "message": TEXT}),
        channel: "example:news",
        event: "announcement",
    };
    check_example(python_example(), example).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_example_runs_end_to_end() {
    let example = Example {
        manifest: "guests/js/example/taskbox.toml",
        module: "js-example",
        note: json!({"text": TEXT}),
        notes_column: "text",
        announce: json!({"room": "news", "event": "announcement", "data": TEXT}),
        channel: "example:news",
        event: "announcement",
    };
    check_example(javascript_example(), example).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_c_example_runs_end_to_end() {
    let example = Example {
        manifest: "guests/c/example/taskbox.toml",
        module: "c-example",
        note: json!({"text": TEXT}),
        notes_column: "text",
        announce: json!({"channel": "example:news", "text": TEXT}),
        channel: "example:news",
        event: "announcement",
    };
    check_example(&c_guests().join("example.wasm"), example).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_c_program_runs_as_a_command_module() {
    let host = Host::start().await;
    host.publish(
        "guests/c/command/taskbox.toml",
        &c_guests().join("sort.wasm"),
    )
    .await
    .unwrap();
    let sorted = host.result("c-sort", "sort", json!([3, -1, 2])).await;
    assert_eq!(sorted, json!({"sorted": [-1, 2, 3], "sum": 4}));
    let bad = host.run("c-sort", "sort", json!({"not": "an array"})).await;
    assert_eq!(bad.status, JobStatus::Dead, "{bad:#?}");
    assert!(
        bad.error
            .as_ref()
            .unwrap()
            .to_string()
            .contains("exited with a failure status"),
        "{bad:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_program_runs_as_a_command_module() {
    let host = Host::start().await;
    host.publish("guests/words/taskbox.toml", &guests::wasm("words"))
        .await
        .unwrap();
    let counted = host
        .result("words", "count", json!({"text": "to be or not to be"}))
        .await;
    assert_eq!(counted, json!({"words": 6, "lines": 1}));
    // A failure is final: retries left or not, the job goes to the dead letters at once.
    let job = NewJob {
        module: "words".into(),
        task: "count".into(),
        input: b"not json".to_vec(),
        options: EnqueueOptions {
            max_retries: Some(3),
            ..EnqueueOptions::default()
        },
    };
    let id = host.queue.enqueue(TENANT, job).await.unwrap().id;
    let failed = host.finished(&id).await;
    assert_eq!(
        (failed.status, failed.attempt),
        (JobStatus::Dead, 1),
        "{failed:#?}"
    );
    assert!(
        failed
            .log
            .unwrap_or_default()
            .contains("the input must be a JSON object"),
        "the program's stderr is in the job's log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_must_be_of_the_abi_its_manifest_names() {
    let host = Host::start().await;
    let mut task_manifest = read_manifest("guests/words/taskbox.toml");
    task_manifest.abi = taskbox_runtime::Abi::Task;
    let bytes = std::fs::read(guests::wasm("words")).unwrap();
    let err = host
        .registry
        .publish(TENANT, task_manifest, bytes)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("add `abi = \"command\"`"), "{err}");
    let mut command_manifest = read_manifest("guests/hello/taskbox.toml");
    command_manifest.abi = taskbox_runtime::Abi::Command;
    let bytes = std::fs::read(guests::wasm("hello")).unwrap();
    let err = host
        .registry
        .publish(TENANT, command_manifest, bytes)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("remove `abi`"), "{err}");
    // A core module is wrapped only for a command: as a task it is refused, naming the fix.
    let core = std::fs::read(guests::wasip1_program("words")).unwrap();
    let err = host
        .registry
        .publish(
            TENANT,
            read_manifest("guests/hello/taskbox.toml"),
            core.clone(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("abi = \"command\""), "{err}");
    host.publish(
        "guests/words/taskbox.toml",
        &guests::wasip1_program("words"),
    )
    .await
    .unwrap();
    let shouted = host.run("words", "shout", json!({"text": "quiet"})).await;
    assert_eq!(shouted.result.as_deref(), Some(&b"QUIET"[..]));
}

#[test]
fn taskbox_run_runs_a_python_module_and_a_wasip1_program() {
    let run = |module: &Path, task: &str, input: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_taskbox"))
            .arg("run")
            .arg(module)
            .args([task, "--input", input])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{stdout}\n{stderr}");
        stdout
    };
    // A Python component has more core instances than a one-job sandbox pool would hold if
    // it were sized by the job count alone.
    let echoed = run(python_example(), "noop", r#"{"n":1}"#);
    assert_eq!(
        serde_json::from_str::<Value>(&echoed).unwrap(),
        json!({"n": 1})
    );
    let sorted = run(&c_guests().join("sort.wasm"), "sort", "[2,1]");
    assert_eq!(
        serde_json::from_str::<Value>(&sorted).unwrap(),
        json!({"sorted": [1, 2], "sum": 3})
    );
}
