//! The schedules page: each cron schedule with its next and last fires and the outcome of
//! the job its last fire made, and Pause and Resume.

use askama::Template;
use axum::Extension;
use axum::extract::{Path, State};
use axum::response::Response;
use taskbox_core::auth::Principal;

use super::pages::{Layout, act, api_error, render, urlencoded};
use crate::api::{self, AppState, schedules};
use crate::when::When;

/// A schedule in the table.
pub(super) struct ScheduleRow {
    pub(super) name: String,
    pub(super) link: String,
    pub(super) cron: String,
    pub(super) timezone: String,
    pub(super) target: String,
    pub(super) paused: bool,
    pub(super) from_manifest: bool,
    pub(super) next_fire: Option<When>,
    pub(super) last_fire: Option<When>,
    pub(super) last_job: Option<String>,
    pub(super) last_job_status: Option<String>,
    pub(super) last_error: Option<String>,
}

#[derive(Template)]
#[template(path = "schedules.html")]
struct SchedulesPage {
    layout: Layout,
    schedules: Vec<ScheduleRow>,
}

pub(super) async fn page(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Response {
    let list = match schedules::list(State(state), Extension(principal.clone())).await {
        Ok(api::Json(list)) => list,
        Err(err) => return api_error(err),
    };
    render(&SchedulesPage {
        layout: Layout::new(&principal, "schedules", "/ui/schedules"),
        schedules: list
            .schedules
            .into_iter()
            .map(|status| {
                let schedule = status.schedule;
                ScheduleRow {
                    link: urlencoded(&schedule.name),
                    name: schedule.name,
                    cron: schedule.cron,
                    timezone: schedule.timezone,
                    target: format!("{}/{}", schedule.module, schedule.task),
                    paused: schedule.paused,
                    from_manifest: schedule.source == taskbox_core::scheduler::Source::Manifest,
                    next_fire: status.next_fire.as_deref().and_then(When::parse),
                    last_fire: status.last_fire.as_deref().and_then(When::parse),
                    last_job: status.last_job,
                    last_job_status: status.last_job_status,
                    last_error: status.last_error,
                }
            })
            .collect(),
    })
}

pub(super) async fn pause(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
) -> Response {
    set_paused(state, principal, name, true).await
}

pub(super) async fn resume(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
) -> Response {
    set_paused(state, principal, name, false).await
}

/// Enqueues a schedule's job now; the browser goes to the job's page.
pub(super) async fn run_now(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
) -> Response {
    let run = schedules::run_now(
        State(state.clone()),
        Extension(principal.clone()),
        api::Path(name.clone()),
    );
    act(
        &state,
        &principal,
        "schedule.run_now",
        &[name],
        "",
        |(_, api::Json(enqueued)): (_, api::Json<schedules::RunNow>)| {
            format!("/ui/jobs/{}", urlencoded(&enqueued.id))
        },
        run,
    )
    .await
}

async fn set_paused(state: AppState, principal: Principal, name: String, paused: bool) -> Response {
    let action = if paused {
        "schedule.pause"
    } else {
        "schedule.resume"
    };
    // Not awaited here: `act` first checks that the role may do it.
    let run = {
        let (state, caller, path) = (
            state.clone(),
            Extension(principal.clone()),
            api::Path(name.clone()),
        );
        async move {
            if paused {
                schedules::pause(State(state), caller, path).await.map(drop)
            } else {
                schedules::resume(State(state), caller, path)
                    .await
                    .map(drop)
            }
        }
    };
    act(
        &state,
        &principal,
        action,
        &[name],
        "",
        |()| "/ui/schedules".to_owned(),
        run,
    )
    .await
}
