//! Tenants, roles, bearer tokens and the dashboard's sessions.
//!
//! A token belongs to one tenant and has one role. Only its SHA-256 is stored (in Redis, under
//! the key `store::keys::token` names), so a leaked Redis dump holds no usable token, and tokens are
//! never logged.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use anyhow::bail;
use redis::AsyncCommands as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::model::names::is_plain_name;
use crate::model::unix_millis;
use crate::store::Store;
use crate::store::keys;

/// The tenant of local development and of the operator's admin token.
pub const DEFAULT_TENANT: &str = "default";

/// What a token may do. Each role may do everything the one before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read modules, jobs, dead letters, queues and workers.
    Viewer,
    /// Also upload modules, enqueue, cancel and retry jobs.
    Operator,
    /// Also delete modules and purge dead letters.
    Admin,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Viewer, Self::Operator, Self::Admin]
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| format!("unknown role `{s}` (viewer, operator, admin)"))
    }
}

/// Who is calling: a tenant and a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// The tenant whose modules, jobs and channels the caller sees.
    pub tenant: String,
    /// What the caller may do.
    pub role: Role,
    /// Identifies the token for rate limiting (a prefix of its hash), never the token.
    pub key: String,
}

impl Principal {
    /// The admin of the default tenant: the operator's token, or anyone on an open
    /// development server.
    pub fn default_admin() -> Self {
        Self {
            tenant: DEFAULT_TENANT.to_owned(),
            role: Role::Admin,
            key: "admin".to_owned(),
        }
    }
}

/// Creates and checks tokens.
#[derive(Debug, Clone)]
pub struct Tokens {
    store: Store,
}

#[derive(Serialize, Deserialize)]
struct StoredToken {
    tenant: String,
    role: Role,
    created_at: u64,
}

impl Tokens {
    /// Tokens kept in `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Creates a token for `tenant` with `role` and returns it. It is shown once: only its
    /// hash is kept.
    pub async fn create(&self, tenant: &str, role: Role) -> anyhow::Result<String> {
        if !is_plain_name(tenant) {
            bail!("invalid tenant name `{tenant}`: use 1 to 64 letters, digits, `-`, `_` or `.`");
        }
        let token = format!(
            "tbx_{:032x}{:032x}",
            rand::random::<u128>(),
            rand::random::<u128>()
        );
        let stored = StoredToken {
            tenant: tenant.to_owned(),
            role,
            created_at: unix_millis(SystemTime::now()),
        };
        let () = self
            .store
            .connection()
            .set(self.key(&token), serde_json::to_string(&stored)?)
            .await?;
        Ok(token)
    }

    /// Who `token` belongs to, if it is a token at all.
    pub async fn verify(&self, token: &str) -> anyhow::Result<Option<Principal>> {
        let stored: Option<String> = self.store.connection().get(self.key(token)).await?;
        let Some(stored) = stored else {
            return Ok(None);
        };
        let stored: StoredToken = serde_json::from_str(&stored)?;
        Ok(Some(Principal {
            tenant: stored.tenant,
            role: stored.role,
            key: hash(token)[..16].to_owned(),
        }))
    }

    fn key(&self, token: &str) -> String {
        keys::token(self.store.prefix(), &hash(token))
    }
}

/// The SHA-256 of a token, in hex.
pub(crate) fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compares a presented token with the configured one in time independent of where they
/// differ.
pub fn same_token(presented: &str, configured: &str) -> bool {
    let (a, b) = (hash(presented), hash(configured));
    a.bytes()
        .zip(b.bytes())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The dashboard's sessions: a login exchanges a token for a session id, kept in a cookie,
/// so the token itself never sits in the browser. Like tokens, only a session id's SHA-256
/// is stored, with the principal it stands for, and it expires by itself.
#[derive(Debug, Clone)]
pub struct Sessions {
    store: Store,
    lifetime: Duration,
}

impl Sessions {
    /// Sessions kept in `store`, each ending `lifetime` after it began.
    pub fn new(store: Store, lifetime: Duration) -> Self {
        Self { store, lifetime }
    }

    /// Begins a session for `principal`; returns its id.
    pub async fn begin(&self, principal: &Principal) -> anyhow::Result<String> {
        let id = format!(
            "{:032x}{:032x}",
            rand::random::<u128>(),
            rand::random::<u128>()
        );
        let () = self
            .store
            .connection()
            .set_ex(
                self.key(&id),
                serde_json::to_string(principal)?,
                self.lifetime.as_secs().max(1),
            )
            .await?;
        Ok(id)
    }

    /// Who session `id` stands for, while it lasts.
    pub async fn find(&self, id: &str) -> anyhow::Result<Option<Principal>> {
        let stored: Option<String> = self.store.connection().get(self.key(id)).await?;
        Ok(stored
            .map(|stored| serde_json::from_str(&stored))
            .transpose()?)
    }

    /// Ends session `id`.
    pub async fn end(&self, id: &str) -> anyhow::Result<()> {
        let () = self.store.connection().del(self.key(id)).await?;
        Ok(())
    }

    /// How long a session lasts.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    fn key(&self, id: &str) -> String {
        keys::session(self.store.prefix(), &hash(id))
    }
}
