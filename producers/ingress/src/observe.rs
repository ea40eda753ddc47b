//! What the ingress reports, logged and counted in one place.

use std::time::Duration;

use axum::http::StatusCode;
use metrics::{counter, gauge, histogram};

use crate::error::ApiError;

pub fn request_done(route: &'static str, status: StatusCode, elapsed: Duration) {
    counter!("ingress_requests_total", "route" => route, "status" => status.as_u16().to_string()).increment(1);
    histogram!("ingress_request_duration_seconds", "route" => route).record(elapsed.as_secs_f64());
    tracing::info!(status = status.as_u16(), elapsed_ms = elapsed.as_millis() as u64, "request done");
}

pub fn request_failed(route: &'static str, error: &ApiError) {
    match error {
        ApiError::Unavailable(message) => tracing::warn!(route, message, "shedding request"),
        ApiError::RateLimited(limited) => {
            tracing::info!(route, retry_after_ms = limited.retry_after.as_millis() as u64, "client over its rate limit")
        }
        ApiError::Internal(message) => tracing::error!(route, message, "request failed"),
        ApiError::Invalid(fields) => tracing::info!(route, ?fields, "rejected invalid request"),
        other => tracing::info!(route, error = ?other, "rejected request"),
    }
}

/// Export the series alerts watch for increases at 0 from the start.
pub fn register(clients: &[&str]) {
    for client in clients {
        counter!("ingress_rate_limited_total", "client" => (*client).to_owned()).increment(0);
    }
    for route in ["/v1/orders", "/v1/inventory/changes"] {
        counter!("ingress_idempotency_replays_total", "route" => route).increment(0);
        counter!("ingress_idempotency_bypassed_total", "route" => route).increment(0);
    }
}

pub fn rate_limited(client: &str) {
    counter!("ingress_rate_limited_total", "client" => client.to_owned()).increment(1);
}

pub fn published(route: &'static str, events: usize, elapsed: Duration) {
    histogram!("ingress_publish_duration_seconds", "route" => route).record(elapsed.as_secs_f64());
    counter!("ingress_events_published_total", "route" => route).increment(events as u64);
}

pub fn producer_queue(depth: i32) {
    gauge!("ingress_producer_in_flight_records").set(f64::from(depth));
}

/// Counts a request as in flight for as long as it lives.
pub struct InFlight;

impl InFlight {
    pub fn start() -> InFlight {
        gauge!("ingress_in_flight_requests").increment(1.0);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        gauge!("ingress_in_flight_requests").decrement(1.0);
    }
}
