//! `/v1/modules`: upload, list, show and delete task modules, and set their settings.
#![allow(
    unused_qualifications,
    reason = "utoipa's `path` macro qualifies the `IntoParams` types it is given"
)]

use axum::extract::State;
use axum::extract::multipart::{Multipart, MultipartError, MultipartRejection};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::error::{Json, Path, Query};
use crate::api::{ApiError, AppState, Caller};
use taskbox_core::auth::Role;
use taskbox_core::model::manifest::{MANIFEST_FILE, Manifest};
use taskbox_core::model::module::ModuleSettings;
use taskbox_core::model::module::ModuleVersion;
use taskbox_core::registry::ModuleSummary;

/// The parts of an upload.
#[derive(Debug, ToSchema)]
#[allow(
    dead_code,
    reason = "describes the multipart form in the OpenAPI document only"
)]
pub(crate) struct UploadForm {
    /// The manifest, `taskbox.toml`, as text.
    manifest: String,
    /// The component (`.wasm`).
    #[schema(format = Binary, value_type = String)]
    component: Vec<u8>,
}

/// Upload a module: its manifest and component, as `multipart/form-data` parts named
/// `manifest` and `component`.
#[utoipa::path(post, path = "/v1/modules", tag = "modules",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "published", body = ModuleVersion),
        (status = 200, description = "this version with these bytes existed already", body = ModuleVersion),
        (status = 400, description = "bad manifest or module", body = crate::api::error::ErrorBody),
        (status = 403, description = "the manifest asks for more than policy allows", body = crate::api::error::ErrorBody),
        (status = 409, description = "the version exists with other bytes", body = crate::api::error::ErrorBody),
        (status = 413, description = "too large", body = crate::api::error::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(crate) async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<ModuleVersion>), ApiError> {
    let mut multipart = multipart.map_err(|rejection| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "upload the module as multipart/form-data with parts `manifest` and `component` ({})",
                rejection.body_text()
            ),
        )
    })?;
    let mut manifest = None;
    let mut component = None;
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("manifest") => {
                let text = field.text().await.map_err(multipart_error)?;
                manifest = Some(text);
            }
            Some("component") => {
                let bytes = field.bytes().await.map_err(multipart_error)?;
                component = Some(bytes.to_vec());
            }
            other => {
                return Err(ApiError::bad_request(
                    "invalid_body",
                    format!("unexpected part {other:?}: the parts are `manifest` and `component`"),
                ));
            }
        }
    }
    let manifest = manifest
        .ok_or_else(|| ApiError::bad_request("invalid_body", "the `manifest` part is missing"))?;
    let component = component
        .ok_or_else(|| ApiError::bad_request("invalid_body", "the `component` part is missing"))?;
    let manifest = Manifest::parse(MANIFEST_FILE, &manifest)
        .map_err(|err| ApiError::bad_request("invalid_manifest", err.to_string()))?;
    let published = state
        .registry
        .publish(&caller.tenant, manifest, component)
        .await?;
    // The registry keeps versions; the module's cron schedules follow its highest one.
    if published.created {
        state
            .schedules
            .sync_module(&caller.tenant, &published.module.name)
            .await?;
    }
    let status = match published.created {
        true => StatusCode::CREATED,
        false => StatusCode::OK,
    };
    Ok((status, Json(published.module)))
}

fn multipart_error(err: MultipartError) -> ApiError {
    match err.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::too_large(
            "module_too_large",
            "the upload is larger than this host accepts",
        ),
        _ => ApiError::bad_request("invalid_body", err.body_text()),
    }
}

/// The modules of a tenant.
// Deserialize too: the CLI reads it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ModuleList {
    pub(crate) modules: Vec<ModuleSummary>,
}

/// List the caller's modules.
#[utoipa::path(get, path = "/v1/modules", tag = "modules",
    responses((status = 200, body = ModuleList)),
    security(("bearer" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ModuleList>, ApiError> {
    let modules = state.registry.list(&caller.tenant).await?;
    Ok(Json(ModuleList { modules }))
}

/// A module with all its versions.
// Deserialize too: the CLI reads it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ModuleDetail {
    pub(crate) name: String,
    /// Highest first.
    pub(crate) versions: Vec<ModuleVersion>,
}

/// Show a module: every version, highest first.
#[utoipa::path(get, path = "/v1/modules/{name}", tag = "modules",
    params(("name" = String, Path, description = "the module's name")),
    responses((status = 200, body = ModuleDetail), (status = 404, body = crate::api::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<ModuleDetail>, ApiError> {
    let versions = state.registry.versions(&caller.tenant, &name).await?;
    if versions.is_empty() {
        return Err(ApiError::not_found(format!(
            "there is no module named `{name}`"
        )));
    }
    Ok(Json(ModuleDetail { name, versions }))
}

/// Options of a delete.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteOptions {
    /// Delete even while jobs for the version are queued (they will fail).
    #[serde(default)]
    force: bool,
}

/// Delete one version of a module; refused while jobs for it are queued, unless forced.
#[utoipa::path(delete, path = "/v1/modules/{name}/{version}", tag = "modules",
    params(
        ("name" = String, Path, description = "the module's name"),
        ("version" = String, Path, description = "the version"),
        DeleteOptions,
    ),
    responses(
        (status = 204, description = "deleted"),
        (status = 404, body = crate::api::error::ErrorBody),
        (status = 409, description = "jobs are queued for it", body = crate::api::error::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, version)): Path<(String, String)>,
    Query(options): Query<DeleteOptions>,
) -> Result<StatusCode, ApiError> {
    state
        .registry
        .delete(&caller.tenant, &name, &version, options.force)
        .await?;
    state.schedules.sync_module(&caller.tenant, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A module's settings as the API shows them: plain values, and the names of the secrets
/// (their values are never shown).
// Deserialize too: the CLI reads it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct SettingsView {
    /// Plain values by key.
    pub(crate) config: std::collections::BTreeMap<String, String>,
    /// The keys of the secrets.
    pub(crate) secrets: Vec<String>,
}

impl From<ModuleSettings> for SettingsView {
    fn from(settings: ModuleSettings) -> Self {
        Self {
            config: settings.config,
            secrets: settings.secrets.into_keys().collect(),
        }
    }
}

/// The most settings one module may have, and the longest key.
const MAX_SETTINGS: usize = 256;
const MAX_SETTING_KEY: usize = 128;

/// Show the settings of a module set over the API (secrets by name only). Settings from the
/// host config are not shown.
#[utoipa::path(get, path = "/v1/modules/{name}/settings", tag = "modules",
    params(("name" = String, Path, description = "the module's name")),
    responses((status = 200, body = SettingsView), (status = 404, body = crate::api::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn settings(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<SettingsView>, ApiError> {
    existing(&state, &caller, &name).await?;
    let settings = state
        .registry
        .settings(&caller.tenant, &name)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(settings.into()))
}

/// Replace the settings of a module (admin only): tasks read them with `config.get`, and
/// workers pick them up within 5 seconds. Secret values are never shown again.
#[utoipa::path(put, path = "/v1/modules/{name}/settings", tag = "modules",
    params(("name" = String, Path, description = "the module's name")),
    request_body = ModuleSettings,
    responses(
        (status = 200, body = SettingsView),
        (status = 403, body = crate::api::error::ErrorBody),
        (status = 404, body = crate::api::error::ErrorBody),
        (status = 422, body = crate::api::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn set_settings(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(settings): Json<ModuleSettings>,
) -> Result<Json<SettingsView>, ApiError> {
    if caller.role < Role::Admin {
        return Err(ApiError::forbidden(format!(
            "a {} token may not set module settings: it needs the admin role",
            caller.role
        )));
    }
    let count = settings.config.len() + settings.secrets.len();
    if count > MAX_SETTINGS {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            format!("{count} settings given, at most {MAX_SETTINGS} allowed"),
        ));
    }
    let keys = settings.config.keys().chain(settings.secrets.keys());
    if let Some(key) = keys
        .into_iter()
        .find(|key| key.is_empty() || key.len() > MAX_SETTING_KEY)
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            format!("the setting key `{key}` must have 1 to {MAX_SETTING_KEY} bytes"),
        ));
    }
    existing(&state, &caller, &name).await?;
    state
        .registry
        .set_settings(&caller.tenant, &name, &settings)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(settings.into()))
}

/// 404 unless the caller's tenant has module `name`.
async fn existing(state: &AppState, caller: &Caller, name: &str) -> Result<(), ApiError> {
    let versions = state.registry.versions(&caller.tenant, name).await?;
    if versions.is_empty() {
        return Err(ApiError::not_found(format!(
            "there is no module named `{name}`"
        )));
    }
    Ok(())
}
