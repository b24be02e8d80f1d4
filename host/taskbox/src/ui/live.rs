//! The one SSE stream a page listens to: a `change` event when it opens and whenever the
//! queues, the tenant's newest jobs or the workers changed, at most twice a second. The page
//! reloads its live part on each, and polls only while the stream is broken.

use std::convert::Infallible;
use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::time::Duration;

use axum::Extension;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use taskbox_core::auth::Principal;

use super::jobs::MAX_ID;
use super::pages::error_page;
use crate::api::AppState;

/// How often the stream looks for a change: the most updates a page gets per second is the
/// inverse.
const LOOK_EVERY: Duration = Duration::from_millis(500);

/// What a page's stream watches besides what every page shows.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct Watch {
    /// The job whose page it is: its status, attempt and progress.
    job: Option<String>,
}

pub(super) async fn stream(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(watch): Query<Watch>,
) -> Response {
    // A page's stream counts against the same caps as the API's event streams.
    let slot = match state.event_streams.take(&principal.tenant) {
        Ok(slot) => slot,
        Err(err) => return error_page(err.status(), err.message()),
    };
    // The first event comes at once: what changed between the page's render and its stream
    // would be missed otherwise.
    let changes = futures_util::stream::unfold(
        (state, principal, watch, None::<u64>, slot),
        |(state, principal, watch, mut last, slot)| async move {
            loop {
                if last.is_some() {
                    tokio::time::sleep(LOOK_EVERY).await;
                }
                let Ok(now) = fingerprint(&state, &principal, &watch).await else {
                    tokio::time::sleep(LOOK_EVERY).await;
                    continue;
                };
                if last.replace(now) != Some(now) {
                    // A browser drops an event without data.
                    let event = Event::default().event("change").data(format!("{now:x}"));
                    let next = (state, principal, watch, last, slot);
                    return Some((Ok::<_, Infallible>(event), next));
                }
            }
        },
    );
    Sse::new(changes)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// A hash of what the pages show that changes as jobs move: each queue's depths, the
/// tenant's newest jobs' states, the workers' busy slots, and the watched job's state and
/// progress. Ages are left out: they change every look.
async fn fingerprint(
    state: &AppState,
    principal: &Principal,
    watch: &Watch,
) -> anyhow::Result<u64> {
    let mut hasher = DefaultHasher::new();
    for queue in state.queue.queue_stats().await? {
        let waiting = queue.waiting;
        (
            queue.name,
            queue.paused_at,
            waiting.high,
            waiting.normal,
            waiting.low,
        )
            .hash(&mut hasher);
        (
            queue.running,
            queue.delayed,
            queue.completed_last_minute,
            queue.failed_last_minute,
        )
            .hash(&mut hasher);
    }
    for job in state.queue.newest_states(&principal.tenant, 50).await? {
        job.hash(&mut hasher);
    }
    for worker in state.queue.workers().await? {
        (worker.id, worker.in_flight).hash(&mut hasher);
    }
    // Longer than any job id: no job, and not worth a look.
    if let Some(job) = watch.job.as_ref().filter(|job| job.len() <= MAX_ID) {
        state
            .queue
            .job_state(&principal.tenant, job)
            .await?
            .hash(&mut hasher);
    }
    Ok(hasher.finish())
}
