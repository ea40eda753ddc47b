//! The transactional outbox (docs/architecture.md: "checkout DB ─outbox─> relay").
//!
//! A checkout service that writes its own order rows in Postgres adds the matching events to
//! an outbox table **in the same transaction** ([`Outbox::enqueue`]): either both commit or
//! neither does, so an order that exists always gets its event and a rolled-back one never
//! does. `outbox-relay` publishes pending rows to Kafka in insertion order and marks them.
//!
//! # Delivery guarantee
//! At least once, in enqueue order per key (see [`relay`]): an enqueued, committed event is
//! published even across relay crashes; a crash after the broker's ack and before the
//! relay's commit publishes it again with the same event id, which consumers skip.
//!
//! # Layout
//! [`outbox`] (re-export of `orderflow-outbox`: the table, its migration and `enqueue`, for checkout services) ;
//! [`relay`] (claim → publish → mark) ; [`RelayConfig`] + [`run`] (the binary, with the
//! shared `/healthz`, `/readyz` and `/metrics`).
//!
//! # Must not touch
//! The checkout service's own tables, consumers, HTTP ingress.

pub mod relay;

/// The outbox table and enqueueing live in `orderflow-outbox`; re-exported for checkout services.
pub use orderflow_outbox as outbox;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use orderflow_events::{ALLOCATIONS_TOPIC, Codec, INVENTORY_TOPIC, ORDERS_TOPIC};
use orderflow_kafka::KafkaArgs;
use orderflow_publisher::{Limits, Publisher};
use orderflow_service::DatabaseArgs;
use orderflow_service::ops::{self, Cached, Probe, Readiness};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::net::TcpListener;

pub use outbox::Outbox;
pub use relay::{Relay, RelaySettings};

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "outbox-relay", version, about = "Publish a transactional outbox table to Kafka")]
pub struct RelayConfig {
    #[command(flatten)]
    pub kafka: KafkaArgs,

    // The checkout database holding the outbox.
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Schema of the outbox table (`<schema>.orderflow_outbox`).
    #[arg(long, env = "OUTBOX_SCHEMA", default_value = "public")]
    pub schema: String,

    /// Schema Registry URL; unset: Avro single-object encoding.
    #[arg(long, env = "SCHEMA_REGISTRY_URL")]
    pub schema_registry_url: Option<String>,

    /// Rows claimed and published per transaction.
    #[arg(long, env = "OUTBOX_BATCH_SIZE", default_value_t = 500)]
    pub batch_size: usize,

    /// Longest wait for new rows without a NOTIFY.
    #[arg(long, env = "OUTBOX_POLL_INTERVAL_MS", default_value_t = 1000)]
    pub poll_interval_ms: u64,

    /// Published rows are deleted after this many hours.
    #[arg(long, env = "OUTBOX_RETENTION_HOURS", default_value_t = 168)]
    pub retention_hours: u64,

    #[arg(long, env = "OUTBOX_ORDERS_TOPIC", default_value = ORDERS_TOPIC)]
    pub orders_topic: String,

    #[arg(long, env = "OUTBOX_INVENTORY_TOPIC", default_value = INVENTORY_TOPIC)]
    pub inventory_topic: String,

    /// Where the allocator's decisions go (its outbox is relayed like a checkout's).
    #[arg(long, env = "OUTBOX_ALLOCATIONS_TOPIC", default_value = ALLOCATIONS_TOPIC)]
    pub allocations_topic: String,

    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8086")]
    pub listen: SocketAddr,
}

/// How long a `/readyz` answer is reused before Postgres and the broker are asked again.
const READY_CACHE: Duration = Duration::from_secs(3);
/// How long each readiness check waits for Postgres or a broker.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What `/readyz` checks: whether this relay could publish now, i.e. Postgres answers a query
/// and a broker answers a metadata request. A standby relay (another one holds the outbox's
/// lock) is ready too: it takes over as soon as the active one goes; `detail` says which it is.
struct RelayProbe {
    /// One lazily opened connection, only for the check.
    pool: PgPool,
    publisher: Publisher,
    active: Arc<AtomicBool>,
}

impl Probe for RelayProbe {
    async fn readiness(&self) -> Readiness {
        let database = tokio::time::timeout(CHECK_TIMEOUT, sqlx::query("SELECT 1").execute(&self.pool));
        let (database, broker) = tokio::join!(database, self.publisher.broker_reachable(CHECK_TIMEOUT));
        let mut problems = Vec::new();
        match database {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => problems.push(format!("Postgres did not answer: {error}")),
            Err(_) => problems.push(format!("Postgres did not answer within {} s", CHECK_TIMEOUT.as_secs())),
        }
        if !broker {
            problems.push(format!("no broker answered a metadata request within {} s", CHECK_TIMEOUT.as_secs()));
        }
        if !problems.is_empty() {
            return Readiness::not_ready(problems.join("; "));
        }
        let role = if self.active.load(Ordering::Relaxed) {
            "active relay"
        } else {
            "standing by (another relay holds the outbox's lock, or this one is taking it)"
        };
        Readiness::ready(format!("Postgres and a broker answered; {role}"))
    }
}

/// Bind `config.listen`, then [`run_with_listener`].
pub async fn run(config: RelayConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("Failed to bind {}", config.listen))?;
    run_with_listener(config, listener, shutdown).await
}

/// Migrate the outbox, serve `/healthz`, `/readyz` and `/metrics` on `listener` (tests bind
/// port 0), and relay until `shutdown`; then wait for in-flight records to be acknowledged.
pub async fn run_with_listener(
    config: RelayConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let outbox = Outbox::new(&config.schema)?;
    if config.batch_size == 0 {
        anyhow::bail!("--batch-size must be at least 1");
    }
    orderflow_service::prometheus();
    orderflow_kafka::admin::check_credentials(&config.kafka, Duration::from_secs(10)).await?;
    let database_url = &config.database.database_url;
    outbox.migrate(database_url).await?;
    let options: PgConnectOptions = database_url.parse().context("DATABASE_URL is not a valid Postgres URL")?;
    let codec = Codec::from_config(config.schema_registry_url.as_deref()).context("Failed to configure the codec")?;
    let limits = Limits { message_timeout: Duration::from_secs(30), ..Limits::default() };
    let publisher = Publisher::with_limits(&config.kafka, codec, "orderflow/outbox-relay", limits)
        .context("Failed to create the Kafka producer")?
        .with_topics(&config.orders_topic, &config.inventory_topic)
        .with_allocations_topic(&config.allocations_topic);
    let settings = RelaySettings {
        batch_size: config.batch_size,
        poll_interval: Duration::from_millis(config.poll_interval_ms.max(10)),
        retention: Duration::from_secs(config.retention_hours * 3600),
    };
    let relay = Relay::new(outbox.clone(), options.clone(), publisher.clone(), settings);
    let probe = RelayProbe {
        pool: PgPoolOptions::new().max_connections(1).acquire_timeout(CHECK_TIMEOUT).connect_lazy_with(options),
        publisher: publisher.clone(),
        active: relay.active_flag(),
    };
    let router = ops::router(Cached::new(probe, READY_CACHE));
    tracing::info!(table = outbox.table(), addr = %listener.local_addr()?, brokers = %config.kafka.brokers, "outbox relay starting");
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = http_stopped.await;
            })
            .await
    });
    relay.run(shutdown).await;
    let _ = stop_http.send(());
    http.await.context("HTTP task")?.context("Failed to serve HTTP")?;
    publisher.flush(Duration::from_secs(10)).context("Failed to flush the producer at shutdown")?;
    Ok(())
}
