use std::process::ExitCode;

use clap::Parser as _;

/// Counts the heap the host holds for each job, so that a guest cannot make it hold more
/// than its job's `host_memory` limit.
#[global_allocator]
static ALLOCATOR: taskbox_runtime::host_memory::CountingAllocator =
    taskbox_runtime::host_memory::CountingAllocator;

fn main() -> ExitCode {
    taskbox::cli::init_tracing();
    let cli = taskbox::cli::Cli::parse();
    match cli.run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
