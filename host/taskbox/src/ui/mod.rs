//! The operator's dashboard at `/ui`: server-rendered pages (askama templates in
//! `templates/`), made live by htmx over one SSE stream per page, served by the API's process
//! on its port.
//!
//! A login exchanges a bearer token for a session in an `HttpOnly; SameSite=Strict` cookie.
//! Every page and action runs as the session's principal through the same handlers as the
//! `/v1` routes, so a viewer's forged POST and a tenant's look at another's job get the
//! same 403 and 404 as over the API. A state-changing request that is not same-origin is
//! refused before anything else, and every action is written to the audit log.

mod assets;
mod events;
mod jobs;
mod live;
mod modules;
mod pages;
mod schedules;
mod session;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler as _;
use axum::routing::{get, post};

use crate::api::AppState;

pub(crate) use jobs::BulkRuns;

/// The session cookie's name.
const COOKIE: &str = "tb_session";

/// The dashboard's routes, to be nested under `/ui`; an upload may be `max_module` bytes.
pub(crate) fn router(state: AppState, max_module: usize) -> Router<AppState> {
    let pages = Router::new()
        .route("/", get(pages::overview))
        .route("/jobs", get(jobs::page))
        .route("/jobs/bulk", get(jobs::preview).post(jobs::run))
        .route("/bulk/{id}", get(jobs::progress))
        .route("/jobs/{id}", get(pages::job))
        .route("/jobs/{id}/{action}", post(pages::job_action))
        .route("/dead", get(pages::dead))
        .route("/queues", get(pages::queues))
        .route("/queues/{name}/{action}", post(pages::queue_action))
        .route("/workers", get(pages::workers))
        .route(
            "/modules",
            get(modules::list).post(modules::upload.layer(DefaultBodyLimit::max(max_module))),
        )
        .route("/modules/{name}", get(modules::show))
        .route("/schedules", get(schedules::page))
        .route("/schedules/{name}/pause", post(schedules::pause))
        .route("/schedules/{name}/resume", post(schedules::resume))
        .route("/schedules/{name}/run", post(schedules::run_now))
        .route("/events", get(events::page))
        .route("/audit", get(pages::audit))
        .route("/live", get(live::stream))
        .route("/logout", post(session::logout))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            session::require,
        ));
    Router::new()
        .route("/login", get(session::login_form).post(session::login))
        .route("/assets/{file}", get(assets::serve))
        .merge(pages)
        .layer(axum::middleware::from_fn(session::guard))
}
