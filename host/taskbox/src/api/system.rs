//! `/v1/queues`, `/v1/workers`, `/v1/healthz` and `/v1/readyz`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::error::{ErrorBody, Json, Path};
use crate::api::{ApiError, AppState, Caller};
use taskbox_core::auth::Role;
use taskbox_core::model::names::validate_name;
use taskbox_core::queue::{PartitionError, QueueStats, WorkerInfo};

/// Every queue jobs were enqueued on.
// Deserialize too: the CLI reads it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct QueueList {
    pub(crate) queues: Vec<QueueStats>,
}

/// Queue depths, oldest waiting job, and jobs finished in the last minute.
#[utoipa::path(get, path = "/v1/queues", tag = "system",
    responses((status = 200, body = QueueList)),
    security(("bearer" = [])))]
pub(crate) async fn queues(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Json<QueueList>, ApiError> {
    let queues = state
        .queue
        .queue_stats()
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(QueueList { queues }))
}

/// A queue's settings.
// Serialize too: the CLI sends it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueueSettings {
    /// Its partitions, 1 to 64, never fewer than it has: each is a hash tag of its own, so
    /// on a Redis Cluster a queue of P partitions spreads over up to P nodes.
    pub(crate) partitions: u32,
}

/// Set a queue's partitions (admin). Producers and workers use new partitions within 5 s.
#[utoipa::path(put, path = "/v1/queues/{name}", tag = "system",
    params(("name" = String, Path, description = "the queue")),
    request_body = QueueSettings,
    responses(
        (status = 200, body = QueueStats),
        (status = 403, body = ErrorBody),
        (status = 422, description = "out of range, fewer than the queue has, or a bad name", body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn set_queue(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(settings): Json<QueueSettings>,
) -> Result<Json<QueueStats>, ApiError> {
    require_admin(&caller, "change a queue")?;
    checked_name(&name)?;
    match state.queue.set_partitions(&name, settings.partitions).await {
        Ok(_) => {}
        Err(PartitionError::Redis(err)) => return Err(ApiError::internal(err)),
        Err(err) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                format!("field `partitions`: {err}"),
            ));
        }
    }
    stats(&state, &name).await
}

/// Pause a queue (admin): it takes jobs, but workers start none of them (within 1 s) until
/// it is resumed; its oldest-waiting age keeps growing. Jobs running already run on.
#[utoipa::path(post, path = "/v1/queues/{name}/pause", tag = "system",
    params(("name" = String, Path, description = "the queue")),
    responses(
        (status = 200, body = QueueStats),
        (status = 403, body = ErrorBody),
        (status = 422, description = "a bad name", body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn pause_queue(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<QueueStats>, ApiError> {
    set_paused(&state, &caller, &name, true).await
}

/// Resume a paused queue (admin): workers start its jobs again, oldest first.
#[utoipa::path(post, path = "/v1/queues/{name}/resume", tag = "system",
    params(("name" = String, Path, description = "the queue")),
    responses(
        (status = 200, body = QueueStats),
        (status = 403, body = ErrorBody),
        (status = 422, description = "a bad name", body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn resume_queue(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<QueueStats>, ApiError> {
    set_paused(&state, &caller, &name, false).await
}

async fn set_paused(
    state: &AppState,
    caller: &Caller,
    name: &str,
    paused: bool,
) -> Result<Json<QueueStats>, ApiError> {
    let action = if paused { "pause" } else { "resume" };
    require_admin(caller, &format!("{action} a queue"))?;
    checked_name(name)?;
    let changed = match paused {
        true => state.queue.pause(name).await,
        false => state.queue.resume(name).await,
    };
    changed.map_err(ApiError::internal)?;
    stats(state, name).await
}

/// Queues are shared by every tenant: only an admin changes one.
fn require_admin(caller: &Caller, what: &str) -> Result<(), ApiError> {
    if caller.role < Role::Admin {
        return Err(ApiError::forbidden(format!(
            "a {} token may not {what}: it needs the admin role",
            caller.role
        )));
    }
    Ok(())
}

fn checked_name(name: &str) -> Result<(), ApiError> {
    validate_name("queue", name).map_err(|err| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_name",
            err.to_string(),
        )
    })
}

async fn stats(state: &AppState, name: &str) -> Result<Json<QueueStats>, ApiError> {
    let stats = state
        .queue
        .stats_of(name)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(stats))
}

/// The workers that heartbeated recently.
// Deserialize too: the CLI reads it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct WorkerList {
    pub(crate) workers: Vec<WorkerInfo>,
}

/// Workers: id, host, start, concurrency, jobs in flight, last heartbeat.
#[utoipa::path(get, path = "/v1/workers", tag = "system",
    responses((status = 200, body = WorkerList)),
    security(("bearer" = [])))]
pub(crate) async fn workers(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Json<WorkerList>, ApiError> {
    let workers = state.queue.workers().await.map_err(ApiError::internal)?;
    Ok(Json(WorkerList { workers }))
}

/// A health answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    /// `ok`.
    status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/v1/healthz", tag = "system",
    responses((status = 200, body = Health)))]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The process can serve: Redis answers.
#[utoipa::path(get, path = "/v1/readyz", tag = "system",
    responses((status = 200, body = Health), (status = 503, body = ErrorBody)))]
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    state.queue.ping().await.map_err(|err| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!("Redis does not answer: {err:#}"),
        )
    })?;
    Ok(Json(Health { status: "ok" }))
}
