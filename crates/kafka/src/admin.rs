//! Admin calls: wait until a broker answers Metadata, create topics idempotently.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
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

fn wait_for_broker_blocking(args: &KafkaArgs, timeout: Duration) -> anyhow::Result<ClusterInfo> {
    let consumer: BaseConsumer = args
        .client_config()
        .set("log_level", "3")
        .create()
        .context("Failed to create a Kafka client (check the --kafka-option values)")?;
    let deadline = Instant::now() + timeout;
    let mut last_error;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match consumer.fetch_metadata(None, remaining.min(Duration::from_secs(2)).max(Duration::from_millis(200))) {
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

/// Create `topic` with `partitions` unless it exists. Returns once the broker's metadata
/// lists the topic with its partitions, so a producer can use it right away.
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
