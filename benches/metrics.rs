//! What recording a job's metrics costs the worker: the lookup of its series and every figure
//! of one attempt (start and wait, the sandbox's figures and host calls, the stored outcome),
//! from one thread and from two at once (one registry per process, shared by its jobs).
//!
//! `cargo bench -p taskbox-core --bench metrics`.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use taskbox_core::metrics::{AttemptEnd, metrics};
use taskbox_runtime::{HostCalls, RunStats};

/// One attempt's figures, as the worker records them.
fn record_one_job() {
    let metrics = metrics();
    let series = metrics
        .job("tenant", "default", "noop")
        .expect("recording is on");
    metrics.started(&series, Some(Duration::from_micros(700)));
    let stats = RunStats {
        fuel_used: 2162,
        wall_time: Duration::from_micros(9),
        peak_memory: 1_114_112,
        instantiate: Duration::from_micros(5),
        calls: HostCalls {
            http_sent: 1,
            ..HostCalls::default()
        },
        ..RunStats::default()
    };
    metrics.ran(&series, &stats);
    metrics.stored(&series, "completed", AttemptEnd::Completed);
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("metrics");
    group.throughput(Throughput::Elements(1));
    group.bench_function("one job, one thread", |b| b.iter(record_one_job));
    group.bench_function("one job, two threads at once", |b| {
        b.iter_custom(|iterations| {
            let started = std::time::Instant::now();
            std::thread::scope(|scope| {
                for _ in 0..2 {
                    scope.spawn(|| (0..iterations).for_each(|_| record_one_job()));
                }
            });
            // Two jobs recorded per iteration: the time per job.
            started.elapsed() / 2
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
