//! `taskbox:task/sql`: parameterised SQL against the databases a module is granted.
//!
//! Backends: SQLite, embedded (`self` is a private database file per module, and the
//! operator may name shared files), and PostgreSQL databases the operator names. The host
//! binds parameters and never interpolates text into SQL. What a grant allows is enforced by
//! the database engine, not by reading the SQL: SQLite's authorizer refuses `ATTACH`,
//! `DETACH`, virtual tables, extension loading and every PRAGMA but a few that only read the
//! schema, and a read grant opens the file read-only; PostgreSQL runs each call in a
//! transaction that a read grant makes `READ ONLY`. Statements stop at the job's deadline (a
//! SQLite progress handler, PostgreSQL's `statement_timeout`), and results are capped in
//! rows and bytes.

mod postgres;
mod sqlite;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tracing::Instrument as _;
use wasmtime::component::{HasSelf, Linker};

use crate::bindings::taskbox::task::sql::{self, Error, Rows, Statement, Value};
use crate::capabilities::CallingJob;
use crate::guest_text::quote;
use crate::job::JobState;

/// The longest database name a task may give, in bytes; no database has a longer one.
pub const MAX_DATABASE_NAME_LEN: usize = 128;
/// The longest statement a task may send, in bytes.
pub const MAX_STATEMENT_BYTES: usize = 1 << 20;

/// A database the operator names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseConfig {
    /// A SQLite file.
    Sqlite {
        /// Its path.
        path: PathBuf,
    },
    /// A PostgreSQL database (`postgres://user:password@host:port/name`; no TLS).
    Postgres {
        /// Its connection URL.
        url: String,
    },
}

/// The host's databases and the caps on results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlConfig {
    /// Where the modules' own SQLite files (`self`) live; none offers no `self`.
    pub self_dir: Option<PathBuf>,
    /// The named databases.
    pub databases: BTreeMap<String, DatabaseConfig>,
    /// The most rows one query may return.
    pub max_rows: usize,
    /// The most bytes of values one query may return; also the largest single value a
    /// SQLite statement may make.
    pub max_result_bytes: usize,
    /// The largest a module's own database (`self`) may grow, in bytes.
    pub max_self_bytes: u64,
    /// Connections kept to each PostgreSQL database, per process.
    pub postgres_connections: usize,
}

impl Default for SqlConfig {
    /// No databases; 10 000 rows and 16 MiB per query; 256 MiB per module's own database;
    /// 8 connections per PostgreSQL database.
    fn default() -> Self {
        Self {
            self_dir: None,
            databases: BTreeMap::new(),
            max_rows: 10_000,
            max_result_bytes: 16 << 20,
            max_self_bytes: 256 << 20,
            postgres_connections: 8,
        }
    }
}

/// The databases of one process, opened once.
#[derive(Debug)]
pub struct SqlDatabases {
    config: SqlConfig,
    postgres: HashMap<String, Arc<postgres::Pool>>,
}

/// How one granted database is reached.
#[derive(Debug, Clone)]
enum Backend {
    Sqlite(sqlite::Database),
    Postgres(Arc<postgres::Pool>),
}

#[derive(Debug, Clone)]
struct Granted {
    backend: Backend,
    read_only: bool,
}

/// The databases one module may use, and how.
#[derive(Debug, Clone)]
pub struct SqlGrant {
    databases: HashMap<String, Granted>,
    max_rows: usize,
    max_result_bytes: usize,
}

/// Why the host's SQL configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SqlConfigError {
    /// The directory of the modules' own databases cannot be made.
    #[error("creating {}: {source}", dir.display())]
    SelfDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A PostgreSQL database's URL does not parse.
    #[error("database `{name}`: not a PostgreSQL URL: {reason}")]
    PostgresUrl {
        /// The database's name.
        name: String,
        /// What the parser said.
        reason: String,
    },
}

/// Why a module cannot have the databases its manifest asks for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqlGrantError {
    /// The tenant's or module's name cannot name a file.
    #[error("no private database for {tenant}/{module}")]
    NoFileName {
        /// The tenant.
        tenant: String,
        /// The module.
        module: String,
    },
    /// `self` asked of a host with no directory for private databases.
    #[error("this host offers no private databases")]
    NoSelf,
    /// A database the host's configuration does not name.
    #[error("this host offers no database `{0}`")]
    Unknown(String),
}

impl SqlDatabases {
    /// The databases of `config`. PostgreSQL connections are made when first used.
    pub fn new(config: SqlConfig) -> Result<Self, SqlConfigError> {
        if let Some(dir) = &config.self_dir {
            std::fs::create_dir_all(dir).map_err(|source| SqlConfigError::SelfDir {
                dir: dir.clone(),
                source,
            })?;
        }
        let postgres = config
            .databases
            .iter()
            .filter_map(|(name, database)| match database {
                DatabaseConfig::Postgres { url } => Some((name, url)),
                DatabaseConfig::Sqlite { .. } => None,
            })
            .map(|(name, url)| {
                let pool =
                    postgres::Pool::new(url, config.postgres_connections).map_err(|reason| {
                        SqlConfigError::PostgresUrl {
                            name: name.clone(),
                            reason,
                        }
                    })?;
                Ok((name.clone(), Arc::new(pool)))
            })
            .collect::<Result<_, SqlConfigError>>()?;
        Ok(Self { config, postgres })
    }

    /// Whether `self` is offered.
    pub fn offers_self(&self) -> bool {
        self.config.self_dir.is_some()
    }

    /// The names of the databases offered besides `self`.
    pub fn names(&self) -> Vec<String> {
        self.config.databases.keys().cloned().collect()
    }

    /// The grant of `module` of `tenant` for its manifest's `grants` (`self`, `NAME`,
    /// `NAME:read`); the error names a database this host does not offer.
    pub fn grant(
        &self,
        tenant: &str,
        module: &str,
        grants: &[String],
    ) -> Result<SqlGrant, SqlGrantError> {
        let mut databases = HashMap::new();
        for grant in grants {
            let (name, read_only) = match grant.strip_suffix(":read") {
                Some(name) => (name, true),
                None => (grant.as_str(), false),
            };
            let backend = match (name, &self.config.self_dir) {
                ("self", Some(dir)) => {
                    if !is_safe_name(tenant) || !is_safe_name(module) {
                        return Err(SqlGrantError::NoFileName {
                            tenant: tenant.to_owned(),
                            module: module.to_owned(),
                        });
                    }
                    Backend::Sqlite(sqlite::Database {
                        path: dir.join(format!("{tenant}--{module}.sqlite")),
                        max_bytes: Some(self.config.max_self_bytes),
                    })
                }
                ("self", None) => return Err(SqlGrantError::NoSelf),
                (name, _) => match self.config.databases.get(name) {
                    // The operator's own files: their size is the operator's business.
                    Some(DatabaseConfig::Sqlite { path }) => Backend::Sqlite(sqlite::Database {
                        path: path.clone(),
                        max_bytes: None,
                    }),
                    Some(DatabaseConfig::Postgres { .. }) => {
                        Backend::Postgres(Arc::clone(&self.postgres[name]))
                    }
                    None => return Err(SqlGrantError::Unknown(name.to_owned())),
                },
            };
            let entry = databases
                .entry(name.to_owned())
                .or_insert(Granted { backend, read_only });
            // Both `x` and `x:read` granted: the wider one wins.
            entry.read_only &= read_only;
        }
        Ok(SqlGrant {
            databases,
            max_rows: self.config.max_rows,
            max_result_bytes: self.config.max_result_bytes,
        })
    }
}

fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// What one call may take and return.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallLimits {
    pub(crate) read_only: bool,
    pub(crate) deadline: Instant,
    pub(crate) max_rows: usize,
    pub(crate) max_result_bytes: usize,
}

/// Per-job SQL state.
#[derive(Debug)]
pub(crate) struct JobSql {
    grant: Option<Arc<SqlGrant>>,
    caller: CallingJob,
}

impl JobSql {
    pub(crate) fn new(grant: Option<Arc<SqlGrant>>, caller: CallingJob) -> Self {
        Self { grant, caller }
    }

    /// The granted database `db`, or `denied` (logged).
    fn database(&self, db: &str) -> Result<(Backend, CallLimits), Error> {
        if db.len() > MAX_DATABASE_NAME_LEN {
            let reason = format!("the name is longer than {MAX_DATABASE_NAME_LEN} bytes");
            self.caller.denied("sql", db, &reason);
            return Err(Error::Denied(format!("{}: {reason}", quote(db))));
        }
        let granted = self
            .grant
            .as_ref()
            .and_then(|grant| Some((grant, grant.databases.get(db)?)));
        let Some((grant, granted)) = granted else {
            self.caller
                .denied("sql", db, "the database is not in the module's sql grants");
            return Err(Error::Denied(db.to_owned()));
        };
        let limits = CallLimits {
            read_only: granted.read_only,
            deadline: self.caller.deadline,
            max_rows: grant.max_rows,
            max_result_bytes: grant.max_result_bytes,
        };
        Ok((granted.backend.clone(), limits))
    }
}

/// Counts the `statements` of a call that ran; a write refused on a read grant is logged as
/// a denial; other errors are the guest's own.
fn note_result(
    caller: &CallingJob,
    db: &str,
    statements: usize,
    result: &Result<impl Sized, Error>,
) {
    match result {
        Ok(_) => {
            caller
                .calls
                .sql_statements
                .fetch_add(statements as u64, std::sync::atomic::Ordering::Relaxed);
        }
        Err(Error::Denied(reason)) => caller.denied("sql", db, reason),
        Err(_) => {}
    }
}

/// The span of one SQL host call: which database, never the statement or its values.
fn call_span(call: &'static str, db: &str) -> tracing::Span {
    tracing::info_span!("guest.sql", call, db = %quote(db))
}

impl sql::Host for JobSql {
    async fn query(&mut self, db: String, sql: String, params: Vec<Value>) -> Result<Rows, Error> {
        let span = call_span("query", &db);
        async move {
            let (backend, limits) = self.database(&db)?;
            check_length(&sql)?;
            let result = match backend {
                Backend::Sqlite(database) => sqlite::query(database, sql, params, limits).await,
                Backend::Postgres(pool) => pool.query(&sql, &params, limits).await,
            };
            note_result(&self.caller, &db, 1, &result);
            result
        }
        .instrument(span)
        .await
    }

    async fn execute(&mut self, db: String, sql: String, params: Vec<Value>) -> Result<u64, Error> {
        let span = call_span("execute", &db);
        async move {
            let (backend, limits) = self.database(&db)?;
            check_length(&sql)?;
            let statements = vec![Statement { sql, params }];
            let result = match backend {
                Backend::Sqlite(database) => sqlite::batch(database, statements, limits).await,
                Backend::Postgres(pool) => pool.batch(&statements, limits).await,
            }
            .map(|changed| changed.first().copied().unwrap_or(0));
            note_result(&self.caller, &db, 1, &result);
            result
        }
        .instrument(span)
        .await
    }

    async fn batch(&mut self, db: String, statements: Vec<Statement>) -> Result<Vec<u64>, Error> {
        let span = call_span("batch", &db);
        async move {
            let (backend, limits) = self.database(&db)?;
            for statement in &statements {
                check_length(&statement.sql)?;
            }
            let count = statements.len();
            let result = match backend {
                Backend::Sqlite(database) => sqlite::batch(database, statements, limits).await,
                Backend::Postgres(pool) => pool.batch(&statements, limits).await,
            };
            note_result(&self.caller, &db, count, &result);
            result
        }
        .instrument(span)
        .await
    }
}

/// Refuses a statement longer than [`MAX_STATEMENT_BYTES`] before a backend sees it.
fn check_length(sql: &str) -> Result<(), Error> {
    match sql.len() > MAX_STATEMENT_BYTES {
        true => Err(Error::TooLarge(format!(
            "a statement of {} bytes, more than {MAX_STATEMENT_BYTES} bytes",
            sql.len()
        ))),
        false => Ok(()),
    }
}

/// Counts a result against the caps as it is built.
pub(crate) struct ResultBudget {
    limits: CallLimits,
    bytes: usize,
    rows: usize,
}

impl ResultBudget {
    pub(crate) fn new(limits: CallLimits) -> Self {
        Self {
            limits,
            bytes: 0,
            rows: 0,
        }
    }

    /// Counts one more row of `values`; `too-large` past a cap.
    pub(crate) fn take(&mut self, values: &[Value]) -> Result<(), Error> {
        self.rows += 1;
        if self.rows > self.limits.max_rows {
            return Err(Error::TooLarge(format!(
                "more than {} rows (the host's max_rows)",
                self.limits.max_rows
            )));
        }
        self.bytes += values.iter().map(value_size).sum::<usize>();
        if self.bytes > self.limits.max_result_bytes {
            return Err(Error::TooLarge(format!(
                "more than {} bytes (the host's max_result_bytes)",
                self.limits.max_result_bytes
            )));
        }
        Ok(())
    }
}

fn value_size(value: &Value) -> usize {
    match value {
        Value::Null => 1,
        Value::Integer(_) | Value::Real(_) => 8,
        Value::Text(text) => text.len(),
        Value::Blob(bytes) => bytes.len(),
    }
}

pub(crate) fn add_to_linker(linker: &mut Linker<JobState>) -> wasmtime::Result<()> {
    sql::add_to_linker::<JobState, HasSelf<JobSql>>(linker, |state| &mut state.sql)
}
