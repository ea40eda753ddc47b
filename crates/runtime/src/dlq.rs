//! The dead-letter topic `<consumer>.dlq`: the original record (key, value, headers) plus
//! headers saying where it came from and why it could not be applied.

use std::time::Duration;

use anyhow::Context;
use rdkafka::Message;
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Header names on dead-lettered records (also read by `orderflow dlq`).
pub mod headers {
    pub const ORIGINAL_TOPIC: &str = "dlq_original_topic";
    pub const ORIGINAL_PARTITION: &str = "dlq_original_partition";
    pub const ORIGINAL_OFFSET: &str = "dlq_original_offset";
    pub const ORIGINAL_TIMESTAMP: &str = "dlq_original_timestamp";
    pub const ERROR_CLASS: &str = "dlq_error_class";
    pub const ERROR_MESSAGE: &str = "dlq_error_message";
    pub const CONSUMER: &str = "dlq_consumer";
    pub const TIME: &str = "dlq_time";
}

/// Why a record was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The bytes are not an event we can decode (bad framing, corrupt datum, bad headers).
    Undecodable,
    /// The framing names a schema (fingerprint or registry id) we do not know.
    UnknownSchema,
    /// The handler said retrying cannot help.
    Permanent,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Undecodable => "undecodable",
            ErrorClass::UnknownSchema => "unknown_schema",
            ErrorClass::Permanent => "permanent",
        }
    }
}

/// Longest error message kept in a header.
const MAX_MESSAGE: usize = 4096;

/// Send `message` to `dlq_topic` and wait for the broker's acknowledgement.
pub async fn send(
    producer: &FutureProducer,
    dlq_topic: &str,
    consumer: &str,
    message: &OwnedMessage,
    class: ErrorClass,
    error: &str,
) -> anyhow::Result<()> {
    let mut error = error.to_owned();
    if error.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !error.is_char_boundary(cut) {
            cut -= 1;
        }
        error.truncate(cut);
    }
    let partition = message.partition().to_string();
    let offset = message.offset().to_string();
    let timestamp = message.timestamp().to_millis().map(|t| t.to_string()).unwrap_or_default();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut out = OwnedHeaders::new();
    if let Some(original) = message.headers() {
        for header in original.iter() {
            out = out.insert(Header { key: header.key, value: header.value });
        }
    }
    for (key, value) in [
        (headers::ORIGINAL_TOPIC, message.topic()),
        (headers::ORIGINAL_PARTITION, partition.as_str()),
        (headers::ORIGINAL_OFFSET, offset.as_str()),
        (headers::ORIGINAL_TIMESTAMP, timestamp.as_str()),
        (headers::ERROR_CLASS, class.as_str()),
        (headers::ERROR_MESSAGE, error.as_str()),
        (headers::CONSUMER, consumer),
        (headers::TIME, now.as_str()),
    ] {
        out = out.insert(Header { key, value: Some(value.as_bytes()) });
    }
    let mut record = FutureRecord::<[u8], [u8]>::to(dlq_topic).headers(out);
    if let Some(key) = message.key() {
        record = record.key(key);
    }
    if let Some(payload) = message.payload() {
        record = record.payload(payload);
    }
    producer.send(record, Duration::from_secs(30)).await.map_err(|(error, _)| error).with_context(|| {
        format!("Failed to dead-letter {}[{}]@{} to {dlq_topic}", message.topic(), partition, offset)
    })?;
    Ok(())
}

/// The consumer's dead-letter topic, where [`crate::consumer`]'s batches send the records
/// they can never apply.
pub(crate) struct DeadLetterTopic {
    pub producer: FutureProducer,
    pub topic: String,
    /// The consumer's name, in the `dlq_consumer` header.
    pub consumer: String,
}

impl crate::consumer::batch::DeadLetters for DeadLetterTopic {
    fn send<'a>(
        &'a self,
        record: &'a OwnedMessage,
        class: ErrorClass,
        error: &'a str,
    ) -> futures::future::BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(send(&self.producer, &self.topic, &self.consumer, record, class, error))
    }
}
