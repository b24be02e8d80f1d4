//! `taskbox:task/sql`: parameterised SQL against the databases a module is granted.

use wasmtime::component::Linker;

use crate::capabilities::Caller;
use crate::job::JobState;

/// The databases a module may use.
#[derive(Debug, Clone, Default)]
pub struct SqlGrant {}

/// Per-job SQL state.
#[derive(Debug)]
pub(crate) struct JobSql {}

impl JobSql {
    pub(crate) fn new(_grant: Option<std::sync::Arc<SqlGrant>>, _caller: Caller) -> Self {
        Self {}
    }
}

pub(crate) fn add_to_linker(_linker: &mut Linker<JobState>) -> wasmtime::Result<()> {
    Ok(())
}
