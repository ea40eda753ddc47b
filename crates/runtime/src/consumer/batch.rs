//! One batch of one partition in one Postgres transaction: decode, ledger dedupe, the
//! handler, savepoint isolation of an event that fails for good, dead letters, the offset.
//!
//! # Owns
//! [`Batcher::apply`], the heart of the guarantee: a batch's effects, the ids of its applied
//! events and the partition's next offset are committed together or not at all, and a dead
//! letter is acknowledged before the offset moves past it. It needs Postgres and somewhere
//! to send dead letters ([`DeadLetters`]), nothing else, so it is tested on hand-made
//! records without a broker (`batch/tests.rs`).
//!
//! # Must not touch
//! The Kafka consumer, partition queues, retries and backoff (the worker's), commits to
//! Kafka (the poll thread's): an error returned here means "transient, retry this batch".

use std::collections::HashSet;
use std::time::Instant;

use anyhow::Context as _;
use futures::future::BoxFuture;
use orderflow_events::Codec;
use rdkafka::Message;
use rdkafka::message::{Headers, OwnedMessage};
use sqlx::{Acquire, PgConnection, PgPool};
use uuid::Uuid;

use super::Tp;
use crate::dlq::ErrorClass;
use crate::handler::{BatchContext, Envelope, Handler, HandlerError};
use crate::{observe, store};

/// Where records that can never be applied go. The runtime's is the consumer's dead-letter
/// topic ([`crate::dlq::DeadLetterTopic`]).
pub(crate) trait DeadLetters: Send + Sync + 'static {
    /// Hand `record` over with why it failed; resolves once the destination acknowledged it.
    fn send<'a>(
        &'a self,
        record: &'a OwnedMessage,
        class: ErrorClass,
        error: &'a str,
    ) -> BoxFuture<'a, anyhow::Result<()>>;
}

/// Everything a batch needs: the handler, the read store, the codec and the dead letters.
pub(crate) struct Batcher<H: Handler> {
    pub handler: H,
    pub pool: PgPool,
    pub codec: Codec,
    pub dead_letters: Box<dyn DeadLetters>,
    /// The consumer's name (metrics, logs, [`BatchContext`]).
    pub consumer: String,
    pub replay: bool,
}

/// A record decoded into an envelope, skipped, or bound for the dead-letter topic. Short-lived
/// (one per record, consumed at once), so the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
enum Decoded {
    Apply(Envelope),
    Skip,
    Dead(ErrorClass, String),
}

impl<H: Handler> Batcher<H> {
    async fn decode(&self, message: &OwnedMessage) -> Result<Decoded, anyhow::Error> {
        let Some(payload) = message.payload() else {
            return Ok(Decoded::Dead(ErrorClass::Undecodable, "record has no value".into()));
        };
        match self.codec.decode(payload).await {
            Ok(event) => {
                // Headers that say another event than the bytes hold are a producer's bug: the
                // record is not applied as either (docs/events.md, "Headers").
                let pairs =
                    || message.headers().into_iter().flat_map(|h| h.iter()).map(|h| (h.key, h.value.unwrap_or(&[])));
                if let Err(error) = orderflow_events::headers::check_on_read(pairs(), &event) {
                    return Ok(Decoded::Dead(
                        ErrorClass::Undecodable,
                        format!("its CloudEvents headers disagree with its value: {error}"),
                    ));
                }
                if !self.handler.wants(&event) {
                    return Ok(Decoded::Skip);
                }
                let traceparent = pairs()
                    .find(|(key, _)| *key == orderflow_events::headers::TRACEPARENT)
                    .and_then(|(_, v)| std::str::from_utf8(v).ok())
                    .map(str::to_owned);
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

    /// Apply one batch of one partition (records in offset order) in one transaction.
    /// Returns the partition's next offset. An error means "transient: retry the same batch"
    /// (nothing of it was committed); permanent failures are dead-lettered. `topic_id` is the
    /// topic's id (KIP-516) when the partition was assigned, recorded with its first offset.
    pub(crate) async fn apply(&self, tp: &Tp, topic_id: Option<&str>, batch: &[OwnedMessage]) -> anyhow::Result<i64> {
        let started = Instant::now();
        let (topic, partition) = (tp.0.as_str(), tp.1);
        let ctx = BatchContext { consumer: self.consumer.clone(), replay: self.replay };

        let mut tx = self.pool.begin().await.context("Failed to open a transaction")?;
        let stored =
            store::lock_offset(&mut tx, topic, partition, topic_id).await.context("Failed to lock the offset row")?;
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
            match self.decode(message).await? {
                Decoded::Apply(envelope) => envelopes.push(envelope),
                Decoded::Skip => {}
                Decoded::Dead(class, error) => dead.push((message, class, error)),
            }
        }

        // Held until this function returns: each event's span lasts until its batch committed.
        let event_spans = observe::event_spans(&self.consumer, &envelopes);

        let (applied, duplicates) = match self.apply_new(&mut tx, topic, partition, &envelopes, &ctx).await {
            Ok(counts) => counts,
            Err(HandlerError::Transient(error)) => return Err(error),
            Err(HandlerError::Permanent(error)) => {
                // Find the culprit(s): redo the batch one event at a time, each in a savepoint.
                tracing::info!(error = %format!("{error:#}"), "batch failed permanently; isolating the failing events");
                tx.rollback().await.ok();
                tx = self.pool.begin().await.context("Failed to open a transaction")?;
                let again = store::lock_offset(&mut tx, topic, partition, topic_id).await?;
                anyhow::ensure!(again == stored, "offset of {topic}[{partition}] moved while isolating; retrying");
                let mut applied = 0;
                let mut duplicates = 0;
                for envelope in &envelopes {
                    let mut savepoint = tx.begin().await?;
                    match self.apply_new(&mut savepoint, topic, partition, std::slice::from_ref(envelope), &ctx).await {
                        Ok((a, d)) => {
                            savepoint.commit().await?;
                            applied += a;
                            duplicates += d;
                        }
                        Err(HandlerError::Transient(error)) => return Err(error),
                        Err(HandlerError::Permanent(error)) => {
                            savepoint.rollback().await?;
                            let message = fresh
                                .iter()
                                .find(|m| m.offset() == envelope.offset)
                                .context("an isolated event's record is not in its batch")?;
                            dead.push((message, ErrorClass::Permanent, format!("{error:#}")));
                            observe::event_span_failed(&event_spans, &envelopes, envelope.offset);
                        }
                    }
                }
                (applied, duplicates)
            }
        };

        // Dead letters are acknowledged before the offset moves past them.
        dead.sort_by_key(|(m, _, _)| m.offset());
        for (message, class, error) in &dead {
            self.dead_letters.send(message, *class, error).await?;
            observe::dead_lettered(&self.consumer, topic, partition, message.offset(), class.as_str(), error);
        }
        store::save_offset(&mut tx, topic, partition, next_offset).await.context("Failed to store the offset")?;
        tx.commit().await.context("Failed to commit the batch")?;
        observe::batch_applied(&self.consumer, topic, partition, applied, duplicates, started.elapsed());
        Ok(next_offset)
    }

    /// Skip what was applied before and hand the rest to the handler. An event with a natural
    /// key (an order: docs/events.md, "Natural keys") is recorded by claiming its key, and the
    /// claim is its ledger entry: a copy of it (same event id) finds its own claim and is
    /// skipped, a repeat of its fact under another event id with the same content is skipped,
    /// and one with different content fails permanently (dead-lettered once isolated). Every
    /// other event is recorded in the applied-event ledger, which skips an id applied before.
    /// Returns (applied, duplicates skipped).
    async fn apply_new(
        &self,
        tx: &mut PgConnection,
        topic: &str,
        partition: i32,
        envelopes: &[Envelope],
        ctx: &BatchContext,
    ) -> Result<(usize, usize), HandlerError> {
        if envelopes.is_empty() {
            return Ok((0, 0));
        }
        // In-batch copies of one event id: the first stands for all.
        let mut taken = HashSet::new();
        let mut claims = Vec::new();
        let (mut ids, mut offsets) = (Vec::new(), Vec::new());
        for envelope in envelopes {
            let id = envelope.event.event_id();
            if !taken.insert(id) {
                continue;
            }
            match envelope.event.natural_key() {
                Some(key) => claims.push(store::NaturalKeyClaim {
                    kind: key.kind,
                    key: key.key,
                    fingerprint: key.fingerprint,
                    event_id: id,
                    offset: envelope.offset,
                }),
                None => {
                    ids.push(id);
                    offsets.push(envelope.offset);
                }
            }
        }
        let mut new: HashSet<Uuid> = HashSet::with_capacity(taken.len());
        if !ids.is_empty() {
            new.extend(
                store::record_applied(tx, topic, partition, &ids, &offsets)
                    .await
                    .map_err(|e| HandlerError::Transient(e.into()))?,
            );
        }
        if !claims.is_empty() {
            new.extend(self.claim_facts(tx, topic, partition, &claims).await?);
        }
        let duplicates = envelopes.len() - new.len();
        if duplicates == 0 {
            // The common case: nothing seen before, no copies needed.
            self.call_handler(tx, envelopes, ctx).await?;
        } else if !new.is_empty() {
            let mut first = HashSet::with_capacity(new.len());
            let fresh: Vec<Envelope> = envelopes
                .iter()
                .filter(|e| new.contains(&e.event.event_id()) && first.insert(e.event.event_id()))
                .cloned()
                .collect();
            self.call_handler(tx, &fresh, ctx).await?;
        }
        Ok((envelopes.len() - duplicates, duplicates))
    }

    /// Claim the natural keys of `claims` (one per event id); returns the event ids to apply.
    /// A claim that loses to its own event id (applied before) or to another event with the
    /// same content (a repeat: the same order placed twice) is dropped; one that loses to
    /// different content fails permanently, naming the first event.
    async fn claim_facts(
        &self,
        tx: &mut PgConnection,
        topic: &str,
        partition: i32,
        claims: &[store::NaturalKeyClaim],
    ) -> Result<Vec<Uuid>, HandlerError> {
        let won = store::claim_natural_keys(tx, topic, partition, claims)
            .await
            .map_err(|e| HandlerError::Transient(e.into()))?;
        if won.len() == claims.len() {
            return Ok(won);
        }
        let won_set: HashSet<Uuid> = won.iter().copied().collect();
        let lost: Vec<&store::NaturalKeyClaim> = claims.iter().filter(|c| !won_set.contains(&c.event_id)).collect();
        let keys: Vec<(&str, &str)> = lost.iter().map(|c| (c.kind, c.key.as_str())).collect();
        let owners = store::natural_key_owners(tx, &keys).await.map_err(|e| HandlerError::Transient(e.into()))?;
        for claim in lost {
            let owner = owners.get(&(claim.kind.to_owned(), claim.key.clone())).ok_or_else(|| {
                HandlerError::Transient(anyhow::anyhow!(
                    "natural key {} {} has no owner after a conflict",
                    claim.kind,
                    claim.key
                ))
            })?;
            if owner.event_id == claim.event_id {
                continue; // this very event, applied before: a redelivered copy
            }
            if owner.fingerprint != claim.fingerprint {
                return Err(HandlerError::permanent(conflict(claim, owner.event_id)));
            }
            tracing::info!(
                consumer = self.consumer,
                kind = claim.kind,
                key = claim.key,
                event_id = %claim.event_id,
                first_event_id = %owner.event_id,
                "a repeat of a fact already applied; skipped as a duplicate"
            );
        }
        Ok(won)
    }

    /// The handler's `apply`, with a panic turned into a permanent failure: the batch is then
    /// isolated event by event like any permanent failure, the panicking event is
    /// dead-lettered with the panic's message, and the partition keeps flowing. (Without
    /// this a panic would end the partition's worker, silently.)
    async fn call_handler(
        &self,
        tx: &mut PgConnection,
        envelopes: &[Envelope],
        ctx: &BatchContext,
    ) -> Result<(), HandlerError> {
        use futures::FutureExt;
        match std::panic::AssertUnwindSafe(self.handler.apply(tx, envelopes, ctx)).catch_unwind().await {
            Ok(result) => result,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".to_owned());
                tracing::error!(
                    consumer = self.consumer,
                    panic = message,
                    "the handler panicked; treating it as a permanent failure"
                );
                Err(HandlerError::permanent(format!("the handler panicked: {message}")))
            }
        }
    }
}

/// Why an event that conflicts with the fact applied under its natural key is not applied.
fn conflict(claim: &store::NaturalKeyClaim, first: Uuid) -> String {
    match claim.kind {
        orderflow_events::OrderPlaced::NATURAL_KEY_KIND => format!(
            "order {} was already placed by event {first} with different content (customer, currency, lines, \
             total, shipping address or channel); event {} conflicts with it and is not applied",
            claim.key, claim.event_id
        ),
        kind => format!(
            "{kind} {} was already applied from event {first} with different content; event {} conflicts with it \
             and is not applied",
            claim.key, claim.event_id
        ),
    }
}

#[cfg(test)]
mod tests;
