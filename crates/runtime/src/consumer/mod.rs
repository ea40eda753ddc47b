//! The consumer loop: one polling thread that owns the Kafka consumer, and one async worker
//! per assigned partition that batches, applies and commits.
//!
//! # Guarantee
//! Effectively once per consumer: every event on the assigned partitions is applied to the
//! read store exactly once, whatever crashes, restarts, rebalances or upstream duplicates
//! happen. How:
//! - a batch's effects, the partition's next offset and the ids of the applied events are
//!   written in **one** Postgres transaction;
//! - on assignment the consumer starts each partition at the offset stored in Postgres, and a
//!   batch first locks the partition's offset row and drops records below it (so two instances
//!   that briefly both own a partition during a rebalance cannot both apply a record);
//! - the applied-event ledger skips an event id applied before (duplicates published
//!   upstream), within the ledger's retention;
//! - dead-lettered records are acknowledged by the broker before the offset moves past them.
//!
//! Limits: effects outside Postgres are the handler's business (write an outbox row in the
//! transaction); a duplicate published after the ledger retention is applied again.
//!
//! # Flow
//! ```text
//! librdkafka fetcher ──one queue per partition (split)──> worker (pulls; batches by size/time)
//! poll thread: rebalances, statistics, commits                │ BEGIN; lock offset; ledger; handler; offset; COMMIT
//!      ▲────────── commit request (next offset) ──────────────┘ then commit to Kafka for lag tools
//! ```
//!
//! Each assigned partition's fetch queue is split off the consumer's main queue, and its worker
//! pulls from it only when it is ready for more. So backpressure needs no pause/resume: a
//! partition nobody pulls from stops being fetched once librdkafka's prefetch for it reaches
//! `queued.max.messages.kbytes` (per partition with split queues). Pausing did the same job
//! worse: a pause drops librdkafka's prefetched records and a resume fetches them again, which
//! made the broker serve every record two to three times (measured on Tansu: 184 ms of broker
//! CPU per 1000 events with pause/resume, 67 ms with split queues; see docs/benchmarks.md).
//!
//! # Layout
//! - [`health`]: what `/readyz` and the lag gauges read (joined, per-partition progress).
//! - `rebalance`: the state the poll thread shares with librdkafka's callbacks; assignment
//!   (start at the stored offset, split the queue, spawn a worker) and revocation (drain).
//! - `poll`: the poll thread, owner of the Kafka consumer.
//! - `feed`: one partition's split queue as its worker pulls from it.
//! - `worker`: one task per partition: batching by size and time, retries with backoff.
//! - `batch`: one batch in one transaction (decode, ledger, handler, savepoints, dead
//!   letters, offset); tested against Postgres alone.
//!
//! # Stopping
//! One [`CancellationToken`] tree: the runtime's root, the consumer's token below it, and a
//! child per worker below that. A revoke cancels the revoked workers' tokens; a shutdown
//! cancels the consumer's, which stops the poll thread (within one poll, 100 ms) and every
//! worker; dropping the runtime cancels the root, so nothing keeps running after it. A
//! worker told to stop finishes the transaction in flight (or abandons a batch that is
//! waiting to retry, uncommitted); the poll thread waits for it without needing the tokio
//! runtime, so it also ends when the runtime was dropped.
//!
//! # Must not touch
//! Any particular consumer's tables or events: the handler owns those.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

pub(crate) mod batch;
mod feed;
pub mod health;
mod poll;
mod rebalance;
mod worker;

pub use health::{Health, OffsetConflict, PartitionStatus};

use crate::handler::Handler;

/// Settings of the loop (derived from [`crate::RuntimeArgs`]).
#[derive(Debug, Clone)]
pub struct LoopSettings {
    pub consumer: String,
    pub group: String,
    pub topics: Vec<String>,
    pub dlq_topic: String,
    pub batch_size: usize,
    pub batch_wait: Duration,
    pub replay: bool,
    pub ready_max_lag: i64,
}

/// A partition: (topic, partition).
pub(crate) type Tp = (String, i32);

/// Start consuming: the poll thread and, as partitions are assigned, their workers, all
/// stopping when `stop` is cancelled. The receiver resolves with the poll thread's result
/// once it has drained the workers and left the group (an error on it: the thread panicked).
pub(crate) fn start<H: Handler>(
    batcher: batch::Batcher<H>,
    settings: LoopSettings,
    health: Arc<Health>,
    config: rdkafka::ClientConfig,
    stop: CancellationToken,
) -> anyhow::Result<oneshot::Receiver<anyhow::Result<()>>> {
    let shared = Arc::new(rebalance::Shared::new(Arc::new(batcher), settings, health, stop));
    poll::start(shared, config)
}
