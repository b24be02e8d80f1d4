//! Per-job resource limits and the memory accounting that enforces them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What one job may consume. Every job runs with all of these set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Fuel units (about one per WebAssembly instruction) the job may burn.
    pub fuel: u64,
    /// Wall-clock time from the start of instantiation, including time blocked in host calls.
    #[serde(with = "duration_millis")]
    pub timeout: Duration,
    /// Bytes of linear memory, all of the component's memories together.
    pub memory: u64,
    /// Bytes of log (guest stdout, stderr and `log` lines) kept; the rest is dropped with a
    /// marker.
    pub log_bytes: usize,
    /// Bytes of output a task may return.
    pub output_bytes: usize,
    /// Bytes of a task error's message kept; the rest is dropped with a marker.
    pub error_bytes: usize,
    /// Bytes of a progress report's message kept; the rest is dropped with a marker.
    pub progress_bytes: usize,
    /// Bytes of heap the host may hold on the job's behalf at once (what the guest hands it:
    /// header fields, requests, rows, strings); past it the job ends with `host_memory_limit`.
    /// Counted only where [`crate::host_memory::CountingAllocator`] is the global allocator.
    #[serde(default = "default_host_memory")]
    pub host_memory: u64,
}

fn default_host_memory() -> u64 {
    Limits::DEFAULT_HOST_MEMORY
}

impl Limits {
    /// 50 billion fuel units: roughly 10 to 30 seconds of compute on a current x86 core, so
    /// that by default the wall-clock timeout, not fuel, bounds a busy job.
    pub const DEFAULT_FUEL: u64 = 50_000_000_000;
    /// 30 seconds.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
    /// 128 MiB.
    pub const DEFAULT_MEMORY: u64 = 128 << 20;
    /// 64 KiB.
    pub const DEFAULT_LOG_BYTES: usize = 64 << 10;
    /// 1 MiB, the queue's result cap.
    pub const DEFAULT_OUTPUT_BYTES: usize = 1 << 20;
    /// 16 KiB: room for a stack trace, not for a payload.
    pub const DEFAULT_ERROR_BYTES: usize = 16 << 10;
    /// 1 KiB: a progress message says what a job is doing, in a line or two.
    pub const DEFAULT_PROGRESS_BYTES: usize = 1 << 10;
    /// 64 MiB: half the guest's own default, and room for every host resource a job may hold
    /// (1,024) at the default header cap.
    pub const DEFAULT_HOST_MEMORY: u64 = 64 << 20;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel: Self::DEFAULT_FUEL,
            timeout: Self::DEFAULT_TIMEOUT,
            memory: Self::DEFAULT_MEMORY,
            log_bytes: Self::DEFAULT_LOG_BYTES,
            output_bytes: Self::DEFAULT_OUTPUT_BYTES,
            error_bytes: Self::DEFAULT_ERROR_BYTES,
            progress_bytes: Self::DEFAULT_PROGRESS_BYTES,
            host_memory: Self::DEFAULT_HOST_MEMORY,
        }
    }
}

/// Durations serialize as milliseconds, which every language reads.
pub(crate) mod duration_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().try_into().unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// Upper bounds on the number of instances, tables and memories one job may create, and on
/// table size. A component of any of the supported languages fits well inside them.
const MAX_INSTANCES: usize = 64;
const MAX_TABLES: usize = 64;
const MAX_MEMORIES: usize = 16;
pub(crate) const MAX_TABLE_ELEMENTS: usize = 100_000;

/// The most host resources (HTTP header fields, requests, bodies, streams, pollables) one job
/// may hold at once. Each lives in the host's memory, not the guest's: with header fields
/// capped at [`MAX_HEADER_BYTES`] each, a job can make the host hold at most 64 MiB of them.
/// A guest asking for one more traps.
pub(crate) const MAX_HOST_RESOURCES: usize = 1024;
/// The most bytes of names and values one set of HTTP header fields that a guest makes may
/// hold, when no HTTP grant sets its own `max_header_bytes`.
pub(crate) const MAX_HEADER_BYTES: usize = 64 << 10;

/// Accounts the job's linear memory across all of its memories and refuses growth past the
/// limit. Remembers the peak and whether the limit was hit, so that a guest that aborts after
/// a failed allocation is reported as `memory_limit`, not as a plain trap.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    limit: usize,
    current: usize,
    peak: usize,
    hit: bool,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            current: 0,
            peak: 0,
            hit: false,
        }
    }

    pub(crate) fn peak(&self) -> u64 {
        self.peak as u64
    }

    pub(crate) fn limit_hit(&self) -> bool {
        self.hit
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.current - current.min(self.current) + desired;
        if total > self.limit {
            self.hit = true;
            return Ok(false);
        }
        self.current = total;
        self.peak = self.peak.max(total);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::ResourceLimiter;

    use super::*;

    #[test]
    fn counts_all_memories_together_and_remembers_the_peak() {
        let mut limiter = MemoryLimiter::new(100);
        assert!(limiter.memory_growing(0, 60, None).unwrap());
        assert!(limiter.memory_growing(0, 30, None).unwrap());
        assert!(
            !limiter.memory_growing(60, 80, None).unwrap(),
            "90 + 20 > 100"
        );
        assert!(limiter.limit_hit());
        assert_eq!(limiter.peak(), 90);
    }
}
