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
