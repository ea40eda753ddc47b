//! `orderflow offsets show|reset`: a consumer's stored offsets (Postgres, authoritative)
//! next to its group's Kafka committed offsets and the topics' watermarks; and moving them.
//!
//! A reset writes the consumer's stored offsets in one transaction (`store::seed_offsets`,
//! what the runtime seeks to on assignment), then the group's Kafka committed offsets (so Kafka tools
//! agree). It refuses while the consumer runs (its group has members, or its store has
//! open Postgres sessions): a running instance would overwrite the reset with its next batch.

use std::collections::BTreeMap;
use std::str::FromStr;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Subcommand;
use orderflow_kafka::KafkaArgs;
use orderflow_runtime::store;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::PgPool;

use crate::position::{self, ConsumerArgs, ConsumerRef, PartitionPosition};
use crate::records;

#[derive(Debug, Subcommand)]
pub enum OffsetsCommand {
    /// Stored (Postgres) and committed (Kafka) offsets with low/high watermarks.
    #[command(after_help = "Examples:
  orderflow offsets show fulfillment
  orderflow offsets show my-team --schema my_team --topic orders.v1 --json")]
    Show {
        #[command(flatten)]
        consumer: ConsumerArgs,
        /// Topics (repeatable; default: those in the consumer's offsets table).
        #[arg(long = "topic", value_name = "TOPIC")]
        topics: Vec<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Move a stopped consumer's offsets.
    #[command(after_help = "Examples:
  orderflow offsets reset analytics --to latest                       skip the backlog
  orderflow offsets reset analytics --to time:2026-11-22T13:00:00Z --topic orders.v1
  orderflow offsets reset analytics --to offset:1200 --topic orders.v1 --partition 3
  orderflow offsets reset analytics --to earliest --dry-run

Stop every instance first: the reset refuses while the consumer group has members.
Moving back re-reads records, but events the consumer already applied are skipped by its
applied-event ledger; to rebuild a store from scratch use `orderflow replay` instead.")]
    Reset {
        #[command(flatten)]
        consumer: ConsumerArgs,
        /// earliest | latest | offset:N | time:RFC3339
        #[arg(long)]
        to: ResetTo,
        /// Only this topic (default: every topic in the consumer's offsets table).
        #[arg(long)]
        topic: Option<String>,
        /// Only this partition (needs --topic).
        #[arg(long, requires = "topic")]
        partition: Option<i32>,
        /// Print what would change without changing it.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Where `offsets reset` moves a partition to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResetTo {
    Earliest,
    Latest,
    Offset(i64),
    Time(DateTime<Utc>),
}

impl FromStr for ResetTo {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "earliest" => Ok(ResetTo::Earliest),
            "latest" => Ok(ResetTo::Latest),
            _ => {
                if let Some(n) = s.strip_prefix("offset:") {
                    match n.parse::<i64>() {
                        Ok(n) if n >= 0 => Ok(ResetTo::Offset(n)),
                        _ => Err(format!("`{n}` is not an offset (a whole number ≥ 0)")),
                    }
                } else if let Some(t) = s.strip_prefix("time:") {
                    records::parse_time(t).map(ResetTo::Time)
                } else {
                    Err(format!("`{s}` is not earliest, latest, offset:N or time:RFC3339"))
                }
            }
        }
    }
}

/// One partition's move.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Move {
    pub topic: String,
    pub partition: i32,
    pub from: i64,
    pub to: i64,
}

pub async fn run(kafka: &KafkaArgs, command: OffsetsCommand) -> anyhow::Result<()> {
    match command {
        OffsetsCommand::Show { consumer, topics, json } => {
            let target = consumer.consumer_ref()?;
            let pool = position::connect(&consumer.db).await?;
            let positions = position::positions(kafka, &pool, &target, &topics).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&positions)?);
            } else {
                print_positions(&positions);
            }
            Ok(())
        }
        OffsetsCommand::Reset { consumer, to, topic, partition, dry_run } => {
            let target = consumer.consumer_ref()?;
            let pool = position::connect(&consumer.db).await?;
            let moves = reset(kafka, &pool, &target, &to, topic.as_deref(), partition, dry_run).await?;
            for m in &moves {
                println!("{}\t{}\t{} -> {}", m.topic, m.partition, m.from, m.to);
            }
            let verb = if dry_run { "would move" } else { "moved" };
            eprintln!("{}: {verb} {} partitions", target.name, moves.len());
            Ok(())
        }
    }
}

/// Move the consumer's offsets of the selected partitions to `to`. Refuses while the
/// consumer's group has members. Returns every selected partition's move.
pub async fn reset(
    kafka: &KafkaArgs,
    pool: &PgPool,
    consumer: &ConsumerRef,
    to: &ResetTo,
    topic: Option<&str>,
    partition: Option<i32>,
    dry_run: bool,
) -> anyhow::Result<Vec<Move>> {
    let running = position::running_instances(kafka, pool, consumer).await?;
    anyhow::ensure!(
        running.is_empty(),
        "consumer {} is running (group {}, schema {}): {}; stop every instance before resetting its offsets",
        consumer.name,
        consumer.group,
        consumer.schema,
        running.join(", ")
    );
    let group = position::group_client(kafka, &consumer.group)?;
    let topics: Vec<String> = topic.map(|t| vec![t.to_owned()]).unwrap_or_default();
    let positions = position::positions(kafka, pool, consumer, &topics).await?;
    if let Some(p) = partition {
        anyhow::ensure!(
            positions.iter().any(|pos| pos.partition == p),
            "topic {} has no partition {p}",
            topic.unwrap_or_default()
        );
    }
    let reader = records::reader(kafka)?;
    let bar = records::progress(Some(positions.len() as u64), "resolving offsets");
    let mut moves = Vec::new();
    for pos in positions.iter().filter(|pos| partition.is_none_or(|p| p == pos.partition)) {
        let target = match to {
            ResetTo::Earliest => pos.low,
            ResetTo::Latest => pos.high,
            ResetTo::Offset(n) => {
                anyhow::ensure!(
                    (pos.low..=pos.high).contains(n),
                    "offset {n} is outside {}[{}], which holds offsets {}..{}",
                    pos.topic,
                    pos.partition,
                    pos.low,
                    pos.high
                );
                *n
            }
            ResetTo::Time(time) => {
                records::offset_for_time(&reader, &pos.topic, pos.partition, *time, (pos.low, pos.high)).await?
            }
        };
        moves.push(Move { topic: pos.topic.clone(), partition: pos.partition, from: pos.next(), to: target });
        bar.inc(1);
    }
    bar.finish_and_clear();
    if dry_run || moves.is_empty() {
        return Ok(moves);
    }

    let starts: BTreeMap<(String, i32), i64> = moves.iter().map(|m| ((m.topic.clone(), m.partition), m.to)).collect();
    store::seed_offsets(pool, &consumer.schema, &starts)
        .await
        .with_context(|| format!("Failed to move the stored offsets of consumer {}", consumer.name))?;

    let mut tpl = TopicPartitionList::new();
    for m in &moves {
        tpl.add_partition_offset(&m.topic, m.partition, Offset::Offset(m.to))
            .with_context(|| format!("bad offset for {}[{}]", m.topic, m.partition))?;
    }
    if let Err(error) = group.commit(&tpl, CommitMode::Sync) {
        // Postgres is authoritative; the Kafka offsets only inform other tools.
        eprintln!(
            "warning: stored offsets moved, but committing them to Kafka group {} failed: {error}",
            consumer.group
        );
    }
    Ok(moves)
}

fn print_positions(positions: &[PartitionPosition]) {
    let tw = positions.iter().map(|p| p.topic.len()).max().unwrap_or(0).max(5);
    let opt = |o: Option<i64>| o.map(|o| o.to_string()).unwrap_or_else(|| "-".into());
    println!(
        "{:tw$}  {:>9}  {:>12}  {:>12}  {:>12}  {:>12}  {:>12}",
        "TOPIC", "PARTITION", "STORED", "COMMITTED", "LOW", "HIGH", "LAG"
    );
    for p in positions {
        println!(
            "{:tw$}  {:>9}  {:>12}  {:>12}  {:>12}  {:>12}  {:>12}",
            p.topic,
            p.partition,
            opt(p.stored),
            opt(p.committed),
            p.low,
            p.high,
            p.lag()
        );
    }
}
