//! One worker per assigned partition: pull records from the partition's own queue, collect a
//! batch (what the queue holds, up to `batch_size`; with a `batch_wait`, what arrives within it
//! of the first record), apply it with retries, and report progress. Batching is adaptive: at
//! low load a record is applied as soon as it arrives, under load records queue up while a batch
//! applies and the next batch takes them all.
//!
//! # Owns
//! [`Worker`]: the task of one partition, its stop token (a child of the consumer's, so a
//! revoke stops one worker and a shutdown all of them) and the transient-retry backoff.
//!
//! # Must not touch
//! Postgres directly (a batch is [`Batcher::apply`]'s), the Kafka consumer or its commits
//! (the worker only queues the next offset for the poll thread), or other partitions.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::ConsumerContext;
use rdkafka::message::OwnedMessage;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Tp;
use super::batch::Batcher;
use super::feed::{Feed, Fetched};
use super::health::{OffsetConflict, PartitionStatus};
use crate::handler::Handler;
use crate::observe;

/// Next offsets the workers committed to Postgres, waiting for the poll thread to copy them
/// to Kafka (for lag tools).
pub(crate) type Commits = Mutex<Vec<(Tp, i64)>>;

/// Longest a transient failure waits before the batch is tried again.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A running partition worker.
pub(crate) struct Worker {
    stop: CancellationToken,
    /// Disconnects when the worker's task ends (finished, or dropped with the tokio runtime):
    /// the poll thread waits on it without needing the tokio runtime to be alive.
    done: mpsc::Receiver<()>,
    pub status: Arc<PartitionStatus>,
}

/// How a worker batches.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Batching {
    pub size: usize,
    pub wait: Duration,
}

impl Worker {
    /// Start the worker of `tp` on `runtime`; it stops when `stop` is cancelled.
    /// `topic_id` is the topic's id (KIP-516) at assignment, recorded with the partition's
    /// first offset. A partition whose status holds an offset conflict is held: the worker
    /// pulls nothing until it is stopped.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn spawn<H: Handler, C: ConsumerContext + 'static>(
        runtime: &tokio::runtime::Handle,
        batcher: Arc<Batcher<H>>,
        tp: Tp,
        topic_id: Option<String>,
        feed: Feed<C>,
        batching: Batching,
        stop: CancellationToken,
        status: Arc<PartitionStatus>,
        commits: Arc<Commits>,
    ) -> Worker {
        let (done_tx, done) = mpsc::channel::<()>();
        let task = {
            let (stop, status) = (stop.clone(), status.clone());
            async move {
                run(&batcher, &tp, topic_id.as_deref(), &feed, batching, &stop, &status, &commits).await;
                // The partition queue holds the consumer open: release it before saying done.
                drop(feed);
                drop(done_tx);
            }
        };
        drop(runtime.spawn(task));
        Worker { stop, done, status }
    }

    /// Tell the worker to stop and wait, blocking this thread for up to `grace`, until it has
    /// finished the transaction in flight. Returns the next offset it reached, if known.
    pub(crate) fn stop(self, tp: &Tp, grace: Duration) -> Option<i64> {
        self.stop.cancel();
        if let Err(mpsc::RecvTimeoutError::Timeout) = self.done.recv_timeout(grace) {
            tracing::error!(
                topic = tp.0,
                partition = tp.1,
                "worker did not finish within {grace:?}; abandoning its batch"
            );
        }
        let next = self.status.next_offset.load(std::sync::atomic::Ordering::SeqCst);
        (next >= 0).then_some(next)
    }
}

/// Collect a batch, apply it with retries, report progress; until `stop` (after the
/// transaction in flight ends), or until the broker says the partition's position is out of
/// range: then the partition is held (see [`hold`]).
#[allow(clippy::too_many_arguments)]
async fn run<H: Handler, C: ConsumerContext + 'static>(
    batcher: &Batcher<H>,
    tp: &Tp,
    topic_id: Option<&str>,
    feed: &Feed<C>,
    batching: Batching,
    stop: &CancellationToken,
    status: &PartitionStatus,
    commits: &Commits,
) {
    use std::sync::atomic::Ordering;
    if status.conflict().is_some() {
        return hold(stop).await;
    }
    let mut batch: Vec<OwnedMessage> = Vec::with_capacity(batching.size);
    let out_of_range = |reason: String| {
        let conflict = OffsetConflict::OutOfRange {
            next_offset: status.next_offset.load(Ordering::SeqCst),
            log_start: status.low_watermark.load(Ordering::Relaxed),
            log_end: status.high_watermark.load(Ordering::Relaxed),
        };
        observe::offset_conflict(&batcher.consumer, &tp.0, tp.1, &conflict, &reason);
        *status.conflict.lock().unwrap() = Some(conflict);
    };
    loop {
        batch.clear();
        let first = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            message = feed.next(tp, None) => match message {
                Some(Fetched::Record(m)) => m,
                Some(Fetched::OutOfRange(reason)) => {
                    out_of_range(reason);
                    return hold(stop).await;
                }
                None => continue,
            },
        };
        if let Some(ms) = first.timestamp().to_millis() {
            status.oldest_pending_ms.store(ms, Ordering::Relaxed);
        }
        batch.push(first);
        let deadline = tokio::time::Instant::now() + batching.wait;
        while batch.len() < batching.size {
            match feed.next(tp, Some(deadline)).await {
                Some(Fetched::Record(message)) => batch.push(message),
                Some(Fetched::OutOfRange(reason)) => {
                    out_of_range(reason);
                    break;
                }
                None => break,
            }
        }

        // Held while the batch was collected (the topic was recreated under the consumer, or
        // the broker said the position is out of range): its records may belong to another
        // log, so none is applied; the operator's reset decides where the partition resumes.
        if status.conflict().is_some() {
            return hold(stop).await;
        }
        let mut attempt = 0u32;
        let mut backoff = Duration::from_millis(100);
        loop {
            if stop.is_cancelled() {
                return; // abandon: nothing of this batch was committed; the next owner redoes it
            }
            let span = tracing::info_span!("batch", consumer = %batcher.consumer, topic = %tp.0,
                partition = tp.1, first_offset = batch[0].offset(), size = batch.len(), trace_id = tracing::field::Empty);
            orderflow_telemetry::record_trace_id(&span);
            match batcher.apply(tp, topic_id, &batch).instrument(span).await {
                Ok(next_offset) => {
                    status.committed(next_offset, batch.last().and_then(|m| m.timestamp().to_millis()));
                    commits.lock().unwrap().push((tp.clone(), next_offset));
                    break;
                }
                Err(error) => {
                    attempt += 1;
                    observe::batch_retry(&batcher.consumer, &tp.0, tp.1, attempt, backoff, &error);
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// A held partition: its stored offset does not belong to the log (see [`OffsetConflict`]),
/// so nothing is applied and nothing skipped; `/readyz` and the conflict gauge say why until
/// the partition is revoked or the consumer stops. Only an operator moves the offset.
async fn hold(stop: &CancellationToken) {
    stop.cancelled().await;
}
