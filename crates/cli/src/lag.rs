//! `orderflow lag`: how far each consumer is behind, per partition, in messages (high
//! watermark − the consumer's stored next offset) and in seconds (age of the oldest record
//! it has not applied). The stored offsets in Postgres are authoritative; the group's Kafka
//! committed offsets are the fallback when a consumer has no offsets table.

use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use orderflow_kafka::KafkaArgs;
use orderflow_service::DatabaseArgs;
use sqlx::PgPool;

use crate::position::{self, ConsumerRef};
use crate::records;

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  orderflow lag                                   every consumer found in the database
  orderflow lag --consumer fulfillment --json
  orderflow lag --consumer analytics --max-lag 10000 || page-someone
  orderflow lag --consumer my-team --schema my_team_v2 --group my-team-v2 --topic orders.v1

A partition whose stored offset does not belong to the log (the topic was recreated, the
offset is ahead of the log's end, or records were deleted before they were applied) shows
RECREATED, AHEAD n or LOST n instead of a lag: the consumer holds it until
`orderflow offsets reset` moves it (docs/operations.md, \"When offsets and the log disagree\").

Exit codes: 0 fine, 2 a consumer's total lag exceeds --max-lag, 4 a stored offset conflicts
with the log, 1 error.")]
pub struct LagArgs {
    /// Consumer name (repeatable; default: every schema with an orderflow_offsets table).
    /// Its schema is the name with '-' replaced by '_', its group the name.
    #[arg(long = "consumer", value_name = "NAME")]
    pub consumers: Vec<String>,
    /// Postgres schema of the consumer's store (with one --consumer).
    #[arg(long, requires = "consumers")]
    pub schema: Option<String>,
    /// Consumer group (with one --consumer).
    #[arg(long, requires = "consumers")]
    pub group: Option<String>,
    /// Topics to report (repeatable; default: those in the consumer's offsets table).
    #[arg(long = "topic", value_name = "TOPIC")]
    pub topics: Vec<String>,
    // Postgres holding the consumers' read stores.
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// Exit with code 2 when a consumer's total lag in messages is above this.
    #[arg(long, value_name = "MESSAGES")]
    pub max_lag: Option<i64>,
    /// JSON output (one array) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One partition of one consumer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PartitionLag {
    pub consumer: String,
    pub topic: String,
    pub partition: i32,
    /// Next offset the consumer applies.
    pub next_offset: i64,
    pub high_watermark: i64,
    pub lag_messages: i64,
    /// Age of the oldest record not yet applied (0 when caught up; `None` if unreadable).
    pub lag_seconds: Option<f64>,
    /// Where `next_offset` came from: `postgres`, `kafka` or `none`.
    pub source: &'static str,
    /// Why the stored offset does not belong to the log (the consumer holds the partition;
    /// `lag_messages` is then high watermark − stored offset, negative when ahead).
    pub conflict: Option<String>,
    /// The conflict's kind: `topic_recreated`, `ahead_of_log` or `below_log_start`.
    pub conflict_reason: Option<&'static str>,
    /// The LAG column as the table prints it.
    #[serde(skip)]
    pub lag_cell: String,
}

/// A consumer's stored offsets do not belong to the log; the process exits with code 4.
#[derive(Debug, thiserror::Error)]
#[error("stored offsets conflict with the log (the partitions are held until `orderflow offsets reset` moves them): {}", .0.join("; "))]
pub struct OffsetsConflict(pub Vec<String>);

/// `--max-lag` was exceeded; the process exits with code 2.
#[derive(Debug, thiserror::Error)]
#[error("lag above --max-lag {max}: {}", over.iter().map(|(c, l)| format!("{c} is {l} messages behind")).collect::<Vec<_>>().join(", "))]
pub struct LagExceeded {
    pub max: i64,
    pub over: Vec<(String, i64)>,
}

pub async fn run(kafka: &KafkaArgs, args: LagArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.consumers.len() == 1 || (args.schema.is_none() && args.group.is_none()),
        "--schema and --group apply to a single --consumer"
    );
    let pool = position::connect(&args.db).await?;
    let names = if args.consumers.is_empty() {
        let schemas = orderflow_runtime::store::consumer_schemas(&pool).await?;
        anyhow::ensure!(
            !schemas.is_empty(),
            "no consumer schemas (with an orderflow_offsets table) in the database; name one with --consumer"
        );
        schemas.into_iter().map(|s| s.replace('_', "-")).collect()
    } else {
        args.consumers.clone()
    };
    let mut rows = Vec::new();
    for name in &names {
        let consumer = ConsumerRef::new(name, args.schema.as_deref(), args.group.as_deref())?;
        rows.extend(measure(kafka, &pool, &consumer, &args.topics).await?);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_table(&rows);
    }
    let conflicts: Vec<String> = rows
        .iter()
        .filter_map(|r| Some(format!("{} {}[{}]: {}", r.consumer, r.topic, r.partition, r.conflict.as_ref()?)))
        .collect();
    let mut over = Vec::new();
    for name in &names {
        let total: i64 =
            rows.iter().filter(|r| &r.consumer == name && r.conflict.is_none()).map(|r| r.lag_messages).sum();
        let held = rows.iter().filter(|r| &r.consumer == name && r.conflict.is_some()).count();
        match held {
            0 => eprintln!("{name}: {total} messages behind"),
            _ => eprintln!("{name}: {total} messages behind, {held} partition(s) held by an offset conflict"),
        }
        if args.max_lag.is_some_and(|max| total > max) {
            over.push((name.clone(), total));
        }
    }
    if !conflicts.is_empty() {
        return Err(OffsetsConflict(conflicts).into());
    }
    match args.max_lag {
        Some(max) if !over.is_empty() => Err(LagExceeded { max, over }.into()),
        _ => Ok(()),
    }
}

/// The lag of every partition the consumer reads.
pub async fn measure(
    kafka: &KafkaArgs,
    pool: &PgPool,
    consumer: &ConsumerRef,
    topics: &[String],
) -> anyhow::Result<Vec<PartitionLag>> {
    let positions = position::positions(kafka, pool, consumer, topics).await?;
    let reader = records::reader(kafka)?;
    let now_ms = Utc::now().timestamp_millis();
    let mut out = Vec::with_capacity(positions.len());
    for position in positions {
        let next = position.next();
        let lag_messages = position.lag();
        let lag_seconds = if position.conflict.is_some() {
            None
        } else if lag_messages == 0 {
            Some(0.0)
        } else {
            records::read_one(&reader, &position.topic, position.partition, next, Duration::from_secs(10))
                .await
                .with_context(|| format!("consumer {}: reading the oldest unapplied record", consumer.name))?
                .as_ref()
                .and_then(records::timestamp_ms)
                .map(|ts| ((now_ms - ts).max(0)) as f64 / 1000.0)
        };
        out.push(PartitionLag {
            consumer: consumer.name.clone(),
            topic: position.topic.clone(),
            partition: position.partition,
            next_offset: next,
            high_watermark: position.high,
            lag_messages,
            lag_seconds,
            source: position.source(),
            lag_cell: position.lag_cell(),
            conflict: position.conflict.clone(),
            conflict_reason: position.conflict_reason,
        });
    }
    Ok(out)
}

fn print_table(rows: &[PartitionLag]) {
    let width = |f: &dyn Fn(&PartitionLag) -> usize, min: usize| rows.iter().map(f).max().unwrap_or(0).max(min);
    let cw = width(&|r| r.consumer.len(), 8);
    let tw = width(&|r| r.topic.len(), 5);
    println!(
        "{:cw$}  {:tw$}  {:>9}  {:>12}  {:>12}  {:>12}  {:>11}  SOURCE",
        "CONSUMER", "TOPIC", "PARTITION", "NEXT", "HIGH", "LAG", "LAG_SECONDS"
    );
    for r in rows {
        let seconds = r.lag_seconds.map(|s| format!("{s:.1}")).unwrap_or_else(|| "?".into());
        println!(
            "{:cw$}  {:tw$}  {:>9}  {:>12}  {:>12}  {:>12}  {:>11}  {}",
            r.consumer, r.topic, r.partition, r.next_offset, r.high_watermark, r.lag_cell, seconds, r.source
        );
    }
}
