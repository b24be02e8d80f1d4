//! The data taskbox keeps and checks, with no I/O: manifests and the operator's policy, job
//! records and their statuses, priorities and backoff, cron expressions and names, and the
//! host side of each capability (what a manifest asks, what the policy allows, what a job is
//! granted). Every
//! other module of the crate may use these; these use none of them.

pub mod capabilities;
pub mod cron;
pub mod job;
pub mod manifest;
pub mod module;
pub mod names;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `time` in whole milliseconds since the Unix epoch, as records store times.
pub fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, millis)
}

/// Whole milliseconds, at most `u64::MAX` (a cast would wrap).
pub fn millis(duration: Duration) -> u64 {
    duration.as_millis().try_into().unwrap_or(u64::MAX)
}
