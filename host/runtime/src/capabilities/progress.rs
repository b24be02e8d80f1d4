//! `taskbox:task/progress`: the job's latest progress, kept on the job and handed to a sink.
//!
//! A report's message is cut to the job's [`Limits::progress_bytes`](crate::Limits) before
//! anything keeps it, so a guest that reports in a loop holds one small report on the host.

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use crate::bindings::taskbox::task::progress;
use crate::guest_text;
use crate::job::JobState;
use crate::outcome::Progress;

/// Receives every progress report as it happens (the CLI prints it; a worker keeps the
/// latest and writes it to the job on a tick). It must not block: it runs inside the guest's
/// call.
pub type ProgressSink = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Per-job progress state.
pub(crate) struct JobProgress {
    pub(crate) latest: Option<Progress>,
    pub(crate) sink: Option<ProgressSink>,
    /// The most bytes of a message kept.
    pub(crate) max_message_bytes: usize,
}

impl progress::Host for JobProgress {
    fn report(&mut self, percent: u8, message: String) {
        let report = Progress {
            percent: percent.min(100),
            message: guest_text::truncate(message, self.max_message_bytes),
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
