//! Host capabilities: the only doors out of the sandbox.
//!
//! Each capability is one module with the same small shape: its grant (what the operator and
//! the module's manifest allow, and what backs it), its per-job state (kept in the job's
//! [`Store`](wasmtime::Store)) and an `add_to_linker` that links its interface. Adding a
//! capability touches no other capability. A job starts with [`Capabilities::default`]: every
//! door shut, so each call answers `denied`. Interfaces no module here provides (like
//! `wasi:filesystem` or `wasi:sockets`) are absent from the linker on purpose, so a component
//! importing one fails to load with an error that names the import.

pub mod config;
pub mod events;
pub mod http;
pub mod jobs;
pub(crate) mod log;
pub(crate) mod progress;
pub mod sql;
pub(crate) mod wasi;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use wasmtime::component::{HasSelf, Linker};

use crate::bindings::taskbox::task::types;
use crate::guest_text::quote;
use crate::job::JobState;
use crate::outcome::HostCalls;
use crate::trace::TraceParent;

/// What one job may reach beyond its sandbox, capability by capability. The default grants
/// nothing.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    /// Outbound HTTP (`wasi:http/outgoing-handler`).
    pub http: Option<Arc<http::HttpGrant>>,
    /// SQL databases (`taskbox:task/sql`).
    pub sql: Option<Arc<sql::SqlGrant>>,
    /// Event channels (`taskbox:task/events`).
    pub events: Option<Arc<events::EventGrant>>,
    /// Enqueueing further jobs (`taskbox:task/jobs`).
    pub jobs: Option<Arc<jobs::JobGrant>>,
    /// The module's settings (`taskbox:task/config`).
    pub config: Arc<config::ConfigValues>,
}

/// Who is calling, for denials and deadlines: the same for every capability of a job.
#[derive(Debug, Clone)]
pub(crate) struct CallingJob {
    /// The job id (shared: every capability of the job holds a copy of the caller).
    pub(crate) job: Arc<str>,
    /// The module's name.
    pub(crate) module: Arc<str>,
    /// When the job's attempt ends.
    pub(crate) deadline: std::time::Instant,
    /// The job's log, where denials are written for the task's author to see.
    pub(crate) log: log::JobLog,
    /// The job's denials so far, across its capabilities.
    pub(crate) denials: Arc<AtomicU32>,
    /// What the job asked of its capabilities, for its stats.
    pub(crate) calls: Arc<CallCounts>,
    /// The job run's trace context, which its host calls continue when nothing exports
    /// spans (when something does, each call's own span is the parent).
    pub(crate) traceparent: Option<TraceParent>,
}

/// [`HostCalls`] as they are counted, from any of the job's host calls.
#[derive(Debug, Default)]
pub(crate) struct CallCounts {
    pub(crate) http_sent: AtomicU64,
    pub(crate) http_failed: AtomicU64,
    pub(crate) http_denied: AtomicU64,
    pub(crate) sql_statements: AtomicU64,
    pub(crate) sql_denied: AtomicU64,
    pub(crate) events_published: AtomicU64,
}

impl CallCounts {
    /// Adds one to `counter`.
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn counts(&self) -> HostCalls {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        HostCalls {
            http_sent: read(&self.http_sent),
            http_failed: read(&self.http_failed),
            http_denied: read(&self.http_denied),
            sql_statements: read(&self.sql_statements),
            sql_denied: read(&self.sql_denied),
            events_published: read(&self.events_published),
        }
    }
}

/// The denials of one job the host's log shows; the job's own log, bounded, shows them all.
pub(crate) const LOGGED_DENIALS: u32 = 5;

impl CallingJob {
    /// Records that `capability` refused `target`: in the host's log with module, job and
    /// target, and in the job's log. Either shows only the start of a long target, so a
    /// guest cannot make the host write its values over and over; and the host's log shows
    /// only a job's first [`LOGGED_DENIALS`], so a guest refused in a loop cannot fill the
    /// operator's disk (one job of the hostile suite wrote 340 KB of them in a second).
    pub(crate) fn denied(&self, capability: &str, target: &str, reason: &str) {
        match capability {
            "http" => CallCounts::add(&self.calls.http_denied),
            "sql" => CallCounts::add(&self.calls.sql_denied),
            _ => {}
        }
        let target = quote(target);
        let denials = self
            .denials
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if denials <= LOGGED_DENIALS {
            tracing::warn!(
                module = %self.module,
                job = %self.job,
                capability,
                %target,
                "capability denied: {reason}"
            );
        } else if denials == LOGGED_DENIALS + 1 {
            tracing::warn!(
                module = %self.module,
                job = %self.job,
                "capability denied again: this job's further denials are only in its own log"
            );
        }
        self.log
            .append(format!("[taskbox] {capability} denied for {target}: {reason}\n").as_bytes());
    }
}

/// Links every capability this host provides.
pub(crate) fn add_to_linker(linker: &mut Linker<JobState>) -> wasmtime::Result<()> {
    wasi::add_to_linker(linker)?;
    types::add_to_linker::<JobState, HasSelf<JobState>>(linker, |state| state)?;
    log::add_to_linker(linker)?;
    progress::add_to_linker(linker)?;
    http::add_to_linker(linker)?;
    sql::add_to_linker(linker)?;
    events::add_to_linker(linker)?;
    jobs::add_to_linker(linker)?;
    config::add_to_linker(linker)?;
    Ok(())
}

/// `taskbox:task/types` defines only types; linking it lets components name them.
impl types::Host for JobState {}

/// Whether `name` matches `pattern`, where `*` in the pattern stands for any run of
/// characters (including none). Grants of event channels and enqueue targets use it.
pub(crate) fn glob_matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::glob_matches;

    #[test]
    fn globs_match_runs_of_any_characters() {
        assert!(glob_matches("upload:*", "upload:42"));
        assert!(glob_matches("upload:*", "upload:"));
        assert!(!glob_matches("upload:*", "uploads:42"));
        assert!(glob_matches("*", "anything"));
        assert!(glob_matches("a*b*c", "a-x-b-y-c"));
        assert!(!glob_matches("a*b*c", "a-x-c-y-b"));
        assert!(glob_matches("thumbs/*", "thumbs/resize"));
        assert!(!glob_matches("thumbs/resize", "thumbs/resize2"));
        assert!(!glob_matches("a*a", "a"));
    }
}
