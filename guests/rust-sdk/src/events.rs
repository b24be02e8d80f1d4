//! Broadcast events to whoever listens: other services on Redis, browsers over SSE
//! (`GET /v1/events/{channel}`). The module's manifest grants the channels
//! (`event_channels = ["upload:*"]`); channels `job:*` are the host's.
//!
//! ```no_run
//! # fn example() -> Result<(), taskbox_guest::events::EventError> {
//! taskbox_guest::events::publish_json("upload:42", "resized", &serde_json::json!({"width": 640}))?;
//! # Ok(())
//! # }
//! ```

use serde::Serialize;

use crate::TaskError;
use crate::bindings::taskbox::task::events::{self, Error};

/// Why an event was not published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventError {
    /// The manifest does not grant this channel.
    Denied(String),
    /// The channel name is not valid (empty, too long, whitespace, control characters, or
    /// one of the host's).
    InvalidChannel(String),
    /// The event name is not valid.
    InvalidEvent(String),
    /// The event is larger than the host allows (the limit in bytes).
    TooLarge(u64),
    /// The data could not be serialized.
    Serialize(String),
    /// The event backend is unavailable: worth retrying the job.
    Unavailable(String),
}

impl std::fmt::Display for EventError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Denied(channel) => write!(f, "not granted the event channel `{channel}`"),
            Self::InvalidChannel(reason) | Self::InvalidEvent(reason) => f.write_str(reason),
            Self::TooLarge(limit) => write!(f, "the event is larger than {limit} bytes"),
            Self::Serialize(reason) => write!(f, "the event data is not serializable: {reason}"),
            Self::Unavailable(reason) => write!(f, "events are unavailable: {reason}"),
        }
    }
}

impl std::error::Error for EventError {}

/// An unavailable backend is retryable; everything else is a bug in the task.
impl From<EventError> for TaskError {
    fn from(error: EventError) -> Self {
        match error {
            EventError::Unavailable(_) => TaskError::retryable(error.to_string()),
            _ => TaskError::fatal(error.to_string()),
        }
    }
}

/// Publishes `data` as the event `event` on `channel`.
pub fn publish(channel: &str, event: &str, data: &str) -> Result<(), EventError> {
    events::publish(channel, event, data).map_err(|error| match error {
        Error::Denied(channel) => EventError::Denied(channel),
        Error::InvalidChannel(reason) => EventError::InvalidChannel(reason),
        Error::InvalidEvent(reason) => EventError::InvalidEvent(reason),
        Error::TooLarge(limit) => EventError::TooLarge(limit),
        Error::Unavailable(reason) => EventError::Unavailable(reason),
    })
}

/// Publishes `data` as JSON.
pub fn publish_json<T: Serialize + ?Sized>(
    channel: &str,
    event: &str,
    data: &T,
) -> Result<(), EventError> {
    let data = serde_json::to_string(data).map_err(|err| EventError::Serialize(err.to_string()))?;
    publish(channel, event, &data)
}
