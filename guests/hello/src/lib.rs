//! The example task module: `greet`, `add`, `countdown` (progress), `flaky` (errors) and
//! `reverse` (raw bytes).

use serde::{Deserialize, Serialize};
use taskbox_guest::{Bytes, Job, TaskError};

#[derive(Deserialize)]
struct Greet {
    name: String,
}

#[derive(Serialize)]
struct Greeting {
    message: String,
}

/// Greets someone by name.
fn greet(job: &Job, input: Greet) -> Result<Greeting, TaskError> {
    if input.name.trim().is_empty() {
        return Err(TaskError::fatal("`name` must not be empty"));
    }
    taskbox_guest::log::info(&format!("greeting {} in job {}", input.name, job.id));
    Ok(Greeting {
        message: format!("Hello, {}!", input.name),
    })
}

#[derive(Deserialize)]
struct Add {
    numbers: Vec<i64>,
}

#[derive(Serialize)]
struct Sum {
    sum: i64,
}

/// Adds numbers, refusing to overflow.
fn add(_job: &Job, input: Add) -> Result<Sum, TaskError> {
    let sum = input
        .numbers
        .iter()
        .try_fold(0i64, |sum, n| sum.checked_add(*n))
        .ok_or_else(|| TaskError::fatal("the sum overflows a 64-bit integer"))?;
    Ok(Sum { sum })
}

#[derive(Deserialize)]
struct Countdown {
    steps: u8,
}

/// Reports progress at every step, then says how many steps it took.
fn countdown(job: &Job, input: Countdown) -> Result<u8, TaskError> {
    let steps = input.steps.max(1);
    for step in 1..=steps {
        let percent = (u32::from(step) * 100 / u32::from(steps)) as u8;
        job.progress(percent, &format!("step {step} of {steps}"));
    }
    Ok(steps)
}

#[derive(Deserialize)]
struct Flaky {
    /// Succeed from this attempt on.
    succeed_on: u32,
}

/// Fails with a retryable error until attempt `succeed_on`.
fn flaky(job: &Job, input: Flaky) -> Result<String, TaskError> {
    if job.attempt < input.succeed_on {
        return Err(TaskError::retryable(format!(
            "attempt {} of {} failed on purpose",
            job.attempt, job.max_attempts
        )));
    }
    Ok(format!("succeeded on attempt {}", job.attempt))
}

/// Returns the input bytes reversed: a task that does not speak JSON.
fn reverse(_job: &Job, input: Bytes) -> Result<Bytes, TaskError> {
    let mut bytes = input.0;
    bytes.reverse();
    Ok(Bytes(bytes))
}

taskbox_guest::tasks!(greet, add, countdown, flaky, reverse);
