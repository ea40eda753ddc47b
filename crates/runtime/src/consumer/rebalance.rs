//! The state the poll thread shares with librdkafka's callbacks, and the callbacks: a
//! rebalance starts a worker per new partition at its stored offset, and drains the workers
//! of revoked partitions before giving them back; statistics carry the watermarks.
//!
//! # Owns
//! [`Shared`] (the running workers, the commits waiting for Kafka, the consumer's stop token)
//! and [`LoopContext`] (librdkafka's `ClientContext` and `ConsumerContext`): assignment,
//! revocation, reading the stored start offsets, stopping workers, committing to Kafka.
//!
//! # Must not touch
//! A batch's transaction (that is [`super::batch`]), and the read store's tables beyond
//! reading the stored offsets through [`crate::store`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::batch::Batcher;
use super::feed::Feed;
use super::health::{Health, OffsetConflict, PartitionStatus};
use super::worker::{Batching, Commits, Worker};
use super::{LoopSettings, Tp};
use crate::handler::Handler;
use crate::{observe, store};

/// How long a stopping worker may take to finish its transaction in flight.
const WORKER_GRACE: Duration = Duration::from_secs(60);

/// How long an assignment retries reading the stored offsets before it falls back to the
/// group's Kafka offsets.
const LOAD_OFFSETS_FOR: Duration = Duration::from_secs(20);

/// How long an assignment waits for the topics' ids and each partition's watermarks, which it
/// checks the stored offsets against.
const CHECK_LOG_FOR: Duration = Duration::from_secs(10);

/// State shared by the polling thread, its rebalance callback and the workers.
pub(crate) struct Shared<H: Handler> {
    pub batcher: Arc<Batcher<H>>,
    pub settings: LoopSettings,
    pub runtime: tokio::runtime::Handle,
    pub health: Arc<Health>,
    /// Cancelled when the consumer stops; every worker's token is a child of it.
    pub stop: CancellationToken,
    workers: Mutex<HashMap<Tp, Worker>>,
    commits: Arc<Commits>,
    /// The consumer, set once the polling thread created it: the rebalance callback splits
    /// partition queues off it, which takes an `Arc`.
    consumer: OnceLock<Weak<BaseConsumer<LoopContext<H>>>>,
}

impl<H: Handler> Shared<H> {
    pub fn new(batcher: Arc<Batcher<H>>, settings: LoopSettings, health: Arc<Health>, stop: CancellationToken) -> Self {
        health.ready_max_lag.store(settings.ready_max_lag, Ordering::Relaxed);
        Shared {
            batcher,
            settings,
            runtime: tokio::runtime::Handle::current(),
            health,
            stop,
            workers: Mutex::new(HashMap::new()),
            commits: Arc::new(Mutex::new(Vec::new())),
            consumer: OnceLock::new(),
        }
    }

    pub fn consumer_name(&self) -> &str {
        &self.settings.consumer
    }

    /// Remember the consumer the rebalance callbacks split partition queues off.
    pub fn register(&self, consumer: &Arc<BaseConsumer<LoopContext<H>>>) {
        let _ = self.consumer.set(Arc::downgrade(consumer));
    }

    /// The partitions with a running worker.
    pub fn assigned(&self) -> HashSet<Tp> {
        self.workers.lock().unwrap().keys().cloned().collect()
    }

    /// Take the next offsets the workers committed since the last call, for partitions still
    /// assigned here.
    pub fn take_commits(&self) -> Vec<(Tp, i64)> {
        let commits = std::mem::take(&mut *self.commits.lock().unwrap());
        if commits.is_empty() {
            return commits;
        }
        let workers = self.workers.lock().unwrap();
        commits.into_iter().filter(|(tp, _)| workers.contains_key(tp)).collect()
    }

    /// Each assigned partition's lag, and how many are held, for the gauges.
    pub fn report_lag(&self) {
        observe::partitions_held(self.consumer_name(), self.health.conflicts().len());
        let workers = self.workers.lock().unwrap();
        let now_ms = chrono::Utc::now().timestamp_millis();
        for ((topic, partition), worker) in workers.iter() {
            let lag = worker.status.lag().unwrap_or(0);
            observe::lag(self.consumer_name(), topic, *partition, lag, worker.status.lag_seconds(now_ms));
        }
    }

    /// Stop the workers of `partitions`, wait for each to finish its current transaction, and
    /// return the next offsets they reached. Needs no tokio runtime: it also runs after the
    /// runtime was dropped.
    pub fn stop_workers(&self, partitions: &[Tp]) -> Vec<(Tp, i64)> {
        let stopping: Vec<(Tp, Worker)> = {
            let mut workers = self.workers.lock().unwrap();
            partitions.iter().filter_map(|tp| workers.remove(tp).map(|w| (tp.clone(), w))).collect()
        };
        let mut finals = Vec::new();
        for (tp, worker) in stopping {
            if let Some(conflict) = worker.status.conflict() {
                observe::offset_conflict_cleared(self.consumer_name(), &tp.0, tp.1, &conflict);
            }
            let next = worker.stop(&tp, WORKER_GRACE);
            self.health.partitions.lock().unwrap().remove(&tp);
            if let Some(next) = next {
                finals.push((tp, next));
            }
        }
        finals
    }

    /// The stored next offsets of `topic`'s partitions, retried for a while: an assignment
    /// that cannot read them falls back to the group's Kafka offsets. Gives up at once when
    /// the consumer is stopping (the tokio runtime may be gone).
    fn load_offsets_with_retry(&self, topic: &str) -> anyhow::Result<HashMap<i32, store::StoredOffset>> {
        let deadline = Instant::now() + LOAD_OFFSETS_FOR;
        let mut backoff = Duration::from_millis(100);
        loop {
            anyhow::ensure!(!self.stop.is_cancelled(), "the consumer is stopping");
            let loaded = self.block_on(store::load_offsets(&self.batcher.pool, topic))?;
            match loaded {
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

    /// Run `future` on the runtime from the poll thread (a librdkafka callback). A panic must
    /// not unwind into librdkafka's callback (that aborts the process): it becomes an error.
    fn block_on<T>(&self, future: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.runtime.block_on(future)))
            .map_err(|_| anyhow::anyhow!("a database call from the poll thread panicked (the tokio runtime is gone)"))
    }

    /// Check each stored offset of the new partitions against the log it is about to read: the
    /// topic's id now (is it the topic the offset was stored for?) and the partition's start
    /// and end offsets (does the log still hold that position?). Returns the conflicts; records
    /// the topic's id for partitions whose offsets check out and have none recorded yet.
    /// What cannot be asked (a broker that does not answer in time) is logged and not checked
    /// here; a position out of range still stops the partition once fetched.
    fn check_stored_offsets(
        &self,
        consumer: &BaseConsumer<LoopContext<H>>,
        starts: &[(String, i32, Option<store::StoredOffset>)],
        topic_ids: &HashMap<String, String>,
    ) -> HashMap<Tp, OffsetConflict> {
        let mut conflicts = HashMap::new();
        let mut adopt: HashMap<&str, Vec<i32>> = HashMap::new();
        for (topic, partition, stored) in starts {
            let Some(stored) = stored else { continue };
            let (low, high) = match consumer.fetch_watermarks(topic, *partition, CHECK_LOG_FOR) {
                Ok(watermarks) => watermarks,
                Err(error) => {
                    tracing::warn!(consumer = self.consumer_name(), topic, partition, error = %error,
                        "could not read the partition's start and end offsets; starting at the stored offset unchecked");
                    continue;
                }
            };
            let current_id = topic_ids.get(topic).map(String::as_str);
            match OffsetConflict::check(stored.next_offset, stored.topic_id.as_deref(), current_id, low, high) {
                Some(conflict) => {
                    conflicts.insert((topic.clone(), *partition), conflict);
                }
                None if stored.topic_id.is_none() && current_id.is_some() => {
                    adopt.entry(topic.as_str()).or_default().push(*partition);
                }
                None => {}
            }
        }
        for (topic, partitions) in adopt {
            let id = &topic_ids[topic];
            match self.block_on(store::adopt_topic_id(&self.batcher.pool, topic, &partitions, id)) {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::warn!(consumer = self.consumer_name(), topic, error = %error,
                    "could not record the topic's id with its stored offsets; it is recorded at the next assignment"),
                Err(error) => tracing::warn!(consumer = self.consumer_name(), topic, error = %error,
                    "could not record the topic's id with its stored offsets"),
            }
        }
        conflicts
    }

    /// `topic` was deleted and created again under this consumer (its id went from `from` to
    /// `to`): every partition of it assigned here is held, its worker applying nothing more.
    fn hold_recreated_topic(&self, topic: &str, from: &str, to: &str) {
        let partitions = self.health.partitions.lock().unwrap();
        for ((t, partition), status) in partitions.iter() {
            if t != topic {
                continue;
            }
            let conflict = OffsetConflict::TopicRecreated {
                stored_offset: status.next_offset.load(Ordering::SeqCst),
                stored_id: from.to_owned(),
                current_id: to.to_owned(),
            };
            let mut held = status.conflict.lock().unwrap();
            if held.is_none() {
                observe::offset_conflict(
                    self.consumer_name(),
                    topic,
                    *partition,
                    &conflict,
                    "the topic's id changed while it was read",
                );
                *held = Some(conflict);
            }
        }
    }
}

pub(crate) struct LoopContext<H: Handler> {
    pub shared: Arc<Shared<H>>,
}

/// What librdkafka logs, at debug level with `debug=metadata`, when a metadata response gives a
/// topic another id than it had: the topic was deleted and created again under the consumer.
/// librdkafka then goes on fetching at the same offsets from the new log (its own FIXME: it
/// resets only when those offsets happen to be out of range in the new log), so the runtime
/// holds the topic's partitions itself. The line's shape is pinned by the bundled librdkafka
/// (rdkafka-sys); a test recreates a topic under a running consumer and fails if it changes.
fn recreated_topic<'a>(fac: &str, message: &'a str) -> Option<(&'a str, &'a str, &'a str)> {
    if fac != "METADATA" {
        return None;
    }
    // "[thrd:main]: Topic orders.v1 changed id from <base64> to <base64>"
    let message = message.strip_prefix('[').and_then(|m| m.split_once("]: ")).map_or(message, |(_, rest)| rest);
    let rest = message.strip_prefix("Topic ")?;
    let (topic, rest) = rest.split_once(" changed id from ")?;
    let (from, to) = rest.split_once(" to ")?;
    // The first metadata of a topic "changes" its id from the all-zero one: nothing recreated.
    (from != orderflow_kafka::topic_ids::NO_TOPIC_ID).then(|| (topic, from.trim(), to.trim()))
}

impl<H: Handler> ClientContext for LoopContext<H> {
    /// librdkafka's log lines go to `tracing` (target `librdkafka`), as rust-rdkafka's default
    /// does; a topic whose id changed under the consumer holds its partitions here (called on
    /// librdkafka's metadata thread, before any record of the new log can be fetched).
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as Level;
        if let Some((topic, from, to)) = recreated_topic(fac, message) {
            self.shared.hold_recreated_topic(topic, from, to);
        }
        match level {
            Level::Emerg | Level::Alert | Level::Critical | Level::Error => {
                tracing::error!(target: "librdkafka", "librdkafka: {fac} {message}")
            }
            Level::Warning => tracing::warn!(target: "librdkafka", "librdkafka: {fac} {message}"),
            Level::Notice | Level::Info => tracing::info!(target: "librdkafka", "librdkafka: {fac} {message}"),
            Level::Debug => tracing::debug!(target: "librdkafka", "librdkafka: {fac} {message}"),
        }
    }

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
    /// Start the new partitions at the offsets stored in Postgres (authoritative), each checked
    /// against the log first, then spawn a worker for each; one whose offset does not belong
    /// to the log is held (see [`OffsetConflict`]).
    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let shared = &self.shared;
        let topics: HashSet<String> = tpl.elements().iter().map(|e| e.topic().to_owned()).collect();
        let mut stored: HashMap<String, HashMap<i32, store::StoredOffset>> = HashMap::new();
        let mut loaded = true;
        for topic in &topics {
            match shared.load_offsets_with_retry(topic) {
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
            let next = stored.get(&topic).and_then(|o| o.get(&partition)).cloned();
            starts.push((topic, partition, next));
        }
        // The topics' ids now (KIP-516), one request for all, to tell a topic deleted and
        // created again from the one the offsets were stored for.
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        let topic_ids = match orderflow_kafka::topic_ids::topic_ids(consumer.client(), &names, CHECK_LOG_FOR) {
            Ok(ids) => ids,
            Err(error) => {
                tracing::warn!(consumer = shared.consumer_name(), error = %error,
                    "could not read the topics' ids; stored offsets are checked against the log's start and end only");
                HashMap::new()
            }
        };
        let mut conflicts = shared.check_stored_offsets(consumer, &starts, &topic_ids);
        for (topic, partition, next) in &starts {
            let offset = match next {
                Some(next) => Offset::Offset(next.next_offset),
                None if loaded => Offset::Beginning,
                None => Offset::Stored,
            };
            if let Err(error) = tpl.set_partition_offset(topic, *partition, offset) {
                tracing::error!(topic, partition, error = %error, "could not set the start offset");
            }
        }
        // Split each partition's queue off before fetching starts, so no record of it can land
        // on the main queue (librdkafka keeps an application's split across the fetch start).
        let mut feeds: HashMap<Tp, Feed<Self>> = HashMap::new();
        match shared.consumer.get().and_then(Weak::upgrade) {
            Some(owner) => {
                // A partition that already has a worker keeps its queue: splitting it again and
                // dropping the new handle would switch off the running worker's wake-up.
                let running = shared.assigned();
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
        let batching = Batching { size: shared.settings.batch_size, wait: shared.settings.batch_wait };
        let mut workers = shared.workers.lock().unwrap();
        for (topic, partition, next) in starts {
            let tp = (topic.clone(), partition);
            if workers.contains_key(&tp) {
                continue;
            }
            let Some(feed) = feeds.remove(&tp) else { continue };
            let status = Arc::new(PartitionStatus::starting_at(next.map(|n| n.next_offset)));
            if let Some(conflict) = conflicts.remove(&tp) {
                observe::offset_conflict(shared.consumer_name(), &topic, partition, &conflict, "checked at assignment");
                *status.conflict.lock().unwrap() = Some(conflict);
            }
            let worker = Worker::spawn(
                &shared.runtime,
                shared.batcher.clone(),
                tp.clone(),
                topic_ids.get(&topic).cloned(),
                feed,
                batching,
                shared.stop.child_token(),
                status.clone(),
                shared.commits.clone(),
            );
            shared.health.partitions.lock().unwrap().insert(tp.clone(), status);
            workers.insert(tp, worker);
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
        let final_offsets = shared.stop_workers(&revoked);
        commit_to_kafka(consumer, &final_offsets, CommitMode::Sync);
        if let Err(error) = consumer.incremental_unassign(tpl) {
            tracing::warn!(consumer = shared.consumer_name(), error = %error, "incremental unassign failed");
        }
        let remaining = shared.workers.lock().unwrap().len();
        tracing::info!(consumer = shared.consumer_name(), revoked = revoked.len(), remaining, "partitions revoked");
        observe::partitions_assigned(shared.consumer_name(), remaining);
    }
}

/// Copy next offsets to the group's Kafka offsets (for lag tools; Postgres holds the real ones).
pub(crate) fn commit_to_kafka<C: ConsumerContext>(consumer: &BaseConsumer<C>, offsets: &[(Tp, i64)], mode: CommitMode) {
    if offsets.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), next) in offsets {
        let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next));
    }
    if let Err(error) = consumer.commit(&tpl, mode) {
        tracing::debug!(error = %error, "committing offsets to Kafka failed (informational copy)");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn librdkafkas_line_for_a_topic_whose_id_changed_names_the_topic_and_both_ids() {
        assert_eq!(
            super::recreated_topic("METADATA", "[thrd:main]: Topic orders.v1 changed id from AAAB+/bb to CCCC=="),
            Some(("orders.v1", "AAAB+/bb", "CCCC=="))
        );
        assert_eq!(
            super::recreated_topic("METADATA", "[thrd:app]: Topic o changed id from AAAAAAAAAAAAAAAAAAAAAA to CCCC"),
            None,
            "a topic's first id"
        );
        assert_eq!(super::recreated_topic("METADATA", "Topic orders.v1 with 6 partitions"), None);
        assert_eq!(super::recreated_topic("FETCH", "Topic a changed id from b to c"), None);
    }
}
