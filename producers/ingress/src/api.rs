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
use utoipa::ToSchema;
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{ContentBuilder, HeaderBuilder, ObjectBuilder, OpenApi, Ref, RefOr, ResponseBuilder, Type};
use uuid::Uuid;

use crate::error::{ApiError, ErrorBody, parse_json};
use crate::idempotency::{self, Claim};
use crate::{AppState, observe};

/// Longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// Where the broker put one event.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// The event's id (deterministic under an `Idempotency-Key`).
    pub event_id: Uuid,
    pub topic: String,
    #[schema(minimum = 0)]
    pub partition: i32,
    #[schema(minimum = 0)]
    pub offset: i64,
}

impl From<Ack> for Accepted {
    fn from(ack: Ack) -> Self {
        Accepted { event_id: ack.event_id, topic: ack.topic, partition: ack.partition, offset: ack.offset }
    }
}

/// The 202 of `POST /v1/orders`: where its event landed, and the token a read can wait on
/// (docs/read-your-writes.md).
#[derive(Debug, Serialize, ToSchema)]
struct OneAccepted {
    #[serde(flatten)]
    event: Accepted,
    /// Pass it to a read API (`?after=` or the `consistency-token` header) to read this write.
    consistency_token: String,
}

/// The 202 of `POST /v1/inventory/changes`.
#[derive(Debug, Serialize, ToSchema)]
struct ManyAccepted {
    /// One per change, in the request's order.
    events: Vec<Accepted>,
    /// Pass it to a read API (`?after=` or the `consistency-token` header) to read these writes.
    consistency_token: String,
}

/// The request headers both write endpoints read (described for `/openapi.json`; the handlers
/// read them from the `HeaderMap`).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct WriteHeaders {
    /// Retries with the same key and body get the first answer back, and publish nothing
    /// again; the same key with another body is refused (422). 1 to 255 visible ASCII
    /// characters.
    #[param(rename = "idempotency-key", max_length = 255, pattern = r"^[\x21-\x7e]+$")]
    idempotency_key: Option<String>,
    /// W3C trace context; the request starts a new trace when it is absent or malformed.
    traceparent: Option<String>,
}

/// The answers every write endpoint may give besides its 202, each with the [`ErrorBody`]
/// and the headers the client needs (`Retry-After`, the rate-limit headers).
pub fn document_errors(mut spec: OpenApi) -> OpenApi {
    let error = || ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
    let header = |description: &str, integer: bool| {
        HeaderBuilder::new()
            .schema(Some(ObjectBuilder::new().schema_type(if integer { Type::Integer } else { Type::String })))
            .description(Some(description))
            .build()
    };
    /// A response header: name, description, integer (else string).
    type Header = (&'static str, &'static str, bool);
    let answers: [(&str, &str, &[Header]); 9] = [
        ("400", "Malformed JSON, or a malformed Idempotency-Key", &[]),
        ("401", "No bearer token, or an unknown one", &[("www-authenticate", "`Bearer`", false)]),
        ("409", "A request with this Idempotency-Key is still in flight", &[("retry-after", "Seconds", true)]),
        ("413", "The body is over the limit (or too many changes)", &[]),
        ("415", "The Content-Type is not application/json", &[]),
        (
            "422",
            "A field is missing or invalid (`fields` names every one), a rule across fields is broken (the \
             total is not the lines' sum, a change's sign does not suit its reason), or the Idempotency-Key \
             was used with another body",
            &[],
        ),
        (
            "429",
            "This client is over its rate limit",
            &[
                ("retry-after", "Seconds", true),
                ("ratelimit", "IETF RateLimit: the client's remaining quota", false),
                ("ratelimit-policy", "IETF RateLimit-Policy: the client's quota", false),
            ],
        ),
        ("500", "An internal error; nothing was published", &[]),
        (
            "503",
            "The broker did not acknowledge in time; retry with the same Idempotency-Key",
            &[("retry-after", "Seconds", true)],
        ),
    ];
    for item in spec.paths.paths.values_mut() {
        for operation in orderflow_service::openapi::operations_mut(item) {
            operation.security =
                Some(vec![SecurityRequirement::new(orderflow_service::openapi::BEARER, Vec::<String>::new())]);
            for response in operation.responses.responses.values_mut() {
                if let RefOr::T(response) = response {
                    response
                        .headers
                        .insert("traceparent".to_owned(), header("The request's W3C trace context", false).into());
                    response.headers.insert(
                        "idempotent-replayed".to_owned(),
                        header(
                            "`true` when this is the stored answer of an earlier request with the same Idempotency-Key",
                            false,
                        )
                        .into(),
                    );
                    response.headers.insert(
                        "ratelimit".to_owned(),
                        header("IETF RateLimit: the client's remaining quota", false).into(),
                    );
                    response.headers.insert(
                        "ratelimit-policy".to_owned(),
                        header("IETF RateLimit-Policy: the client's quota", false).into(),
                    );
                }
            }
            for (status, description, headers) in answers {
                let mut response = ResponseBuilder::new().description(description).content("application/json", error());
                response = response.header("traceparent", header("The request's W3C trace context", false));
                for (name, description, integer) in headers {
                    response = response.header(*name, header(description, *integer));
                }
                operation.responses.responses.insert(status.to_owned(), RefOr::T(response.build()));
            }
        }
    }
    let mut schemas = Vec::new();
    <ErrorBody as utoipa::ToSchema>::schemas(&mut schemas);
    schemas.push(("ErrorBody".to_owned(), <ErrorBody as utoipa::PartialSchema>::schema()));
    let components = spec.components.get_or_insert_with(Default::default);
    for (name, schema) in schemas {
        components.schemas.entry(name).or_insert(schema);
    }
    spec
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

/// Place an order: publishes one `OrderPlaced` to `orders.v1`, keyed by `order_id`.
#[utoipa::path(post, path = "/v1/orders", tag = "ingress",
    request_body(content = OrderRequest, content_type = "application/json"),
    params(WriteHeaders),
    responses((status = 202, description = "Published; where the event landed", body = OneAccepted)),
)]
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

/// Record stock changes: publishes one `InventoryChanged` per change to `inventory.v1`, keyed by sku.
/// All or nothing: one invalid change refuses the whole request.
#[utoipa::path(post, path = "/v1/inventory/changes", tag = "ingress",
    request_body(content = InventoryChangesRequest, content_type = "application/json"),
    params(WriteHeaders),
    responses((status = 202, description = "Published; where each event landed, in the request's order", body = ManyAccepted)),
)]
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
