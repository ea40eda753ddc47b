//! `orderflow tail <topic>`: print a topic's records as JSON lines (decoded value, key,
//! headers, partition, offset, timestamp). Reads assigned partitions without a consumer
//! group, so it never disturbs a consumer and leaves nothing behind on the broker.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use orderflow_events::Codec;
use orderflow_kafka::KafkaArgs;
use rdkafka::Message;

use crate::records::{self, parse_time};

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  orderflow tail orders.v1 --limit 10                    first 10 records
  orderflow tail orders.v1 --from-end --follow           new records as they arrive
  orderflow tail orders.v1 --since 2026-11-22T13:00:00Z --type orderflow.order.placed.v1
  orderflow tail inventory.v1 --key SKU-1 --partition 2 --offset 1000
  orderflow tail orders.v1 | jq -c '.value.order_id'

Without a start option it reads from the beginning, or from the end with --follow.
Without --follow it stops at the end the topic had when it started.
Records that do not decode are printed with an `error` field instead of `value`.")]
pub struct TailArgs {
    /// Topic to read.
    pub topic: String,
    /// Only these partitions (repeatable; default: all).
    #[arg(long = "partition", value_name = "P")]
    pub partitions: Vec<i32>,
    /// Start at the first record still on each partition.
    #[arg(long, group = "start")]
    pub from_beginning: bool,
    /// Start after the last record (only new records; use with --follow).
    #[arg(long, group = "start")]
    pub from_end: bool,
    /// Start at this offset on each selected partition.
    #[arg(long, group = "start", value_parser = clap::value_parser!(i64).range(0..))]
    pub offset: Option<i64>,
    /// Start at the first record with a timestamp at or after this RFC 3339 time.
    #[arg(long, group = "start", value_parser = parse_time)]
    pub since: Option<DateTime<Utc>>,
    /// Keep waiting for new records (stop with Ctrl-C).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only records with this key.
    #[arg(long)]
    pub key: Option<String>,
    /// Only records with this CloudEvents type (`ce_type` header).
    #[arg(long = "type", value_name = "CE_TYPE")]
    pub ce_type: Option<String>,
    /// Stop after printing this many records.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Schema Registry for the Confluent wire format.
    #[arg(long, env = "SCHEMA_REGISTRY_URL")]
    pub schema_registry_url: Option<String>,
    /// Give up when no record arrives for this many seconds while records are expected.
    #[arg(long, default_value_t = 30)]
    pub idle_timeout: u64,
}

impl TailArgs {
    pub fn new(topic: impl Into<String>) -> Self {
        TailArgs {
            topic: topic.into(),
            partitions: Vec::new(),
            from_beginning: false,
            from_end: false,
            offset: None,
            since: None,
            follow: false,
            key: None,
            ce_type: None,
            limit: None,
            schema_registry_url: None,
            idle_timeout: 30,
        }
    }
}

/// What a tail printed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TailSummary {
    pub printed: u64,
    pub undecodable: u64,
    pub filtered_out: u64,
}

pub async fn run(kafka: &KafkaArgs, args: TailArgs) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let summary = tail(kafka, &args, &mut out, orderflow_service::shutdown_signal()).await?;
    eprintln!(
        "tail {}: {} records printed ({} undecodable, {} filtered out)",
        args.topic, summary.printed, summary.undecodable, summary.filtered_out
    );
    Ok(())
}

/// Write the selected records of `args.topic` to `out` as JSON lines, until the end the
/// topic had at the start (or, with `follow`, until `shutdown` or the limit).
pub async fn tail(
    kafka: &KafkaArgs,
    args: &TailArgs,
    out: &mut impl Write,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<TailSummary> {
    let topic = args.topic.as_str();
    let codec = Codec::from_config(args.schema_registry_url.as_deref()).context("Invalid SCHEMA_REGISTRY_URL")?;
    let consumer = records::reader(kafka)?;
    let all = records::partitions(&consumer, topic)?;
    let selected = if args.partitions.is_empty() {
        all
    } else {
        for p in &args.partitions {
            anyhow::ensure!(all.contains(p), "topic {topic} has no partition {p} (it has {})", all.len());
        }
        args.partitions.clone()
    };

    // Where each partition starts, and (without --follow) where it ends.
    let mut starts = Vec::new();
    let mut ends = BTreeMap::new();
    for &partition in &selected {
        let (low, high) = records::watermarks(&consumer, topic, partition)?;
        let start = if let Some(offset) = args.offset {
            offset.clamp(low, high)
        } else if let Some(since) = args.since {
            records::offset_for_time(&consumer, topic, partition, since, (low, high)).await?
        } else if args.from_end || (args.follow && !args.from_beginning) {
            high
        } else {
            low
        };
        starts.push((partition, start));
        ends.insert(partition, high);
    }
    let mut pending: BTreeSet<i32> = starts.iter().filter(|(p, start)| *start < ends[p]).map(|(p, _)| *p).collect();
    let mut summary = TailSummary::default();
    if !args.follow && pending.is_empty() {
        return Ok(summary);
    }
    let total: i64 = starts.iter().map(|(p, start)| ends[p] - start).sum();
    let bar = if args.follow { records::progress(None, topic) } else { records::progress(Some(total as u64), topic) };
    records::assign(&consumer, topic, &starts)?;

    let since_ms = args.since.map(|t| t.timestamp_millis());
    let idle = Duration::from_secs(args.idle_timeout.max(1));
    tokio::pin!(shutdown);
    loop {
        let message = tokio::select! {
            _ = &mut shutdown => break,
            received = tokio::time::timeout(idle, consumer.recv()), if !args.follow => match received {
                Ok(message) => message,
                Err(_) => bail!("no record arrived from {topic} partitions {pending:?} for {idle:?} (expected records up to offsets {ends:?})"),
            },
            received = consumer.recv(), if args.follow => received,
        };
        let message = message.with_context(|| format!("Failed to read {topic}"))?;
        let partition = message.partition();
        if !args.follow {
            let end = ends.get(&partition).copied().unwrap_or(0);
            if message.offset() + 1 >= end {
                pending.remove(&partition);
            }
            if message.offset() >= end {
                if pending.is_empty() {
                    break;
                }
                continue;
            }
        }
        bar.inc(1);
        if !selected_record(&message, since_ms, args) {
            summary.filtered_out += 1;
        } else {
            let json = records::to_json(&codec, &message).await;
            if json.get("error").is_some() {
                summary.undecodable += 1;
            }
            if !write_line(out, &json, args.follow)? {
                break;
            }
            summary.printed += 1;
            if args.limit.is_some_and(|limit| summary.printed >= limit) {
                break;
            }
        }
        if !args.follow && pending.is_empty() {
            break;
        }
    }
    bar.finish_and_clear();
    match out.flush() {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(error).context("Failed to write to stdout"),
        _ => Ok(summary),
    }
}

fn selected_record(message: &impl Message, since_ms: Option<i64>, args: &TailArgs) -> bool {
    if let Some(since) = since_ms
        && records::timestamp_ms(message).is_some_and(|t| t < since)
    {
        return false;
    }
    if let Some(key) = &args.key
        && message.key() != Some(key.as_bytes())
    {
        return false;
    }
    if let Some(ce_type) = &args.ce_type
        && records::headers_map(message).get("ce_type") != Some(ce_type)
    {
        return false;
    }
    true
}

/// Write one JSON line; `false` when the reader went away (a closed pipe, e.g. `| head`).
pub fn write_line(out: &mut impl Write, json: &serde_json::Value, flush: bool) -> anyhow::Result<bool> {
    let result = serde_json::to_writer(&mut *out, json)
        .map_err(std::io::Error::from)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| if flush { out.flush() } else { Ok(()) });
    match result {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(error) => Err(error).context("Failed to write to stdout"),
    }
}
