//! A webhook sender: POSTs an event as JSON to the endpoint the operator configured, retried
//! by the host with backoff while the receiver answers 5xx or cannot be reached.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use taskbox_guest::{Job, TaskError, config, http};

#[derive(Deserialize)]
struct Delivery {
    /// The event's type, sent as `x-webhook-event`.
    event: String,
    /// The event's payload.
    payload: Value,
}

#[derive(Serialize)]
struct Delivered {
    status: u16,
    attempt: u32,
}

/// Delivers one event; the receiver's 2xx completes the job.
fn deliver(job: &Job, delivery: Delivery) -> Result<Delivered, TaskError> {
    let endpoint = config::require("endpoint")?;
    let mut request = http::post(&endpoint)
        .header("x-webhook-event", &delivery.event)
        .header("x-webhook-id", &job.id)
        .json(&delivery.payload);
    if let Some(token) = config::get("token") {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = request.send()?;
    match response.status {
        200..=299 => Ok(Delivered {
            status: response.status,
            attempt: job.attempt,
        }),
        500..=599 | 429 => Err(TaskError::retryable(format!(
            "the receiver answered {}",
            response.status
        ))),
        status => Err(TaskError::fatal(format!(
            "the receiver refused the event with {status}: {}",
            response.text()
        ))),
    }
}

taskbox_guest::tasks!(deliver);
