//! `orderflow schema check`: the readers of this build against what a topic really holds.
//!
//! Compatibility tests compare schema files; what breaks a consumer in production is the data
//! retained on the topic. This scans a topic's retained records (every partition, oldest
//! first; `--sample N` reads at most N per partition), groups them by writer schema (the
//! single-object fingerprint or the Schema Registry id), and asks, for every record, whether
//! this build's reader decodes it: exactly what each consumer reading the topic would do.
//! A writer schema this build cannot find (an unknown fingerprint, an id the registry does not
//! have) or cannot resolve is a failing verdict, as is a record whose framing is unknown.
//!
//! Output: per writer schema, the record count, the first and last record (partition, offset,
//! time), and the verdict of each consumer that reads the topic. Exit code 3 when any reader
//! fails on any group; `--json` for scripts.

use std::collections::BTreeMap;

use anyhow::Context;
use orderflow_events::{Codec, DecodeError, EventKind};
use orderflow_kafka::KafkaArgs;
use rdkafka::Message;
use rdkafka::consumer::StreamConsumer;
use serde::Serialize;

use crate::records;

#[derive(Debug, clap::Args)]
pub struct SchemaCheckArgs {
    /// The topic to scan.
    #[arg(long)]
    pub topic: String,
    /// Read at most this many records per partition (oldest first); default: all retained.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub sample: Option<u64>,
    /// Schema Registry for records in the Confluent wire format.
    #[arg(long, env = "SCHEMA_REGISTRY_URL")]
    pub schema_registry_url: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum SchemaCommand {
    /// Check that every reader of this build can read every record a topic holds.
    Check(SchemaCheckArgs),
}

/// Some reader cannot read some writer schema on the topic; exit code 3.
#[derive(Debug, thiserror::Error)]
#[error("{failing} of {groups} writer schema(s) on {topic} cannot be read by this build's readers (above)")]
pub struct SchemaCheckFailed {
    pub topic: String,
    pub groups: usize,
    pub failing: usize,
}

/// Where one record is.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct At {
    pub partition: i32,
    pub offset: i64,
    /// The record's Kafka timestamp, RFC 3339 (absent when the record has none).
    pub time: Option<String>,
}

/// The records of one writer schema.
#[derive(Debug, Clone, Serialize)]
pub struct WriterGroup {
    /// `fingerprint:<16 hex>` (single-object), `registry-id:<n>` (Confluent), or the framing
    /// problem (`unknown framing <hex>`, `empty value`, `truncated header`).
    pub writer: String,
    /// The event type, when the writer schema names one this build knows.
    pub event: Option<String>,
    pub records: u64,
    pub first: At,
    pub last: At,
    /// Records this build's reader decodes.
    pub readable: u64,
    /// Why the others are not, with how many each (the first error of each kind).
    pub problems: BTreeMap<String, u64>,
    /// Each consumer reading the topic: `ok`, or why it cannot read these records.
    pub readers: BTreeMap<String, String>,
}

impl WriterGroup {
    pub fn ok(&self) -> bool {
        self.readable == self.records
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct SchemaReport {
    pub topic: String,
    pub scanned: u64,
    pub groups: Vec<WriterGroup>,
}

pub async fn run(kafka: &KafkaArgs, command: SchemaCommand) -> anyhow::Result<()> {
    let SchemaCommand::Check(args) = command;
    let report = check(kafka, &args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    let failing = report.groups.iter().filter(|g| !g.ok()).count();
    if failing > 0 {
        return Err(SchemaCheckFailed { topic: report.topic, groups: report.groups.len(), failing }.into());
    }
    Ok(())
}

/// Scan the topic and build the report.
pub async fn check(kafka: &KafkaArgs, args: &SchemaCheckArgs) -> anyhow::Result<SchemaReport> {
    let codec = Codec::from_config(args.schema_registry_url.as_deref()).context("Invalid SCHEMA_REGISTRY_URL")?;
    let consumer = records::reader(kafka)?;
    let mut starts = Vec::new();
    let mut ends = BTreeMap::new();
    for partition in records::partitions(&consumer, &args.topic)? {
        let (low, high) = records::watermarks(&consumer, &args.topic, partition)?;
        let high = args.sample.map_or(high, |n| high.min(low.saturating_add(n as i64)));
        if low < high {
            starts.push((partition, low));
            ends.insert(partition, high);
        }
    }
    let total: i64 = starts.iter().map(|(p, low)| ends[p] - low).sum();
    let mut groups: BTreeMap<String, WriterGroup> = BTreeMap::new();
    if !starts.is_empty() {
        let bar = records::progress(Some(total as u64), &format!("scanning {}", args.topic));
        scan(&consumer, &codec, &args.topic, &starts, &mut ends, &mut groups, &bar).await?;
        bar.finish_and_clear();
    }
    let mut groups: Vec<WriterGroup> = groups.into_values().collect();
    for group in &mut groups {
        group.readers = verdicts(&args.topic, group);
    }
    Ok(SchemaReport { topic: args.topic.clone(), scanned: total as u64, groups })
}

async fn scan(
    consumer: &StreamConsumer,
    codec: &Codec,
    topic: &str,
    starts: &[(i32, i64)],
    ends: &mut BTreeMap<i32, i64>,
    groups: &mut BTreeMap<String, WriterGroup>,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    records::assign(consumer, topic, starts)?;
    while let Some(message) = records::next_below_end(consumer, topic, ends).await? {
        let partition = message.partition();
        bar.inc(1);
        let payload = message.payload().unwrap_or_default();
        let at = At {
            partition,
            offset: message.offset(),
            time: records::timestamp_ms(&message).and_then(records::format_millis),
        };
        let decoded = codec.decode(payload).await;
        let writer = writer_of(payload);
        let group = groups.entry(writer.clone()).or_insert_with(|| WriterGroup {
            writer,
            event: None,
            records: 0,
            first: at.clone(),
            last: at.clone(),
            readable: 0,
            problems: BTreeMap::new(),
            readers: BTreeMap::new(),
        });
        group.records += 1;
        if (at.time.as_deref(), at.offset) < (group.first.time.as_deref(), group.first.offset) {
            group.first = at.clone();
        }
        if (at.time.as_deref(), at.offset) >= (group.last.time.as_deref(), group.last.offset) {
            group.last = at;
        }
        match decoded {
            Ok(event) => {
                group.readable += 1;
                group.event.get_or_insert_with(|| event.kind().avro_name().to_owned());
            }
            Err(DecodeError::RegistryUnavailable(e)) => {
                anyhow::bail!("the Schema Registry is unavailable; nothing can be said of {topic}: {e}")
            }
            Err(error) => *group.problems.entry(error.to_string()).or_default() += 1,
        }
    }
    Ok(())
}

/// The writer schema a record names, from its framing alone.
fn writer_of(payload: &[u8]) -> String {
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    match payload {
        [] => "empty value".to_owned(),
        [0xC3, 0x01, fp @ ..] if fp.len() >= 8 => format!("fingerprint:{}", hex(&fp[..8])),
        [0x00, id @ ..] if id.len() >= 4 => format!("registry-id:{}", u32::from_be_bytes([id[0], id[1], id[2], id[3]])),
        [0xC3, 0x01, ..] | [0x00, ..] => "truncated header".to_owned(),
        other => format!("unknown framing {}", hex(&other[..other.len().min(2)])),
    }
}

/// Each consumer that reads the topic (by the event the group holds, else by the topic's
/// name), with `ok` or why it cannot read the group's records.
fn verdicts(topic: &str, group: &WriterGroup) -> BTreeMap<String, String> {
    let kind = group.event.as_deref().and_then(EventKind::from_avro_name);
    let reads = |spec: &orderflow_registry::Spec| match kind {
        Some(kind) => spec.topics.contains(&kind.topic()),
        None => spec.topics.iter().any(|t| topic == *t || topic.ends_with(&format!(".{t}"))),
    };
    let mut readers: Vec<&orderflow_registry::Spec> =
        orderflow_registry::CONSUMERS.iter().copied().filter(|s| reads(s)).collect();
    if readers.is_empty() {
        // A topic no consumer reads by default: every consumer is a potential reader.
        readers = orderflow_registry::CONSUMERS.to_vec();
    }
    let verdict = if group.ok() {
        "ok".to_owned()
    } else {
        let (first, _) = group.problems.iter().max_by_key(|(_, n)| **n).expect("a failing group has a problem");
        format!("FAILS on {} of {} records: {first}", group.records - group.readable, group.records)
    };
    readers.into_iter().map(|spec| (spec.name.to_owned(), verdict.clone())).collect()
}

/// The report as text.
pub fn render(report: &SchemaReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "{}: {} record(s) in {} writer schema(s)", report.topic, report.scanned, report.groups.len());
    for group in &report.groups {
        let _ = writeln!(
            out,
            "\n{}  {}  {} record(s)",
            group.writer,
            group.event.as_deref().unwrap_or("(event unknown)"),
            group.records
        );
        for (what, at) in [("first", &group.first), ("last", &group.last)] {
            let _ = writeln!(
                out,
                "  {what}: partition {} offset {} at {}",
                at.partition,
                at.offset,
                at.time.as_deref().unwrap_or("-")
            );
        }
        for (reader, verdict) in &group.readers {
            let _ = writeln!(out, "  {reader:<22} {verdict}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_of_a_record_comes_from_its_framing() {
        assert_eq!(writer_of(&[0xC3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 9]), "fingerprint:0102030405060708");
        assert_eq!(writer_of(&[0, 0, 0, 1, 44, 7]), "registry-id:300");
        assert_eq!(writer_of(&[]), "empty value");
        assert_eq!(writer_of(&[0xC3, 0x01, 1]), "truncated header");
        assert_eq!(writer_of(b"{\"json\": true}"), "unknown framing 7b22");
    }
}
