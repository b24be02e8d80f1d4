//! The host's side of each capability a guest may reach beyond its sandbox, one file each:
//! the manifest field that asks for it, the operator's settings of it, its checks when a
//! manifest is read and against the operator's policy, which imports need it, and the grant
//! a job gets. The sandbox's side of each is `taskbox_runtime::capabilities`.
//!
//! A new capability is a file here implementing [`HostCapability`] and its entry in [`ALL`];
//! with its WIT and its runtime capability, that is all. (Operator settings, if it has any,
//! are a section of the host config and a field of [`HostCapabilities`].)

pub mod config;
pub mod events;
pub mod http;
pub mod jobs;
pub mod sql;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use taskbox_runtime::Capabilities;
use taskbox_runtime::config::ConfigValues;
use taskbox_runtime::events::{EventBus, EventGrant};
use taskbox_runtime::guest_text::quote;
use taskbox_runtime::http::HttpLimits;
use taskbox_runtime::jobs::{JobGrant, JobSpawner};
use taskbox_runtime::sql::SqlDatabases;

use crate::model::job::DEFAULT_MAX_INPUT;
use crate::model::manifest::Policy;
use crate::model::module::ModuleSettings;
use crate::model::names::is_plain_name;

/// The host's side of one capability.
pub trait HostCapability: Sync {
    /// The field of the manifest's `[capabilities]` that asks for it; `None` when every
    /// module has it without asking.
    fn field(&self) -> Option<&'static str>;

    /// Whether a component that imports `interface` (`wasi:http/outgoing-handler`, without
    /// the version) uses it.
    fn imported_by(&self, interface: &str) -> bool;

    /// Checks what a manifest asks of it, as the manifest is read.
    fn check_request(&self, _request: &[String]) -> Result<(), String> {
        Ok(())
    }

    /// Checks what a manifest asks of it against the operator's policy.
    fn check_policy(&self, _request: &[String], _policy: &Policy) -> Result<(), String> {
        Ok(())
    }

    /// Adds its grant to every job of a module version (worked out once per version).
    fn grant_module(
        &self,
        _host: &HostCapabilities,
        _module: &ModuleScope<'_>,
        _grants: &mut Capabilities,
    ) {
    }

    /// Adds its grant to one job, on top of its module version's.
    fn grant_job(&self, _host: &HostCapabilities, _job: &JobScope<'_>, _grants: &mut Capabilities) {
    }
}

/// Every capability, in one list.
pub static ALL: &[&dyn HostCapability] = &[
    &http::Http,
    &sql::Sql,
    &events::Events,
    &jobs::Jobs,
    &config::Config,
];

/// The capabilities a module asks for: entries by the field of each capability
/// (`allowed_outbound_hosts = ["https://api.example.com"]`). A field no capability has is
/// refused when the manifest is read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestedCapabilities(BTreeMap<String, Vec<String>>);

impl RequestedCapabilities {
    /// What the manifest asks of `capability` (empty: nothing).
    pub fn of(&self, capability: &dyn HostCapability) -> &[String] {
        capability
            .field()
            .and_then(|field| self.0.get(field))
            .map_or(&[], Vec::as_slice)
    }

    /// Whether the manifest asks for `capability`, or needs not.
    pub fn has(&self, capability: &dyn HostCapability) -> bool {
        capability.field().is_none() || !self.of(capability).is_empty()
    }

    /// Asks `entries` of the capability with manifest field `field`.
    pub fn insert(&mut self, field: &str, entries: Vec<String>) {
        self.0.insert(field.to_owned(), entries);
    }

    /// Checks every field as the manifest is read: a known one, with entries its
    /// capability accepts. The error is the field (`capabilities.sql`) and why.
    pub fn check(&self) -> Result<(), (String, String)> {
        for (field, entries) in &self.0 {
            let name = || format!("capabilities.{field}");
            let Some(capability) = ALL.iter().find(|c| c.field() == Some(field.as_str())) else {
                // The field is the uploader's: only a plain name is put in the path, and the
                // message quotes it capped, like a value.
                let known: Vec<&str> = ALL.iter().filter_map(|c| c.field()).collect();
                let path = match is_plain_name(field) {
                    true => name(),
                    false => "capabilities".to_owned(),
                };
                return Err((
                    path,
                    format!(
                        "no such capability as {} (there are: {})",
                        quote(field),
                        known.join(", ")
                    ),
                ));
            };
            capability
                .check_request(entries)
                .map_err(|message| (name(), message))?;
        }
        Ok(())
    }

    /// Checks every field against the operator's policy.
    pub fn check_policy(&self, policy: &Policy) -> Result<(), (String, String)> {
        for capability in ALL {
            if let Some(field) = capability.field() {
                capability
                    .check_policy(self.of(*capability), policy)
                    .map_err(|message| (format!("capabilities.{field}"), message))?;
            }
        }
        Ok(())
    }

    /// The field a component importing `import` (`taskbox:task/sql@0.1.0`) needs, when the
    /// manifest does not ask for it.
    pub fn missing_for(&self, import: &str) -> Option<&'static str> {
        let interface = import.split('@').next().unwrap_or(import);
        let capability = ALL.iter().find(|c| c.imported_by(interface))?;
        (!self.has(*capability))
            .then(|| capability.field())
            .flatten()
    }
}

/// The operator's side of every capability: what the host offers modules.
#[derive(Debug, Clone)]
pub struct HostCapabilities {
    /// The cap on manifests, checked again when a job runs (the policy may have tightened
    /// since the upload).
    pub policy: Policy,
    /// What each job's outbound HTTP may do.
    pub http: HttpLimits,
    /// The databases offered; none offers no SQL.
    pub sql: Option<Arc<SqlDatabases>>,
    /// The largest event a task may publish, in bytes.
    pub max_event_bytes: usize,
    /// How many jobs one job may enqueue.
    pub max_enqueues: u32,
    /// The largest input of a job a job enqueues, in bytes (the API's cap).
    pub max_input: usize,
    /// How deep a chain of jobs enqueueing jobs may grow.
    pub max_chain_depth: u32,
    /// Settings by module: `tenant/name`, or `name` for the default tenant.
    pub modules: BTreeMap<String, ModuleSettings>,
    /// How long a module's settings are used before they are read again, so that settings
    /// changed over the API reach jobs within this.
    pub settings_refresh: Duration,
}

impl Default for HostCapabilities {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            http: HttpLimits::default(),
            sql: None,
            max_event_bytes: EventGrant::DEFAULT_MAX_EVENT_BYTES,
            max_enqueues: JobGrant::DEFAULT_MAX_ENQUEUES,
            max_input: DEFAULT_MAX_INPUT,
            max_chain_depth: jobs::DEFAULT_MAX_CHAIN_DEPTH,
            modules: BTreeMap::new(),
            settings_refresh: config::SETTINGS_REFRESH,
        }
    }
}

/// A module version, as the grants of all its jobs see it.
#[derive(Debug)]
pub struct ModuleScope<'a> {
    /// Its tenant.
    pub tenant: &'a str,
    /// Its name.
    pub module: &'a str,
    /// What its manifest asks for.
    pub requested: &'a RequestedCapabilities,
    /// Where its events go.
    pub bus: Arc<dyn EventBus>,
}

/// One job, as its own grants see it.
pub struct JobScope<'a> {
    /// What its module's manifest asks for.
    pub requested: &'a RequestedCapabilities,
    /// Its module's settings, as they were when it started.
    pub settings: Arc<ConfigValues>,
    /// Makes what its enqueues go through, when it may enqueue.
    pub spawner: &'a dyn Fn() -> Arc<dyn JobSpawner>,
}

impl std::fmt::Debug for JobScope<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobScope")
            .field("requested", self.requested)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requested(toml: &str) -> RequestedCapabilities {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn each_capability_has_its_own_field_and_interface() {
        let fields: Vec<_> = ALL.iter().filter_map(|c| c.field()).collect();
        let mut unique = fields.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), fields.len(), "{fields:?}");
        for interface in [
            "wasi:http/outgoing-handler",
            "taskbox:task/sql",
            "taskbox:task/events",
            "taskbox:task/jobs",
            "taskbox:task/config",
        ] {
            let users = ALL.iter().filter(|c| c.imported_by(interface)).count();
            assert_eq!(users, 1, "{interface}");
        }
    }

    #[test]
    fn an_unknown_field_is_refused_naming_the_known_ones() {
        let (field, message) = requested("sql = [\"self\"]\nkv = [\"x\"]\n")
            .check()
            .unwrap_err();
        assert_eq!(field, "capabilities.kv");
        assert!(message.contains("allowed_outbound_hosts, sql"), "{message}");
    }

    #[test]
    fn an_import_needs_the_field_of_its_capability() {
        let asked = requested("sql = [\"self\"]\n");
        assert_eq!(asked.missing_for("taskbox:task/sql@0.1.0"), None);
        assert_eq!(
            asked.missing_for("taskbox:task/jobs@0.1.0"),
            Some("enqueue")
        );
        assert_eq!(
            asked.missing_for("wasi:http/outgoing-handler@0.2.12"),
            Some("allowed_outbound_hosts")
        );
        // Every module has its settings; other imports are no capability's.
        assert_eq!(asked.missing_for("taskbox:task/config@0.1.0"), None);
        assert_eq!(
            asked.missing_for("wasi:clocks/monotonic-clock@0.2.12"),
            None
        );
    }

    #[test]
    fn a_request_is_stored_as_the_manifest_wrote_it() {
        let asked = requested("enqueue = [\"report/*\"]\nevent_channels = [\"upload:*\"]\n");
        let json = serde_json::to_value(&asked).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"enqueue": ["report/*"], "event_channels": ["upload:*"]})
        );
        assert_eq!(asked.of(&jobs::Jobs), ["report/*"]);
        assert!(asked.has(&config::Config) && !asked.has(&sql::Sql));
    }
}
