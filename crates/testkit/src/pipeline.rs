//! The whole pipeline as separate processes, for tests that inject faults under load: the
//! `ingress` and every consumer binary, each with its shipped defaults, on topics, consumer
//! groups, Postgres schemas and dead-letter topics of this run only, against any broker
//! (the shared one or a private [`crate::cluster::KafkaCluster`]) and any database (the shared
//! one or a private [`crate::postgres::PrivatePostgres`]). The email consumer delivers to a
//! real SMTP server ([`SmtpSink`]).
//!
//! Which consumers exist is the caller's to say ([`ConsumerSpec`], built from the registry by
//! the end-to-end tests), so the test kit does not depend on the consumer crates.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::Duration;

use anyhow::Context;
use orderflow_events::{ALLOCATIONS_TOPIC, INVENTORY_TOPIC, ORDERS_TOPIC};
use orderflow_kafka::KafkaArgs;
use orderflow_kafka::admin::{CLUSTER_DEFAULT_REPLICATION, ensure_topic};
use rdkafka::consumer::{BaseConsumer, Consumer};
use sqlx::PgPool;

use crate::process::BinaryProcess;
use crate::smtp::SmtpSink;
use crate::{unique_ident, unique_name, wait_until};

/// The bearer token the pipeline's ingress accepts, and the client name it stands for (the
/// scope of idempotency keys, so event ids can be computed from a key).
pub const CLIENT: &str = "faults";
pub const TOKEN: &str = "faults-test-token-0123456789abcdef";

/// One consumer as the registry describes it.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    pub name: String,
    pub binary: String,
    /// The topics it reads, by their production names (`orders.v1`, `inventory.v1`).
    pub topics: Vec<String>,
}

/// One running consumer of the pipeline.
pub struct RunningConsumer {
    pub spec: ConsumerSpec,
    /// Its Postgres schema (store, offsets, ledger).
    pub schema: String,
    pub group: String,
    pub dlq_topic: String,
    /// This run's topics it reads.
    pub topics: Vec<String>,
    pub addr: String,
    pub process: BinaryProcess,
    env: Vec<(String, String)>,
    args: Vec<String>,
}

impl RunningConsumer {
    /// Start another instance with the same group, schema and topics (a second member of the
    /// group), on its own port; returns it and its address.
    pub fn spawn_twin(&self) -> anyhow::Result<(BinaryProcess, String)> {
        let addr = free_addr();
        let mut args = self.args.clone();
        let listen = args.iter().position(|a| a == "--listen").context("--listen")? + 1;
        args[listen] = addr.clone();
        Ok((spawn(&self.spec.binary, &args, &self.env)?, addr))
    }

    /// Start this consumer again (after a kill) with the same settings.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.process = spawn(&self.spec.binary, &self.args, &self.env)?;
        Ok(())
    }
}

/// The running pipeline (see the module doc). Every process is killed when it is dropped.
pub struct Pipeline {
    pub kafka: KafkaArgs,
    pub database_url: String,
    pub orders_topic: String,
    pub inventory_topic: String,
    /// This run's `allocations.v1` (empty unless the test runs a relay for the allocator).
    pub allocations_topic: String,
    pub ingress_url: String,
    pub ingress: BinaryProcess,
    pub consumers: Vec<RunningConsumer>,
    pub smtp: SmtpSink,
}

impl Pipeline {
    /// Create this run's topics (`partitions` each, the cluster's default replication) and
    /// start the ingress and `consumers`; returns once every one of them is ready.
    pub async fn start(
        brokers: &str,
        database_url: &str,
        consumers: &[ConsumerSpec],
        partitions: usize,
    ) -> anyhow::Result<Pipeline> {
        let kafka = KafkaArgs::with_brokers(brokers);
        let orders_topic = unique_name("faults-orders");
        let inventory_topic = unique_name("faults-inventory");
        let allocations_topic = unique_name("faults-allocations");
        for topic in [&orders_topic, &inventory_topic, &allocations_topic] {
            ensure_topic(&kafka, topic, partitions, CLUSTER_DEFAULT_REPLICATION)
                .await
                .with_context(|| format!("Failed to create {topic}"))?;
        }
        let smtp = SmtpSink::start().await;
        let ingress_addr = free_addr();
        let tokens = format!("{CLIENT}:{TOKEN}");
        let ingress = spawn(
            "ingress",
            &["--listen".into(), ingress_addr.clone()],
            &[
                ("KAFKA_BROKERS".into(), brokers.into()),
                ("DATABASE_URL".into(), database_url.into()),
                ("INGRESS_TOKENS".into(), tokens),
                ("INGRESS_ORDERS_TOPIC".into(), orders_topic.clone()),
                ("INGRESS_INVENTORY_TOPIC".into(), inventory_topic.clone()),
            ],
        )?;
        let mut running = Vec::new();
        for spec in consumers {
            let topics: Vec<String> = spec
                .topics
                .iter()
                .map(|t| match t.as_str() {
                    ORDERS_TOPIC => orders_topic.clone(),
                    INVENTORY_TOPIC => inventory_topic.clone(),
                    ALLOCATIONS_TOPIC => allocations_topic.clone(),
                    other => other.to_owned(),
                })
                .collect();
            let schema = unique_ident(&spec.name);
            let group = unique_name(&format!("{}-group", spec.name));
            let dlq_topic = unique_name(&format!("{}-dlq", spec.name));
            let addr = free_addr();
            let mut args = vec!["--listen".to_owned(), addr.clone(), "--schema".into(), schema.clone()];
            args.extend(["--group".into(), group.clone()]);
            for topic in &topics {
                args.extend(["--topic".into(), topic.clone()]);
            }
            let env = vec![
                ("KAFKA_BROKERS".to_owned(), brokers.to_owned()),
                ("DATABASE_URL".to_owned(), database_url.to_owned()),
                ("DLQ_TOPIC".to_owned(), dlq_topic.clone()),
                ("SMTP_URL".to_owned(), smtp.url()),
            ];
            let process = spawn(&spec.binary, &args, &env)?;
            running.push(RunningConsumer {
                spec: spec.clone(),
                schema,
                group,
                dlq_topic,
                topics,
                addr,
                process,
                env,
                args,
            });
        }
        let pipeline = Pipeline {
            kafka,
            database_url: database_url.to_owned(),
            orders_topic,
            inventory_topic,
            allocations_topic,
            ingress_url: format!("http://{ingress_addr}"),
            ingress,
            consumers: running,
            smtp,
        };
        let http = reqwest::Client::new();
        let mut services = vec![("ingress".to_owned(), pipeline.ingress_url.clone())];
        services.extend(pipeline.consumers.iter().map(|c| (c.spec.name.clone(), format!("http://{}", c.addr))));
        for (name, url) in services {
            wait_until(&format!("{name} to be ready (/readyz 200)"), Duration::from_secs(90), || async {
                let response = http.get(format!("{url}/readyz")).send().await.ok()?;
                (response.status().as_u16() == 200).then_some(())
            })
            .await;
        }
        Ok(pipeline)
    }

    /// The consumer named `name`.
    pub fn consumer(&self, name: &str) -> &RunningConsumer {
        self.consumers.iter().find(|c| c.spec.name == name).unwrap_or_else(|| panic!("no consumer {name}"))
    }

    pub fn consumer_mut(&mut self, name: &str) -> &mut RunningConsumer {
        self.consumers.iter_mut().find(|c| c.spec.name == name).unwrap_or_else(|| panic!("no consumer {name}"))
    }

    /// A pool on the pipeline's database (no search path: name tables with their schema).
    pub async fn pool(&self) -> PgPool {
        PgPool::connect(&self.database_url).await.expect("the pipeline's database")
    }

    /// Wait until every consumer has stored, in Postgres, an offset at the end of every
    /// partition of its topics (everything on the topics is applied or dead-lettered).
    pub async fn wait_drained(&self, timeout: Duration) {
        let pool = self.pool().await;
        let watermarks = self.high_watermarks().await;
        wait_until("every consumer to reach the end of its topics", timeout, || async {
            for consumer in &self.consumers {
                let ends: i64 = consumer.topics.iter().map(|t| watermarks.get(t).copied().unwrap_or(0)).sum();
                let query = format!(
                    "SELECT COALESCE(SUM(next_offset), 0)::bigint FROM {}.orderflow_offsets WHERE topic = ANY($1)",
                    consumer.schema
                );
                let stored: i64 = sqlx::query_scalar(&query).bind(&consumer.topics).fetch_one(&pool).await.ok()?;
                if stored < ends {
                    return None;
                }
            }
            Some(())
        })
        .await;
        pool.close().await;
    }

    /// Sum of the high watermarks of each of this run's topics.
    pub async fn high_watermarks(&self) -> BTreeMap<String, i64> {
        let kafka = self.kafka.clone();
        let topics = [self.orders_topic.clone(), self.inventory_topic.clone(), self.allocations_topic.clone()];
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer =
                kafka.consumer_config(&unique_name("faults-watermarks")).create().expect("consumer");
            topics
                .iter()
                .map(|topic| {
                    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
                    let partitions = metadata.topics().first().map_or(0, |t| t.partitions().len() as i32);
                    let sum = (0..partitions)
                        .map(|p| consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).expect("watermarks").1)
                        .sum();
                    (topic.clone(), sum)
                })
                .collect()
        })
        .await
        .unwrap()
    }
}

fn spawn(binary: &str, args: &[String], env: &[(String, String)]) -> anyhow::Result<BinaryProcess> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    BinaryProcess::spawn(binary, &args, &env)
}

fn free_addr() -> String {
    format!("127.0.0.1:{}", TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port())
}
