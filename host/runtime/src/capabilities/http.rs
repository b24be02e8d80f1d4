//! `wasi:http/outgoing-handler`: outbound HTTP to the hosts a module is granted.

use wasmtime::component::Linker;

use crate::capabilities::Caller;
use crate::job::JobState;

/// The hosts a module may reach and the limits of its requests.
#[derive(Debug, Clone, Default)]
pub struct HttpGrant {}

/// Per-job HTTP state.
#[derive(Debug)]
pub(crate) struct JobHttp {}

impl JobHttp {
    pub(crate) fn new(_grant: Option<std::sync::Arc<HttpGrant>>, _caller: Caller) -> Self {
        Self {}
    }
}

pub(crate) fn add_to_linker(_linker: &mut Linker<JobState>) -> wasmtime::Result<()> {
    Ok(())
}
