//! The poll thread: it owns the Kafka consumer, serves rebalances and statistics, copies
//! progress to Kafka and updates the lag gauges, until the consumer's stop token is cancelled;
//! then it drains the workers, commits, and leaves the group. Records do not pass through it:
//! each worker pulls from its partition's own queue.
//!
//! # Owns
//! The `BaseConsumer` (created, subscribed, polled and closed here only) and the thread that
//! polls it.
//!
//! # Must not touch
//! Records or Postgres: those are the workers'.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use tokio::sync::oneshot;

use super::Tp;
use super::rebalance::{LoopContext, Shared, commit_to_kafka};
use crate::handler::Handler;

/// How long one poll waits: how soon the thread notices it was told to stop.
const POLL_WAIT: Duration = Duration::from_millis(100);

/// Start the poll thread. The receiver resolves with the thread's result when it ends; an
/// error on the receiver means the thread panicked.
pub(crate) fn start<H: Handler>(
    shared: Arc<Shared<H>>,
    config: rdkafka::ClientConfig,
) -> anyhow::Result<oneshot::Receiver<anyhow::Result<()>>> {
    let (done, finished) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("{}-poll", shared.consumer_name()))
        .spawn(move || {
            let result = poll_loop(shared, config);
            let _ = done.send(result);
        })
        .context("Failed to start the polling thread")?;
    Ok(finished)
}

fn poll_loop<H: Handler>(shared: Arc<Shared<H>>, config: rdkafka::ClientConfig) -> anyhow::Result<()> {
    let consumer: Arc<BaseConsumer<LoopContext<H>>> = Arc::new(
        config
            .create_with_context(LoopContext { shared: shared.clone() })
            .context("Failed to create the Kafka consumer")?,
    );
    shared.register(&consumer);
    let topics: Vec<&str> = shared.settings.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).with_context(|| format!("Failed to subscribe to {topics:?}"))?;
    tracing::info!(consumer = shared.consumer_name(), group = shared.settings.group, ?topics, "consuming");

    let mut last_lag = Instant::now();
    while !shared.stop.is_cancelled() {
        commit_to_kafka(&consumer, &shared.take_commits(), CommitMode::Async);
        match consumer.poll(POLL_WAIT) {
            None => {}
            // Every assigned partition's queue is split off, so a record here means a split
            // failed (logged at assignment); its partition's worker never sees it and the
            // stored offset does not move past it, so nothing is lost, but it is stuck.
            Some(Ok(message)) => tracing::error!(
                consumer = shared.consumer_name(),
                topic = message.topic(),
                partition = message.partition(),
                offset = message.offset(),
                "record on the main queue; not applied"
            ),
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(error)) => {
                tracing::warn!(consumer = shared.consumer_name(), error = %error, "Kafka consumer error")
            }
        }
        if last_lag.elapsed() >= Duration::from_secs(1) {
            shared.report_lag();
            last_lag = Instant::now();
        }
    }
    tracing::info!(consumer = shared.consumer_name(), "shutting down: finishing in-flight batches");
    let all: Vec<Tp> = shared.assigned().into_iter().collect();
    let finals = shared.stop_workers(&all);
    commit_to_kafka(&consumer, &finals, CommitMode::Sync);
    consumer.unsubscribe();
    drop(consumer); // the workers (and their partition queues) are gone: this closes it and leaves the group
    tracing::info!(consumer = shared.consumer_name(), "left the group");
    Ok(())
}
