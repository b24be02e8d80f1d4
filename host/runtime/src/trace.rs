//! W3C Trace Context for a job: the `traceparent` a job is enqueued with is stored with it
//! (by the core's queue), and its run and host calls continue that trace, so that the API
//! request, the enqueue, the run and the job's own outbound requests are one trace.
//!
//! The spans are `tracing` spans; when the process exports them (OpenTelemetry, set up by
//! the binary), a span's trace context is the exported one, and a stored `traceparent` names
//! the enqueue's span. When nothing exports, the `traceparent` given at enqueue is carried
//! through as it came.

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// A valid W3C `traceparent` header value, version 00: `00-TRACE_ID-PARENT_ID-FLAGS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent(String);

/// The length of a version-00 `traceparent`.
const LENGTH: usize = 55;

impl TraceParent {
    /// `value`, if it is a valid `traceparent` of version 00 with a trace and parent that are
    /// not all zeros. Anything else is ignored, as the W3C recommendation says a receiver
    /// does with a header it cannot parse.
    pub fn parse(value: &str) -> Option<Self> {
        let context = span_context(value)?;
        context.is_valid().then(|| Self(value.to_ascii_lowercase()))
    }

    /// The trace context of `span`, when something exports it.
    pub fn of(span: &tracing::Span) -> Option<Self> {
        let context = span.context();
        let span = context.span();
        let found = span.span_context();
        found.is_valid().then(|| {
            Self(format!(
                "00-{:032x}-{:016x}-{:02x}",
                found.trace_id(),
                found.span_id(),
                found.trace_flags()
            ))
        })
    }

    /// The trace context of `span` when something exports it, else `given` as it came.
    pub fn of_or(span: &tracing::Span, given: Option<Self>) -> Option<Self> {
        Self::of(span).or(given)
    }

    /// Makes `span` a child of this context (when something exports spans).
    pub fn adopt(&self, span: &tracing::Span) {
        if let Some(context) = span_context(&self.0) {
            let parent = opentelemetry::Context::new().with_remote_span_context(context);
            let _ = span.set_parent(parent);
        }
    }

    /// The header value.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn span_context(value: &str) -> Option<SpanContext> {
    if value.len() != LENGTH || !value.is_ascii() {
        return None;
    }
    let mut parts = value.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |part: &str, len| part.len() == len && part.bytes().all(|b| b.is_ascii_hexdigit());
    if version != "00" || !hex(trace, 32) || !hex(parent, 16) || !hex(flags, 2) {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(parent).ok()?,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_valid_version_00_traceparent_is_kept() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(TraceParent::parse(valid).unwrap().as_str(), valid);
        for invalid in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473z-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(invalid), None, "{invalid}");
        }
    }
}
