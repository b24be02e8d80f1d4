//! `taskbox:task/progress`: the job's latest progress, kept on the job and handed to a sink.

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use crate::bindings::taskbox::task::progress;
use crate::job::JobState;
use crate::outcome::Progress;

/// Receives every progress report as it happens (the CLI prints it; a worker stores it on
/// the job and publishes it).
pub type ProgressSink = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Per-job progress state.
#[derive(Default)]
pub(crate) struct JobProgress {
    pub(crate) latest: Option<Progress>,
    pub(crate) sink: Option<ProgressSink>,
}

impl progress::Host for JobProgress {
    fn report(&mut self, percent: u8, message: String) {
        let report = Progress {
            percent: percent.min(100),
            message,
        };
        if let Some(sink) = &self.sink {
            sink(&report);
        }
        self.latest = Some(report);
    }
}

pub(crate) fn add_to_linker(linker: &mut Linker<JobState>) -> wasmtime::Result<()> {
    progress::add_to_linker::<JobState, HasSelf<JobProgress>>(linker, |state| &mut state.progress)
}
