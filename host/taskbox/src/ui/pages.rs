//! The dashboard's pages and actions. Each reads and acts through the `/v1` handler that does
//! the same over the API, as the session's principal, so the checks are the API's.

use askama::Template;
use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use taskbox_core::audit::AuditEntry;
use taskbox_core::auth::{Principal, Role};
use taskbox_core::model::job::{AttemptRecord, JobStatus};
use taskbox_core::queue::{Period, PeriodCounts, QueueStats, WorkerInfo};
use taskbox_runtime::RunStats;
use taskbox_runtime::guest_text::quote;

use crate::api::{self, ApiError, AppState, JobView, jobs, system};
use crate::when::{When, span};

/// The most of a job's result or log a page shows.
const SHOWN: usize = 64 << 10;

/// Renders a template, or says why it could not.
pub(super) fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(err) => error_page(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    reason: &'a str,
    message: &'a str,
}

/// A page saying what went wrong, with its status.
pub(super) fn error_page(status: StatusCode, message: &str) -> Response {
    let page = ErrorPage {
        status: status.as_u16(),
        reason: status.canonical_reason().unwrap_or(""),
        message,
    };
    let html = page.render().unwrap_or_else(|_| message.to_owned());
    (status, Html(html)).into_response()
}

pub(super) fn api_error(err: ApiError) -> Response {
    error_page(err.status(), err.message())
}

/// What every page shows around its content: who is logged in and what they may do.
pub(super) struct Layout {
    pub(super) tenant: String,
    pub(super) role: Role,
    /// Which page of the menu this is.
    pub(super) page: &'static str,
    /// This page's own link: its live part reloads from it.
    pub(super) this: String,
    /// Whether the page reloads its live part as things change (a form to confirm does
    /// not).
    pub(super) live: bool,
    /// The job whose page this is: the live stream watches it too, however old it is.
    pub(super) job: Option<String>,
}

impl Layout {
    pub(super) fn new(principal: &Principal, page: &'static str, this: impl Into<String>) -> Self {
        Self {
            tenant: principal.tenant.clone(),
            role: principal.role,
            page,
            this: this.into(),
            live: true,
            job: None,
        }
    }

    /// The layout of job `id`'s page.
    pub(super) fn of_job(principal: &Principal, id: &str) -> Self {
        Self {
            job: Some(id.to_owned()),
            ..Self::new(principal, "jobs", format!("/ui/jobs/{}", urlencoded(id)))
        }
    }

    /// The layout of a page that stays as it was rendered.
    pub(super) fn still(mut self) -> Self {
        self.live = false;
        self
    }

    pub(super) fn can_operate(&self) -> bool {
        self.role >= Role::Operator
    }

    pub(super) fn can_admin(&self) -> bool {
        self.role >= Role::Admin
    }
}

/// A job in a table.
pub(super) struct JobRow {
    pub(super) id: String,
    pub(super) status: String,
    pub(super) module: String,
    pub(super) task: String,
    pub(super) queue: String,
    pub(super) attempt: u32,
    pub(super) created: When,
    pub(super) finished: Option<When>,
}

impl From<&JobView> for JobRow {
    fn from(view: &JobView) -> Self {
        let job = &view.job;
        Self {
            id: job.id.clone(),
            status: job.status.to_string(),
            module: match &job.version {
                Some(version) => format!("{}@{version}", job.module),
                None => job.module.clone(),
            },
            task: job.task.clone(),
            queue: job.queue.clone(),
            attempt: job.attempt,
            created: When::at(job.created_at),
            finished: job.finished_at.map(When::at),
        }
    }
}

/// A queue in a table.
pub(super) struct QueueRow {
    pub(super) name: String,
    pub(super) paused: Option<When>,
    pub(super) waiting: u64,
    pub(super) running: u64,
    pub(super) delayed: u64,
    /// When the oldest waiting job was enqueued, if one waits.
    pub(super) oldest: Option<When>,
    pub(super) completed: u64,
    pub(super) failed: u64,
}

impl From<&QueueStats> for QueueRow {
    fn from(queue: &QueueStats) -> Self {
        let waiting = &queue.waiting;
        Self {
            name: queue.name.clone(),
            paused: queue.paused_at.map(When::at),
            waiting: waiting.high + waiting.normal + waiting.low,
            running: queue.running,
            delayed: queue.delayed,
            oldest: match queue.oldest_waiting_ms {
                0 => None,
                age => Some(When::at(
                    taskbox_core::model::unix_millis(std::time::SystemTime::now())
                        .saturating_sub(age),
                )),
            },
            completed: queue.completed_last_minute,
            failed: queue.failed_last_minute,
        }
    }
}

/// A worker in a table.
pub(super) struct WorkerRow {
    pub(super) id: String,
    pub(super) host: String,
    pub(super) busy: usize,
    pub(super) slots: usize,
    pub(super) queues: String,
    pub(super) started: When,
    pub(super) heartbeat: When,
}

impl From<&WorkerInfo> for WorkerRow {
    fn from(worker: &WorkerInfo) -> Self {
        Self {
            id: worker.id.clone(),
            host: worker.host.clone(),
            busy: worker.in_flight,
            slots: worker.concurrency,
            queues: worker.queues.join(", "),
            started: When::at(worker.started_at),
            heartbeat: When::at(worker.last_heartbeat),
        }
    }
}

/// One period's bar in a throughput chart: completed below, failed stacked on top, in the
/// chart's units (each bar 10 wide, the chart 100 high).
pub(super) struct Bar {
    pub(super) x: u64,
    pub(super) completed_y: u64,
    pub(super) completed_height: u64,
    pub(super) failed_y: u64,
    pub(super) failed_height: u64,
    pub(super) title: String,
}

/// A throughput chart, drawn on the server: the kept periods of one length.
pub(super) struct Chart {
    /// `hour` or `day`, for the element ids.
    pub(super) name: &'static str,
    /// `The last hour`, `The last day`.
    pub(super) title: &'static str,
    /// `minute`, `hour`.
    pub(super) per: &'static str,
    pub(super) width: u64,
    pub(super) bars: Vec<Bar>,
    pub(super) completed: u64,
    pub(super) failed: u64,
    /// Of the attempts that ended in it, the share that failed, in percent.
    pub(super) failure_rate: String,
}

impl Chart {
    fn new(period: Period, counts: &[PeriodCounts]) -> Self {
        let (name, title, per, unit) = match period {
            Period::Minute => ("hour", "The last hour", "minute", "min"),
            Period::Hour => ("day", "The last day", "hour", "h"),
        };
        let completed: u64 = counts.iter().map(|counts| counts.completed).sum();
        let failed: u64 = counts.iter().map(|counts| counts.failed).sum();
        Self {
            name,
            title,
            per,
            width: counts.len() as u64 * 10,
            bars: bars(counts, unit),
            completed,
            failed,
            failure_rate: match completed + failed {
                0 => "—".to_owned(),
                ended => format!("{:.1}%", failed as f64 * 100.0 / ended as f64),
            },
        }
    }
}

/// The bars of `periods` (each `unit` long), scaled to the busiest.
fn bars(periods: &[PeriodCounts], unit: &str) -> Vec<Bar> {
    const HEIGHT: u64 = 100;
    let most = periods
        .iter()
        .map(|counts| counts.completed + counts.failed)
        .max()
        .unwrap_or(0)
        .max(1);
    let last = periods.last().map_or(0, |counts| counts.period);
    periods
        .iter()
        .enumerate()
        .map(|(index, counts)| {
            let completed_height = counts.completed * HEIGHT / most;
            let failed_height = counts.failed * HEIGHT / most;
            Bar {
                x: index as u64 * 10,
                completed_y: HEIGHT - completed_height,
                completed_height,
                failed_y: HEIGHT - completed_height - failed_height,
                failed_height,
                title: format!(
                    "{} {unit} ago: {} completed, {} failed",
                    last - counts.period,
                    counts.completed,
                    counts.failed
                ),
            }
        })
        .collect()
}

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview {
    layout: Layout,
    /// Jobs completed and attempts failed in the last hour by minute, and the last day by
    /// hour.
    charts: [Chart; 2],
    waiting: u64,
    running: u64,
    delayed: u64,
    completed: u64,
    failed: u64,
    /// The tenant's jobs in each state, from the counts kept as jobs change state.
    states: Vec<(&'static str, u64)>,
    queues: Vec<QueueRow>,
    workers: Vec<WorkerRow>,
}

pub(super) async fn overview(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Response {
    let queues = match system::queues(State(state.clone()), Extension(principal.clone())).await {
        Ok(api::Json(list)) => list.queues,
        Err(err) => return api_error(err),
    };
    let workers = match system::workers(State(state.clone()), Extension(principal.clone())).await {
        Ok(api::Json(list)) => list.workers,
        Err(err) => return api_error(err),
    };
    let throughput = tokio::try_join!(
        state.queue.throughput(Period::Minute),
        state.queue.throughput(Period::Hour)
    );
    let (hour, day) = match throughput {
        Ok(both) => both,
        Err(err) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, &format!("{err:#}")),
    };
    let states = match state.queue.state_counts(&principal.tenant).await {
        Ok(counts) => counts
            .into_iter()
            .map(|(status, count)| (status.as_str(), count))
            .collect(),
        Err(err) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, &format!("{err:#}")),
    };
    let queues: Vec<QueueRow> = queues.iter().map(QueueRow::from).collect();
    let sum = |count: fn(&QueueRow) -> u64| queues.iter().map(count).sum();
    render(&Overview {
        layout: Layout::new(&principal, "overview", "/ui"),
        charts: [
            Chart::new(Period::Minute, &hour),
            Chart::new(Period::Hour, &day),
        ],
        waiting: sum(|queue| queue.waiting),
        running: sum(|queue| queue.running),
        delayed: sum(|queue| queue.delayed),
        completed: sum(|queue| queue.completed),
        failed: sum(|queue| queue.failed),
        states,
        queues,
        workers: workers.iter().map(WorkerRow::from).collect(),
    })
}

/// A form field's value, or none for an empty field.
pub(super) fn given(value: &str) -> Option<String> {
    Some(value.trim().to_owned()).filter(|value| !value.is_empty())
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    layout: Layout,
    row: JobRow,
    digest: String,
    max_attempts: u32,
    priority: String,
    worker: Option<String>,
    parent: Option<String>,
    started: Option<When>,
    stats: Option<StatsView>,
    progress: Option<String>,
    /// The error's kind and message, as text.
    failure: Option<(String, String)>,
    /// The error's other fields, as JSON.
    error: Option<String>,
    result: Option<String>,
    log: Option<String>,
    metadata: Option<String>,
    finished: bool,
    dead: bool,
    attempts: Vec<AttemptView>,
    results_expired: bool,
}

/// One attempt in a job's timeline.
struct AttemptView {
    number: u32,
    outcome: String,
    started: When,
    took: String,
    worker: String,
    fuel: String,
    memory: String,
    error: String,
}

impl From<&AttemptRecord> for AttemptView {
    fn from(attempt: &AttemptRecord) -> Self {
        let detail = &attempt.detail;
        let known = |value: Option<String>| value.unwrap_or_else(|| "—".to_owned());
        Self {
            number: attempt.attempt,
            outcome: attempt.outcome.clone(),
            started: When::at(attempt.started_at),
            took: span(attempt.ended_at.saturating_sub(attempt.started_at)),
            worker: detail.worker.clone(),
            fuel: known(detail.fuel_used.map(|fuel| fuel.to_string())),
            memory: known(
                detail
                    .peak_memory
                    .map(|bytes| bytesize::ByteSize(bytes).to_string()),
            ),
            error: match (&detail.error_kind, &detail.error) {
                (Some(kind), Some(error)) => capped(&format!("{kind}: {error}")),
                (Some(kind), None) => kind.clone(),
                (None, _) => String::new(),
            },
        }
    }
}

/// What the sandbox measured of an attempt.
pub(super) struct StatsView {
    pub(super) fuel: u64,
    pub(super) wall: String,
    pub(super) memory: String,
}

pub(super) async fn job(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    let mut record = match jobs::owned_job(&state, &Extension(principal.clone()), &id).await {
        Ok(record) => record,
        Err(err) => return api_error(err),
    };
    let log = record
        .log
        .take()
        .filter(|log| !log.is_empty())
        .map(|log| capped(&log));
    let view = JobView::from(record);
    let job = &view.job;
    let pretty = |value: &serde_json::Value| {
        capped(&serde_json::to_string_pretty(value).unwrap_or_default())
    };
    let stats = job
        .stats
        .as_ref()
        .and_then(|stats| serde_json::from_value::<RunStats>(stats.clone()).ok())
        .map(|stats| StatsView {
            fuel: stats.fuel_used,
            wall: span(stats.wall_time.as_millis() as u64),
            memory: bytesize::ByteSize(stats.peak_memory).to_string(),
        });
    render(&JobPage {
        layout: Layout::of_job(&principal, &id),
        row: JobRow::from(&view),
        digest: job.digest.clone(),
        max_attempts: job.max_attempts,
        priority: job.priority.as_str().to_owned(),
        worker: job.worker.clone(),
        parent: job.parent.clone(),
        started: job.started_at.map(When::at),
        stats,
        progress: job.progress.as_ref().map(pretty),
        failure: job.error.as_ref().map(|error| {
            let field = |name: &str| {
                error
                    .get(name)
                    .and_then(|value| value.as_str())
                    .map(capped)
                    .unwrap_or_default()
            };
            (field("kind"), field("message"))
        }),
        error: job.error.as_ref().map(pretty),
        result: match (&view.result, &view.result_base64) {
            (Some(result), _) => Some(pretty(result)),
            (None, Some(base64)) => Some(capped(&format!("(bytes, base64) {base64}"))),
            (None, None) => None,
        },
        log,
        metadata: job.metadata.as_ref().map(pretty),
        finished: job.status.is_finished(),
        dead: job.status == JobStatus::Dead,
        attempts: job.attempts.iter().map(AttemptView::from).collect(),
        results_expired: job.results_expired,
    })
}

/// `text`, cut to [`SHOWN`] bytes on a character boundary, saying so.
fn capped(text: &str) -> String {
    taskbox_runtime::guest_text::truncate(text.to_owned(), SHOWN)
}

#[derive(Template)]
#[template(path = "dead.html")]
struct DeadPage {
    layout: Layout,
    jobs: Vec<DeadRow>,
    next: Option<String>,
}

/// A dead letter in a table.
pub(super) struct DeadRow {
    pub(super) row: JobRow,
    pub(super) error: String,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct DeadQuery {
    #[serde(default)]
    cursor: String,
}

pub(super) async fn dead(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<DeadQuery>,
) -> Response {
    let this = match given(&query.cursor) {
        Some(cursor) => format!("/ui/dead?cursor={}", urlencoded(&cursor)),
        None => "/ui/dead".to_owned(),
    };
    let options = jobs::DeadOptions {
        queue: None,
        task: None,
        limit: Some(50),
        cursor: given(&query.cursor),
    };
    let page = match jobs::dead_letters(
        State(state),
        Extension(principal.clone()),
        api::Query(options),
    )
    .await
    {
        Ok(api::Json(page)) => page,
        Err(err) => return api_error(err),
    };
    render(&DeadPage {
        layout: Layout::new(&principal, "dead", this),
        jobs: page
            .jobs
            .iter()
            .map(|view| DeadRow {
                row: JobRow::from(view),
                error: view
                    .job
                    .error
                    .as_ref()
                    .map(|error| {
                        let text = error
                            .get("message")
                            .and_then(|message| message.as_str())
                            .map_or_else(|| error.to_string(), str::to_owned);
                        text.chars().take(200).collect()
                    })
                    .unwrap_or_default(),
            })
            .collect(),
        next: page
            .next_cursor
            .map(|cursor| format!("/ui/dead?cursor={}", urlencoded(&cursor))),
    })
}

pub(super) fn urlencoded(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A running job, with where and since when.
pub(super) struct RunningRow {
    pub(super) row: JobRow,
    pub(super) worker: String,
    pub(super) started: Option<When>,
}

#[derive(Template)]
#[template(path = "workers.html")]
struct WorkersPage {
    layout: Layout,
    workers: Vec<WorkerRow>,
    running: Vec<RunningRow>,
}

/// The workers, and the tenant's running jobs with the worker running each.
pub(super) async fn workers(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Response {
    let workers = match system::workers(State(state.clone()), Extension(principal.clone())).await {
        Ok(api::Json(list)) => list.workers,
        Err(err) => return api_error(err),
    };
    let options = jobs::ListOptions {
        status: Some(JobStatus::Running),
        limit: Some(200),
        ..jobs::ListOptions::default()
    };
    let running = match jobs::list(
        State(state),
        Extension(principal.clone()),
        api::Query(options),
    )
    .await
    {
        Ok(api::Json(page)) => page.jobs,
        Err(err) => return api_error(err),
    };
    render(&WorkersPage {
        layout: Layout::new(&principal, "workers", "/ui/workers"),
        workers: workers.iter().map(WorkerRow::from).collect(),
        running: running
            .iter()
            .map(|view| RunningRow {
                row: JobRow::from(view),
                worker: view.job.worker.clone().unwrap_or_default(),
                started: view.job.started_at.map(When::at),
            })
            .collect(),
    })
}

#[derive(Template)]
#[template(path = "queues.html")]
struct QueuesPage {
    layout: Layout,
    queues: Vec<QueueRow>,
}

pub(super) async fn queues(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Response {
    match system::queues(State(state), Extension(principal.clone())).await {
        Ok(api::Json(list)) => render(&QueuesPage {
            layout: Layout::new(&principal, "queues", "/ui/queues"),
            queues: list.queues.iter().map(QueueRow::from).collect(),
        }),
        Err(err) => api_error(err),
    }
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    layout: Layout,
    entries: Vec<(When, AuditEntry)>,
}

pub(super) async fn audit(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Response {
    match state.audit.recent(&principal.tenant, 200).await {
        Ok(entries) => render(&AuditPage {
            layout: Layout::new(&principal, "audit", "/ui/audit"),
            entries: entries
                .into_iter()
                .map(|entry| (When::at(entry.at), entry))
                .collect(),
        }),
        Err(err) => error_page(StatusCode::INTERNAL_SERVER_ERROR, &format!("{err:#}")),
    }
}

/// Runs an action as `principal` if its role allows a POST to the API, records it in the
/// audit log, and sends the browser to the page `then` makes of what the action returned.
pub(super) async fn act<T>(
    state: &AppState,
    principal: &Principal,
    action: &str,
    ids: &[String],
    detail: &str,
    then: impl FnOnce(T) -> String,
    run: impl Future<Output = Result<T, ApiError>>,
) -> Response {
    if let Err(err) = api::allowed(principal, &Method::POST) {
        return api_error(err);
    }
    match run.await {
        Ok(done) => acted(state, principal, action, ids, detail, &then(done)).await,
        Err(err) => api_error(err),
    }
}

/// Records an action `principal` did in the audit log, and sends the browser to `then`.
pub(super) async fn acted(
    state: &AppState,
    principal: &Principal,
    action: &str,
    ids: &[String],
    detail: &str,
    then: &str,
) -> Response {
    if let Err(err) = state.audit.record(principal, action, ids, detail).await {
        tracing::warn!("writing the audit log failed: {err:#}");
    }
    Redirect::to(then).into_response()
}

/// Retry or cancel a job (`/ui/jobs/{id}/retry`, `/ui/jobs/{id}/cancel`).
pub(super) async fn job_action(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    let (caller, path) = (Extension(principal.clone()), api::Path(id.clone()));
    let run = {
        let state = state.clone();
        let action = action.clone();
        async move {
            match action.as_str() {
                "retry" => jobs::retry(State(state), caller, path).await.map(drop),
                "cancel" => jobs::cancel(State(state), caller, path).await.map(drop),
                _ => Err(ApiError::not_found(format!(
                    "a job has no action {}",
                    quote(&action)
                ))),
            }
        }
    };
    let then = format!("/ui/jobs/{}", urlencoded(&id));
    let name = format!("job.{action}");
    act(&state, &principal, &name, &[id], "", |()| then, run).await
}

/// Pause or resume a queue (`/ui/queues/{name}/pause`, `/ui/queues/{name}/resume`).
pub(super) async fn queue_action(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((queue, action)): Path<(String, String)>,
) -> Response {
    let (caller, path) = (Extension(principal.clone()), api::Path(queue.clone()));
    let run = {
        let state = state.clone();
        let action = action.clone();
        async move {
            match action.as_str() {
                "pause" => system::pause_queue(State(state), caller, path)
                    .await
                    .map(drop),
                "resume" => system::resume_queue(State(state), caller, path)
                    .await
                    .map(drop),
                _ => Err(ApiError::not_found(format!(
                    "a queue has no action {}",
                    quote(&action)
                ))),
            }
        }
    };
    let name = format!("queue.{action}");
    act(
        &state,
        &principal,
        &name,
        &[queue],
        "",
        |()| "/ui/queues".to_owned(),
        run,
    )
    .await
}

#[cfg(test)]
mod tests {
    use taskbox_core::queue::PeriodCounts;

    use super::bars;

    #[test]
    fn the_busiest_minute_fills_the_chart_and_failures_stack_on_completions() {
        let minutes = [
            PeriodCounts {
                period: 10,
                completed: 0,
                failed: 0,
            },
            PeriodCounts {
                period: 11,
                completed: 30,
                failed: 10,
            },
            PeriodCounts {
                period: 12,
                completed: 10,
                failed: 0,
            },
        ];
        let bars = bars(&minutes, "min");
        assert_eq!((bars[0].completed_height, bars[0].failed_height), (0, 0));
        assert_eq!((bars[1].completed_height, bars[1].failed_height), (75, 25));
        assert_eq!((bars[1].completed_y, bars[1].failed_y), (25, 0));
        assert_eq!((bars[2].x, bars[2].completed_height), (20, 25));
        assert!(bars[0].title.starts_with("2 min ago"));
    }
}
