//! The events page: a channel of the tenant's, its newest events first, followed as they
//! come. `job:events` by default: the tenant's job failures and retries.

use askama::Template;
use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use taskbox_core::auth::Principal;
use taskbox_core::events::JOBS_CHANNEL;
use taskbox_runtime::events::invalid_channel;
use taskbox_runtime::guest_text::truncate;

use super::pages::{Layout, error_page, render, urlencoded};
use crate::when::When;

use crate::api::AppState;

/// Events a page shows, newest first.
const SHOWN: usize = 100;

/// The most of an event's data a page shows, in bytes.
const DATA_SHOWN: usize = 2048;

#[derive(Debug, Deserialize)]
pub(super) struct EventsQuery {
    #[serde(default)]
    channel: String,
}

/// An event in the table.
pub(super) struct EventRow {
    pub(super) id: String,
    pub(super) at: When,
    pub(super) event: String,
    pub(super) data: String,
}

#[derive(Template)]
#[template(path = "events.html")]
struct EventsPage {
    layout: Layout,
    channel: String,
    events: Vec<EventRow>,
}

pub(super) async fn page(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<EventsQuery>,
) -> Response {
    let channel = match query.channel.trim() {
        "" => JOBS_CHANNEL.to_owned(),
        channel => channel.to_owned(),
    };
    if let Some(reason) = invalid_channel(&channel) {
        return error_page(StatusCode::BAD_REQUEST, &reason);
    }
    let replayed = match state.events.replay(&principal.tenant, &channel, "0").await {
        Ok(replayed) => replayed,
        Err(err) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, &format!("{err:#}")),
    };
    let events = replayed
        .into_iter()
        .rev()
        .take(SHOWN)
        .map(|event| {
            let millis = event
                .id
                .split('-')
                .next()
                .and_then(|ms| ms.parse().ok())
                .unwrap_or(0);
            EventRow {
                at: When::at(millis),
                id: event.id,
                event: event.event,
                data: truncate(event.data, DATA_SHOWN),
            }
        })
        .collect();
    let this = format!("/ui/events?channel={}", urlencoded(&channel));
    render(&EventsPage {
        layout: Layout::new(&principal, "events", this),
        channel,
        events,
    })
}
