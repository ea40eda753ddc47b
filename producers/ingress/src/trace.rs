//! W3C trace context for a request: continue the caller's trace, or start one.
//!
//! The `traceparent` a request writes on its records (and echoes in its response) names the
//! request's own span, so the consumers' spans become its children. While spans are exported
//! (OpenTelemetry on) that is the OTel span of the request, whose parent is the caller's span;
//! without an exporter it is built here by hand with the same shape.

use axum::http::HeaderValue;
use orderflow_events::TraceParent;
use rand::Rng;

/// Make `span` (the request's span, not yet entered) continue the caller's `traceparent`, and
/// return the `traceparent` naming `span` itself.
pub fn for_request(span: &tracing::Span, incoming: Option<&HeaderValue>) -> TraceParent {
    let incoming_text = incoming.and_then(|v| v.to_str().ok()).map(str::trim);
    orderflow_telemetry::continue_trace(span, incoming_text);
    orderflow_telemetry::traceparent(span)
        .and_then(|own| TraceParent::parse(&own).ok())
        .unwrap_or_else(|| continue_or_start(incoming))
}

/// A `traceparent` for the work this request does: a child of the caller's (same trace id
/// and flags, new span id) when it sent a valid one, else a new sampled trace.
pub fn continue_or_start(incoming: Option<&HeaderValue>) -> TraceParent {
    let parent = incoming.and_then(|v| v.to_str().ok()).and_then(|s| TraceParent::parse(s.trim()).ok());
    let mut rng = rand::rng();
    let span_id = format!("{:016x}", rng.random_range(1..=u64::MAX));
    let text = match parent {
        Some(p) => format!("00-{}-{span_id}-{}", p.trace_id(), &p.as_str()[p.as_str().len() - 2..]),
        None => format!("00-{:032x}-{span_id}-01", rng.random_range(1..=u128::MAX)),
    };
    TraceParent::parse(&text).expect("a traceparent built from valid parts parses")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_incoming_traceparent_is_continued_with_a_new_span() {
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let tp = continue_or_start(Some(&HeaderValue::from_static(incoming)));
        assert_eq!(tp.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(tp.as_str(), incoming);
        assert!(tp.as_str().ends_with("-01"));
    }

    #[test]
    fn a_missing_or_invalid_traceparent_starts_a_new_trace() {
        let a = continue_or_start(None);
        let b = continue_or_start(Some(&HeaderValue::from_static("garbage")));
        assert_ne!(a.trace_id(), b.trace_id());
    }
}
