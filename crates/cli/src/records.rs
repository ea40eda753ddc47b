//! Reading records for the tools (`tail`, `lag`, `offsets`, `dlq`): a client that reads
//! explicit partitions with `assign()` (it never joins a consumer group), watermarks, one
//! record at an offset, the offset of a time, and a record as a JSON object.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use orderflow_events::Codec;
use orderflow_kafka::KafkaArgs;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::{Message, Offset, TopicPartitionList};

/// How long a single broker request (metadata, watermarks) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A client for explicitly assigned partitions. It has a group id only because librdkafka
/// wants one for some requests; it never subscribes, joins or commits.
pub fn reader(kafka: &KafkaArgs) -> anyhow::Result<StreamConsumer> {
    let mut config = kafka.client_config();
    config
        .set("group.id", "orderflow-cli-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("log_level", "3");
    config.create().context("Failed to create a Kafka client (check the --kafka-option values)")
}

/// The partitions of `topic`, sorted; an error naming the topic when the broker does not know it.
pub fn partitions(consumer: &StreamConsumer, topic: &str) -> anyhow::Result<Vec<i32>> {
    let metadata = consumer
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .with_context(|| format!("Failed to fetch metadata of topic {topic}"))?;
    let Some(meta) = metadata.topics().iter().find(|t| t.name() == topic) else {
        bail!("topic {topic} does not exist");
    };
    if meta.error().is_some() || meta.partitions().is_empty() {
        bail!("topic {topic} does not exist (or has no partitions)");
    }
    let mut partitions: Vec<i32> = meta.partitions().iter().map(|p| p.id()).collect();
    partitions.sort_unstable();
    Ok(partitions)
}

/// `(low, high)` watermarks: the first offset still on the partition and the next offset
/// to be written.
pub fn watermarks(consumer: &StreamConsumer, topic: &str, partition: i32) -> anyhow::Result<(i64, i64)> {
    consumer
        .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
        .with_context(|| format!("Failed to fetch the watermarks of {topic}[{partition}]"))
}

/// Assign exactly these `(partition, start offset)` pairs of `topic`.
pub fn assign(consumer: &StreamConsumer, topic: &str, starts: &[(i32, i64)]) -> anyhow::Result<()> {
    let mut tpl = TopicPartitionList::new();
    for &(partition, offset) in starts {
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
            .with_context(|| format!("bad start offset {offset} for {topic}[{partition}]"))?;
    }
    consumer.assign(&tpl).with_context(|| format!("Failed to assign partitions of {topic}"))
}

/// The record at `offset` of `topic[partition]`, or `None` when the partition has nothing
/// at or after it within `timeout`. (When the offset was compacted away, the next record.)
pub async fn read_one(
    consumer: &StreamConsumer,
    topic: &str,
    partition: i32,
    offset: i64,
    timeout: Duration,
) -> anyhow::Result<Option<OwnedMessage>> {
    assign(consumer, topic, &[(partition, offset)])?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let message = match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Err(_) => return Ok(None),
            Ok(message) => message.with_context(|| format!("Failed to read {topic}[{partition}]@{offset}"))?,
        };
        if message.topic() == topic && message.partition() == partition && message.offset() >= offset {
            return Ok(Some(message.detach()));
        }
    }
}

/// The record's broker timestamp (create or log-append time), if it has one.
pub fn timestamp_ms(message: &impl Message) -> Option<i64> {
    message.timestamp().to_millis()
}

pub fn format_millis(millis: i64) -> Option<String> {
    Utc.timestamp_millis_opt(millis).single().map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// The first offset of `topic[partition]` whose record has a timestamp at or after `since`
/// (`high` when there is none).
///
/// Asks the broker first (ListOffsets by timestamp, `offsets_for_times`) and then checks the
/// answer, because not every Kafka-protocol broker answers it correctly: the record before the answer
/// must be older than `since`, else the search restarts from `low`. From the start point it
/// scans forward to the first record at or after `since`, so the result is right either way;
/// only the time it takes depends on the broker.
pub async fn offset_for_time(
    consumer: &StreamConsumer,
    topic: &str,
    partition: i32,
    since: DateTime<Utc>,
    (low, high): (i64, i64),
) -> anyhow::Result<i64> {
    if low >= high {
        return Ok(high);
    }
    let since_ms = since.timestamp_millis();
    let mut start = broker_offset_for_time(consumer, topic, partition, since_ms).unwrap_or(low).clamp(low, high);
    if start > low {
        let before = read_one(consumer, topic, partition, start - 1, REQUEST_TIMEOUT).await?;
        if before.as_ref().and_then(timestamp_ms).is_none_or(|t| t >= since_ms) {
            tracing::debug!(
                topic,
                partition,
                start,
                "the broker's offset for the time was wrong; scanning from the start"
            );
            start = low;
        }
    }
    assign(consumer, topic, &[(partition, start)])?;
    let mut next = start;
    while next < high {
        let message = tokio::time::timeout(REQUEST_TIMEOUT, consumer.recv())
            .await
            .with_context(|| format!("timed out reading {topic}[{partition}]@{next}"))?
            .with_context(|| format!("Failed to read {topic}[{partition}]@{next}"))?;
        if message.topic() != topic || message.partition() != partition || message.offset() < next {
            continue;
        }
        if timestamp_ms(&message).is_some_and(|t| t >= since_ms) {
            return Ok(message.offset());
        }
        next = message.offset() + 1;
    }
    Ok(high)
}

fn broker_offset_for_time(consumer: &StreamConsumer, topic: &str, partition: i32, since_ms: i64) -> Option<i64> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(since_ms)).ok()?;
    let answer = consumer.offsets_for_times(tpl, REQUEST_TIMEOUT).ok()?;
    let element = answer.find_partition(topic, partition)?;
    match element.offset() {
        Offset::Offset(offset) if element.error().is_ok() => Some(offset),
        _ => None,
    }
}

/// Parse an RFC 3339 time given on the command line.
pub fn parse_time(value: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("`{value}` is not an RFC 3339 time like 2026-11-22T13:00:00Z: {e}"))
}

/// The record's headers as a map of UTF-8 (lossy) strings; a repeated name keeps its last value.
pub fn headers_map(message: &impl Message) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    if let Some(headers) = message.headers() {
        for header in headers.iter() {
            let value = header.value.map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
            map.insert(header.key.to_owned(), value);
        }
    }
    map
}

pub fn key_string(message: &impl Message) -> Option<String> {
    message.key().map(|k| String::from_utf8_lossy(k).into_owned())
}

/// A record as one JSON object: where it is, its key, headers, timestamp and decoded value;
/// an `error` field instead of `value` when the value does not decode.
pub async fn to_json(codec: &Codec, message: &impl Message) -> serde_json::Value {
    let mut object = serde_json::json!({
        "topic": message.topic(),
        "partition": message.partition(),
        "offset": message.offset(),
        "timestamp": timestamp_ms(message).and_then(format_millis),
        "key": key_string(message),
        "headers": headers_map(message),
    });
    let payload = message.payload().unwrap_or_default();
    match codec.decode_json(payload).await {
        Ok(value) => object["value"] = value,
        Err(error) => {
            object["error"] = serde_json::Value::String(error.to_string());
            object["value_bytes"] = serde_json::Value::from(payload.len());
        }
    }
    object
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress(total: Option<u64>, what: &str) -> indicatif::ProgressBar {
    let bar = match total {
        Some(total) => indicatif::ProgressBar::new(total),
        None => indicatif::ProgressBar::new_spinner(),
    };
    let template = if total.is_some() {
        "{msg} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})"
    } else {
        "{spinner} {msg} {pos} ({per_sec})"
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

/// Every record of `topic` up to the end it has now, oldest first per partition; refuses
/// (naming the topic) when that is more than `max_records`.
pub async fn read_all(consumer: &StreamConsumer, topic: &str, max_records: u64) -> anyhow::Result<Vec<OwnedMessage>> {
    let mut starts = Vec::new();
    let mut ends = BTreeMap::new();
    for partition in partitions(consumer, topic)? {
        let (low, high) = watermarks(consumer, topic, partition)?;
        if low < high {
            starts.push((partition, low));
            ends.insert(partition, high);
        }
    }
    let total: i64 = starts.iter().map(|(p, low)| ends[p] - low).sum();
    anyhow::ensure!(
        total as u64 <= max_records,
        "{topic} holds {total} records, more than the limit of {max_records}; raise --max-records"
    );
    let mut out = Vec::with_capacity(total as usize);
    if starts.is_empty() {
        return Ok(out);
    }
    let bar = progress(Some(total as u64), topic);
    assign(consumer, topic, &starts)?;
    while let Some(message) = next_below_end(consumer, topic, &mut ends).await? {
        out.push(message.detach());
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(out)
}

/// The next record of `topic` (assigned from `ends`' partitions) below its partition's end in
/// `ends`; a partition leaves `ends` once its last record came. `None` once all are done.
pub async fn next_below_end<'a>(
    consumer: &'a StreamConsumer,
    topic: &str,
    ends: &mut BTreeMap<i32, i64>,
) -> anyhow::Result<Option<rdkafka::message::BorrowedMessage<'a>>> {
    while !ends.is_empty() {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .with_context(|| format!("no record came from {topic} partitions {:?} within 30s", ends.keys()))?
            .with_context(|| format!("Failed to read {topic}"))?;
        let Some(&end) = ends.get(&message.partition()) else { continue };
        if message.offset() + 1 >= end {
            ends.remove(&message.partition());
        }
        if message.offset() < end {
            return Ok(Some(message));
        }
    }
    Ok(None)
}
