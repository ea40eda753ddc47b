//! The consumer runtime every orderflow consumer is built on (ours and downstream teams').
//!
//! A team implements [`Handler`] (which topics, what a batch of typed events does to its
//! Postgres store) and calls [`Runtime::run`]. The runtime owns everything else: the consumer
//! group with cooperative rebalancing, per-partition batching, offsets stored in the read
//! store's own transaction, the applied-event ledger, retries, the dead-letter topic, replay
//! mode, metrics, health endpoints and graceful shutdown.
//!
//! # Guarantee
//! A consumer that crashes at any instant, restarts, rebalances, or sees the same event twice
//! ends with exactly the read store it would have had if nothing went wrong. See
//! [`consumer`] for how, and `docs/adding-a-consumer.md` for what it does not cover.
//!
//! # Layout
//! - [`handler`]: the contract ([`Handler`], [`HandlerError`], [`Envelope`]).
//! - [`consumer`]: the polling thread and the partition workers.
//! - [`store`]: the runtime's tables (offsets, ledger) in each consumer's schema.
//! - [`dlq`]: dead-letter records and their headers.
//! - [`observe`]: metrics and the log lines that go with them.
//! - [`http`]: `/healthz`, `/readyz`, `/metrics` next to the consumer's own read API.
//! - `testing` (feature `testing`): the one in-process harness for tests of anything built
//!   on the runtime: run a handler against the real broker and Postgres, wait, stop.
//!
//! This crate must not know any particular consumer's tables or events beyond the
//! [`orderflow_events::Event`] type.

pub mod consistency;
pub mod consumer;
pub mod dlq;
pub mod handler;
pub mod http;
pub mod observe;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use orderflow_events::Codec;
use orderflow_kafka::KafkaArgs;
use rdkafka::producer::FutureProducer;
use sqlx::PgPool;
use tokio_util::sync::DropGuard;

pub use handler::{BatchContext, Envelope, Handler, HandlerError};
pub use http::ReadApi;
/// Shared with every orderflow binary (`orderflow-service`); re-exported so a consumer needs
/// only the runtime.
pub use orderflow_service::auth::Secret;
pub use orderflow_service::{DatabaseArgs, shutdown_signal};
/// The stop signal of every task the runtime starts (see [`Runtime::child_token`]).
pub use tokio_util::sync::CancellationToken;

/// Settings every consumer binary shares (flatten into its clap config).
#[derive(Debug, Clone, clap::Args)]
pub struct RuntimeArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,

    // Postgres holding the read store.
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Schema Registry for the Confluent wire format; unset means single-object encoding.
    #[arg(long, env = "SCHEMA_REGISTRY_URL")]
    pub schema_registry_url: Option<String>,

    /// Postgres schema of the read store (default: the consumer's name).
    #[arg(long, env = "CONSUMER_SCHEMA")]
    pub schema: Option<String>,

    /// Consumer group (default: the consumer's name).
    #[arg(long, env = "CONSUMER_GROUP")]
    pub group: Option<String>,

    /// Topic to read, repeatable (default: the consumer's topics).
    #[arg(long = "topic", value_name = "TOPIC")]
    pub topics: Vec<String>,

    /// Dead-letter topic (default: `<consumer>.dlq`).
    #[arg(long, env = "DLQ_TOPIC")]
    pub dlq_topic: Option<String>,

    /// Most events in one batch (one transaction).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: u32,

    /// How long a batch lingers for more events after its first one, in milliseconds. With 0
    /// (the default) a worker applies what its partition's queue holds as soon as the queue is
    /// empty: at low load every event is applied at once, and under load events queue up while
    /// a batch applies, so batches grow by themselves up to `--batch-size`.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub batch_wait_ms: u64,

    /// Replay mode: rebuilding a store; handlers with side effects (email) do not act.
    #[arg(long, env = "REPLAY")]
    pub replay: bool,

    /// How long the applied-event ledger remembers an event id, in hours.
    #[arg(long, default_value_t = 168, value_parser = clap::value_parser!(u64).range(1..))]
    pub ledger_retention_hours: u64,

    /// `/readyz` answers 200 once total lag is at most this many messages.
    #[arg(long, default_value_t = 1000)]
    pub ready_max_lag: i64,

    /// Postgres connections (partitions apply concurrently, one transaction each).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_connections: u32,

    /// Bearer tokens the read API accepts, comma-separated, each `name:token` or a plain
    /// token. Read it from the environment, not the command line (which `ps` shows).
    #[arg(long, env = "API_TOKENS", hide_env_values = true)]
    pub api_tokens: Option<Secret>,

    /// A file of read API tokens, one per line (`name:token` or a plain token; `#` comments).
    #[arg(long, env = "API_TOKENS_FILE")]
    pub api_tokens_file: Option<std::path::PathBuf>,

    /// Serve the read API without a token. Only for local experiments: the read APIs return
    /// customer data (names, email addresses).
    #[arg(long, env = "API_INSECURE_NO_AUTH")]
    pub api_insecure_no_auth: bool,

    /// Longest a read carrying a consistency token waits for the consumer to apply the
    /// write, in milliseconds (then 503 + Retry-After; docs/read-your-writes.md).
    #[arg(long, env = "READ_WAIT_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub read_wait_ms: u64,
}

impl RuntimeArgs {
    /// Defaults, for tests and embedding.
    pub fn new(kafka: KafkaArgs, database_url: impl Into<String>) -> Self {
        RuntimeArgs {
            kafka,
            database: DatabaseArgs::new(database_url),
            schema_registry_url: None,
            schema: None,
            group: None,
            topics: Vec::new(),
            dlq_topic: None,
            batch_size: 500,
            batch_wait_ms: 0,
            replay: false,
            ledger_retention_hours: 168,
            ready_max_lag: 1000,
            db_connections: 8,
            read_wait_ms: 2000,
            api_tokens: None,
            api_tokens_file: None,
            api_insecure_no_auth: false,
        }
    }
}

/// A connected runtime: the read store's pool is ready (migrations applied) so the consumer
/// can build its read API on it before [`Runtime::run`].
pub struct Runtime {
    args: RuntimeArgs,
    name: String,
    schema: String,
    pool: PgPool,
    /// The root of every stop signal of the tasks this runtime starts; cancelled once it has
    /// stopped, or when it is dropped (by `cancel_on_drop`).
    root: CancellationToken,
    cancel_on_drop: DropGuard,
}

impl Runtime {
    /// Connect to Postgres, create the consumer's schema, the runtime's tables and run the
    /// handler's migrations.
    pub async fn connect<H: Handler>(handler: &H, args: RuntimeArgs) -> anyhow::Result<Runtime> {
        let name = handler.name().to_owned();
        let schema = args.schema.clone().unwrap_or_else(|| name.replace('-', "_"));
        let pool = store::connect(&args.database.database_url, &schema, args.db_connections).await?;
        store::migrate(&pool).await?;
        if let Some(migrator) = handler.migrator() {
            migrator.run(&pool).await.with_context(|| format!("Failed to migrate schema {schema}"))?;
        }
        let root = CancellationToken::new();
        let cancel_on_drop = root.clone().drop_guard();
        Ok(Runtime { args, name, schema, pool, root, cancel_on_drop })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// A token for a task that runs beside the consumer (the email sender): it is cancelled
    /// once the runtime has stopped consuming (the last batch committed, the group left), or
    /// when the runtime is dropped.
    pub fn child_token(&self) -> CancellationToken {
        self.root.child_token()
    }

    /// Consume until `shutdown` completes, serving `/healthz`, `/readyz`, `/metrics` and
    /// `api` on `listen`. On shutdown, in-flight batches finish (or are abandoned, uncommitted,
    /// if they are retrying), offsets are committed and the consumer leaves its group.
    pub async fn run<H: Handler>(
        self,
        handler: H,
        api: impl Into<http::ReadApi>,
        listen: SocketAddr,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let listener =
            tokio::net::TcpListener::bind(listen).await.with_context(|| format!("Failed to listen on {listen}"))?;
        self.run_with_listener(handler, api, listener, shutdown).await
    }

    /// [`Runtime::run`] on an already bound listener (tests bind port 0). Dropping the
    /// returned future stops everything it started: the poll thread, the workers, the HTTP
    /// server and the ledger pruner.
    pub async fn run_with_listener<H: Handler>(
        self,
        handler: H,
        api: impl Into<http::ReadApi>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        // `cancel_on_drop` lives until this function returns or its future is dropped, and
        // then cancels everything it started.
        let Runtime { args, name, schema, pool, root, cancel_on_drop } = self;
        let topics = if args.topics.is_empty() { handler.topics() } else { args.topics.clone() };
        anyhow::ensure!(!topics.is_empty(), "consumer {name} reads no topics");
        let http::ReadApi { router: api, spec } = api.into();
        let spec = http::openapi(&name, spec);
        let api_tokens = if api.has_routes() { http::api_tokens(&args)? } else { None };
        let settings = consumer::LoopSettings {
            consumer: name.clone(),
            group: args.group.clone().unwrap_or_else(|| name.clone()),
            topics,
            dlq_topic: args.dlq_topic.clone().unwrap_or_else(|| format!("{name}.dlq")),
            batch_size: args.batch_size as usize,
            batch_wait: Duration::from_millis(args.batch_wait_ms),
            replay: args.replay,
            ready_max_lag: args.ready_max_lag,
        };
        orderflow_kafka::admin::ensure_topic(
            &args.kafka,
            &settings.dlq_topic,
            1,
            orderflow_kafka::admin::CLUSTER_DEFAULT_REPLICATION,
        )
        .await
        .with_context(|| format!("Failed to create the dead-letter topic {}", settings.dlq_topic))?;
        let codec = match &args.schema_registry_url {
            Some(url) => Codec::with_registry(url).context("Invalid SCHEMA_REGISTRY_URL")?,
            None => Codec::new(),
        };
        let producer: FutureProducer =
            args.kafka.producer_config().create().context("Failed to create the DLQ producer")?;
        let config = consumer_config(&args.kafka, &settings.group)?;
        let batcher = consumer::batch::Batcher {
            handler,
            pool: pool.clone(),
            codec,
            dead_letters: Box::new(dlq::DeadLetterTopic {
                producer,
                topic: settings.dlq_topic.clone(),
                consumer: name.clone(),
            }),
            consumer: name.clone(),
            replay: settings.replay,
        };

        let health = Arc::new(consumer::Health::default());
        let topics_read = settings.topics.clone();
        observe::register(&name, &topics_read);
        tracing::info!(consumer = name, schema, replay = args.replay, "starting");
        let consuming = root.child_token();
        let mut poller = consumer::start(batcher, settings, health.clone(), config, consuming.clone())?;
        let api = consistency::layer(
            api,
            consistency::Consistency::new(
                health.clone(),
                pool.clone(),
                topics_read,
                Duration::from_millis(args.read_wait_ms),
            ),
        );
        // The token check is the outer layer: nothing runs for a caller without a token.
        let api = http::authenticated(api, api_tokens);
        let server = tokio::spawn(http::serve(listener, api, spec, health, root.child_token().cancelled_owned()));
        let retention = Duration::from_secs(args.ledger_retention_hours * 3600);
        let pruner = tokio::spawn(prune_ledger_until(pool.clone(), retention, root.child_token()));

        // Wait for the shutdown signal, or for the polling thread to end by itself (an error).
        let early = tokio::select! {
            _ = shutdown => None,
            result = &mut poller => Some(result),
        };
        consuming.cancel();
        let result = match early {
            Some(result) => result,
            None => poller.await,
        };
        // Consuming has stopped: now the server, the pruner and the tasks beside the consumer.
        drop(cancel_on_drop);
        let _ = pruner.await;
        let _ = server.await;
        match result {
            Ok(result) => result,
            Err(_) => anyhow::bail!("the polling thread of {name} panicked"),
        }
    }
}

/// Forget old ledger entries every hour, until `stop`.
async fn prune_ledger_until(pool: PgPool, retention: Duration, stop: CancellationToken) {
    let mut interval = tokio::time::interval(Duration::from_secs(3600));
    let prune = async {
        loop {
            interval.tick().await;
            match store::prune_ledger(&pool, retention).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "pruned the applied-event ledger"),
                Err(error) => tracing::warn!(error = %error, "pruning the applied-event ledger failed"),
            }
        }
    };
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = prune => {}
    }
}

/// The runtime's consumer configuration: the group's (see `KafkaArgs::consumer_config`) plus
/// defaults of its own, each used only where no `--kafka-option` (or environment) names it.
/// - `queued.min.messages` 5000, `queued.max.messages.kbytes`, `fetch.max.bytes`: bound what
///   librdkafka prefetches, so a backlog cannot grow memory; with a queue split off per
///   partition (see `consumer`), the first two are per partition. librdkafka's default of
///   100,000 records per partition held the peak RSS draining a million-event backlog at
///   197 MB; 5000 (ten full batches) holds it at 114 MB (docs/benchmarks.md).
/// - `session.timeout.ms` 10 s, `heartbeat.interval.ms` 1 s (librdkafka: 45 s and 3 s): how
///   long the group waits for a member that stopped heartbeating before it hands the member's
///   partitions to someone else. A consumer killed with `kill -9` and started again joins as
///   a new member; its partitions stay with the dead one until that session expires, so this
///   bounds recovery after a crash (measured on Apache Kafka 4.1, see docs/operations.md). 10 s
///   stays well above the broker's minimum (6 s) and above a long GC-free pause of this
///   process; the heartbeat is a tenth of it, so one lost heartbeat is no eviction.
/// - `statistics.interval.ms`: the lag gauges read the watermarks from the statistics.
/// - `debug` gains `metadata`: librdkafka says that a topic was recreated under the consumer
///   only in that debug log, which the runtime reads to hold the topic's partitions.
/// - `auto.offset.reset=error`, always (a `--kafka-option` naming it is refused): where a
///   partition starts is the stored offset, or the log's beginning for a partition never
///   applied. A position the broker says is out of range (the log truncated, deleted by
///   retention, recreated) stops that partition loudly instead of moving it to another
///   position, which would skip or redo records silently (docs/operations.md, "When offsets
///   and the log disagree").
///
/// `fetch.wait.max.ms` keeps librdkafka's 500 ms: Kafka answers a fetch as soon as a record
/// arrives, so the wait only bounds how often an idle consumer asks.
///
/// With `group.protocol=consumer` (KIP-848) the broker owns the session timeout, heartbeat
/// and assignment; librdkafka refuses those settings, so they are left out.
fn consumer_config(kafka: &KafkaArgs, group: &str) -> anyhow::Result<rdkafka::ClientConfig> {
    anyhow::ensure!(
        kafka.client_config().get("auto.offset.reset").is_none(),
        "--kafka-option auto.offset.reset is not a consumer setting here: a partition starts at its stored \
         offset (or the log's beginning), and an offset the log does not hold stops it until \
         `orderflow offsets reset` moves it"
    );
    let mut config = kafka.consumer_config(group);
    config.set("auto.offset.reset", "error");
    // librdkafka reports a topic whose id changed under the consumer only in its metadata
    // debug log (see `consumer::rebalance`); a few lines per metadata refresh.
    let debug = match config.get("debug") {
        Some(existing) if existing.split(',').any(|c| c == "metadata" || c == "all") => existing.to_owned(),
        Some(existing) if !existing.is_empty() => format!("{existing},metadata"),
        _ => "metadata".to_owned(),
    };
    config.set("debug", debug);
    // rust-rdkafka derives librdkafka's log level from the `log` crate's maximum level, which
    // is below debug in production: then librdkafka would drop that line before the runtime
    // sees it. The lines still go to `tracing` at debug level (target `librdkafka`).
    config.set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
    let new_protocol = config.get("group.protocol").is_some_and(|p| p.eq_ignore_ascii_case("consumer"));
    let mut defaults = vec![
        ("queued.min.messages", "5000"),
        ("queued.max.messages.kbytes", "4096"),
        ("fetch.max.bytes", "8388608"),
        ("statistics.interval.ms", "1000"),
    ];
    if new_protocol {
        config.remove("partition.assignment.strategy");
    } else {
        defaults.extend([("session.timeout.ms", "10000"), ("heartbeat.interval.ms", "1000")]);
    }
    for (key, value) in defaults {
        if config.get(key).is_none() {
            config.set(key, value);
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_defaults_apply_unless_a_kafka_option_names_the_setting() {
        let mut kafka = KafkaArgs { brokers: "127.0.0.1:9092".into(), options: Vec::new() };
        let config = consumer_config(&kafka, "g").unwrap();
        assert_eq!(config.get("session.timeout.ms"), Some("10000"));
        assert_eq!(config.get("auto.offset.reset"), Some("error"), "never moved to another position on its own");
        assert_eq!(config.get("queued.max.messages.kbytes"), Some("4096"));
        assert_eq!(config.get("queued.min.messages"), Some("5000"));
        assert_eq!(config.get("fetch.wait.max.ms"), None, "librdkafka's default");

        kafka.options = vec!["session.timeout.ms=30000".parse().unwrap()];
        let config = consumer_config(&kafka, "g").unwrap();
        assert_eq!(config.get("session.timeout.ms"), Some("30000"));
        assert_eq!(config.get("queued.max.messages.kbytes"), Some("4096"));
        assert_eq!(config.get("group.id"), Some("g"));
    }

    #[test]
    fn a_kafka_option_that_would_let_librdkafka_move_a_partition_on_its_own_is_refused() {
        let kafka =
            KafkaArgs { brokers: "127.0.0.1:9092".into(), options: vec!["auto.offset.reset=latest".parse().unwrap()] };
        let error = consumer_config(&kafka, "g").unwrap_err().to_string();
        assert!(error.contains("auto.offset.reset") && error.contains("orderflow offsets reset"), "{error}");
    }

    #[test]
    fn the_new_group_protocol_gets_no_setting_librdkafka_refuses_with_it() {
        let kafka =
            KafkaArgs { brokers: "127.0.0.1:9092".into(), options: vec!["group.protocol=consumer".parse().unwrap()] };
        let config = consumer_config(&kafka, "g").unwrap();
        for refused in ["session.timeout.ms", "heartbeat.interval.ms", "partition.assignment.strategy"] {
            assert_eq!(config.get(refused), None, "{refused}");
        }
        assert_eq!(config.get("group.protocol"), Some("consumer"));
    }
}
