//! `/v1/schedules`: cron schedules that enqueue jobs of a module's task.
#![allow(
    unused_qualifications,
    reason = "utoipa's `path` macro qualifies the types it is given"
)]

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::api::error::{ErrorBody, Json, Path};
use crate::api::{ApiError, AppState, Caller};
use taskbox_core::model::cron::CatchUp;
use taskbox_core::scheduler::{Schedule, ScheduleError, ScheduleStatus, Source};

/// A schedule to create.
// Serialize too: the CLI sends it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewSchedule {
    /// 1 to 64 letters, digits, `-`, `_` or `.`.
    #[schema(example = "nightly-report")]
    pub(crate) name: String,
    /// Five fields (minute hour day-of-month month day-of-week), six with seconds first, or
    /// `@yearly`, `@monthly`, `@weekly`, `@daily`, `@hourly`.
    #[schema(example = "0 3 * * *")]
    pub(crate) cron: String,
    /// An IANA time zone (default `UTC`).
    pub(crate) timezone: Option<String>,
    /// The module: each fire runs its highest version.
    #[schema(example = "hello")]
    pub(crate) module: String,
    /// A task the module's manifest declares.
    #[schema(example = "greet")]
    pub(crate) task: String,
    /// The input of every job (JSON).
    #[serde(default)]
    #[schema(value_type = Object, example = json!({"name": "Ada"}))]
    pub(crate) input: Value,
    /// The queue (default: the task's, else `default`).
    pub(crate) queue: Option<String>,
    /// `latest` (default): after downtime, the latest missed fire runs once; `skip`: missed
    /// fires are dropped.
    pub(crate) catch_up: Option<CatchUp>,
}

/// The caller's schedules.
// Deserialize too: the CLI reads it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ScheduleList {
    pub(crate) schedules: Vec<ScheduleStatus>,
}

impl From<ScheduleError> for ApiError {
    fn from(err: ScheduleError) -> Self {
        let message = err.to_string();
        match err {
            ScheduleError::Invalid(_) | ScheduleError::UnknownTask(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_schedule",
                message,
            ),
            ScheduleError::UnknownModule(_) | ScheduleError::NotFound(_) => {
                ApiError::not_found(message)
            }
            ScheduleError::Exists(_) => ApiError::conflict("schedule_exists", message),
            ScheduleError::FromManifest(_) => ApiError::conflict("schedule_from_manifest", message),
            ScheduleError::Redis(err) => ApiError::internal(err),
        }
    }
}

/// Create a schedule.
#[utoipa::path(post, path = "/v1/schedules", tag = "schedules",
    request_body = NewSchedule,
    responses(
        (status = 201, description = "created", body = ScheduleStatus),
        (status = 404, description = "no such module", body = ErrorBody),
        (status = 409, description = "a schedule of that name exists", body = ErrorBody),
        (status = 413, description = "the input is too large", body = ErrorBody),
        (status = 422, description = "a field is invalid (the message names it and, for `cron`, the column), or the module has no such task", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(request): Json<NewSchedule>,
) -> Result<(StatusCode, Json<ScheduleStatus>), ApiError> {
    let size = serde_json::to_vec(&request.input)
        .map_err(ApiError::internal)?
        .len();
    if size > state.config.max_input {
        return Err(ApiError::too_large(
            "input_too_large",
            format!(
                "field `input` is {size} bytes, more than the {} bytes allowed",
                state.config.max_input
            ),
        ));
    }
    let schedule = Schedule {
        name: request.name,
        cron: request.cron,
        timezone: request.timezone.unwrap_or_else(|| "UTC".into()),
        module: request.module,
        task: request.task,
        input: request.input,
        queue: request.queue,
        catch_up: request.catch_up.unwrap_or_default(),
        paused: false,
        source: Source::Api,
    };
    let status = state.schedules.put(&caller.tenant, schedule, false).await?;
    Ok((StatusCode::CREATED, Json(status)))
}

/// List the schedules, with their last and next fires.
#[utoipa::path(get, path = "/v1/schedules", tag = "schedules",
    responses((status = 200, body = ScheduleList)),
    security(("bearer" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ScheduleList>, ApiError> {
    let schedules = state.schedules.list(&caller.tenant).await?;
    Ok(Json(ScheduleList { schedules }))
}

/// One schedule, with its last fire, the job it made and that job's status, and its next
/// fire.
#[utoipa::path(get, path = "/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "`name`, or `module:name` for a manifest's")),
    responses((status = 200, body = ScheduleStatus), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<ScheduleStatus>, ApiError> {
    state
        .schedules
        .status(&caller.tenant, &name)
        .await?
        .map(Json)
        .ok_or_else(|| ScheduleError::NotFound(name).into())
}

/// Delete a schedule made over the API (admin). A manifest's schedule changes only with its
/// module (409).
#[utoipa::path(delete, path = "/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "the schedule's name")),
    responses(
        (status = 204, description = "deleted"),
        (status = 404, body = ErrorBody),
        (status = 409, description = "it comes from a manifest", body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.schedules.remove(&caller.tenant, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Pause a schedule: it does not fire until resumed.
#[utoipa::path(post, path = "/v1/schedules/{name}/pause", tag = "schedules",
    params(("name" = String, Path, description = "the schedule's name")),
    responses((status = 200, body = ScheduleStatus), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<ScheduleStatus>, ApiError> {
    Ok(Json(
        state
            .schedules
            .set_paused(&caller.tenant, &name, true)
            .await?,
    ))
}

/// The job a schedule's "run now" enqueued.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct RunNow {
    /// The job's id.
    pub(crate) id: String,
}

/// Enqueue a schedule's job now, outside its fires and whether it is paused or not; the
/// schedule is left as it is. The job's metadata says `"run_now": true`.
#[utoipa::path(post, path = "/v1/schedules/{name}/run", tag = "schedules",
    params(("name" = String, Path, description = "the schedule's name")),
    responses(
        (status = 201, body = RunNow),
        (status = 404, description = "no such schedule, or its module is gone", body = ErrorBody),
        (status = 422, description = "its task is gone", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub(crate) async fn run_now(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<RunNow>), ApiError> {
    let id = state.schedules.run_now(&caller.tenant, &name).await?;
    Ok((StatusCode::CREATED, Json(RunNow { id })))
}

/// Resume a paused schedule from its next fire; fires while it was paused do not run.
#[utoipa::path(post, path = "/v1/schedules/{name}/resume", tag = "schedules",
    params(("name" = String, Path, description = "the schedule's name")),
    responses((status = 200, body = ScheduleStatus), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<ScheduleStatus>, ApiError> {
    Ok(Json(
        state
            .schedules
            .set_paused(&caller.tenant, &name, false)
            .await?,
    ))
}
