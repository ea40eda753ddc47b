//! Admin calls: wait until a broker answers Metadata, create topics idempotently, delete topics.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use std::sync::Mutex;

use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::KafkaArgs;

/// What the broker told us about the cluster.
#[derive(Debug, Clone)]
pub struct ClusterInfo {
    pub brokers: Vec<String>,
    pub topics: Vec<(String, usize)>,
}

/// Whether [`ensure_topic`] created a topic or found it already there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicOutcome {
    Created { partitions: usize },
    Existed { partitions: usize },
}

/// Ask for cluster metadata until the broker answers or `timeout` passes.
pub async fn wait_for_broker(args: &KafkaArgs, timeout: Duration) -> anyhow::Result<ClusterInfo> {
    let args = args.clone();
    tokio::task::spawn_blocking(move || wait_for_broker_blocking(&args, timeout))
        .await
        .context("metadata task failed")?
}

/// A client context that remembers an authentication failure, so a wrong password ends the
/// wait at once with a clear error instead of a retry loop until the deadline.
#[derive(Default)]
struct ProbeContext {
    auth_failure: Mutex<Option<String>>,
}

impl ClientContext for ProbeContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Authentication) {
            *self.auth_failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_owned());
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ProbeContext {}

/// Whether the settings ask for SASL (`security.protocol=SASL_*` or a `sasl.username`).
pub fn uses_sasl(args: &KafkaArgs) -> bool {
    let config = args.client_config();
    config.get("security.protocol").is_some_and(|p| p.to_ascii_uppercase().starts_with("SASL"))
        || config.get("sasl.username").is_some()
}

/// With SASL configured, fail at startup when the broker rejects the credentials: a wrong
/// password is a configuration error, not an outage to retry through. Waits at most
/// `timeout` for an answer; a broker that cannot be reached is not an error here (the caller
/// serves 503s or waits for it as usual). Without SASL it returns at once.
pub async fn check_credentials(args: &KafkaArgs, timeout: Duration) -> anyhow::Result<()> {
    if !uses_sasl(args) {
        return Ok(());
    }
    match wait_for_broker(args, timeout).await {
        Err(error) if error.to_string().contains("authentication failed") => Err(error),
        Err(error) => {
            tracing::warn!(error = format!("{error:#}"), "the broker did not answer yet; credentials not checked");
            Ok(())
        }
        Ok(_) => Ok(()),
    }
}

fn wait_for_broker_blocking(args: &KafkaArgs, timeout: Duration) -> anyhow::Result<ClusterInfo> {
    let consumer: BaseConsumer<ProbeContext> = args
        .client_config()
        .set("log_level", "3")
        .create_with_context(ProbeContext::default())
        .context("Failed to create a Kafka client (check the --kafka-option values)")?;
    let deadline = Instant::now() + timeout;
    let mut last_error;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let answer =
            consumer.fetch_metadata(None, remaining.min(Duration::from_secs(2)).max(Duration::from_millis(200)));
        // Error callbacks are served by poll; an authentication failure ends the wait.
        let _ = consumer.poll(Duration::ZERO);
        let auth_failure = consumer.context().auth_failure.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(reason) = auth_failure {
            let user = args.client_config().get("sasl.username").map(str::to_owned).unwrap_or_default();
            bail!(
                "Kafka brokers {}: authentication failed for SASL user `{user}` ({reason}); \
                 check KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD and KAFKA_SASL_MECHANISMS",
                args.brokers
            );
        }
        match answer {
            Ok(metadata) => {
                return Ok(ClusterInfo {
                    brokers: metadata.brokers().iter().map(|b| format!("{}:{}", b.host(), b.port())).collect(),
                    topics: metadata.topics().iter().map(|t| (t.name().to_owned(), t.partitions().len())).collect(),
                });
            }
            Err(error) => last_error = error,
        }
        if Instant::now() >= deadline {
            bail!("Kafka brokers {} did not answer Metadata within {:?}: {last_error}", args.brokers, timeout);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Number of partitions of `topic`, or `None` when the broker does not know it.
pub async fn topic_partitions(args: &KafkaArgs, topic: &str) -> anyhow::Result<Option<usize>> {
    let info = wait_for_broker(args, Duration::from_secs(10)).await?;
    Ok(info.topics.into_iter().find(|(name, partitions)| name == topic && *partitions > 0).map(|(_, p)| p))
}

/// Replication factor meaning "the cluster's `default.replication.factor`" (KIP-464): 1 on the
/// local single-node stack, 3 on the three-node one and on a production cluster.
pub const CLUSTER_DEFAULT_REPLICATION: i32 = -1;

/// Create `topic` with `partitions` unless it exists. `replication` is a replication factor,
/// or [`CLUSTER_DEFAULT_REPLICATION`]. Returns once the broker's metadata lists the topic with
/// its partitions, so a producer can use it right away.
pub async fn ensure_topic(
    args: &KafkaArgs,
    topic: &str,
    partitions: usize,
    replication: i32,
) -> anyhow::Result<TopicOutcome> {
    if partitions == 0 {
        bail!("topic {topic}: partitions must be at least 1");
    }
    if let Some(existing) = topic_partitions(args, topic).await? {
        return Ok(TopicOutcome::Existed { partitions: existing });
    }
    let admin: AdminClient<DefaultClientContext> =
        args.client_config().create().context("Failed to create a Kafka admin client")?;
    let new_topic = NewTopic::new(topic, partitions as i32, TopicReplication::Fixed(replication));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results =
        admin.create_topics([&new_topic], &options).await.with_context(|| format!("Failed to create topic {topic}"))?;
    let mut created = true;
    for result in results {
        match result {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => created = false,
            Err((name, code)) => bail!("Failed to create topic {name}: {code}"),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(found) = topic_partitions(args, topic).await? {
            return Ok(if created {
                TopicOutcome::Created { partitions: found }
            } else {
                TopicOutcome::Existed { partitions: found }
            });
        }
        if Instant::now() >= deadline {
            bail!("topic {topic} was created but did not appear in the broker's metadata within 30s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Delete `topics` and every record in them. Returns the names the broker did not know
/// (already deleted), so a sweep can be re-run; any other refusal is an error naming the topic.
pub async fn delete_topics(args: &KafkaArgs, topics: &[String]) -> anyhow::Result<Vec<String>> {
    let admin: AdminClient<DefaultClientContext> =
        args.client_config().create().context("Failed to create a Kafka admin client")?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(60)));
    let mut unknown = Vec::new();
    // One request per few hundred names keeps each request well below the broker's limits.
    for chunk in topics.chunks(500) {
        let names: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let results = admin.delete_topics(&names, &options).await.context("Failed to delete topics")?;
        for result in results {
            match result {
                Ok(_) => {}
                Err((name, RDKafkaErrorCode::UnknownTopicOrPartition)) => unknown.push(name),
                Err((name, code)) => bail!("Failed to delete topic {name}: {code}"),
            }
        }
    }
    Ok(unknown)
}
