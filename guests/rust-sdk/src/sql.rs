//! Parameterised SQL against the databases the module is granted (`sql = ["self"]` in the
//! manifest for its private SQLite database; operator-named SQLite or PostgreSQL databases by
//! name, `NAME:read` for read-only). Values are bound, never spliced into the SQL.
//!
//! ```no_run
//! use taskbox_guest::sql;
//!
//! # fn example() -> Result<(), sql::SqlError> {
//! sql::execute("self", "CREATE TABLE IF NOT EXISTS orders (id INTEGER, total REAL)", &[])?;
//! sql::execute("self", "INSERT INTO orders VALUES (?, ?)", &[42.into(), 9.5.into()])?;
//! let rows = sql::query("self", "SELECT count(*) AS n, sum(total) AS sum FROM orders", &[])?;
//! let n = rows.get(0, "n").and_then(sql::Value::as_integer);
//! # Ok(())
//! # }
//! ```

use crate::TaskError;
use crate::bindings::taskbox::task::sql::{self as wit, Error};

pub use crate::bindings::taskbox::task::sql::{Statement, Value};

/// Why a statement failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlError {
    /// Not granted this database, or not for writing, or refused by the engine's guard
    /// (ATTACH, PRAGMAs that change settings, extensions).
    Denied(String),
    /// Not valid SQL, or a constraint failed: the database's message.
    Invalid(String),
    /// The result passed the host's row or byte cap.
    TooLarge(String),
    /// The statement ran past the job's deadline.
    Timeout,
    /// The database could not be reached: worth retrying the job.
    Unavailable(String),
}

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Denied(reason) => write!(f, "denied: {reason}"),
            Self::Invalid(reason) => write!(f, "invalid SQL: {reason}"),
            Self::TooLarge(reason) => write!(f, "result too large: {reason}"),
            Self::Timeout => f.write_str("the statement ran past the job's deadline"),
            Self::Unavailable(reason) => write!(f, "the database is unavailable: {reason}"),
        }
    }
}

impl std::error::Error for SqlError {}

/// An unavailable database is retryable; everything else is not.
impl From<SqlError> for TaskError {
    fn from(error: SqlError) -> Self {
        match error {
            SqlError::Unavailable(_) => TaskError::retryable(error.to_string()),
            _ => TaskError::fatal(error.to_string()),
        }
    }
}

impl From<Error> for SqlError {
    fn from(error: Error) -> Self {
        match error {
            Error::Denied(reason) => Self::Denied(reason),
            Error::Invalid(reason) => Self::Invalid(reason),
            Error::TooLarge(reason) => Self::TooLarge(reason),
            Error::Timeout => Self::Timeout,
            Error::Unavailable(reason) => Self::Unavailable(reason),
        }
    }
}

/// The rows of a query.
#[derive(Debug, Clone)]
pub struct Rows {
    /// The column names, in order.
    pub columns: Vec<String>,
    /// The rows, values in column order.
    pub rows: Vec<Vec<Value>>,
}

impl Rows {
    /// The value of column `name` in row `row`.
    pub fn get(&self, row: usize, name: &str) -> Option<&Value> {
        let column = self.columns.iter().position(|c| c == name)?;
        self.rows.get(row)?.get(column)
    }
}

impl Value {
    /// The integer, if this is one.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Value::Integer(n) => Some(*n),
            _ => None,
        }
    }

    /// The number, if this is an integer or a real.
    pub fn as_real(&self) -> Option<f64> {
        match self {
            Value::Integer(n) => Some(*n as f64),
            Value::Real(x) => Some(*x),
            _ => None,
        }
    }

    /// The text, if this is text.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(text) => Some(text),
            _ => None,
        }
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Integer(n)
    }
}

impl From<i32> for Value {
    fn from(n: i32) -> Self {
        Value::Integer(n.into())
    }
}

impl From<f64> for Value {
    fn from(x: f64) -> Self {
        Value::Real(x)
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Value::Text(text.to_owned())
    }
}

impl From<String> for Value {
    fn from(text: String) -> Self {
        Value::Text(text)
    }
}

impl From<Vec<u8>> for Value {
    fn from(bytes: Vec<u8>) -> Self {
        Value::Blob(bytes)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Self {
        value.map_or(Value::Null, Into::into)
    }
}

/// Runs a statement that returns rows (`?` placeholders in SQLite, `$1` in PostgreSQL).
pub fn query(db: &str, sql: &str, params: &[Value]) -> Result<Rows, SqlError> {
    let rows = wit::query(db, sql, params)?;
    Ok(Rows {
        columns: rows.columns,
        rows: rows.rows,
    })
}

/// Runs a statement and returns how many rows it changed.
pub fn execute(db: &str, sql: &str, params: &[Value]) -> Result<u64, SqlError> {
    Ok(wit::execute(db, sql, params)?)
}

/// Runs statements in one transaction: all apply, or none. Returns the rows each changed.
pub fn batch(db: &str, statements: &[Statement]) -> Result<Vec<u64>, SqlError> {
    Ok(wit::batch(db, statements)?)
}
