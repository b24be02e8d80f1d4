//! Runs the SQL its input describes and returns the rows, the counts or the error as JSON,
//! so that tests can check the SQL capability's grants and limits from a real guest. Values
//! are JSON: null, integers, floats, strings, and `{"blob": [bytes]}`.

use serde::Deserialize;
use serde_json::{Value as Json, json};
use taskbox_guest::sql::{self, Statement, Value};
use taskbox_guest::{Job, TaskError};

fn to_value(json: &Json) -> Value {
    match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Integer((*b).into()),
        Json::Number(n) => match n.as_i64() {
            Some(n) => Value::Integer(n),
            None => Value::Real(n.as_f64().unwrap_or_default()),
        },
        Json::String(text) => Value::Text(text.clone()),
        other => match other["blob"].as_array() {
            Some(bytes) => Value::Blob(
                bytes
                    .iter()
                    .map(|b| b.as_u64().unwrap_or(0) as u8)
                    .collect(),
            ),
            None => Value::Text(other.to_string()),
        },
    }
}

fn to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Integer(n) => json!(n),
        Value::Real(x) => json!(x),
        Value::Text(text) => json!(text),
        Value::Blob(bytes) => json!({"blob": bytes}),
    }
}

#[derive(Deserialize)]
struct Call {
    db: String,
    sql: String,
    #[serde(default)]
    params: Vec<Json>,
}

fn params(params: &[Json]) -> Vec<Value> {
    params.iter().map(to_value).collect()
}

/// Runs a query; answers `{"columns", "rows"}` or `{"error"}`.
fn query(_job: &Job, call: Call) -> Result<Json, TaskError> {
    Ok(
        match sql::query(&call.db, &call.sql, &params(&call.params)) {
            Ok(rows) => json!({
                "columns": rows.columns,
                "rows": rows.rows.iter().map(|row| row.iter().map(to_json).collect::<Vec<_>>()).collect::<Vec<_>>(),
            }),
            Err(err) => json!({"error": format!("{err:?}")}),
        },
    )
}

/// Runs a statement; answers `{"changed"}` or `{"error"}`.
fn execute(_job: &Job, call: Call) -> Result<Json, TaskError> {
    Ok(
        match sql::execute(&call.db, &call.sql, &params(&call.params)) {
            Ok(changed) => json!({"changed": changed}),
            Err(err) => json!({"error": format!("{err:?}")}),
        },
    )
}

#[derive(Deserialize)]
struct Batch {
    db: String,
    statements: Vec<BatchStatement>,
}

#[derive(Deserialize)]
struct BatchStatement {
    sql: String,
    #[serde(default)]
    params: Vec<Json>,
}

/// Runs statements in one transaction; answers `{"changed": [...]}` or `{"error"}`.
fn batch(_job: &Job, batch: Batch) -> Result<Json, TaskError> {
    let statements: Vec<Statement> = batch
        .statements
        .iter()
        .map(|statement| Statement {
            sql: statement.sql.clone(),
            params: params(&statement.params),
        })
        .collect();
    Ok(match sql::batch(&batch.db, &statements) {
        Ok(changed) => json!({"changed": changed}),
        Err(err) => json!({"error": format!("{err:?}")}),
    })
}

taskbox_guest::tasks!(query, execute, batch);
