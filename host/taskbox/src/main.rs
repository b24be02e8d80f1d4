use std::process::ExitCode;

use clap::Parser as _;

/// Counts the heap the host holds for each job, so that a guest cannot make it hold more
/// than its job's `host_memory` limit.
#[global_allocator]
static ALLOCATOR: taskbox_runtime::host_memory::CountingAllocator =
    taskbox_runtime::host_memory::CountingAllocator;

fn main() -> ExitCode {
    one_malloc_arena();
    let cli = taskbox::cli::Cli::parse();
    let traces = match cli.init_tracing() {
        Ok(traces) => traces,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let code = match cli.run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    };
    traces.shutdown();
    code
}

/// Makes glibc keep one malloc arena, unless `MALLOC_ARENA_MAX` says otherwise. With its
/// default of up to eight a core, each thread's arena keeps the pages of the large copies
/// hostile jobs make the host free: over ten rounds of the hostile suite a worker's memory
/// outside the sandbox pool rose from 205 to 264 MiB, and with one arena it stayed between
/// 107 and 127 MiB. Two arenas cost 2-4 µs less CPU per no-op job, but one hostile round
/// after the warm-up grew the second by 19 MiB (a CI run failed the suite's 16 MiB check), so
/// one it is. Called before any thread starts, so no second arena exists yet.
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; no other thread runs yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}
