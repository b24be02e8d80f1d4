//! Acting on many jobs at once: retrying, cancelling or deleting every job a filter matches,
//! page by page, or the jobs of a list of ids. Each job goes through the same call as when
//! it is acted on alone; a job not in a state the action applies to is skipped.

use super::Queue;
use super::query::JobFilter;
use crate::model::job::{JobRecord, JobStatus};

/// Jobs read per page of a bulk action.
const CHUNK: usize = 200;

/// What a bulk action does to each job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BulkAction {
    /// A new series of attempts, for dead jobs.
    Retry,
    /// Stop, for jobs that have not finished.
    Cancel,
    /// Delete, for finished jobs (with their dead letters).
    Delete,
}

impl BulkAction {
    /// The action's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retry => "retry",
            Self::Cancel => "cancel",
            Self::Delete => "delete",
        }
    }

    /// Whether it applies to a job with `status`.
    pub fn applies_to(self, status: JobStatus) -> bool {
        match self {
            Self::Retry => status == JobStatus::Dead,
            Self::Cancel => !status.is_finished(),
            Self::Delete => status.is_finished(),
        }
    }
}

/// How far a bulk action has come.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BulkProgress {
    /// Jobs looked at so far.
    pub matched: u64,
    /// Of those, jobs acted on; the rest were in no state the action applies to.
    pub acted: u64,
}

impl Queue {
    /// How many of `tenant`'s jobs match `filter`, counting no further than `most`; and
    /// whether that is all of them.
    pub async fn count(
        &self,
        tenant: &str,
        filter: &JobFilter,
        most: u64,
    ) -> anyhow::Result<(u64, bool)> {
        let mut count = 0;
        let mut cursor = None;
        loop {
            let page = self.list(tenant, filter, cursor.as_deref(), 500).await?;
            count += page.jobs.len() as u64;
            match page.next_cursor {
                _ if count >= most => return Ok((count.min(most), false)),
                Some(next) => cursor = Some(next),
                None => return Ok((count, true)),
            }
        }
    }

    /// Does `action` to each of `tenant`'s jobs that `filter` matches, a page at a time,
    /// telling `report` how far it has come after each page.
    pub async fn bulk(
        &self,
        tenant: &str,
        filter: &JobFilter,
        action: BulkAction,
        mut report: impl FnMut(BulkProgress),
    ) -> anyhow::Result<BulkProgress> {
        let mut progress = BulkProgress::default();
        let mut cursor = None;
        loop {
            let page = self.list(tenant, filter, cursor.as_deref(), CHUNK).await?;
            for job in &page.jobs {
                progress.matched += 1;
                progress.acted += u64::from(self.act(tenant, job, action).await?);
            }
            report(progress);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(progress),
            }
        }
    }

    /// Does `action` to each of `tenant`'s jobs among `ids`; ids of no job of the tenant are
    /// passed over.
    pub async fn bulk_ids(
        &self,
        tenant: &str,
        ids: &[String],
        action: BulkAction,
    ) -> anyhow::Result<BulkProgress> {
        let mut progress = BulkProgress::default();
        for id in ids {
            let Some(job) = self.job(id).await?.filter(|job| job.tenant == tenant) else {
                continue;
            };
            progress.matched += 1;
            progress.acted += u64::from(self.act(tenant, &job, action).await?);
        }
        Ok(progress)
    }

    /// Does `action` to `job`, if it applies; says whether it did.
    async fn act(&self, tenant: &str, job: &JobRecord, action: BulkAction) -> anyhow::Result<bool> {
        if !action.applies_to(job.status) {
            return Ok(false);
        }
        match action {
            BulkAction::Retry => match self.retry_dead(&job.id).await {
                Ok(retried) => Ok(retried),
                Err(super::RetryError::InputExpired) => Ok(false),
                Err(super::RetryError::Failed(err)) => Err(err),
            },
            BulkAction::Cancel => Ok(self.cancel(&job.id).await?.is_some_and(|outcome| {
                !matches!(outcome, super::CancelOutcome::AlreadyFinished(_))
            })),
            BulkAction::Delete => {
                self.delete_finished(tenant, std::slice::from_ref(job))
                    .await?;
                Ok(true)
            }
        }
    }
}
