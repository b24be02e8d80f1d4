//! `/v1/events/{channel}`: a channel's events as Server-Sent Events, live, with replay of
//! what a reconnecting client missed.
#![allow(
    unused_qualifications,
    reason = "utoipa's `path` macro qualifies the `IntoParams` types it is given"
)]

use std::convert::Infallible;
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
use crate::events::Event;

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
/// `job:{id}` as `progress` events.
#[utoipa::path(get, path = "/v1/events/{channel}", tag = "events",
    params(("channel" = String, Path, description = "the channel"), Resume),
    responses(
        (status = 200, content_type = "text/event-stream", body = String),
        (status = 400, body = crate::api::error::ErrorBody)),
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
    // Subscribe before replaying, so that nothing published in between is lost; what both
    // bring is sent once.
    let live = state
        .events
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
    let events = stream::iter(missed).chain(live).map(|event| Ok(sse(event)));
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
