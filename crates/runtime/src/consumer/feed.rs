//! One partition's own fetch queue, split off the consumer's main queue, as its worker sees it.
//!
//! # Owns
//! [`Feed`]: pulling the next fetched record without waiting, or waiting for one until a
//! deadline, woken by librdkafka when the queue goes from empty to non-empty.
//!
//! # Must not touch
//! Offsets, batching or Postgres: it hands records over and nothing else.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::ConsumerContext;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::Notify;

use super::Tp;

/// What a partition's queue hands its worker.
pub(crate) enum Fetched {
    Record(OwnedMessage),
    /// The broker has no record at the partition's position (the log was truncated, deleted
    /// by retention or recreated under the consumer): fetching stopped, nothing was skipped.
    OutOfRange(String),
}

/// One partition's own queue, split off the consumer's main queue, and a wake-up that
/// librdkafka rings when the queue goes from empty to non-empty.
pub(crate) struct Feed<C: ConsumerContext + 'static> {
    queue: PartitionQueue<C>,
    wake: Arc<Notify>,
}

impl<C: ConsumerContext + 'static> Feed<C> {
    pub(crate) fn new(mut queue: PartitionQueue<C>) -> Self {
        let wake = Arc::new(Notify::new());
        let ring = wake.clone();
        // `notify_one` keeps a permit when nobody waits, so a ring between an empty poll and
        // the wait is not lost.
        queue.set_nonempty_callback(move || ring.notify_one());
        Feed { queue, wake }
    }

    /// The next record already fetched, without waiting.
    fn try_next(&self, tp: &Tp) -> Option<Fetched> {
        loop {
            match self.queue.poll(Duration::ZERO)? {
                Ok(message) => return Some(Fetched::Record(message.detach())),
                Err(KafkaError::PartitionEOF(_)) => {}
                // The runtime sets `auto.offset.reset=error`: the broker said the position is
                // out of range and librdkafka stopped fetching the partition instead of
                // moving it on its own.
                Err(KafkaError::MessageConsumption(
                    code @ (RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange),
                )) => return Some(Fetched::OutOfRange(code.to_string())),
                Err(error) => tracing::warn!(topic = tp.0, partition = tp.1, error = %error, "Kafka fetch error"),
            }
        }
    }

    /// The next record, waiting for one until `deadline` (or for ever with `None`).
    pub(crate) async fn next(&self, tp: &Tp, deadline: Option<tokio::time::Instant>) -> Option<Fetched> {
        loop {
            if let Some(message) = self.try_next(tp) {
                return Some(message);
            }
            match deadline {
                None => self.wake.notified().await,
                Some(deadline) => tokio::time::timeout_at(deadline, self.wake.notified()).await.ok()?,
            }
        }
    }
}
