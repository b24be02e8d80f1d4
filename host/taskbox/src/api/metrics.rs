//! The metrics routes (`GET /metrics` for the operator, `GET /v1/metrics` for a tenant), the
//! separate metrics listener, and the layer that measures and traces every API request.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use taskbox_core::auth::Role;
use taskbox_core::metrics::{CONTENT_TYPE as TEXT_FORMAT, Method, metrics};
use taskbox_core::queue::Queue;
use taskbox_runtime::trace::TraceParent;
use tracing::Instrument as _;

use crate::api::{ApiError, Caller, serve_router};

/// How often the queue gauges are read from Redis: a scrape reads the last values, never
/// Redis.
pub const GAUGE_REFRESH: Duration = Duration::from_secs(5);

/// The `traceparent` a request came with, when valid: the jobs it enqueues continue it.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestTrace(pub(crate) Option<TraceParent>);

/// Every series of the process (the operator: the default tenant's operator or admin).
pub(crate) async fn scrape(caller: Caller) -> Result<Response, ApiError> {
    if caller.tenant != taskbox_core::auth::DEFAULT_TENANT || caller.role < Role::Operator {
        return Err(ApiError::forbidden(
            "the metrics of every tenant are the operator's: use the admin token, or \
             /v1/metrics for this tenant's",
        ));
    }
    Ok(exposition(metrics().encode()))
}

/// The caller's tenant's series only.
#[utoipa::path(get, path = "/v1/metrics", tag = "system",
    responses(
        (status = 200, description = "the tenant's series, in the Prometheus text format", content_type = "text/plain"),
        (status = 401, body = crate::api::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn tenant(caller: Caller) -> Response {
    exposition(metrics().encode_tenant(&caller.tenant))
}

fn exposition(text: String) -> Response {
    ([(CONTENT_TYPE, TEXT_FORMAT)], text).into_response()
}

/// Serves `GET /metrics` without a token on `listen`, for a scraper on a private network,
/// until `shutdown`.
pub async fn serve_metrics(
    listen: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen} for metrics"))?;
    tracing::info!(
        "metrics on http://{}/metrics (no token)",
        listener.local_addr()?
    );
    let app = Router::new().route("/metrics", get(|| async { exposition(metrics().encode()) }));
    serve_router(listener, app, shutdown).await?;
    Ok(())
}

/// Reads the queue gauges from Redis every [`GAUGE_REFRESH`], for as long as it runs.
pub async fn refresh_gauges(queue: Queue) {
    loop {
        match queue.depths().await {
            Ok(depths) => metrics().queue_depths(&depths),
            Err(err) => tracing::warn!("reading the queues for the metrics failed: {err:#}"),
        }
        tokio::time::sleep(GAUGE_REFRESH).await;
    }
}

/// Counts and times each request by the route it matched, in a span that continues the
/// request's `traceparent`.
pub(crate) async fn observe(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = Method::of(request.method().as_str());
    let trace = request
        .headers()
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .and_then(TraceParent::parse);
    let span = tracing::info_span!(
        "api.request",
        http.method = request.method().as_str(),
        http.route = %route,
        http.status = tracing::field::Empty,
    );
    if let Some(trace) = &trace {
        trace.adopt(&span);
    }
    request.extensions_mut().insert(RequestTrace(trace));
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("http.status", status);
    metrics().api_request(&route, method, status, started.elapsed());
    response
}
