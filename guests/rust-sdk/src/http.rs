//! Outbound HTTP over the standard `wasi:http` interface: a small blocking client. The
//! module's manifest grants the destinations (`allowed_outbound_hosts`); the host refuses
//! the rest, internal addresses, and requests past its limits, each with an [`HttpError`].
//!
//! ```no_run
//! use taskbox_guest::http;
//!
//! # fn example() -> Result<(), http::HttpError> {
//! let page = http::get("https://api.example.com/items?page=1").send()?;
//! let created = http::post("https://api.example.com/items")
//!     .header("authorization", "Bearer token")
//!     .json(&serde_json::json!({"name": "widget"}))
//!     .send()?;
//! if created.status >= 500 {
//!     // retry later
//! }
//! let items: serde_json::Value = page.json()?;
//! # Ok(())
//! # }
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::TaskError;
use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use crate::bindings::wasi::io::streams::StreamError;

/// A request being built.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

/// A GET request to `url`.
pub fn get(url: &str) -> Request {
    Request::new(Method::Get, url)
}

/// A POST request to `url`.
pub fn post(url: &str) -> Request {
    Request::new(Method::Post, url)
}

/// A PUT request to `url`.
pub fn put(url: &str) -> Request {
    Request::new(Method::Put, url)
}

/// A DELETE request to `url`.
pub fn delete(url: &str) -> Request {
    Request::new(Method::Delete, url)
}

/// A response: status, headers and the whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, names in lowercase, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive), as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .and_then(|(_, value)| std::str::from_utf8(value).ok())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|err| HttpError::Body(err.to_string()))
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq)]
pub enum HttpError {
    /// The URL is not `http(s)://host[:port][/path]`.
    InvalidUrl(String),
    /// The host refused it: not granted, an internal address, or past the job's request
    /// cap. The code says which (`HttpRequestDenied`, `DestinationIpProhibited`,
    /// `ConnectionLimitReached`).
    Denied(String),
    /// It failed on the way: DNS, connection, TLS, timeout, a response over the host's
    /// caps. The code says which.
    Failed(String),
    /// The body could not be written, read or decoded.
    Body(String),
}

impl HttpError {
    /// Whether trying again later may help (a network failure or a timeout, not a denial).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Failed(_))
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InvalidUrl(reason) => write!(f, "invalid URL: {reason}"),
            Self::Denied(code) => write!(f, "the host refused the request: {code}"),
            Self::Failed(code) => write!(f, "the request failed: {code}"),
            Self::Body(reason) => write!(f, "the body failed: {reason}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// Transient failures are retryable; denials and bad URLs are not.
impl From<HttpError> for TaskError {
    fn from(error: HttpError) -> Self {
        match error.is_transient() {
            true => TaskError::retryable(error.to_string()),
            false => TaskError::fatal(error.to_string()),
        }
    }
}

impl Request {
    fn new(method: Method, url: &str) -> Self {
        Self {
            method,
            url: url.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.as_ref().to_vec()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets a JSON body and its content type.
    pub fn json<T: Serialize + ?Sized>(self, value: &T) -> Self {
        let body = serde_json::to_vec(value).unwrap_or_default();
        self.header("content-type", "application/json").body(body)
    }

    /// Sends the request and reads the whole response. Redirects are not followed: a 3xx
    /// is a response like any other.
    pub fn send(self) -> Result<Response, HttpError> {
        let (scheme, rest) = match self.url.split_once("://") {
            Some(("https", rest)) => (Scheme::Https, rest),
            Some(("http", rest)) => (Scheme::Http, rest),
            _ => {
                return Err(HttpError::InvalidUrl(format!(
                    "`{}` is not http(s)://",
                    self.url
                )));
            }
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        let headers = Fields::new();
        let mut declared = self.headers.clone();
        if !self.body.is_empty() && !declared.iter().any(|(name, _)| name == "content-length") {
            declared.push((
                "content-length".into(),
                self.body.len().to_string().into_bytes(),
            ));
        }
        for (name, value) in &declared {
            headers
                .append(name, value)
                .map_err(|err| HttpError::InvalidUrl(format!("header `{name}`: {err:?}")))?;
        }
        let request = OutgoingRequest::new(headers);
        let invalid = |what: &str| HttpError::InvalidUrl(format!("{what} of `{}`", self.url));
        request
            .set_method(&self.method)
            .map_err(|()| invalid("method"))?;
        request
            .set_scheme(Some(&scheme))
            .map_err(|()| invalid("scheme"))?;
        request
            .set_authority(Some(authority))
            .map_err(|()| invalid("host"))?;
        request
            .set_path_with_query(Some(&path))
            .map_err(|()| invalid("path"))?;
        let body = request
            .body()
            .map_err(|()| HttpError::Body("no request body".into()))?;
        let future = outgoing_handler::handle(request, None).map_err(classify)?;
        if let Err(err) = write_body(&body, &self.body) {
            // The body's stream closes when the request fails; the reason is the request's.
            future.subscribe().block();
            return Err(match future.get() {
                Some(Ok(Err(code))) => classify(code),
                _ => err,
            });
        }
        OutgoingBody::finish(body, None).map_err(classify)?;
        future.subscribe().block();
        let response = match future.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(code))) => return Err(classify(code)),
            Some(Err(())) | None => return Err(HttpError::Failed("no response".into())),
        };
        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value))
            .collect();
        let incoming = response
            .consume()
            .map_err(|()| HttpError::Body("the response body was taken".into()))?;
        let body = read_body(&incoming)?;
        drop(incoming);
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

fn write_body(body: &OutgoingBody, bytes: &[u8]) -> Result<(), HttpError> {
    if bytes.is_empty() {
        return Ok(());
    }
    let stream = body
        .write()
        .map_err(|()| HttpError::Body("the request body stream was taken".into()))?;
    for chunk in bytes.chunks(4096) {
        stream
            .blocking_write_and_flush(chunk)
            .map_err(|err| HttpError::Body(format!("writing the request body: {err:?}")))?;
    }
    Ok(())
}

fn read_body(incoming: &IncomingBody) -> Result<Vec<u8>, HttpError> {
    let stream = incoming
        .stream()
        .map_err(|()| HttpError::Body("the response body stream was taken".into()))?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 << 10) {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(StreamError::Closed) => return Ok(body),
            Err(StreamError::LastOperationFailed(err)) => {
                let code = crate::bindings::wasi::http::types::http_error_code(&err);
                return Err(match code {
                    Some(code) => classify(code),
                    None => HttpError::Failed(err.to_debug_string()),
                });
            }
        }
    }
}

fn classify(code: ErrorCode) -> HttpError {
    let name = format!("{code:?}")
        .trim_start_matches("ErrorCode::")
        .to_owned();
    match code {
        ErrorCode::HttpRequestDenied
        | ErrorCode::DestinationIpProhibited
        | ErrorCode::ConnectionLimitReached => HttpError::Denied(name),
        ErrorCode::HttpRequestUriInvalid | ErrorCode::HttpProtocolError => {
            HttpError::InvalidUrl(name)
        }
        _ => HttpError::Failed(name),
    }
}
