//! A report task over the module's private SQLite database: `record` stores an order (once
//! per order id, so a retried job does not count it twice) and `totals` sums them up.

use serde::{Deserialize, Serialize};
use taskbox_guest::sql::{self, Statement};
use taskbox_guest::{Bytes, Job, TaskError};

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY,
    customer TEXT NOT NULL,
    total REAL NOT NULL
)";

#[derive(Deserialize)]
struct Order {
    id: String,
    customer: String,
    total: f64,
}

#[derive(Serialize)]
struct Totals {
    orders: i64,
    revenue: f64,
    customers: i64,
}

/// Records one order and returns the totals after it.
fn record(_job: &Job, order: Order) -> Result<Totals, TaskError> {
    if order.total < 0.0 {
        return Err(TaskError::fatal("`total` must not be negative"));
    }
    sql::batch(
        "self",
        &[
            Statement {
                sql: SCHEMA.into(),
                params: Vec::new(),
            },
            Statement {
                sql: "INSERT OR IGNORE INTO orders (id, customer, total) VALUES (?, ?, ?)".into(),
                params: vec![order.id.into(), order.customer.into(), order.total.into()],
            },
        ],
    )?;
    read_totals()
}

/// The totals so far.
fn totals(_job: &Job, _input: Bytes) -> Result<Totals, TaskError> {
    sql::execute("self", SCHEMA, &[])?;
    read_totals()
}

fn read_totals() -> Result<Totals, TaskError> {
    let rows = sql::query(
        "self",
        "SELECT count(*) AS orders, coalesce(sum(total), 0.0) AS revenue,
                count(DISTINCT customer) AS customers FROM orders",
        &[],
    )?;
    let number = |name: &str| {
        rows.get(0, name)
            .and_then(sql::Value::as_real)
            .unwrap_or(0.0)
    };
    Ok(Totals {
        orders: number("orders") as i64,
        revenue: number("revenue"),
        customers: number("customers") as i64,
    })
}

taskbox_guest::tasks!(record, totals);
