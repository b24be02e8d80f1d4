//! The `taskbox` command as a user runs it: real binary, real guest components.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use taskbox_core::redis_server::{RedisOptions, RedisServer};

use crate::support::{guests, wait};

/// Runs `taskbox` with `args`; the failure message of any assertion on the result shows the
/// command, its exit status, stdout and stderr.
fn taskbox(args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_taskbox"));
    command.args(args);
    let output = command.output().expect("running taskbox");
    Run {
        description: format!("{command:?}"),
        output,
    }
}

struct Run {
    description: String,
    output: Output,
}

impl Run {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    #[track_caller]
    fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            Some(code),
            "{}\n--- stdout\n{}\n--- stderr\n{}",
            self.description,
            self.stdout(),
            self.stderr()
        );
        self
    }
}

fn path(name: &str) -> String {
    guests::wasm(name).display().to_string()
}

#[test]
fn run_prints_the_output_and_the_log_separately() {
    let run = taskbox(&[
        "run",
        &path("hello"),
        "greet",
        "--input",
        r#"{"name":"Ada"}"#,
    ]);
    run.assert_code(0);
    assert_eq!(run.stdout(), "{\"message\":\"Hello, Ada!\"}\n");
    assert!(
        run.stderr().contains("[INFO] greeting Ada in job local"),
        "{}",
        run.stderr()
    );
}

#[test]
fn run_reads_input_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.json");
    std::fs::write(&input, r#"{"numbers":[1,2,39]}"#).unwrap();
    let run = taskbox(&[
        "run",
        &path("hello"),
        "add",
        "--input-file",
        &input.display().to_string(),
    ]);
    run.assert_code(0);
    assert_eq!(run.stdout(), "{\"sum\":42}\n");
}

#[test]
fn a_timeout_ends_with_one_clear_line() {
    let run = taskbox(&["run", &path("fixtures"), "spin", "--timeout", "500ms"]);
    run.assert_code(1);
    let last = run.stderr().lines().last().unwrap_or_default().to_owned();
    assert!(
        last.starts_with("error: timeout after 500ms (task fixtures/spin, "),
        "{last}"
    );
    assert!(last.contains(" fuel, "), "{last}");
    assert!(run.stdout().is_empty());
}

#[test]
fn a_huge_task_error_is_printed_cut_to_its_cap() {
    let run = taskbox(&[
        "run",
        &path("fixtures"),
        "huge_error",
        "--input",
        r#"{"bytes": 20000000, "retryable": false}"#,
    ]);
    run.assert_code(1);
    let stderr = run.stderr();
    assert!(stderr.len() < 32 << 10, "{} bytes on stderr", stderr.len());
    assert!(
        stderr.contains("[taskbox: truncated at 16384 bytes, 19983616 more bytes dropped]"),
        "{:?}",
        stderr.lines().last()
    );
}

#[test]
fn limits_from_flags_apply() {
    let run = taskbox(&["run", &path("fixtures"), "spin", "--fuel", "1000000"]);
    run.assert_code(1);
    assert!(
        run.stderr()
            .contains("error: out of fuel after 1000000 units"),
        "{}",
        run.stderr()
    );
    let run = taskbox(&["run", &path("fixtures"), "hog", "--memory", "8MiB"]);
    run.assert_code(1);
    assert!(
        run.stderr()
            .contains("error: memory limit of 8388608 bytes reached"),
        "{}",
        run.stderr()
    );
}

#[test]
fn a_module_that_cannot_load_names_the_reason() {
    let run = taskbox(&["run", &path("fixtures_unknown_import"), "reveal"]);
    run.assert_code(1);
    assert!(
        run.stderr().contains(
            "error: module imports `acme:vault/secrets`, which this host does not provide"
        ),
        "{}",
        run.stderr()
    );
    let missing = Path::new("no-such-module.wasm");
    let run = taskbox(&["run", &missing.display().to_string(), "greet"]);
    run.assert_code(1);
    assert!(
        run.stderr()
            .contains("error: reading the module no-such-module.wasm"),
        "{}",
        run.stderr()
    );
}

#[test]
fn bad_flags_are_refused_naming_the_flag() {
    let run = taskbox(&["run", &path("hello"), "greet", "--memory", "lots"]);
    run.assert_code(2);
    assert!(run.stderr().contains("--memory"), "{}", run.stderr());
    let run = taskbox(&["run", &path("hello"), "greet", "--timeout", "soon"]);
    run.assert_code(2);
    assert!(run.stderr().contains("--timeout"), "{}", run.stderr());
}

#[test]
fn an_unknown_serve_role_is_refused_naming_the_roles() {
    // Refused while parsing the flags, before any Redis is looked for.
    let run = taskbox(&["serve", "--roles", "api,bogus"]);
    run.assert_code(2);
    let stderr = run.stderr();
    assert!(stderr.contains("--roles"), "{stderr}");
    assert!(stderr.contains("api, worker, scheduler"), "{stderr}");
}

#[test]
fn help_documents_every_flag() {
    let run = taskbox(&["run", "--help"]);
    run.assert_code(0);
    let help = run.stdout();
    for flag in ["--input", "--input-file", "--fuel", "--timeout", "--memory"] {
        assert!(
            help.contains(flag),
            "`taskbox run --help` does not mention {flag}:\n{help}"
        );
    }
}

/// A `taskbox serve` child process (API, worker, scheduler) on a private redis-server, killed
/// on drop.
struct Server {
    child: std::process::Child,
    url: String,
    _redis: RedisServer,
}

impl Server {
    /// Starts the server and waits until its worker shows in `taskbox workers`.
    fn start() -> Self {
        let redis = RedisServer::start(RedisOptions::default()).expect("starting redis-server");
        // The port is free when asked; nothing else on the machine takes ports meanwhile.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_taskbox"))
            .args(["serve", "--redis", &redis.url(), "--listen", &listen])
            .args(["--concurrency", "2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting taskbox serve");
        let server = Self {
            child,
            url: format!("http://{listen}"),
            _redis: redis,
        };
        wait::until_blocking("a worker", Duration::from_secs(60), || {
            let run = server.client(&["workers", "--output", "json"]);
            (run.code() == Some(0) && run.stdout().contains("\"id\"")).then_some(())
        });
        server
    }

    /// Runs a client command of `taskbox` against this server.
    fn client(&self, args: &[&str]) -> Run {
        let mut args = args.to_vec();
        args.extend(["--server", &self.url]);
        taskbox(&args)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn client_commands_set_settings_enqueue_wait_cancel_and_show_workers() {
    let server = Server::start();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guests/hello/taskbox.toml");
    server
        .client(&[
            "module",
            "push",
            &path("hello"),
            "--manifest",
            &manifest.display().to_string(),
        ])
        .assert_code(0);

    let run = server.client(&[
        "module",
        "settings",
        "hello",
        "--set",
        "GREETING=Hi",
        "--secret",
        "API_KEY=s3cret",
    ]);
    run.assert_code(0);
    let shown = "GREETING = Hi\nAPI_KEY = [secret]\n";
    assert_eq!(run.stdout(), shown);
    let run = server.client(&["module", "settings", "hello"]);
    run.assert_code(0);
    assert_eq!(run.stdout(), shown, "the secret is never shown again");

    let run = server.client(&[
        "job",
        "enqueue",
        "hello/greet",
        "--input",
        r#"{"name":"Ada"}"#,
        "--wait",
    ]);
    run.assert_code(0);
    assert!(run.stdout().contains("Hello, Ada!"), "{}", run.stdout());

    let run = server.client(&[
        "job",
        "enqueue",
        "hello/greet",
        "--delay",
        "1h",
        "--queue",
        "later",
        "--idempotency-key",
        "once",
        "--output",
        "json",
    ]);
    run.assert_code(0);
    let enqueued: serde_json::Value = serde_json::from_str(&run.stdout()).expect("JSON");
    assert_eq!(
        (&enqueued["queue"], &enqueued["created"]),
        (&serde_json::json!("later"), &serde_json::json!(true)),
        "{enqueued}"
    );
    let id = enqueued["id"].as_str().expect("an id").to_owned();
    let again = server.client(&[
        "job",
        "enqueue",
        "hello/greet",
        "--queue",
        "later",
        "--idempotency-key",
        "once",
    ]);
    again.assert_code(0);
    assert_eq!(
        again.stdout().trim(),
        id,
        "the same key gives the first job"
    );

    let run = server.client(&["job", "cancel", &id]);
    run.assert_code(0);
    assert_eq!(run.stdout().trim(), format!("cancelled {id}"));
    let run = server.client(&["dead", "purge"]);
    run.assert_code(0);
    assert_eq!(run.stdout().trim(), "purged 0 dead letters");

    let run = server.client(&["workers"]);
    run.assert_code(0);
    let table = run.stdout();
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().expect("a header").split_whitespace().collect();
    assert_eq!(
        header,
        [
            "ID",
            "HOST",
            "QUEUES",
            "CONCURRENCY",
            "IN_FLIGHT",
            "RESIDENT_MEMORY",
            "MEMORY_BOUND",
            "STARTED",
            "HEARTBEAT"
        ],
        "{table}"
    );
    let row = lines.next().expect("a worker");
    // Sizes in IEC units, e.g. `45.2 MiB`; times as people read them.
    assert!(row.contains("iB"), "{table}");
    assert!(row.trim_end().ends_with(" ago"), "the heartbeat: {table}");
    assert!(row.contains(" 2 "), "the concurrency: {table}");
}

#[test]
fn logs_are_plain_text_off_a_terminal_and_json_lines_on_request() {
    // A Redis with no `maxmemory`: connecting to it logs a warning.
    let redis = RedisServer::start(RedisOptions::default()).expect("starting redis-server");
    let create = |format: &str| {
        taskbox(&[
            "token",
            "create",
            "--tenant",
            "acme",
            "--redis",
            &redis.url(),
            "--log-format",
            format,
        ])
    };

    let text = create("text");
    text.assert_code(0);
    let warning = text.stderr();
    assert!(
        warning.contains("WARN") && warning.contains("maxmemory"),
        "{warning}"
    );
    assert!(
        !warning.contains('\u{1b}'),
        "colour codes in a pipe: {warning:?}"
    );

    let json = create("json");
    json.assert_code(0);
    let lines: Vec<serde_json::Value> = json
        .stderr()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}")))
        .collect();
    let warning = lines
        .iter()
        .find(|line| line["level"] == "WARN")
        .expect("a warning line");
    assert!(
        warning["message"].as_str().unwrap().contains("maxmemory"),
        "{warning}"
    );
}
