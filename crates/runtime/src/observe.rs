//! Everything the runtime reports about a happening, logged and counted in one place so the
//! log line and the metric never disagree; and the spans that join a consumer's work to the
//! trace of the request that produced each event.

use std::time::Duration;

use metrics::{counter, gauge, histogram};
use orderflow_events::Event;
/// The process-wide Prometheus recorder every orderflow binary shares.
pub use orderflow_service::prometheus;
use tracing::Span;
use tracing::field::Empty;

use crate::handler::Envelope;

pub fn batch_applied(
    consumer: &str,
    topic: &str,
    partition: i32,
    applied: usize,
    duplicates: usize,
    elapsed: Duration,
) {
    counter!("orderflow_events_applied_total", "consumer" => consumer.to_owned(), "topic" => topic.to_owned())
        .increment(applied as u64);
    if duplicates > 0 {
        counter!("orderflow_duplicates_skipped_total", "consumer" => consumer.to_owned()).increment(duplicates as u64);
        tracing::info!(consumer, topic, partition, duplicates, "skipped events already applied");
    }
    histogram!("orderflow_batch_duration_seconds", "consumer" => consumer.to_owned()).record(elapsed.as_secs_f64());
    tracing::debug!(consumer, topic, partition, applied, ?elapsed, "batch committed");
}

/// Export the series alerts watch for increases at 0 from the start (dead letters per class,
/// retries, duplicates, events applied per topic), so `increase()` sees the first one.
pub fn register(consumer: &str, topics: &[String]) {
    // The recorder first: series registered before it exists go nowhere.
    orderflow_service::prometheus();
    for class in ["undecodable", "unknown_schema", "permanent"] {
        counter!("orderflow_dead_lettered_total", "consumer" => consumer.to_owned(), "class" => class).increment(0);
    }
    counter!("orderflow_batch_retries_total", "consumer" => consumer.to_owned()).increment(0);
    partitions_held(consumer, 0);
    counter!("orderflow_duplicates_skipped_total", "consumer" => consumer.to_owned()).increment(0);
    for topic in topics {
        counter!("orderflow_events_applied_total", "consumer" => consumer.to_owned(), "topic" => topic.clone())
            .increment(0);
    }
}

pub fn dead_lettered(consumer: &str, topic: &str, partition: i32, offset: i64, class: &str, message: &str) {
    counter!("orderflow_dead_lettered_total", "consumer" => consumer.to_owned(), "class" => class.to_owned())
        .increment(1);
    tracing::warn!(consumer, topic, partition, offset, class, error = message, "event sent to the dead-letter topic");
}

pub fn batch_retry(
    consumer: &str,
    topic: &str,
    partition: i32,
    attempt: u32,
    backoff: Duration,
    error: &dyn std::fmt::Display,
) {
    counter!("orderflow_batch_retries_total", "consumer" => consumer.to_owned()).increment(1);
    tracing::warn!(consumer, topic, partition, attempt, ?backoff, error = %error, "batch failed transiently; retrying");
}

pub fn lag(consumer: &str, topic: &str, partition: i32, messages: i64, seconds: f64) {
    let labels = [("consumer", consumer.to_owned()), ("topic", topic.to_owned()), ("partition", partition.to_string())];
    gauge!("orderflow_consumer_lag_messages", &labels).set(messages.max(0) as f64);
    gauge!("orderflow_consumer_lag_seconds", &labels).set(seconds.max(0.0));
}

/// A partition is held because its stored offset does not belong to the log: one error line
/// per partition and state change, and the per-partition conflict gauge at 1 for its reason
/// until [`offset_conflict_cleared`] (the alert `OrderflowOffsetConflict` watches
/// [`partitions_held`]).
pub fn offset_conflict(
    consumer: &str,
    topic: &str,
    partition: i32,
    conflict: &crate::consumer::OffsetConflict,
    detail: &str,
) {
    gauge!("orderflow_consumer_offset_conflict", "consumer" => consumer.to_owned(), "topic" => topic.to_owned(),
        "partition" => partition.to_string(), "reason" => conflict.reason())
    .set(1.0);
    tracing::error!(
        consumer,
        topic,
        partition,
        reason = conflict.reason(),
        detail,
        "partition held: {conflict}; nothing is applied or skipped until an operator moves its offset \
         (orderflow offsets reset, docs/operations.md \"When offsets and the log disagree\")"
    );
}

/// How many assigned partitions are held by an offset conflict (the alert's series; refreshed
/// with the lag gauges, every second).
pub fn partitions_held(consumer: &str, held: usize) {
    gauge!("orderflow_consumer_partitions_held", "consumer" => consumer.to_owned()).set(held as f64);
}

/// A held partition left this instance (revoked, or the consumer stopped).
pub fn offset_conflict_cleared(
    consumer: &str,
    topic: &str,
    partition: i32,
    conflict: &crate::consumer::OffsetConflict,
) {
    gauge!("orderflow_consumer_offset_conflict", "consumer" => consumer.to_owned(), "topic" => topic.to_owned(),
        "partition" => partition.to_string(), "reason" => conflict.reason())
    .set(0.0);
}

pub fn partitions_assigned(consumer: &str, count: usize) {
    gauge!("orderflow_consumer_assigned_partitions", "consumer" => consumer.to_owned()).set(count as f64);
}

/// One span per event of the batch being applied, each a child of the span that produced the
/// event (the record's `traceparent`) and linked to the current (batch) span; they end when
/// dropped, once the batch committed or failed. Empty unless spans are exported: at 10k+
/// events/s a span per event costs more than the rest of the runtime's per-event work, so
/// without an exporter to want them they are not made at all.
pub fn event_spans(consumer: &str, envelopes: &[Envelope]) -> Vec<Span> {
    if !orderflow_telemetry::exporting() {
        return Vec::new();
    }
    let batch = orderflow_telemetry::span_link(&Span::current());
    envelopes
        .iter()
        .map(|envelope| {
            // Every field is given here, none recorded later: recording re-formats a span's fields.
            let (order_id, sku) = match &envelope.event {
                Event::OrderPlaced(order) => (Some(order.order_id.as_str()), None),
                Event::InventoryChanged(change) => {
                    (change.order_id.as_ref().map(|o| o.as_str()), Some(change.sku.as_str()))
                }
                decision => (decision.order_id().map(|o| o.as_str()), None),
            };
            let traceparent = envelope.traceparent.as_deref();
            // The trace this span joins is the record's (the exporter checks the header's shape).
            let trace_id = traceparent.and_then(|t| t.get(3..35));
            let span = tracing::info_span!(target: orderflow_telemetry::TRACE_ONLY, parent: None, "event",
                otel.kind = "consumer", otel.status_code = Empty, consumer, event_id = %envelope.event.event_id(),
                event_type = envelope.event.ce_type(), order_id, sku, topic = envelope.topic.as_str(),
                partition = envelope.partition, offset = envelope.offset, trace_id);
            orderflow_telemetry::continue_trace(&span, traceparent);
            if let Some(batch) = &batch {
                orderflow_telemetry::link(&span, batch);
            }
            span
        })
        .collect()
}

/// Mark the span of a dead-lettered event (if spans are made) as failed.
pub fn event_span_failed(spans: &[Span], envelopes: &[Envelope], offset: i64) {
    if let Some(index) = envelopes.iter().position(|e| e.offset == offset)
        && let Some(span) = spans.get(index)
    {
        span.record("otel.status_code", "ERROR");
    }
}
