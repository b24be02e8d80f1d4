//! Host capabilities: the only doors out of the sandbox.
//!
//! Each capability is one module with the same small shape: its per-job state (kept in the
//! job's [`Store`](wasmtime::Store)) and an `add_to_linker` that links its interface. Adding a
//! capability touches no other capability. The `taskbox:task` interfaces that no module here
//! links yet (`sql`, `events`, `jobs`, `config`, `wasi:http`) are absent from the linker on
//! purpose, so a component importing one fails to load with an error that names the import.

pub(crate) mod log;
pub(crate) mod progress;
pub(crate) mod wasi;

use wasmtime::component::{HasSelf, Linker};

use crate::bindings::taskbox::task::types;
use crate::job::JobState;

/// Links every capability this host provides.
pub(crate) fn add_to_linker(linker: &mut Linker<JobState>) -> wasmtime::Result<()> {
    wasi::add_to_linker(linker)?;
    types::add_to_linker::<JobState, HasSelf<JobState>>(linker, |state| state)?;
    log::add_to_linker(linker)?;
    progress::add_to_linker(linker)?;
    Ok(())
}

/// `taskbox:task/types` defines only types; linking it lets components name them.
impl types::Host for JobState {}
