//! Sends the HTTP requests its input describes and returns what came back, or the error, as
//! JSON, so that tests can check the host's HTTP policy from a real guest.

use serde::Deserialize;
use serde_json::{Value, json};
use taskbox_guest::bindings::wasi::http::types::Fields;
use taskbox_guest::{Job, TaskError, http, log};

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

taskbox_guest::tasks!(fetch, fetch_many, fields_flood, request_line);

#[derive(Deserialize)]
struct FieldsFlood {
    count: u32,
    bytes: usize,
}

/// Makes `count` sets of header fields with one `bytes`-long value each and keeps them all,
/// logging every hundredth: header fields live in the host's memory, so a guest that hoards
/// them makes the host hold them.
fn fields_flood(_job: &Job, input: FieldsFlood) -> Result<Value, TaskError> {
    let value = vec![b'x'; input.bytes];
    let mut kept = Vec::new();
    for made in 0..input.count {
        let fields = Fields::new();
        fields
            .append("x-flood", &value)
            .map_err(|err| TaskError::fatal(format!("header {made} refused: {err:?}")))?;
        kept.push(fields);
        if made % 100 == 0 {
            log::info(&format!("{made} header sets"));
        }
    }
    Ok(json!({"made": kept.len()}))
}

#[derive(Deserialize)]
struct RequestLine {
    method: usize,
    scheme: usize,
    authority: usize,
    path: usize,
}

/// Sets each part of a request line to a well-formed value of the given length, and answers
/// which the host accepted.
fn request_line(_job: &Job, input: RequestLine) -> Result<Value, TaskError> {
    use taskbox_guest::bindings::wasi::http::types::{Method, OutgoingRequest, Scheme};
    let request = OutgoingRequest::new(Fields::new());
    let method = "X".repeat(input.method);
    let scheme = format!("x{}", "y".repeat(input.scheme.saturating_sub(1)));
    let authority = format!("{}:8080", "a".repeat(input.authority.saturating_sub(5)));
    let path = format!("/{}", "p".repeat(input.path.saturating_sub(1)));
    Ok(json!({
        "method": request.set_method(&Method::Other(method)).is_ok(),
        "scheme": request.set_scheme(Some(&Scheme::Other(scheme))).is_ok(),
        "authority": request.set_authority(Some(&authority)).is_ok(),
        "path": request.set_path_with_query(Some(&path)).is_ok(),
    }))
}
