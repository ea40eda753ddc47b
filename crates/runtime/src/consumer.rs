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

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use orderflow_events::Codec;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use sqlx::{Acquire, PgConnection, PgPool};
use tokio::sync::Notify;
use tracing::Instrument;
use uuid::Uuid;

use crate::dlq::{self, ErrorClass};
use crate::handler::{BatchContext, Envelope, Handler, HandlerError};
use crate::{observe, store};

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

type Tp = (String, i32);

/// Per-partition progress the HTTP endpoints and the lag gauges read.
#[derive(Debug, Default)]
pub struct PartitionStatus {
    /// Next offset to apply (stored in Postgres), -1 until known.
    pub next_offset: AtomicI64,
    /// Kafka timestamp (ms) of the oldest record received but not yet committed; 0 if none.
    pub oldest_pending_ms: AtomicI64,
    /// High watermark last seen by the polling thread, -1 until known.
    pub high_watermark: AtomicI64,
    /// Low watermark last seen, -1 until known: where a partition with no stored offset starts,
    /// so its lag is known before its first commit.
    pub low_watermark: AtomicI64,
}

impl PartitionStatus {
    /// Lag in messages, `None` while the watermarks needed to tell are unknown.
    pub fn lag(&self) -> Option<i64> {
        let high = self.high_watermark.load(Ordering::Relaxed);
        let next = match self.next_offset.load(Ordering::Relaxed) {
            next if next >= 0 => next,
            _ => self.low_watermark.load(Ordering::Relaxed),
        };
        (high >= 0 && next >= 0).then(|| (high - next).max(0))
    }
}

/// What the HTTP server may ask the loop.
#[derive(Debug, Default)]
pub struct Health {
    pub joined: AtomicBool,
    pub partitions: Mutex<HashMap<Tp, Arc<PartitionStatus>>>,
    pub ready_max_lag: AtomicI64,
}

impl Health {
    /// Total lag in messages over the assigned partitions whose lag is known, and how many
    /// partitions' lag is not known yet (their watermarks arrive with the first statistics).
    pub fn total_lag(&self) -> (i64, usize) {
        let partitions = self.partitions.lock().unwrap();
        partitions.values().fold((0, 0), |(lag, unknown), s| match s.lag() {
            Some(l) => (lag + l, unknown),
            None => (lag, unknown + 1),
        })
    }

    /// Ready: joined the group (an assignment arrived, possibly empty) and caught up enough.
    /// A partition whose lag is not known yet counts as not caught up: a fresh consumer facing
    /// a backlog must not report ready in the second before its first statistics.
    pub fn ready(&self) -> (bool, String) {
        if !self.joined.load(Ordering::Relaxed) {
            return (false, "not yet assigned partitions by the group".into());
        }
        let (lag, unknown) = self.total_lag();
        let max = self.ready_max_lag.load(Ordering::Relaxed);
        let assigned = self.partitions.lock().unwrap().len();
        if unknown > 0 {
            return (false, format!("{assigned} partitions assigned, lag of {unknown} not known yet"));
        }
        (lag <= max, format!("{assigned} partitions assigned, lag {lag} messages (ready at <= {max})"))
    }
}

struct Worker {
    stop: Arc<StopFlag>,
    join: tokio::task::JoinHandle<()>,
    status: Arc<PartitionStatus>,
}

/// Tells a worker to finish its current transaction and exit.
#[derive(Default)]
struct StopFlag {
    stopped: AtomicBool,
    notify: Notify,
}

impl StopFlag {
    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }
    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }
    async fn wait(&self) {
        let notified = self.notify.notified();
        if self.is_stopped() {
            return;
        }
        notified.await;
    }
}

/// State shared by the polling thread, its rebalance callback and the workers.
pub(crate) struct Shared<H: Handler> {
    pub handler: Arc<H>,
    pub pool: PgPool,
    pub codec: Codec,
    pub dlq: FutureProducer,
    pub settings: LoopSettings,
    pub runtime: tokio::runtime::Handle,
    pub health: Arc<Health>,
    workers: Mutex<HashMap<Tp, Worker>>,
    commits: Mutex<Vec<(Tp, i64)>>,
    /// The consumer, set once the polling thread created it: the rebalance callback splits
    /// partition queues off it, which takes an `Arc`.
    consumer: OnceLock<Weak<BaseConsumer<LoopContext<H>>>>,
}

impl<H: Handler> Shared<H> {
    pub fn new(
        handler: Arc<H>,
        pool: PgPool,
        codec: Codec,
        dlq: FutureProducer,
        settings: LoopSettings,
        health: Arc<Health>,
    ) -> Self {
        health.ready_max_lag.store(settings.ready_max_lag, Ordering::Relaxed);
        Shared {
            handler,
            pool,
            codec,
            dlq,
            settings,
            runtime: tokio::runtime::Handle::current(),
            health,
            workers: Mutex::new(HashMap::new()),
            commits: Mutex::new(Vec::new()),
            consumer: OnceLock::new(),
        }
    }

    fn consumer_name(&self) -> &str {
        &self.settings.consumer
    }
}

pub(crate) struct LoopContext<H: Handler> {
    shared: Arc<Shared<H>>,
}

impl<H: Handler> ClientContext for LoopContext<H> {
    /// librdkafka's statistics (every second) carry each partition's high watermark, which
    /// the lag gauges need without a broker round trip per partition.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let partitions = self.shared.health.partitions.lock().unwrap();
        for (topic, stats) in &statistics.topics {
            for (partition, p) in &stats.partitions {
                if let Some(status) = partitions.get(&(topic.clone(), *partition)) {
                    if p.hi_offset >= 0 {
                        status.high_watermark.store(p.hi_offset, Ordering::Relaxed);
                    }
                    if p.lo_offset >= 0 {
                        status.low_watermark.store(p.lo_offset, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

impl<H: Handler> ConsumerContext for LoopContext<H> {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.revoke(consumer, tpl),
            other => tracing::error!(consumer = self.shared.consumer_name(), error = ?other, "rebalance error"),
        }
    }
}

impl<H: Handler> LoopContext<H> {
    /// Start the new partitions at the offsets stored in Postgres (authoritative), then
    /// spawn a worker for each.
    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let shared = &self.shared;
        let topics: HashSet<String> = tpl.elements().iter().map(|e| e.topic().to_owned()).collect();
        let mut stored: HashMap<String, HashMap<i32, i64>> = HashMap::new();
        let mut loaded = true;
        for topic in &topics {
            match load_offsets_with_retry(shared, topic) {
                Ok(offsets) => {
                    stored.insert(topic.clone(), offsets);
                }
                Err(error) => {
                    loaded = false;
                    tracing::error!(consumer = shared.consumer_name(), topic, error = %error,
                        "could not read stored offsets; starting from the group's Kafka offsets \
                         (records below the stored offset are still skipped)");
                }
            }
        }
        let mut starts = Vec::new();
        for element in tpl.elements() {
            let (topic, partition) = (element.topic().to_owned(), element.partition());
            let next = stored.get(&topic).and_then(|o| o.get(&partition)).copied();
            starts.push((topic, partition, next));
        }
        for (topic, partition, next) in &starts {
            let offset = match next {
                Some(next) => Offset::Offset(*next),
                None if loaded => Offset::Beginning,
                None => Offset::Stored,
            };
            if let Err(error) = tpl.set_partition_offset(topic, *partition, offset) {
                tracing::error!(topic, partition, error = %error, "could not set the start offset");
            }
        }
        // Split each partition's queue off before fetching starts, so no record of it can land
        // on the main queue (librdkafka keeps an application's split across the fetch start).
        let mut feeds: HashMap<Tp, Feed<H>> = HashMap::new();
        match shared.consumer.get().and_then(Weak::upgrade) {
            Some(owner) => {
                // A partition that already has a worker keeps its queue: splitting it again and
                // dropping the new handle would switch off the running worker's wake-up.
                let running: HashSet<Tp> = shared.workers.lock().unwrap().keys().cloned().collect();
                for (topic, partition, _) in &starts {
                    if running.contains(&(topic.clone(), *partition)) {
                        continue;
                    }
                    match owner.split_partition_queue(topic, *partition) {
                        Some(queue) => {
                            feeds.insert((topic.clone(), *partition), Feed::new(queue));
                        }
                        None => tracing::error!(topic, partition, "could not split the partition's queue"),
                    }
                }
            }
            None => tracing::error!(consumer = shared.consumer_name(), "rebalance before the consumer was registered"),
        }
        if let Err(error) = consumer.incremental_assign(tpl) {
            tracing::error!(consumer = shared.consumer_name(), error = %error, "incremental assign failed");
            return;
        }
        let mut workers = shared.workers.lock().unwrap();
        for (topic, partition, next) in starts {
            let tp = (topic.clone(), partition);
            if workers.contains_key(&tp) {
                continue;
            }
            let Some(feed) = feeds.remove(&tp) else { continue };
            let status = Arc::new(PartitionStatus::default());
            status.next_offset.store(next.unwrap_or(-1), Ordering::Relaxed);
            status.high_watermark.store(-1, Ordering::Relaxed);
            status.low_watermark.store(-1, Ordering::Relaxed);
            let stop = Arc::new(StopFlag::default());
            let join =
                shared.runtime.spawn(worker_loop(shared.clone(), tp.clone(), feed, stop.clone(), status.clone()));
            shared.health.partitions.lock().unwrap().insert(tp.clone(), status.clone());
            workers.insert(tp, Worker { stop, join, status });
        }
        tracing::info!(consumer = shared.consumer_name(), assigned = workers.len(), "partitions assigned");
        observe::partitions_assigned(shared.consumer_name(), workers.len());
        shared.health.joined.store(true, Ordering::Relaxed);
    }

    /// Let the revoked partitions' workers finish their current batch, commit their offsets to
    /// Kafka, and give the partitions back.
    fn revoke(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let shared = &self.shared;
        let revoked: Vec<Tp> = tpl.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
        let final_offsets = stop_workers(shared, &revoked);
        commit_to_kafka(consumer, &final_offsets, CommitMode::Sync);
        if let Err(error) = consumer.incremental_unassign(tpl) {
            tracing::warn!(consumer = shared.consumer_name(), error = %error, "incremental unassign failed");
        }
        let remaining = shared.workers.lock().unwrap().len();
        tracing::info!(consumer = shared.consumer_name(), revoked = revoked.len(), remaining, "partitions revoked");
        observe::partitions_assigned(shared.consumer_name(), remaining);
    }
}

fn load_offsets_with_retry<H: Handler>(shared: &Shared<H>, topic: &str) -> anyhow::Result<HashMap<i32, i64>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut backoff = Duration::from_millis(100);
    loop {
        match shared.runtime.block_on(store::load_offsets(&shared.pool, topic)) {
            Ok(offsets) => return Ok(offsets),
            Err(error) if Instant::now() + backoff < deadline => {
                tracing::warn!(topic, error = %error, "reading stored offsets failed; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Stop the workers of `partitions`, wait for each to finish its current transaction, and
/// return the next offsets they reached.
fn stop_workers<H: Handler>(shared: &Shared<H>, partitions: &[Tp]) -> Vec<(Tp, i64)> {
    let stopping: Vec<(Tp, Worker)> = {
        let mut workers = shared.workers.lock().unwrap();
        partitions.iter().filter_map(|tp| workers.remove(tp).map(|w| (tp.clone(), w))).collect()
    };
    let mut finals = Vec::new();
    for (tp, worker) in stopping {
        worker.stop.stop();
        // The timer must be created inside the runtime context, hence the async block.
        let joined =
            shared.runtime.block_on(async { tokio::time::timeout(Duration::from_secs(60), worker.join).await });
        if joined.is_err() {
            tracing::error!(topic = tp.0, partition = tp.1, "worker did not finish within 60s; abandoning its batch");
        }
        shared.health.partitions.lock().unwrap().remove(&tp);
        let next = worker.status.next_offset.load(Ordering::SeqCst);
        if next >= 0 {
            finals.push((tp, next));
        }
    }
    finals
}

fn commit_to_kafka<C: ConsumerContext>(consumer: &BaseConsumer<C>, offsets: &[(Tp, i64)], mode: CommitMode) {
    if offsets.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), next) in offsets {
        let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next));
    }
    // Kafka's copy of the offsets is for lag tools only; Postgres holds the real ones.
    if let Err(error) = consumer.commit(&tpl, mode) {
        tracing::debug!(error = %error, "committing offsets to Kafka failed (informational copy)");
    }
}

/// The polling thread: serve rebalances and statistics, commit progress to Kafka, update lag,
/// until `shutdown` is set. Records do not pass through it: each worker pulls from its
/// partition's own queue.
pub(crate) fn poll_loop<H: Handler>(
    shared: Arc<Shared<H>>,
    config: rdkafka::ClientConfig,
    shutdown: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let consumer: Arc<BaseConsumer<LoopContext<H>>> = Arc::new(
        config
            .create_with_context(LoopContext { shared: shared.clone() })
            .context("Failed to create the Kafka consumer")?,
    );
    let _ = shared.consumer.set(Arc::downgrade(&consumer));
    let topics: Vec<&str> = shared.settings.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).with_context(|| format!("Failed to subscribe to {topics:?}"))?;
    tracing::info!(consumer = shared.consumer_name(), group = shared.settings.group, ?topics, "consuming");

    let mut last_lag = Instant::now();
    while !shutdown.load(Ordering::SeqCst) {
        let commits = std::mem::take(&mut *shared.commits.lock().unwrap());
        if !commits.is_empty() {
            let assigned = shared.workers.lock().unwrap();
            let current: Vec<(Tp, i64)> = commits.into_iter().filter(|(tp, _)| assigned.contains_key(tp)).collect();
            drop(assigned);
            commit_to_kafka(&consumer, &current, CommitMode::Async);
        }
        match consumer.poll(Duration::from_millis(100)) {
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
            update_lag(&shared);
            last_lag = Instant::now();
        }
    }
    tracing::info!(consumer = shared.consumer_name(), "shutting down: finishing in-flight batches");
    let all: Vec<Tp> = shared.workers.lock().unwrap().keys().cloned().collect();
    let finals = stop_workers(&shared, &all);
    commit_to_kafka(&consumer, &finals, CommitMode::Sync);
    consumer.unsubscribe();
    drop(consumer); // the workers (and their partition queues) are gone: this closes it and leaves the group
    tracing::info!(consumer = shared.consumer_name(), "left the group");
    Ok(())
}

/// One partition's own queue, split off the consumer's main queue, and a wake-up that
/// librdkafka rings when the queue goes from empty to non-empty.
struct Feed<H: Handler> {
    queue: PartitionQueue<LoopContext<H>>,
    wake: Arc<Notify>,
}

impl<H: Handler> Feed<H> {
    fn new(mut queue: PartitionQueue<LoopContext<H>>) -> Self {
        let wake = Arc::new(Notify::new());
        let ring = wake.clone();
        // `notify_one` keeps a permit when nobody waits, so a ring between an empty poll and
        // the wait is not lost.
        queue.set_nonempty_callback(move || ring.notify_one());
        Feed { queue, wake }
    }

    /// The next record already fetched, without waiting.
    fn try_next(&self, tp: &Tp) -> Option<OwnedMessage> {
        loop {
            match self.queue.poll(Duration::ZERO)? {
                Ok(message) => return Some(message.detach()),
                Err(KafkaError::PartitionEOF(_)) => {}
                Err(error) => tracing::warn!(topic = tp.0, partition = tp.1, error = %error, "Kafka fetch error"),
            }
        }
    }

    /// The next record, waiting for one until `deadline` (or for ever with `None`).
    async fn next(&self, tp: &Tp, deadline: Option<tokio::time::Instant>) -> Option<OwnedMessage> {
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

fn update_lag<H: Handler>(shared: &Shared<H>) {
    let workers = shared.workers.lock().unwrap();
    let now_ms = chrono::Utc::now().timestamp_millis();
    for ((topic, partition), worker) in workers.iter() {
        let lag = worker.status.lag().unwrap_or(0);
        let oldest = worker.status.oldest_pending_ms.load(Ordering::Relaxed);
        let seconds = if lag > 0 && oldest > 0 { (now_ms - oldest) as f64 / 1000.0 } else { 0.0 };
        observe::lag(shared.consumer_name(), topic, *partition, lag, seconds);
    }
}

/// One partition: collect a batch (up to `batch_size`, or what arrived within `batch_wait`
/// of its first record), apply it with retries, report progress. Exits when stopped (after
/// the transaction in flight ends) or when its channel closes.
async fn worker_loop<H: Handler>(
    shared: Arc<Shared<H>>,
    tp: Tp,
    feed: Feed<H>,
    stop: Arc<StopFlag>,
    status: Arc<PartitionStatus>,
) {
    let settings = &shared.settings;
    let mut batch: Vec<OwnedMessage> = Vec::with_capacity(settings.batch_size);
    loop {
        batch.clear();
        let first = tokio::select! {
            biased;
            _ = stop.wait() => return,
            message = feed.next(&tp, None) => match message { Some(m) => m, None => continue },
        };
        if let Some(ms) = first.timestamp().to_millis() {
            status.oldest_pending_ms.store(ms, Ordering::Relaxed);
        }
        batch.push(first);
        let deadline = tokio::time::Instant::now() + settings.batch_wait;
        while batch.len() < settings.batch_size {
            match feed.next(&tp, Some(deadline)).await {
                Some(message) => batch.push(message),
                None => break,
            }
        }

        let mut attempt = 0u32;
        let mut backoff = Duration::from_millis(100);
        loop {
            if stop.is_stopped() {
                return; // abandon: nothing of this batch was committed; the next owner redoes it
            }
            let span = tracing::info_span!("batch", consumer = %settings.consumer, topic = %tp.0,
                partition = tp.1, first_offset = batch[0].offset(), size = batch.len(), trace_id = tracing::field::Empty);
            orderflow_telemetry::record_trace_id(&span);
            match process_batch(&shared, &tp, &batch).instrument(span).await {
                Ok(next_offset) => {
                    status.next_offset.store(next_offset, Ordering::SeqCst);
                    status.oldest_pending_ms.store(0, Ordering::Relaxed);
                    shared.commits.lock().unwrap().push((tp.clone(), next_offset));
                    break;
                }
                Err(error) => {
                    attempt += 1;
                    observe::batch_retry(&settings.consumer, &tp.0, tp.1, attempt, backoff, &error);
                    tokio::select! {
                        _ = stop.wait() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}

/// A record decoded into an envelope, skipped, or bound for the dead-letter topic. Short-lived
/// (one per record, consumed at once), so the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
enum Decoded {
    Apply(Envelope),
    Skip,
    Dead(ErrorClass, String),
}

async fn decode<H: Handler>(shared: &Shared<H>, message: &OwnedMessage) -> Result<Decoded, anyhow::Error> {
    let Some(payload) = message.payload() else {
        return Ok(Decoded::Dead(ErrorClass::Undecodable, "record has no value".into()));
    };
    match shared.codec.decode(payload).await {
        Ok(event) => {
            if !shared.handler.wants(&event) {
                return Ok(Decoded::Skip);
            }
            let traceparent = message.headers().and_then(|headers| {
                headers
                    .iter()
                    .find(|h| h.key == "traceparent")
                    .and_then(|h| h.value)
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .map(str::to_owned)
            });
            Ok(Decoded::Apply(Envelope {
                event,
                topic: message.topic().to_owned(),
                partition: message.partition(),
                offset: message.offset(),
                timestamp: message.timestamp().to_millis().and_then(chrono::DateTime::from_timestamp_millis),
                traceparent,
            }))
        }
        Err(error) if error.is_transient() => Err(anyhow::Error::new(error).context("schema registry unavailable")),
        Err(error) => {
            use orderflow_events::DecodeError as E;
            let class = match error {
                E::UnknownFingerprint(_) | E::UnknownSchemaId(_) | E::UnknownType(_) | E::NoRegistry(_) => {
                    ErrorClass::UnknownSchema
                }
                _ => ErrorClass::Undecodable,
            };
            Ok(Decoded::Dead(class, error.to_string()))
        }
    }
}

/// Apply one batch of one partition in one transaction. Returns the partition's next offset.
/// An error means "transient: retry the same batch"; permanent failures are dead-lettered.
async fn process_batch<H: Handler>(shared: &Shared<H>, tp: &Tp, batch: &[OwnedMessage]) -> anyhow::Result<i64> {
    let started = Instant::now();
    let (topic, partition) = (tp.0.as_str(), tp.1);
    let ctx = BatchContext { consumer: shared.settings.consumer.clone(), replay: shared.settings.replay };

    let mut tx = shared.pool.begin().await.context("Failed to open a transaction")?;
    let stored = store::lock_offset(&mut tx, topic, partition).await.context("Failed to lock the offset row")?;
    let fresh: Vec<&OwnedMessage> = batch.iter().filter(|m| m.offset() >= stored).collect();
    let Some(last) = fresh.last() else {
        // Another owner applied all of it already (a rebalance overlap or a restart).
        tx.rollback().await.ok();
        return Ok(stored);
    };
    let next_offset = last.offset() + 1;

    let mut envelopes = Vec::with_capacity(fresh.len());
    let mut dead: Vec<(&OwnedMessage, ErrorClass, String)> = Vec::new();
    for message in &fresh {
        match decode(shared, message).await? {
            Decoded::Apply(envelope) => envelopes.push(envelope),
            Decoded::Skip => {}
            Decoded::Dead(class, error) => dead.push((message, class, error)),
        }
    }

    // Held until this function returns: each event's span lasts until its batch committed.
    let event_spans = observe::event_spans(&shared.settings.consumer, &envelopes);

    let (applied, duplicates) = match apply_all(shared, &mut tx, topic, partition, &envelopes, &ctx).await {
        Ok(counts) => counts,
        Err(HandlerError::Transient(error)) => return Err(error),
        Err(HandlerError::Permanent(error)) => {
            // Find the culprit(s): redo the batch one event at a time, each in a savepoint.
            tracing::info!(error = %format!("{error:#}"), "batch failed permanently; isolating the failing events");
            tx.rollback().await.ok();
            tx = shared.pool.begin().await.context("Failed to open a transaction")?;
            let again = store::lock_offset(&mut tx, topic, partition).await?;
            anyhow::ensure!(again == stored, "offset of {topic}[{partition}] moved while isolating; retrying");
            let mut applied = 0;
            let mut duplicates = 0;
            for envelope in &envelopes {
                let mut savepoint = tx.begin().await?;
                match apply_all(shared, &mut savepoint, topic, partition, std::slice::from_ref(envelope), &ctx).await {
                    Ok((a, d)) => {
                        savepoint.commit().await?;
                        applied += a;
                        duplicates += d;
                    }
                    Err(HandlerError::Transient(error)) => return Err(error),
                    Err(HandlerError::Permanent(error)) => {
                        savepoint.rollback().await?;
                        let message =
                            fresh.iter().find(|m| m.offset() == envelope.offset).expect("envelope from batch");
                        dead.push((message, ErrorClass::Permanent, format!("{error:#}")));
                        observe::event_span_failed(&event_spans, &envelopes, envelope.offset);
                    }
                }
            }
            (applied, duplicates)
        }
    };

    // Dead letters are acknowledged by the broker before the offset moves past them.
    dead.sort_by_key(|(m, _, _)| m.offset());
    for (message, class, error) in &dead {
        dlq::send(&shared.dlq, &shared.settings.dlq_topic, &shared.settings.consumer, message, *class, error).await?;
        observe::dead_lettered(&shared.settings.consumer, topic, partition, message.offset(), class.as_str(), error);
    }
    store::save_offset(&mut tx, topic, partition, next_offset).await.context("Failed to store the offset")?;
    tx.commit().await.context("Failed to commit the batch")?;
    observe::batch_applied(&shared.settings.consumer, topic, partition, applied, duplicates, started.elapsed());
    Ok(next_offset)
}

/// Record the envelopes in the ledger and hand the new ones to the handler.
/// Returns (applied, duplicates skipped).
async fn apply_all<H: Handler>(
    shared: &Shared<H>,
    tx: &mut PgConnection,
    topic: &str,
    partition: i32,
    envelopes: &[Envelope],
    ctx: &BatchContext,
) -> Result<(usize, usize), HandlerError> {
    if envelopes.is_empty() {
        return Ok((0, 0));
    }
    let ids: Vec<Uuid> = envelopes.iter().map(|e| e.event.event_id()).collect();
    let offsets: Vec<i64> = envelopes.iter().map(|e| e.offset).collect();
    let new: HashSet<Uuid> = store::record_applied(tx, topic, partition, &ids, &offsets)
        .await
        .map_err(|e| HandlerError::Transient(e.into()))?
        .into_iter()
        .collect();
    if new.len() == envelopes.len() {
        // The common case: nothing seen before, no copies needed.
        shared.handler.apply(tx, envelopes, ctx).await?;
        return Ok((envelopes.len(), 0));
    }
    let mut taken = HashSet::new();
    let fresh: Vec<Envelope> = envelopes
        .iter()
        .filter(|e| new.contains(&e.event.event_id()) && taken.insert(e.event.event_id()))
        .cloned()
        .collect();
    let duplicates = envelopes.len() - fresh.len();
    if !fresh.is_empty() {
        shared.handler.apply(tx, &fresh, ctx).await?;
    }
    Ok((fresh.len(), duplicates))
}
