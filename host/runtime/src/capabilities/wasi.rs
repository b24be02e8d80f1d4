//! The WASI 0.2 interfaces language runtimes need, and nothing that reaches the outside.
//!
//! Linked: clocks, random, `wasi:io`, and `wasi:cli` (arguments and environment empty, stdin
//! closed, stdout and stderr into the job log). Sockets are never linked. Filesystem is linked
//! only for command modules, whose language runtimes import it whether or not they use it;
//! they get no preopened directory, so there is nothing to open. A task module that imports
//! it fails to load, naming the import, instead of finding no directory at run time.

use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime_wasi::cli::{WasiCli, WasiCliView};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, io, random};
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::random::{WasiRandom, WasiRandomView};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::capabilities::log::JobLog;
use crate::job::JobState;

/// A WASI context with no preopens, no environment, no arguments, no network and no
/// inherited stdio: the guest's stdout and stderr go to `log`.
pub(crate) fn context(log: &JobLog) -> WasiCtx {
    WasiCtx::builder()
        .stdout(log.clone())
        .stderr(log.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build()
}

/// The context of a command module's job: `input` on stdin, stdout into `stdout`, stderr
/// into `log`, and `args` as its arguments.
pub(crate) fn command_context(
    log: &JobLog,
    input: Vec<u8>,
    args: &[&str],
    stdout: JobLog,
) -> WasiCtx {
    WasiCtx::builder()
        .stdin(MemoryInputPipe::new(input))
        .stdout(stdout)
        .stderr(log.clone())
        .args(args)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build()
}

impl WasiView for JobState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Gives `wasi:io` host functions the job's resource table.
struct Io;

impl HasData for Io {
    type Data<'a> = &'a mut ResourceTable;
}

pub(crate) fn add_to_linker(linker: &mut Linker<JobState>) -> wasmtime::Result<()> {
    let l = linker;
    io::error::add_to_linker::<JobState, Io>(l, |s| &mut s.table)?;
    io::poll::add_to_linker::<JobState, Io>(l, |s| &mut s.table)?;
    io::streams::add_to_linker::<JobState, Io>(l, |s| &mut s.table)?;
    clocks::wall_clock::add_to_linker::<JobState, WasiClocks>(l, JobState::clocks)?;
    clocks::monotonic_clock::add_to_linker::<JobState, WasiClocks>(l, JobState::clocks)?;
    random::random::add_to_linker::<JobState, WasiRandom>(l, JobState::random)?;
    random::insecure::add_to_linker::<JobState, WasiRandom>(l, JobState::random)?;
    random::insecure_seed::add_to_linker::<JobState, WasiRandom>(l, JobState::random)?;
    cli::exit::add_to_linker::<JobState, WasiCli>(l, JobState::cli)?;
    cli::environment::add_to_linker::<JobState, WasiCli>(l, JobState::cli)?;
    cli::stdin::add_to_linker::<JobState, WasiCli>(l, JobState::cli)?;
    cli::stdout::add_to_linker::<JobState, WasiCli>(l, JobState::cli)?;
    cli::stderr::add_to_linker::<JobState, WasiCli>(l, JobState::cli)?;
    cli::terminal_input::add_to_linker::<JobState, WasiCli>(l, JobState::cli)?;
    cli::terminal_output::add_to_linker::<JobState, WasiCli>(l, JobState::cli)?;
    cli::terminal_stdin::add_to_linker::<JobState, WasiCli>(l, JobState::cli)?;
    cli::terminal_stdout::add_to_linker::<JobState, WasiCli>(l, JobState::cli)?;
    cli::terminal_stderr::add_to_linker::<JobState, WasiCli>(l, JobState::cli)?;
    Ok(())
}

/// Links `wasi:filesystem` for command modules. Their context preopens nothing.
pub(crate) fn add_filesystem_to_linker(linker: &mut Linker<JobState>) -> wasmtime::Result<()> {
    filesystem::types::add_to_linker::<JobState, WasiFilesystem>(linker, JobState::filesystem)?;
    filesystem::preopens::add_to_linker::<JobState, WasiFilesystem>(linker, JobState::filesystem)
}
