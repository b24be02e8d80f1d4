//! Exporting the host's spans over OTLP. Off unless the standard OpenTelemetry environment
//! variables ask for it: `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`), or
//! `OTEL_TRACES_EXPORTER=otlp`; `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`
//! keep it off. The exporter reads the rest itself: the protocol (`http/protobuf` or
//! `http/json`), headers, timeout, and the batch settings (`OTEL_BSP_*`).

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::registry::LookupSpan;

/// The spans exported: taskbox's own, at info and above (the API request, the enqueue, the
/// job's run and its host calls), whatever `TASKBOX_LOG` lets through to the log.
fn exported() -> Targets {
    Targets::new()
        .with_target("taskbox", LevelFilter::INFO)
        .with_target("taskbox_core", LevelFilter::INFO)
        .with_target("taskbox_runtime", LevelFilter::INFO)
}

/// The span exporter, while it runs; [`Traces::shutdown`] sends what it still holds.
#[derive(Debug, Default)]
pub struct Traces(Option<SdkTracerProvider>);

impl Traces {
    /// Sends the spans not yet sent and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.0
            && let Err(err) = provider.shutdown()
        {
            eprintln!("warning: sending the last spans failed: {err}");
        }
    }
}

/// Whether the environment asks for OTLP export.
fn wanted() -> bool {
    let var = |name| std::env::var(name).unwrap_or_default();
    if var("OTEL_SDK_DISABLED").eq_ignore_ascii_case("true") {
        return false;
    }
    match var("OTEL_TRACES_EXPORTER").as_str() {
        "none" => false,
        "otlp" => true,
        _ => {
            !var("OTEL_EXPORTER_OTLP_ENDPOINT").is_empty()
                || !var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_empty()
        }
    }
}

/// A layer of the process's subscriber.
pub type SpanLayer<S> = Box<dyn Layer<S> + Send + Sync>;

/// The layer that exports spans, when the environment asks for it. Called before any async
/// runtime starts: the exporter's blocking HTTP client runs on a thread of its own.
pub fn otlp_layer<S>() -> anyhow::Result<(Option<SpanLayer<S>>, Traces)>
where
    S: Subscriber + Send + Sync + for<'span> LookupSpan<'span>,
{
    if !wanted() {
        return Ok((None, Traces::default()));
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .context("setting up the OTLP span exporter")?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("taskbox");
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer("taskbox");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(exported())
        .boxed();
    Ok((Some(layer), Traces(Some(provider))))
}
