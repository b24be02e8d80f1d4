//! `taskbox run`: one job, locally, without Redis.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytesize::ByteSize;
use taskbox_runtime::{
    JobInfo, JobRequest, Limits, Progress, Runtime, RuntimeConfig, componentize_command,
    is_core_module,
};

/// Run one job of a task module locally, without Redis: the output goes to stdout, the
/// job's log and progress to stderr. Exits 0 when the task succeeds, 1 when the job fails.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The task module: a WebAssembly component (`.wasm`), or a WASI preview 1 program (a
    /// core module), which runs as a command.
    file: PathBuf,
    /// The task to run inside the module.
    task: String,
    /// The job's input (JSON by convention; passed to the task as-is).
    #[arg(long, conflicts_with = "input_file", default_value = "null")]
    input: String,
    /// Read the job's input from this file instead (`-` for stdin).
    #[arg(long, value_name = "FILE")]
    input_file: Option<PathBuf>,
    /// Fuel budget: about one unit per WebAssembly instruction.
    #[arg(long, default_value_t = Limits::DEFAULT_FUEL)]
    fuel: u64,
    /// Wall-clock limit, e.g. `500ms`, `30s`, `2m`.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    timeout: Duration,
    /// Linear memory limit, e.g. `64MiB`, `1GiB`.
    #[arg(long, default_value = "128MiB")]
    memory: ByteSize,
    /// Keep the compiled module in this directory, so the next run of the same bytes skips
    /// compiling (worth it for Python and JavaScript modules).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
}

pub(crate) fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("reading the module {}", args.file.display()))?;
    let input = match &args.input_file {
        Some(path) if path.as_os_str() == "-" => {
            let mut input = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut input)
                .context("reading the input from stdin")?;
            input
        }
        Some(path) => std::fs::read(path)
            .with_context(|| format!("reading the input file {}", path.display()))?,
        None => args.input.clone().into_bytes(),
    };
    let bytes = match is_core_module(&bytes) {
        true => match componentize_command(&bytes) {
            Ok(component) => component,
            Err(err) => {
                eprintln!("error: {err} ({})", args.file.display());
                return Ok(ExitCode::FAILURE);
            }
        },
        false => bytes,
    };
    let module_name = args.file.file_stem().map_or_else(
        || "module".into(),
        |stem| stem.to_string_lossy().into_owned(),
    );

    let runtime = Runtime::new(&RuntimeConfig {
        max_concurrent_jobs: 1,
        cache_dir: args.cache_dir.clone(),
        ..RuntimeConfig::default()
    })?;
    let module = match runtime.load(&bytes) {
        Ok(module) => module,
        Err(err) => {
            eprintln!("error: {err} ({})", args.file.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    let on_progress: Arc<dyn Fn(&Progress) + Send + Sync> = Arc::new(|progress: &Progress| {
        eprintln!("progress {:>3}% {}", progress.percent, progress.message);
    });
    let request = JobRequest {
        limits: Limits {
            fuel: args.fuel,
            timeout: args.timeout,
            memory: args.memory.as_u64(),
            ..Limits::default()
        },
        progress: Some(on_progress),
        ..JobRequest::new(&*args.task, input, JobInfo::adhoc("local"))
    };
    let report = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(runtime.run(&module, request));

    eprint!("{}", report.log);
    match report.outcome {
        Ok(output) => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&output)?;
            if !output.ends_with(b"\n") {
                stdout.write_all(b"\n")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            eprintln!(
                "error: {err} (task {module_name}/{}, {:.1e} fuel, {:.1?}, peak memory {}, \
                 host memory {})",
                args.task,
                report.stats.fuel_used as f64,
                report.stats.wall_time,
                ByteSize(report.stats.peak_memory).display().iec(),
                ByteSize(report.stats.peak_host_memory).display().iec(),
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
