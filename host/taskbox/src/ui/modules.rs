//! The modules pages: the tenant's modules with their versions and tasks, and one module's
//! versions with digest, size, imports, limits and the capabilities its manifest asks for.

use askama::Template;
use axum::Extension;
use axum::extract::{Path, State};
use axum::response::Response;
use taskbox_core::auth::Principal;

use super::pages::{Layout, api_error, render, urlencoded};
use crate::api::{self, AppState, modules};
use crate::when::When;

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
            layout: Layout::new(&principal, "modules", "/ui/modules"),
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
    versions: Vec<VersionView>,
}

pub(super) async fn show(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
) -> Response {
    let shown = modules::show(
        State(state),
        Extension(principal.clone()),
        api::Path(name.clone()),
    )
    .await;
    let detail = match shown {
        Ok(api::Json(detail)) => detail,
        Err(err) => return api_error(err),
    };
    let pretty = |value: serde_json::Result<serde_json::Value>| {
        value
            .and_then(|value| serde_json::to_string_pretty(&value))
            .unwrap_or_default()
    };
    render(&ModulePage {
        layout: Layout::new(
            &principal,
            "modules",
            format!("/ui/modules/{}", urlencoded(&name)),
        ),
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
