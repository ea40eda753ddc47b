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
//! [`outbox`] (the table, its migration and `enqueue`, for checkout services) ;
//! [`relay`] (claim → publish → mark) ; [`RelayConfig`] + [`run`] (the binary).
//!
//! # Must not touch
//! The checkout service's own tables, consumers, HTTP ingress.

pub mod outbox;
pub mod relay;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::routing::get;
use orderflow_events::Codec;
use orderflow_kafka::{INVENTORY_TOPIC, KafkaArgs, ORDERS_TOPIC};
use orderflow_publisher::{Limits, Publisher};
use sqlx::postgres::PgConnectOptions;

pub use outbox::Outbox;
pub use relay::{Relay, RelaySettings};

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "outbox-relay", version, about = "Publish a transactional outbox table to Kafka")]
pub struct RelayConfig {
    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// The checkout database holding the outbox.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/orderflow",
        hide_env_values = true
    )]
    pub database_url: String,

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

    /// Address for /healthz and /metrics.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8086")]
    pub listen: SocketAddr,
}

/// Migrate the outbox, serve /healthz and /metrics, and relay until `shutdown`.
pub async fn run(config: RelayConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let outbox = Outbox::new(&config.schema)?;
    if config.batch_size == 0 {
        anyhow::bail!("--batch-size must be at least 1");
    }
    orderflow_kafka::admin::check_credentials(&config.kafka, Duration::from_secs(10)).await?;
    outbox.migrate(&config.database_url).await?;
    let options: PgConnectOptions = config.database_url.parse().context("DATABASE_URL is not a valid Postgres URL")?;
    let codec = Codec::from_config(config.schema_registry_url.as_deref()).context("configuring the codec")?;
    let limits = Limits { message_timeout: Duration::from_secs(30), ..Limits::default() };
    let publisher = Publisher::with_limits(&config.kafka, codec, "orderflow/outbox-relay", limits)
        .context("creating the Kafka producer")?
        .with_topics(&config.orders_topic, &config.inventory_topic);
    let settings = RelaySettings {
        batch_size: config.batch_size,
        poll_interval: Duration::from_millis(config.poll_interval_ms.max(10)),
        retention: Duration::from_secs(config.retention_hours * 3600),
    };
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let prometheus = orderflow_runtime::observe::prometheus();
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(move || async move { prometheus.render() }));
    tracing::info!(table = outbox.table(), addr = %config.listen, brokers = %config.kafka.brokers, "outbox relay starting");
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = http_stopped.await;
            })
            .await
    });
    Relay::new(outbox, options, publisher.clone(), settings).run(shutdown).await;
    let _ = stop_http.send(());
    http.await.context("HTTP task")?.context("serving HTTP")?;
    publisher.flush(Duration::from_secs(10)).context("flushing the producer at shutdown")?;
    Ok(())
}
