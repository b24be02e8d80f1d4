//! Enqueueing jobs (`taskbox:task/jobs`): a module asks for the tasks it may `enqueue`
//! (`module/task`, `module/*`), and the host config's `[jobs]` caps how many one job may
//! enqueue and how deep a chain of jobs may grow.

use std::sync::Arc;

use serde::Deserialize;
use taskbox_runtime::Capabilities;
use taskbox_runtime::jobs::JobGrant;

use super::{HostCapabilities, HostCapability, JobScope};

/// How deep a chain of jobs may grow by default: a job enqueued by a job enqueued by ... ten
/// times.
pub const DEFAULT_MAX_CHAIN_DEPTH: u32 = 10;

/// Enqueueing jobs.
#[derive(Debug)]
pub struct Jobs;

impl HostCapability for Jobs {
    fn field(&self) -> Option<&'static str> {
        Some("enqueue")
    }

    fn imported_by(&self, interface: &str) -> bool {
        interface == "taskbox:task/jobs"
    }

    fn grant_job(&self, host: &HostCapabilities, job: &JobScope<'_>, grants: &mut Capabilities) {
        let targets = job.requested.of(self);
        if targets.is_empty() {
            return;
        }
        grants.jobs = Some(Arc::new(JobGrant {
            targets: targets.to_vec(),
            max_enqueues: host.max_enqueues,
            spawner: (job.spawner)(),
        }));
    }
}

/// The host config's `[jobs]`: jobs tasks enqueue.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobSettings {
    /// How many jobs one job may enqueue.
    pub max_enqueues: u32,
    /// How deep a chain of jobs enqueueing jobs may grow.
    pub max_chain_depth: u32,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            max_enqueues: JobGrant::DEFAULT_MAX_ENQUEUES,
            max_chain_depth: DEFAULT_MAX_CHAIN_DEPTH,
        }
    }
}
