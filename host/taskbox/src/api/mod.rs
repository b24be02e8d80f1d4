//! The HTTP API under `/v1`: modules, jobs, dead letters, schedules, queues, workers and
//! events (SSE), with an OpenAPI document at `/v1/openapi.json`.
//!
//! Every error is JSON, `{"error": {"code": ..., "message": ...}}`, with the status code that
//! says what happened. Callers present a bearer token; a token belongs to one tenant, and a
//! tenant sees only its own modules, jobs, dead letters, schedules and event channels: another
//! tenant's ids answer 404.

mod connections;
mod error;
pub(crate) mod events;
pub(crate) mod jobs;
pub(crate) mod metrics;
pub(crate) mod modules;
mod openapi;
mod rate;
pub(crate) mod schedules;
pub(crate) mod system;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use axum::{Extension, Router};

use taskbox_core::audit::Audit;
use taskbox_core::auth::{Principal, Role, Sessions, Tokens, same_token};
use taskbox_core::queue::Queue;
use taskbox_core::registry::Registry;

pub use connections::serve_router;
pub use error::ApiError;
pub(crate) use error::{ErrorBody, Json, Path, Query};
pub(crate) use jobs::{EnqueueRequest, EnqueuedJob, JobPageView, JobView, Purged, StatusReply};
pub use metrics::{GAUGE_REFRESH, refresh_gauges, serve_metrics};
pub(crate) use modules::{ModuleDetail, ModuleList, SettingsView};
pub use openapi::openapi_json;
pub(crate) use schedules::{NewSchedule, ScheduleList};
pub(crate) use system::{QueueList, WorkerList};

/// The address the API listens on, and the CLI's server, by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";
/// Environment variable with the operator's admin token.
pub const ENV_ADMIN_TOKEN: &str = "TASKBOX_ADMIN_TOKEN";

/// Event streams open at once in one API process, by default. Each channel listened to holds
/// one Redis connection, and Redis serves 10,000 clients by default, shared with every
/// worker and API process: a thousand streams keep one process well within that.
pub const DEFAULT_MAX_EVENT_STREAMS: usize = 1000;
/// Event streams one tenant may have open at once in one API process, by default: a tenth
/// of the total, so that one tenant's listeners cannot lock the others out.
pub const DEFAULT_MAX_EVENT_STREAMS_PER_TENANT: usize = 100;

/// How the API serves.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Where it listens.
    pub listen: SocketAddr,
    /// The operator's token: admin of the default tenant. Required off loopback.
    pub admin_token: Option<String>,
    /// The largest request body, except module uploads.
    pub max_body: usize,
    /// The largest job input, in bytes.
    pub max_input: usize,
    /// Jobs each token may enqueue per second, on average.
    pub enqueue_rate: f64,
    /// Jobs each token may enqueue at once, above the rate.
    pub enqueue_burst: f64,
    /// The longest `?wait=` a request may ask for.
    pub max_wait: Duration,
    /// Event streams (SSE) open at once in this process.
    pub max_event_streams: usize,
    /// Event streams (SSE) one tenant may have open at once in this process.
    pub max_event_streams_per_tenant: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("a valid default address"),
            admin_token: None,
            max_body: 2 << 20,
            max_input: taskbox_core::model::job::DEFAULT_MAX_INPUT,
            enqueue_rate: 1000.0,
            enqueue_burst: 5000.0,
            max_wait: Duration::from_secs(60),
            max_event_streams: DEFAULT_MAX_EVENT_STREAMS,
            max_event_streams_per_tenant: DEFAULT_MAX_EVENT_STREAMS_PER_TENANT,
        }
    }
}

/// How long a dashboard session lasts after its login.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// What every handler shares.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) queue: Queue,
    pub(crate) registry: Registry,
    pub(crate) events: taskbox_core::events::Events,
    pub(crate) subscriptions: taskbox_core::events::Subscriptions,
    pub(crate) event_streams: Arc<events::StreamSlots>,
    pub(crate) schedules: taskbox_core::scheduler::Schedules,
    pub(crate) tokens: Tokens,
    pub(crate) sessions: Sessions,
    pub(crate) audit: Audit,
    /// The dashboard's bulk actions run by this process.
    pub(crate) ui_bulk_runs: Arc<crate::ui::BulkRuns>,
    pub(crate) config: Arc<ApiConfig>,
    pub(crate) limiter: Arc<rate::RateLimiter>,
}

/// Serves the API until `shutdown` resolves.
pub async fn serve(
    queue: Queue,
    registry: Registry,
    config: ApiConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if config.admin_token.is_none() && !config.listen.ip().is_loopback() {
        bail!(
            "refusing to serve the API on {} without an admin token: set {ENV_ADMIN_TOKEN}, or \
             listen on a loopback address such as {DEFAULT_LISTEN}",
            config.listen
        );
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let address = listener.local_addr()?;
    match &config.admin_token {
        Some(_) => tracing::info!(
            "API on http://{address}/v1, dashboard on http://{address}/ui (bearer tokens required)"
        ),
        None => tracing::warn!(
            "API on http://{address}/v1 is OPEN: no admin token is configured, so anyone on this \
             machine is admin of the `default` tenant. Set {ENV_ADMIN_TOKEN} to require tokens."
        ),
    }
    let app = router(queue, registry, config);
    serve_router(listener, app, shutdown).await?;
    Ok(())
}

/// The API's routes.
pub fn router(queue: Queue, registry: Registry, config: ApiConfig) -> Router {
    let max_module = usize::try_from(registry.max_module_size())
        .unwrap_or(usize::MAX)
        .saturating_add(1 << 20);
    let max_body = config.max_body;
    let state = AppState {
        tokens: Tokens::new(queue.store().clone()),
        sessions: Sessions::new(queue.store().clone(), SESSION_LIFETIME),
        audit: Audit::new(queue.store().clone()),
        ui_bulk_runs: Arc::default(),
        limiter: Arc::new(rate::RateLimiter::new(
            config.enqueue_rate,
            config.enqueue_burst,
        )),
        event_streams: Arc::new(events::StreamSlots::new(
            config.max_event_streams,
            config.max_event_streams_per_tenant,
        )),
        config: Arc::new(config),
        events: taskbox_core::events::Events::new(queue.store().clone()),
        subscriptions: taskbox_core::events::Subscriptions::new(taskbox_core::events::Events::new(
            queue.store().clone(),
        )),
        schedules: taskbox_core::scheduler::Schedules::new(queue.clone()),
        queue,
        registry,
    };
    let authenticated = Router::new()
        .route(
            "/modules",
            post(modules::upload)
                .layer(DefaultBodyLimit::max(max_module))
                .get(modules::list),
        )
        .route("/modules/{name}", get(modules::show))
        .route(
            "/modules/{name}/settings",
            get(modules::settings).put(modules::set_settings),
        )
        .route("/modules/{name}/{version}", delete(modules::remove))
        .route("/jobs", post(jobs::enqueue).get(jobs::list))
        .route("/jobs/batch", post(jobs::enqueue_batch))
        .route("/jobs/count", get(jobs::count))
        .route("/jobs/states", get(jobs::states))
        .route("/jobs/bulk", post(jobs::bulk))
        .route("/jobs/{id}", get(jobs::show))
        .route("/jobs/{id}/logs", get(jobs::logs))
        .route("/jobs/{id}/cancel", post(jobs::cancel))
        .route("/jobs/{id}/retry", post(jobs::retry))
        .route("/dead", get(jobs::dead_letters).delete(jobs::purge_dead))
        .route("/dead/{id}/retry", post(jobs::retry))
        .route("/queues", get(system::queues))
        .route("/queues/{name}", put(system::set_queue))
        .route("/queues/{name}/pause", post(system::pause_queue))
        .route("/queues/{name}/resume", post(system::resume_queue))
        .route("/workers", get(system::workers))
        .route("/metrics", get(metrics::tenant))
        .route("/events/{channel}", get(events::stream))
        .route("/schedules", post(schedules::create).get(schedules::list))
        .route(
            "/schedules/{name}",
            get(schedules::show).delete(schedules::remove),
        )
        .route("/schedules/{name}/pause", post(schedules::pause))
        .route("/schedules/{name}/resume", post(schedules::resume))
        .route("/schedules/{name}/run", post(schedules::run_now))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ));
    let operator_metrics = Router::new().route("/metrics", get(metrics::scrape)).layer(
        axum::middleware::from_fn_with_state(state.clone(), authenticate),
    );
    let open = Router::new()
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .route("/openapi.json", get(openapi::document));
    Router::new()
        .nest("/v1", authenticated.merge(open))
        .merge(operator_metrics)
        .nest("/ui", crate::ui::router(state.clone(), max_module))
        .route("/", get(|| async { axum::response::Redirect::to("/ui") }))
        .route(
            "/ui/",
            get(|| async { axum::response::Redirect::to("/ui") }),
        )
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::middleware::from_fn(metrics::observe))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Finds the caller from its bearer token and refuses requests its role may not make.
async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|value| value.strip_prefix("Bearer "))
                .map(str::trim)
                .ok_or_else(|| {
                    ApiError::unauthorized("the Authorization header must be `Bearer TOKEN`")
                })
        })
        .transpose()?;
    let principal = match (presented, &state.config.admin_token) {
        (None, None) => Principal::default_admin(),
        (None, Some(_)) => {
            return Err(ApiError::unauthorized(
                "a bearer token is required (Authorization: Bearer TOKEN)",
            ));
        }
        (Some(token), Some(admin)) if same_token(token, admin) => Principal::default_admin(),
        (Some(token), _) => state
            .tokens
            .verify(token)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::unauthorized("the bearer token is not valid"))?,
    };
    allowed(&principal, request.method())?;
    request.extensions_mut().insert(principal);
    Ok(next.run(request).await)
}

/// Refuses a request with `method` that `principal`'s role may not make: reading needs a
/// viewer, deleting an admin, anything else an operator. Handlers check more where they
/// need it.
pub(crate) fn allowed(principal: &Principal, method: &axum::http::Method) -> Result<(), ApiError> {
    let needed = match *method {
        axum::http::Method::GET | axum::http::Method::HEAD => Role::Viewer,
        axum::http::Method::DELETE => Role::Admin,
        _ => Role::Operator,
    };
    if principal.role < needed {
        return Err(ApiError::forbidden(format!(
            "a {} token may not do this: it needs the {needed} role",
            principal.role
        )));
    }
    Ok(())
}

/// The caller, as [`authenticate`] found it.
pub(crate) type Caller = Extension<Principal>;
