//! `ingress`: the HTTP front door checkout services POST orders and stock changes to
//! (docs/producing.md). It validates each request, publishes it as Avro events through
//! [`orderflow_publisher::Publisher`], and answers 202 only after the broker acknowledged.
//!
//! # Delivery guarantee
//! A 202 means every event of the request is on the topic (`acks=all`, idempotent producer).
//! Any other answer means the client must retry; with the same `Idempotency-Key` the retry
//! carries the same event ids (UUID v5 of client, route, key and index), so events that were
//! published before a failure are published again under their old ids and consumers apply
//! them once. Without the header every request gets fresh random ids (and consumers still
//! apply an order once: by its order id, docs/events.md "Natural keys").
//!
//! A key that already succeeded is answered from the [`idempotency`] store in Postgres (the
//! stored 202, nothing published again); the same key with another body is 422, and while
//! its first request is in flight 409.
//!
//! # Load shedding
//! At most `--max-in-flight` requests are processed at once; a request waits for a slot at
//! most the publish timeout. The producer queue is bounded and every record has a delivery
//! timeout, so a slow or absent broker turns into 503 + `Retry-After`, never an unbounded
//! queue. The ingress's only state is the shared key store: run as many as needed.
//!
//! # Layout
//! [`config`] (flags) → [`run`] builds the [`AppState`] and the router; [`api`] (the write
//! endpoints), `orderflow_service::auth` (bearer tokens), [`error`] (statuses and bodies), [`trace`]
//! (traceparent), [`observe`] (logs + metrics), [`idempotency`] (the key store).
//!
//! # Must not touch
//! Any database but its key store, consumers, schemas (validation lives in `orderflow-events`).

pub mod api;
pub mod config;
pub mod error;
pub mod idempotency;
pub mod observe;
pub mod ratelimit;
pub mod trace;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use orderflow_events::Codec;
use orderflow_publisher::{Limits, Publisher};
use orderflow_service::ops::{self, Cached, Probe, Readiness};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use config::IngressConfig;
use error::ApiError;
use idempotency::KeyStore;
pub use orderflow_service::auth::Tokens;

/// How long a readiness answer is reused before asking the broker again.
const READY_CACHE: Duration = Duration::from_secs(3);

/// Everything a request needs, shared by all of them.
pub struct AppState {
    pub publisher: Publisher,
    /// `None` only with `--insecure-no-auth`.
    pub tokens: Option<Tokens>,
    pub max_body_bytes: usize,
    pub max_changes: usize,
    pub publish_timeout: Duration,
    /// The shared `Idempotency-Key` store.
    pub keys: Arc<KeyStore>,
    /// Per-client token buckets.
    pub rate_limits: ratelimit::RateLimits,
    /// Bounds requests in progress (memory, producer queue).
    permits: Arc<Semaphore>,
}

impl AppState {
    /// Build the state from the configuration; refuses to run without tokens unless
    /// `--insecure-no-auth` was given.
    pub fn from_config(config: &IngressConfig) -> anyhow::Result<AppState> {
        let tokens = Tokens::load(config.tokens.as_ref().map(|s| s.0.as_str()), config.tokens_file.as_deref())
            .context("Failed to load ingress tokens")?;
        let tokens = match (tokens.is_empty(), config.insecure_no_auth) {
            (false, _) => Some(tokens),
            (true, true) => {
                tracing::warn!("--insecure-no-auth: accepting requests without a token");
                None
            }
            (true, false) => bail!(
                "no ingress tokens configured: set INGRESS_TOKENS or --tokens-file (or --insecure-no-auth for local experiments)"
            ),
        };
        if config.max_body_bytes == 0
            || config.max_changes == 0
            || config.max_in_flight == 0
            || config.producer_queue == 0
        {
            bail!("--max-body-bytes, --max-changes, --max-in-flight and --producer-queue must be at least 1");
        }
        let codec =
            Codec::from_config(config.schema_registry_url.as_deref()).context("Failed to configure the codec")?;
        let limits = Limits {
            message_timeout: config.publish_timeout(),
            max_queued_messages: config.producer_queue,
            ..Limits::default()
        };
        let publisher = Publisher::with_limits(&config.kafka, codec, "orderflow/ingress", limits)
            .context("Failed to create the Kafka producer")?
            .with_topics(&config.orders_topic, &config.inventory_topic);
        // A claim outlives the longest a request may take (a permit wait, then the publish);
        // after it another instance may take over the key of a request whose instance died.
        let lease = config.publish_timeout() * 2 + Duration::from_secs(5);
        let keys = KeyStore::new(
            &config.database.database_url,
            &config.idempotency_schema,
            config.idempotency_ttl(),
            lease,
            config.idempotency_db_connections.max(1),
        )?;
        Ok(AppState {
            publisher,
            keys,
            rate_limits: ratelimit::RateLimits::new(config.rate_limits.clone()),
            tokens,
            max_body_bytes: config.max_body_bytes,
            max_changes: config.max_changes,
            publish_timeout: config.publish_timeout(),
            permits: Arc::new(Semaphore::new(config.max_in_flight)),
        })
    }

    /// A slot for one request, waiting at most the publish timeout (then 503).
    async fn acquire_permit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        tokio::time::timeout(self.publish_timeout, self.permits.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| ApiError::Unavailable("too many requests in progress; retry later".to_owned()))
    }
}

/// What the operator endpoints read: ready while a broker answers a metadata request
/// (asked at most every [`READY_CACHE`]); the producer queue's depth at each scrape.
struct BrokerProbe(Publisher);

impl Probe for BrokerProbe {
    async fn readiness(&self) -> Readiness {
        if self.0.broker_reachable(Duration::from_secs(2)).await {
            Readiness::ready("a broker answered a metadata request")
        } else {
            Readiness::not_ready("no broker answered a metadata request within 2 s")
        }
    }

    fn before_scrape(&self) {
        observe::producer_queue(self.0.in_flight());
    }
}

/// The write endpoints, with their OpenAPI description.
fn write_api() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(api::post_order)).routes(routes!(api::post_inventory_changes))
}

/// The ingress's OpenAPI description, as served at `/openapi.json` (docs/openapi/ingress.json).
pub fn openapi() -> utoipa::openapi::OpenApi {
    orderflow_service::openapi::document(
        "orderflow ingress",
        "Checkout's write API: each accepted request is published to Kafka as Avro events before the 202 \
         (acks=all). Requests need `Authorization: Bearer <token>` (API_TOKENS). Nothing is published for a \
         request that is not answered 202. See docs/producing.md.",
        api::document_errors(write_api().into_openapi()),
    )
}

/// The whole HTTP surface: write endpoints, the shared `/healthz`, `/readyz`, `/metrics`, and
/// `/openapi.json`.
pub fn router(state: Arc<AppState>) -> Router {
    let probe = Cached::new(BrokerProbe(state.publisher.clone()), READY_CACHE);
    let (writes, _) = write_api().split_for_parts();
    writes.with_state(state).merge(ops::router(probe)).merge(orderflow_service::openapi::router(&openapi()))
}

/// Bind `config.listen` and serve until `shutdown` resolves.
pub async fn run(config: IngressConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("Failed to bind {}", config.listen))?;
    run_with_listener(config, listener, shutdown).await
}

/// Serve on an already bound listener (tests bind port 0) until `shutdown` resolves, then
/// wait for in-flight records to be acknowledged.
pub async fn run_with_listener(
    config: IngressConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    orderflow_service::prometheus();
    orderflow_kafka::admin::check_credentials(&config.kafka, Duration::from_secs(10)).await?;
    let state = Arc::new(AppState::from_config(&config)?);
    let clients = state.tokens.as_ref().map_or(0, Tokens::len);
    let names: Vec<&str> = state.tokens.as_ref().map_or_else(|| vec!["anonymous"], |t| t.names().collect());
    observe::register(&names);
    tracing::info!(
        addr = %listener.local_addr()?,
        brokers = %config.kafka.brokers,
        orders_topic = %config.orders_topic,
        inventory_topic = %config.inventory_topic,
        clients,
        "ingress listening"
    );
    match state.keys.ensure_table().await {
        Ok(()) => {
            state.keys.up();
            tracing::info!(schema = %config.idempotency_schema, "Idempotency-Key store ready");
        }
        Err(error) => state.keys.down(&format!("at start: {error:#}")).await,
    }
    let stop_pruning = tokio_util::sync::CancellationToken::new();
    let pruner = tokio::spawn(state.keys.clone().prune_until(stop_pruning.clone()));
    let served = axum::serve(listener, router(state.clone())).with_graceful_shutdown(shutdown).await;
    stop_pruning.cancel();
    pruner.await.ok();
    served.context("Failed to serve HTTP")?;
    state.publisher.flush(Duration::from_secs(10)).context("Failed to flush the producer at shutdown")?;
    Ok(())
}
