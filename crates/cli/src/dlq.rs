//! `orderflow dlq list|show|redrive`: inspect a consumer's dead letters (`<consumer>.dlq`,
//! written by the runtime with the `dlq_*` headers of [`orderflow_runtime::dlq::headers`])
//! and re-publish selected ones to their original topic once the cause is fixed.
//!
//! Redrives are auditable: the re-published record carries `redrive_of` (the dead letter's
//! `partition:offset`), `redriven_by` and `redriven_at`, and an audit record with the same
//! headers and an empty value is appended to the DLQ topic. A dead letter with an audit
//! record is not redriven again unless asked (`--again`). Re-publishing keeps the event id,
//! so a consumer that already applied the event skips it (applied-event ledger).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use orderflow_events::Codec;
use orderflow_kafka::KafkaArgs;
use orderflow_runtime::dlq::headers as dlq;
use rdkafka::Message;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::records;

/// Headers of redriven records and of the audit records in the DLQ topic.
pub mod headers {
    /// `partition:offset` of the dead letter in the DLQ topic.
    pub const REDRIVE_OF: &str = "redrive_of";
    /// Who redrove it (`$USER@host`).
    pub const REDRIVEN_BY: &str = "redriven_by";
    /// When (RFC 3339).
    pub const REDRIVEN_AT: &str = "redriven_at";
    /// Where the redriven record went (`topic[partition]@offset`); audit records only.
    pub const REDRIVEN_TO: &str = "redriven_to";
}

#[derive(Debug, Clone, clap::Args)]
pub struct DlqTopicArgs {
    /// Consumer name; its DLQ topic is `<consumer>.dlq`.
    pub consumer: String,
    /// DLQ topic, when not `<consumer>.dlq`.
    #[arg(long)]
    pub dlq_topic: Option<String>,
    /// Refuse to read more records than this from the DLQ topic.
    #[arg(long, default_value_t = 100_000)]
    pub max_records: u64,
}

impl DlqTopicArgs {
    pub fn topic(&self) -> String {
        self.dlq_topic.clone().unwrap_or_else(|| format!("{}.dlq", self.consumer))
    }
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters: where they came from, error class and message, whether redriven.
    #[command(after_help = "Examples:
  orderflow dlq list fulfillment
  orderflow dlq list fulfillment --json | jq -r 'select(.error_class==\"permanent\") | .offset'")]
    List {
        #[command(flatten)]
        dlq: DlqTopicArgs,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One dead letter: decoded value (or the decode error) and every header.
    #[command(after_help = "Example:
  orderflow dlq show fulfillment --offset 42")]
    Show {
        #[command(flatten)]
        dlq: DlqTopicArgs,
        /// Offset in the DLQ topic.
        #[arg(long)]
        offset: i64,
        /// Partition of the DLQ topic.
        #[arg(long, default_value_t = 0)]
        partition: i32,
    },
    /// Re-publish selected dead letters to their original topic (after fixing the cause).
    #[command(after_help = "Examples:
  orderflow dlq redrive fulfillment --offsets 10..20 --dry-run
  orderflow dlq redrive fulfillment --class permanent
  orderflow dlq redrive fulfillment --key order-1234

Each redriven record keeps its key, value and headers (minus the dlq_* ones) and gains
redrive_of, redriven_by and redriven_at; an audit record is appended to the DLQ topic.
Dead letters already redriven are skipped unless --again.")]
    Redrive {
        #[command(flatten)]
        dlq: DlqTopicArgs,
        /// DLQ offsets: `N`, `A..B` (B excluded) or `A..=B`.
        #[arg(long, value_parser = parse_offsets)]
        offsets: Option<RangeInclusive<i64>>,
        /// Only dead letters of this error class (undecodable, unknown_schema, permanent).
        #[arg(long)]
        class: Option<String>,
        /// Only dead letters with this key.
        #[arg(long)]
        key: Option<String>,
        /// Redrive dead letters that were redriven before, too.
        #[arg(long)]
        again: bool,
        /// Show what would be redriven without publishing.
        #[arg(long)]
        dry_run: bool,
    },
}

fn parse_offsets(value: &str) -> Result<RangeInclusive<i64>, String> {
    let bad = || format!("`{value}` is not N, A..B or A..=B (offsets ≥ 0)");
    let number = |s: &str| s.trim().parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(bad);
    if let Some((a, b)) = value.split_once("..=") {
        Ok(number(a)?..=number(b)?)
    } else if let Some((a, b)) = value.split_once("..") {
        let end = number(b)?;
        if end == 0 {
            return Err(bad());
        }
        Ok(number(a)?..=end - 1)
    } else {
        let n = number(value)?;
        Ok(n..=n)
    }
}

/// A dead letter as `dlq list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetter {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub original_topic: String,
    pub original_partition: Option<i32>,
    pub original_offset: Option<i64>,
    pub error_class: String,
    pub error_message: String,
    pub dead_lettered_at: Option<String>,
    /// Audit entries of redrives of this dead letter (`redriven_to` values).
    pub redriven_to: Vec<String>,
}

/// The DLQ topic read into dead letters (audit records folded into `redriven_to`).
pub async fn dead_letters(
    kafka: &KafkaArgs,
    topic: &str,
    max_records: u64,
) -> anyhow::Result<(Vec<DeadLetter>, Vec<OwnedMessage>)> {
    let reader = records::reader(kafka)?;
    let all = records::read_all(&reader, topic, max_records).await?;
    let mut audits: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut letters = Vec::new();
    let mut messages = Vec::new();
    for message in all {
        let headers = records::headers_map(&message);
        if let Some(of) = headers.get(headers::REDRIVE_OF)
            && !headers.contains_key(dlq::ORIGINAL_TOPIC)
        {
            audits.entry(of.clone()).or_default().push(headers.get(headers::REDRIVEN_TO).cloned().unwrap_or_default());
            continue;
        }
        let Some(original_topic) = headers.get(dlq::ORIGINAL_TOPIC) else {
            tracing::warn!(
                topic,
                partition = message.partition(),
                offset = message.offset(),
                "record without dlq_* headers skipped"
            );
            continue;
        };
        letters.push(DeadLetter {
            partition: message.partition(),
            offset: message.offset(),
            key: records::key_string(&message),
            original_topic: original_topic.clone(),
            original_partition: headers.get(dlq::ORIGINAL_PARTITION).and_then(|p| p.parse().ok()),
            original_offset: headers.get(dlq::ORIGINAL_OFFSET).and_then(|o| o.parse().ok()),
            error_class: headers.get(dlq::ERROR_CLASS).cloned().unwrap_or_default(),
            error_message: headers.get(dlq::ERROR_MESSAGE).cloned().unwrap_or_default(),
            dead_lettered_at: headers.get(dlq::TIME).cloned(),
            redriven_to: Vec::new(),
        });
        messages.push(message);
    }
    for letter in &mut letters {
        if let Some(to) = audits.remove(&format!("{}:{}", letter.partition, letter.offset)) {
            letter.redriven_to = to;
        }
    }
    Ok((letters, messages))
}

/// What `redrive` selects.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub offsets: Option<RangeInclusive<i64>>,
    pub class: Option<String>,
    pub key: Option<String>,
    pub again: bool,
}

impl Selection {
    fn matches(&self, letter: &DeadLetter) -> bool {
        self.offsets.as_ref().is_none_or(|r| r.contains(&letter.offset))
            && self.class.as_ref().is_none_or(|c| c == &letter.error_class)
            && self.key.as_ref().is_none_or(|k| Some(k) == letter.key.as_ref())
            && (self.again || letter.redriven_to.is_empty())
    }
}

/// One redriven dead letter.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Redriven {
    pub dlq_partition: i32,
    pub dlq_offset: i64,
    pub topic: String,
    /// `(partition, offset)` of the re-published record (`None` on a dry run).
    pub to: Option<(i32, i64)>,
}

/// Re-publish the selected dead letters of `dlq_topic` and append an audit record for each.
pub async fn redrive(
    kafka: &KafkaArgs,
    dlq_topic: &str,
    selection: &Selection,
    max_records: u64,
    dry_run: bool,
) -> anyhow::Result<Vec<Redriven>> {
    let (letters, messages) = dead_letters(kafka, dlq_topic, max_records).await?;
    let producer: FutureProducer = kafka.producer_config().create().context("Failed to create the producer")?;
    let by = crate::operator();
    let selected: Vec<(&DeadLetter, &OwnedMessage)> =
        letters.iter().zip(&messages).filter(|(l, _)| selection.matches(l)).collect();
    let bar = records::progress(Some(selected.len() as u64), "redriving");
    let mut out = Vec::new();
    for (letter, message) in selected {
        let of = format!("{}:{}", letter.partition, letter.offset);
        let mut done = Redriven {
            dlq_partition: letter.partition,
            dlq_offset: letter.offset,
            topic: letter.original_topic.clone(),
            to: None,
        };
        if dry_run {
            out.push(done);
            continue;
        }
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let audit_pairs = [
            (headers::REDRIVE_OF, of.as_str()),
            (headers::REDRIVEN_BY, by.as_str()),
            (headers::REDRIVEN_AT, at.as_str()),
        ];
        let mut republished = OwnedHeaders::new();
        for (name, value) in records::headers_map(message) {
            if !name.starts_with("dlq_") && !audit_pairs.iter().any(|(n, _)| *n == name) {
                republished = republished.insert(Header { key: &name, value: Some(value.as_bytes()) });
            }
        }
        for (key, value) in audit_pairs {
            republished = republished.insert(Header { key, value: Some(value.as_bytes()) });
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(&letter.original_topic).headers(republished);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        let delivered = producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(error, _)| error)
            .with_context(|| format!("Failed to redrive {dlq_topic}[{of}] to {}", letter.original_topic))?;
        let to = format!("{}[{}]@{}", letter.original_topic, delivered.partition, delivered.offset);
        let mut audit = OwnedHeaders::new();
        for (key, value) in audit_pairs.into_iter().chain([(headers::REDRIVEN_TO, to.as_str())]) {
            audit = audit.insert(Header { key, value: Some(value.as_bytes()) });
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(dlq_topic).headers(audit);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(error, _)| error)
            .with_context(|| format!("redrove {dlq_topic}[{of}] to {to} but failed to append its audit record"))?;
        done.to = Some((delivered.partition, delivered.offset));
        out.push(done);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(out)
}

pub async fn run(kafka: &KafkaArgs, command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::List { dlq, json } => {
            let topic = dlq.topic();
            let (letters, _) = dead_letters(kafka, &topic, dlq.max_records).await?;
            for l in &letters {
                if json {
                    println!("{}", serde_json::to_string(l)?);
                } else {
                    let from =
                        format!("{}[{}]@{}", l.original_topic, opt(l.original_partition), opt(l.original_offset));
                    let redriven = if l.redriven_to.is_empty() { "-".to_owned() } else { l.redriven_to.join(",") };
                    println!(
                        "{}:{}\t{from}\t{}\t{}\t{}\tredriven:{redriven}",
                        l.partition,
                        l.offset,
                        l.key.as_deref().unwrap_or("-"),
                        l.error_class,
                        l.error_message
                    );
                }
            }
            let classes: BTreeSet<&str> = letters.iter().map(|l| l.error_class.as_str()).collect();
            eprintln!(
                "{topic}: {} dead letters ({} redriven); classes: {classes:?}",
                letters.len(),
                letters.iter().filter(|l| !l.redriven_to.is_empty()).count()
            );
            Ok(())
        }
        DlqCommand::Show { dlq, offset, partition } => {
            let topic = dlq.topic();
            let reader = records::reader(kafka)?;
            records::partitions(&reader, &topic)?;
            let message = records::read_one(&reader, &topic, partition, offset, records::REQUEST_TIMEOUT)
                .await?
                .filter(|m| m.offset() == offset)
                .with_context(|| format!("{topic}[{partition}] has no record at offset {offset}"))?;
            let json = records::to_json(&Codec::new(), &message).await;
            println!("{}", serde_json::to_string_pretty(&json)?);
            Ok(())
        }
        DlqCommand::Redrive { dlq, offsets, class, key, again, dry_run } => {
            let topic = dlq.topic();
            let selection = Selection { offsets, class, key, again };
            let done = redrive(kafka, &topic, &selection, dlq.max_records, dry_run).await?;
            for r in &done {
                match r.to {
                    Some((p, o)) => println!("{}:{}\t-> {}[{p}]@{o}", r.dlq_partition, r.dlq_offset, r.topic),
                    None => println!("{}:{}\t-> {} (dry run)", r.dlq_partition, r.dlq_offset, r.topic),
                }
            }
            let verb = if dry_run { "would redrive" } else { "redrove" };
            eprintln!("{topic}: {verb} {} dead letters", done.len());
            Ok(())
        }
    }
}

fn opt<T: ToString>(value: Option<T>) -> String {
    value.map(|v| v.to_string()).unwrap_or_else(|| "?".into())
}

#[cfg(test)]
mod tests {
    use super::parse_offsets;

    #[test]
    fn offsets_parse_single_exclusive_and_inclusive_ranges() {
        assert_eq!(parse_offsets("7"), Ok(7..=7));
        assert_eq!(parse_offsets("3..6"), Ok(3..=5));
        assert_eq!(parse_offsets("3..=6"), Ok(3..=6));
        assert!(parse_offsets("-1").is_err());
        assert!(parse_offsets("a..b").is_err());
        assert!(parse_offsets("0..0").is_err());
    }
}
