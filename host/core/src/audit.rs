//! The audit log: who did what to which ids, and when, one capped stream per tenant. The
//! dashboard writes an entry for every action it takes.

use redis::AsyncCommands as _;
use redis::streams::{StreamMaxlen, StreamRangeReply};
use serde::Serialize;
use taskbox_runtime::guest_text::truncate;

use crate::auth::Principal;
use crate::store::Store;
use crate::store::keys;

/// Entries kept per tenant, about: the oldest are trimmed first.
pub const KEPT: usize = 10_000;

/// Ids named in one entry: an action on more names these and counts the rest.
pub const IDS_NAMED: usize = 100;

/// The most of an action's detail kept, in bytes.
pub const DETAIL_KEPT: usize = 512;

/// One action.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    /// When, in ms since the Unix epoch.
    pub at: u64,
    /// Who: the role and the token's hash prefix (`admin`, `operator 3f2a…`).
    pub who: String,
    /// What, such as `retry` or `queue.pause`.
    pub action: String,
    /// The ids acted on, the first [`IDS_NAMED`] of them.
    pub ids: Vec<String>,
    /// How many ids in all.
    pub count: u64,
    /// What the action was about beyond its ids, such as the selection of a bulk action.
    pub detail: String,
}

/// Writes and reads the audit log.
#[derive(Debug, Clone)]
pub struct Audit {
    store: Store,
}

impl Audit {
    /// The audit log kept in `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Records that `who` did `action` to `ids` (with `detail`, capped at [`DETAIL_KEPT`]
    /// bytes), in `who`'s tenant's log.
    pub async fn record(
        &self,
        who: &Principal,
        action: &str,
        ids: &[String],
        detail: &str,
    ) -> anyhow::Result<()> {
        let named = ids[..ids.len().min(IDS_NAMED)].join(" ");
        let () = self
            .store
            .connection()
            .xadd_maxlen(
                keys::audit(self.store.prefix(), &who.tenant),
                StreamMaxlen::Approx(KEPT),
                "*",
                &[
                    ("who", format!("{} {}", who.role, who.key)),
                    ("action", action.to_owned()),
                    ("ids", named),
                    ("count", ids.len().to_string()),
                    ("detail", truncate(detail.to_owned(), DETAIL_KEPT)),
                ],
            )
            .await?;
        Ok(())
    }

    /// `tenant`'s last `limit` entries, newest first.
    pub async fn recent(&self, tenant: &str, limit: usize) -> anyhow::Result<Vec<AuditEntry>> {
        let reply: StreamRangeReply = self
            .store
            .connection()
            .xrevrange_count(keys::audit(self.store.prefix(), tenant), "+", "-", limit)
            .await?;
        Ok(reply
            .ids
            .into_iter()
            .map(|entry| {
                let field = |name: &str| -> String {
                    entry
                        .map
                        .get(name)
                        .and_then(|value| redis::from_redis_value(value.clone()).ok())
                        .unwrap_or_default()
                };
                AuditEntry {
                    at: entry
                        .id
                        .split('-')
                        .next()
                        .and_then(|ms| ms.parse().ok())
                        .unwrap_or(0),
                    who: field("who"),
                    action: field("action"),
                    ids: field("ids").split_whitespace().map(str::to_owned).collect(),
                    count: field("count").parse().unwrap_or(0),
                    detail: field("detail"),
                }
            })
            .collect())
    }
}
