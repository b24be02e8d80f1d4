//! `taskbox:task/events`: publishes events on channels the module is granted, through the
//! host's [`EventBus`] (Redis pub/sub and a replay stream in a worker).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tracing::Instrument as _;
use wasmtime::component::{HasSelf, Linker};

use crate::bindings::taskbox::task::events::{self, Error};
use crate::capabilities::{CallCounts, CallingJob, glob_matches};
use crate::guest_text::quote;
use crate::job::JobState;

/// The longest channel name.
pub const MAX_CHANNEL_LEN: usize = 200;

/// Where published events go. A worker's bus delivers them live and keeps them for replay,
/// within the job's tenant.
pub trait EventBus: Send + Sync + std::fmt::Debug {
    /// Publishes `data` as `event` on `channel`; the error says why the backend failed.
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        event: &'a str,
        data: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;
}

/// The channels a module may publish on, and the bus that carries the events.
#[derive(Debug, Clone)]
pub struct EventGrant {
    /// Channel patterns (`upload:*`); `*` stands for any run of characters.
    pub channels: Vec<String>,
    /// The largest event (name and data together), in bytes.
    pub max_event_bytes: usize,
    /// Carries the events.
    pub bus: Arc<dyn EventBus>,
}

impl EventGrant {
    /// 64 KiB.
    pub const DEFAULT_MAX_EVENT_BYTES: usize = 64 << 10;

    fn allows(&self, channel: &str) -> bool {
        self.channels
            .iter()
            .any(|pattern| glob_matches(pattern, channel))
    }
}

/// Why `channel` is not a valid channel name, if it is not: empty, longer than
/// [`MAX_CHANNEL_LEN`] bytes, or with control characters or whitespace.
pub fn invalid_channel(channel: &str) -> Option<String> {
    if channel.is_empty() {
        return Some("the channel name is empty".into());
    }
    if channel.len() > MAX_CHANNEL_LEN {
        return Some(format!(
            "the channel name is {} bytes, longer than {MAX_CHANNEL_LEN}",
            channel.len()
        ));
    }
    if channel.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Some(format!(
            "the channel name {} has whitespace or control characters",
            quote(channel)
        ));
    }
    None
}

/// Channels under this prefix are the host's: `job:{id}` carries a job's progress.
pub const HOST_CHANNEL_PREFIX: &str = "job:";
/// The longest event name.
pub const MAX_EVENT_NAME_LEN: usize = 100;

/// Why `event` is not a valid event name, if it is not: longer than [`MAX_EVENT_NAME_LEN`]
/// bytes, or with control characters or whitespace (an empty name is the default, `message`).
pub fn invalid_event(event: &str) -> Option<String> {
    if event.len() > MAX_EVENT_NAME_LEN {
        return Some(format!(
            "the event name is {} bytes, longer than {MAX_EVENT_NAME_LEN}",
            event.len()
        ));
    }
    if event.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Some(format!(
            "the event name {} has whitespace or control characters",
            quote(event)
        ));
    }
    None
}

/// Per-job event state.
#[derive(Debug)]
pub(crate) struct JobEvents {
    grant: Option<Arc<EventGrant>>,
    caller: CallingJob,
}

impl JobEvents {
    pub(crate) fn new(grant: Option<Arc<EventGrant>>, caller: CallingJob) -> Self {
        Self { grant, caller }
    }
}

impl events::Host for JobEvents {
    async fn publish(&mut self, channel: String, event: String, data: String) -> Result<(), Error> {
        if let Some(reason) = invalid_channel(&channel) {
            return Err(Error::InvalidChannel(reason));
        }
        if channel.starts_with(HOST_CHANNEL_PREFIX) {
            return Err(Error::InvalidChannel(format!(
                "channels `{HOST_CHANNEL_PREFIX}*` are the host's"
            )));
        }
        if let Some(reason) = invalid_event(&event) {
            return Err(Error::InvalidEvent(reason));
        }
        let grant = match &self.grant {
            Some(grant) if grant.allows(&channel) => grant,
            _ => {
                self.caller.denied(
                    "events",
                    &channel,
                    "the channel is not in the module's event_channels",
                );
                return Err(Error::Denied(channel));
            }
        };
        if event.len() + data.len() > grant.max_event_bytes {
            return Err(Error::TooLarge(grant.max_event_bytes as u64));
        }
        let span = tracing::info_span!("guest.event", channel = %quote(&channel));
        grant
            .bus
            .publish(&channel, &event, &data)
            .instrument(span)
            .await
            .map_err(Error::Unavailable)?;
        CallCounts::add(&self.caller.calls.events_published);
        Ok(())
    }
}

pub(crate) fn add_to_linker(linker: &mut Linker<JobState>) -> wasmtime::Result<()> {
    events::add_to_linker::<JobState, HasSelf<JobEvents>>(linker, |state| &mut state.events)
}
