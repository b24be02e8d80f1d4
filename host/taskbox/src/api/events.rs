//! `/v1/events/{channel}`: a channel's events as Server-Sent Events, live, with replay of
//! what a reconnecting client missed.
#![allow(
    unused_qualifications,
    reason = "utoipa's `path` macro qualifies the `IntoParams` types it is given"
)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::{Stream, StreamExt as _, stream};
use serde::Deserialize;
use taskbox_runtime::events::invalid_channel;
use utoipa::IntoParams;

use crate::api::error::{Path, Query};
use crate::api::{ApiError, AppState, Caller};
use taskbox_core::events::Event;

/// Where to resume.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct Resume {
    /// Replay the events after this id first (as the `Last-Event-ID` header does, which wins).
    after: Option<String>,
}

/// Stream a channel's events (`text/event-stream`). Each event has the id, name and data it
/// was published with; a client reconnecting with `Last-Event-ID` (or `?after=ID`) first gets
/// the events it missed, from the last 1000 of the channel. Jobs report progress on
/// `job:{id}` as `progress` events. A client that falls far behind the live events is
/// disconnected, and resumes with `Last-Event-ID`. Streams open at once are capped per tenant
/// and per server: past either cap the answer is 503 `too_many_event_streams` with a
/// `Retry-After`.
#[utoipa::path(get, path = "/v1/events/{channel}", tag = "events",
    params(("channel" = String, Path, description = "the channel"), Resume),
    responses(
        (status = 200, content_type = "text/event-stream", body = String),
        (status = 400, body = crate::api::error::ErrorBody),
        (status = 503, description = "too many event streams open; see Retry-After",
            body = crate::api::error::ErrorBody,
            headers(("Retry-After" = u64, description = "seconds to wait before trying again")))),
    security(("bearer" = [])))]
pub(crate) async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    Path(channel): Path<String>,
    Query(resume): Query<Resume>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    if let Some(reason) = invalid_channel(&channel) {
        return Err(ApiError::bad_request("invalid_channel", reason));
    }
    let after = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .or(resume.after);
    let after = match after {
        Some(id) => Some(EventId::parse(&id).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_event_id",
                format!("`{id}` is not an event id like `1700000000000-0`"),
            )
        })?),
        None => None,
    };
    let slot = state.event_streams.take(&caller.tenant)?;
    // Subscribe before replaying, so that nothing published in between is lost; what both
    // bring is sent once.
    let live = state
        .subscriptions
        .subscribe(&caller.tenant, &channel)
        .await
        .map_err(ApiError::internal)?;
    let missed = match after {
        Some(after) => state
            .events
            .replay(&caller.tenant, &channel, &after.to_string())
            .await
            .map_err(ApiError::internal)?,
        None => Vec::new(),
    };
    let mut last = missed
        .last()
        .and_then(|event| EventId::parse(&event.id))
        .or(after);
    let live = live.filter(move |event| {
        let id = EventId::parse(&event.id);
        let new = match (id, last) {
            (Some(id), Some(seen)) => id > seen,
            _ => true,
        };
        if new && id.is_some() {
            last = id;
        }
        std::future::ready(new)
    });
    let events = stream::iter(missed).chain(live).map(move |event| {
        // The stream holds its slot until the client goes and the stream is dropped.
        let _held = &slot;
        Ok(sse(event))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn sse(event: Event) -> SseEvent {
    let named = SseEvent::default().id(event.id).data(event.data);
    match event.event.is_empty() {
        true => named,
        false => named.event(event.event),
    }
}

/// A replay stream's entry id, `milliseconds-sequence`, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct EventId(u64, u64);

impl EventId {
    fn parse(text: &str) -> Option<Self> {
        let (ms, seq) = text.split_once('-')?;
        Some(Self(ms.parse().ok()?, seq.parse().ok()?))
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// When a client refused for too many streams may try again, in seconds.
const STREAMS_RETRY_SECS: u64 = 5;

/// The event streams open in this process, counted against their caps.
#[derive(Debug)]
pub(crate) struct StreamSlots {
    max_total: usize,
    max_per_tenant: usize,
    open: Mutex<OpenStreams>,
}

#[derive(Debug, Default)]
struct OpenStreams {
    total: usize,
    /// Only tenants with a stream open, so at most `max_total` entries.
    by_tenant: HashMap<String, usize>,
}

/// One open stream's place; given back when dropped.
#[derive(Debug)]
pub(crate) struct StreamSlot {
    slots: Arc<StreamSlots>,
    tenant: String,
}

impl StreamSlots {
    pub(crate) fn new(max_total: usize, max_per_tenant: usize) -> Self {
        Self {
            max_total,
            max_per_tenant,
            open: Mutex::default(),
        }
    }

    /// A place for one more stream of `tenant`, or 503 when a cap is reached.
    pub(crate) fn take(self: &Arc<Self>, tenant: &str) -> Result<StreamSlot, ApiError> {
        let mut open = self.open();
        let of_tenant = open.by_tenant.get(tenant).copied().unwrap_or(0);
        let full = if of_tenant >= self.max_per_tenant {
            Some(format!(
                "this tenant has {of_tenant} event streams open, the most allowed \
                 ([api] max_event_streams_per_tenant)"
            ))
        } else if open.total >= self.max_total {
            Some(format!(
                "the server has {} event streams open, the most allowed ([api] max_event_streams)",
                open.total
            ))
        } else {
            None
        };
        if let Some(reason) = full {
            return Err(ApiError::busy(
                "too_many_event_streams",
                format!("{reason}; close one or try again in {STREAMS_RETRY_SECS}s"),
                STREAMS_RETRY_SECS,
            ));
        }
        open.total += 1;
        *open.by_tenant.entry(tenant.to_owned()).or_default() += 1;
        Ok(StreamSlot {
            slots: Arc::clone(self),
            tenant: tenant.to_owned(),
        })
    }

    fn open(&self) -> std::sync::MutexGuard<'_, OpenStreams> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open();
        open.total -= 1;
        if let Some(count) = open.by_tenant.get_mut(&self.tenant) {
            *count -= 1;
            if *count == 0 {
                open.by_tenant.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_capped_per_tenant_and_in_total_and_given_back_when_dropped() {
        let slots = Arc::new(StreamSlots::new(3, 2));
        let a1 = slots.take("a").unwrap();
        let _a2 = slots.take("a").unwrap();
        let refused = slots.take("a").unwrap_err();
        assert!(format!("{refused:?}").contains("max_event_streams_per_tenant"));
        let _b1 = slots.take("b").unwrap();
        let refused = slots.take("b").unwrap_err();
        assert!(format!("{refused:?}").contains("[api] max_event_streams)"));
        drop(a1);
        let _b2 = slots.take("b").unwrap();
        assert_eq!(slots.open().by_tenant.len(), 2);
    }
}
