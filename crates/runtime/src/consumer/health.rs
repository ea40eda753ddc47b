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
        }
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
    fn a_caught_up_partition_has_no_lag_in_seconds() {
        let status = behind(50, 50);
        status.oldest_pending_ms.store(1, Ordering::Relaxed);
        assert_eq!(status.lag_seconds(1_000_000), 0.0);
        let unknown = PartitionStatus::starting_at(None);
        assert_eq!(unknown.lag_seconds(1_000_000), 0.0, "watermarks not known yet");
    }
}
