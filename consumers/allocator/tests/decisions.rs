//! The allocator's handler against real Postgres, batch by batch as the runtime calls it
//! (no broker): which decisions it makes and writes to its outbox.

use std::collections::BTreeMap;

use chrono::{Duration, Utc};
use orderflow_allocator::handler::Allocator;
use orderflow_events::Event;
use orderflow_outbox::Outbox;
use orderflow_runtime::{BatchContext, Envelope, Handler};
use orderflow_testkit::events::{order, stock_change};
use orderflow_testkit::{TestSchema, database_url, fresh_schema};
use sqlx::{Connection, Row};

struct Store {
    schema: TestSchema,
    allocator: Allocator,
}

async fn store() -> Store {
    let schema = fresh_schema("allocator").await;
    let outbox = Outbox::new(&format!("{}_outbox", schema.name)).unwrap();
    outbox.migrate(&database_url()).await.unwrap();
    let allocator = Allocator { outbox };
    allocator.migrator().unwrap().run(&schema.pool).await.unwrap();
    Store { schema, allocator }
}

fn envelope(event: Event) -> Envelope {
    Envelope { event, topic: "t".into(), partition: 0, offset: 0, timestamp: None, traceparent: None }
}

/// The fixed time orders are placed after: an hour before the test process started, taken
/// once, so the queue's order never depends on how long a test takes between two orders.
static PLACED_BASE: std::sync::LazyLock<chrono::DateTime<Utc>> =
    std::sync::LazyLock::new(|| Utc::now() - Duration::hours(1));

/// An order of `lines`, placed `seconds` after a fixed time (so the queue's order is known).
fn placed(order_id: &str, lines: &[(&str, u32)], seconds: i64) -> Event {
    let Event::OrderPlaced(mut o) = order(order_id, lines) else { unreachable!() };
    o.placed_at = *PLACED_BASE + Duration::seconds(seconds);
    Event::OrderPlaced(o)
}

fn received(sku: &str, warehouse: &str, units: i64) -> Event {
    let Event::InventoryChanged(mut c) = stock_change(sku, units, "received", None) else { unreachable!() };
    c.warehouse = orderflow_events::WarehouseId::parse(warehouse).unwrap();
    Event::InventoryChanged(c)
}

impl Store {
    async fn apply(&self, events: Vec<Event>) {
        let mut conn = self.schema.pool.acquire().await.unwrap();
        let mut tx = conn.begin().await.unwrap();
        let batch: Vec<Envelope> = events.into_iter().map(envelope).collect();
        let ctx = BatchContext { consumer: "allocator".into(), replay: false };
        self.allocator.apply(&mut tx, &batch, &ctx).await.unwrap();
        tx.commit().await.unwrap();
    }

    /// Every decision in the outbox, in order: (type, order id, [(sku, warehouse or "", units)]).
    async fn decisions(&self) -> Vec<(String, String, Vec<(String, String, i64)>)> {
        let rows = sqlx::query(&format!("SELECT payload FROM {} ORDER BY id", self.allocator.outbox.table()))
            .fetch_all(&self.schema.pool)
            .await
            .unwrap();
        rows.into_iter()
            .map(|row| {
                let event: Event = serde_json::from_value(row.get("payload")).unwrap();
                let (order_id, lines) = match &event {
                    Event::OrderAllocated(a) | Event::BackorderAllocated(a) => (
                        a.order_id.as_str().to_owned(),
                        a.lines
                            .iter()
                            .map(|l| (l.sku.as_str().into(), l.warehouse.as_str().into(), i64::from(l.quantity)))
                            .collect(),
                    ),
                    Event::OrderBackordered(b) => (
                        b.order_id.as_str().to_owned(),
                        b.lines
                            .iter()
                            .map(|l| (l.sku.as_str().into(), String::new(), i64::from(l.quantity_missing)))
                            .collect(),
                    ),
                    other => panic!("not a decision: {other:?}"),
                };
                (event.ce_type().trim_start_matches("orderflow.").trim_end_matches(".v1").to_owned(), order_id, lines)
            })
            .collect()
    }

    /// (on_hand, allocated) per warehouse of `sku`.
    async fn stock(&self, sku: &str) -> BTreeMap<String, (i64, i64)> {
        sqlx::query("SELECT warehouse, on_hand, allocated FROM stock WHERE sku = $1")
            .bind(sku)
            .fetch_all(&self.schema.pool)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.get("warehouse"), (r.get("on_hand"), r.get("allocated"))))
            .collect()
    }
}

fn line(sku: &str, warehouse: &str, units: i64) -> (String, String, i64) {
    (sku.into(), warehouse.into(), units)
}

#[tokio::test]
async fn an_order_takes_the_fullest_warehouse_first_splits_when_it_must_and_backorders_the_rest() {
    let s = store().await;
    s.apply(vec![received("red", "w1", 3), received("red", "w2", 5), received("blue", "w1", 1)]).await;
    s.apply(vec![placed("o-1", &[("red", 7), ("blue", 2), ("green", 1)], 0)]).await;

    assert_eq!(
        s.decisions().await,
        vec![
            (
                "order.allocated".into(),
                "o-1".into(),
                vec![line("blue", "w1", 1), line("red", "w2", 5), line("red", "w1", 2)]
            ),
            ("order.backordered".into(), "o-1".into(), vec![line("blue", "", 1), line("green", "", 1)]),
        ]
    );
    assert_eq!(s.stock("red").await, BTreeMap::from([("w1".into(), (3, 2)), ("w2".into(), (5, 5))]));
}

#[tokio::test]
async fn stock_that_arrives_serves_the_queue_first_placed_first_in_part_if_it_must() {
    let s = store().await;
    // Placed in the order o-early, o-mid, o-late, but decided in another order.
    s.apply(vec![placed("o-late", &[("red", 1)], 30), placed("o-early", &[("red", 2)], 10)]).await;
    s.apply(vec![placed("o-mid", &[("red", 2)], 20)]).await;
    s.apply(vec![received("red", "w1", 3)]).await;

    let decisions = s.decisions().await;
    let served: Vec<_> = decisions.iter().filter(|d| d.0 == "backorder.allocated").cloned().collect();
    assert_eq!(
        served,
        vec![
            ("backorder.allocated".into(), "o-early".into(), vec![line("red", "w1", 2)]),
            ("backorder.allocated".into(), "o-mid".into(), vec![line("red", "w1", 1)]),
        ]
    );
    // o-mid still waits for one unit, ahead of o-late: a new order gets nothing while they wait.
    s.apply(vec![placed("o-new", &[("red", 1)], 40)]).await;
    assert_eq!(s.decisions().await.last().unwrap().0, "order.backordered");
    s.apply(vec![received("red", "w2", 2)]).await;
    let served: Vec<_> =
        s.decisions().await.into_iter().filter(|d| d.0 == "backorder.allocated").map(|d| (d.1, d.2)).collect();
    assert_eq!(
        served[2..],
        [("o-mid".into(), vec![line("red", "w2", 1)]), ("o-late".into(), vec![line("red", "w2", 1)])]
    );
    assert_eq!(s.stock("red").await, BTreeMap::from([("w1".into(), (3, 3)), ("w2".into(), (2, 2))]));
}

#[tokio::test]
async fn an_order_is_decided_once_and_a_shipment_releases_what_it_held() {
    let s = store().await;
    s.apply(vec![received("red", "w1", 2)]).await;
    let first = placed("o-1", &[("red", 1)], 0);
    s.apply(vec![first.clone(), first.clone()]).await;
    s.apply(vec![first]).await;
    assert_eq!(s.decisions().await.len(), 1);

    let Event::InventoryChanged(mut shipped) = stock_change("red", -1, "shipped", Some("o-1")) else { unreachable!() };
    shipped.warehouse = orderflow_events::WarehouseId::parse("w1").unwrap();
    s.apply(vec![Event::InventoryChanged(shipped)]).await;
    assert_eq!(s.stock("red").await, BTreeMap::from([("w1".into(), (1, 0))]));
}

#[tokio::test]
async fn decision_ids_are_derived_so_a_decision_made_again_has_the_same_id() {
    let a = store().await;
    let b = store().await;
    let o = placed("o-same", &[("red", 1)], 0);
    a.apply(vec![o.clone()]).await;
    b.apply(vec![o]).await;
    let ids = |s: &Store| {
        let table = s.allocator.outbox.table().to_owned();
        let pool = s.schema.pool.clone();
        async move {
            sqlx::query_scalar::<_, uuid::Uuid>(&format!("SELECT event_id FROM {table}"))
                .fetch_all(&pool)
                .await
                .unwrap()
        }
    };
    let (first, second) = (ids(&a).await, ids(&b).await);
    assert_eq!(first.len(), 1);
    assert_eq!(first, second);
}

#[tokio::test]
async fn the_allocator_refuses_to_replay_before_it_touches_anything() {
    use orderflow_allocator::{AllocatorArgs, CONSUMER, NO_REPLAY, connect};
    use orderflow_consumer_kit::testing::isolated_args;

    let mut args = isolated_args("allocator-replay", &CONSUMER.topic_list());
    args.replay = true;
    let refused = connect(args.clone(), AllocatorArgs::default()).await.map(|_| ()).expect_err("--replay is refused");
    assert_eq!(refused.to_string(), NO_REPLAY);
    let rebuild = (CONSUMER.rebuild)(args.clone()).await.map(|_| ()).expect_err("orderflow replay is refused");
    assert!(rebuild.to_string().contains("the allocator does not replay"), "{rebuild}");
    // Nothing was made: neither the store's schema nor its outbox's.
    let pool = sqlx::PgPool::connect(&database_url()).await.unwrap();
    let schema = args.schema.unwrap();
    let made: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname IN ($1, $1 || '_outbox')")
        .bind(&schema)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(made, 0);
}
