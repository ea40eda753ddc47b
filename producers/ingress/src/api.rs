//! The two write endpoints, `POST /v1/orders` and `POST /v1/inventory/changes`.
//!
//! Each request runs: authenticate → content type → a permit (bounded in-flight requests) →
//! read the body up to its limit → parse → validate every field → event ids → the
//! `Idempotency-Key` store ([`crate::idempotency`]) → publish, all in flight at once → 202 with
//! where the broker put each event. Nothing is published unless the whole request is valid.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use orderflow_events::{Event, InventoryChangesRequest, OrderRequest, TraceParent, idempotent_event_id};
use orderflow_publisher::{Ack, PublishError};
use orderflow_service::consistency::Token;
use serde::Serialize;
use tracing::{Instrument, field::Empty};
use uuid::Uuid;

use crate::error::{ApiError, parse_json};
use crate::idempotency::{self, Claim};
use crate::{AppState, observe};

/// Longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

#[derive(Debug, Serialize)]
pub struct Accepted {
    pub event_id: Uuid,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl From<Ack> for Accepted {
    fn from(ack: Ack) -> Self {
        Accepted { event_id: ack.event_id, topic: ack.topic, partition: ack.partition, offset: ack.offset }
    }
}

/// The 202 of `POST /v1/orders`: where its event landed, and the token a read can wait on
/// (docs/read-your-writes.md).
#[derive(Debug, Serialize)]
struct OneAccepted {
    #[serde(flatten)]
    event: Accepted,
    consistency_token: String,
}

/// The 202 of `POST /v1/inventory/changes`.
#[derive(Debug, Serialize)]
struct ManyAccepted {
    events: Vec<Accepted>,
    consistency_token: String,
}

/// What the caller of one request is: its client name and idempotency key.
struct Caller {
    client: String,
    idempotency_key: Option<String>,
}

impl Caller {
    /// The id of event `index` of this request: deterministic under an `Idempotency-Key`
    /// (scoped by client and route, so two clients or two routes never collide), else random.
    fn event_id(&self, route: &str, index: usize) -> Uuid {
        match &self.idempotency_key {
            Some(key) => idempotent_event_id(&format!("{}:{route}", self.client), key, index),
            None => Uuid::new_v4(),
        }
    }
}

/// A valid request's events and the shape of its 202 body.
struct Prepared {
    events: Vec<Event>,
    /// `POST /v1/orders` answers with its one event; the changes route with `{"events": [...]}`.
    single: bool,
}

pub async fn post_order(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    handle(state, "/v1/orders", headers, body, |_state, caller, bytes| {
        let request: OrderRequest = parse_json(bytes)?;
        let event_id = caller.event_id("orders", 0);
        let event = Event::OrderPlaced(request.into_event(event_id, chrono::Utc::now()).map_err(ApiError::Invalid)?);
        tracing::Span::current().record("event_id", tracing::field::display(event_id));
        Ok(Prepared { events: vec![event], single: true })
    })
    .await
}

pub async fn post_inventory_changes(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    handle(state, "/v1/inventory/changes", headers, body, |state, caller, bytes| {
        let request: InventoryChangesRequest = parse_json(bytes)?;
        let count = request.changes.as_ref().map_or(0, Vec::len);
        if count > state.max_changes {
            return Err(ApiError::TooLarge(format!(
                "{count} changes in one request; at most {} are accepted, split the batch",
                state.max_changes
            )));
        }
        let events =
            request.into_events(|i| caller.event_id("inventory", i), chrono::Utc::now()).map_err(ApiError::Invalid)?;
        Ok(Prepared { events: events.into_iter().map(Event::InventoryChanged).collect(), single: false })
    })
    .await
}

/// The steps every write request shares, inside one span that carries the trace id.
async fn handle<F>(state: Arc<AppState>, route: &'static str, headers: HeaderMap, body: Body, prepare: F) -> Response
where
    F: FnOnce(&AppState, &Caller, &[u8]) -> Result<Prepared, ApiError>,
{
    let started = Instant::now();
    let span = tracing::info_span!(
        "ingress_request",
        otel.kind = "server",
        route,
        trace_id = Empty,
        traceparent = Empty,
        client = Empty,
        event_id = Empty,
    );
    let traceparent = crate::trace::for_request(&span, headers.get("traceparent"));
    span.record("trace_id", traceparent.trace_id());
    span.record("traceparent", traceparent.as_str());
    async move {
        let _in_flight = observe::InFlight::start();
        let result = async {
            let caller = authenticate(&state, &headers)?;
            tracing::Span::current().record("client", caller.client.as_str());
            let budget = state.rate_limits.check(&caller.client).map_err(|limited| {
                observe::rate_limited(&caller.client);
                ApiError::RateLimited(limited)
            })?;
            let answer = async {
                check_content_type(&headers)?;
                let _permit = state.acquire_permit().await?;
                let bytes = read_body(&headers, body, state.max_body_bytes).await?;
                let prepared = prepare(&state, &caller, &bytes)?;
                publish_once(&state, route, &caller, &bytes, prepared, traceparent.clone()).await
            }
            .await;
            Ok((budget, answer))
        }
        .await;
        let (budget, result) = match result {
            Ok((budget, answer)) => (budget, answer),
            Err(error) => (Vec::new(), Err(error)),
        };
        let mut response = result.unwrap_or_else(|error| {
            observe::request_failed(route, &error);
            error.into_response()
        });
        for (name, value) in budget {
            if let Ok(value) = header::HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, value);
            }
        }
        if let Ok(value) = header::HeaderValue::from_str(traceparent.as_str()) {
            response.headers_mut().insert("traceparent", value);
        }
        observe::request_done(route, response.status(), started.elapsed());
        response
    }
    .instrument(span)
    .await
}

/// Publish a valid request's events, unless its `Idempotency-Key` already succeeded (then the
/// stored answer is replayed), is in flight (409) or came with another body (422); see
/// [`crate::idempotency`].
async fn publish_once(
    state: &AppState,
    route: &'static str,
    caller: &Caller,
    bytes: &[u8],
    prepared: Prepared,
    traceparent: TraceParent,
) -> Result<Response, ApiError> {
    let lease = match &caller.idempotency_key {
        None => None,
        Some(key) => {
            // The body parsed into its request type already, so it is JSON.
            let body: serde_json::Value =
                serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
            match state.keys.claim(&caller.client, route, key, &idempotency::fingerprint(route, &body)).await {
                Claim::Owned(lease) => Some(lease),
                Claim::Bypassed => None,
                Claim::Replay(answer) => return Ok(accepted(answer, true)),
                Claim::InFlight => return Err(ApiError::KeyInFlight),
                Claim::Reused => return Err(ApiError::KeyReused),
            }
        }
    };
    match publish(state, route, prepared.events, traceparent).await {
        Ok(acks) => {
            let token = Token::new(acks.iter().map(|a| (a.topic.as_str(), a.partition, a.offset))).encode();
            let mut accepted_events: Vec<Accepted> = acks.into_iter().map(Accepted::from).collect();
            let answer = if prepared.single {
                serde_json::to_vec(&OneAccepted { event: accepted_events.remove(0), consistency_token: token })
            } else {
                serde_json::to_vec(&ManyAccepted { events: accepted_events, consistency_token: token })
            }
            .map_err(|e| ApiError::Internal(format!("could not write the answer: {e}")))?;
            if let Some(lease) = &lease {
                state.keys.complete(lease, &answer).await;
            }
            Ok(accepted(answer, false))
        }
        Err(error) => {
            if let Some(lease) = &lease {
                state.keys.release(lease).await;
            }
            Err(error)
        }
    }
}

/// The 202 with its JSON body; `Idempotent-Replayed: true` when it is a stored answer.
fn accepted(body: Vec<u8>, replayed: bool) -> Response {
    let mut response = (StatusCode::ACCEPTED, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if replayed {
        response.headers_mut().insert("idempotent-replayed", header::HeaderValue::from_static("true"));
    }
    response
}

fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let client = match &state.tokens {
        Some(tokens) => {
            tokens.authenticate(headers.get(header::AUTHORIZATION)).ok_or(ApiError::Unauthorized)?.to_owned()
        }
        None => "anonymous".to_owned(),
    };
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => {
            let key = value
                .to_str()
                .ok()
                .map(str::trim)
                .filter(|k| {
                    !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY_LEN && k.bytes().all(|b| b.is_ascii_graphic())
                })
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"
                    ))
                })?;
            Some(key.to_owned())
        }
    };
    Ok(Caller { client, idempotency_key })
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if media_type.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else if content_type.is_empty() {
        Err(ApiError::UnsupportedMediaType("Content-Type is missing; send application/json".to_owned()))
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type {content_type:?} is not accepted; send application/json"
        )))
    }
}

/// Most bytes of an oversized body read and thrown away before the 413 is sent, and how long
/// at most: a client that writes its whole body before reading the answer (Python's urllib,
/// curl without `Expect`) then sees the 413 instead of a broken pipe. Past either bound the
/// connection is closed.
const DISCARD_AT_MOST: usize = 16 * 1024 * 1024;
const DISCARD_FOR_AT_MOST: std::time::Duration = std::time::Duration::from_secs(5);

async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    use futures::StreamExt as _;
    let too_large = || ApiError::TooLarge(format!("request body is larger than {limit} bytes"));
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let mut stream = body.into_data_stream();
    if declared.is_some_and(|n| n > limit as u64) {
        discard(stream).await;
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(declared.unwrap_or(0) as usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("could not read the request body: {e}")))?;
        if bytes.len() + chunk.len() > limit {
            discard(stream).await;
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes.into())
}

/// Read and drop the rest of a body, within [`DISCARD_AT_MOST`] and [`DISCARD_FOR_AT_MOST`].
async fn discard(mut stream: axum::body::BodyDataStream) {
    use futures::StreamExt as _;
    let mut seen = 0usize;
    let _ = tokio::time::timeout(DISCARD_FOR_AT_MOST, async {
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len();
            if seen > DISCARD_AT_MOST {
                break;
            }
        }
    })
    .await;
}

/// Publish every event concurrently and wait for all acknowledgements, bounded by the
/// publish timeout. Any failure fails the request: the client retries the whole request
/// with the same `Idempotency-Key`, and events already published get the same ids again.
async fn publish(
    state: &AppState,
    route: &'static str,
    events: Vec<Event>,
    traceparent: TraceParent,
) -> Result<Vec<Ack>, ApiError> {
    let started = Instant::now();
    let outcomes = tokio::time::timeout(state.publish_timeout, state.publisher.publish_all(&events, Some(traceparent)))
        .await
        .map_err(|_| {
            ApiError::Unavailable(format!(
                "the broker did not acknowledge within {:?}; retry later",
                state.publish_timeout
            ))
        })?;
    let mut acks = Vec::with_capacity(outcomes.len());
    for outcome in outcomes {
        match outcome {
            Ok(ack) => acks.push(ack),
            Err(e) => return Err(publish_error(e)),
        }
    }
    observe::published(route, acks.len(), started.elapsed());
    Ok(acks)
}

fn publish_error(error: PublishError) -> ApiError {
    if error.is_retryable() {
        ApiError::Unavailable(format!("could not publish: {error}; retry later with the same Idempotency-Key"))
    } else {
        ApiError::Internal(format!("could not publish: {error}"))
    }
}
