//! `orderflow offsets show|reset`: a consumer's stored offsets (Postgres, authoritative)
//! next to its group's Kafka committed offsets and the topics' watermarks; and moving them.
//!
//! A reset writes the consumer's stored offsets and their audit trail in one transaction
//! (`store::move_offsets`; the runtime seeks there on assignment, and records the topic's id
//! with them once they check out against the log), then the group's Kafka committed offsets
//! (so Kafka tools agree). `show` marks the partitions whose stored offset does not belong
//! to the log (the runtime holds those until a reset moves them). It refuses while the consumer runs (its group has members, or its store has
//! open Postgres sessions): a running instance would overwrite the reset with its next batch.

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
  orderflow offsets reset analytics --to earliest --conflicts-only --reason \"orders.v1 recreated\"

Partitions in conflict (the topic was recreated, the stored offset is ahead of the log's end,
or records were deleted before they were applied: `orderflow offsets show`) are held by the
consumer until moved here. `--to earliest` starts them at the log's start (the new topic's
first record after a recreation), `--to time:` at the first record at or after a time (what
was applied before it on the old log is then skipped by the ledger where it repeats),
`--to offset:N` at a position you chose. Every move is recorded in the consumer's
orderflow_offset_moves table with who made it, when and --reason.

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
        /// Only the partitions whose stored offset conflicts with the log.
        #[arg(long)]
        conflicts_only: bool,
        /// Why, recorded with the move (the audit trail in the consumer's store).
        #[arg(long, default_value = "not given")]
        reason: String,
        /// Print what would change without changing it.
        #[arg(long)]
        dry_run: bool,
    },
    /// The moves operators made to a consumer's offsets: who, when, why, from where to where.
    #[command(after_help = "Examples:
  orderflow offsets history fulfillment")]
    History {
        #[command(flatten)]
        consumer: ConsumerArgs,
        /// JSON output.
        #[arg(long)]
        json: bool,
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
    /// The conflict the move resolves, if the partition was held.
    pub conflict: Option<String>,
}

/// Which partitions a reset moves, and why.
#[derive(Debug, Clone, Default)]
pub struct Selection<'a> {
    pub topic: Option<&'a str>,
    pub partition: Option<i32>,
    /// Only partitions whose stored offset conflicts with the log.
    pub conflicts_only: bool,
    /// Recorded with each move.
    pub reason: &'a str,
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
        OffsetsCommand::Reset { consumer, to, topic, partition, conflicts_only, reason, dry_run } => {
            let target = consumer.consumer_ref()?;
            let pool = position::connect(&consumer.db).await?;
            let selection = Selection { topic: topic.as_deref(), partition, conflicts_only, reason: &reason };
            let moves = reset(kafka, &pool, &target, &to, &selection, dry_run).await?;
            for m in &moves {
                match &m.conflict {
                    Some(conflict) => {
                        println!("{}\t{}\t{} -> {}\t(was: {conflict})", m.topic, m.partition, m.from, m.to)
                    }
                    None => println!("{}\t{}\t{} -> {}", m.topic, m.partition, m.from, m.to),
                }
            }
            let verb = if dry_run { "would move" } else { "moved" };
            eprintln!("{}: {verb} {} partitions", target.name, moves.len());
            Ok(())
        }
        OffsetsCommand::History { consumer, json } => {
            let target = consumer.consumer_ref()?;
            let pool = position::connect(&consumer.db).await?;
            let moves = store::offset_moves(&pool, &target.schema).await?;
            if json {
                let rows: Vec<serde_json::Value> = moves
                    .iter()
                    .map(|(m, by, reason, at)| serde_json::json!({"move": m, "by": by, "reason": reason, "at": at}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                for (m, by, reason, at) in &moves {
                    let from = m.from.map(|f| f.to_string()).unwrap_or_else(|| "-".into());
                    println!("{at}\t{by}\t{}[{}]\t{from} -> {}\t{reason}", m.topic, m.partition, m.to);
                }
                eprintln!("{}: {} recorded moves", target.name, moves.len());
            }
            Ok(())
        }
    }
}

/// Move the consumer's offsets of the selected partitions to `to`, recording each move (who,
/// when, `selection.reason`) with it. Refuses while the consumer's group has members.
/// Returns every selected partition's move.
pub async fn reset(
    kafka: &KafkaArgs,
    pool: &PgPool,
    consumer: &ConsumerRef,
    to: &ResetTo,
    selection: &Selection<'_>,
    dry_run: bool,
) -> anyhow::Result<Vec<Move>> {
    let (topic, partition) = (selection.topic, selection.partition);
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
    let mut audited = Vec::new();
    let selected = positions
        .iter()
        .filter(|pos| partition.is_none_or(|p| p == pos.partition))
        .filter(|pos| !selection.conflicts_only || pos.conflict.is_some());
    for pos in selected {
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
        moves.push(Move {
            topic: pos.topic.clone(),
            partition: pos.partition,
            from: pos.next(),
            to: target,
            conflict: pos.conflict.clone(),
        });
        audited.push(store::OffsetMove {
            topic: pos.topic.clone(),
            partition: pos.partition,
            from: pos.stored,
            to: target,
            from_topic_id: pos.stored_topic_id.clone(),
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    if dry_run || moves.is_empty() {
        return Ok(moves);
    }

    store::move_offsets(pool, &consumer.schema, &audited, &crate::operator(), selection.reason)
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
            p.lag_cell()
        );
    }
    let conflicts: Vec<&PartitionPosition> = positions.iter().filter(|p| p.conflict.is_some()).collect();
    if !conflicts.is_empty() {
        eprintln!("\nconflicts: the consumer holds these partitions (nothing applied, nothing skipped):");
        for p in conflicts {
            eprintln!("  {}[{}]: {}", p.topic, p.partition, p.conflict.as_deref().unwrap_or_default());
        }
        eprintln!(
            "resolve with `orderflow offsets reset CONSUMER --to earliest|time:RFC3339|offset:N --conflicts-only --reason ...` \
             (docs/operations.md, \"When offsets and the log disagree\")"
        );
    }
}
