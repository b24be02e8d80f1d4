//! The jobs page: state tabs, server-side search, pages, and bulk actions on the selected
//! jobs or on every job a search matches, previewed with their count, run in chunks on the
//! server with their progress shown, and leaving alone the jobs that arrive meanwhile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use askama::Template;
use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use taskbox_core::auth::Principal;
use taskbox_core::model::job::JobStatus;
use taskbox_core::model::unix_millis;
use taskbox_core::queue::{BulkAction, BulkProgress};
use taskbox_runtime::guest_text::quote;

use super::pages::{JobRow, Layout, api_error, error_page, given, render, urlencoded};
use crate::api::jobs::{BulkRequest, MAX_BULK_IDS, Selection};
use crate::api::{self, AppState, jobs};
use crate::when::When;

/// The longest job id a form may tick, in bytes: a partition tag and 33 more.
pub(super) const MAX_ID: usize = 200;

/// The longest search accepted, in bytes.
const MAX_SEARCH: usize = 512;

/// The jobs page's query: a state tab, a search, a page.
#[derive(Debug, Default, Deserialize)]
pub(super) struct JobsQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    q: String,
    #[serde(default)]
    cursor: String,
}

impl JobsQuery {
    /// The selection it stands for, or why it is not one.
    fn selection(&self) -> Result<Selection, String> {
        let status = given(&self.status)
            .map(|status| status.parse::<JobStatus>())
            .transpose()?;
        search(status, &self.q)
    }

    /// The page's link with `cursor`.
    fn link(&self, cursor: Option<&str>) -> String {
        let mut pairs = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [("status", &self.status), ("q", &self.q)] {
            if !value.is_empty() {
                pairs.append_pair(name, value);
            }
        }
        if let Some(cursor) = cursor {
            pairs.append_pair("cursor", cursor);
        }
        format!("/ui/jobs?{}", pairs.finish())
    }
}

/// The selection of a search: space-separated terms `id:PREFIX`, `task:NAME`, `queue:NAME`,
/// `module:NAME`, `since:WHEN`, `before:WHEN` (a time ago, `90m`, or a UTC date), and one
/// `path.in.input=value`.
pub(super) fn search(status: Option<JobStatus>, q: &str) -> Result<Selection, String> {
    if q.len() > MAX_SEARCH {
        return Err(format!(
            "a search is at most {MAX_SEARCH} bytes, not {}",
            q.len()
        ));
    }
    let mut selection = Selection {
        status,
        ..Selection::default()
    };
    for term in q.split_whitespace() {
        if let Some((name @ ("since" | "before"), value)) = term.split_once(':') {
            let slot = match name {
                "since" => &mut selection.created_after,
                _ => &mut selection.created_until,
            };
            if slot.replace(moment(name, value)?).is_some() {
                return Err(format!("the search names `{name}` twice"));
            }
            continue;
        }
        let slot = match term.split_once(':') {
            Some(("id", _)) => &mut selection.id,
            Some(("task", _)) => &mut selection.task,
            Some(("queue", _)) => &mut selection.queue,
            Some(("module", _)) => &mut selection.module,
            _ if term.contains('=') => &mut selection.input,
            _ => {
                return Err(format!(
                    "`{}` is not a search term: use id:, task:, queue:, module:, since:, \
                     before: or path.in.input=value",
                    term.chars().take(60).collect::<String>()
                ));
            }
        };
        let value = match term.split_once(':') {
            Some((_, value)) if !term.contains('=') || term.find(':') < term.find('=') => value,
            _ => term.strip_prefix("input.").unwrap_or(term),
        };
        if slot.replace(value.to_owned()).is_some() {
            return Err(format!(
                "the search names `{}` twice",
                term.split([':', '=']).next().unwrap_or(term)
            ));
        }
    }
    Ok(selection)
}

/// The time a `since:` or `before:` term names, in ms since the Unix epoch: a time ago
/// (`90m`, `2d`) or a UTC date (`2026-12-03`, `2026-12-03T10:00:00`).
fn moment(name: &str, value: &str) -> Result<u64, String> {
    let at = match humantime::parse_duration(value) {
        Ok(ago) => SystemTime::now().checked_sub(ago),
        Err(_) if value.len() == "2026-12-03".len() => {
            humantime::parse_rfc3339_weak(&format!("{value}T00:00:00")).ok()
        }
        Err(_) => humantime::parse_rfc3339_weak(value).ok(),
    };
    at.map(unix_millis).ok_or_else(|| {
        format!(
            "`{name}:` takes a time ago (`90m`, `2d`) or a UTC date (`2026-12-03` or \
             `2026-12-03T10:00:00`), not {}",
            quote(value)
        )
    })
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    layout: Layout,
    query: JobsQuery,
    statuses: Vec<&'static str>,
    jobs: Vec<JobRow>,
    /// The bulk actions that apply to the tab's jobs.
    actions: Vec<&'static str>,
    error: Option<String>,
    /// The link to the next page, with the same filters.
    next: Option<String>,
}

/// The actions that apply to jobs with `status` (to any job when none).
fn actions_for(status: Option<JobStatus>) -> Vec<&'static str> {
    [BulkAction::Retry, BulkAction::Cancel, BulkAction::Delete]
        .into_iter()
        .filter(|action| status.is_none_or(|status| action.applies_to(status)))
        .map(BulkAction::as_str)
        .collect()
}

pub(super) async fn page(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<JobsQuery>,
) -> Response {
    let this = query.link(given(&query.cursor).as_deref());
    let layout = Layout::new(&principal, "jobs", this);
    let statuses = JobStatus::ALL
        .iter()
        .filter(|status| **status != JobStatus::Unknown)
        .map(|status| status.as_str())
        .collect();
    let selection = match query.selection() {
        Ok(selection) => selection,
        Err(error) => {
            let page = JobsPage {
                layout,
                statuses,
                jobs: Vec::new(),
                actions: Vec::new(),
                error: Some(error),
                next: None,
                query,
            };
            return (StatusCode::BAD_REQUEST, render(&page)).into_response();
        }
    };
    let status = selection.status;
    let options = jobs::ListOptions::of(selection, 50, given(&query.cursor));
    let listed = jobs::list(
        State(state),
        Extension(principal.clone()),
        api::Query(options),
    )
    .await;
    let page = match listed {
        Ok(api::Json(page)) => page,
        Err(err) => return api_error(err),
    };
    render(&JobsPage {
        layout,
        statuses,
        jobs: page.jobs.iter().map(JobRow::from).collect(),
        actions: actions_for(status),
        error: None,
        next: page
            .next_cursor
            .as_deref()
            .map(|cursor| query.link(Some(cursor))),
        query,
    })
}

/// A bulk action on a search, before it runs.
#[derive(Debug, Deserialize)]
pub(super) struct PreviewQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    q: String,
    action: BulkAction,
}

#[derive(Template)]
#[template(path = "bulk_preview.html")]
struct PreviewPage {
    layout: Layout,
    status: String,
    q: String,
    action: &'static str,
    count: u64,
    complete: bool,
    /// Jobs created after this (ms since the Unix epoch) are left alone.
    until: u64,
    since: When,
}

/// How many jobs a bulk action would touch, and a button to run it.
pub(super) async fn preview(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<PreviewQuery>,
) -> Response {
    let jobs_query = JobsQuery {
        status: query.status.clone(),
        q: query.q.clone(),
        cursor: String::new(),
    };
    let mut selection = match jobs_query.selection() {
        Ok(selection) => selection,
        Err(error) => return error_page(StatusCode::BAD_REQUEST, &error),
    };
    // Jobs that arrive after the preview are left alone, within the search's own `before:`.
    let now = unix_millis(SystemTime::now());
    let until = selection
        .created_until
        .map_or(now, |before| before.min(now));
    selection.created_until = Some(until);
    let counted = jobs::count(
        State(state),
        Extension(principal.clone()),
        api::Query(selection),
    )
    .await;
    let count = match counted {
        Ok(api::Json(count)) => count,
        Err(err) => return api_error(err),
    };
    render(&PreviewPage {
        layout: Layout::new(&principal, "jobs", jobs_query.link(None)).still(),
        status: query.status,
        q: query.q,
        action: query.action.as_str(),
        count: count.count,
        complete: count.complete,
        until,
        since: When::at(until),
    })
}

/// The bulk actions this process runs and has run, by id, with the tenant each is for.
#[derive(Debug, Default)]
pub(crate) struct BulkRuns(Mutex<HashMap<String, BulkRun>>);

/// Runs kept for their progress page, at most: the oldest finished ones go first.
const RUNS_KEPT: usize = 100;

#[derive(Debug, Clone)]
struct BulkRun {
    tenant: String,
    action: &'static str,
    detail: String,
    progress: BulkProgress,
    /// `None` while it runs; then whether it ended well, or why not.
    ended: Option<Result<(), String>>,
    started: u64,
}

impl BulkRuns {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, BulkRun>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn begin(&self, run: BulkRun) -> String {
        let id = format!("{:032x}", rand::random::<u128>());
        let mut runs = self.lock();
        if runs.len() >= RUNS_KEPT {
            let oldest = runs
                .iter()
                .filter(|(_, run)| run.ended.is_some())
                .min_by_key(|(_, run)| run.started)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                runs.remove(&oldest);
            }
        }
        runs.insert(id.clone(), run);
        id
    }

    fn update(&self, id: &str, change: impl FnOnce(&mut BulkRun)) {
        if let Some(run) = self.lock().get_mut(id) {
            change(run);
        }
    }
}

/// Runs a bulk action: on the ids ticked on the jobs page, at once; or on a search's jobs,
/// in the background, with a page that shows its progress.
pub(super) async fn run(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Response {
    if let Err(err) = api::allowed(&principal, &Method::POST) {
        return api_error(err);
    }
    let mut fields: HashMap<String, String> = HashMap::new();
    let mut ids = Vec::new();
    for (name, value) in url::form_urlencoded::parse(&body) {
        match &*name {
            // Longer than any job id: not one, and not to be kept in the audit log.
            "ids" if ids.len() < MAX_BULK_IDS && value.len() <= MAX_ID => {
                ids.push(value.into_owned());
            }
            "ids" => {}
            _ => {
                fields.insert(name.into_owned(), value.into_owned());
            }
        }
    }
    let field = |name: &str| fields.get(name).cloned().unwrap_or_default();
    let action = match serde_json::from_value::<BulkAction>(field("action").into()) {
        Ok(action) => action,
        Err(_) => return error_page(StatusCode::BAD_REQUEST, "choose retry, cancel or delete"),
    };
    let caller = Extension(principal.clone());
    if field("selected") == "1" {
        if ids.is_empty() {
            return error_page(StatusCode::BAD_REQUEST, "no job is ticked");
        }
        let request = BulkRequest {
            action,
            ids: Some(ids.clone()),
            selection: Selection::default(),
        };
        return match jobs::run_bulk(&state, &caller, request, |_| {}).await {
            Ok(progress) => {
                record(&state, &principal, action, &ids, "ticked on the jobs page").await;
                let runs = &state.ui_bulk_runs;
                let id = runs.begin(BulkRun {
                    tenant: principal.tenant.clone(),
                    action: action.as_str(),
                    detail: format!("{} ticked jobs", ids.len()),
                    progress,
                    ended: Some(Ok(())),
                    started: unix_millis(SystemTime::now()),
                });
                Redirect::to(&format!("/ui/bulk/{id}")).into_response()
            }
            Err(err) => api_error(err),
        };
    }
    let jobs_query = JobsQuery {
        status: field("status"),
        q: field("q"),
        cursor: String::new(),
    };
    let mut selection = match jobs_query.selection() {
        Ok(selection) => selection,
        Err(error) => return error_page(StatusCode::BAD_REQUEST, &error),
    };
    selection.created_until = field("until").parse().ok();
    let detail = format!(
        "status {} · search `{}` · created until {}",
        given(&jobs_query.status).unwrap_or_else(|| "any".to_owned()),
        jobs_query.q,
        selection
            .created_until
            .map_or_else(|| "now".to_owned(), |until| When::at(until).iso),
    );
    record(&state, &principal, action, &[], &detail).await;
    let id = state.ui_bulk_runs.begin(BulkRun {
        tenant: principal.tenant.clone(),
        action: action.as_str(),
        detail,
        progress: BulkProgress::default(),
        ended: None,
        started: unix_millis(SystemTime::now()),
    });
    let request = BulkRequest {
        action,
        ids: None,
        selection,
    };
    let runs = Arc::clone(&state.ui_bulk_runs);
    let run_id = id.clone();
    tokio::spawn(async move {
        let report = |progress| runs.update(&run_id, |run| run.progress = progress);
        let ended = jobs::run_bulk(&state, &caller, request, report).await;
        runs.update(&run_id, |run| match ended {
            Ok(progress) => {
                run.progress = progress;
                run.ended = Some(Ok(()));
            }
            Err(err) => run.ended = Some(Err(err.message().to_owned())),
        });
    });
    Redirect::to(&format!("/ui/bulk/{id}")).into_response()
}

async fn record(
    state: &AppState,
    principal: &Principal,
    action: BulkAction,
    ids: &[String],
    detail: &str,
) {
    let name = format!("jobs.{}", action.as_str());
    if let Err(err) = state.audit.record(principal, &name, ids, detail).await {
        tracing::warn!("writing the audit log failed: {err:#}");
    }
}

#[derive(Template)]
#[template(path = "bulk.html")]
struct BulkPage {
    layout: Layout,
    action: &'static str,
    detail: String,
    progress: BulkProgress,
    running: bool,
    error: Option<String>,
}

/// A bulk action's progress, refreshed while it runs.
pub(super) async fn progress(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    let run = state.ui_bulk_runs.lock().get(&id).cloned();
    let Some(run) = run.filter(|run| run.tenant == principal.tenant) else {
        return error_page(
            StatusCode::NOT_FOUND,
            "there is no such bulk action in this process (the progress of a bulk action is kept \
             by the process that runs it)",
        );
    };
    render(&BulkPage {
        layout: Layout::new(&principal, "jobs", format!("/ui/bulk/{}", urlencoded(&id))),
        action: run.action,
        detail: run.detail,
        progress: run.progress,
        running: run.ended.is_none(),
        error: run.ended.and_then(Result::err),
    })
}

#[cfg(test)]
mod tests {
    use taskbox_core::model::job::JobStatus;
    use taskbox_core::model::unix_millis;

    use super::search;

    #[test]
    fn a_search_is_read_into_its_terms() {
        let selection = search(
            Some(JobStatus::Dead),
            "id:default-3f task:greet queue:emails module:hello customer.id=42",
        )
        .unwrap();
        assert_eq!(selection.status, Some(JobStatus::Dead));
        assert_eq!(selection.id.as_deref(), Some("default-3f"));
        assert_eq!(selection.task.as_deref(), Some("greet"));
        assert_eq!(selection.queue.as_deref(), Some("emails"));
        assert_eq!(selection.module.as_deref(), Some("hello"));
        assert_eq!(selection.input.as_deref(), Some("customer.id=42"));
        assert_eq!(
            search(None, "input.a.b=x:y").unwrap().input.as_deref(),
            Some("a.b=x:y")
        );
        assert!(search(None, "").unwrap().task.is_none());
        let dated = search(None, "since:2026-12-03T10:00:00Z before:2026-12-04").unwrap();
        assert_eq!(dated.created_after, Some(1_796_292_000_000));
        assert_eq!(dated.created_until, Some(1_796_342_400_000));
        let recent = search(None, "since:90m").unwrap().created_after.unwrap();
        let now = unix_millis(std::time::SystemTime::now());
        assert!((now - 90 * 60_000 - 1000..=now - 90 * 60_000).contains(&recent));
    }

    #[test]
    fn a_search_that_cannot_be_read_says_why() {
        assert!(
            search(None, "greet")
                .unwrap_err()
                .contains("`greet` is not a search term")
        );
        assert!(search(None, "task:a task:b").unwrap_err().contains("twice"));
        assert!(
            search(None, "since:1h since:2h")
                .unwrap_err()
                .contains("twice")
        );
        assert!(
            search(None, "since:yesterday")
                .unwrap_err()
                .contains("a time ago (`90m`, `2d`) or a UTC date")
        );
        assert!(
            search(None, &"x".repeat(600))
                .unwrap_err()
                .contains("at most 512 bytes")
        );
    }
}
