//! The process-wide engine: configuration, the epoch ticker, the linker and the module cache.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use wasmtime::component::{Component, Linker};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig,
};

use crate::capabilities;
use crate::job::{self, JobRequest, JobState};
use crate::limits::MAX_TABLE_ELEMENTS;
use crate::lru::Lru;
use crate::module::{ArtifactCache, ModuleDigest, TaskModule, check_is_component};
use crate::outcome::{JobError, JobReport};
use crate::swap;

/// How often the epoch advances: the granularity of timeouts and cancellation.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The deepest WebAssembly stack a guest may use before it gets `stack_overflow`.
const MAX_WASM_STACK: usize = 1 << 20;
/// The native stack a job runs on: the WebAssembly stack plus room for host calls.
const ASYNC_STACK_SIZE: usize = 2 << 20;
/// The largest single linear memory (all of wasm32's address space); per-job limits are
/// enforced below this by the job's [`Limits`](crate::Limits).
const MAX_MEMORY_SIZE: usize = 4 << 30;
/// How much of a slot's linear memory stays mapped when the slot is reused. With the
/// `PAGEMAP_SCAN` ioctl (Linux 6.7+, and used only when the process cannot be swapped out:
/// see [`swap`](crate::swap)) wasmtime resets only the pages the job dirtied inside
/// this region, with memcpy/memset, instead of `madvise` plus a page fault per page on the
/// next job: the profile in DESIGN.md showed those faults and the TLB shootdowns of
/// `madvise` dominating small jobs. 2 MiB covers a Rust guest's 1 MiB shadow stack, its
/// data and its first heap pages. Without the ioctl the whole region would be reset on every
/// job, so then only [`KEEP_RESIDENT`] is kept. More does not help the JavaScript and Python
/// guests (16 and 64 MiB measured no faster): wasmtime 48's reset restores at most 32 runs
/// of dirty pages in place whatever the size, and theirs are spread over more runs than that
/// (see the Benchmarks section of the README).
const MEMORY_KEEP_RESIDENT_WITH_PAGEMAP: usize = 2 << 20;
/// The same for tables, which small jobs touch only a little of. Async stacks stay resident
/// whole: a stack is never reset (nothing on it outlives a job), so keeping it costs no work,
/// and the interpreters of Python and JavaScript guests run deep enough that giving the
/// stack back made every job fault it in again (a JavaScript no-op: 470 µs, 416 µs with the
/// stack resident, in back-to-back runs).
const KEEP_RESIDENT: usize = 64 << 10;
/// Core instances a component may have: componentize-py's have a few dozen.
const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 64;
/// Tables and memories a component may have.
const MAX_TABLES_PER_COMPONENT: u32 = 64;
const MAX_MEMORIES_PER_COMPONENT: u32 = 16;

/// How the process's sandbox engine is set up.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Preallocate sandbox slots (the default; instantiation takes microseconds). Without it
    /// every job maps and unmaps its memory.
    pub pooling: bool,
    /// How many jobs may run at once in this process (the size of the pool).
    pub max_concurrent_jobs: u32,
    /// Where precompiled modules are kept across restarts; none compiles on every start.
    pub cache_dir: Option<PathBuf>,
    /// Meter fuel (the default). Without it only the wall-clock deadline bounds a busy guest,
    /// and CPU-bound guests run a little faster.
    pub fuel: bool,
    /// The most compiled code the loaded modules may take, in bytes; past it the least
    /// recently used modules are dropped (a running job keeps its module until it ends) and
    /// loaded again, from `cache_dir` or by compiling, when next needed.
    pub module_cache_bytes: u64,
}

/// The default bound on loaded modules' compiled code. Measured with wasmtime 48: a Rust task
/// module compiles to about 0.5 MiB, the JavaScript and Python examples (13 and 19 MB of
/// WebAssembly) to about 40 MiB each. So 512 MiB keeps about ten interpreted modules or a
/// thousand small ones loaded; a worker that runs more distinct modules than that in turn
/// reloads them, from `cache_dir` (about a second for an interpreted module) or by compiling,
/// rather than holding every module it ever ran.
pub const DEFAULT_MODULE_CACHE_BYTES: u64 = 512 << 20;

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            pooling: true,
            max_concurrent_jobs: 200,
            cache_dir: None,
            fuel: true,
            module_cache_bytes: DEFAULT_MODULE_CACHE_BYTES,
        }
    }
}

/// Runs jobs of any number of modules, each in a fresh sandbox. One per process.
pub struct Runtime {
    engine: Engine,
    linker: Linker<JobState>,
    /// The task linker plus `wasi:filesystem` (with nothing preopened), for commands.
    command_linker: Linker<JobState>,
    fuel: bool,
    /// Loaded modules, weighed by their compiled size.
    modules: Mutex<Lru<ModuleDigest, Arc<TaskModule>>>,
    artifacts: Option<ArtifactCache>,
    /// What the engine's pool keeps, for [`Runtime::memory_bound`].
    pool: Option<PoolShape>,
    module_cache_bytes: u64,
    _ticker: EpochTicker,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("artifacts", &self.artifacts)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Builds the engine, links the host capabilities and starts the epoch ticker.
    pub fn new(config: &RuntimeConfig) -> anyhow::Result<Self> {
        let pool = config
            .pooling
            .then(|| PoolShape::new(config.max_concurrent_jobs));
        let engine = Engine::new(&engine_config(config, pool))?;
        crate::host_memory::register_engine(&engine);
        let mut linker = Linker::new(&engine);
        capabilities::add_to_linker(&mut linker)?;
        let mut command_linker = Linker::new(&engine);
        capabilities::add_to_linker(&mut command_linker)?;
        capabilities::wasi::add_filesystem_to_linker(&mut command_linker)?;
        let artifacts = match &config.cache_dir {
            Some(dir) => Some(
                ArtifactCache::new(dir, &engine)
                    .with_context(|| format!("opening module cache {}", dir.display()))?,
            ),
            None => None,
        };
        Ok(Self {
            _ticker: EpochTicker::start(engine.clone()),
            engine,
            linker,
            command_linker,
            fuel: config.fuel,
            modules: Mutex::new(Lru::new(config.module_cache_bytes)),
            artifacts,
            pool,
            module_cache_bytes: config.module_cache_bytes,
        })
    }

    /// The module with this digest, if it is loaded.
    pub fn cached(&self, digest: ModuleDigest) -> Option<Arc<TaskModule>> {
        self.modules().get(&digest)
    }

    /// Loads a component: from memory if loaded before, else from the precompiled cache, else
    /// by compiling it. Fails with `invalid_module` or `missing_import` for a module that
    /// could never run here. Compiling takes long for big modules: call this off the async
    /// executor (`spawn_blocking`).
    pub fn load(&self, bytes: &[u8]) -> Result<Arc<TaskModule>, JobError> {
        let digest = ModuleDigest::of(bytes);
        if let Some(module) = self.cached(digest) {
            return Ok(module);
        }
        check_is_component(bytes)?;
        let cached = self
            .artifacts
            .as_ref()
            .and_then(|cache| cache.load(&self.engine, digest));
        let component = match cached {
            Some(component) => component,
            None => self.compile(digest, bytes)?,
        };
        let module = Arc::new(TaskModule::link(
            digest,
            &component,
            &self.linker,
            &self.command_linker,
        )?);
        let size = module.compiled_size();
        if !self.modules().insert(digest, Arc::clone(&module), size) {
            tracing::warn!(
                %digest,
                "the module's {size} bytes of compiled code are more than the whole module \
                 cache holds, so it is loaded again for each job: raise the cache's size"
            );
        }
        Ok(module)
    }

    fn compile(&self, digest: ModuleDigest, bytes: &[u8]) -> Result<Component, JobError> {
        let component =
            Component::new(&self.engine, bytes).map_err(|err| JobError::InvalidModule {
                message: format!("{err:#}"),
            })?;
        if let Some(cache) = &self.artifacts
            && let Err(err) = cache.store(digest, &component)
        {
            tracing::warn!(%digest, "could not keep the precompiled module: {err:#}");
        }
        Ok(component)
    }

    /// Runs one job of `module` in a fresh sandbox and reports how it went.
    pub async fn run(&self, module: &TaskModule, request: JobRequest) -> JobReport {
        job::run(module, request, self.fuel).await
    }

    /// The most resident memory this runtime can hold with `jobs` jobs running at once, each
    /// with at most `guest` bytes of linear memory and `host` bytes of host heap: for each
    /// running job its memory, host heap, tables and native stack; for the pool, what it keeps
    /// of idle slots and the freed memories it releases in batches; and the module cache.
    /// The process's own baseline (its code, Redis buffers, the API) comes on top.
    pub fn memory_bound(&self, jobs: u64, guest: u64, host: u64) -> u64 {
        let tables = u64::from(MAX_TABLES_PER_COMPONENT) * MAX_TABLE_ELEMENTS as u64 * 8;
        let per_job = guest + host + tables + ASYNC_STACK_SIZE as u64;
        let pool = self.pool.map_or(0, |pool| pool.idle_bytes(guest));
        jobs * per_job + pool + self.module_cache_bytes
    }

    fn modules(&self) -> std::sync::MutexGuard<'_, Lru<ModuleDigest, Arc<TaskModule>>> {
        self.modules.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn engine_config(config: &RuntimeConfig, pool: Option<PoolShape>) -> Config {
    let mut engine = Config::new();
    engine
        .wasm_component_model(true)
        .cranelift_opt_level(OptLevel::Speed)
        .consume_fuel(config.fuel)
        .epoch_interruption(true)
        .max_wasm_stack(MAX_WASM_STACK)
        .async_stack_size(ASYNC_STACK_SIZE)
        .memory_init_cow(true);
    match pool {
        Some(pool) => {
            engine.allocation_strategy(InstanceAllocationStrategy::Pooling(pool.config()))
        }
        None => engine.allocation_strategy(InstanceAllocationStrategy::OnDemand),
    };
    engine
}

/// The pool's size and what it keeps resident, from which both its configuration and the
/// memory it can hold follow.
#[derive(Debug, Clone, Copy)]
struct PoolShape {
    jobs: u32,
    pagemap: bool,
}

impl PoolShape {
    fn new(jobs: u32) -> Self {
        Self {
            jobs,
            pagemap: pagemap_scan(),
        }
    }

    // Totals sized for `jobs` typical components, but never below what one big one needs.
    fn memories(&self) -> u32 {
        (self.jobs * 2).max(MAX_MEMORIES_PER_COMPONENT)
    }

    fn tables(&self) -> u32 {
        (self.jobs * 8).max(MAX_TABLES_PER_COMPONENT)
    }

    fn memory_keep_resident(&self) -> usize {
        match self.pagemap {
            true => MEMORY_KEEP_RESIDENT_WITH_PAGEMAP,
            false => KEEP_RESIDENT,
        }
    }

    /// Freed memories past their kept-resident part are given back to the kernel once this
    /// many wait, so at most this many slots hold a finished job's memory. Half the pool's
    /// jobs is a worker's concurrency (the worker sizes the pool at twice it).
    fn decommit_batch(&self) -> u32 {
        (self.jobs / 2).max(1)
    }

    /// What idle slots can hold: the kept-resident part of every memory and table, every
    /// native stack whole, and the freed memories (each at most `guest` bytes) waiting to be
    /// released.
    fn idle_bytes(&self, guest: u64) -> u64 {
        u64::from(self.memories()) * self.memory_keep_resident() as u64
            + u64::from(self.tables()) * KEEP_RESIDENT as u64
            + u64::from(self.jobs) * ASYNC_STACK_SIZE as u64
            + u64::from(self.decommit_batch()) * guest
    }

    /// Slots for `jobs` concurrent sandboxes, each big enough for the CPython (about 18 MB)
    /// and SpiderMonkey (about 12 MB) components that componentize-py and componentize-js
    /// build: those have many core instances and tables, and tables of tens of thousands of
    /// functions.
    fn config(&self) -> PoolingAllocationConfig {
        let jobs = self.jobs;
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(jobs)
            .total_core_instances((jobs * 16).max(MAX_CORE_INSTANCES_PER_COMPONENT))
            .total_memories(self.memories())
            .total_tables(self.tables())
            .total_stacks(jobs)
            .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT)
            .max_memories_per_component(MAX_MEMORIES_PER_COMPONENT)
            .max_tables_per_component(MAX_TABLES_PER_COMPONENT)
            .max_tables_per_module(8)
            .table_elements(MAX_TABLE_ELEMENTS)
            .max_memory_size(MAX_MEMORY_SIZE)
            .linear_memory_keep_resident(self.memory_keep_resident())
            .pagemap_scan(match self.pagemap {
                true => Enabled::Yes,
                false => Enabled::No,
            })
            .table_keep_resident(KEEP_RESIDENT)
            .async_stack_keep_resident(ASYNC_STACK_SIZE)
            .decommit_batch_size(self.decommit_batch() as usize);
        pool
    }
}

/// Whether pool slots are reset with `PAGEMAP_SCAN`: when the kernel has it and nothing of
/// the process can be swapped out (see [`swap`](crate::swap)).
fn pagemap_scan() -> bool {
    if !PoolingAllocationConfig::is_pagemap_scan_available() {
        return false;
    }
    if swap::may_swap() {
        tracing::warn!(
            "swap is on, so pool slots are reset without PAGEMAP_SCAN, which is slower: \
             wasmtime's scan misses pages swapped out during a job, which the next job in the \
             slot could read. Turn swap off, or set memory.swap.max to 0 for the worker's cgroup"
        );
        return false;
    }
    true
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on a background thread, for as long as
/// the runtime lives.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("taskbox-epoch".into())
            .spawn({
                let stop = Arc::clone(&stop);
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                }
            })
            .expect("spawning the epoch ticker thread");
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
