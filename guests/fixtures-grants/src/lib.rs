//! Calls the events, jobs, progress and config capabilities as its input says and returns
//! what the host answered, so that tests can check grants and limits from a real guest.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};
use taskbox_guest::{Bytes, Job, TaskError, config, events, jobs};

#[derive(Deserialize)]
struct Publish {
    channel: String,
    #[serde(default)]
    event: String,
    data: String,
}

/// Publishes one event; answers `{"ok": true}` or `{"error": "..."}`.
fn publish(_job: &Job, input: Publish) -> Result<Value, TaskError> {
    Ok(
        match events::publish(&input.channel, &input.event, &input.data) {
            Ok(()) => json!({"ok": true}),
            Err(err) => json!({"error": format!("{err:?}")}),
        },
    )
}

#[derive(Deserialize)]
struct Enqueue {
    target: String,
    input: Value,
}

/// Enqueues one job; answers `{"id": ...}` or `{"error": "..."}`.
fn enqueue(_job: &Job, input: Enqueue) -> Result<Value, TaskError> {
    Ok(match jobs::enqueue(&input.target, &input.input) {
        Ok(id) => json!({"id": id}),
        Err(err) => json!({"error": format!("{err:?}")}),
    })
}

/// What `enqueue_oversized` makes too large.
#[derive(Deserialize)]
#[serde(tag = "oversized", rename_all = "snake_case")]
enum Oversized {
    Input { bytes: usize },
    Target { bytes: usize },
    Queue { bytes: usize },
    IdempotencyKey { bytes: usize },
    Delay { ms: u64 },
}

/// Enqueues `noop` with one argument made too large in the guest; answers `{"id": ...}` or
/// `{"error": "..."}`.
fn enqueue_oversized(_job: &Job, input: Oversized) -> Result<Value, TaskError> {
    let mut target = "noop".to_owned();
    let mut child = Value::Null;
    let mut options = jobs::Options::default();
    match input {
        Oversized::Input { bytes } => child = Value::String("i".repeat(bytes)),
        Oversized::Target { bytes } => target = format!("fixtures-grants/{}", "t".repeat(bytes)),
        Oversized::Queue { bytes } => options.queue = Some("q".repeat(bytes)),
        Oversized::IdempotencyKey { bytes } => options.idempotency_key = Some("k".repeat(bytes)),
        Oversized::Delay { ms } => options.delay_ms = Some(ms),
    }
    Ok(match jobs::enqueue_with(&target, &child, options) {
        Ok(id) => json!({"id": id}),
        Err(err) => json!({"error": format!("{err:?}")}),
    })
}

/// Enqueues itself again, forever: the host's depth cap ends the chain. Answers the child's
/// id, or the error that stopped the chain here.
fn chain(_job: &Job, _input: Bytes) -> Result<Value, TaskError> {
    Ok(match jobs::enqueue("chain", &json!(null)) {
        Ok(id) => json!({"child": id}),
        Err(err) => json!({"stopped": format!("{err:?}")}),
    })
}

#[derive(Deserialize)]
struct FanOut {
    count: u32,
}

/// Enqueues `count` no-op jobs; answers how many were enqueued and the first error.
fn fan_out(_job: &Job, input: FanOut) -> Result<Value, TaskError> {
    let mut enqueued = 0;
    for _ in 0..input.count {
        match jobs::enqueue("noop", &json!(null)) {
            Ok(_) => enqueued += 1,
            Err(err) => return Ok(json!({"enqueued": enqueued, "error": format!("{err:?}")})),
        }
    }
    Ok(json!({"enqueued": enqueued}))
}

#[derive(Deserialize)]
struct Key {
    key: String,
    #[serde(default)]
    fail: bool,
}

/// Answers the setting `key`, and writes it to the log (where a secret must not show); with
/// `fail`, fails with it in the error message instead (where it must not show either).
fn config(_job: &Job, input: Key) -> Result<Value, TaskError> {
    let value = config::get(&input.key);
    println!("the setting {} is {value:?}", input.key);
    if input.fail {
        return Err(TaskError::fatal(format!("failing with {value:?}")));
    }
    Ok(json!({"value": value}))
}

#[derive(Deserialize)]
struct Steps {
    steps: u8,
}

/// Reports progress `steps` times, up to 100%.
fn progress(job: &Job, input: Steps) -> Result<Value, TaskError> {
    for step in 1..=input.steps {
        let percent = (u32::from(step) * 100 / u32::from(input.steps.max(1))) as u8;
        job.progress(percent, &format!("step {step} of {}", input.steps));
    }
    Ok(json!({"steps": input.steps}))
}

#[derive(Deserialize)]
struct Flood {
    reports: u32,
    bytes: usize,
}

/// Reports progress `reports` times as fast as it can, each with a message of `bytes` bytes.
fn progress_flood(job: &Job, input: Flood) -> Result<Value, TaskError> {
    let message = "p".repeat(input.bytes);
    for report in 1..=input.reports {
        let percent = u64::from(report) * 100 / u64::from(input.reports.max(1));
        job.progress(percent as u8, &message);
    }
    Ok(json!({"reports": input.reports}))
}

#[derive(Deserialize)]
struct EventFlood {
    channel: String,
    bytes: usize,
    ms: u64,
}

/// Publishes events of `bytes` bytes of data on `channel` as fast as it can for `ms`
/// milliseconds; answers how many it published and how many the host refused, with the first
/// refusal.
fn event_flood(_job: &Job, input: EventFlood) -> Result<Value, TaskError> {
    let data = "e".repeat(input.bytes);
    let until = Instant::now() + Duration::from_millis(input.ms);
    let (mut published, mut refused, mut first_refusal) = (0u64, 0u64, None);
    while Instant::now() < until {
        match events::publish(&input.channel, "", &data) {
            Ok(()) => published += 1,
            Err(err) => {
                refused += 1;
                first_refusal.get_or_insert_with(|| format!("{err:?}"));
            }
        }
    }
    Ok(json!({"published": published, "refused": refused, "first_refusal": first_refusal}))
}

/// Does nothing.
fn noop(_job: &Job, _input: Bytes) -> Result<Bytes, TaskError> {
    Ok(Bytes(Vec::new()))
}

taskbox_guest::tasks!(
    publish,
    enqueue,
    enqueue_oversized,
    chain,
    fan_out,
    config,
    progress,
    progress_flood,
    event_flood,
    noop
);
