//! Where a consumer is: its stored offsets (authoritative, written in the same transaction as
//! its store; read through `orderflow_runtime::store`), its group's committed Kafka offsets
//! (informational), the topics' watermarks, and whether instances are running.
//! Used by `lag` and `offsets`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use orderflow_kafka::KafkaArgs;
use orderflow_runtime::consumer::OffsetConflict;
use orderflow_runtime::store::{self, redact_url, validate_schema_name};
use orderflow_service::DatabaseArgs;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::records::{self, REQUEST_TIMEOUT};

/// Connect to the database of the consumers' read stores (`--database-url`).
pub async fn connect(db: &DatabaseArgs) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&db.database_url)
        .await
        .with_context(|| format!("Failed to connect to Postgres at {}", redact_url(&db.database_url)))
}

/// A consumer as the tools address it: its name, Postgres schema and consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRef {
    pub name: String,
    pub schema: String,
    pub group: String,
}

impl ConsumerRef {
    /// The runtime's defaults: schema = name with `-` → `_`, group = name.
    pub fn new(name: &str, schema: Option<&str>, group: Option<&str>) -> anyhow::Result<Self> {
        let schema = schema.map(str::to_owned).unwrap_or_else(|| name.replace('-', "_"));
        validate_schema_name(&schema).with_context(|| format!("consumer {name}"))?;
        Ok(ConsumerRef { name: name.to_owned(), schema, group: group.unwrap_or(name).to_owned() })
    }
}

/// Which consumer (`offsets`, `replay`): its name and, when not the defaults, schema and group.
#[derive(Debug, Clone, clap::Args)]
pub struct ConsumerArgs {
    /// Consumer name (schema = name with '-' → '_', group = name).
    pub consumer: String,
    /// Postgres schema of the consumer's store.
    #[arg(long)]
    pub schema: Option<String>,
    /// Consumer group.
    #[arg(long)]
    pub group: Option<String>,
    // Postgres holding the consumers' read stores.
    #[command(flatten)]
    pub db: DatabaseArgs,
}

impl ConsumerArgs {
    pub fn consumer_ref(&self) -> anyhow::Result<ConsumerRef> {
        ConsumerRef::new(&self.consumer, self.schema.as_deref(), self.group.as_deref())
    }
}

/// One partition of a topic a consumer reads.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartitionPosition {
    pub topic: String,
    pub partition: i32,
    /// First offset still on the broker.
    pub low: i64,
    /// Next offset the broker will write.
    pub high: i64,
    /// Next offset to apply, from the consumer's store (`None`: the table or row is missing).
    pub stored: Option<i64>,
    /// Next offset committed to Kafka by the group (`None`: never committed).
    pub committed: Option<i64>,
    /// The topic's id (KIP-516) now, if the broker gives one.
    pub topic_id: Option<String>,
    /// The topic id stored with the offset: the log the stored offset counts (`None`: not
    /// recorded yet).
    pub stored_topic_id: Option<String>,
    /// Why the stored offset does not belong to this log (the consumer holds the partition
    /// until an operator moves it), in words; `None` when it does.
    pub conflict: Option<String>,
    /// The conflict's kind (`topic_recreated`, `ahead_of_log`, `below_log_start`).
    pub conflict_reason: Option<&'static str>,
}

impl PartitionPosition {
    /// A partition's position, checked against the log the way the runtime checks it at
    /// assignment (`orderflow_runtime::consumer::OffsetConflict`).
    pub fn new(
        topic: &str,
        partition: i32,
        (low, high): (i64, i64),
        stored: Option<i64>,
        committed: Option<i64>,
        (topic_id, stored_topic_id): (Option<String>, Option<String>),
    ) -> Self {
        let conflict =
            stored.and_then(|s| OffsetConflict::check(s, stored_topic_id.as_deref(), topic_id.as_deref(), low, high));
        PartitionPosition {
            topic: topic.to_owned(),
            partition,
            low,
            high,
            stored,
            committed,
            topic_id,
            stored_topic_id,
            conflict_reason: conflict.as_ref().map(OffsetConflict::reason),
            conflict: conflict.map(|c| c.to_string()),
        }
    }

    /// Where the consumer continues: the stored offset (even one the log does not hold: see
    /// `conflict`), else the group's committed offset, else the beginning.
    pub fn next(&self) -> i64 {
        match self.stored {
            Some(stored) => stored,
            None => self.committed.unwrap_or(self.low).max(self.low),
        }
    }

    pub fn source(&self) -> &'static str {
        match (self.stored, self.committed) {
            (Some(_), _) => "postgres",
            (None, Some(_)) => "kafka",
            (None, None) => "none",
        }
    }

    /// Records between the position and the log end. For a partition in conflict it means
    /// nothing (the consumer holds it): read `conflict` first; it is negative when the stored
    /// offset is ahead of the log.
    pub fn lag(&self) -> i64 {
        let lag = self.high - self.next();
        if self.conflict.is_some() { lag } else { lag.max(0) }
    }

    /// The LAG column: the number, or what holds the partition instead.
    pub fn lag_cell(&self) -> String {
        match self.conflict_reason {
            None => self.lag().to_string(),
            Some("ahead_of_log") => format!("AHEAD {}", -self.lag()),
            Some("below_log_start") => format!("LOST {}", self.low - self.next()),
            Some("topic_recreated") => "RECREATED".into(),
            Some(other) => other.to_uppercase(),
        }
    }
}

/// A client acting for `group` without joining it (reads and commits offsets only).
pub fn group_client(kafka: &KafkaArgs, group: &str) -> anyhow::Result<BaseConsumer> {
    let mut config = kafka.client_config();
    config.set("group.id", group).set("enable.auto.commit", "false").set("log_level", "3");
    config.create().with_context(|| format!("Failed to create a Kafka client for group {group}"))
}

/// The group's committed offsets for these partitions of `topic` (absent: never committed).
pub fn committed_offsets(
    client: &BaseConsumer,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        tpl.add_partition(topic, p);
    }
    let answer = client
        .committed_offsets(tpl, REQUEST_TIMEOUT)
        .with_context(|| format!("Failed to fetch the committed offsets of group {group} on {topic}"))?;
    Ok(answer
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect())
}

/// The members of the group right now (`client_id@host`); empty when no instance runs.
pub fn active_members(client: &BaseConsumer, group: &str) -> anyhow::Result<Vec<String>> {
    let list = client
        .fetch_group_list(Some(group), REQUEST_TIMEOUT)
        .with_context(|| format!("Failed to describe consumer group {group}"))?;
    Ok(list
        .groups()
        .iter()
        .filter(|g| g.name() == group)
        .flat_map(|g| g.members().iter().map(|m| format!("{}@{}", m.client_id(), m.client_host())))
        .collect())
}

/// How long sessions of a consumer that just stopped may take to leave `pg_stat_activity`.
const SESSION_EXIT_GRACE: Duration = Duration::from_secs(2);

/// Signs that an instance of the consumer is running: members of its consumer group, and
/// Postgres sessions of its read store (the runtime names its connections after the schema,
/// `application_name`). The group is the primary signal; the sessions cover brokers that
/// cannot describe groups (some Kafka-protocol brokers drop the connection on DescribeGroups
/// of a group with members), and are reported with a warning in that case.
pub async fn running_instances(
    kafka: &KafkaArgs,
    pool: &PgPool,
    consumer: &ConsumerRef,
) -> anyhow::Result<Vec<String>> {
    let client = group_client(kafka, &consumer.group)?;
    let mut found: Vec<String> = match active_members(&client, &consumer.group) {
        Ok(members) => members.into_iter().map(|m| format!("group member {m}")).collect(),
        Err(error) => {
            eprintln!("warning: {error:#}; falling back to the consumer's Postgres sessions to tell whether it runs");
            Vec::new()
        }
    };
    // A consumer stopped a moment ago still shows its sessions while their backends exit:
    // only sessions still there after a short grace count.
    let deadline = tokio::time::Instant::now() + SESSION_EXIT_GRACE;
    let sessions: Vec<(i32, Option<String>)> = loop {
        let sessions: Vec<(i32, Option<String>)> = sqlx::query_as(
            "SELECT pid, client_addr::text FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&consumer.schema)
        .fetch_all(pool)
        .await
        .with_context(|| format!("Failed to list the Postgres sessions of consumer {}", consumer.name))?;
        if sessions.is_empty() || tokio::time::Instant::now() >= deadline {
            break sessions;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    found.extend(sessions.into_iter().map(|(pid, addr)| {
        format!("postgres session pid {pid} from {}", addr.unwrap_or_else(|| "local socket".into()))
    }));
    Ok(found)
}

/// Every partition of the consumer's topics with its stored and committed offsets and
/// watermarks. Topics: `topics` when given, else the ones in its offsets table.
pub async fn positions(
    kafka: &KafkaArgs,
    pool: &PgPool,
    consumer: &ConsumerRef,
    topics: &[String],
) -> anyhow::Result<Vec<PartitionPosition>> {
    let stored = store::stored_offsets(pool, &consumer.schema)
        .await
        .with_context(|| format!("Failed to read the stored offsets of consumer {}", consumer.name))?;
    let topics: Vec<String> = if !topics.is_empty() {
        topics.to_vec()
    } else {
        let Some(stored) = &stored else {
            anyhow::bail!(
                "consumer {} has no offsets table {}.orderflow_offsets; name its topics with --topic to use the group's Kafka offsets",
                consumer.name,
                consumer.schema
            );
        };
        let mut topics: Vec<String> = stored.keys().map(|(t, _)| t.clone()).collect();
        topics.dedup();
        topics
    };
    let reader: StreamConsumer = records::reader(kafka)?;
    let group = group_client(kafka, &consumer.group)?;
    let stored_ids = store::stored_topic_ids(pool, &consumer.schema).await?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let topic_ids = orderflow_kafka::topic_ids::topic_ids(reader.client(), &names, REQUEST_TIMEOUT)
        .context("Failed to read the topics' ids")?;
    let mut out = Vec::new();
    for topic in &topics {
        let partitions = records::partitions(&reader, topic).with_context(|| format!("consumer {}", consumer.name))?;
        let committed = committed_offsets(&group, &consumer.group, topic, &partitions)?;
        for partition in partitions {
            let key = (topic.clone(), partition);
            out.push(PartitionPosition::new(
                topic,
                partition,
                records::watermarks(&reader, topic, partition)?,
                stored.as_ref().and_then(|s| s.get(&key).copied()),
                committed.get(&partition).copied(),
                (topic_ids.get(topic).cloned(), stored_ids.get(&key).cloned()),
            ));
        }
    }
    Ok(out)
}
