//! `/v1/queues`, `/v1/workers`, `/v1/healthz` and `/v1/readyz`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::error::{ErrorBody, Json};
use crate::api::{ApiError, AppState, Caller};
use taskbox_core::queue::{QueueStats, WorkerInfo};

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
