//! Every Redis key and pub/sub channel taskbox uses, each under the queue's prefix
//! ([`crate::store::DEFAULT_PREFIX`], `tb:`). No other file spells a key: data already in Redis stays readable
//! only while these names stay byte for byte the same.
//!
//! Keys that a Lua script touches together share a hash tag, so they live in one Redis
//! Cluster slot: every key of a queue carries the queue's name (`{name}`), and the
//! scheduler's keys carry `{cron}`. The other keys are read and written one at a time (or in
//! pipelines without a script) and need no tag.

use crate::model::job::Priority;

/// The keys of one partition of a queue, all tagged with the partition's tag (see
/// `queue/partitions.rs`): `{queue}` for a queue of one partition.
#[derive(Debug, Clone)]
pub(crate) struct QueueKeys {
    base: String,
}

impl QueueKeys {
    pub(crate) fn new(prefix: &str, tag: &str) -> Self {
        Self {
            base: format!("{prefix}{{{tag}}}:"),
        }
    }

    /// Stream (consumer group `workers`) of the queued jobs of one priority, one entry each.
    pub(crate) fn stream(&self, priority: Priority) -> String {
        format!("{}s:{}", self.base, priority.as_str())
    }

    /// The streams, most urgent first.
    pub(crate) fn streams(&self) -> [String; 3] {
        Priority::ALL.map(|priority| self.stream(priority))
    }

    /// Sorted set of job ids scored by when they are due: delayed jobs and retries.
    pub(crate) fn delayed(&self) -> String {
        format!("{}delayed", self.base)
    }

    /// Stream of dead letters: permanently failed jobs.
    pub(crate) fn dead(&self) -> String {
        format!("{}dead", self.base)
    }

    /// Sorted set of the partition's dead jobs as `tenant:id`, scored by creation time: a
    /// listing of dead jobs reads it rather than every job.
    pub(crate) fn dead_index(&self) -> String {
        format!("{}dead-jobs", self.base)
    }

    /// Sorted set of one tenant's job ids on this queue, scored by creation time, for listing.
    pub(crate) fn tenant_index(&self, tenant: &str) -> String {
        format!("{}jobs:{tenant}", self.base)
    }

    /// Sorted set of the partition's finished jobs' ids, scored by when they finished: their
    /// records are kept for the history retention, oldest dropped first past the cap.
    pub(crate) fn finished(&self) -> String {
        format!("{}finished", self.base)
    }

    /// String holding the finish time (ms) up to which the partition's finished jobs have
    /// lost their input, result and log (the result retention), along `finished`.
    pub(crate) fn results_dropped(&self) -> String {
        format!("{}results-dropped", self.base)
    }

    /// Hash of how many of each tenant's jobs of the partition are in each state, by
    /// `tenant:status`, kept as jobs change state.
    pub(crate) fn states(&self) -> String {
        format!("{}states", self.base)
    }

    /// Sorted set of the partition's job ids, all scored 0 so that they sort by id: looking
    /// up jobs by a prefix of their id is a range of it.
    pub(crate) fn ids(&self) -> String {
        format!("{}ids", self.base)
    }

    /// Hash of the jobs completed and attempts failed in one minute (minutes since the Unix
    /// epoch), kept an hour.
    pub(crate) fn counts(&self, minute: u64) -> String {
        format!("{}counts:{minute}", self.base)
    }

    /// Hash of the jobs completed and attempts failed in one hour (hours since the Unix
    /// epoch), kept a day.
    pub(crate) fn hourly_counts(&self, hour: u64) -> String {
        format!("{}counts-h:{hour}", self.base)
    }

    /// Hash of one job: tenant, status, module, task, input, attempt, limits, outcome, times.
    pub(crate) fn job(&self, id: &str) -> String {
        format!("{}job:{id}", self.base)
    }

    /// String claiming an idempotency key of one tenant: the job id of its first use.
    pub(crate) fn idempotency(&self, tenant: &str, key: &str) -> String {
        format!("{}idem:{tenant}:{key}", self.base)
    }

    /// Pub/sub channel announcing finished jobs: the message is the job id.
    pub(crate) fn done_channel(&self) -> String {
        format!("{}done", self.base)
    }

    /// Pub/sub channel telling workers to stop a running job: the message is the job id.
    pub(crate) fn cancel_channel(&self) -> String {
        format!("{}cancel", self.base)
    }
}

/// The queue of a partition's tag: the tag is the queue's name for its first partition
/// and `queue~...` for the others (see `queue/partitions.rs`). Queue names have no `~`.
pub(crate) fn queue_of_tag(tag: &str) -> &str {
    tag.split_once('~').map_or(tag, |(queue, _)| queue)
}

/// Hash of each partitioned queue's partition tags, space-separated, by queue name (absent:
/// one partition, tagged with the queue's name).
pub(crate) fn partitions(prefix: &str) -> String {
    format!("{prefix}partitions")
}

/// Hash of the paused queues: queue name → when it was paused (ms since the Unix epoch).
pub(crate) fn paused(prefix: &str) -> String {
    format!("{prefix}paused")
}

/// Set of the names of the queues jobs were enqueued on.
pub(crate) fn queues(prefix: &str) -> String {
    format!("{prefix}queues")
}

/// Hash of each worker's last report (JSON), by worker id.
pub(crate) fn workers(prefix: &str) -> String {
    format!("{prefix}workers")
}

/// String holding a token's tenant and role (JSON), under the token's SHA-256 (hex), never
/// the token itself.
pub(crate) fn token(prefix: &str, sha256: &str) -> String {
    format!("{prefix}token:{sha256}")
}

/// String holding a dashboard session's principal (JSON), under the session id's SHA-256
/// (hex); expires with the session.
pub(crate) fn session(prefix: &str, sha256: &str) -> String {
    format!("{prefix}session:{sha256}")
}

/// Stream of a tenant's audit log: who did what to which ids, from the dashboard (capped).
pub(crate) fn audit(prefix: &str, tenant: &str) -> String {
    format!("{prefix}audit:{tenant}")
}

/// Stream of a tenant's channel's recent events, for replay (capped, expiring); also the
/// name of the pub/sub channel that delivers them live.
pub(crate) fn events(prefix: &str, tenant: &str, channel: &str) -> String {
    format!("{prefix}events:{tenant}:{channel}")
}

/// String holding a module's bytes, under their SHA-256 (hex).
pub(crate) fn module_bytes(prefix: &str, digest: &str) -> String {
    format!("{prefix}module:{digest}")
}

/// Set of the module versions (`tenant/name@version`) that use the bytes with this digest.
pub(crate) fn module_refs(prefix: &str, digest: &str) -> String {
    format!("{prefix}module-refs:{digest}")
}

/// The registry's keys of one tenant.
#[derive(Debug, Clone)]
pub(crate) struct TenantKeys {
    base: String,
}

impl TenantKeys {
    pub(crate) fn new(prefix: &str, tenant: &str) -> Self {
        Self {
            base: format!("{prefix}t:{tenant}:"),
        }
    }

    /// Set of the tenant's module names.
    pub(crate) fn modules(&self) -> String {
        format!("{}modules", self.base)
    }

    /// Hash of a module's versions: version → JSON with the manifest and digest.
    pub(crate) fn versions(&self, module: &str) -> String {
        format!("{}module:{module}", self.base)
    }

    /// String holding a module's settings and secrets set over the API (JSON).
    pub(crate) fn settings(&self, module: &str) -> String {
        format!("{}settings:{module}", self.base)
    }
}

/// The scheduler's keys, all tagged `{cron}` for its script.
#[derive(Debug, Clone)]
pub(crate) struct CronKeys {
    base: String,
}

impl CronKeys {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            base: format!("{prefix}{{cron}}:"),
        }
    }

    /// Hash of one tenant's schedules: name → JSON.
    pub(crate) fn schedules(&self, tenant: &str) -> String {
        format!("{}schedules:{tenant}", self.base)
    }

    /// Sorted set of `tenant/name` of every running schedule, scored by its next fire (ms).
    pub(crate) fn due(&self) -> String {
        format!("{}due", self.base)
    }

    /// Hash of a schedule's state (`member` is `tenant/name`): `after` (fires up to it are
    /// handled), `last_fire`, `last_job`, `last_error`.
    pub(crate) fn state(&self, member: &str) -> String {
        format!("{}state:{member}", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The part of a key Redis Cluster hashes: between the first `{` and the next `}`.
    fn hash_tag(key: &str) -> Option<&str> {
        let open = key.find('{')?;
        let close = key[open + 1..].find('}')?;
        Some(&key[open + 1..open + 1 + close])
    }

    #[test]
    fn every_key_of_a_queue_shares_its_hash_tag() {
        let keys = QueueKeys::new("tb:", "emails");
        let mut all = keys.streams().to_vec();
        all.extend([
            keys.delayed(),
            keys.dead(),
            keys.tenant_index("t{x}"),
            keys.counts(29_000_000),
            keys.hourly_counts(490_000),
            keys.finished(),
            keys.results_dropped(),
            keys.ids(),
            keys.dead_index(),
            keys.states(),
            keys.job("abc"),
            keys.idempotency("t", "{k}"),
            keys.done_channel(),
            keys.cancel_channel(),
        ]);
        for key in all {
            assert_eq!(hash_tag(&key), Some("emails"), "{key}");
        }
    }

    #[test]
    fn every_cron_key_shares_one_hash_tag() {
        let keys = CronKeys::new("tb:");
        for key in [keys.schedules("t"), keys.due(), keys.state("t/{name}")] {
            assert_eq!(hash_tag(&key), Some("cron"), "{key}");
        }
    }

    #[test]
    fn key_names_are_those_already_in_redis() {
        let queue = QueueKeys::new("tb:", "q");
        let tenant = TenantKeys::new("tb:", "acme");
        let cron = CronKeys::new("tb:");
        let names = [
            (queue.stream(Priority::High), "tb:{q}:s:high"),
            (queue.stream(Priority::Normal), "tb:{q}:s:normal"),
            (queue.stream(Priority::Low), "tb:{q}:s:low"),
            (queue.delayed(), "tb:{q}:delayed"),
            (queue.dead(), "tb:{q}:dead"),
            (queue.tenant_index("acme"), "tb:{q}:jobs:acme"),
            (queue.counts(7), "tb:{q}:counts:7"),
            (queue.hourly_counts(7), "tb:{q}:counts-h:7"),
            (queue.finished(), "tb:{q}:finished"),
            (queue.ids(), "tb:{q}:ids"),
            (queue.dead_index(), "tb:{q}:dead-jobs"),
            (queue.results_dropped(), "tb:{q}:results-dropped"),
            (queue.states(), "tb:{q}:states"),
            (queue.job("id"), "tb:{q}:job:id"),
            (queue.idempotency("acme", "k"), "tb:{q}:idem:acme:k"),
            (queue.done_channel(), "tb:{q}:done"),
            (queue.cancel_channel(), "tb:{q}:cancel"),
            (queues("tb:"), "tb:queues"),
            (partitions("tb:"), "tb:partitions"),
            (QueueKeys::new("tb:", "q").dead(), "tb:{q}:dead"),
            (QueueKeys::new("tb:", "q~2").dead(), "tb:{q~2}:dead"),
            (workers("tb:"), "tb:workers"),
            (token("tb:", "ab12"), "tb:token:ab12"),
            (events("tb:", "acme", "room"), "tb:events:acme:room"),
            (module_bytes("tb:", "ab12"), "tb:module:ab12"),
            (module_refs("tb:", "ab12"), "tb:module-refs:ab12"),
            (tenant.modules(), "tb:t:acme:modules"),
            (tenant.versions("m"), "tb:t:acme:module:m"),
            (tenant.settings("m"), "tb:t:acme:settings:m"),
            (cron.schedules("acme"), "tb:{cron}:schedules:acme"),
            (cron.due(), "tb:{cron}:due"),
            (cron.state("acme/s"), "tb:{cron}:state:acme/s"),
        ];
        for (key, name) in names {
            assert_eq!(key, name);
        }
    }
}
