//! Redis key names. Every key of a queue carries the queue's hash tag (`{name}`), so a queue
//! lives in one Redis Cluster slot and its Lua scripts may touch all its keys.

use crate::queue::job::Priority;

/// The names of one queue's keys under a prefix.
#[derive(Debug, Clone)]
pub(crate) struct QueueKeys {
    base: String,
}

impl QueueKeys {
    pub(crate) fn new(prefix: &str, queue: &str) -> Self {
        Self {
            base: format!("{prefix}{{{queue}}}:"),
        }
    }

    /// The stream of one priority.
    pub(crate) fn stream(&self, priority: Priority) -> String {
        format!("{}s:{}", self.base, priority.as_str())
    }

    /// The streams, most urgent first.
    pub(crate) fn streams(&self) -> [String; 3] {
        Priority::ALL.map(|priority| self.stream(priority))
    }

    /// Jobs waiting for a time: delayed jobs and retries, scored by when they are due.
    pub(crate) fn delayed(&self) -> String {
        format!("{}delayed", self.base)
    }

    /// Permanently failed jobs.
    pub(crate) fn dead(&self) -> String {
        format!("{}dead", self.base)
    }

    /// One tenant's job ids on this queue, scored by creation time, for listing.
    pub(crate) fn tenant_index(&self, tenant: &str) -> String {
        format!("{}jobs:{tenant}", self.base)
    }

    /// Jobs completed and attempts failed in one minute (minutes since the Unix epoch).
    pub(crate) fn counts(&self, minute: u64) -> String {
        format!("{}counts:{minute}", self.base)
    }

    /// The prefix of the job hashes.
    pub(crate) fn job_prefix(&self) -> String {
        format!("{}job:", self.base)
    }

    pub(crate) fn job(&self, id: &str) -> String {
        format!("{}job:{id}", self.base)
    }

    /// Claims an idempotency key of one tenant: the job id of its first use.
    pub(crate) fn idempotency(&self, tenant: &str, key: &str) -> String {
        format!("{}idem:{tenant}:{key}", self.base)
    }

    /// Announces finished jobs: the message is the job id.
    pub(crate) fn done_channel(&self) -> String {
        format!("{}done", self.base)
    }

    /// Tells workers to stop a running job: the message is the job id.
    pub(crate) fn cancel_channel(&self) -> String {
        format!("{}cancel", self.base)
    }
}

/// Keys shared by all queues.
/// The names of the queues jobs were enqueued on.
pub(crate) fn queues(prefix: &str) -> String {
    format!("{prefix}queues")
}

/// Worker reports by worker id.
pub(crate) fn workers(prefix: &str) -> String {
    format!("{prefix}workers")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_queue_key_shares_one_hash_tag() {
        let keys = QueueKeys::new("tb:", "emails");
        for key in [
            keys.stream(Priority::High),
            keys.delayed(),
            keys.dead(),
            keys.tenant_index("t"),
            keys.job("abc"),
            keys.idempotency("t", "k"),
        ] {
            assert!(key.starts_with("tb:{emails}:"), "{key}");
        }
    }
}
