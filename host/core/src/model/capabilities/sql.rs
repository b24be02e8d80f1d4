//! SQL (`taskbox:task/sql`): a module asks for `sql` databases (`self`, its own SQLite
//! database; `NAME` or `NAME:read`, one the operator names), the policy must offer them, and
//! the host config's `[sql]` says where they are and caps each query.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use taskbox_runtime::Capabilities;
use taskbox_runtime::guest_text::quote;
use taskbox_runtime::sql::{DatabaseConfig, SqlConfig};

use super::{HostCapabilities, HostCapability, ModuleScope};
use crate::model::manifest::{Policy, size};
use crate::model::names::is_plain_name;

/// SQL databases.
#[derive(Debug)]
pub struct Sql;

impl HostCapability for Sql {
    fn field(&self) -> Option<&'static str> {
        Some("sql")
    }

    fn imported_by(&self, interface: &str) -> bool {
        interface == "taskbox:task/sql"
    }

    fn check_request(&self, request: &[String]) -> Result<(), String> {
        match request.iter().find(|grant| !is_plain_name(database(grant))) {
            Some(grant) => Err(format!("{} is not `self`, NAME or NAME:read", quote(grant))),
            None => Ok(()),
        }
    }

    fn check_policy(&self, request: &[String], policy: &Policy) -> Result<(), String> {
        for grant in request {
            let allowed = match database(grant) {
                "self" => policy.sql_self,
                name => policy.sql_databases.iter().any(|known| known == name),
            };
            if !allowed {
                return Err(format!(
                    "database {} is not offered by this host",
                    quote(database(grant))
                ));
            }
        }
        Ok(())
    }

    fn grant_module(
        &self,
        host: &HostCapabilities,
        module: &ModuleScope<'_>,
        grants: &mut Capabilities,
    ) {
        let (Some(databases), requested) = (&host.sql, module.requested.of(self)) else {
            return;
        };
        if requested.is_empty() {
            return;
        }
        grants.sql = databases
            .grant(module.tenant, module.module, requested)
            .inspect_err(|reason| tracing::warn!(module = %module.module, "no SQL: {reason}"))
            .ok()
            .map(Arc::new);
    }
}

/// The database a grant names: `NAME` of `NAME:read`.
fn database(grant: &str) -> &str {
    grant.strip_suffix(":read").unwrap_or(grant)
}

/// The host config's `[sql]`: the databases tasks may use.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqlSettings {
    /// Where the modules' own SQLite databases (`self`) live, on each worker's disk.
    pub self_dir: PathBuf,
    /// Databases modules may ask for by name: `{ sqlite = "PATH" }` or
    /// `{ postgres = "postgres://user:password@host/db" }`.
    pub databases: BTreeMap<String, DatabaseSetting>,
    /// The most rows one query may return.
    pub max_rows: usize,
    /// The most bytes of values one query may return, and the largest value a SQLite
    /// statement may make (`"16MiB"`).
    #[serde(with = "size")]
    pub max_result_size: u64,
    /// The largest a module's own database (`self`) may grow (`"256MiB"`).
    #[serde(with = "size")]
    pub max_self_size: u64,
    /// Connections each worker keeps to each PostgreSQL database.
    pub postgres_connections: usize,
}

/// One database the operator names.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum DatabaseSetting {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL URL.
    Postgres(String),
}

/// Never shows a PostgreSQL URL, which may hold a password.
impl std::fmt::Debug for DatabaseSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Self::Postgres(_) => f.write_str("Postgres(..)"),
        }
    }
}

impl Default for SqlSettings {
    fn default() -> Self {
        let defaults = SqlConfig::default();
        Self {
            self_dir: PathBuf::from("taskbox-data/sql"),
            databases: BTreeMap::new(),
            max_rows: defaults.max_rows,
            max_result_size: defaults.max_result_bytes as u64,
            max_self_size: defaults.max_self_bytes,
            postgres_connections: defaults.postgres_connections,
        }
    }
}

impl SqlSettings {
    /// The runtime's configuration.
    pub fn config(&self) -> SqlConfig {
        SqlConfig {
            self_dir: Some(self.self_dir.clone()),
            databases: self
                .databases
                .iter()
                .map(|(name, database)| {
                    let database = match database {
                        DatabaseSetting::Sqlite(path) => {
                            DatabaseConfig::Sqlite { path: path.clone() }
                        }
                        DatabaseSetting::Postgres(url) => {
                            DatabaseConfig::Postgres { url: url.clone() }
                        }
                    };
                    (name.clone(), database)
                })
                .collect(),
            max_rows: self.max_rows,
            max_result_bytes: usize::try_from(self.max_result_size).unwrap_or(usize::MAX),
            max_self_bytes: self.max_self_size,
            postgres_connections: self.postgres_connections,
        }
    }
}
