//! Modules as the registry stores them: a published version, and the settings set over the
//! API for all versions of a module.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::manifest::Manifest;

/// One published version of a module.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModuleVersion {
    /// The module's name.
    pub name: String,
    /// The version.
    pub version: String,
    /// The SHA-256 of the component's bytes.
    pub digest: String,
    /// The component's size in bytes.
    pub size: u64,
    /// When it was uploaded, in ms since the Unix epoch.
    pub uploaded_at: u64,
    /// The interfaces the component imports.
    pub imports: Vec<String>,
    /// The manifest it was uploaded with.
    #[schema(value_type = Object)]
    pub manifest: Manifest,
}

/// One module's settings, which its tasks read with `config.get`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ModuleSettings {
    /// Plain values.
    pub config: BTreeMap<String, String>,
    /// Secret values: handed to the task, never logged or stored with a job.
    pub secrets: BTreeMap<String, String>,
}

impl std::fmt::Debug for ModuleSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleSettings")
            .field("config", &self.config)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}
