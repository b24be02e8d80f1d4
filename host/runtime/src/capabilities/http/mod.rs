//! `wasi:http/outgoing-handler`: outbound HTTP to the hosts a module is granted.
//!
//! The standard interface (wasmtime-wasi-http), so that ordinary HTTP clients of each
//! language work; taskbox sends every request itself, in [`WasiHttpHooks::send_request`]:
//! it checks the URI's scheme, host and port against the grant (the guest cannot set `Host`,
//! so the authority checked is the one dialled), resolves the host once, refuses internal
//! addresses unless the operator allows private networks, connects to the address it
//! checked, and never follows redirects. Per job it caps the requests, those at once, the
//! time to connect, the time for the whole exchange, and the size of response headers and
//! body. Each refusal is a `wasi:http` error code for the guest, never a trap.

mod address;
mod pattern;
mod request_line;

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument as _;
use wasmtime::component::Linker;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{
    Error, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

pub use pattern::{BadHostPattern, HostPattern};

use crate::capabilities::{CallCounts, CallingJob};
use crate::guest_text::quote;
use crate::job::JobState;
use crate::trace::TraceParent;

/// The W3C Trace Context header a job's requests carry.
const TRACEPARENT: &str = "traceparent";

/// What one job's requests may do, beyond where they may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// Reach loopback, private, link-local and other internal addresses (for tests and
    /// trusted networks; off by default).
    pub allow_private_networks: bool,
    /// Requests one job may have under way at once; more wait.
    pub max_concurrent_requests: usize,
    /// Requests one job may send in all.
    pub max_requests: u32,
    /// The longest wait for a connection (DNS, TCP and TLS).
    pub connect_timeout: Duration,
    /// The longest a whole exchange may take, from sending to the last byte of the body.
    pub request_timeout: Duration,
    /// The largest response body, in bytes.
    pub max_response_bytes: u64,
    /// The largest request body, in bytes.
    pub max_request_bytes: u64,
    /// The largest response header section, in bytes.
    pub max_header_bytes: usize,
}

impl Default for HttpLimits {
    /// 8 at once, 100 per job, 10 s to connect, 30 s per exchange, 16 MiB bodies each way,
    /// 64 KiB of headers, no private networks.
    fn default() -> Self {
        Self {
            allow_private_networks: false,
            max_concurrent_requests: 8,
            max_requests: 100,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_response_bytes: 16 << 20,
            max_request_bytes: 16 << 20,
            max_header_bytes: 64 << 10,
        }
    }
}

/// The destinations a module may reach, and the limits of its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGrant {
    allowed: Vec<HostPattern>,
    limits: HttpLimits,
}

impl HttpGrant {
    /// A grant of `allowed_hosts` (`scheme://host[:port]` patterns); the error names the
    /// entry that is not one.
    pub fn new(allowed_hosts: &[String], limits: HttpLimits) -> Result<Self, BadHostPattern> {
        let allowed = allowed_hosts
            .iter()
            .map(|entry| HostPattern::parse(entry))
            .collect::<Result<_, _>>()?;
        Ok(Self { allowed, limits })
    }

    fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        self.allowed
            .iter()
            .any(|pattern| pattern.allows(scheme, host, port))
    }
}

/// Per-job HTTP state.
pub(crate) struct JobHttp {
    ctx: WasiHttpCtx,
    hooks: Hooks,
}

impl std::fmt::Debug for JobHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobHttp")
            .field("grant", &self.hooks.grant)
            .field("sent", &self.hooks.sent)
            .finish_non_exhaustive()
    }
}

impl JobHttp {
    pub(crate) fn new(grant: Option<Arc<HttpGrant>>, caller: CallingJob) -> Self {
        // Header fields need no grant: a guest without one still makes them, within a cap.
        let mut ctx = WasiHttpCtx::new();
        ctx.set_field_size_limit(
            grant
                .as_ref()
                .map_or(crate::limits::MAX_HEADER_BYTES, |grant| {
                    grant.limits.max_header_bytes
                }),
        );
        Self {
            ctx,
            hooks: Hooks {
                grant,
                caller,
                sent: 0,
                at_once: None,
            },
        }
    }
}

struct Hooks {
    grant: Option<Arc<HttpGrant>>,
    caller: CallingJob,
    sent: u32,
    /// The job's request slots, made at its first request.
    at_once: Option<Arc<Semaphore>>,
}

impl WasiHttpView for JobState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http.ctx,
            table: &mut self.table,
            hooks: &mut self.http.hooks,
        }
    }
}

/// What the hook decided a request may do.
struct Cleared {
    grant: Arc<HttpGrant>,
    scheme: &'static str,
    host: String,
    port: u16,
    deadline: Instant,
    slots: Arc<Semaphore>,
}

impl Hooks {
    /// Checks `request` against the grant and the request cap; the error is the guest's.
    // Long because it is one list of checks in the order a request meets them (scheme, host,
    // port, address, counts), each with its own denial; apart, they would each take the
    // request, the grant and the caller.
    fn clear(&mut self, request: &http::Request<WasiBody>) -> Result<Cleared, Error> {
        let uri = request.uri();
        let target = uri.to_string();
        let deny = |caller: &CallingJob, reason: &str, error: Error| {
            caller.denied("http", &target, reason);
            Err(error)
        };
        let Some(grant) = self.grant.clone() else {
            return deny(
                &self.caller,
                "the module has no allowed_outbound_hosts",
                Error::HttpRequestDenied,
            );
        };
        let scheme = match uri.scheme_str() {
            Some("http") => "http",
            Some("https") => "https",
            _ => {
                return deny(
                    &self.caller,
                    "only http and https",
                    Error::HttpProtocolError,
                );
            }
        };
        let Some(authority) = uri.authority() else {
            return Err(Error::HttpRequestUriInvalid);
        };
        // Only an origin-form path goes on the request line: never an absolute URI that a
        // proxying server might follow elsewhere.
        if uri
            .path_and_query()
            .is_some_and(|path| !path.as_str().starts_with('/'))
        {
            return deny(
                &self.caller,
                "the path is not an absolute path (origin form)",
                Error::HttpRequestUriInvalid,
            );
        }
        if authority.as_str().contains('@') {
            return deny(
                &self.caller,
                "user information in the authority",
                Error::HttpRequestUriInvalid,
            );
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = authority
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        if !grant.allows(scheme, &host, port) {
            return deny(
                &self.caller,
                "not in the module's allowed_outbound_hosts",
                Error::HttpRequestDenied,
            );
        }
        if self.sent >= grant.limits.max_requests {
            return deny(
                &self.caller,
                &format!(
                    "the job has sent {} requests, the most one job may",
                    grant.limits.max_requests
                ),
                Error::ConnectionLimitReached,
            );
        }
        self.sent += 1;
        let deadline = (Instant::now() + grant.limits.request_timeout).min(self.caller.deadline);
        let slots = self.at_once.get_or_insert_with(|| {
            Arc::new(Semaphore::new(grant.limits.max_concurrent_requests.max(1)))
        });
        Ok(Cleared {
            slots: Arc::clone(slots),
            grant,
            scheme,
            host,
            port,
            deadline,
        })
    }
}

impl WasiHttpHooks for Hooks {
    // Long because one exchange is one future: connect, send, wait for the head, and wrap
    // the body in the job's caps, all under the job's deadline and its slot.
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                )>,
            > + Send,
    > {
        let cleared = self.clear(&request);
        let caller = self.caller.clone();
        let mut request = request;
        let span = tracing::info_span!(
            "guest.http",
            method = %request.method(),
            host = %quote(request.uri().host().unwrap_or_default()),
            status = tracing::field::Empty,
        );
        // The job's trace goes on with the request, whatever the guest put there: the server's
        // spans become children of this request's span.
        if let Some(trace) = TraceParent::of(&span).or_else(|| caller.traceparent.clone())
            && let Ok(value) = http::HeaderValue::from_str(trace.as_str())
        {
            request.headers_mut().insert(TRACEPARENT, value);
        }
        let exchange = async move {
            let cleared = cleared?;
            let permit = Arc::clone(&cleared.slots)
                .acquire_owned()
                .await
                .map_err(|_| Error::InternalError(Some("request slots closed".into())))?;
            let deadline = tokio::time::Instant::from_std(cleared.deadline);
            let sent =
                match tokio::time::timeout_at(deadline, send(request, &cleared, &caller, permit))
                    .await
                {
                    Ok(sent) => sent,
                    Err(_elapsed) => Err(Error::HttpResponseTimeout),
                };
            match &sent {
                Ok((response, _)) => {
                    tracing::Span::current().record("status", response.status().as_u16());
                    CallCounts::add(&caller.calls.http_sent);
                }
                Err(_) => CallCounts::add(&caller.calls.http_failed),
            }
            sent
        };
        Box::new(exchange.instrument(span))
    }
}

/// Resolves, checks the address, connects, and sends `request`; the response body is cut at
/// the byte cap and the deadline.
async fn send(
    mut request: http::Request<WasiBody>,
    cleared: &Cleared,
    caller: &CallingJob,
    permit: OwnedSemaphorePermit,
) -> Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
> {
    let limits = &cleared.grant.limits;
    let connect_by = tokio::time::Instant::now() + limits.connect_timeout;
    let address = tokio::time::timeout_at(connect_by, resolve(cleared, caller))
        .await
        .map_err(|_| Error::DnsTimeout)??;
    let stream = tokio::time::timeout_at(connect_by, TcpStream::connect(address))
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(|err| match err.kind() {
            std::io::ErrorKind::ConnectionRefused => Error::ConnectionRefused,
            _ => Error::Connect(err),
        })?;
    let stream: Box<dyn Stream> = match cleared.scheme {
        "https" => {
            let tls = tokio::time::timeout_at(connect_by, tls(stream, &cleared.host))
                .await
                .map_err(|_| Error::ConnectionTimeout)??;
            Box::new(tls)
        }
        _ => Box::new(stream),
    };
    let (mut sender, connection) = tokio::time::timeout_at(
        connect_by,
        hyper::client::conn::http1::Builder::new()
            // Room for a head past the cap, so that the cap, not the buffer, refuses it.
            .max_buf_size(limits.max_header_bytes.saturating_mul(2).max(64 << 10))
            .handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)??;
    // The request line carries only the path: the authority was checked and dialled.
    let path = request
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    let request_cap = limits.max_request_bytes;
    if let Some(length) = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok())
        && length > request_cap
    {
        return Err(Error::HttpRequestBodySize(Some(length)));
    }
    let request = request.map(|body| {
        OutgoingCap {
            body,
            left: request_cap,
        }
        .boxed_unsync()
    });
    let mut connection = Box::pin(connection);
    let mut response = Box::pin(sender.send_request(request));
    // Drive the connection while waiting for the response head.
    let response = std::future::poll_fn(|cx| {
        if let Poll::Ready(result) = response.as_mut().poll(cx) {
            return Poll::Ready(result.map_err(|err| match err.is_parse_too_large() {
                true => Error::HttpResponseHeaderSectionSize(None),
                false => exchange_error(err),
            }));
        }
        match connection.as_mut().poll(cx) {
            Poll::Ready(Err(err)) => Poll::Ready(Err(exchange_error(err))),
            _ => Poll::Pending,
        }
    })
    .await?;
    let header_bytes: usize = response
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if header_bytes > limits.max_header_bytes {
        return Err(Error::HttpResponseHeaderSectionSize(Some(
            u32::try_from(header_bytes).unwrap_or(u32::MAX),
        )));
    }
    if let Some(length) = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok())
        && length > limits.max_response_bytes
    {
        return Err(Error::HttpResponseBodySize(Some(length)));
    }
    let deadline = tokio::time::Instant::from_std(cleared.deadline);
    let response = response.map(|incoming| {
        CappedBody {
            incoming,
            left: limits.max_response_bytes,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            _permit: permit,
        }
        .boxed_unsync()
    });
    let io: Box<dyn Future<Output = Result<(), Error>> + Send> = Box::new(async move {
        match tokio::time::timeout_at(deadline, connection).await {
            Ok(done) => done.map_err(Error::from),
            Err(_elapsed) => Err(Error::HttpResponseTimeout),
        }
    });
    Ok((response, io))
}

/// The one address the request goes to: the host's first address that may be reached.
async fn resolve(cleared: &Cleared, caller: &CallingJob) -> Result<SocketAddr, Error> {
    let addresses: Vec<SocketAddr> = match cleared.host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, cleared.port)],
        Err(_) => tokio::net::lookup_host((cleared.host.as_str(), cleared.port))
            .await
            .map_err(|_| Error::DnsError {
                rcode: None,
                info_code: None,
            })?
            .collect(),
    };
    if cleared.grant.limits.allow_private_networks {
        return addresses.first().copied().ok_or(Error::DestinationNotFound);
    }
    match addresses
        .iter()
        .find(|address| !address::is_internal(address.ip()))
    {
        Some(address) => Ok(*address),
        None if addresses.is_empty() => Err(Error::DestinationNotFound),
        None => {
            caller.denied(
                "http",
                &cleared.host,
                &format!(
                    "{} resolves only to internal addresses ({}) and private networks are not allowed",
                    cleared.host, addresses[0]
                ),
            );
            Err(Error::DestinationIpProhibited)
        }
    }
}

/// A TLS connection to `host` over `stream`, verified against the web's root certificates.
async fn tls(
    stream: TcpStream,
    host: &str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Error> {
    static CONFIG: std::sync::LazyLock<Arc<rustls::ClientConfig>> =
        std::sync::LazyLock::new(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            Arc::new(
                rustls::ClientConfig::builder()
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            )
        });
    let name = match host.parse::<IpAddr>() {
        Ok(ip) => rustls::pki_types::ServerName::from(ip),
        Err(_) => rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|_| Error::HttpRequestUriInvalid)?,
    };
    tokio_rustls::TlsConnector::from(Arc::clone(&CONFIG))
        .connect(name, stream)
        .await
        .map_err(Error::Tls)
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// A response body that ends with an error past its byte cap or its deadline, and holds
/// one of the job's request slots until it is done.
struct CappedBody {
    incoming: hyper::body::Incoming,
    left: u64,
    deadline: Pin<Box<tokio::time::Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl Body for CappedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Error::HttpResponseTimeout)));
        }
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let size = frame.data_ref().map_or(0, |data| data.len() as u64);
                if size > self.left {
                    return Poll::Ready(Some(Err(Error::HttpResponseBodySize(None))));
                }
                self.left -= size;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(Error::from(err)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

/// hyper's error as the guest sees it: hyper hides what the request body said, and the
/// request cap's refusal is the guest's to see.
fn exchange_error(err: hyper::Error) -> Error {
    match std::error::Error::source(&err).and_then(|cause| cause.downcast_ref()) {
        Some(RequestBodyTooLarge) => Error::HttpRequestBodySize(None),
        None => Error::from(err),
    }
}

/// A request body, refused once it has sent more than its cap: however a guest streams it,
/// the request ends there.
struct OutgoingCap {
    body: WasiBody,
    left: u64,
}

/// What [`OutgoingCap`] hands hyper when the cap is passed, so that [`send`] can tell the
/// guest why its request failed.
#[derive(Debug, thiserror::Error)]
#[error("the request body passed the host's max_request_bytes")]
struct RequestBodyTooLarge;

impl Body for OutgoingCap {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let size = frame.data_ref().map_or(0, |data| data.len() as u64);
                if size > self.left {
                    return Poll::Ready(Some(Err(Box::new(RequestBodyTooLarge))));
                }
                self.left -= size;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(Box::new(err)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

pub(crate) fn add_to_linker(linker: &mut Linker<JobState>) -> wasmtime::Result<()> {
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    request_line::add_to_linker(linker)
}
