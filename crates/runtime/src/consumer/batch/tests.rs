//! The batch path against Postgres alone: hand-made records, a real schema with the
//! runtime's tables, and dead letters recorded in memory instead of sent to a topic.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use orderflow_events::{Codec, Event};
use orderflow_testkit::events::{order, stock_change};
use orderflow_testkit::{TestSchema, fresh_schema};
use rdkafka::Timestamp;
use rdkafka::message::OwnedMessage;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Batcher, DeadLetters};
use crate::dlq::ErrorClass;
use crate::handler::{BatchContext, Envelope, Handler, HandlerError};
use crate::store;

const TOPIC: &str = "orders";

/// Records every application as a row (no key, so a second application shows as a second
/// row). A sku starting with `POISON` fails for good; one starting with `PANIC` makes the
/// handler panic; one starting with `FLAKY` fails transiently while `flaky` is set.
struct Recorder {
    flaky: Arc<AtomicBool>,
}

impl Handler for Recorder {
    fn name(&self) -> &str {
        "batch-test"
    }

    fn topics(&self) -> Vec<String> {
        vec![TOPIC.into()]
    }

    async fn apply(&self, tx: &mut PgConnection, batch: &[Envelope], _ctx: &BatchContext) -> Result<(), HandlerError> {
        for envelope in batch {
            if let Event::InventoryChanged(change) = &envelope.event {
                sqlx::query("INSERT INTO applied (order_id, \"offset\") VALUES ($1, $2)")
                    .bind(format!("stock:{}", change.sku.as_str()))
                    .bind(envelope.offset)
                    .execute(&mut *tx)
                    .await?;
                continue;
            }
            let Event::OrderPlaced(order) = &envelope.event else { continue };
            let skus = || order.lines.iter().map(|l| l.sku.as_str());
            if skus().any(|sku| sku.starts_with("PANIC")) {
                panic!("order {} made the handler panic", order.order_id.as_str());
            }
            if skus().any(|sku| sku.starts_with("POISON")) {
                return Err(HandlerError::permanent(format!("order {} has a poisoned sku", order.order_id.as_str())));
            }
            if skus().any(|sku| sku.starts_with("FLAKY")) && self.flaky.load(Ordering::SeqCst) {
                return Err(HandlerError::Transient(anyhow::anyhow!("the store is briefly unavailable")));
            }
            sqlx::query("INSERT INTO applied (order_id, \"offset\") VALUES ($1, $2)")
                .bind(order.order_id.as_str())
                .bind(envelope.offset)
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    }
}

/// Dead letters kept in memory: (offset, class, error).
#[derive(Clone, Default)]
struct Recorded(Arc<Mutex<Vec<(i64, ErrorClass, String)>>>);

impl DeadLetters for Recorded {
    fn send<'a>(
        &'a self,
        record: &'a OwnedMessage,
        class: ErrorClass,
        error: &'a str,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        use rdkafka::Message;
        self.0.lock().unwrap().push((record.offset(), class, error.to_owned()));
        Box::pin(async { Ok(()) })
    }
}

impl Recorded {
    fn sent(&self) -> Vec<(i64, ErrorClass, String)> {
        self.0.lock().unwrap().clone()
    }
}

struct Fixture {
    schema: TestSchema,
    batcher: Batcher<Recorder>,
    dead: Recorded,
    flaky: Arc<AtomicBool>,
}

async fn fixture(prefix: &str) -> Fixture {
    orderflow_testkit::init_test_logs();
    let schema = fresh_schema(prefix).await;
    store::migrate(&schema.pool).await.unwrap();
    sqlx::query("CREATE TABLE applied (order_id text NOT NULL, \"offset\" bigint NOT NULL)")
        .execute(&schema.pool)
        .await
        .unwrap();
    let flaky = Arc::new(AtomicBool::new(false));
    let dead = Recorded::default();
    let batcher = Batcher {
        handler: Recorder { flaky: flaky.clone() },
        pool: schema.pool.clone(),
        codec: Codec::new(),
        dead_letters: Box::new(dead.clone()),
        consumer: "batch-test".into(),
        replay: false,
    };
    Fixture { schema, batcher, dead, flaky }
}

impl Fixture {
    async fn apply(&self, batch: &[OwnedMessage]) -> anyhow::Result<i64> {
        self.batcher.apply(&(TOPIC.to_owned(), 0), None, batch).await
    }

    /// How many times each order was applied.
    async fn applied(&self) -> BTreeMap<String, i64> {
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT order_id, count(*) FROM applied GROUP BY order_id")
            .fetch_all(&self.schema.pool)
            .await
            .unwrap();
        rows.into_iter().collect()
    }

    async fn stored(&self) -> Option<i64> {
        let offsets = store::stored_offsets(&self.schema.pool, &self.schema.name).await.unwrap().unwrap();
        offsets.get(&(TOPIC.to_owned(), 0)).copied()
    }

    async fn in_ledger(&self, events: &[&Event]) -> Vec<bool> {
        let applied = store::applied_event_ids(&self.schema.pool, &self.schema.name).await.unwrap();
        events.iter().map(|event| applied.iter().filter(|id| **id == event.event_id()).count() == 1).collect()
    }
}

/// A record of partition 0 at `offset` holding `event`, encoded as the producers do.
fn record(offset: i64, event: &Event) -> OwnedMessage {
    let payload = Codec::new().encode_single_object(event).unwrap();
    raw(offset, Some(payload))
}

fn raw(offset: i64, payload: Option<Vec<u8>>) -> OwnedMessage {
    let key = Uuid::new_v4().to_string().into_bytes();
    OwnedMessage::new(payload, Some(key), TOPIC.into(), Timestamp::CreateTime(1_700_000_000_000), 0, offset, None)
}

/// A record holding `event` with the CloudEvents headers of `described` (the producers' own
/// headers when it is `event`).
fn with_headers(offset: i64, event: &Event, described: &Event) -> OwnedMessage {
    use rdkafka::message::{Header, OwnedHeaders};
    let mut headers = OwnedHeaders::new();
    for (key, value) in orderflow_events::CeHeaders::for_event(described, "/test", None).to_pairs() {
        headers = headers.insert(Header { key, value: Some(&value) });
    }
    let payload = Codec::new().encode_single_object(event).unwrap();
    let key = Uuid::new_v4().to_string().into_bytes();
    OwnedMessage::new(
        Some(payload),
        Some(key),
        TOPIC.into(),
        Timestamp::CreateTime(1_700_000_000_000),
        0,
        offset,
        Some(headers),
    )
}

fn counts(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[tokio::test]
async fn an_event_id_applied_before_is_skipped_in_its_own_batch_and_in_a_later_one() {
    // Arrange: o-1 twice in one batch, o-2 again in the next (same event ids, new offsets).
    let f = fixture("batch_dupes").await;
    let (o1, o2, o3) = (order("o-1", &[("sku-a", 1)]), order("o-2", &[("sku-a", 1)]), order("o-3", &[("sku-a", 1)]));

    // Act
    let first = f.apply(&[record(0, &o1), record(1, &o2), record(2, &o1)]).await.unwrap();
    let second = f.apply(&[record(3, &o2), record(4, &o3)]).await.unwrap();

    // Assert: each order applied once, and the offsets moved past the duplicates.
    assert_eq!((first, second), (3, 5));
    assert_eq!(f.applied().await, counts(&[("o-1", 1), ("o-2", 1), ("o-3", 1)]));
    assert_eq!(f.stored().await, Some(5));
    assert!(f.dead.sent().is_empty());
}

#[tokio::test]
async fn a_permanently_failing_event_is_isolated_and_dead_lettered_while_the_rest_of_its_batch_commits() {
    // Arrange: good, poisoned (the handler rejects it for good), good, undecodable, empty.
    let f = fixture("batch_poison").await;
    let (good_1, poisoned, good_2) =
        (order("good-1", &[("sku-a", 1)]), order("bad-1", &[("POISON-1", 1)]), order("good-2", &[("sku-b", 2)]));
    let batch = [
        record(10, &good_1),
        record(11, &poisoned),
        record(12, &good_2),
        raw(13, Some(b"this is not avro".to_vec())),
        raw(14, None),
    ];

    // Act
    let next = f.apply(&batch).await.unwrap();

    // Assert: the good events applied once; the bad records dead-lettered in offset order
    // with their reasons; the poisoned event's ledger entry rolled back with its savepoint.
    assert_eq!(next, 15);
    assert_eq!(f.applied().await, counts(&[("good-1", 1), ("good-2", 1)]));
    let dead: Vec<(i64, ErrorClass)> = f.dead.sent().iter().map(|(offset, class, _)| (*offset, *class)).collect();
    assert_eq!(dead, [(11, ErrorClass::Permanent), (13, ErrorClass::Undecodable), (14, ErrorClass::Undecodable)]);
    assert!(f.dead.sent()[0].2.contains("poisoned sku"), "{:?}", f.dead.sent());
    assert_eq!(f.in_ledger(&[&good_1, &poisoned, &good_2]).await, [true, false, true]);
    assert_eq!(f.stored().await, Some(15));
}

#[tokio::test]
async fn a_record_whose_cloudevents_headers_name_another_event_is_dead_lettered_and_one_without_them_is_applied() {
    // Arrange: headers that match; headers of a stock change on an order's bytes; headers of
    // another order (another event id); no headers at all (an older producer).
    let f = fixture("batch_headers").await;
    let (matching, mislabelled, other_id, bare) = (
        order("h-1", &[("sku-a", 1)]),
        order("h-2", &[("sku-a", 1)]),
        order("h-3", &[("sku-a", 1)]),
        order("h-4", &[("sku-a", 1)]),
    );
    let stock = stock_change("sku-a", 5, "received", None);
    let batch = [
        with_headers(0, &matching, &matching),
        with_headers(1, &mislabelled, &stock),
        with_headers(2, &other_id, &order("h-3", &[("sku-b", 1)])),
        record(3, &bare),
    ];

    // Act
    let next = f.apply(&batch).await.unwrap();

    // Assert: the two records whose headers lie are dead-lettered naming the header; the rest
    // applied; the offset moves past all four.
    assert_eq!(next, 4);
    assert_eq!(f.applied().await, counts(&[("h-1", 1), ("h-4", 1)]));
    let dead = f.dead.sent();
    assert_eq!(
        dead.iter().map(|(o, c, _)| (*o, *c)).collect::<Vec<_>>(),
        [(1, ErrorClass::Undecodable), (2, ErrorClass::Undecodable)]
    );
    assert!(dead[0].2.contains("ce_type") && dead[0].2.contains("orderflow.order.placed.v1"), "{dead:?}");
    assert!(dead[1].2.contains("ce_id"), "{dead:?}");
}

#[tokio::test]
async fn a_handler_that_panics_on_an_event_dead_letters_that_event_and_the_partition_keeps_flowing() {
    // Arrange: the middle event makes the handler panic.
    let f = fixture("batch_panic").await;
    let (good_1, panicky, good_2) =
        (order("good-1", &[("sku-a", 1)]), order("boom-1", &[("PANIC-1", 1)]), order("good-2", &[("sku-b", 2)]));

    // Act: its batch, then a later one.
    let next = f.apply(&[record(20, &good_1), record(21, &panicky), record(22, &good_2)]).await.unwrap();
    let after = f.apply(&[record(23, &order("good-3", &[("sku-c", 1)]))]).await.unwrap();

    // Assert: a permanent failure of that event only, with the panic's message.
    assert_eq!((next, after), (23, 24));
    assert_eq!(f.applied().await, counts(&[("good-1", 1), ("good-2", 1), ("good-3", 1)]));
    let dead = f.dead.sent();
    assert_eq!(dead.iter().map(|(o, c, _)| (*o, *c)).collect::<Vec<_>>(), [(21, ErrorClass::Permanent)]);
    assert!(dead[0].2.contains("the handler panicked: order boom-1 made the handler panic"), "{dead:?}");
    assert_eq!(f.in_ledger(&[&good_1, &panicky, &good_2]).await, [true, false, true]);
}

#[tokio::test]
async fn a_transient_failure_leaves_the_store_the_ledger_and_the_offset_untouched_until_the_retry() {
    // Arrange: a batch whose second event fails transiently, after 4 records already applied.
    let f = fixture("batch_transient").await;
    let earlier: Vec<Event> = (0..4).map(|i| order(&format!("e-{i}"), &[("sku-a", 1)])).collect();
    let earlier_records: Vec<OwnedMessage> = earlier.iter().enumerate().map(|(i, e)| record(i as i64, e)).collect();
    f.apply(&earlier_records).await.unwrap();
    let (good, flaky) = (order("good", &[("sku-a", 1)]), order("flaky", &[("FLAKY-1", 1)]));
    let batch = [record(4, &good), record(5, &flaky)];
    f.flaky.store(true, Ordering::SeqCst);

    // Act
    let failed = f.apply(&batch).await;

    // Assert: an error to retry on, and nothing of the batch anywhere.
    assert!(failed.is_err(), "{failed:?}");
    assert_eq!(f.stored().await, Some(4));
    assert!(!f.applied().await.contains_key("good"));
    assert_eq!(f.in_ledger(&[&good, &flaky]).await, [false, false]);
    assert!(f.dead.sent().is_empty());

    // The retry, once the store is back, applies the same batch once.
    f.flaky.store(false, Ordering::SeqCst);
    assert_eq!(f.apply(&batch).await.unwrap(), 6);
    assert_eq!(f.applied().await.get("good"), Some(&1));
    assert_eq!(f.applied().await.get("flaky"), Some(&1));
}

#[tokio::test]
async fn the_stored_offset_advances_to_one_past_the_last_record_and_records_below_it_are_not_applied_again() {
    // Arrange: the partition starts at offset 100 (as a replay from a point seeds it).
    let f = fixture("batch_offset").await;
    let starts = BTreeMap::from([((TOPIC.to_owned(), 0), 100)]);
    store::seed_offsets(&f.schema.pool, &f.schema.name, &starts).await.unwrap();
    let events: Vec<Event> = (98..102).map(|i| order(&format!("o-{i}"), &[("sku-a", 1)])).collect();
    let batch: Vec<OwnedMessage> = events.iter().zip(98..).map(|(e, offset)| record(offset, e)).collect();

    // Act
    let next = f.apply(&batch).await.unwrap();
    let redelivered = f.apply(&batch).await.unwrap();
    let all_below = f.apply(&batch[..2]).await.unwrap();

    // Assert: only 100 and 101 applied, once; a redelivery changes nothing.
    assert_eq!((next, redelivered, all_below), (102, 102, 102));
    assert_eq!(f.applied().await, counts(&[("o-100", 1), ("o-101", 1)]));
    assert_eq!(f.stored().await, Some(102));
}

#[tokio::test]
async fn an_event_without_a_natural_key_is_recorded_in_the_ledger_and_its_copies_are_skipped() {
    // Arrange: a stock change (no natural key) beside an order, the change copied in the same
    // batch and again in a later one (same event id, new offsets).
    let f = fixture("batch_ledger").await;
    let (o1, change) = (order("o-1", &[("sku-a", 1)]), stock_change("sku-a", 5, "received", None));

    // Act
    let first = f.apply(&[record(0, &change), record(1, &o1), record(2, &change)]).await.unwrap();
    let second = f.apply(&[record(3, &change), record(4, &o1)]).await.unwrap();

    // Assert: each applied once; the change's id is in the ledger, the order's in its claim.
    assert_eq!((first, second), (3, 5));
    assert_eq!(f.applied().await, counts(&[("o-1", 1), ("stock:sku-a", 1)]));
    let ledger: Vec<Uuid> =
        sqlx::query_scalar("SELECT event_id FROM orderflow_applied_events").fetch_all(&f.schema.pool).await.unwrap();
    let claims: Vec<Uuid> =
        sqlx::query_scalar("SELECT event_id FROM orderflow_natural_keys").fetch_all(&f.schema.pool).await.unwrap();
    assert_eq!((ledger, claims), (vec![change.event_id()], vec![o1.event_id()]));
    assert!(f.dead.sent().is_empty());
}

#[tokio::test]
async fn the_same_order_under_another_event_id_is_applied_once_and_counted_as_a_duplicate() {
    // Arrange: o-1 placed twice with the same content under two event ids (a checkout retry
    // without an Idempotency-Key): in one batch, then again in a later batch.
    let f = fixture("batch_natural").await;
    let (first, again, later) =
        (order("o-1", &[("sku-a", 2)]), order("o-1", &[("sku-a", 2)]), order("o-1", &[("sku-a", 2)]));
    assert_ne!(first.event_id(), again.event_id());

    // Act
    let one = f.apply(&[record(0, &first), record(1, &again), record(2, &order("o-2", &[("sku-b", 1)]))]).await;
    let two = f.apply(&[record(3, &later)]).await;

    // Assert: applied once, nothing dead-lettered; the order's claim records the first event
    // (the repeats are recognised by their content whenever they come).
    assert_eq!((one.unwrap(), two.unwrap()), (3, 4));
    assert_eq!(f.applied().await, counts(&[("o-1", 1), ("o-2", 1)]));
    assert!(f.dead.sent().is_empty(), "{:?}", f.dead.sent());
    assert_eq!(f.in_ledger(&[&first, &again, &later]).await, [true, false, false]);
}

#[tokio::test]
async fn an_order_id_placed_again_with_other_lines_is_dead_lettered_naming_the_first_event() {
    // Arrange: o-1 with one line, then o-1 with another line (same batch and a later one).
    let f = fixture("batch_conflict").await;
    let first = order("o-1", &[("sku-a", 1)]);
    let conflicting = order("o-1", &[("sku-a", 5)]);
    let conflicting_later = order("o-1", &[("sku-z", 1)]);

    // Act
    let one = f.apply(&[record(0, &first), record(1, &conflicting), record(2, &order("o-2", &[("sku-b", 1)]))]).await;
    let two = f.apply(&[record(3, &conflicting_later)]).await;

    // Assert: the first version applied, each conflicting one dead-lettered for good with a
    // message naming the order and the first event, and the partition moved on.
    assert_eq!((one.unwrap(), two.unwrap()), (3, 4));
    assert_eq!(f.applied().await, counts(&[("o-1", 1), ("o-2", 1)]));
    let dead = f.dead.sent();
    let offsets: Vec<(i64, ErrorClass)> = dead.iter().map(|(o, c, _)| (*o, *c)).collect();
    assert_eq!(offsets, [(1, ErrorClass::Permanent), (3, ErrorClass::Permanent)]);
    let said = &dead[0].2;
    assert!(said.contains("order o-1 was already placed by event"), "{said}");
    assert!(said.contains(&first.event_id().to_string()), "names the first event: {said}");
    assert!(said.contains(&conflicting.event_id().to_string()), "names the conflicting event: {said}");
    assert!(dead[1].2.contains(&first.event_id().to_string()), "{:?}", dead[1]);
    assert_eq!(f.in_ledger(&[&first, &conflicting, &conflicting_later]).await, [true, false, false]);
}
