//! Events for tests: realistic orders and stock changes, and publishing them (or raw bytes)
//! to a topic the way the producers do (single-object Avro, CloudEvents headers, keyed by
//! the aggregate id).

use std::time::Duration;

use orderflow_events::{CeHeaders, Codec, Event, InventoryChangeRequest, OrderRequest};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use uuid::Uuid;

use crate::kafka_args;

/// The `POST /v1/orders` body of an order with the given `(sku, quantity)` lines at 250
/// minor units each, in EUR (what a checkout service sends the ingress).
pub fn order_request(order_id: &str, lines: &[(&str, u32)]) -> serde_json::Value {
    let total: u64 = lines.iter().map(|(_, q)| u64::from(*q) * 250).sum();
    serde_json::json!({
        "order_id": order_id,
        "customer": {"id": "c-1", "email": "ada@example.com", "name": "Ada Lovelace"},
        "currency": "EUR",
        "lines": lines.iter().map(|(sku, q)| serde_json::json!({"sku": sku, "quantity": q, "unit_price_minor": 250})).collect::<Vec<_>>(),
        "total_minor": total,
        "shipping_address": {"line1": "1 Main St", "city": "Zurich", "postal_code": "8000", "country": "CH"},
        "channel": "web"
    })
}

/// An order with the given `(sku, quantity)` lines at 250 minor units each, in EUR.
pub fn order(order_id: &str, lines: &[(&str, u32)]) -> Event {
    let request: OrderRequest =
        serde_json::from_value(order_request(order_id, lines)).expect("test order request is well-formed");
    let event = request.into_event(Uuid::new_v4(), chrono::Utc::now()).expect("test order is valid");
    Event::OrderPlaced(event)
}

/// A stock change of `delta` for `sku` in warehouse `w1`.
pub fn stock_change(sku: &str, delta: i64, reason: &str, order_id: Option<&str>) -> Event {
    let request: InventoryChangeRequest = serde_json::from_value(serde_json::json!({
        "sku": sku, "warehouse": "w1", "delta": delta, "reason": reason, "order_id": order_id,
    }))
    .expect("test change request is well-formed");
    let event = request.into_event_at("changes[0]", Uuid::new_v4(), chrono::Utc::now()).expect("test change is valid");
    Event::InventoryChanged(event)
}

/// A producer with the project's settings.
pub fn producer() -> FutureProducer {
    kafka_args().producer_config().create().expect("producer")
}

/// Publish `events` to `topic` (all in flight at once) and return each one's
/// (partition, offset), in the order given.
pub async fn publish(producer: &FutureProducer, topic: &str, events: &[Event]) -> Vec<(i32, i64)> {
    let codec = Codec::new();
    let encoded: Vec<(Vec<u8>, OwnedHeaders, String)> = futures_encode(&codec, events).await;
    let sends = encoded.iter().map(|(value, headers, key)| {
        producer.send(
            FutureRecord::to(topic).key(key.as_str()).payload(value.as_slice()).headers(headers.clone()),
            Duration::from_secs(30),
        )
    });
    futures::future::join_all(sends)
        .await
        .into_iter()
        .map(|r| r.map(|d| (d.partition, d.offset)).map_err(|(e, _)| e).expect("broker acknowledged"))
        .collect()
}

async fn futures_encode(codec: &Codec, events: &[Event]) -> Vec<(Vec<u8>, OwnedHeaders, String)> {
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        let value = codec.encode(event).await.expect("test event encodes");
        let mut headers = OwnedHeaders::new();
        for (key, value) in CeHeaders::for_event(event, "orderflow-testkit", None).to_pairs() {
            headers = headers.insert(Header { key, value: Some(&value) });
        }
        out.push((value, headers, event.key().to_owned()));
    }
    out
}

/// Publish raw bytes (garbage, truncated records...) with `key` to `topic`.
pub async fn publish_raw(producer: &FutureProducer, topic: &str, key: &str, value: &[u8]) -> (i32, i64) {
    let delivery = producer
        .send(FutureRecord::to(topic).key(key).payload(value), Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .expect("broker acknowledged");
    (delivery.partition, delivery.offset)
}

/// A record's headers as text, by name (a repeated name keeps its last value).
pub fn header_pairs<M: rdkafka::Message>(message: &M) -> std::collections::BTreeMap<String, String> {
    use rdkafka::message::Headers;
    message
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// One record read back from a topic by [`read_distinct`].
#[derive(Debug, Clone)]
pub struct ReadRecord {
    pub event: Event,
    pub partition: i32,
    pub offset: i64,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl ReadRecord {
    /// The value of header `key`, as text.
    pub fn header(&self, key: &str) -> Option<String> {
        self.headers.iter().find(|(k, _)| k == key).map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

fn partition_count(consumer: &rdkafka::consumer::BaseConsumer, topic: &str) -> i32 {
    use rdkafka::consumer::Consumer;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("topic metadata");
    metadata.topics().first().map_or(0, |t| t.partitions().len() as i32)
}

/// Read `topic` from the beginning of every partition until `distinct` different event ids
/// were seen (copies of an id are returned too), decoding each value; panics after `timeout`.
pub async fn read_distinct(topic: &str, distinct: usize, timeout: Duration) -> Vec<ReadRecord> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let consumer: BaseConsumer =
        kafka_args().consumer_config(&crate::fresh_group("testkit-read")).create().expect("consumer");
    let mut assignment = rdkafka::TopicPartitionList::new();
    for p in 0..partition_count(&consumer, topic) {
        assignment.add_partition_offset(topic, p, rdkafka::Offset::Beginning).expect("partition");
    }
    consumer.assign(&assignment).expect("assign");
    let codec = Codec::new();
    let (mut records, mut ids) = (Vec::new(), std::collections::HashSet::new());
    let deadline = std::time::Instant::now() + timeout;
    while ids.len() < distinct {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {distinct} events on {topic} after {timeout:?}",
            ids.len()
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
        let message = message.expect("consumer error");
        let event = codec.decode(message.payload().unwrap_or_default()).await.expect("record decodes");
        let headers = message
            .headers()
            .map(|h| h.iter().map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec())).collect())
            .unwrap_or_default();
        ids.insert(event.event_id());
        records.push(ReadRecord { event, partition: message.partition(), offset: message.offset(), headers });
    }
    records
}

/// Sum of the high watermarks of `topic`'s partitions: 0 means nothing was ever published.
pub fn high_watermark_sum(topic: &str) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer =
        kafka_args().consumer_config(&crate::fresh_group("testkit-watermarks")).create().expect("consumer");
    (0..partition_count(&consumer, topic))
        .map(|p| consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).expect("watermarks").1)
        .sum()
}
