//! The module registry: uploads checked before they are accepted, versions, and the bytes
//! every worker fetches.
//!
//! A module is content-addressed by the SHA-256 of its bytes and published under a tenant as
//! `name@version`. A version is immutable: uploading it again with other bytes is refused.
//! `name` alone means the highest version. The bytes live in Redis so that every worker finds
//! them; each worker keeps its own precompiled cache.
//!
//! Keys (under the queue prefix): `t:{tenant}:modules` (the set of module names),
//! `t:{tenant}:module:{name}` (a hash of version → [`ModuleVersion`] as JSON),
//! `module:{digest}` (the bytes) and `module-refs:{digest}` (the versions that use them, so
//! the bytes go with the last one).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use futures_util::future::BoxFuture;
use redis::AsyncCommands as _;
use serde::{Deserialize, Serialize};
use taskbox_runtime::{Abi, JobError, ModuleDigest, Runtime, componentize_command, is_core_module};
use tokio::sync::Semaphore;

use crate::model::manifest::{Manifest, ManifestError, Policy, PolicyViolation};
use crate::model::module::{ModuleSettings, ModuleVersion};
use crate::model::names::is_plain_name;
use crate::model::unix_millis;
use crate::queue::{EnqueueError, ModuleSource, Queue};
use crate::store::Store;
use crate::store::keys::{self, TenantKeys};

/// The largest module accepted by default: Python components are about 18 MB.
pub const DEFAULT_MAX_MODULE_SIZE: u64 = 64 << 20;
/// How long a module may take to compile by default.
pub const DEFAULT_COMPILE_TIMEOUT: Duration = Duration::from_secs(120);

/// Why the registry refused a request. Each names what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The component is bigger than the host accepts.
    #[error("the component is {size} bytes, more than the {max} bytes this host accepts")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The cap.
        max: u64,
    },
    /// The manifest does not parse or breaks a rule.
    #[error("{0}")]
    Manifest(#[from] ManifestError),
    /// The manifest asks for more than the operator allows.
    #[error("{0}")]
    Policy(#[from] PolicyViolation),
    /// Not a component, or a component that cannot run here.
    #[error("invalid module: {0}")]
    Invalid(String),
    /// The component imports something the host does not provide.
    #[error(
        "the component imports `{import}`, which this host does not provide (tasks may use \
         taskbox:task and wasi:http, wasi:io, wasi:clocks, wasi:random and wasi:cli; \
         commands wasi:filesystem too, with no directory; nothing may use wasi:sockets)"
    )]
    UnknownImport {
        /// The import.
        import: String,
    },
    /// The component imports a capability its manifest does not ask for.
    #[error(
        "the component imports `{import}` but its manifest does not grant it: add \
         `capabilities.{field}`"
    )]
    NotGranted {
        /// The import.
        import: String,
        /// The manifest field that would grant it.
        field: &'static str,
    },
    /// The component is not of the ABI its manifest names.
    #[error("{0}")]
    AbiMismatch(&'static str),
    /// Compiling took longer than the host allows.
    #[error("compiling the component took longer than {0:?}")]
    CompileTimeout(Duration),
    /// This version exists with other bytes.
    #[error(
        "{name}@{version} already exists with other bytes (digest {digest}); versions are immutable: publish a new version"
    )]
    VersionExists {
        /// The module.
        name: String,
        /// The version.
        version: String,
        /// The digest it has.
        digest: String,
    },
    /// No such module or version.
    #[error("{0}")]
    NotFound(String),
    /// A module version still has queued jobs.
    #[error("{name}@{version} has {jobs} queued job(s); delete it with force to do it anyway")]
    InUse {
        /// The module.
        name: String,
        /// The version.
        version: String,
        /// How many jobs wait for it.
        jobs: usize,
    },
    /// Redis failed.
    #[error(transparent)]
    Redis(#[from] anyhow::Error),
}

impl From<redis::RedisError> for RegistryError {
    fn from(err: redis::RedisError) -> Self {
        Self::Redis(err.into())
    }
}

/// Refuses a component whose ABI is not the one its manifest declares.
fn check_abi(declared: Abi, found: Abi) -> Result<(), RegistryError> {
    match (declared, found) {
        (Abi::Task, Abi::Command) => Err(RegistryError::AbiMismatch(
            "the component is a WASI command (it exports `wasi:cli/run`): add \
             `abi = \"command\"` to its manifest",
        )),
        (Abi::Command, Abi::Task) => Err(RegistryError::AbiMismatch(
            "the manifest says `abi = \"command\"` but the component exports the \
             taskbox:task world's `run`: remove `abi`",
        )),
        _ => Ok(()),
    }
}

/// Publishes modules after checking them, and answers what is published.
#[derive(Debug, Clone)]
pub struct Registry {
    store: Store,
    queue: Queue,
    runtime: Arc<Runtime>,
    policy: Arc<Policy>,
    compiles: Arc<Semaphore>,
    compile_timeout: Duration,
    max_size: u64,
}

/// How the registry checks uploads.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// The operator's cap on manifests.
    pub policy: Policy,
    /// The largest component accepted.
    pub max_module_size: u64,
    /// Compiles at once; more uploads wait.
    pub max_concurrent_compiles: usize,
    /// How long one compile may take.
    pub compile_timeout: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            max_module_size: DEFAULT_MAX_MODULE_SIZE,
            max_concurrent_compiles: 2,
            compile_timeout: DEFAULT_COMPILE_TIMEOUT,
        }
    }
}

/// What publishing did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Published {
    /// The version as stored.
    pub module: ModuleVersion,
    /// False when this exact version with these bytes was there already.
    pub created: bool,
}

impl Registry {
    /// A registry storing in `queue`'s Redis and compiling with `runtime`.
    pub fn new(queue: Queue, runtime: Arc<Runtime>, config: RegistryConfig) -> Self {
        Self {
            store: queue.store().clone(),
            queue,
            runtime,
            policy: Arc::new(config.policy),
            compiles: Arc::new(Semaphore::new(config.max_concurrent_compiles.max(1))),
            compile_timeout: config.compile_timeout,
            max_size: config.max_module_size,
        }
    }

    /// The largest component accepted.
    pub fn max_module_size(&self) -> u64 {
        self.max_size
    }

    /// Stores `version` (its record `json`) with its `bytes`, or answers the record already
    /// stored under its number. The bytes, their references and the tenant's keys lie in
    /// different cluster slots, so no one script writes them all: the bytes and their
    /// reference go first, the version's record last and only if the number is free, so a
    /// version is never seen without its bytes. Bytes a refused version stored are taken
    /// back unless another version uses them; a publish cut short between the steps leaves
    /// the bytes, which the same upload reuses.
    async fn store_version(
        &self,
        keys: &TenantKeys,
        version: &ModuleVersion,
        json: &str,
        reference: &str,
        bytes: &[u8],
    ) -> anyhow::Result<Option<String>> {
        let prefix = self.store.prefix();
        let versions = keys.versions(&version.name);
        let mut conn = self.store.connection();
        let existing: Option<String> = conn.hget(&versions, &version.version).await?;
        if existing.is_some() {
            return Ok(existing);
        }
        let refs = keys::module_refs(prefix, &version.digest);
        let () = conn.sadd(&refs, reference).await?;
        let () = conn
            .set(keys::module_bytes(prefix, &version.digest), bytes)
            .await?;
        let stored: bool = conn.hset_nx(&versions, &version.version, json).await?;
        if stored {
            let () = conn.sadd(keys.modules(), &version.name).await?;
            return Ok(None);
        }
        // Another upload of the same number came first.
        let existing: Option<String> = conn.hget(&versions, &version.version).await?;
        let theirs_uses_these_bytes = existing
            .as_deref()
            .and_then(|json| serde_json::from_str::<ModuleVersion>(json).ok())
            .is_some_and(|theirs| theirs.digest == version.digest);
        if !theirs_uses_these_bytes {
            self.drop_reference(&version.digest, reference).await?;
        }
        Ok(existing)
    }

    /// Removes `reference` from the users of the bytes with `digest`, and the bytes when
    /// nobody uses them any more.
    async fn drop_reference(&self, digest: &str, reference: &str) -> anyhow::Result<()> {
        let prefix = self.store.prefix();
        let refs = keys::module_refs(prefix, digest);
        let mut conn = self.store.connection();
        let ((), left): ((), usize) = redis::pipe()
            .atomic()
            .srem(&refs, reference)
            .scard(&refs)
            .query_async(&mut conn)
            .await?;
        if left == 0 {
            let () = conn.del(keys::module_bytes(prefix, digest)).await?;
        }
        Ok(())
    }

    /// Checks a component and its manifest, then publishes them for `tenant`: within the
    /// size cap, within the policy, a component, compiling in time, importing only what the
    /// host provides and the manifest grants, and not changing an existing version. The
    /// module's cron schedules are the caller's to sync (`Schedules::sync_module`).
    pub async fn publish(
        &self,
        tenant: &str,
        manifest: Manifest,
        bytes: Vec<u8>,
    ) -> Result<Published, RegistryError> {
        let size = bytes.len() as u64;
        if size > self.max_size {
            return Err(RegistryError::TooLarge {
                size,
                max: self.max_size,
            });
        }
        self.policy.check(&manifest)?;
        // A WASI preview 1 program is stored as the command component the host makes of it.
        let bytes = match manifest.abi {
            Abi::Command if is_core_module(&bytes) => componentize_command(&bytes)
                .map_err(|err| RegistryError::Invalid(err.to_string()))?,
            _ => bytes,
        };
        let size = bytes.len() as u64;
        let (abi, imports) = self.compile(bytes.clone()).await?;
        check_abi(manifest.abi, abi)?;
        for import in &imports {
            if let Some(field) = manifest.capabilities.missing_for(import) {
                return Err(RegistryError::NotGranted {
                    import: import.clone(),
                    field,
                });
            }
        }
        let digest = ModuleDigest::of(&bytes).to_string();
        let version = ModuleVersion {
            name: manifest.name.clone(),
            version: manifest.version.to_string(),
            digest: digest.clone(),
            size,
            uploaded_at: unix_millis(SystemTime::now()),
            imports,
            manifest,
        };
        let keys = TenantKeys::new(self.store.prefix(), tenant);
        let json = serde_json::to_string(&version).map_err(anyhow::Error::from)?;
        let reference = format!("{tenant}/{}@{}", version.name, version.version);
        let existing = self
            .store_version(&keys, &version, &json, &reference, &bytes)
            .await?;
        if let Some(existing) = existing {
            let existing: ModuleVersion = serde_json::from_str(&existing).map_err(|err| {
                anyhow::anyhow!("stored version {}@{}: {err}", version.name, version.version)
            })?;
            if existing.digest != digest {
                return Err(RegistryError::VersionExists {
                    name: version.name,
                    version: version.version,
                    digest: existing.digest,
                });
            }
            return Ok(Published {
                module: existing,
                created: false,
            });
        }
        Ok(Published {
            module: version,
            created: true,
        })
    }

    /// Compiles the component (at most so many at once, within the time cap) and returns its
    /// ABI and imports. A compile that runs out of time goes on in the background but is not
    /// waited for; it holds its place among the concurrent compiles until it ends.
    async fn compile(&self, bytes: Vec<u8>) -> Result<(Abi, Vec<String>), RegistryError> {
        let permit = Arc::clone(&self.compiles)
            .acquire_owned()
            .await
            .map_err(anyhow::Error::from)?;
        let runtime = Arc::clone(&self.runtime);
        let compiling = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            runtime
                .load(&bytes)
                .map(|module| (module.abi(), module.imports().to_vec()))
        });
        match tokio::time::timeout(self.compile_timeout, compiling).await {
            Err(_elapsed) => Err(RegistryError::CompileTimeout(self.compile_timeout)),
            Ok(joined) => match joined.map_err(anyhow::Error::from)? {
                Ok(loaded) => Ok(loaded),
                Err(JobError::MissingImport { name }) => {
                    Err(RegistryError::UnknownImport { import: name })
                }
                Err(err) => Err(RegistryError::Invalid(err.to_string())),
            },
        }
    }

    /// The names of `tenant`'s modules, each with its versions, highest first.
    pub async fn list(&self, tenant: &str) -> Result<Vec<ModuleSummary>, RegistryError> {
        let keys = TenantKeys::new(self.store.prefix(), tenant);
        let mut names: Vec<String> = self.store.connection().smembers(keys.modules()).await?;
        names.sort();
        let mut modules = Vec::with_capacity(names.len());
        for name in names {
            let versions = self.versions(tenant, &name).await?;
            if let Some(latest) = versions.first() {
                modules.push(ModuleSummary {
                    latest: latest.version.clone(),
                    digest: latest.digest.clone(),
                    tasks: latest.manifest.tasks.keys().cloned().collect(),
                    versions: versions.iter().map(|v| v.version.clone()).collect(),
                    name,
                });
            }
        }
        Ok(modules)
    }

    /// Every version of module `name`, highest first (empty when there is none).
    pub async fn versions(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Vec<ModuleVersion>, RegistryError> {
        let keys = TenantKeys::new(self.store.prefix(), tenant);
        let stored: Vec<(String, String)> =
            self.store.connection().hgetall(keys.versions(name)).await?;
        let mut versions: Vec<ModuleVersion> = stored
            .into_iter()
            .filter_map(|(_, json)| serde_json::from_str(&json).ok())
            .collect();
        versions.sort_by_key(|v| std::cmp::Reverse(semver_of(&v.version)));
        Ok(versions)
    }

    /// Module `name` at `version`, or its highest version when `version` is `None`.
    pub async fn resolve(
        &self,
        tenant: &str,
        name: &str,
        version: Option<&str>,
    ) -> Result<ModuleVersion, RegistryError> {
        resolve(&self.store, tenant, name, version).await
    }

    /// The settings of module `name` set over the API (empty when none are).
    pub async fn settings(&self, tenant: &str, name: &str) -> anyhow::Result<ModuleSettings> {
        module_settings(&self.store, tenant, name).await
    }

    /// Replaces the settings of module `name`; workers read them again within seconds (the
    /// grants' `SETTINGS_REFRESH`).
    pub async fn set_settings(
        &self,
        tenant: &str,
        name: &str,
        settings: &ModuleSettings,
    ) -> anyhow::Result<()> {
        let keys = TenantKeys::new(self.store.prefix(), tenant);
        let json = serde_json::to_string(settings)?;
        let () = self
            .queue
            .connection()
            .set(keys.settings(name), json)
            .await?;
        Ok(())
    }

    async fn version(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
    ) -> Result<ModuleVersion, RegistryError> {
        resolve(&self.store, tenant, name, Some(version)).await
    }

    /// Deletes `name@version`. Refused while jobs for it are queued, unless `force`. The
    /// module's cron schedules are the caller's to sync (`Schedules::sync_module`).
    pub async fn delete(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
        force: bool,
    ) -> Result<(), RegistryError> {
        let module = self.version(tenant, name, version).await?;
        if !force {
            let jobs = self
                .queue
                .unfinished_jobs_of(tenant, &module.name, &module.version)
                .await?;
            if jobs > 0 {
                return Err(RegistryError::InUse {
                    name: module.name,
                    version: module.version,
                    jobs,
                });
            }
        }
        let prefix = self.store.prefix();
        let keys = TenantKeys::new(prefix, tenant);
        let reference = format!("{tenant}/{name}@{}", module.version);
        let mut conn = self.store.connection();
        let ((), versions): ((), usize) = redis::pipe()
            .atomic()
            .hdel(keys.versions(name), &module.version)
            .hlen(keys.versions(name))
            .query_async(&mut conn)
            .await?;
        self.drop_reference(&module.digest, &reference).await?;
        if versions == 0 {
            // The module is gone, and its settings (secrets too) with it.
            let () = conn.srem(keys.modules(), name).await?;
            let () = conn.del(keys.settings(name)).await?;
        }
        Ok(())
    }
}

/// A module in a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModuleSummary {
    /// Its name.
    pub name: String,
    /// Its highest version.
    pub latest: String,
    /// The digest of the highest version.
    pub digest: String,
    /// The tasks of the highest version.
    pub tasks: Vec<String>,
    /// All its versions, highest first.
    pub versions: Vec<String>,
}

/// The modules of the registry in `store`, as the queue finds the versions jobs name.
#[derive(Debug, Clone)]
pub struct Modules {
    store: Store,
}

impl Modules {
    /// The modules published in `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

impl ModuleSource for Modules {
    fn resolve<'a>(
        &'a self,
        tenant: &'a str,
        name: &'a str,
        version: Option<&'a str>,
    ) -> BoxFuture<'a, Result<ModuleVersion, EnqueueError>> {
        Box::pin(async move { Ok(resolve(&self.store, tenant, name, version).await?) })
    }
}

impl From<RegistryError> for EnqueueError {
    fn from(err: RegistryError) -> Self {
        match err {
            RegistryError::NotFound(message) => Self::UnknownModule(message),
            RegistryError::Redis(err) => Self::Redis(err),
            other => Self::Redis(other.into()),
        }
    }
}

/// The bytes of the module with this digest.
pub async fn module_bytes(store: &Store, digest: &str) -> anyhow::Result<Vec<u8>> {
    let bytes: Option<Vec<u8>> = store
        .connection()
        .get(keys::module_bytes(store.prefix(), digest))
        .await?;
    bytes.with_context(|| format!("module {digest} is not stored in Redis"))
}

/// Module `name` of `tenant` at `version`, or its highest version.
pub(crate) async fn resolve(
    store: &Store,
    tenant: &str,
    name: &str,
    version: Option<&str>,
) -> Result<ModuleVersion, RegistryError> {
    if !is_plain_name(name) {
        return Err(RegistryError::NotFound(format!(
            "invalid module name `{name}`: use 1 to 64 letters, digits, `-`, `_` or `.`"
        )));
    }
    let keys = TenantKeys::new(store.prefix(), tenant);
    let mut conn = store.connection();
    let json: Option<String> = match version {
        Some(version) => conn.hget(keys.versions(name), version).await?,
        None => {
            let versions: Vec<String> = conn.hkeys(keys.versions(name)).await?;
            match versions.iter().max_by_key(|v| semver_of(v)) {
                Some(latest) => conn.hget(keys.versions(name), latest).await?,
                None => None,
            }
        }
    };
    let json = json.ok_or_else(|| {
        RegistryError::NotFound(match version {
            Some(version) => format!("there is no module {name}@{version}"),
            None => format!("there is no module named `{name}`: push it first"),
        })
    })?;
    serde_json::from_str(&json)
        .map_err(|err| RegistryError::Redis(anyhow::anyhow!("stored module {name}: {err}")))
}

/// The settings of module `name` of `tenant` set over the API.
pub(crate) async fn module_settings(
    store: &Store,
    tenant: &str,
    name: &str,
) -> anyhow::Result<ModuleSettings> {
    let keys = TenantKeys::new(store.prefix(), tenant);
    let json: Option<String> = store.connection().get(keys.settings(name)).await?;
    Ok(match json {
        Some(json) => serde_json::from_str(&json)
            .map_err(|err| anyhow::anyhow!("stored settings of {name}: {err}"))?,
        None => ModuleSettings::default(),
    })
}

fn semver_of(version: &str) -> semver::Version {
    version.parse().unwrap_or(semver::Version::new(0, 0, 0))
}
