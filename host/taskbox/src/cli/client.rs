//! The HTTP client behind the CLI's module, job, dead-letter, queue and worker commands.

use std::time::Duration;

use anyhow::{Context as _, bail};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::DEFAULT_LISTEN;
use crate::api::ErrorBody;

/// Environment variable with the API's URL.
pub const ENV_URL: &str = "TASKBOX_URL";
/// Environment variable with the caller's token.
pub const ENV_TOKEN: &str = "TASKBOX_TOKEN";

/// Where the API is and who is calling; shared by the client commands.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ClientArgs {
    /// The API's base URL.
    #[arg(long, global = true, env = ENV_URL, default_value_t = format!("http://{DEFAULT_LISTEN}"))]
    server: String,
    /// The bearer token (not needed for an open development server).
    #[arg(long, global = true, env = ENV_TOKEN, hide_env_values = true)]
    token: Option<String>,
    /// How to print answers.
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    pub(crate) output: Output,
}

/// How answers are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Output {
    /// Columns for people.
    Table,
    /// The API's JSON, for scripts.
    Json,
}

/// A client of one API server.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl ClientArgs {
    pub(crate) fn client(&self) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Client {
            http,
            base: self.server.trim_end_matches('/').to_owned(),
            token: self.token.clone(),
        })
    }
}

impl Client {
    /// A request to `path` (under the base URL, e.g. `/v1/jobs`).
    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends `request` and returns its JSON answer as a `T`, or the API's error as an error.
    /// An answer without content reads as JSON `null`.
    pub(crate) async fn send<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
    ) -> anyhow::Result<T> {
        let response = self.answer(request).await?;
        if response.status() == StatusCode::NO_CONTENT {
            return serde_json::from_value(Value::Null).context("reading the API's empty answer");
        }
        response.json().await.context("reading the API's answer")
    }

    /// Sends `request` and returns the successful response, or the API's error as an error.
    pub(crate) async fn answer(&self, request: RequestBuilder) -> anyhow::Result<Response> {
        let response = request.send().await.with_context(|| {
            format!(
                "cannot reach the taskbox API at {} (start one with `taskbox dev`, or set --server / {ENV_URL})",
                self.base
            )
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        match response.json::<ErrorBody>().await {
            Ok(ErrorBody { error }) => {
                bail!("{} ({} {})", error.message, status.as_u16(), error.code)
            }
            Err(_) => bail!("the server gave no details ({} error)", status.as_u16()),
        }
    }

    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.request(Method::GET, path)).await
    }

    pub(crate) async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<T> {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    pub(crate) async fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.request(Method::DELETE, path)).await
    }
}

/// The rows of a table of `items`: each item's fields, by name.
pub(crate) fn table_rows(items: &[impl Serialize]) -> anyhow::Result<Vec<Value>> {
    items
        .iter()
        .map(|item| serde_json::to_value(item).context("showing the API's answer"))
        .collect()
}

/// Prints `value` as JSON, or as `columns` of `rows` (each row a JSON object) for people.
pub(crate) fn print(output: Output, value: &impl Serialize, rows: &[Value], columns: &[&str]) {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        ),
        Output::Table => print_table(rows, columns),
    }
}

fn print_table(rows: &[Value], columns: &[&str]) {
    let cell = |row: &Value, column: &str| match &row[column] {
        Value::Null => "-".to_owned(),
        Value::String(text) => text.clone(),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map_or_else(|| item.to_string(), str::to_owned)
            })
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    };
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|row| columns.iter().map(|column| cell(row, column)).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(index, column)| {
            table
                .iter()
                .map(|row| row[index].len())
                .chain([column.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .into_iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(columns.iter().map(|column| column.to_uppercase()).collect());
    for row in table {
        line(row);
    }
}
