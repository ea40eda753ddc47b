//! Publish orderflow [`Event`]s to Kafka: the one producer path the ingress, the outbox relay
//! and `orderflow publish` share.
//!
//! # Delivery guarantee
//! [`Publisher::publish`] returns `Ok(Ack)` only after the broker acknowledged the record with
//! `acks=all` and the idempotent producer (`enable.idempotence=true`, from
//! [`KafkaArgs::producer_config`]): an acknowledged event is durable on every in-sync replica
//! and librdkafka's own retries never duplicate or reorder it within a partition. The
//! guarantee is **at least once** end to end: a caller that retries after an error (or after a
//! timeout whose ack was lost) may publish an event twice. Both copies carry the same event id
//! (`ce_id`), and consumers skip the second one by id, so a retry is applied once.
//!
//! # Failing fast
//! The producer queue is bounded (`queue.buffering.max.messages` / `max.kbytes`) and every
//! record has a bounded `message.timeout.ms`: with the broker down a publish fails within that
//! timeout ([`PublishError::Timeout`] / [`PublishError::BrokerUnavailable`]) and with the queue
//! full it fails at once ([`PublishError::QueueFull`]). [`PublishError::is_retryable`] tells a
//! caller (HTTP: 503 + `Retry-After`) from an event that can never be encoded.
//!
//! # Must not touch
//! HTTP, databases, request validation (that is `orderflow-events`), consumers.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use orderflow_events::{CeHeaders, Codec, EncodeError, Event, EventKind, TraceParent};
use orderflow_kafka::KafkaArgs;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use uuid::Uuid;

/// Bounds on the producer, so a slow or absent broker sheds load instead of queueing it.
#[derive(Debug, Clone)]
pub struct Limits {
    /// How long librdkafka tries to deliver one record (`message.timeout.ms`).
    pub message_timeout: Duration,
    /// Records the local producer queue holds at most (`queue.buffering.max.messages`).
    pub max_queued_messages: usize,
    /// Kilobytes the local producer queue holds at most (`queue.buffering.max.kbytes`).
    pub max_queued_kbytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { message_timeout: Duration::from_secs(5), max_queued_messages: 100_000, max_queued_kbytes: 256 * 1024 }
    }
}

/// Where the broker put an acknowledged event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub event_id: Uuid,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// Why an event was not published. Callers branch on [`PublishError::is_retryable`].
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The local producer queue is full: the broker is slower than the callers.
    #[error("producer queue is full")]
    QueueFull,
    /// No broker could be reached, or it refused the record for a transient reason.
    #[error("broker unavailable: {0}")]
    BrokerUnavailable(#[source] KafkaError),
    /// The broker did not acknowledge within the message timeout.
    #[error("broker did not acknowledge within {0:?}")]
    Timeout(Duration),
    /// The event could not be encoded (invalid event, or the Schema Registry failed).
    #[error("could not encode the event: {0}")]
    Encode(#[from] EncodeError),
    /// The broker rejected the record for a reason retrying will not fix (e.g. too large,
    /// unknown topic, authorization).
    #[error("broker rejected the record: {0}")]
    Rejected(#[source] KafkaError),
    /// The producer could not be created from the configuration.
    #[error("invalid producer configuration: {0}")]
    Config(#[source] KafkaError),
}

impl PublishError {
    /// True when the same publish may succeed later (HTTP 503 with `Retry-After`).
    pub fn is_retryable(&self) -> bool {
        match self {
            PublishError::QueueFull | PublishError::BrokerUnavailable(_) | PublishError::Timeout(_) => true,
            PublishError::Encode(e) => e.is_transient(),
            PublishError::Rejected(_) | PublishError::Config(_) => false,
        }
    }

    fn from_kafka(error: KafkaError, timeout: Duration) -> PublishError {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::QueueFull) => PublishError::QueueFull,
            Some(RDKafkaErrorCode::MessageTimedOut) | Some(RDKafkaErrorCode::RequestTimedOut) => {
                PublishError::Timeout(timeout)
            }
            Some(
                RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::InvalidMessage,
            ) => PublishError::Rejected(error),
            _ => PublishError::BrokerUnavailable(error),
        }
    }
}

/// A Kafka producer for orderflow events. Cheap to clone (shares one producer); send from
/// many tasks at once, the producer batches them.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
    orders_topic: Arc<str>,
    inventory_topic: Arc<str>,
    allocations_topic: Arc<str>,
}

struct Inner {
    producer: FutureProducer,
    codec: Codec,
    source: String,
    limits: Limits,
}

impl Publisher {
    /// A publisher with the default [`Limits`]; `source` becomes the `ce_source` header.
    pub fn new(kafka: &KafkaArgs, codec: Codec, source: &str) -> Result<Publisher, PublishError> {
        Publisher::with_limits(kafka, codec, source, Limits::default())
    }

    /// A publisher with explicit bounds on its queue and delivery timeout.
    pub fn with_limits(
        kafka: &KafkaArgs,
        codec: Codec,
        source: &str,
        limits: Limits,
    ) -> Result<Publisher, PublishError> {
        let mut config = kafka.producer_config();
        config
            .set("message.timeout.ms", limits.message_timeout.as_millis().to_string())
            .set("queue.buffering.max.messages", limits.max_queued_messages.to_string())
            .set("queue.buffering.max.kbytes", limits.max_queued_kbytes.to_string());
        let producer: FutureProducer = config.create().map_err(PublishError::Config)?;
        Ok(Publisher {
            inner: Arc::new(Inner { producer, codec, source: source.to_owned(), limits }),
            orders_topic: EventKind::OrderPlaced.topic().into(),
            inventory_topic: EventKind::InventoryChanged.topic().into(),
            allocations_topic: EventKind::OrderAllocated.topic().into(),
        })
    }

    /// Publish orders and inventory changes to these topics instead of the contract ones
    /// (tests use fresh topics).
    pub fn with_topics(self, orders: &str, inventory: &str) -> Publisher {
        Publisher { orders_topic: orders.into(), inventory_topic: inventory.into(), ..self }
    }

    /// Publish the allocator's decisions to this topic instead of `allocations.v1`.
    pub fn with_allocations_topic(self, allocations: &str) -> Publisher {
        Publisher { allocations_topic: allocations.into(), ..self }
    }

    /// The topic events of `kind` go to.
    pub fn topic(&self, kind: EventKind) -> &str {
        match kind {
            EventKind::OrderPlaced => &self.orders_topic,
            EventKind::InventoryChanged => &self.inventory_topic,
            EventKind::OrderAllocated | EventKind::OrderBackordered | EventKind::BackorderAllocated => {
                &self.allocations_topic
            }
        }
    }

    /// The underlying producer (metadata checks, in-flight count).
    pub fn producer(&self) -> &FutureProducer {
        &self.inner.producer
    }

    /// Records handed to the producer and not yet acknowledged or failed.
    pub fn in_flight(&self) -> i32 {
        self.inner.producer.in_flight_count()
    }

    /// Encode and publish one event, keyed by its aggregate id, with CloudEvents headers and
    /// `traceparent`; resolves once the broker acknowledged it (see the crate docs).
    pub async fn publish(&self, event: &Event, traceparent: Option<TraceParent>) -> Result<Ack, PublishError> {
        let value = self.inner.codec.encode_to(self.topic(event.kind()), event).await?;
        self.publish_encoded(event, &value, traceparent).await
    }

    /// Publish an event whose value is already encoded. `value` must be the encoding of
    /// `event`.
    pub async fn publish_encoded(
        &self,
        event: &Event,
        value: &[u8],
        traceparent: Option<TraceParent>,
    ) -> Result<Ack, PublishError> {
        self.enqueue(event, value, traceparent)?.await
    }

    /// Publish every event concurrently (all in flight at once) and return each outcome in
    /// the order given. All are encoded first and handed to the producer in the order given,
    /// so events with the same key are acknowledged in that order.
    pub async fn publish_all(
        &self,
        events: &[Event],
        traceparent: Option<TraceParent>,
    ) -> Vec<Result<Ack, PublishError>> {
        let traced: Vec<(&Event, Option<TraceParent>)> = events.iter().map(|e| (e, traceparent.clone())).collect();
        self.publish_traced(traced).await
    }

    /// [`Publisher::publish_all`] with a trace per event (the outbox relay's rows each carry
    /// their own).
    pub async fn publish_traced(&self, events: Vec<(&Event, Option<TraceParent>)>) -> Vec<Result<Ack, PublishError>> {
        let mut encoded = Vec::new();
        for (event, traceparent) in events {
            encoded.push((event, traceparent, self.inner.codec.encode_to(self.topic(event.kind()), event).await));
        }
        let deliveries = encoded.into_iter().map(|(event, traceparent, value)| {
            let enqueued = value.map_err(PublishError::from).and_then(|v| self.enqueue(event, &v, traceparent));
            async move { enqueued?.await }
        });
        // Collecting runs `enqueue` for every event, in order, before any ack is awaited.
        let deliveries: Vec<_> = deliveries.collect();
        join_all(deliveries).await
    }

    /// Hand one record to the producer now; the returned future waits for its ack.
    fn enqueue(
        &self,
        event: &Event,
        value: &[u8],
        traceparent: Option<TraceParent>,
    ) -> Result<impl Future<Output = Result<Ack, PublishError>> + use<>, PublishError> {
        let inner = &self.inner;
        let topic = self.topic(event.kind()).to_owned();
        let mut headers = OwnedHeaders::new();
        for (key, value) in CeHeaders::for_event(event, &inner.source, traceparent).to_pairs() {
            headers = headers.insert(Header { key, value: Some(&value) });
        }
        let record = FutureRecord::to(&topic).key(event.key()).payload(value).headers(headers);
        let timeout = inner.limits.message_timeout;
        let delivery = inner.producer.send_result(record).map_err(|(e, _)| PublishError::from_kafka(e, timeout))?;
        let event_id = event.event_id();
        Ok(async move {
            // librdkafka fails the record after message.timeout.ms; the outer timeout only
            // guards against a delivery report that never comes.
            let outcome = tokio::time::timeout(timeout + Duration::from_secs(1), delivery)
                .await
                .map_err(|_| PublishError::Timeout(timeout))?;
            match outcome {
                Ok(Ok(d)) => Ok(Ack { event_id, topic, partition: d.partition, offset: d.offset }),
                Ok(Err((e, _))) => Err(PublishError::from_kafka(e, timeout)),
                Err(_canceled) => Err(PublishError::BrokerUnavailable(KafkaError::Canceled)),
            }
        })
    }

    /// Whether a broker answers a metadata request within `timeout` (readiness).
    pub async fn broker_reachable(&self, timeout: Duration) -> bool {
        let producer = self.inner.producer.clone();
        tokio::task::spawn_blocking(move || producer.client().fetch_metadata(None, timeout).is_ok())
            .await
            .unwrap_or(false)
    }

    /// Wait up to `timeout` for every in-flight record to be acknowledged (shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<(), PublishError> {
        self.inner.producer.flush(timeout).map_err(|e| PublishError::from_kafka(e, timeout))
    }
}
