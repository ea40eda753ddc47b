//! Logging and tracing setup shared by every orderflow binary.
//!
//! `RUST_LOG` filters (default `info`); `LOG_FORMAT=json|pretty` chooses the output, and
//! without it logs are pretty on a terminal and JSON otherwise (production, CI, log files).
//! Logs go to stderr so that commands whose stdout is data (`orderflow tail`) stay clean.
//!
//! With `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, spans are
//! also exported over OTLP/HTTP (protobuf) by a batch exporter; the SDK's standard variables
//! apply (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_BSP_*`). Unset: no exporter,
//! no thread, and [`exporting`] is false so callers skip the per-event work tracing would cost.
//!
//! This crate owns the subscriber and everything that knows about OpenTelemetry; binaries
//! call [`init`] once and keep the returned [`Telemetry`] until they exit (dropping it flushes
//! the spans still buffered); libraries only emit, and use the helpers below to join traces.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

mod export;

/// Target of spans that are for traces only: the exporter gets them, the log output does not
/// (formatting their fields for logs that never mention them would cost more than the span).
pub const TRACE_ONLY: &str = "orderflow::trace";

/// Set once an OTLP exporter is installed; read on hot paths (one relaxed load).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Pretty,
}

impl Format {
    /// `LOG_FORMAT` if set to a known value, else pretty on a terminal and JSON otherwise.
    pub fn from_env() -> Format {
        match std::env::var("LOG_FORMAT").ok().as_deref() {
            Some("json") => Format::Json,
            Some("pretty") | Some("text") => Format::Pretty,
            _ if std::io::stderr().is_terminal() => Format::Pretty,
            _ => Format::Json,
        }
    }
}

/// Keeps the span exporter alive; dropping it flushes the spans still buffered and stops the
/// exporter. Hold it in `main` for the life of the process.
#[must_use = "dropping the guard stops the span exporter at once; keep it until the process exits"]
pub struct Telemetry {
    exporter: Option<export::Exporter>,
}

impl Telemetry {
    /// Flush and stop the exporter now (also what dropping the guard does).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(exporter) = self.exporter.take() {
            EXPORTING.store(false, Ordering::Relaxed);
            exporter.shutdown();
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Install the global subscriber for `service` (the OTel `service.name` unless
/// `OTEL_SERVICE_NAME` says otherwise). Safe to call twice (the second call installs nothing
/// and returns an inert guard), so tests and binaries can share setup code. Never fails: a bad
/// OTel setting is logged as a warning and the process runs without exporting spans.
pub fn init(service: &'static str) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (exporter, problem) = match export::Exporter::from_env(service) {
        Ok(exporter) => (exporter, None),
        Err(error) => (None, Some(error)),
    };
    let otel_layer = exporter.as_ref().map(|e| {
        tracing_opentelemetry::layer()
            .with_tracer(e.provider().tracer(service))
            .with_tracked_inactivity(false)
            .with_threads(false)
            // The exporter's own HTTP stack must not feed spans back into the exporter.
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| !is_exporter_internal(meta.target())))
    });
    let fmt_layer = match Format::from_env() {
        Format::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
        Format::Pretty => {
            tracing_subscriber::fmt::layer().with_span_events(FmtSpan::NONE).with_writer(std::io::stderr).boxed()
        }
    }
    .with_filter(tracing_subscriber::filter::filter_fn(|meta| meta.target() != TRACE_ONLY));
    let result = tracing_subscriber::registry().with(filter).with(fmt_layer).with(otel_layer).try_init();
    if result.is_err() {
        // Someone else's subscriber is installed: spans would not reach our exporter.
        if let Some(exporter) = exporter {
            exporter.shutdown();
        }
        return Telemetry { exporter: None };
    }
    if let Some(error) = problem {
        tracing::warn!(service, error = %format!("{error:#}"), "OpenTelemetry export disabled: bad OTEL_* setting");
    }
    if let Some(exporter) = &exporter {
        EXPORTING.store(true, Ordering::Relaxed);
        tracing::info!(service, endpoint = exporter.endpoint(), "exporting spans over OTLP/HTTP");
    }
    tracing::debug!(service, "telemetry initialised");
    Telemetry { exporter }
}

/// Targets of the crates that carry the exported spans themselves.
fn is_exporter_internal(target: &str) -> bool {
    ["opentelemetry", "reqwest", "hyper", "h2", "tower", "rustls"].iter().any(|prefix| target.starts_with(prefix))
}

/// True while spans are exported: callers use it to skip work only a trace needs (per-event
/// spans on a hot path).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Make `span` continue the W3C `traceparent` of a caller or a record: its parent becomes that
/// remote span. Call before the span is first entered. No-op when not exporting, or when the
/// header is missing or invalid (the span then starts a trace of its own).
pub fn continue_trace(span: &Span, traceparent: Option<&str>) {
    if !exporting() {
        return;
    }
    let Some(traceparent) = traceparent else { return };
    let carrier = std::collections::HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    if parent.span().span_context().is_remote() {
        // Fails only if the span already started or is disabled: then it keeps its own trace.
        let _ = span.set_parent(parent);
    }
}

/// The W3C `traceparent` naming `span` itself, to put on what this span sends (a Kafka record)
/// so the receiver's spans become its children. `None` when not exporting or the span is
/// disabled.
pub fn traceparent(span: &Span) -> Option<String> {
    if !exporting() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if !span_context.is_valid() {
        return None;
    }
    Some(format!(
        "00-{}-{}-{:02x}",
        span_context.trace_id(),
        span_context.span_id(),
        span_context.trace_flags().to_u8()
    ))
}

/// Record `span`'s OTel trace id in its `trace_id` field (declare it `trace_id = Empty`), so
/// JSON log lines inside the span carry the id the trace backend knows. No-op when not exporting.
pub fn record_trace_id(span: &Span) {
    if !exporting() {
        return;
    }
    let trace_id = span.context().span().span_context().trace_id();
    if trace_id != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace_id));
    }
}

/// A handle on `span`'s OTel identity, for linking other spans to it.
#[derive(Clone, Debug)]
pub struct SpanLink(opentelemetry::trace::SpanContext);

/// `span`'s identity for [`link`], or `None` when not exporting.
pub fn span_link(span: &Span) -> Option<SpanLink> {
    if !exporting() {
        return None;
    }
    let span_context = span.context().span().span_context().clone();
    span_context.is_valid().then_some(SpanLink(span_context))
}

/// Link `span` to another span (a different trace: an event's span to the batch that applied it).
pub fn link(span: &Span, to: &SpanLink) {
    span.add_link(to.0.clone());
}
