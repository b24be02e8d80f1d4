//! The SQLite backend: a connection per call, opened off the async executor, fenced by an
//! authorizer and stopped by a progress handler at the job's deadline or when the call is
//! dropped (the job was cancelled or timed out).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::types::{Value as SqliteValue, ValueRef};
use rusqlite::{Connection, OpenFlags, params_from_iter};

use crate::bindings::taskbox::task::sql::{Error, Rows, Statement, Value};
use crate::capabilities::sql::{CallLimits, MAX_STATEMENT_BYTES, ResultBudget};

/// A SQLite file a module is granted.
#[derive(Debug, Clone)]
pub(crate) struct Database {
    pub(crate) path: PathBuf,
    /// The most bytes the file may grow to; none for no cap.
    pub(crate) max_bytes: Option<u64>,
}

/// PRAGMAs a statement may use: they only read the schema.
const READING_PRAGMAS: &[&str] = &[
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
];

/// How long a call waits for another writer's lock before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `sql` and returns its rows.
pub(crate) async fn query(
    database: Database,
    sql: String,
    params: Vec<Value>,
    limits: CallLimits,
) -> Result<Rows, Error> {
    blocking(
        limits,
        move |conn| {
            let mut statement = conn.prepare(&sql).map_err(classify)?;
            let columns: Vec<String> = statement.column_names().map(str::to_owned).collect();
            let mut budget = ResultBudget::new(limits);
            let mut rows = Vec::new();
            let mut cursor = statement
                .query(params_from_iter(params.into_iter().map(to_sqlite)))
                .map_err(classify)?;
            while let Some(row) = cursor.next().map_err(classify)? {
                let values = (0..columns.len())
                    .map(|index| row.get_ref(index).map(from_sqlite))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(classify)?;
                budget.take(&values)?;
                rows.push(values);
            }
            Ok(Rows { columns, rows })
        },
        database,
    )
    .await
}

/// Runs `statements` in one transaction; returns the rows each changed.
pub(crate) async fn batch(
    database: Database,
    statements: Vec<Statement>,
    limits: CallLimits,
) -> Result<Vec<u64>, Error> {
    blocking(
        limits,
        move |conn| {
            host_statement(conn, "BEGIN")?;
            let mut changed = Vec::with_capacity(statements.len());
            for statement in statements {
                let params = params_from_iter(statement.params.into_iter().map(to_sqlite));
                match conn.execute(&statement.sql, params) {
                    Ok(count) => changed.push(count as u64),
                    Err(err) => {
                        // Closing the connection would roll back too; this says so plainly.
                        let _ = host_statement(conn, "ROLLBACK");
                        return Err(classify(err));
                    }
                }
            }
            host_statement(conn, "COMMIT")?;
            Ok(changed)
        },
        database,
    )
    .await
}

/// Opens the database and runs `work` on a blocking thread. Dropping the returned future
/// (the job was cancelled, or ran out of time) interrupts the statement at its next
/// progress check.
async fn blocking<T: Send + 'static>(
    limits: CallLimits,
    work: impl FnOnce(&mut Connection) -> Result<T, Error> + Send + 'static,
    database: Database,
) -> Result<T, Error> {
    let dropped = Arc::new(AtomicBool::new(false));
    let _interrupt_when_dropped = SetOnDrop(Arc::clone(&dropped));
    let task = tokio::task::spawn_blocking(move || {
        let mut conn = open(&database, limits, dropped)?;
        work(&mut conn).map_err(|err| name_the_cap(err, &database, limits))
    });
    task.await
        .map_err(|err| Error::Unavailable(format!("the SQLite call failed: {err}")))?
}

struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn open(
    database: &Database,
    limits: CallLimits,
    dropped: Arc<AtomicBool>,
) -> Result<Connection, Error> {
    let flags = match limits.read_only {
        true => OpenFlags::SQLITE_OPEN_READ_ONLY,
        false => OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
    } | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    let mut conn = Connection::open_with_flags(&database.path, flags)
        .map_err(|err| Error::Unavailable(format!("opening the database: {}", err)))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(classify)?;
    // No ATTACH at all, whatever the authorizer says.
    conn.set_limit(rusqlite::limits::Limit::SQLITE_LIMIT_ATTACHED, 0)
        .map_err(classify)?;
    // No value larger than a whole result may be: without this, one `randomblob` or
    // `zeroblob` could make the host hold up to SQLite's default of 1 GB.
    let max_value = i32::try_from(limits.max_result_bytes).unwrap_or(i32::MAX);
    conn.set_limit(rusqlite::limits::Limit::SQLITE_LIMIT_LENGTH, max_value)
        .map_err(classify)?;
    let max_statement = i32::try_from(MAX_STATEMENT_BYTES).unwrap_or(i32::MAX);
    conn.set_limit(
        rusqlite::limits::Limit::SQLITE_LIMIT_SQL_LENGTH,
        max_statement,
    )
    .map_err(classify)?;
    // The quota holds for this connection only, so every call sets it again; the pages
    // already in the file count against it.
    if let Some(max_bytes) = database.max_bytes {
        let page_size: i64 = conn
            .pragma_query_value(None, "page_size", |row| row.get(0))
            .map_err(classify)?;
        let max_pages = i64::try_from(max_bytes).unwrap_or(i64::MAX) / page_size.max(1);
        conn.pragma_update(None, "max_page_count", max_pages)
            .map_err(classify)?;
    }
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)
        .map_err(classify)?;
    if limits.read_only {
        conn.pragma_update(None, "query_only", true)
            .map_err(classify)?;
    }
    conn.authorizer(Some(authorize)).map_err(classify)?;
    let deadline = limits.deadline;
    conn.progress_handler(
        1000,
        Some(move || Instant::now() >= deadline || dropped.load(Ordering::Relaxed)),
    )
    .map_err(classify)?;
    Ok(conn)
}

/// Runs the host's own transaction control, which the authorizer refuses to guests.
fn host_statement(conn: &mut Connection, sql: &str) -> Result<(), Error> {
    conn.authorizer(None::<fn(AuthContext<'_>) -> Authorization>)
        .map_err(classify)?;
    let done = conn.execute_batch(sql).map_err(classify);
    conn.authorizer(Some(authorize)).map_err(classify)?;
    done
}

fn authorize(context: AuthContext<'_>) -> Authorization {
    match context.action {
        AuthAction::Attach { .. }
        | AuthAction::Detach { .. }
        // The host runs each call in its own transaction.
        | AuthAction::Transaction { .. }
        | AuthAction::CreateVtable { .. }
        | AuthAction::DropVtable { .. } => Authorization::Deny,
        AuthAction::Pragma { pragma_name, .. }
            if !READING_PRAGMAS.contains(&pragma_name.to_ascii_lowercase().as_str()) =>
        {
            Authorization::Deny
        }
        AuthAction::Function { function_name }
            if function_name.eq_ignore_ascii_case("load_extension") =>
        {
            Authorization::Deny
        }
        _ => Authorization::Allow,
    }
}

fn to_sqlite(value: Value) -> SqliteValue {
    match value {
        Value::Null => SqliteValue::Null,
        Value::Integer(n) => SqliteValue::Integer(n),
        Value::Real(x) => SqliteValue::Real(x),
        Value::Text(text) => SqliteValue::Text(text),
        Value::Blob(bytes) => SqliteValue::Blob(bytes),
    }
}

fn from_sqlite(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(n) => Value::Integer(n),
        ValueRef::Real(x) => Value::Real(x),
        ValueRef::Text(text) => Value::Text(String::from_utf8_lossy(text).into_owned()),
        ValueRef::Blob(bytes) => Value::Blob(bytes.to_vec()),
    }
}

/// Names the cap that SQLite's "too big" and "full" errors hit, which only the call knows.
/// A full database with a quota hit its quota (the guest's doing); one without ran out of
/// disk (an outage).
fn name_the_cap(err: Error, database: &Database, limits: CallLimits) -> Error {
    match (err, database.max_bytes) {
        (Error::TooLarge(message), _) if message == TOO_BIG => Error::TooLarge(format!(
            "a value larger than {} bytes (the host's max_result_bytes)",
            limits.max_result_bytes
        )),
        (Error::TooLarge(message), Some(max_bytes)) if message == FULL => Error::TooLarge(format!(
            "the database is full: it may hold {max_bytes} bytes (the host's max_self_size)"
        )),
        (Error::TooLarge(message), None) if message == FULL => {
            Error::Unavailable("the disk is full".into())
        }
        (err, _) => err,
    }
}

/// What [`classify`] says of a value past `SQLITE_LIMIT_LENGTH`, before [`name_the_cap`].
const TOO_BIG: &str = "a value too large";
/// What [`classify`] says of a full database, before [`name_the_cap`].
const FULL: &str = "the database is full";

/// Names the failure: refused by the authorizer or a read-only database, interrupted at the
/// deadline, a value or the database past a cap, or the guest's SQL.
fn classify(err: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode;
    let message = err.to_string();
    match err.sqlite_error_code() {
        Some(ErrorCode::AuthorizationForStatementDenied) => Error::Denied(format!(
            "not authorized: {message} (ATTACH, DETACH, transaction control, virtual tables, extensions and PRAGMAs that change settings are refused)"
        )),
        Some(ErrorCode::ReadOnly) => Error::Denied(format!("read-only grant: {message}")),
        Some(ErrorCode::OperationInterrupted) => Error::Timeout,
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Error::Unavailable(message),
        Some(ErrorCode::TooBig) => Error::TooLarge(TOO_BIG.into()),
        Some(ErrorCode::DiskFull) => Error::TooLarge(FULL.into()),
        _ if message.contains("attempt to write a readonly database")
            || message.contains("query_only") =>
        {
            Error::Denied(format!("read-only grant: {message}"))
        }
        _ => Error::Invalid(message),
    }
}
