//! Calls the events, jobs, progress and config capabilities as its input says and returns
//! what the host answered, so that tests can check grants and limits from a real guest.

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

/// Does nothing.
fn noop(_job: &Job, _input: Bytes) -> Result<Bytes, TaskError> {
    Ok(Bytes(Vec::new()))
}

taskbox_guest::tasks!(publish, enqueue, chain, fan_out, config, progress, noop);
