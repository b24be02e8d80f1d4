//! Hostile guests for `tests/it/hostile.rs`: each task knocks on one door of the host in a loop and
//! with oversized arguments, and answers how many times the host gave each answer, so that
//! the test can tell a typed refusal from a crash or a silent acceptance. `mark` and `scan`
//! check that a job cannot read what an earlier job of the same module left in memory.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};
use taskbox_guest::events::{self, EventError};
use taskbox_guest::http::{self, HttpError};
use taskbox_guest::sql::{self, SqlError};
use taskbox_guest::{Bytes, Job, TaskError, config, log};

/// Does nothing: the warm-up, and the proof that the worker still runs jobs.
fn noop(_job: &Job, _input: Bytes) -> Result<Bytes, TaskError> {
    Ok(Bytes(Vec::new()))
}

/// How many times each answer came back, by name.
#[derive(Default)]
struct Tally(BTreeMap<&'static str, u64>);

impl Tally {
    fn add(&mut self, answer: &'static str) {
        *self.0.entry(answer).or_default() += 1;
    }

    fn json(&self) -> Value {
        json!(self.0)
    }
}

#[derive(Deserialize)]
struct Flood {
    /// Calls in the loop.
    count: u32,
    /// The size of the one oversized argument of each kind.
    bytes: usize,
}

fn event_answer(result: Result<(), EventError>) -> &'static str {
    match result {
        Ok(()) => "ok",
        Err(EventError::Denied(_)) => "denied",
        Err(EventError::InvalidChannel(_)) => "invalid_channel",
        Err(EventError::InvalidEvent(_)) => "invalid_event",
        Err(EventError::TooLarge(_)) => "too_large",
        Err(EventError::Serialize(_)) => "serialize",
        Err(EventError::Unavailable(_)) => "unavailable",
    }
}

/// Publishes `count` small events on a granted channel and `count` on a channel it is not
/// granted, then one event each with data, a channel name and an event name of `bytes` bytes.
fn events_flood(_job: &Job, input: Flood) -> Result<Value, TaskError> {
    let mut tally = Tally::default();
    for n in 0..input.count {
        tally.add(event_answer(events::publish(
            "hostile:flood",
            "tick",
            &n.to_string(),
        )));
        tally.add(event_answer(events::publish("other:flood", "tick", "x")));
    }
    let huge = "e".repeat(input.bytes);
    tally.add(event_answer(events::publish("hostile:flood", "big", &huge)));
    tally.add(event_answer(events::publish(&huge, "tick", "x")));
    tally.add(event_answer(events::publish("hostile:flood", &huge, "x")));
    Ok(tally.json())
}

fn sql_answer<T>(result: &Result<T, SqlError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(SqlError::Denied(_)) => "denied",
        Err(SqlError::Invalid(_)) => "invalid",
        Err(SqlError::TooLarge(_)) => "too_large",
        Err(SqlError::Timeout) => "timeout",
        Err(SqlError::Unavailable(_)) => "unavailable",
    }
}

#[derive(Deserialize)]
struct Size {
    bytes: usize,
}

/// Asks its own database for values, results and statements of `bytes` bytes, and a database
/// named with `bytes` bytes; answers each one's outcome by name.
fn sql_blob(_job: &Job, input: Size) -> Result<Value, TaskError> {
    let bytes = i64::try_from(input.bytes).unwrap_or(i64::MAX);
    let blob = vec![0u8; input.bytes];
    let comment = format!("SELECT 1 -- {}", "c".repeat(input.bytes));
    let mut answers = BTreeMap::new();
    let mut ask = |name: &'static str, db: &str, statement: &str, params: &[sql::Value]| {
        answers.insert(name, sql_answer(&sql::query(db, statement, params)));
    };
    ask(
        "randomblob",
        "self",
        "SELECT randomblob(?)",
        &[sql::Value::Integer(bytes)],
    );
    ask(
        "zeroblob",
        "self",
        "SELECT zeroblob(?)",
        &[sql::Value::Integer(bytes)],
    );
    ask(
        "blob_parameter",
        "self",
        "SELECT length(?)",
        &[sql::Value::Blob(blob)],
    );
    ask(
        "rows",
        "self",
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) \
         SELECT x, zeroblob(4096) FROM n",
        &[],
    );
    ask("statement", "self", &comment, &[]);
    ask("database_name", &"d".repeat(input.bytes), "SELECT 1", &[]);
    Ok(json!(answers))
}

#[derive(Deserialize)]
struct Fill {
    /// Bytes per row.
    chunk: u32,
}

/// Fills its own database with rows of `chunk` bytes until the host refuses one, then empties
/// it again, so that every run starts from the same database. Answers the rows that fit and
/// the refusal.
fn sql_fill(_job: &Job, input: Fill) -> Result<Value, TaskError> {
    sql::execute("self", "CREATE TABLE IF NOT EXISTS fill (b BLOB)", &[])?;
    let mut rows = 0u32;
    let refusal = loop {
        let inserted = sql::execute(
            "self",
            "INSERT INTO fill VALUES (zeroblob(?))",
            &[sql::Value::Integer(input.chunk.into())],
        );
        match inserted {
            Ok(_) => rows += 1,
            Err(_) => break sql_answer(&inserted),
        }
    };
    sql::execute("self", "DELETE FROM fill", &[])?;
    Ok(json!({"rows": rows, "refusal": refusal}))
}

fn http_answer(result: Result<http::Response, HttpError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(HttpError::InvalidUrl(_)) => "invalid_url",
        Err(HttpError::Denied(code)) if code.starts_with("HttpRequestDenied") => "denied",
        Err(HttpError::Denied(code)) if code.starts_with("ConnectionLimitReached") => {
            "request_limit"
        }
        Err(HttpError::Denied(_)) => "denied_other",
        Err(HttpError::Failed(_)) => "failed",
        Err(HttpError::Body(_)) => "body",
    }
}

/// Sends `count` requests to a host it is not granted, then one with a host name and one
/// with a path of `bytes` bytes.
fn http_denied(_job: &Job, input: Flood) -> Result<Value, TaskError> {
    let mut tally = Tally::default();
    for _ in 0..input.count {
        tally.add(http_answer(http::get("https://denied.example/").send()));
    }
    let long = "h".repeat(input.bytes);
    tally.add(http_answer(
        http::get(&format!("https://{long}.example/")).send(),
    ));
    tally.add(http_answer(
        http::get(&format!("https://denied.example/{long}")).send(),
    ));
    Ok(tally.json())
}

/// Asks for a setting with a key of `bytes` bytes, `count` times; answers how many were found.
fn config_flood(_job: &Job, input: Flood) -> Result<Value, TaskError> {
    let key = "k".repeat(input.bytes);
    let found = (0..input.count)
        .filter(|_| config::get(&key).is_some())
        .count();
    Ok(json!({"asked": input.count, "found": found}))
}

/// Writes `count` log lines of `bytes` bytes each.
fn log_flood(_job: &Job, input: Flood) -> Result<Value, TaskError> {
    let line = "l".repeat(input.bytes);
    for _ in 0..input.count {
        log::info(&line);
    }
    Ok(json!({"lines": input.count}))
}

#[derive(Deserialize)]
struct Marker {
    /// The marker is derived from this seed in the guest, so that the seed, which the host
    /// and the next job's input also hold, is not the pattern `scan` looks for.
    seed: String,
    /// How much heap `mark` fills and `scan` reserves.
    bytes: usize,
    /// `scan` writes the marker into its reserved heap first: the check that it finds what
    /// it looks for.
    #[serde(default)]
    plant: bool,
}

/// The pattern derived from `seed`: every byte flipped, so that the seed does not match it.
fn marker(seed: &str) -> Vec<u8> {
    seed.bytes().map(|byte| !byte).collect()
}

/// Fills `bytes` of heap with the marker and keeps it to the end of the job.
fn mark(_job: &Job, input: Marker) -> Result<Value, TaskError> {
    let pattern = marker(&input.seed);
    let mut heap = Vec::with_capacity(input.bytes);
    while heap.len() + pattern.len() <= input.bytes {
        heap.extend_from_slice(&pattern);
    }
    std::hint::black_box(&heap);
    Ok(json!({"marked": heap.len()}))
}

/// Reserves `bytes` of heap without writing it, so that its linear memory is at least as
/// large as `mark`'s, then reads all of its linear memory for the marker; fails naming the
/// offset if it is there, anywhere but in its own copy of the pattern.
fn scan(_job: &Job, input: Marker) -> Result<Value, TaskError> {
    let pattern = marker(&input.seed);
    let mut reserved: Vec<u8> = Vec::with_capacity(input.bytes);
    if input.plant {
        reserved.extend_from_slice(&pattern);
    }
    std::hint::black_box(&reserved);
    let own = pattern.as_ptr() as usize..pattern.as_ptr() as usize + pattern.len();
    let size = core::arch::wasm32::memory_size(0) * 65536;
    let first = pattern
        .first()
        .copied()
        .ok_or_else(|| TaskError::fatal("an empty seed"))?;
    // Volatile reads: the reserved heap was never written by this job, so the compiler may
    // not assume anything about it. Address 0 is skipped: Rust does not read through null.
    let byte = |at: usize| unsafe { std::ptr::read_volatile(at as *const u8) };
    let mut at = 1;
    while at + pattern.len() <= size {
        if byte(at) == first
            && !own.contains(&at)
            && (1..pattern.len()).all(|i| byte(at + i) == pattern[i])
        {
            return Err(TaskError::fatal(format!(
                "the marker is at offset {at} of {size} bytes of linear memory"
            )));
        }
        at += 1;
    }
    Ok(json!({"scanned": size}))
}

taskbox_guest::tasks!(
    noop,
    events_flood,
    sql_blob,
    sql_fill,
    http_denied,
    config_flood,
    log_flood,
    mark,
    scan
);
