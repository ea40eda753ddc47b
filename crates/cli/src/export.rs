//! `orderflow export <topic>`: a range of a topic (all partitions; offsets or times) to a
//! JSON Lines, CSV or Avro object container file, resumably.
//!
//! - JSON Lines: one object per record, the shape of `orderflow tail` (undecodable records
//!   keep an `error` field); the JSONL publisher reads the `value`s back.
//! - CSV: flattened, one row per order line (orders) or per change (inventory), with the
//!   record's topic, partition, offset and timestamp first.
//! - Avro: an object container file with the shipped schema of the topic's event type
//!   (readable by DuckDB, pandas/fastavro, Spark); one event type per file.
//!
//! Resuming: beside the output a state file (`<output>.state.json`) holds the range and each
//! partition's next offset; it is rewritten after every flushed chunk, together with the
//! output's length at that point. A re-run with the same output cuts the file back to that
//! length and continues where the last chunk ended, so an interrupted export neither loses
//! nor repeats records. CSV and Avro skip undecodable records (counted in the summary).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use orderflow_events::schema::shipped;
use orderflow_events::{Codec, Event, EventKind};
use orderflow_kafka::KafkaArgs;
use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use serde::{Deserialize, Serialize};

use crate::records::{self, parse_time};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Jsonl,
    Csv,
    Avro,
    /// A directory of Parquet part files with typed columns (see `parquet_out`).
    Parquet,
}

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  orderflow export orders.v1 --format jsonl --output orders.jsonl
  orderflow export orders.v1 --format avro --output orders.avro --since 2026-11-01T00:00:00Z --until 2026-11-02T00:00:00Z
  orderflow export inventory.v1 --format csv --output changes.csv --from-offset 1000
  orderflow export orders.v1 --format parquet --output orders/     # a directory of part files
  duckdb -c \"SELECT currency, sum(total_minor) FROM 'orders/*.parquet' GROUP BY 1\"

Re-running the same command after an interruption continues where it stopped (the state
is kept in <output>.state.json; delete both files to start over).")]
pub struct ExportArgs {
    /// Topic to export.
    pub topic: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    pub format: Format,
    /// Output file, or directory for Parquet (its state file is `<output>.state.json`).
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// Start at this offset on every partition (default: the first one still there).
    #[arg(long, conflicts_with = "since")]
    pub from_offset: Option<i64>,
    /// Start at the first record at or after this RFC 3339 time.
    #[arg(long, value_parser = parse_time)]
    pub since: Option<DateTime<Utc>>,
    /// Stop before this offset on every partition (default: the end at start).
    #[arg(long, conflicts_with = "until")]
    pub to_offset: Option<i64>,
    /// Stop before the first record at or after this RFC 3339 time.
    #[arg(long, value_parser = parse_time)]
    pub until: Option<DateTime<Utc>>,
    /// Records per flushed chunk (the state file is written after each).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub chunk: u64,
    /// Schema Registry for the Confluent wire format.
    #[arg(long, env = "SCHEMA_REGISTRY_URL")]
    pub schema_registry_url: Option<String>,
}

impl ExportArgs {
    pub fn new(topic: impl Into<String>, format: Format, output: impl Into<PathBuf>) -> Self {
        ExportArgs {
            topic: topic.into(),
            format,
            output: output.into(),
            from_offset: None,
            since: None,
            to_offset: None,
            until: None,
            chunk: 5000,
            schema_registry_url: None,
        }
    }
}

/// The state file: the range, progress, and what is needed to append to the output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportState {
    pub topic: String,
    pub format: Format,
    /// Per partition: the next offset to export and the end (excluded).
    pub next: BTreeMap<i32, i64>,
    pub ends: BTreeMap<i32, i64>,
    /// Length of the output when the state was written (Parquet: part files written).
    pub bytes: u64,
    pub written: u64,
    pub skipped: u64,
    /// Avro: the event type of the file and the container's sync marker (hex).
    pub kind: Option<String>,
    pub avro_marker: Option<String>,
}

impl ExportState {
    pub fn done(&self) -> bool {
        self.next.iter().all(|(p, next)| *next >= self.ends.get(p).copied().unwrap_or(0))
    }
}

pub fn state_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".state.json");
    PathBuf::from(name)
}

/// What an export (or its continuation) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    /// Records written by this run / in the whole file.
    pub written_now: u64,
    pub written_total: u64,
    /// Records not written (undecodable, or another event type than the file's), in total.
    pub skipped_total: u64,
    pub resumed: bool,
}

pub async fn run(kafka: &KafkaArgs, args: ExportArgs) -> anyhow::Result<()> {
    let summary = export(kafka, &args, std::future::pending()).await?;
    eprintln!(
        "export {} → {}: {} records written{} ({} in the file, {} skipped)",
        args.topic,
        args.output.display(),
        summary.written_now,
        if summary.resumed { " after resuming" } else { "" },
        summary.written_total,
        summary.skipped_total
    );
    Ok(())
}

/// Export, or continue an interrupted export of the same output. `stop` ends the run early
/// after the current record (the state of the last flushed chunk stays valid).
pub async fn export(
    kafka: &KafkaArgs,
    args: &ExportArgs,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<ExportSummary> {
    let topic = args.topic.as_str();
    let codec = Codec::from_config(args.schema_registry_url.as_deref()).context("Invalid SCHEMA_REGISTRY_URL")?;
    let consumer = records::reader(kafka)?;
    let state_file = state_path(&args.output);
    let (mut state, resumed) = match read_state(&state_file)? {
        Some(state) => {
            anyhow::ensure!(
                state.topic == topic && state.format == args.format,
                "{} belongs to an export of {} as {:?}; choose another output",
                state_file.display(),
                state.topic,
                state.format
            );
            (state, true)
        }
        None => {
            anyhow::ensure!(
                !args.output.exists(),
                "{} exists and has no state file {}; remove it or choose another output",
                args.output.display(),
                state_file.display()
            );
            (plan(&consumer, args).await?, false)
        }
    };
    if state.done() {
        return Ok(ExportSummary {
            written_now: 0,
            written_total: state.written,
            skipped_total: state.skipped,
            resumed,
        });
    }

    let mut sink = if args.format == Format::Parquet {
        std::fs::create_dir_all(&args.output)
            .with_context(|| format!("Failed to create the directory {}", args.output.display()))?;
        // Parts written after the state was last saved hold records that are exported again.
        crate::parquet_out::remove_parts_from(&args.output, state.bytes)?;
        let kind = state.kind.as_deref().map(parse_kind).transpose()?;
        Sink::Parquet(kind, Vec::new())
    } else {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&args.output)
            .with_context(|| format!("Failed to open {}", args.output.display()))?;
        let length = file.metadata()?.len();
        anyhow::ensure!(
            length >= state.bytes,
            "{} is shorter than its state file says ({length} < {} bytes); it cannot be continued",
            args.output.display(),
            state.bytes
        );
        file.set_len(state.bytes)
            .with_context(|| format!("Failed to cut {} back to its last complete chunk", args.output.display()))?;
        Sink::open(args.format, file, &state)?
    };

    let starts: Vec<(i32, i64)> =
        state.next.iter().filter(|(p, n)| **n < state.ends[*p]).map(|(p, n)| (*p, *n)).collect();
    let remaining: i64 = starts.iter().map(|(p, n)| state.ends[p] - n).sum();
    let bar = records::progress(Some(remaining as u64), topic);
    records::assign(&consumer, topic, &starts)?;
    let mut written_now = 0;
    let mut in_chunk = 0;
    tokio::pin!(stop);
    while !state.done() {
        let message = tokio::select! {
            biased;
            _ = &mut stop => break,
            received = tokio::time::timeout(std::time::Duration::from_secs(30), consumer.recv()) => received
                .with_context(|| format!("no record came from {topic} within 30s (exporting up to {:?})", state.ends))?
                .with_context(|| format!("Failed to read {topic}"))?,
        };
        let partition = message.partition();
        let (Some(next), Some(&end)) = (state.next.get(&partition).copied(), state.ends.get(&partition)) else {
            continue;
        };
        if message.offset() < next || next >= end {
            continue;
        }
        if message.offset() < end {
            let message = message.detach();
            if sink.write(&codec, &message, &mut state).await? {
                state.written += 1;
                written_now += 1;
            } else {
                state.skipped += 1;
            }
            bar.inc(1);
            in_chunk += 1;
        }
        state.next.insert(partition, (message.offset() + 1).min(end));
        if in_chunk >= args.chunk {
            sink.flush(&args.output, &state_file, &mut state)?;
            in_chunk = 0;
        }
    }
    sink.flush(&args.output, &state_file, &mut state)?;
    bar.finish_and_clear();
    Ok(ExportSummary { written_now, written_total: state.written, skipped_total: state.skipped, resumed })
}

/// The range of a new export.
async fn plan(consumer: &rdkafka::consumer::StreamConsumer, args: &ExportArgs) -> anyhow::Result<ExportState> {
    let topic = args.topic.as_str();
    let mut next = BTreeMap::new();
    let mut ends = BTreeMap::new();
    for partition in records::partitions(consumer, topic)? {
        let (low, high) = records::watermarks(consumer, topic, partition)?;
        let start = match (args.from_offset, args.since) {
            (Some(offset), _) => offset.clamp(low, high),
            (None, Some(since)) => records::offset_for_time(consumer, topic, partition, since, (low, high)).await?,
            (None, None) => low,
        };
        let end = match (args.to_offset, args.until) {
            (Some(offset), _) => offset.clamp(low, high),
            (None, Some(until)) => records::offset_for_time(consumer, topic, partition, until, (low, high)).await?,
            (None, None) => high,
        };
        next.insert(partition, start);
        ends.insert(partition, end.max(start));
    }
    Ok(ExportState {
        topic: topic.to_owned(),
        format: args.format,
        next,
        ends,
        bytes: 0,
        written: 0,
        skipped: 0,
        kind: None,
        avro_marker: None,
    })
}

fn read_state(path: &Path) -> anyhow::Result<Option<ExportState>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("{} is not an export state file", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("Failed to read {}", path.display())),
    }
}

/// Write the state next to the output atomically (temporary file, then rename).
fn write_state(path: &Path, state: &ExportState) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, serde_json::to_vec_pretty(state)?)
        .with_context(|| format!("Failed to write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("Failed to write {}", path.display()))
}

enum Sink {
    Jsonl(BufWriter<File>),
    Csv(csv::Writer<File>, Option<EventKind>),
    Avro(Option<apache_avro::Writer<'static, File>>, Option<File>, [u8; 16]),
    /// The directory's event type, and the rows of the chunk not yet written.
    Parquet(Option<EventKind>, Vec<crate::parquet_out::Row>),
}

const ORDER_COLUMNS: &[&str] = &[
    "topic",
    "partition",
    "offset",
    "timestamp",
    "event_id",
    "order_id",
    "placed_at",
    "currency",
    "customer_id",
    "customer_email",
    "channel",
    "total_minor",
    "line",
    "sku",
    "quantity",
    "unit_price_minor",
];
const INVENTORY_COLUMNS: &[&str] = &[
    "topic",
    "partition",
    "offset",
    "timestamp",
    "event_id",
    "sku",
    "warehouse",
    "delta",
    "reason",
    "order_id",
    "occurred_at",
];

fn kind_name(kind: EventKind) -> &'static str {
    kind.ce_type()
}

/// The allocator's decisions, a row per line; a backordered line has no warehouse, and its
/// `quantity` is the quantity missing.
const DECISION_COLUMNS: &[&str] = &[
    "topic",
    "partition",
    "offset",
    "timestamp",
    "event_id",
    "order_id",
    "caused_by",
    "decided_at",
    "line",
    "sku",
    "warehouse",
    "quantity",
];

fn columns(kind: EventKind) -> &'static [&'static str] {
    match kind {
        EventKind::OrderPlaced => ORDER_COLUMNS,
        EventKind::InventoryChanged => INVENTORY_COLUMNS,
        EventKind::OrderAllocated | EventKind::OrderBackordered | EventKind::BackorderAllocated => DECISION_COLUMNS,
    }
}

fn kind_of(event: &Event) -> EventKind {
    event.kind()
}

fn parse_kind(name: &str) -> anyhow::Result<EventKind> {
    EventKind::ALL
        .into_iter()
        .find(|k| kind_name(*k) == name)
        .with_context(|| format!("unknown event type {name} in the state file"))
}

impl Sink {
    fn open(format: Format, file: File, state: &ExportState) -> anyhow::Result<Sink> {
        let kind = state.kind.as_deref().map(parse_kind).transpose()?;
        Ok(match format {
            Format::Jsonl => Sink::Jsonl(BufWriter::new(file)),
            Format::Parquet => bail!("a Parquet export writes a directory, not a file"),
            Format::Csv => Sink::Csv(csv::WriterBuilder::new().has_headers(false).from_writer(file), kind),
            Format::Avro => {
                let marker = match &state.avro_marker {
                    Some(hex) => decode_marker(hex)?,
                    None => *uuid::Uuid::new_v4().as_bytes(),
                };
                match kind {
                    // Continue the container: same schema and sync marker, no new header.
                    Some(kind) => Sink::Avro(
                        Some(apache_avro::Writer::append_to(&shipped().current(kind).schema, file, marker)),
                        None,
                        marker,
                    ),
                    None => Sink::Avro(None, Some(file), marker),
                }
            }
        })
    }

    /// Write one record; `false` when it was skipped.
    async fn write(&mut self, codec: &Codec, message: &OwnedMessage, state: &mut ExportState) -> anyhow::Result<bool> {
        if let Sink::Jsonl(out) = self {
            let json = records::to_json(codec, message).await;
            serde_json::to_writer(&mut *out, &json)?;
            out.write_all(b"\n")?;
            return Ok(true);
        }
        let Ok(event) = codec.decode(message.payload().unwrap_or_default()).await else {
            return Ok(false);
        };
        let kind = kind_of(&event);
        match self {
            Sink::Jsonl(_) => unreachable!("handled above"),
            Sink::Parquet(file_kind, rows) => {
                if !of_the_files_kind(file_kind, kind, state) {
                    return Ok(false);
                }
                rows.push(crate::parquet_out::Row {
                    topic: message.topic().to_owned(),
                    partition: message.partition(),
                    offset: message.offset(),
                    timestamp_ms: records::timestamp_ms(message),
                    event,
                });
                Ok(true)
            }
            Sink::Csv(out, file_kind) => {
                if !of_the_files_kind(file_kind, kind, state) {
                    return Ok(false);
                }
                if state.bytes == 0 && state.written == 0 {
                    out.write_record(columns(kind))?;
                }
                for row in csv_rows(message, &event) {
                    out.write_record(&row)?;
                }
                Ok(true)
            }
            Sink::Avro(writer, file, marker) => {
                if writer.is_none() {
                    let file = file.take().context("the Avro output is gone")?;
                    state.kind = Some(kind_name(kind).to_owned());
                    state.avro_marker = Some(encode_marker(marker));
                    *writer = Some(
                        apache_avro::Writer::builder()
                            .schema(&shipped().current(kind).schema)
                            .writer(file)
                            .marker(*marker)
                            .build(),
                    );
                }
                if state.kind.as_deref() != Some(kind_name(kind)) {
                    return Ok(false);
                }
                let writer = writer.as_mut().context("the Avro writer is gone")?;
                writer
                    .append(orderflow_events::avro_value::to_value(&event))
                    .context("Failed to write an Avro record")?;
                Ok(true)
            }
        }
    }

    /// Flush what was written, then record the state (with the output's length).
    fn flush(&mut self, output: &Path, state_file: &Path, state: &mut ExportState) -> anyhow::Result<()> {
        match self {
            Sink::Jsonl(out) => {
                out.flush()?;
                out.get_ref().sync_data()?;
            }
            Sink::Csv(out, _) => {
                out.flush()?;
                out.get_ref().sync_data()?;
            }
            Sink::Avro(Some(writer), _, _) => {
                writer.flush().context("Failed to write an Avro block")?;
                writer.get_ref().sync_data()?;
            }
            Sink::Avro(None, _, _) => {}
            Sink::Parquet(kind, rows) => {
                if let (Some(kind), false) = (kind, rows.is_empty()) {
                    crate::parquet_out::write_part(output, state.bytes, *kind, rows)?;
                    state.bytes += 1;
                    rows.clear();
                }
                return write_state(state_file, state);
            }
        }
        state.bytes = std::fs::metadata(output).with_context(|| format!("Failed to stat {}", output.display()))?.len();
        write_state(state_file, state)
    }
}

/// Whether an event of `kind` belongs in a file of one event type: the first one written sets
/// the file's type (kept in the state for a resumed export).
fn of_the_files_kind(file_kind: &mut Option<EventKind>, kind: EventKind, state: &mut ExportState) -> bool {
    let file_kind = *file_kind.get_or_insert_with(|| {
        state.kind = Some(kind_name(kind).to_owned());
        kind
    });
    file_kind == kind
}

fn csv_rows(message: &OwnedMessage, event: &Event) -> Vec<Vec<String>> {
    let position = [
        message.topic().to_owned(),
        message.partition().to_string(),
        message.offset().to_string(),
        records::timestamp_ms(message).and_then(records::format_millis).unwrap_or_default(),
    ];
    let json = serde_json::to_value(event).unwrap_or_default();
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    let field = |path: &[&str]| text(path.iter().fold(&json, |v, k| &v[*k]));
    match event {
        Event::OrderPlaced(_) => {
            let head = [
                field(&["event_id"]),
                field(&["order_id"]),
                field(&["placed_at"]),
                field(&["currency"]),
                field(&["customer", "id"]),
                field(&["customer", "email"]),
                field(&["channel"]),
                field(&["total_minor"]),
            ];
            let lines = json["lines"].as_array().cloned().unwrap_or_default();
            lines
                .iter()
                .enumerate()
                .map(|(i, line)| {
                    let mut row: Vec<String> = position.iter().chain(head.iter()).cloned().collect();
                    row.extend([
                        i.to_string(),
                        text(&line["sku"]),
                        text(&line["quantity"]),
                        text(&line["unit_price_minor"]),
                    ]);
                    row
                })
                .collect()
        }
        Event::InventoryChanged(_) => {
            let mut row: Vec<String> = position.to_vec();
            // The columns after the record's position are the event's own fields.
            for name in &INVENTORY_COLUMNS[position.len()..] {
                row.push(field(&[name]));
            }
            vec![row]
        }
        Event::OrderAllocated(_) | Event::OrderBackordered(_) | Event::BackorderAllocated(_) => {
            let head = [field(&["event_id"]), field(&["order_id"]), field(&["caused_by"]), field(&["decided_at"])];
            let lines = json["lines"].as_array().cloned().unwrap_or_default();
            lines
                .iter()
                .enumerate()
                .map(|(i, line)| {
                    let mut row: Vec<String> = position.iter().chain(head.iter()).cloned().collect();
                    let quantity =
                        if line["quantity"].is_null() { &line["quantity_missing"] } else { &line["quantity"] };
                    row.extend([i.to_string(), text(&line["sku"]), text(&line["warehouse"]), text(quantity)]);
                    row
                })
                .collect()
        }
    }
}

fn encode_marker(marker: &[u8; 16]) -> String {
    marker.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_marker(hex: &str) -> anyhow::Result<[u8; 16]> {
    let mut out = [0u8; 16];
    if hex.len() != 32 {
        bail!("bad Avro sync marker `{hex}` in the state file");
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte =
            u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).with_context(|| format!("bad Avro sync marker `{hex}`"))?;
    }
    Ok(out)
}
