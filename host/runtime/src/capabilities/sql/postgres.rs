//! The PostgreSQL backend: a small pool of connections per database, each call in a
//! transaction (`READ ONLY` for a read grant) with `statement_timeout` set to what is left of
//! the job's time. The transaction takes its snapshot before the guest's first statement
//! (so `SET TRANSACTION READ WRITE` is refused), the host checks after each statement that
//! its transaction is still the one running (a guest `COMMIT` or `ROLLBACK` ends the call as
//! `denied` before anything else runs), and `DISCARD ALL` clears the session before the
//! connection serves another call.

use std::sync::Mutex;
use std::time::Instant;

use futures_core::Stream as _;
use tokio::sync::Semaphore;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls, Row};

use crate::bindings::taskbox::task::sql::{Error, Rows, Statement, Value};
use crate::capabilities::sql::{CallLimits, ResultBudget};

/// Connections to one database, made when needed and kept while healthy.
pub(crate) struct Pool {
    config: tokio_postgres::Config,
    idle: Mutex<Vec<Client>>,
    slots: Semaphore,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: only where it goes.
        f.debug_struct("Pool")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .finish_non_exhaustive()
    }
}

type Param = Box<dyn ToSql + Sync + Send>;

impl Pool {
    /// A pool for `url`; the error is what the URL parser said.
    pub(crate) fn new(url: &str, size: usize) -> Result<Self, String> {
        let config = url
            .parse()
            .map_err(|err: tokio_postgres::Error| err.to_string())?;
        Ok(Self {
            config,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(size.max(1)),
        })
    }

    pub(crate) async fn query(
        &self,
        sql: &str,
        params: &[Value],
        limits: CallLimits,
    ) -> Result<Rows, Error> {
        let _slot = self.slots.acquire().await.map_err(unavailable)?;
        let mut client = self.client().await?;
        let (columns, rows) = {
            let (transaction, started) = begin(&mut client, limits).await?;
            let statement = transaction.prepare(sql).await.map_err(classify)?;
            let params = bind(params, statement.params())?;
            let columns = statement
                .columns()
                .iter()
                .map(|column| column.name().to_owned())
                .collect();
            // Row by row, so that a result past the caps is refused as soon as it passes
            // them, and the host never holds the rest of it.
            let stream = transaction
                .query_raw(&statement, as_refs(&params))
                .await
                .map_err(classify)?;
            let mut stream = std::pin::pin!(stream);
            let mut budget = ResultBudget::new(limits);
            let mut rows = Vec::new();
            while let Some(row) = std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await {
                let values = read_row(&row.map_err(classify)?)?;
                budget.take(&values)?;
                rows.push(values);
            }
            still_ours(&transaction, &started).await?;
            transaction.commit().await.map_err(classify)?;
            (columns, rows)
        };
        self.give_back(client).await;
        Ok(Rows { columns, rows })
    }

    pub(crate) async fn batch(
        &self,
        statements: &[Statement],
        limits: CallLimits,
    ) -> Result<Vec<u64>, Error> {
        let _slot = self.slots.acquire().await.map_err(unavailable)?;
        let mut client = self.client().await?;
        let changed = {
            let (transaction, started) = begin(&mut client, limits).await?;
            let mut changed = Vec::with_capacity(statements.len());
            for statement in statements {
                let prepared = transaction
                    .prepare(&statement.sql)
                    .await
                    .map_err(classify)?;
                let params = bind(&statement.params, prepared.params())?;
                let count = transaction
                    .execute(&prepared, &as_refs(&params))
                    .await
                    .map_err(classify)?;
                still_ours(&transaction, &started).await?;
                changed.push(count);
            }
            transaction.commit().await.map_err(classify)?;
            changed
        };
        self.give_back(client).await;
        Ok(changed)
    }

    async fn client(&self) -> Result<Client, Error> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        if let Some(client) = idle.filter(|client| !client.is_closed()) {
            return Ok(client);
        }
        let (client, connection) = self.config.connect(NoTls).await.map_err(unavailable)?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!("a PostgreSQL connection ended: {err}");
            }
        });
        Ok(client)
    }

    /// Clears what the guest may have left in the session (settings, temporary tables,
    /// prepared statements) and keeps the connection for another call.
    async fn give_back(&self, client: Client) {
        if client.batch_execute("DISCARD ALL").await.is_ok() && !client.is_closed() {
            self.idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(client);
        }
    }
}

/// What identifies the host's transaction: its start time and whether it is read-only.
type Started = (String, String);

/// Starts the call's transaction, read-only for a read grant, with what is left of the job's
/// time as its statement timeout, and takes its snapshot.
async fn begin(
    client: &mut Client,
    limits: CallLimits,
) -> Result<(tokio_postgres::Transaction<'_>, Started), Error> {
    let left = limits.deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Error::Timeout);
    }
    let transaction = client
        .build_transaction()
        .read_only(limits.read_only)
        .start()
        .await
        .map_err(classify)?;
    let millis = left.as_millis().max(1);
    transaction
        .batch_execute(&format!("SET LOCAL statement_timeout = {millis}"))
        .await
        .map_err(classify)?;
    let started = transaction_id(&transaction).await?;
    Ok((transaction, started))
}

async fn transaction_id(transaction: &tokio_postgres::Transaction<'_>) -> Result<Started, Error> {
    let row = transaction
        .query_one(
            "SELECT now()::text, current_setting('transaction_read_only')",
            &[],
        )
        .await
        .map_err(classify)?;
    Ok((row.get(0), row.get(1)))
}

/// `denied` when the guest ended the host's transaction (or changed its access mode).
async fn still_ours(
    transaction: &tokio_postgres::Transaction<'_>,
    started: &Started,
) -> Result<(), Error> {
    match transaction_id(transaction).await? {
        now if now == *started => Ok(()),
        _ => Err(Error::Denied(
            "a statement ended the call's transaction (COMMIT, ROLLBACK): the host runs each call in one transaction".into(),
        )),
    }
}

fn as_refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|param| param.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// Each value as the type its placeholder expects; the error names the placeholder.
fn bind(values: &[Value], types: &[Type]) -> Result<Vec<Param>, Error> {
    if values.len() != types.len() {
        return Err(Error::Invalid(format!(
            "the statement has {} placeholders, {} values were given",
            types.len(),
            values.len()
        )));
    }
    values
        .iter()
        .zip(types)
        .enumerate()
        .map(|(index, (value, ty))| {
            convert(value, ty).ok_or_else(|| {
                Error::Invalid(format!(
                    "${}: a {} value does not fit type {ty}",
                    index + 1,
                    kind(value)
                ))
            })
        })
        .collect()
}

fn convert(value: &Value, ty: &Type) -> Option<Param> {
    Some(match (value, ty) {
        (Value::Null, &Type::BOOL) => Box::new(None::<bool>),
        (Value::Null, &Type::INT2) => Box::new(None::<i16>),
        (Value::Null, &Type::INT4) => Box::new(None::<i32>),
        (Value::Null, &Type::INT8) => Box::new(None::<i64>),
        (Value::Null, &Type::FLOAT4) => Box::new(None::<f32>),
        (Value::Null, &Type::FLOAT8) => Box::new(None::<f64>),
        (Value::Null, &Type::BYTEA) => Box::new(None::<Vec<u8>>),
        (Value::Null, _) => Box::new(None::<String>),
        (Value::Integer(n), &Type::BOOL) => Box::new(*n != 0),
        (Value::Integer(n), &Type::INT2) => Box::new(i16::try_from(*n).ok()?),
        (Value::Integer(n), &Type::INT4) => Box::new(i32::try_from(*n).ok()?),
        (Value::Integer(n), &Type::INT8) => Box::new(*n),
        (Value::Integer(n), &Type::FLOAT8) => Box::new(*n as f64),
        (Value::Integer(n), &Type::TEXT | &Type::VARCHAR) => Box::new(n.to_string()),
        (Value::Real(x), &Type::FLOAT4) => Box::new(*x as f32),
        (Value::Real(x), &Type::FLOAT8) => Box::new(*x),
        (Value::Text(text), &Type::TEXT | &Type::VARCHAR | &Type::BPCHAR | &Type::NAME) => {
            Box::new(text.clone())
        }
        (Value::Blob(bytes), &Type::BYTEA) => Box::new(bytes.clone()),
        _ => return None,
    })
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Integer(_) => "integer",
        Value::Real(_) => "real",
        Value::Text(_) => "text",
        Value::Blob(_) => "blob",
    }
}

/// A row's values; a column of a type without a mapping is an error naming it.
fn read_row(row: &Row) -> Result<Vec<Value>, Error> {
    row.columns()
        .iter()
        .enumerate()
        .map(|(index, column)| {
            let ty = column.type_();
            let value = match *ty {
                Type::BOOL => row.try_get::<_, Option<bool>>(index).map(|v| v.map(|b| Value::Integer(b.into()))),
                Type::INT2 => row.try_get::<_, Option<i16>>(index).map(|v| v.map(|n| Value::Integer(n.into()))),
                Type::INT4 => row.try_get::<_, Option<i32>>(index).map(|v| v.map(|n| Value::Integer(n.into()))),
                Type::INT8 => row.try_get::<_, Option<i64>>(index).map(|v| v.map(Value::Integer)),
                Type::FLOAT4 => row.try_get::<_, Option<f32>>(index).map(|v| v.map(|x| Value::Real(x.into()))),
                Type::FLOAT8 => row.try_get::<_, Option<f64>>(index).map(|v| v.map(Value::Real)),
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
                    row.try_get::<_, Option<String>>(index).map(|v| v.map(Value::Text))
                }
                Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(index).map(|v| v.map(Value::Blob)),
                _ => {
                    return Err(Error::Invalid(format!(
                        "column `{}` has type {ty}, which has no SQL value here: cast it (`::text`, `::float8`)",
                        column.name()
                    )));
                }
            };
            value
                .map(|value| value.unwrap_or(Value::Null))
                .map_err(classify)
        })
        .collect()
}

fn unavailable(err: impl std::fmt::Display) -> Error {
    Error::Unavailable(err.to_string())
}

/// Names the failure from its SQLSTATE: read-only and privilege refusals are denials, a
/// cancelled statement ran out of time, and the rest is the guest's SQL.
fn classify(err: tokio_postgres::Error) -> Error {
    use tokio_postgres::error::SqlState;
    let Some(db) = err.as_db_error() else {
        return match err.is_closed() {
            true => Error::Unavailable(err.to_string()),
            false => Error::Invalid(err.to_string()),
        };
    };
    let message = db.message().to_owned();
    match db.code() {
        code if *code == SqlState::READ_ONLY_SQL_TRANSACTION => {
            Error::Denied(format!("read-only grant: {message}"))
        }
        code if *code == SqlState::INSUFFICIENT_PRIVILEGE => Error::Denied(message),
        code if *code == SqlState::QUERY_CANCELED => Error::Timeout,
        _ => Error::Invalid(message),
    }
}
