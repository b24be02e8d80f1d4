//! What a job may reach: its module's manifest, within the operator's policy and host
//! config, turned into the sandbox's capability grants.

use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use taskbox_runtime::config::ConfigValues;
use taskbox_runtime::jobs::{ChildJob, ChildPriority, JobSpawner, SpawnError};
use taskbox_runtime::lru::Lru;
use taskbox_runtime::{Capabilities, JobError};

use crate::auth::DEFAULT_TENANT;
use crate::job_writes::{JobWrites, TenantBus};
use crate::model::capabilities::{
    ALL, HostCapabilities, JobScope, ModuleScope, RequestedCapabilities,
};
use crate::model::job::Priority;
use crate::model::manifest::ManifestLimits;
use crate::model::module::ModuleSettings;
use crate::queue::{EnqueueError, EnqueueOptions, NewJob, Parent, Queue};
use crate::registry::RegistryError;

/// How long a worker uses a module version's grants before it works them out again. A
/// version's manifest never changes, but the version can be deleted (its jobs then get no
/// capabilities), and one not found yet must not stay without capabilities for good.
pub const GRANTS_REFRESH: Duration = Duration::from_secs(60);

/// How many module versions' grants, and how many modules' settings, a worker keeps: enough
/// for the modules a worker runs in turn, while a flood of distinct modules evicts the least
/// recently used instead of growing the worker.
pub const MAX_CACHED_MODULES: u64 = 1024;

/// What a running job is, as far as its grants go.
#[derive(Debug, Clone)]
pub(crate) struct JobContext {
    pub(crate) id: String,
    pub(crate) tenant: String,
    pub(crate) module: String,
    pub(crate) version: String,
    /// How many jobs up its chain goes: 0 for a job enqueued from outside.
    pub(crate) depth: u32,
}

/// A module version's grants, the same for all its jobs.
struct ModuleGrants {
    capabilities: Capabilities,
    requested: RequestedCapabilities,
    limits: ManifestLimits,
}

/// What a job may reach, and the caps its manifest lowers.
#[derive(Debug)]
pub(crate) struct JobGrants {
    pub(crate) capabilities: Capabilities,
    pub(crate) limits: ManifestLimits,
}

/// Turns jobs into their grants, keeping each module version's (versions are immutable).
pub(crate) struct Grants {
    host: HostCapabilities,
    queue: Queue,
    writes: JobWrites,
    /// Grants by tenant, module and version.
    modules: ReadCache<(String, String, String), Arc<ModuleGrants>>,
    /// Settings by tenant and module.
    settings: ReadCache<(String, String), Arc<ConfigValues>>,
}

impl std::fmt::Debug for Grants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grants")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl Grants {
    /// Grants whose manifests and settings are read from `queue` and whose events and
    /// enqueues go out as `writes`.
    pub(crate) fn new(host: HostCapabilities, queue: Queue, writes: JobWrites) -> Self {
        Self {
            modules: ReadCache::new(MAX_CACHED_MODULES, GRANTS_REFRESH),
            settings: ReadCache::new(MAX_CACHED_MODULES, host.settings_refresh),
            host,
            queue,
            writes,
        }
    }

    /// The capabilities of `job`. A module whose manifest is gone, or asks for more than the
    /// policy now allows, gets none: each call it makes is denied. When the manifest cannot
    /// be read now, the job fails with an internal (retryable) error.
    pub(crate) async fn for_job(&self, job: &JobContext) -> Result<JobGrants, JobError> {
        let key = (job.tenant.clone(), job.module.clone(), job.version.clone());
        let module = match self.modules.get(&key, Instant::now()) {
            Read::Fresh(module) => module,
            Read::Stale(_) | Read::Missing => {
                let module = Arc::new(self.module_grants(job).await?);
                self.modules
                    .insert(key, Arc::clone(&module), Instant::now());
                module
            }
        };
        let mut capabilities = module.capabilities.clone();
        let spawner = || -> Arc<dyn JobSpawner> {
            Arc::new(Spawner {
                writes: self.writes.clone(),
                tenant: job.tenant.clone(),
                parent: job.id.clone(),
                depth: job.depth,
                max_depth: self.host.max_chain_depth,
                max_input: self.host.max_input,
            })
        };
        let scope = JobScope {
            requested: &module.requested,
            settings: self.settings(&job.tenant, &job.module).await?,
            spawner: &spawner,
        };
        for capability in ALL {
            if module.requested.has(*capability) {
                capability.grant_job(&self.host, &scope, &mut capabilities);
            }
        }
        Ok(JobGrants {
            capabilities,
            limits: module.limits.clone(),
        })
    }

    /// The module's settings: the host config's, overridden key by key by those set over the
    /// API, read again after `settings_refresh`. While Redis cannot be read, the last ones
    /// read serve.
    async fn settings(&self, tenant: &str, module: &str) -> Result<Arc<ConfigValues>, JobError> {
        let key = (tenant.to_owned(), module.to_owned());
        let cached = match self.settings.get(&key, Instant::now()) {
            Read::Fresh(values) => return Ok(values),
            Read::Stale(values) => Some(values),
            Read::Missing => None,
        };
        let stored =
            match crate::registry::module_settings(self.queue.store(), tenant, module).await {
                Ok(stored) => stored,
                Err(err) => {
                    return match cached {
                        Some(values) => Ok(values),
                        None => Err(JobError::Internal {
                            message: format!("reading the settings of {module}: {err:#}"),
                        }),
                    };
                }
            };
        let mut settings = self
            .host_settings(tenant, module)
            .cloned()
            .unwrap_or_default();
        settings.config.extend(stored.config);
        settings.secrets.extend(stored.secrets);
        let values = Arc::new(ConfigValues::new(settings.config, settings.secrets));
        self.settings
            .insert(key, Arc::clone(&values), Instant::now());
        Ok(values)
    }

    /// The host config's settings of `module` of `tenant`.
    fn host_settings(&self, tenant: &str, module: &str) -> Option<&ModuleSettings> {
        let modules = &self.host.modules;
        let qualified = modules.get(&format!("{tenant}/{module}"));
        match tenant {
            DEFAULT_TENANT => qualified.or_else(|| modules.get(module)),
            _ => qualified,
        }
    }

    /// The grants of the job's module version.
    async fn module_grants(&self, job: &JobContext) -> Result<ModuleGrants, JobError> {
        let none = ModuleGrants {
            capabilities: Capabilities::default(),
            requested: RequestedCapabilities::default(),
            limits: ManifestLimits::default(),
        };
        let manifest = match crate::registry::resolve(
            self.queue.store(),
            &job.tenant,
            &job.module,
            Some(&job.version),
        )
        .await
        {
            Ok(module) => module.manifest,
            Err(RegistryError::NotFound(reason)) => {
                tracing::warn!(job = %job.id, module = %job.module, "no manifest, so no capabilities: {reason}");
                return Ok(none);
            }
            Err(err) => {
                return Err(JobError::Internal {
                    message: format!("reading the manifest of {}: {err:#}", job.module),
                });
            }
        };
        if let Err(violation) = self.host.policy.check(&manifest) {
            tracing::warn!(job = %job.id, module = %job.module, "the manifest exceeds the policy, so no capabilities: {violation}");
            return Ok(none);
        }
        let scope = ModuleScope {
            tenant: &job.tenant,
            module: &manifest.name,
            requested: &manifest.capabilities,
            bus: Arc::new(TenantBus::new(self.writes.clone(), &job.tenant)),
        };
        let mut capabilities = Capabilities::default();
        for capability in ALL {
            if manifest.capabilities.has(*capability) {
                capability.grant_module(&self.host, &scope, &mut capabilities);
            }
        }
        Ok(ModuleGrants {
            capabilities,
            requested: manifest.capabilities,
            limits: manifest.limits,
        })
    }
}

/// Values read from Redis, each used for `ttl` after it was read; at most `capacity` of them,
/// the least recently used dropped first.
struct ReadCache<K, V> {
    ttl: Duration,
    entries: Mutex<Lru<K, (Instant, V)>>,
}

/// What a [`ReadCache`] has of a key.
#[derive(Debug, PartialEq)]
enum Read<V> {
    /// Read within the time it may be used.
    Fresh(V),
    /// Read longer ago: read it again, but it may serve while Redis cannot be read.
    Stale(V),
    Missing,
}

impl<K: Eq + Hash + Clone, V: Clone> ReadCache<K, V> {
    fn new(capacity: u64, ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(Lru::new(capacity)),
        }
    }

    fn get(&self, key: &K, now: Instant) -> Read<V> {
        match self.entries().get(key) {
            Some((read_at, value)) if now.saturating_duration_since(read_at) < self.ttl => {
                Read::Fresh(value)
            }
            Some((_, value)) => Read::Stale(value),
            None => Read::Missing,
        }
    }

    fn insert(&self, key: K, value: V, read_at: Instant) {
        self.entries().insert(key, (read_at, value), 1);
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Lru<K, (Instant, V)>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Enqueues the children of one job.
#[derive(Debug)]
struct Spawner {
    writes: JobWrites,
    tenant: String,
    parent: String,
    depth: u32,
    max_depth: u32,
    max_input: usize,
}

impl JobSpawner for Spawner {
    fn enqueue(
        &self,
        child: ChildJob,
    ) -> Pin<Box<dyn Future<Output = Result<String, SpawnError>> + Send + '_>> {
        Box::pin(async move {
            if self.depth >= self.max_depth {
                return Err(SpawnError::Limit(format!(
                    "this job is {} jobs deep in its chain, the deepest a job may enqueue from",
                    self.depth
                )));
            }
            let job = NewJob {
                module: child.module,
                task: child.task,
                input: child.input,
                options: EnqueueOptions {
                    queue: child.queue,
                    priority: child.priority.map(|priority| match priority {
                        ChildPriority::High => Priority::High,
                        ChildPriority::Normal => Priority::Normal,
                        ChildPriority::Low => Priority::Low,
                    }),
                    delay: child.delay,
                    max_retries: child.max_retries,
                    idempotency_key: child.idempotency_key,
                    trace: child.traceparent,
                    parent: Some(Parent {
                        id: self.parent.clone(),
                        depth: self.depth + 1,
                    }),
                    ..EnqueueOptions::default()
                },
            };
            // The same checks as the API's: a task is one more client of the queue.
            job.check(self.max_input)
                .map_err(|err| SpawnError::Invalid(err.to_string()))?;
            match self.writes.enqueue(&self.tenant, job).await {
                Ok(enqueued) => Ok(enqueued.id),
                Err(EnqueueError::Redis(err)) => Err(SpawnError::Unavailable(format!("{err:#}"))),
                Err(err) => Err(SpawnError::Invalid(err.to_string())),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_value_serves_for_its_ttl_then_is_stale() {
        let cache = ReadCache::new(10, Duration::from_secs(5));
        let read_at = Instant::now();
        cache.insert("m", 1, read_at);
        let later = |secs: f64| read_at + Duration::from_secs_f64(secs);
        assert_eq!(cache.get(&"m", later(4.9)), Read::Fresh(1));
        assert_eq!(cache.get(&"m", later(5.0)), Read::Stale(1));
        cache.insert("m", 2, later(5.0));
        assert_eq!(cache.get(&"m", later(9.9)), Read::Fresh(2));
        assert_eq!(cache.get(&"other", later(0.0)), Read::Missing);
    }

    #[test]
    fn a_flood_of_modules_keeps_only_the_most_recently_used() {
        let cache = ReadCache::new(3, Duration::from_secs(60));
        let now = Instant::now();
        for module in 0..3 {
            cache.insert(module, module, now);
        }
        // Module 0 keeps running; 1000 others come and go.
        for module in 3..1003 {
            assert_eq!(cache.get(&0, now), Read::Fresh(0));
            cache.insert(module, module, now);
        }
        assert_eq!(cache.entries().len(), 3);
        assert_eq!(cache.get(&0, now), Read::Fresh(0));
        assert_eq!(cache.get(&1002, now), Read::Fresh(1002));
        assert_eq!(cache.get(&1, now), Read::Missing);
    }
}
