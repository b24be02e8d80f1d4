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
use crate::capabilities::sql::{CallLimits, ResultBudget};

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
    path: PathBuf,
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
        path,
    )
    .await
}

/// Runs `statements` in one transaction; returns the rows each changed.
pub(crate) async fn batch(
    path: PathBuf,
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
        path,
    )
    .await
}

/// Opens the database and runs `work` on a blocking thread. Dropping the returned future
/// (the job was cancelled, or ran out of time) interrupts the statement at its next
/// progress check.
async fn blocking<T: Send + 'static>(
    limits: CallLimits,
    work: impl FnOnce(&mut Connection) -> Result<T, Error> + Send + 'static,
    path: PathBuf,
) -> Result<T, Error> {
    let dropped = Arc::new(AtomicBool::new(false));
    let _interrupt_when_dropped = SetOnDrop(Arc::clone(&dropped));
    let task = tokio::task::spawn_blocking(move || {
        let mut conn = open(&path, limits, dropped)?;
        work(&mut conn)
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

fn open(path: &PathBuf, limits: CallLimits, dropped: Arc<AtomicBool>) -> Result<Connection, Error> {
    let flags = match limits.read_only {
        true => OpenFlags::SQLITE_OPEN_READ_ONLY,
        false => OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
    } | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    let mut conn = Connection::open_with_flags(path, flags)
        .map_err(|err| Error::Unavailable(format!("opening the database: {}", err)))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(classify)?;
    // No ATTACH at all, whatever the authorizer says.
    conn.set_limit(rusqlite::limits::Limit::SQLITE_LIMIT_ATTACHED, 0)
        .map_err(classify)?;
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

/// Names the failure: refused by the authorizer or a read-only database, interrupted at the
/// deadline, or the guest's SQL.
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
        _ if message.contains("attempt to write a readonly database")
            || message.contains("query_only") =>
        {
            Error::Denied(format!("read-only grant: {message}"))
        }
        _ => Error::Invalid(message),
    }
}
