//! The SQL capability from a real compiled guest (`fixtures-sql`) through the sandbox:
//! SQLite (the module's own database, shared and read-only files) and a real PostgreSQL
//! cluster, with the grants and limits the engines enforce.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use taskbox_runtime::sql::{DatabaseConfig, SqlConfig, SqlDatabases};
use taskbox_runtime::{Capabilities, JobError, JobReport};

use crate::support::{postgres, sandbox};

/// The host's databases in a temporary directory: `self` files, `shared` (a SQLite file the
/// module may write) and `reference` (one it may only read, with a table `facts`).
struct Databases {
    dir: tempfile::TempDir,
    databases: SqlDatabases,
}

impl Databases {
    fn new(configure: impl FnOnce(&mut SqlConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let reference = dir.path().join("reference.sqlite");
        let conn = rusqlite::Connection::open(&reference).unwrap();
        conn.execute_batch(
            "CREATE TABLE facts (k TEXT, v INTEGER); INSERT INTO facts VALUES ('answer', 42);",
        )
        .unwrap();
        drop(conn);
        let mut config = SqlConfig {
            self_dir: Some(dir.path().join("self")),
            databases: BTreeMap::from([
                (
                    "shared".to_owned(),
                    DatabaseConfig::Sqlite {
                        path: dir.path().join("shared.sqlite"),
                    },
                ),
                (
                    "reference".to_owned(),
                    DatabaseConfig::Sqlite { path: reference },
                ),
            ]),
            ..SqlConfig::default()
        };
        configure(&mut config);
        Self {
            databases: SqlDatabases::new(config).unwrap(),
            dir,
        }
    }

    fn capabilities(&self, tenant: &str, module: &str, grants: &[&str]) -> Capabilities {
        let grants: Vec<String> = grants.iter().map(|g| g.to_string()).collect();
        Capabilities {
            sql: Some(Arc::new(
                self.databases.grant(tenant, module, &grants).unwrap(),
            )),
            ..Capabilities::default()
        }
    }
}

const GRANTS: &[&str] = &["self", "shared", "reference:read"];

async fn run(task: &str, input: Value, capabilities: Capabilities, timeout: Duration) -> JobReport {
    sandbox::run("fixtures_sql", task, input, capabilities, timeout).await
}

async fn call(task: &str, input: Value, capabilities: Capabilities) -> Value {
    let report = run(task, input, capabilities, Duration::from_secs(20)).await;
    match &report.outcome {
        Ok(output) => serde_json::from_slice(output).unwrap(),
        Err(err) => panic!("the job failed: {err} ({})", report.log),
    }
}

fn error_of(answer: &Value) -> String {
    answer["error"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_keeps_typed_rows_in_its_own_database_which_no_other_module_sees() {
    let dbs = Databases::new(|_| {});
    let mine = || dbs.capabilities("default", "orders", GRANTS);
    let created = call(
        "batch",
        json!({"db": "self", "statements": [
            {"sql": "CREATE TABLE t (i INTEGER, r REAL, s TEXT, b BLOB, n TEXT)"},
            {"sql": "INSERT INTO t VALUES (?, ?, ?, ?, ?)",
             "params": [7, 2.5, "x'); DROP TABLE t; --", {"blob": [0, 255]}, null]},
        ]}),
        mine(),
    )
    .await;
    assert_eq!(created, json!({"changed": [0, 1]}));
    // A second job of the same module: the data is there, the "injection" stayed a value.
    let rows = call(
        "query",
        json!({"db": "self", "sql": "SELECT * FROM t WHERE i = ?", "params": [7]}),
        mine(),
    )
    .await;
    assert_eq!(rows["columns"], json!(["i", "r", "s", "b", "n"]));
    assert_eq!(
        rows["rows"],
        json!([[7, 2.5, "x'); DROP TABLE t; --", {"blob": [0, 255]}, null]])
    );
    // Another module, and the same module of another tenant, have databases of their own.
    for (tenant, module) in [("default", "other"), ("acme", "orders")] {
        let theirs = call(
            "query",
            json!({"db": "self", "sql": "SELECT * FROM t"}),
            dbs.capabilities(tenant, module, GRANTS),
        )
        .await;
        assert!(
            error_of(&theirs).contains("no such table"),
            "{tenant}/{module}: {theirs}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_refuses_writes_on_a_read_grant_attach_pragmas_and_extensions() {
    let dbs = Databases::new(|_| {});
    let caps = || dbs.capabilities("default", "m", GRANTS);
    let read = call(
        "query",
        json!({"db": "reference", "sql": "SELECT v FROM facts"}),
        caps(),
    )
    .await;
    assert_eq!(read["rows"], json!([[42]]));
    let escape = dbs.dir.path().join("escaped.sqlite");
    let escape = escape.to_str().unwrap();
    let cases = [
        (
            "execute",
            json!({"db": "reference", "sql": "INSERT INTO facts VALUES ('x', 1)"}),
            "Denied",
        ),
        (
            "execute",
            json!({"db": "reference", "sql": "DELETE FROM facts"}),
            "Denied",
        ),
        (
            "execute",
            json!({"db": "self", "sql": format!("ATTACH DATABASE '{escape}' AS x")}),
            "Denied",
        ),
        (
            "execute",
            json!({"db": "self", "sql": "PRAGMA writable_schema = 1"}),
            "Denied",
        ),
        (
            "query",
            json!({"db": "self", "sql": "PRAGMA query_only"}),
            "Denied",
        ),
        (
            "query",
            json!({"db": "self", "sql": "SELECT load_extension('/tmp/evil')"}),
            "",
        ),
        (
            "execute",
            json!({"db": "self", "sql": format!("VACUUM INTO '{escape}'")}),
            "",
        ),
        (
            "execute",
            json!({"db": "self", "sql": "CREATE VIRTUAL TABLE v USING fts5(x)"}),
            "Denied",
        ),
        (
            "query",
            json!({"db": "elsewhere", "sql": "SELECT 1"}),
            "Denied(\"elsewhere\")",
        ),
        ("query", json!({"db": "self", "sql": "SELEKT 1"}), "Invalid"),
        ("execute", json!({"db": "self", "sql": "COMMIT"}), "Denied"),
    ];
    for (task, input, expected) in cases {
        let answer = call(task, input.clone(), caps()).await;
        let error = error_of(&answer);
        assert!(
            !error.is_empty() && error.contains(expected),
            "{input}: {answer}"
        );
    }
    assert!(
        !std::path::Path::new(escape).exists(),
        "a statement wrote a file of its own"
    );
    let facts = call(
        "query",
        json!({"db": "reference", "sql": "SELECT count(*) FROM facts"}),
        caps(),
    )
    .await;
    assert_eq!(facts["rows"], json!([[1]]));
    // The table-reading PRAGMAs work.
    let info = call(
        "query",
        json!({"db": "reference", "sql": "PRAGMA table_info(facts)"}),
        caps(),
    )
    .await;
    assert_eq!(info["rows"].as_array().map(Vec::len), Some(2), "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_all_or_nothing_and_results_are_capped() {
    let dbs = Databases::new(|config| {
        config.max_rows = 5;
        config.max_result_bytes = 1000;
    });
    let caps = || dbs.capabilities("default", "m", GRANTS);
    call(
        "execute",
        json!({"db": "shared", "sql": "CREATE TABLE n (v INTEGER UNIQUE, s TEXT)"}),
        caps(),
    )
    .await;
    let failed = call(
        "batch",
        json!({"db": "shared", "statements": [
            {"sql": "INSERT INTO n VALUES (1, 'a')"},
            {"sql": "INSERT INTO n VALUES (1, 'again')"},
        ]}),
        caps(),
    )
    .await;
    assert!(error_of(&failed).contains("UNIQUE"), "{failed}");
    let count = call(
        "query",
        json!({"db": "shared", "sql": "SELECT count(*) FROM n"}),
        caps(),
    )
    .await;
    assert_eq!(
        count["rows"],
        json!([[0]]),
        "the first insert was rolled back"
    );

    let many =
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 10) SELECT x FROM c";
    let rows = call("query", json!({"db": "self", "sql": many}), caps()).await;
    assert!(
        error_of(&rows).contains("TooLarge") && error_of(&rows).contains("5 rows"),
        "{rows}"
    );
    let wide = call(
        "query",
        json!({"db": "self", "sql": "SELECT zeroblob(2000)"}),
        caps(),
    )
    .await;
    assert!(error_of(&wide).contains("1000 bytes"), "{wide}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_statements_and_a_modules_own_database_are_capped() {
    let dbs = Databases::new(|config| config.max_self_bytes = 1 << 20);
    let caps = || dbs.capabilities("default", "filler", GRANTS);
    // SQLite refuses to make the value at all, rather than the host holding 900 MB of it.
    let blob = call(
        "query",
        json!({"db": "self", "sql": "SELECT length(randomblob(900000000))"}),
        caps(),
    )
    .await;
    assert!(
        error_of(&blob).starts_with("TooLarge") && error_of(&blob).contains("16777216 bytes"),
        "{blob}"
    );
    // A name longer than any database's is denied by its start.
    let name = "d".repeat(1 << 20);
    let unnamed = call("query", json!({"db": name, "sql": "SELECT 1"}), caps()).await;
    assert!(
        error_of(&unnamed).starts_with("Denied") && error_of(&unnamed).len() < 300,
        "{unnamed}"
    );
    let long = format!("SELECT 1 -- {}", "x".repeat(2 << 20));
    let refused = call("query", json!({"db": "self", "sql": long}), caps()).await;
    assert!(
        error_of(&refused).contains("more than 1048576 bytes"),
        "{refused}"
    );

    call(
        "execute",
        json!({"db": "self", "sql": "CREATE TABLE t (b BLOB)"}),
        caps(),
    )
    .await;
    let fill = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100) \
                INSERT INTO t SELECT randomblob(100000) FROM n";
    let full = call("execute", json!({"db": "self", "sql": fill}), caps()).await;
    assert!(
        error_of(&full).starts_with("TooLarge") && error_of(&full).contains("1048576 bytes"),
        "{full}"
    );
    let file = dbs.dir.path().join("self").join("default--filler.sqlite");
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(size <= 1 << 20, "the database file is {size} bytes");
    // What fits still goes in.
    let small = call(
        "execute",
        json!({"db": "self", "sql": "INSERT INTO t VALUES (randomblob(1000))"}),
        caps(),
    )
    .await;
    assert_eq!(small, json!({"changed": 1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_query_is_stopped_at_the_job_deadline() {
    let dbs = Databases::new(|_| {});
    sandbox::module("fixtures_sql");
    let started = Instant::now();
    let forever =
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";
    let report = run(
        "query",
        json!({"db": "self", "sql": forever}),
        dbs.capabilities("default", "m", GRANTS),
        Duration::from_secs(1),
    )
    .await;
    assert!(
        matches!(report.outcome, Err(JobError::Timeout { .. })),
        "{:?}",
        report.outcome
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_queries_writes_batches_and_refuses_writes_on_a_read_grant() {
    let server = tokio::task::spawn_blocking(postgres::Postgres::start)
        .await
        .unwrap();
    let dbs = Databases::new(|config| {
        config.databases = BTreeMap::from([
            (
                "shared".to_owned(),
                DatabaseConfig::Postgres {
                    url: server.url().to_owned(),
                },
            ),
            (
                "reference".to_owned(),
                DatabaseConfig::Postgres {
                    url: server.url().to_owned(),
                },
            ),
        ]);
    });
    let caps = || dbs.capabilities("default", "m", GRANTS);
    let created = call(
        "batch",
        json!({"db": "shared", "statements": [
            {"sql": "CREATE TABLE IF NOT EXISTS p (i INT8, f FLOAT8, s TEXT, b BYTEA, ok BOOL, n TEXT)"},
            {"sql": "INSERT INTO p VALUES ($1, $2, $3, $4, $5, $6)",
             "params": [9007199254740993i64, 1.5, "héllo", {"blob": [1, 2]}, 1, null]},
        ]}),
        caps(),
    )
    .await;
    assert_eq!(created, json!({"changed": [0, 1]}), "{created}");
    let rows = call("query", json!({"db": "reference", "sql": "SELECT * FROM p WHERE i = $1", "params": [9007199254740993i64]}), caps()).await;
    assert_eq!(rows["columns"], json!(["i", "f", "s", "b", "ok", "n"]));
    assert_eq!(
        rows["rows"],
        json!([[9007199254740993i64, 1.5, "héllo", {"blob": [1, 2]}, 1, null]])
    );
    let refused = call(
        "execute",
        json!({"db": "reference", "sql": "DELETE FROM p"}),
        caps(),
    )
    .await;
    assert!(error_of(&refused).contains("read-only"), "{refused}");
    let failed = call(
        "batch",
        json!({"db": "shared", "statements": [
            {"sql": "INSERT INTO p (i) VALUES (1)"},
            {"sql": "INSERT INTO nowhere VALUES (1)"},
        ]}),
        caps(),
    )
    .await;
    assert!(error_of(&failed).contains("nowhere"), "{failed}");
    let count = call(
        "query",
        json!({"db": "shared", "sql": "SELECT count(*)::int8 FROM p"}),
        caps(),
    )
    .await;
    assert_eq!(count["rows"], json!([[1]]), "the batch was rolled back");
    // A read grant cannot be escaped by ending or changing the host's transaction, and a
    // session setting does not outlive its call.
    for statements in [
        json!([{"sql": "COMMIT"}, {"sql": "DELETE FROM p"}]),
        json!([{"sql": "ROLLBACK"}, {"sql": "DELETE FROM p"}]),
        json!([{"sql": "SET TRANSACTION READ WRITE"}, {"sql": "DELETE FROM p"}]),
    ] {
        let escape = call(
            "batch",
            json!({"db": "reference", "statements": statements}),
            caps(),
        )
        .await;
        assert!(!error_of(&escape).is_empty(), "{escape}");
    }
    call(
        "execute",
        json!({"db": "shared", "sql": "SET search_path = nowhere"}),
        caps(),
    )
    .await;
    let count = call(
        "query",
        json!({"db": "shared", "sql": "SELECT count(*)::int8 FROM p"}),
        caps(),
    )
    .await;
    assert_eq!(count["rows"], json!([[1]]), "{count}");
    let unmapped = call(
        "query",
        json!({"db": "shared", "sql": "SELECT now()"}),
        caps(),
    )
    .await;
    assert!(error_of(&unmapped).contains("cast it"), "{unmapped}");

    // Rows are read one by one: a result far past the row cap (here 1,000,000 rows, some
    // 130 MB) is refused when it passes the cap, and the host never holds the rest.
    let huge = run(
        "query",
        json!({"db": "shared", "sql": "SELECT g, repeat('x', 100) FROM generate_series(1, 1000000) g"}),
        caps(),
        Duration::from_secs(20),
    )
    .await;
    let answer: Value =
        serde_json::from_slice(huge.outcome.as_ref().expect("the job runs")).unwrap();
    assert!(
        error_of(&answer).contains("more than 10000 rows"),
        "{answer}"
    );
    assert!(
        huge.stats.peak_host_memory < 16 << 20,
        "the host held {} bytes for the job",
        huge.stats.peak_host_memory
    );

    let started = Instant::now();
    let report = run(
        "query",
        json!({"db": "shared", "sql": "SELECT pg_sleep(30)::text"}),
        caps(),
        Duration::from_secs(1),
    )
    .await;
    let stopped = match &report.outcome {
        Err(JobError::Timeout { .. }) => true,
        Ok(output) => String::from_utf8_lossy(output).contains("Timeout"),
        Err(_) => false,
    };
    assert!(stopped, "{:?}", report.outcome);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}
