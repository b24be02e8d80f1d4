//! The operator's host configuration (`--config FILE`, TOML): what modules may ask for and
//! what the API accepts. Every field has a default, and unknown fields are errors.
//!
//! ```toml
//! [policy]
//! max_memory = "256MiB"
//! allowed_outbound_hosts = ["https://*.example.com"]
//!
//! [api]
//! max_input = "512KiB"
//! enqueue_rate = 200
//!
//! [jobs]
//! max_chain_depth = 5
//!
//! [modules.webhook]   # module `webhook` of the default tenant; "acme/webhook" for tenant acme
//! config = { endpoint = "https://hooks.example.com/in" }
//! secrets = { token = "s3cr3t" }
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;

use taskbox_runtime::sql::SqlDatabases;
use taskbox_runtime::{DEFAULT_MODULE_CACHE_BYTES, Limits};

use taskbox_core::model::capabilities::HostCapabilities;
use taskbox_core::model::capabilities::events::EventSettings;
use taskbox_core::model::capabilities::http::HttpSettings;
use taskbox_core::model::capabilities::jobs::JobSettings;
use taskbox_core::model::capabilities::sql::SqlSettings;
use taskbox_core::model::manifest::{Policy, duration, size};
use taskbox_core::model::module::ModuleSettings;
use taskbox_core::model::names::validate_name;
use taskbox_core::queue::{HistorySettings, Queue};
use taskbox_core::registry::{DEFAULT_COMPILE_TIMEOUT, DEFAULT_MAX_MODULE_SIZE, RegistryConfig};

/// The whole host configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// The cap on what manifests may ask for.
    pub policy: Policy,
    /// Module uploads.
    pub registry: RegistrySettings,
    /// API limits.
    pub api: ApiSettings,
    /// Outbound HTTP of tasks.
    pub http: HttpSettings,
    /// The databases tasks may use.
    pub sql: SqlSettings,
    /// Events tasks publish.
    pub events: EventSettings,
    /// Jobs tasks enqueue.
    pub jobs: JobSettings,
    /// What the host keeps of what each job hands it.
    pub limits: LimitSettings,
    /// The sandbox engine of each process.
    pub runtime: RuntimeSettings,
    /// Settings of modules, by `name` (default tenant) or `tenant/name`.
    pub modules: BTreeMap<String, ModuleSettings>,
    /// Settings of queues, by name.
    pub queues: BTreeMap<String, QueueConfig>,
    /// What is kept of finished jobs.
    pub history: HistoryConfig,
}

/// What is kept of finished jobs (`[history]`): their records (attempts, outcomes, fuel,
/// times) outlive their input, result and log.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// How long a finished job's input, result and log are kept (`"24h"`).
    #[serde(with = "duration")]
    pub results: Duration,
    /// How long a finished job's record is kept (`"7d"`).
    #[serde(with = "duration")]
    pub retention: Duration,
    /// The most records a queue keeps; past it the oldest go first.
    pub max_per_queue: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        let defaults = HistorySettings::default();
        Self {
            results: defaults.results,
            retention: defaults.retention,
            max_per_queue: defaults.max_per_queue,
        }
    }
}

/// A queue's settings in the host config (`[queues.NAME]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Its partitions (1 to 64): each is a hash tag of its own, so on a Redis Cluster the
    /// queue spreads over up to this many nodes.
    pub partitions: u32,
}

/// What the host keeps of what each job hands it. A guest's text past these is cut at a
/// character boundary, with a marker saying how many bytes were dropped.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// The most of a task error's message kept, in the job record and the dead letters
    /// (`"16KiB"`).
    #[serde(with = "size")]
    pub max_error_size: u64,
    /// The most of a progress report's message kept (`"1KiB"`).
    #[serde(with = "size")]
    pub max_progress_message: u64,
    /// The most heap the host may hold on one job's behalf at once (`"64MiB"`); past it the
    /// job ends with `host_memory_limit`.
    #[serde(with = "size")]
    pub host_memory: u64,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            max_error_size: Limits::DEFAULT_ERROR_BYTES as u64,
            max_progress_message: Limits::DEFAULT_PROGRESS_BYTES as u64,
            host_memory: Limits::DEFAULT_HOST_MEMORY,
        }
    }
}

/// The sandbox engine of each process (worker or API).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSettings {
    /// The most compiled code of loaded modules a process keeps (`"512MiB"`); past it the
    /// least recently used modules are dropped and loaded again when next needed.
    #[serde(with = "size")]
    pub module_cache_size: u64,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self {
            module_cache_size: DEFAULT_MODULE_CACHE_BYTES,
        }
    }
}

/// How uploads are checked.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrySettings {
    /// The largest component accepted (`"64MiB"`).
    #[serde(with = "size")]
    pub max_module_size: u64,
    /// Compiles at once.
    pub max_concurrent_compiles: usize,
    /// How long one compile may take (`"2m"`).
    #[serde(with = "duration")]
    pub compile_timeout: Duration,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            max_module_size: DEFAULT_MAX_MODULE_SIZE,
            max_concurrent_compiles: 2,
            compile_timeout: DEFAULT_COMPILE_TIMEOUT,
        }
    }
}

/// What the API accepts.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    /// The largest request body other than module uploads.
    #[serde(with = "size")]
    pub max_body: u64,
    /// The largest job input, enqueued over the API or by a task.
    #[serde(with = "size")]
    pub max_input: u64,
    /// Jobs each token may enqueue per second, on average.
    pub enqueue_rate: f64,
    /// Jobs each token may enqueue at once, above the rate.
    pub enqueue_burst: f64,
    /// Event streams (SSE) each API process serves at once.
    pub max_event_streams: usize,
    /// Event streams (SSE) each API process serves one tenant at once.
    pub max_event_streams_per_tenant: usize,
}

impl Default for ApiSettings {
    fn default() -> Self {
        let api = crate::api::ApiConfig::default();
        Self {
            max_body: api.max_body as u64,
            max_input: api.max_input as u64,
            enqueue_rate: api.enqueue_rate,
            enqueue_burst: api.enqueue_burst,
            max_event_streams: api.max_event_streams,
            max_event_streams_per_tenant: api.max_event_streams_per_tenant,
        }
    }
}

impl HostConfig {
    /// Reads `path`; errors name the file, line and field.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the host config {}", path.display()))?;
        toml::from_str(&text).map_err(|err| {
            let line = err
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            anyhow::anyhow!(
                "{}{}: {}",
                path.display(),
                line.map(|line| format!(":{line}")).unwrap_or_default(),
                err.message().trim_end()
            )
        })
    }

    /// `queue` as the config sets it up: each queue of `[queues]` with its partitions, and
    /// finished jobs kept as `[history]` says. A queue never loses partitions: one given more
    /// over the API keeps them, with a warning.
    pub async fn configure_queue(&self, queue: Queue) -> anyhow::Result<Queue> {
        for (name, settings) in &self.queues {
            validate_name("queue", name).context("the host config's [queues]")?;
            let current = queue.partitions(name).await?;
            if settings.partitions < current {
                tracing::warn!(
                    "queue {name} has {current} partitions, more than the {} of the host \
                     config; it keeps {current} (a queue's partitions only grow)",
                    settings.partitions
                );
                continue;
            }
            queue
                .set_partitions(name, settings.partitions)
                .await
                .with_context(|| format!("the host config's [queues.{name}]"))?;
        }
        Ok(queue.with_history(HistorySettings {
            results: self.history.results,
            retention: self.history.retention,
            max_per_queue: self.history.max_per_queue,
        }))
    }

    /// The policy, with the databases the host offers.
    pub fn policy(&self) -> Policy {
        Policy {
            sql_databases: self.sql.databases.keys().cloned().collect(),
            job_caps: self.job_limits(),
            ..self.policy.clone()
        }
    }

    /// What workers offer the modules' capabilities; opens the SQL databases (PostgreSQL
    /// connections are made when first used).
    pub fn capabilities(&self) -> anyhow::Result<HostCapabilities> {
        let sql = SqlDatabases::new(self.sql.config())
            .map_err(|err| anyhow::anyhow!("the host config's [sql]: {err}"))?;
        Ok(HostCapabilities {
            policy: self.policy(),
            sql: Some(Arc::new(sql)),
            http: self.http.limits(),
            max_event_bytes: usize::try_from(self.events.max_event_size).unwrap_or(usize::MAX),
            max_enqueues: self.jobs.max_enqueues,
            max_input: usize::try_from(self.api.max_input).unwrap_or(usize::MAX),
            max_chain_depth: self.jobs.max_chain_depth,
            modules: self.modules.clone(),
            ..HostCapabilities::default()
        })
    }

    /// The limits every job of a worker runs with, before its module's own timeout, fuel
    /// and memory.
    pub fn job_limits(&self) -> Limits {
        Limits {
            error_bytes: usize::try_from(self.limits.max_error_size).unwrap_or(usize::MAX),
            progress_bytes: usize::try_from(self.limits.max_progress_message).unwrap_or(usize::MAX),
            host_memory: self.limits.host_memory,
            ..Limits::default()
        }
    }

    /// The registry's part.
    pub fn registry(&self) -> RegistryConfig {
        RegistryConfig {
            policy: self.policy(),
            max_module_size: self.registry.max_module_size,
            max_concurrent_compiles: self.registry.max_concurrent_compiles,
            compile_timeout: self.registry.compile_timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caps_on_what_jobs_hand_the_host_are_read_from_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let config: HostConfig = toml::from_str(&format!(
            "[limits]\nmax_error_size = \"4KiB\"\nmax_progress_message = \"100B\"\n\
             host_memory = \"32MiB\"\n\
             [sql]\nmax_self_size = \"1MiB\"\nself_dir = {:?}\n[api]\nmax_input = \"2KiB\"\n\
             [runtime]\nmodule_cache_size = \"64MiB\"\n",
            dir.path()
        ))
        .unwrap();
        let limits = config.job_limits();
        assert_eq!((limits.error_bytes, limits.progress_bytes), (4096, 100));
        assert_eq!(limits.host_memory, 32 << 20);
        assert_eq!(config.sql.config().max_self_bytes, 1 << 20);
        assert_eq!(config.capabilities().unwrap().max_input, 2048);
        assert_eq!(config.runtime.module_cache_size, 64 << 20);
        let defaults = HostConfig::default().job_limits();
        assert_eq!(
            (defaults.error_bytes, defaults.progress_bytes),
            (16 << 10, 1 << 10)
        );
    }
}
