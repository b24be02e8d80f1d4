//! Sends the HTTP requests its input describes and returns what came back, or the error, as
//! JSON, so that tests can check the host's HTTP policy from a real guest.

use serde::Deserialize;
use serde_json::{Value, json};
use taskbox_guest::{Job, TaskError, http};

#[derive(Deserialize)]
struct Fetch {
    url: String,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    body: Option<String>,
}

fn request(input: &Fetch) -> http::Request {
    let mut request = match input.method.as_deref().unwrap_or("GET") {
        "POST" => http::post(&input.url),
        "PUT" => http::put(&input.url),
        "DELETE" => http::delete(&input.url),
        _ => http::get(&input.url),
    };
    for (name, value) in &input.headers {
        request = request.header(name, value);
    }
    if let Some(body) = &input.body {
        request = request.body(body.as_bytes());
    }
    request
}

fn answer(result: Result<http::Response, http::HttpError>) -> Value {
    match result {
        Ok(response) => json!({
            "status": response.status,
            "location": response.header("location"),
            "body": response.text(),
        }),
        Err(err) => json!({"error": format!("{err:?}")}),
    }
}

/// Sends one request.
fn fetch(_job: &Job, input: Fetch) -> Result<Value, TaskError> {
    Ok(answer(request(&input).send()))
}

#[derive(Deserialize)]
struct FetchMany {
    url: String,
    count: u32,
}

/// Sends `count` GETs one after the other; answers how many got a response, and the first
/// error.
fn fetch_many(_job: &Job, input: FetchMany) -> Result<Value, TaskError> {
    for sent in 0..input.count {
        if let Err(err) = http::get(&input.url).send() {
            return Ok(json!({"ok": sent, "error": format!("{err:?}")}));
        }
    }
    Ok(json!({"ok": input.count}))
}

taskbox_guest::tasks!(fetch, fetch_many);
