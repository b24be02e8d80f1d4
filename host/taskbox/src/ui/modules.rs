//! The modules pages: the tenant's modules with their versions and tasks, and one module's
//! versions with digest, size, imports, limits and the capabilities its manifest asks for,
//! and how its tasks' recent jobs went.

use std::collections::BTreeMap;

use askama::Template;
use axum::Extension;
use axum::extract::{Path, State};
use axum::response::Response;
use taskbox_core::auth::Principal;

use axum::http::StatusCode;

use axum::extract::Multipart;
use axum::extract::multipart::MultipartRejection;
use axum::http::Method;

use super::pages::{Layout, acted, api_error, error_page, render, urlencoded};
use crate::api::{self, AppState, modules};
use crate::when::{When, span};

/// The tenant's newest jobs a module's page looks at for its tasks' figures.
const RECENT_JOBS: usize = 1000;

/// A module in the list.
pub(super) struct ModuleRow {
    pub(super) name: String,
    pub(super) link: String,
    pub(super) latest: String,
    pub(super) versions: String,
    pub(super) tasks: String,
}

#[derive(Template)]
#[template(path = "modules.html")]
struct ModulesPage {
    layout: Layout,
    modules: Vec<ModuleRow>,
}

pub(super) async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Response {
    match modules::list(State(state), Extension(principal.clone())).await {
        Ok(api::Json(list)) => render(&ModulesPage {
            // Still: a reload would drop the files chosen in its upload form.
            layout: Layout::new(&principal, "modules", "/ui/modules").still(),
            modules: list
                .modules
                .into_iter()
                .map(|module| ModuleRow {
                    link: urlencoded(&module.name),
                    name: module.name,
                    latest: module.latest,
                    versions: module.versions.join(", "),
                    tasks: module.tasks.join(", "),
                })
                .collect(),
        }),
        Err(err) => api_error(err),
    }
}

/// A version of a module.
pub(super) struct VersionView {
    pub(super) version: String,
    pub(super) digest: String,
    pub(super) size: String,
    pub(super) uploaded: When,
    pub(super) tasks: String,
    pub(super) imports: String,
    pub(super) limits: String,
    pub(super) capabilities: String,
}

#[derive(Template)]
#[template(path = "module.html")]
struct ModulePage {
    layout: Layout,
    name: String,
    recent: usize,
    tasks: Vec<TaskFigures>,
    versions: Vec<VersionView>,
}

/// How one task's finished jobs went, among the tenant's newest jobs.
#[derive(Debug, Default, PartialEq)]
pub(super) struct TaskFigures {
    pub(super) task: String,
    pub(super) finished: usize,
    pub(super) completed: usize,
    pub(super) dead: usize,
    pub(super) cancelled: usize,
    /// Wall time of the last attempt, median and 95th percentile.
    pub(super) p50: String,
    pub(super) p95: String,
    /// Outbound HTTP requests the host refused, summed.
    pub(super) denied_egress: u64,
}

/// The figures of module `module`'s tasks from `jobs`: each job's module, task, status and
/// run stats (JSON), as [`taskbox_core::queue::Queue::newest_fields`] reads them.
pub(super) fn task_figures(
    module: &str,
    jobs: &[(String, Vec<Option<String>>)],
) -> Vec<TaskFigures> {
    let mut by_task: BTreeMap<&str, (TaskFigures, Vec<u64>)> = BTreeMap::new();
    for (_, fields) in jobs {
        let [Some(of), Some(task), Some(status), stats] = fields.as_slice() else {
            continue;
        };
        let finished = matches!(status.as_str(), "completed" | "dead" | "cancelled");
        if of != module || !finished {
            continue;
        }
        let (figures, walls) = by_task.entry(task).or_default();
        figures.finished += 1;
        match status.as_str() {
            "completed" => figures.completed += 1,
            "dead" => figures.dead += 1,
            _ => figures.cancelled += 1,
        }
        let stats: Option<serde_json::Value> = stats
            .as_deref()
            .and_then(|stats| serde_json::from_str(stats).ok());
        let number = |name: &str| stats.as_ref()?.get(name)?.as_u64();
        if let Some(wall) = number("wall_time_ms") {
            walls.push(wall);
        }
        figures.denied_egress += number("denied_egress").unwrap_or(0);
    }
    by_task
        .into_iter()
        .map(|(task, (figures, mut walls))| {
            walls.sort_unstable();
            let at = |share: usize| {
                walls
                    .get((walls.len() * share).div_ceil(100).saturating_sub(1))
                    .map_or_else(|| "—".to_owned(), |ms| span(*ms))
            };
            TaskFigures {
                task: task.to_owned(),
                p50: at(50),
                p95: at(95),
                ..figures
            }
        })
        .collect()
}

/// Publishes a module version from the upload form (a manifest file and a component file),
/// through the API's upload; the browser goes to the module's page.
pub(super) async fn upload(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    if let Err(err) = api::allowed(&principal, &Method::POST) {
        return api_error(err);
    }
    let uploaded = modules::upload(
        State(state.clone()),
        Extension(principal.clone()),
        multipart,
    )
    .await;
    match uploaded {
        Ok((_, api::Json(version))) => {
            let id = format!("{}@{}", version.name, version.version);
            let then = format!("/ui/modules/{}", urlencoded(&version.name));
            acted(
                &state,
                &principal,
                "module.upload",
                &[id],
                &version.digest,
                &then,
            )
            .await
        }
        Err(err) => api_error(err),
    }
}

pub(super) async fn show(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
) -> Response {
    let shown = modules::show(
        State(state.clone()),
        Extension(principal.clone()),
        api::Path(name.clone()),
    )
    .await;
    let detail = match shown {
        Ok(api::Json(detail)) => detail,
        Err(err) => return api_error(err),
    };
    let fields = ["module", "task", "status", "stats"];
    let recent = match state
        .queue
        .newest_fields(&principal.tenant, RECENT_JOBS, &fields)
        .await
    {
        Ok(recent) => recent,
        Err(err) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, &format!("{err:#}")),
    };
    let pretty = |value: serde_json::Result<serde_json::Value>| {
        value
            .and_then(|value| serde_json::to_string_pretty(&value))
            .unwrap_or_default()
    };
    render(&ModulePage {
        // Still: its figures read a thousand jobs, too many to read again at each change.
        layout: Layout::new(
            &principal,
            "modules",
            format!("/ui/modules/{}", urlencoded(&name)),
        )
        .still(),
        tasks: task_figures(&detail.name, &recent),
        recent: RECENT_JOBS,
        name: detail.name,
        versions: detail
            .versions
            .into_iter()
            .rev()
            .map(|version| VersionView {
                version: version.version,
                digest: version.digest,
                size: bytesize::ByteSize(version.size).to_string(),
                uploaded: When::at(version.uploaded_at),
                tasks: version
                    .manifest
                    .tasks
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                imports: version.imports.join(", "),
                limits: pretty(serde_json::to_value(&version.manifest.limits)),
                capabilities: pretty(serde_json::to_value(&version.manifest.capabilities)),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::{TaskFigures, task_figures};

    fn job(
        module: &str,
        task: &str,
        status: &str,
        stats: Option<&str>,
    ) -> (String, Vec<Option<String>>) {
        let fields = [Some(module), Some(task), Some(status), stats];
        (
            "id".to_owned(),
            fields.map(|field| field.map(str::to_owned)).to_vec(),
        )
    }

    #[test]
    fn a_tasks_figures_count_its_finished_jobs_and_rank_their_times() {
        let mut jobs: Vec<_> = (1..=20)
            .map(|ms| {
                let stats = format!(r#"{{"wall_time_ms":{ms},"denied_egress":1}}"#);
                job("m", "fetch", "completed", Some(&stats))
            })
            .collect();
        jobs.push(job("m", "fetch", "dead", Some(r#"{"wall_time_ms":1000}"#)));
        jobs.push(job("m", "fetch", "running", None));
        jobs.push(job(
            "other",
            "fetch",
            "completed",
            Some(r#"{"wall_time_ms":5}"#),
        ));
        jobs.push(job("m", "send", "cancelled", None));
        let figures = task_figures("m", &jobs);
        assert_eq!(
            figures,
            [
                TaskFigures {
                    task: "fetch".into(),
                    finished: 21,
                    completed: 20,
                    dead: 1,
                    cancelled: 0,
                    p50: "11 ms".into(),
                    p95: "20 ms".into(),
                    denied_egress: 20,
                },
                TaskFigures {
                    task: "send".into(),
                    finished: 1,
                    cancelled: 1,
                    p50: "—".into(),
                    p95: "—".into(),
                    ..TaskFigures::default()
                },
            ]
        );
    }
}
