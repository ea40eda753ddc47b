//! What the operator endpoints and the lag gauges read about the consumer: whether it joined
//! its group, and each assigned partition's progress and watermarks.
//!
//! # Owns
//! [`Health`] and [`PartitionStatus`]: plain atomics written by the poll thread (statistics,
//! assignment) and the workers (progress), read by `/readyz`, the lag gauges and the reads
//! that wait on a consistency token (`crate::consistency`), which a commit wakes.
//!
//! # Must not touch
//! Kafka, Postgres or the workers: it only holds numbers others write.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use super::Tp;

/// Why a partition's stored offset does not belong to the log the broker has: the partition
/// is held (nothing applied, nothing skipped) until an operator moves the offset
/// (`orderflow offsets reset`). The runtime never resets on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetConflict {
    /// The topic was deleted and created again (or the store belongs to another cluster):
    /// the stored offset counts records of another log.
    TopicRecreated { stored_offset: i64, stored_id: String, current_id: String },
    /// The stored offset is beyond the log's end: the log was truncated, recreated, or the
    /// store was restored from a backup newer than the cluster.
    AheadOfLog { stored_offset: i64, log_end: i64 },
    /// Records from the stored offset up to the log start were deleted (retention, or
    /// `DeleteRecords`) before they were applied.
    BelowLogStart { stored_offset: i64, log_start: i64 },
    /// The broker said the position the partition was at is out of range while it was being
    /// read (`auto.offset.reset=error`), with the watermarks last seen.
    OutOfRange { next_offset: i64, log_start: i64, log_end: i64 },
}

impl OffsetConflict {
    /// Check a stored offset (and the topic id stored with it) against the log: its topic id
    /// now and its start and end offsets. `None`: the offset belongs to this log.
    pub fn check(
        stored_offset: i64,
        stored_id: Option<&str>,
        current_id: Option<&str>,
        log_start: i64,
        log_end: i64,
    ) -> Option<OffsetConflict> {
        if let (Some(stored), Some(current)) = (stored_id, current_id)
            && stored != current
        {
            return Some(OffsetConflict::TopicRecreated {
                stored_offset,
                stored_id: stored.to_owned(),
                current_id: current.to_owned(),
            });
        }
        if stored_offset > log_end {
            return Some(OffsetConflict::AheadOfLog { stored_offset, log_end });
        }
        if stored_offset < log_start {
            return Some(OffsetConflict::BelowLogStart { stored_offset, log_start });
        }
        None
    }

    /// The metric label and alert reason: `topic_recreated`, `ahead_of_log`,
    /// `below_log_start` or `out_of_range`.
    pub fn reason(&self) -> &'static str {
        match self {
            OffsetConflict::TopicRecreated { .. } => "topic_recreated",
            OffsetConflict::AheadOfLog { .. } => "ahead_of_log",
            OffsetConflict::BelowLogStart { .. } => "below_log_start",
            OffsetConflict::OutOfRange { .. } => "out_of_range",
        }
    }
}

impl std::fmt::Display for OffsetConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OffsetConflict::TopicRecreated { stored_offset, stored_id, current_id } => write!(
                f,
                "stored offset {stored_offset} belongs to topic id {stored_id}, but the topic's id is now {current_id} \
                 (deleted and created again, or another cluster)"
            ),
            OffsetConflict::AheadOfLog { stored_offset, log_end } => {
                write!(f, "stored offset {stored_offset} is ahead of the log end {log_end}")
            }
            OffsetConflict::BelowLogStart { stored_offset, log_start } => write!(
                f,
                "stored offset {stored_offset} is below the log start {log_start}: records never applied were deleted"
            ),
            OffsetConflict::OutOfRange { next_offset, log_start, log_end } => write!(
                f,
                "the broker says offset {next_offset} is out of range (log start {log_start}, log end {log_end} \
                 last seen)"
            ),
        }
    }
}

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
    /// Kafka timestamp (ms) of the last record of the last committed batch; 0 until one.
    pub last_applied_ms: AtomicI64,
    /// Since when (ms) the lag gauges have seen this partition behind at `behind_at_offset`
    /// without progress; 0 while caught up.
    behind_since_ms: AtomicI64,
    behind_at_offset: AtomicI64,
    /// Woken after every committed batch (reads waiting on a consistency token).
    pub applied: tokio::sync::Notify,
    /// Set when the stored offset turned out not to belong to the log: the partition is held.
    pub conflict: Mutex<Option<OffsetConflict>>,
}

impl PartitionStatus {
    /// A partition just assigned, starting at `next` (its stored offset, if any); its
    /// watermarks arrive with the next statistics.
    pub fn starting_at(next: Option<i64>) -> Self {
        PartitionStatus {
            next_offset: AtomicI64::new(next.unwrap_or(-1)),
            oldest_pending_ms: AtomicI64::new(0),
            high_watermark: AtomicI64::new(-1),
            low_watermark: AtomicI64::new(-1),
            last_applied_ms: AtomicI64::new(0),
            behind_since_ms: AtomicI64::new(0),
            behind_at_offset: AtomicI64::new(-1),
            applied: tokio::sync::Notify::new(),
            conflict: Mutex::new(None),
        }
    }

    /// Why the partition is held, if it is.
    pub fn conflict(&self) -> Option<OffsetConflict> {
        self.conflict.lock().unwrap().clone()
    }

    /// The batch ending just before `next_offset`, whose last record has Kafka timestamp
    /// `last_ms`, is committed.
    pub fn committed(&self, next_offset: i64, last_ms: Option<i64>) {
        self.next_offset.store(next_offset, Ordering::SeqCst);
        self.oldest_pending_ms.store(0, Ordering::Relaxed);
        if let Some(ms) = last_ms {
            self.last_applied_ms.fetch_max(ms, Ordering::Relaxed);
        }
        self.applied.notify_waiters();
    }

    /// Lag in seconds at `now_ms`: the age of the oldest record not applied yet. Known exactly
    /// while a batch holding it is in progress (its Kafka timestamp); otherwise (the worker
    /// waits for records it has not received, or has not pulled them yet) at least how long
    /// the partition has been seen behind at the same next offset. So a consumer stuck
    /// behind shows a growing value, never 0. Called by the lag gauges at every statistics
    /// tick, which is what records "seen behind".
    pub fn lag_seconds(&self, now_ms: i64) -> f64 {
        if self.lag().unwrap_or(0) == 0 {
            self.behind_since_ms.store(0, Ordering::Relaxed);
            self.behind_at_offset.store(-1, Ordering::Relaxed);
            return 0.0;
        }
        let next = self.next_offset.load(Ordering::SeqCst);
        if self.behind_at_offset.swap(next, Ordering::Relaxed) != next
            || self.behind_since_ms.load(Ordering::Relaxed) == 0
        {
            self.behind_since_ms.store(now_ms, Ordering::Relaxed);
        }
        let pending = match self.oldest_pending_ms.load(Ordering::Relaxed) {
            0 => 0,
            oldest => now_ms - oldest,
        };
        let stalled = now_ms - self.behind_since_ms.load(Ordering::Relaxed);
        pending.max(stalled).max(0) as f64 / 1000.0
    }

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

    /// The assigned partitions held by an offset conflict, in partition order.
    pub fn conflicts(&self) -> Vec<(Tp, OffsetConflict)> {
        let partitions = self.partitions.lock().unwrap();
        let mut held: Vec<(Tp, OffsetConflict)> =
            partitions.iter().filter_map(|(tp, s)| s.conflict().map(|c| (tp.clone(), c))).collect();
        held.sort_by(|a, b| a.0.cmp(&b.0));
        held
    }

    /// Ready: joined the group (an assignment arrived, possibly empty) and caught up enough.
    /// A partition whose lag is not known yet counts as not caught up: a fresh consumer facing
    /// a backlog must not report ready in the second before its first statistics.
    /// A partition held by an offset conflict is never ready: its store stopped following
    /// the log, and the detail names each such partition and its positions.
    pub fn ready(&self) -> (bool, String) {
        if !self.joined.load(Ordering::Relaxed) {
            return (false, "not yet assigned partitions by the group".into());
        }
        let conflicts = self.conflicts();
        if !conflicts.is_empty() {
            let each: Vec<String> =
                conflicts.iter().map(|((topic, partition), c)| format!("{topic}[{partition}]: {c}")).collect();
            return (
                false,
                format!(
                    "offsets conflict with the log, {} partition(s) held (resolve with `orderflow offsets reset`): {}",
                    conflicts.len(),
                    each.join("; ")
                ),
            );
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

#[cfg(test)]
mod tests {
    use super::*;

    fn behind(next: i64, high: i64) -> PartitionStatus {
        let status = PartitionStatus::starting_at(Some(next));
        status.high_watermark.store(high, Ordering::Relaxed);
        status
    }

    #[test]
    fn a_partition_stuck_behind_with_no_batch_in_progress_shows_a_growing_lag_in_seconds() {
        let status = behind(10, 50);
        assert_eq!(status.lag_seconds(1_000_000), 0.0, "first seen behind now");
        assert_eq!(status.lag_seconds(1_005_000), 5.0);
        assert_eq!(status.lag_seconds(1_030_000), 30.0, "still at offset 10: still growing");
    }

    #[test]
    fn progress_restarts_the_clock_and_a_pending_batch_gives_the_age_of_its_oldest_record() {
        let status = behind(10, 50);
        status.lag_seconds(1_000_000);
        status.committed(20, Some(999_000));
        assert_eq!(status.lag_seconds(1_010_000), 0.0, "moved on: behind at a new offset from now");
        status.oldest_pending_ms.store(1_002_000, Ordering::Relaxed);
        assert_eq!(status.lag_seconds(1_012_000), 10.0, "the batch in progress started with a record 10 s old");
    }

    #[test]
    fn a_stored_offset_is_checked_against_the_topic_id_and_both_ends_of_the_log() {
        assert_eq!(OffsetConflict::check(10, Some("a"), Some("a"), 0, 50), None);
        assert_eq!(OffsetConflict::check(50, None, Some("a"), 0, 50), None, "caught up is at the end");
        assert_eq!(OffsetConflict::check(7, Some("a"), None, 7, 50), None, "at the start");
        assert_eq!(
            OffsetConflict::check(10, Some("a"), Some("b"), 0, 50).map(|c| c.reason()),
            Some("topic_recreated"),
            "another topic of the same name, even with its offset in range"
        );
        assert_eq!(
            OffsetConflict::check(357, Some("a"), Some("a"), 0, 26),
            Some(OffsetConflict::AheadOfLog { stored_offset: 357, log_end: 26 })
        );
        assert_eq!(
            OffsetConflict::check(3, None, None, 10, 26),
            Some(OffsetConflict::BelowLogStart { stored_offset: 3, log_start: 10 })
        );
    }

    #[test]
    fn a_held_partition_makes_the_consumer_unready_naming_it_and_its_positions() {
        let health = Health::default();
        health.joined.store(true, Ordering::Relaxed);
        health.ready_max_lag.store(1000, Ordering::Relaxed);
        let status = Arc::new(behind(357, 26));
        *status.conflict.lock().unwrap() = Some(OffsetConflict::AheadOfLog { stored_offset: 357, log_end: 26 });
        health.partitions.lock().unwrap().insert(("inventory.v1".into(), 0), status);
        let (ready, detail) = health.ready();
        assert!(!ready);
        assert!(detail.contains("inventory.v1[0]: stored offset 357 is ahead of the log end 26"), "{detail}");
    }

    #[test]
    fn a_caught_up_partition_has_no_lag_in_seconds() {
        let status = behind(50, 50);
        status.oldest_pending_ms.store(1, Ordering::Relaxed);
        assert_eq!(status.lag_seconds(1_000_000), 0.0);
        let unknown = PartitionStatus::starting_at(None);
        assert_eq!(unknown.lag_seconds(1_000_000), 0.0, "watermarks not known yet");
    }
}
