//! What a job costs in the sandbox: the fixed cost of a no-op job (pooling vs on-demand
//! allocation, one vs two threads), the same per guest language, and the speed of CPU-bound
//! guest code against native.
//!
//! `cargo bench -p taskbox-runtime --bench sandbox`. The guests must be built first
//! (`cd guests && cargo build --release`); the `languages` group measures the Python,
//! JavaScript and C examples that are built (guests/README.md) and names the ones that are
//! not.

#[path = "../guests/fixtures/src/work.rs"]
mod work;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use taskbox_runtime::{JobInfo, JobRequest, Runtime, RuntimeConfig, TaskModule};

const HASH_ROUNDS: u64 = 200_000;

fn fixtures(runtime: &Runtime) -> Arc<TaskModule> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../guests/target/wasm32-wasip2/release/fixtures.wasm");
    let bytes = std::fs::read(&path).unwrap_or_else(|err| {
        panic!(
            "{}: {err}; build the guests first (cd guests && cargo build --release)",
            path.display()
        )
    });
    runtime.load(&bytes).expect("loading the fixtures module")
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn noop_request() -> JobRequest {
    JobRequest::new("noop", Vec::new(), JobInfo::adhoc("bench"))
}

/// A runtime with the fixtures loaded, for one benchmark thread.
type Sandbox = (Arc<Runtime>, Arc<TaskModule>);

fn sandbox(runtime: &Arc<Runtime>) -> Sandbox {
    (Arc::clone(runtime), fixtures(runtime))
}

/// Runs `jobs` no-op jobs split over one thread per sandbox, each thread with its own
/// executor, and returns the wall time.
fn noop_jobs(sandboxes: &[Sandbox], jobs: u64) -> Duration {
    let threads = sandboxes.len() as u64;
    let barrier = Arc::new(std::sync::Barrier::new(sandboxes.len() + 1));
    let handles: Vec<_> = sandboxes
        .iter()
        .cloned()
        .map(|(runtime, module)| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let executor = current_thread();
                barrier.wait();
                executor.block_on(async {
                    for _ in 0..jobs.div_ceil(threads) {
                        let report = runtime.run(&module, noop_request()).await;
                        assert!(report.outcome.is_ok());
                    }
                });
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    for handle in handles {
        handle.join().unwrap();
    }
    started.elapsed()
}

fn noop(c: &mut Criterion) {
    let mut group = c.benchmark_group("noop");
    for (name, pooling) in [("pooling", true), ("on-demand", false)] {
        let runtime = Runtime::new(&RuntimeConfig {
            pooling,
            ..RuntimeConfig::default()
        })
        .unwrap();
        let module = fixtures(&runtime);
        let executor = current_thread();
        group.bench_function(name, |b| {
            b.iter(|| {
                let report = executor.block_on(runtime.run(&module, noop_request()));
                assert!(report.outcome.is_ok());
            });
        });
    }
    group.finish();

    // Throughput: criterion's time is per job, so 2 threads scale perfectly at half the
    // 1-thread time.
    let mut group = c.benchmark_group("noop-threads");
    group.throughput(Throughput::Elements(1));
    let new_runtime = || Arc::new(Runtime::new(&RuntimeConfig::default()).unwrap());
    let shared = sandbox(&new_runtime());
    let own = [sandbox(&new_runtime()), sandbox(&new_runtime())];
    for threads in [1, 2] {
        let shared = vec![shared.clone(); threads];
        group.bench_function(BenchmarkId::new("shared-engine", threads), |b| {
            b.iter_custom(|jobs| noop_jobs(&shared, jobs));
        });
        group.bench_function(BenchmarkId::new("engine-per-thread", threads), |b| {
            b.iter_custom(|jobs| noop_jobs(&own[..threads], jobs));
        });
    }
    group.finish();
}

/// A no-op job of each language's example module: what the language's runtime adds.
fn languages(c: &mut Criterion) {
    let guests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guests");
    let modules = [
        (
            "rust",
            "target/wasm32-wasip2/release/fixtures.wasm",
            "noop",
            "",
        ),
        ("c", "c/target/example.wasm", "noop", ""),
        (
            "rust-command",
            "target/wasm32-wasip2/release/words.wasm",
            "count",
            r#"{"text":""}"#,
        ),
        ("javascript", "js/example/example.wasm", "noop", "null"),
        ("python", "python/example/example.wasm", "noop", "null"),
    ];
    // The Python and JavaScript modules take many seconds to compile: keep them compiled.
    let runtime = Runtime::new(&RuntimeConfig {
        cache_dir: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-cache")),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let executor = current_thread();
    let mut group = c.benchmark_group("languages");
    for (language, file, task, input) in modules {
        let Ok(bytes) = std::fs::read(guests.join(file)) else {
            eprintln!("languages/{language}: skipped, guests/{file} is not built");
            continue;
        };
        let module = runtime.load(&bytes).expect("loading an example module");
        group.bench_function(language, |b| {
            b.iter(|| {
                let request = JobRequest::new(task, input, JobInfo::adhoc("bench"));
                let report = executor.block_on(runtime.run(&module, request));
                assert!(report.outcome.is_ok(), "{language}: {:?}", report.outcome);
            });
        });
    }
    group.finish();
}

fn cpu_bound(c: &mut Criterion) {
    let mut group = c.benchmark_group("hash");
    let input = format!(r#"{{"rounds":{HASH_ROUNDS}}}"#);
    let expected = work::hash_rounds(1, HASH_ROUNDS).to_string();
    for (name, fuel) in [("fuel", true), ("epoch-only", false)] {
        let runtime = Runtime::new(&RuntimeConfig {
            fuel,
            ..RuntimeConfig::default()
        })
        .unwrap();
        let module = fixtures(&runtime);
        let executor = current_thread();
        group.bench_function(name, |b| {
            b.iter(|| {
                let request = JobRequest::new("hash", input.clone(), JobInfo::adhoc("bench"));
                let report = executor.block_on(runtime.run(&module, request));
                assert_eq!(report.outcome.unwrap(), expected.as_bytes());
            });
        });
    }
    group.bench_function("native", |b| {
        b.iter(|| std::hint::black_box(work::hash_rounds(std::hint::black_box(1), HASH_ROUNDS)));
    });
    group.finish();
}

criterion_group!(benches, noop, languages, cpu_bound);
criterion_main!(benches);
