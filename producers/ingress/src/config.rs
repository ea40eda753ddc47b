//! The ingress's flags and environment (docs/operations.md, Configuration).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use orderflow_events::{INVENTORY_TOPIC, ORDERS_TOPIC};
use orderflow_kafka::KafkaArgs;
use orderflow_service::DatabaseArgs;
pub use orderflow_service::auth::Secret;

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "ingress", version, about = "Accept orders and stock changes over HTTP and publish them to Kafka")]
pub struct IngressConfig {
    /// Address to serve the API, /healthz, /readyz and /metrics on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// The database of the `Idempotency-Key` store, shared by every ingress instance.
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Postgres schema of the `Idempotency-Key` store (created if missing).
    #[arg(long, env = "INGRESS_IDEMPOTENCY_SCHEMA", default_value = "ingress")]
    pub idempotency_schema: String,

    /// How long an `Idempotency-Key` and its answer are kept (then pruned; the key may be
    /// used for a new request).
    #[arg(long, env = "INGRESS_IDEMPOTENCY_TTL_HOURS", default_value_t = 24)]
    pub idempotency_ttl_hours: u64,

    /// Connections to the key store's database, at most.
    #[arg(long, env = "INGRESS_IDEMPOTENCY_DB_CONNECTIONS", default_value_t = 16)]
    pub idempotency_db_connections: u32,

    /// Schema Registry URL; unset: Avro single-object encoding.
    #[arg(long, env = "SCHEMA_REGISTRY_URL")]
    pub schema_registry_url: Option<String>,

    /// Accepted bearer tokens, comma-separated, each `name:token` or a plain token. Read it
    /// from the environment, not the command line (which `ps` shows).
    #[arg(long, env = "INGRESS_TOKENS", hide_env_values = true)]
    pub tokens: Option<Secret>,

    /// A file of tokens, one per line (`name:token` or a plain token; `#` starts a comment).
    #[arg(long, env = "INGRESS_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,

    /// Accept requests without a token. Only for local experiments.
    #[arg(long)]
    pub insecure_no_auth: bool,

    /// Largest request body accepted (413 above it).
    #[arg(long, env = "INGRESS_MAX_BODY_BYTES", default_value_t = 256 * 1024)]
    pub max_body_bytes: usize,

    /// Most changes in one `POST /v1/inventory/changes` (413 above it).
    #[arg(long, env = "INGRESS_MAX_CHANGES", default_value_t = 1000)]
    pub max_changes: usize,

    /// Topic orders are published to.
    #[arg(long, env = "INGRESS_ORDERS_TOPIC", default_value = ORDERS_TOPIC)]
    pub orders_topic: String,

    /// Topic stock changes are published to.
    #[arg(long, env = "INGRESS_INVENTORY_TOPIC", default_value = INVENTORY_TOPIC)]
    pub inventory_topic: String,

    /// How long a request waits for the broker's acknowledgement before answering 503
    /// (also librdkafka's `message.timeout.ms`).
    #[arg(long, env = "INGRESS_PUBLISH_TIMEOUT_MS", default_value_t = 5000)]
    pub publish_timeout_ms: u64,

    /// Records the local producer queue holds at most (`queue.buffering.max.messages`);
    /// when it is full, requests get 503 at once.
    #[arg(long, env = "INGRESS_PRODUCER_QUEUE", default_value_t = 100_000)]
    pub producer_queue: usize,

    /// Per-client rate limits: `client=RATE/BURST,...` (requests per second, and how many may
    /// come at once), `*` for every client without an entry; empty: no limits. Over it: 429.
    #[arg(long = "rate-limit", env = "INGRESS_RATE_LIMITS", default_value = "", value_parser = parse_limits)]
    pub rate_limits: crate::ratelimit::Limits,

    /// Requests processed at once; more wait (up to the publish timeout) and then get 503.
    #[arg(long, env = "INGRESS_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: usize,
}

impl IngressConfig {
    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.publish_timeout_ms.max(1))
    }

    pub fn idempotency_ttl(&self) -> Duration {
        Duration::from_secs(self.idempotency_ttl_hours.saturating_mul(3600))
    }
}

fn parse_limits(spec: &str) -> Result<crate::ratelimit::Limits, String> {
    crate::ratelimit::Limits::parse(spec).map_err(|e| format!("{e:#}"))
}
