//! The integration tests: one binary, one module per area, all against real parts (a
//! private `redis-server`, PostgreSQL, loopback HTTP servers, compiled guests, `taskbox`
//! processes). `cargo test --test it queue::` runs one area.

/// The host's allocator, as the `taskbox` binary installs it: the host-memory limits of jobs
/// count what it tags.
#[global_allocator]
static ALLOCATOR: taskbox_runtime::host_memory::CountingAllocator =
    taskbox_runtime::host_memory::CountingAllocator;

mod support;

mod api;
mod capabilities;
mod cli;
mod cron;
mod dashboard;
mod failover;
mod hostile;
mod hosts;
mod http;
mod languages;
mod metrics;
mod queue;
mod sandbox;
mod sql;
