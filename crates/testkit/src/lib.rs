//! The shared test kit. Every test in the workspace that needs the broker or Postgres goes
//! through it, so that tests isolate themselves and run in parallel.
//!
//! # Layout
//! - [`kafka_args`], [`database_url`]: where the real broker and database are
//!   (`KAFKA_BROKERS`, `DATABASE_URL`, with the local stack's defaults).
//! - [`unique_name`], [`fresh_topic`], [`fresh_group`], [`fresh_schema`]: names no other test
//!   uses; topics and Postgres schemas are created for you.
//! - [`wait_until`]: poll a condition until it holds or a deadline passes (no bare sleeps).
//! - [`process::BinaryProcess`]: run one of the workspace's binaries as a child process, so a
//!   test can `kill -9` it at a bad moment.
//! - [`cluster::KafkaCluster`]: a private Apache Kafka cluster (three nodes, or one with a
//!   SASL_SSL listener) for tests that kill brokers or need credentials.
//! - [`events`]: realistic events and publishing them (or raw bytes) like the producers do.
//! - [`postgres::PrivatePostgres`]: a PostgreSQL server of the test's own, to restart or crash.
//! - [`smtp::SmtpSink`]: a real SMTP server that keeps what it receives.
//! - [`pipeline::Pipeline`], [`workload`], [`checker`]: the faults harness: the ingress and
//!   every consumer as processes with their shipped defaults, clients that post orders and
//!   stock changes with idempotency keys and record what they were told, and a checker that
//!   compares every read store with that history (lost, doubled, phantom).
//! - [`init_test_logs`]: tracing output only when `TEST_LOG` is set.
//!
//! It never mocks the broker or the database: a test that cannot reach them fails with a
//! message that says how to start the local stack.

pub mod checker;
pub mod cluster;
pub mod events;
pub mod pipeline;
pub mod ports;
pub mod postgres;
pub mod process;
pub mod smtp;
pub mod workload;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use orderflow_kafka::KafkaArgs;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgPool};

/// The local stack's database when `DATABASE_URL` is not set: the binaries' default.
pub use orderflow_service::DEFAULT_DATABASE_URL;

const STACK_HINT: &str = "is the local stack up? run `scripts/stack up` (see docs/local-stack.md)";

/// Broker settings from the environment (`KAFKA_BROKERS`, default `127.0.0.1:9092`).
pub fn kafka_args() -> KafkaArgs {
    KafkaArgs::with_brokers(std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| orderflow_kafka::DEFAULT_BROKERS.into()))
}

/// `DATABASE_URL`, or the local stack's database.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.into())
}

/// Log to the test output when `TEST_LOG` is set (value is a `RUST_LOG` filter or `1`).
pub fn init_test_logs() {
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let filter = if filter == "1" || filter.is_empty() { "info".to_owned() } else { filter };
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// A name no other test (in this process or another) uses: `prefix-<pid>-<time>-<n>`,
/// lowercase, made of `[a-z0-9-]`, so it is a valid topic and group name. Use
/// [`unique_ident`] for SQL identifiers.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let clean: String =
        prefix.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    format!("{clean}-{}-{:x}-{n}", std::process::id(), nanos % 0xffff_ffff_ffff)
}

macro_rules! api_token {
    () => {
        "tests-read-api-token-0123456789"
    };
}

/// The read API token every test's consumers accept (`API_TOKENS=tests:<it>`) and every test's
/// client sends (`Authorization: Bearer <it>`).
pub const API_TOKEN: &str = api_token!();
/// `API_TOKENS` for a consumer binary a test starts.
pub const API_TOKENS_ENV: (&str, &str) = ("API_TOKENS", concat!("tests:", api_token!()));

/// Like [`unique_name`] but a valid unquoted SQL identifier (`[a-z0-9_]`, starts with a letter).
pub fn unique_ident(prefix: &str) -> String {
    format!("t_{}", unique_name(prefix).replace('-', "_"))
}

/// Create a topic only this test uses, with `partitions` partitions.
pub async fn fresh_topic(prefix: &str, partitions: usize) -> String {
    let topic = unique_name(prefix);
    orderflow_kafka::admin::ensure_topic(
        &kafka_args(),
        &topic,
        partitions,
        orderflow_kafka::admin::CLUSTER_DEFAULT_REPLICATION,
    )
    .await
    .with_context(|| format!("Failed to create test topic {topic}; {STACK_HINT}"))
    .unwrap();
    topic
}

/// The topic's id (KIP-516) on the cluster `kafka` reaches, `None` while it does not exist.
pub async fn topic_id(kafka: &orderflow_kafka::KafkaArgs, topic: &str) -> Option<String> {
    let (kafka, topic) = (kafka.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
            kafka.client_config().create().expect("an admin client");
        orderflow_kafka::topic_ids::topic_ids(admin.inner(), &[&topic], Duration::from_secs(10))
            .expect("DescribeTopics answers")
            .remove(&topic)
    })
    .await
    .expect("the DescribeTopics task")
}

/// Delete `topic` and create it again with `partitions`: another log of the same name (what
/// an operator's mistake, a bootstrap script or a move to another cluster does). Returns once
/// the broker gives the topic its new id.
pub async fn recreate_topic(kafka: &orderflow_kafka::KafkaArgs, topic: &str, partitions: usize) {
    use orderflow_kafka::admin;
    let before = topic_id(kafka, topic).await.expect("the topic exists before it is recreated");
    admin::delete_topics(kafka, &[topic.to_owned()]).await.expect("the topic is deleted");
    wait_until(&format!("{topic} deleted"), Duration::from_secs(60), || async {
        admin::topic_partitions(kafka, topic).await.ok()?.is_none().then_some(())
    })
    .await;
    admin::ensure_topic(kafka, topic, partitions, admin::CLUSTER_DEFAULT_REPLICATION)
        .await
        .expect("the topic is created again");
    wait_until(&format!("{topic} created again with a new id"), Duration::from_secs(60), || async {
        topic_id(kafka, topic).await.filter(|id| *id != before)
    })
    .await;
}

/// A consumer group name only this test uses (groups are created by joining them).
pub fn fresh_group(prefix: &str) -> String {
    unique_name(&format!("{prefix}-group"))
}

/// A Postgres schema only this test uses, and a pool whose connections have it as their
/// `search_path`, so unqualified table names land there.
pub struct TestSchema {
    pub name: String,
    pub pool: PgPool,
}

/// Create a fresh schema in the test database and a pool bound to it.
pub async fn fresh_schema(prefix: &str) -> TestSchema {
    let name = unique_ident(prefix);
    let url = database_url();
    let admin =
        PgPool::connect(&url).await.with_context(|| format!("Failed to connect to {url}; {STACK_HINT}")).unwrap();
    admin.execute(format!("CREATE SCHEMA {name}").as_str()).await.unwrap();
    admin.close().await;
    let options: PgConnectOptions = url.parse().unwrap();
    let options = options.options([("search_path", name.as_str())]);
    let pool = PgPoolOptions::new().max_connections(5).connect_with(options).await.unwrap();
    TestSchema { name, pool }
}

/// Poll `check` until it returns `Some`, or panic naming `what` after `timeout`.
/// The interval starts at 10 ms and backs off to 250 ms.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut interval = Duration::from_millis(10);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(Duration::from_millis(250));
    }
}

/// The workspace root (where `Cargo.toml`, `scripts/` and `schemas/` are).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}
