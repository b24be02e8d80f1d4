//! The data taskbox keeps and checks, with no I/O: manifests and the operator's policy, job
//! records and their statuses, priorities and backoff, cron expressions and names. Every
//! other module of the crate may use these; these use none of them.

pub mod cron;
pub mod job;
pub mod manifest;
pub mod names;
