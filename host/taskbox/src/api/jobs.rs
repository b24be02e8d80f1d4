//! `/v1/jobs` and `/v1/dead`: enqueue, inspect, wait for, cancel and retry jobs; dead letters.
#![allow(
    unused_qualifications,
    reason = "utoipa's `path` macro qualifies the `IntoParams` types it is given"
)]

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::api::error::{ErrorBody, Json, Path, Query};
use crate::api::metrics::RequestTrace;
use crate::api::{ApiError, AppState, Caller};
use axum::Extension;
use taskbox_core::auth::Role;
use taskbox_core::model::job::{JobRecord, JobStatus, Priority};
use taskbox_core::queue::{
    BulkAction, BulkProgress, CancelOutcome, EnqueueError, EnqueueOptions, InputMatch, InvalidJob,
    JobFilter, NewJob, RetryError,
};
use taskbox_runtime::guest_text::quote;
use taskbox_runtime::trace::TraceParent;

/// The most jobs one batch may enqueue.
const MAX_BATCH: usize = 1000;
/// The most jobs one page may list.
const MAX_PAGE: usize = 500;

/// A job to enqueue.
// Serialize too: the CLI sends it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnqueueRequest {
    /// The module: `name` (its highest version) or `name@version`.
    #[schema(example = "hello")]
    pub(crate) module: String,
    /// A task the module's manifest declares.
    #[schema(example = "greet")]
    pub(crate) task: String,
    /// The input, any JSON value (the task receives it as JSON bytes).
    #[serde(default)]
    #[schema(value_type = Object, example = json!({"name": "Ada"}))]
    pub(crate) input: Value,
    /// The queue (default: the task's queue from the manifest, else `default`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) queue: Option<String>,
    /// `high`, `normal` or `low`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) priority: Option<Priority>,
    /// Run no earlier than this from now (`10s`, `5m`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) delay: Option<String>,
    /// Run no earlier than this time (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) run_at: Option<String>,
    /// Retries after the first attempt (default: the manifest's, else 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_retries: Option<u32>,
    /// Wall-clock limit of each attempt (`30s`; default: the manifest's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) timeout: Option<String>,
    /// Enqueueing again with the same key returns the first job's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) idempotency_key: Option<String>,
    /// Stored with the job as given.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub(crate) metadata: Option<Value>,
    /// Answer only once a replica of Redis has the job (`WAIT 1`, up to 2 s), so that a
    /// failover right after the answer cannot lose it; the reply's `replicated` says
    /// whether one did.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) durable: bool,
    /// The W3C trace context (`00-TRACE-PARENT-FLAGS`) the job's run continues; a
    /// `traceparent` header does the same for every job of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) traceparent: Option<String>,
}

/// What an enqueue did.
// Deserialize too: the CLI reads it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct EnqueuedJob {
    /// The job's id.
    pub(crate) id: String,
    /// Its queue.
    pub(crate) queue: String,
    /// False when the idempotency key had been used: `id` is the earlier job's.
    pub(crate) created: bool,
    /// For a `durable` enqueue: whether a replica acknowledged the job within 2 s. When
    /// false the job is enqueued, but a failover now could lose it; enqueueing it again with
    /// an idempotency key is safe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) replicated: Option<bool>,
}

/// Several jobs to enqueue at once.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchRequest {
    /// At most 1000.
    jobs: Vec<EnqueueRequest>,
}

/// What a batch enqueue did, in the order of the request.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BatchReply {
    jobs: Vec<EnqueuedJob>,
}

impl EnqueueRequest {
    fn into_job(
        self,
        max_input: usize,
        index: Option<usize>,
        trace: &RequestTrace,
    ) -> Result<NewJob, ApiError> {
        let field = |name: &str| match index {
            Some(index) => format!("jobs[{index}].{name}"),
            None => name.to_owned(),
        };
        let invalid = |name: &str, message: String| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                format!("field `{}`: {message}", field(name)),
            )
        };
        let duration = |name: &str, text: Option<String>| {
            text.map(|text| {
                humantime::parse_duration(&text).map_err(|err| {
                    invalid(
                        name,
                        format!("`{text}` is not a duration like `30s` ({err})"),
                    )
                })
            })
            .transpose()
        };
        let run_at = self
            .run_at
            .map(|text| {
                humantime::parse_rfc3339_weak(&text).map_err(|err| {
                    invalid(
                        "run_at",
                        format!("{} is not an RFC 3339 time ({err})", quote(&text)),
                    )
                })
            })
            .transpose()?;
        let trace = match self.traceparent {
            Some(text) => Some(TraceParent::parse(&text).ok_or_else(|| {
                invalid(
                    "traceparent",
                    format!(
                        "{} is not a W3C traceparent (00-32 hex digits-16 hex digits-2 hex digits)",
                        quote(&text)
                    ),
                )
            })?),
            None => trace.0.clone(),
        };
        let delay = duration("delay", self.delay)?;
        let timeout = duration("timeout", self.timeout)?;
        let input =
            serde_json::to_vec(&self.input).map_err(|err| invalid("input", err.to_string()))?;
        let job = NewJob {
            module: self.module,
            task: self.task,
            input,
            options: EnqueueOptions {
                queue: self.queue,
                priority: self.priority,
                delay,
                run_at,
                max_retries: self.max_retries,
                timeout,
                backoff: None,
                idempotency_key: self.idempotency_key,
                metadata: self.metadata,
                parent: None,
                durable: self.durable,
                trace,
            },
        };
        job.check(max_input).map_err(|err| match err {
            InvalidJob::InputTooLarge { size, max } => ApiError::too_large(
                "input_too_large",
                format!(
                    "field `{}` is {size} bytes, more than the {max} bytes allowed",
                    field("input")
                ),
            ),
            InvalidJob::Field { field, message } => invalid(field, message),
        })?;
        Ok(job)
    }
}

impl From<EnqueueError> for ApiError {
    fn from(err: EnqueueError) -> Self {
        let message = err.to_string();
        match err {
            EnqueueError::UnknownModule(_) => ApiError::not_found(message),
            EnqueueError::UnknownTask(_) | EnqueueError::Invalid(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_job", message)
            }
            EnqueueError::Redis(err) => ApiError::internal(err),
        }
    }
}

/// Enqueue a job.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs",
    request_body = EnqueueRequest,
    responses(
        (status = 201, description = "enqueued", body = EnqueuedJob),
        (status = 200, description = "the idempotency key was used before: the earlier job", body = EnqueuedJob),
        (status = 404, description = "no such module", body = ErrorBody),
        (status = 413, description = "the input is too large", body = ErrorBody),
        (status = 422, description = "a field is invalid, or the module has no such task", body = ErrorBody),
        (status = 429, description = "rate limited; see Retry-After", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub(crate) async fn enqueue(
    State(state): State<AppState>,
    caller: Caller,
    Extension(trace): Extension<RequestTrace>,
    Json(request): Json<EnqueueRequest>,
) -> Result<(StatusCode, Json<EnqueuedJob>), ApiError> {
    let job = request.into_job(state.config.max_input, None, &trace)?;
    state
        .limiter
        .take(&caller.key, 1)
        .map_err(ApiError::rate_limited)?;
    let enqueued = state
        .queue
        .enqueue_batch(&caller.tenant, vec![job])
        .await?
        .remove(0);
    let status = match enqueued.created {
        true => StatusCode::CREATED,
        false => StatusCode::OK,
    };
    Ok((
        status,
        Json(EnqueuedJob {
            id: enqueued.id,
            queue: enqueued.queue,
            created: enqueued.created,
            replicated: enqueued.replicated,
        }),
    ))
}

/// Enqueue up to 1000 jobs in one request (and one Redis round trip).
#[utoipa::path(post, path = "/v1/jobs/batch", tag = "jobs",
    request_body = BatchRequest,
    responses(
        (status = 201, description = "enqueued, in order", body = BatchReply),
        (status = 404, description = "no such module", body = ErrorBody),
        (status = 413, description = "an input is too large", body = ErrorBody),
        (status = 422, description = "a field is invalid", body = ErrorBody),
        (status = 429, description = "rate limited; see Retry-After", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub(crate) async fn enqueue_batch(
    State(state): State<AppState>,
    caller: Caller,
    Extension(trace): Extension<RequestTrace>,
    Json(request): Json<BatchRequest>,
) -> Result<(StatusCode, Json<BatchReply>), ApiError> {
    if request.jobs.is_empty() || request.jobs.len() > MAX_BATCH {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            format!("field `jobs`: give 1 to {MAX_BATCH} jobs"),
        ));
    }
    let jobs = request
        .jobs
        .into_iter()
        .enumerate()
        .map(|(index, job)| job.into_job(state.config.max_input, Some(index), &trace))
        .collect::<Result<Vec<_>, _>>()?;
    state
        .limiter
        .take(&caller.key, jobs.len())
        .map_err(ApiError::rate_limited)?;
    let enqueued = state.queue.enqueue_batch(&caller.tenant, jobs).await?;
    let jobs = enqueued
        .into_iter()
        .map(|enqueued| EnqueuedJob {
            id: enqueued.id,
            queue: enqueued.queue,
            created: enqueued.created,
            replicated: enqueued.replicated,
        })
        .collect();
    Ok((StatusCode::CREATED, Json(BatchReply { jobs })))
}

/// A job as the API shows it.
// Deserialize too: the CLI reads it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct JobView {
    #[serde(flatten)]
    pub(crate) job: JobRecord,
    /// The result, when it is JSON.
    #[schema(value_type = Object)]
    pub(crate) result: Option<Value>,
    /// The result in base64, when it is not JSON.
    pub(crate) result_base64: Option<String>,
}

impl From<JobRecord> for JobView {
    fn from(mut job: JobRecord) -> Self {
        let bytes = job.result.take();
        job.log = None;
        let result = bytes
            .as_deref()
            .and_then(|bytes| serde_json::from_slice(bytes).ok());
        let result_base64 = match (&result, &bytes) {
            (None, Some(bytes)) => Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
            _ => None,
        };
        Self {
            job,
            result,
            result_base64,
        }
    }
}

/// How long to wait for a job.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct WaitOptions {
    /// Wait up to this long (`30s`, at most 60s) for the job to finish.
    wait: Option<String>,
}

/// The caller's job `id`, or 404 (also for another tenant's).
pub(crate) async fn owned_job(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<JobRecord, ApiError> {
    state
        .queue
        .job(id)
        .await
        .map_err(ApiError::internal)?
        .filter(|job| job.tenant == caller.tenant)
        .ok_or_else(|| ApiError::not_found(format!("there is no job `{id}`")))
}

/// Show a job; with `?wait=30s`, first wait up to that long for it to finish.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "the job id"), WaitOptions),
    responses((status = 200, body = JobView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(options): Query<WaitOptions>,
) -> Result<Json<JobView>, ApiError> {
    let job = owned_job(&state, &caller, &id).await?;
    let Some(wait) = options.wait else {
        return Ok(Json(job.into()));
    };
    let wait = humantime::parse_duration(&wait)
        .map_err(|err| {
            ApiError::bad_request(
                "invalid_query",
                format!("`wait`: `{wait}` is not a duration like `30s` ({err})"),
            )
        })?
        .min(state.config.max_wait);
    if job.status.is_finished() {
        return Ok(Json(job.into()));
    }
    let job = state
        .queue
        .wait(&id, wait)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("there is no job `{id}`")))?;
    Ok(Json(job.into()))
}

/// The log of a job's last attempt, as text.
#[utoipa::path(get, path = "/v1/jobs/{id}/logs", tag = "jobs",
    params(("id" = String, Path, description = "the job id")),
    responses((status = 200, content_type = "text/plain", body = String), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn logs(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let job = owned_job(&state, &caller, &id).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        job.log.unwrap_or_default(),
    ))
}

/// A job's status after a cancel or retry.
// Deserialize too: the CLI reads it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct StatusReply {
    /// The job id.
    pub(crate) id: String,
    /// `cancelled`, `cancelling` (its worker was told to stop it), `pending` (retried), or
    /// the finished status it already had.
    pub(crate) status: String,
}

/// Cancel a job: a queued job never starts; a running one is stopped where it runs.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = String, Path, description = "the job id")),
    responses(
        (status = 200, body = StatusReply),
        (status = 404, body = ErrorBody),
        (status = 409, description = "the job had already finished", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<StatusReply>, ApiError> {
    owned_job(&state, &caller, &id).await?;
    let outcome = state
        .queue
        .cancel(&id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("there is no job `{id}`")))?;
    let status = match outcome {
        CancelOutcome::Cancelled => "cancelled".to_owned(),
        CancelOutcome::Cancelling => "cancelling".to_owned(),
        CancelOutcome::AlreadyFinished(status) => {
            return Err(ApiError::conflict(
                "already_finished",
                format!("job `{id}` had already finished: {status}"),
            ));
        }
    };
    Ok(Json(StatusReply { id, status }))
}

/// Retry a dead job: a new series of attempts under the same id.
#[utoipa::path(post, path = "/v1/jobs/{id}/retry", tag = "jobs",
    params(("id" = String, Path, description = "the job id")),
    responses(
        (status = 200, body = StatusReply),
        (status = 404, body = ErrorBody),
        (status = 409, description = "the job is not dead, or its input is no longer kept", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub(crate) async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<StatusReply>, ApiError> {
    let job = owned_job(&state, &caller, &id).await?;
    let retried = match state.queue.retry_dead(&id).await {
        Ok(retried) => retried,
        Err(err @ RetryError::InputExpired) => {
            return Err(ApiError::conflict(
                "input_expired",
                format!("job `{id}` cannot run again: {err}"),
            ));
        }
        Err(RetryError::Failed(err)) => return Err(ApiError::internal(err)),
    };
    if !retried {
        return Err(ApiError::conflict(
            "not_dead",
            format!(
                "job `{id}` is {}, not dead: only dead jobs are retried",
                job.status
            ),
        ));
    }
    Ok(Json(StatusReply {
        id,
        status: JobStatus::Pending.to_string(),
    }))
}

/// Which jobs to list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListOptions {
    /// Only jobs with this status.
    pub(crate) status: Option<JobStatus>,
    /// Only jobs of this task.
    pub(crate) task: Option<String>,
    /// Only jobs of this module.
    pub(crate) module: Option<String>,
    /// Only jobs on this queue.
    pub(crate) queue: Option<String>,
    /// Only jobs whose id starts with this.
    pub(crate) id: Option<String>,
    /// Only jobs whose JSON input has a value at a path: `customer.id=42`.
    pub(crate) input: Option<String>,
    /// Only jobs created at or after this time (ms since the Unix epoch).
    pub(crate) created_after: Option<u64>,
    /// Only jobs created at or before this time (ms since the Unix epoch).
    pub(crate) created_until: Option<u64>,
    /// At most this many (default 50, at most 500).
    pub(crate) limit: Option<usize>,
    /// Where the previous page ended (its `next_cursor`).
    pub(crate) cursor: Option<String>,
}

impl ListOptions {
    /// A page of `limit` of `selection`'s jobs from `cursor`.
    pub(crate) fn of(selection: Selection, limit: usize, cursor: Option<String>) -> Self {
        Self {
            status: selection.status,
            task: selection.task,
            module: selection.module,
            queue: selection.queue,
            id: selection.id,
            input: selection.input,
            created_after: selection.created_after,
            created_until: selection.created_until,
            limit: Some(limit),
            cursor,
        }
    }
}

/// Which jobs a count or a bulk action is about; every field narrows them.
// Serialize too: the CLI and the dashboard send it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Selection {
    /// Only jobs with this status.
    pub(crate) status: Option<JobStatus>,
    /// Only jobs of this task.
    pub(crate) task: Option<String>,
    /// Only jobs of this module.
    pub(crate) module: Option<String>,
    /// Only jobs on this queue.
    pub(crate) queue: Option<String>,
    /// Only jobs whose id starts with this.
    pub(crate) id: Option<String>,
    /// Only jobs whose JSON input has a value at a path: `customer.id=42`.
    pub(crate) input: Option<String>,
    /// Only jobs created at or after this time (ms since the Unix epoch).
    pub(crate) created_after: Option<u64>,
    /// Only jobs created at or before this time (ms since the Unix epoch).
    pub(crate) created_until: Option<u64>,
}

impl Selection {
    /// The filter it stands for, or why it is not one.
    pub(crate) fn filter(&self) -> Result<JobFilter, ApiError> {
        let input = self
            .input
            .as_deref()
            .map(str::parse::<InputMatch>)
            .transpose()
            .map_err(|err| ApiError::bad_request("invalid_query", format!("`input`: {err}")))?;
        Ok(JobFilter {
            status: self.status,
            task: self.task.clone(),
            module: self.module.clone(),
            queue: self.queue.clone(),
            id_prefix: self.id.clone(),
            input,
            created_after: self.created_after,
            created_until: self.created_until,
        })
    }
}

/// A page of jobs, newest first.
// Deserialize too: the CLI reads it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = JobPage)]
pub(crate) struct JobPageView {
    pub(crate) jobs: Vec<JobView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub(crate) next_cursor: Option<String>,
}

/// List the caller's jobs, newest first, with filters and cursor pagination.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs",
    params(ListOptions),
    responses((status = 200, body = JobPageView), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(options): Query<ListOptions>,
) -> Result<Json<JobPageView>, ApiError> {
    list_jobs(&state, &caller, options, None).await
}

async fn list_jobs(
    state: &AppState,
    caller: &Caller,
    options: ListOptions,
    status: Option<JobStatus>,
) -> Result<Json<JobPageView>, ApiError> {
    let filter = Selection {
        status: status.or(options.status),
        task: options.task,
        module: options.module,
        queue: options.queue,
        id: options.id,
        input: options.input,
        created_after: options.created_after,
        created_until: options.created_until,
    }
    .filter()?;
    let limit = options.limit.unwrap_or(50).clamp(1, MAX_PAGE);
    let page = state
        .queue
        .list(&caller.tenant, &filter, options.cursor.as_deref(), limit)
        .await
        .map_err(
            |err| match err.downcast::<taskbox_core::queue::BadCursor>() {
                Ok(bad) => ApiError::bad_request("invalid_query", bad.to_string()),
                Err(err) => ApiError::internal(err),
            },
        )?;
    Ok(Json(JobPageView {
        jobs: page.jobs.into_iter().map(JobView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Which dead letters to list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeadOptions {
    /// Only this queue's.
    pub(crate) queue: Option<String>,
    /// Only this task's.
    pub(crate) task: Option<String>,
    /// At most this many (default 50, at most 500).
    pub(crate) limit: Option<usize>,
    /// Where the previous page ended.
    pub(crate) cursor: Option<String>,
}

/// List the caller's dead letters: jobs that failed for good, newest first.
#[utoipa::path(get, path = "/v1/dead", tag = "dead letters",
    params(DeadOptions),
    responses((status = 200, body = JobPageView), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn dead_letters(
    State(state): State<AppState>,
    caller: Caller,
    Query(options): Query<DeadOptions>,
) -> Result<Json<JobPageView>, ApiError> {
    let options = ListOptions {
        task: options.task,
        queue: options.queue,
        limit: options.limit,
        cursor: options.cursor,
        ..ListOptions::default()
    };
    list_jobs(&state, &caller, options, Some(JobStatus::Dead)).await
}

/// Which dead letters to purge.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct PurgeOptions {
    /// Only this queue's (default: every queue).
    queue: Option<String>,
}

/// How many dead letters were purged.
// Deserialize too: the CLI reads it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Purged {
    pub(crate) purged: u64,
}

/// Delete the caller's dead letters, and the dead jobs with them.
#[utoipa::path(delete, path = "/v1/dead", tag = "dead letters",
    params(PurgeOptions),
    responses((status = 200, body = Purged)),
    security(("bearer" = [])))]
pub(crate) async fn purge_dead(
    State(state): State<AppState>,
    caller: Caller,
    Query(options): Query<PurgeOptions>,
) -> Result<Json<Purged>, ApiError> {
    let purged = state
        .queue
        .purge_dead(&caller.tenant, options.queue.as_deref())
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(Purged { purged }))
}

/// The most jobs a count counts.
pub(crate) const MAX_COUNT: u64 = 100_000;

/// How many jobs a selection matches.
// Deserialize too: the CLI reads it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct JobCount {
    /// The jobs matched, up to 100,000.
    pub(crate) count: u64,
    /// Whether that is all of them (false when the count stopped at its cap).
    pub(crate) complete: bool,
}

/// Count the caller's jobs a selection matches (up to 100,000): the preview of a bulk action.
#[utoipa::path(get, path = "/v1/jobs/count", tag = "jobs",
    params(Selection),
    responses((status = 200, body = JobCount), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn count(
    State(state): State<AppState>,
    caller: Caller,
    Query(selection): Query<Selection>,
) -> Result<Json<JobCount>, ApiError> {
    let filter = selection.filter()?;
    let (count, complete) = state
        .queue
        .count(&caller.tenant, &filter, MAX_COUNT)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(JobCount { count, complete }))
}

/// How many of the caller's jobs are in each state, over every queue: counts kept as jobs
/// change state (finished jobs while their records are kept), never a scan.
#[utoipa::path(get, path = "/v1/jobs/states", tag = "jobs",
    responses((status = 200, body = BTreeMap<String, u64>)),
    security(("bearer" = [])))]
pub(crate) async fn states(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<BTreeMap<String, u64>>, ApiError> {
    let counts = state
        .queue
        .state_counts(&caller.tenant)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(
        counts
            .into_iter()
            .map(|(status, count)| (status.as_str().to_owned(), count))
            .collect(),
    ))
}

/// The most ids one bulk request may name.
pub(crate) const MAX_BULK_IDS: usize = 1000;

/// A bulk action: on the jobs named by `ids`, or else on every job `selection` matches that
/// was created by the time the action began (or by its `created_until`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BulkRequest {
    /// `retry` (dead jobs), `cancel` (unfinished jobs) or `delete` (finished jobs).
    #[schema(value_type = String)]
    pub(crate) action: BulkAction,
    /// These jobs (up to 1000) rather than a selection.
    #[serde(default)]
    pub(crate) ids: Option<Vec<String>>,
    /// The jobs to act on, when no ids are given.
    #[serde(default)]
    pub(crate) selection: Selection,
}

/// What a bulk action did.
// Deserialize too: the CLI reads it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct BulkReply {
    /// Jobs the request matched.
    pub(crate) matched: u64,
    /// Of those, jobs acted on; the others were in no state the action applies to.
    pub(crate) acted: u64,
}

/// Retry, cancel or delete many jobs: those named, or all a selection matches. Deleting
/// needs the admin role. Jobs created after the request began are left alone.
#[utoipa::path(post, path = "/v1/jobs/bulk", tag = "jobs",
    request_body = BulkRequest,
    responses((status = 200, body = BulkReply), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn bulk(
    State(state): State<AppState>,
    caller: Caller,
    Json(request): Json<BulkRequest>,
) -> Result<Json<BulkReply>, ApiError> {
    let progress = run_bulk(&state, &caller, request, |_| {}).await?;
    Ok(Json(BulkReply {
        matched: progress.matched,
        acted: progress.acted,
    }))
}

/// Runs a bulk request as `caller`, telling `report` how far it has come: the one path of
/// `POST /v1/jobs/bulk` and the dashboard's bulk actions.
pub(crate) async fn run_bulk(
    state: &AppState,
    caller: &Caller,
    request: BulkRequest,
    report: impl FnMut(BulkProgress),
) -> Result<BulkProgress, ApiError> {
    if request.action == BulkAction::Delete && caller.role < Role::Admin {
        return Err(ApiError::forbidden(format!(
            "a {} token may not delete jobs: it needs the admin role",
            caller.role
        )));
    }
    if let Some(ids) = &request.ids {
        if ids.len() > MAX_BULK_IDS {
            return Err(ApiError::bad_request(
                "invalid_body",
                format!("field `ids`: at most {MAX_BULK_IDS} ids, not {}", ids.len()),
            ));
        }
        return state
            .queue
            .bulk_ids(&caller.tenant, ids, request.action)
            .await
            .map_err(ApiError::internal);
    }
    let mut filter = request.selection.filter()?;
    let began = taskbox_core::model::unix_millis(std::time::SystemTime::now());
    filter.created_until = Some(filter.created_until.map_or(began, |until| until.min(began)));
    state
        .queue
        .bulk(&caller.tenant, &filter, request.action, report)
        .await
        .map_err(ApiError::internal)
}
