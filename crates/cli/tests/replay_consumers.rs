//! `orderflow replay` of the real consumers, looked up in the registry as the command does: a
//! rebuild from the topics into a shadow schema equals the store the live consumer built.
//! (Email is left out on purpose: a replay records its confirmations as `suppressed` instead
//! of `queued`, so the stores differ by design. The allocator refuses to replay: tested in
//! `consumers/allocator/tests/decisions.rs` and below.)

use std::time::Duration;

use orderflow_cli::position::ConsumerArgs;
use orderflow_cli::replay::{ReplayArgs, registry};
use orderflow_events::Event;
use orderflow_registry::Bare;
use orderflow_runtime::testing::{self, isolated_args};
use orderflow_testkit::events::{order, producer, publish, stock_change};
use orderflow_testkit::{database_url, fresh_topic, kafka_args};

/// Run the registered consumer `name`'s handler live over `topics` (fresh schema and group)
/// until it applied `records`, stop it, and return replay arguments for its store plus a pool
/// on that database.
async fn run_live(name: &str, topics: &[String], records: i64) -> (ReplayArgs, sqlx::PgPool) {
    let spec = orderflow_registry::get(name).unwrap();
    let args = isolated_args(name, topics);
    let (schema, group) = (args.schema.clone().unwrap(), args.group.clone().unwrap());
    let Bare { pool, schema: connected, serve } = (spec.rebuild)(args).await.unwrap();
    let running = testing::spawn_serving(pool, connected, move |listener, stop| serve(listener, Box::pin(stop))).await;
    running.wait_for_offsets_sum(records, Duration::from_secs(60)).await;
    let pool = running.pool.clone();
    running.shutdown().await;
    let replay_args = ReplayArgs {
        consumer: ConsumerArgs {
            consumer: name.to_owned(),
            schema: Some(schema),
            group: Some(group),
            db: orderflow_service::DatabaseArgs::new(database_url()),
        },
        topics: topics.to_vec(),
        promote: false,
        since: None,
        from_offset: None,
        sample: 5,
        stall_timeout: 60,
    };
    (replay_args, pool)
}

/// Run the consumer `name` live, then replay it into a shadow schema and assert every table
/// equals the live one.
async fn live_store_equals_its_replay(name: &str, topics: &[String], records: i64) {
    let (replay_args, pool) = run_live(name, topics, records).await;
    pool.close().await;
    let report = registry(&kafka_args(), &replay_args).await.unwrap();
    assert_eq!(report.records_replayed, records, "{name}: {report:#?}");
    assert!(!report.tables.is_empty(), "{name}: no tables compared");
    for table in &report.tables {
        assert!(table.equal(), "{name}: {} differs after replay: {table:#?}", table.table);
        assert!(table.live_rows > 0, "{name}: {} is empty, the comparison proves nothing", table.table);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_of_every_consumer_but_email_equals_its_live_store() {
    // Arrange: orders, restocks and shipments for half of the orders, on two topics.
    let orders_topic = fresh_topic("replay-orders", 3).await;
    let inventory_topic = fresh_topic("replay-inventory", 3).await;
    let producer = producer();
    let orders: Vec<Event> = (0..30).map(|i| order(&format!("r-{i}"), &[(&format!("sku-{}", i % 4), 2)])).collect();
    let mut changes: Vec<Event> = (0..4).map(|s| stock_change(&format!("sku-{s}"), 100, "received", None)).collect();
    for i in (0..30).step_by(2) {
        changes.push(stock_change(&format!("sku-{}", i % 4), -2, "shipped", Some(&format!("r-{i}"))));
    }
    // The allocator's decisions on a third topic: allocated, backordered, covered later.
    let allocations_topic = fresh_topic("replay-allocations", 3).await;
    let decisions: Vec<Event> = (0..15).flat_map(|i| decisions_of(&orders[i], i)).collect();
    publish(&producer, &orders_topic, &orders).await;
    publish(&producer, &inventory_topic, &changes).await;
    publish(&producer, &allocations_topic, &decisions).await;
    let topics = [orders_topic, inventory_topic, allocations_topic];
    let records = (orders.len() + changes.len() + decisions.len()) as i64;

    // Act + Assert, per consumer.
    for name in orderflow_registry::names().into_iter().filter(|name| !["email", "allocator"].contains(name)) {
        live_store_equals_its_replay(name, &topics, records).await;
    }
    let spec = orderflow_registry::get("allocator").unwrap();
    let refused = (spec.rebuild)(isolated_args("replay-allocator", &topics)).await.map(|_| ()).unwrap_err();
    assert!(refused.to_string().contains("the allocator does not replay"), "{refused}");
}

/// What the allocator could have decided on `order` (the `i`-th): the first ten allocated, the
/// next five backordered, and every third of those covered later.
fn decisions_of(order: &Event, i: usize) -> Vec<Event> {
    use orderflow_events::{AllocatedLine, Allocation, Backorder, MissingLine, WarehouseId};
    let Event::OrderPlaced(o) = order else { unreachable!() };
    let line = &o.lines[0];
    let allocation = |lines| Allocation {
        event_id: uuid::Uuid::new_v4(),
        order_id: o.order_id.clone(),
        caused_by: o.event_id,
        lines,
        decided_at: o.placed_at,
    };
    let allocated = vec![AllocatedLine {
        sku: line.sku.clone(),
        warehouse: WarehouseId::parse("w1").unwrap(),
        quantity: line.quantity,
    }];
    if i < 10 {
        return vec![Event::OrderAllocated(allocation(allocated))];
    }
    let mut decided = vec![Event::OrderBackordered(Backorder {
        event_id: uuid::Uuid::new_v4(),
        order_id: o.order_id.clone(),
        caused_by: o.event_id,
        lines: vec![MissingLine { sku: line.sku.clone(), quantity_missing: line.quantity }],
        decided_at: o.placed_at,
    })];
    if i.is_multiple_of(3) {
        decided.push(Event::BackorderAllocated(allocation(allocated)));
    }
    decided
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_from_an_offset_rebuilds_only_the_records_from_there_and_refuses_to_promote() {
    // Arrange: 10 orders on one partition, applied by the live consumer.
    let orders_topic = fresh_topic("replay-from", 1).await;
    let inventory_topic = fresh_topic("replay-from-inv", 1).await;
    let orders: Vec<Event> = (0..10).map(|i| order(&format!("f-{i}"), &[("sku-f", 1)])).collect();
    publish(&producer(), &orders_topic, &orders).await;
    let topics = [orders_topic, inventory_topic];
    let (mut replay_args, pool) = run_live("fulfillment", &topics, 10).await;
    let schema = replay_args.consumer.schema.clone().unwrap();
    replay_args.from_offset = Some(6);
    replay_args.sample = 20;

    // Act
    let report = registry(&kafka_args(), &replay_args).await.unwrap();

    // Assert: offsets 6..9 only, so the shadow has exactly the last 4 orders.
    assert_eq!(report.records_replayed, 4, "{report:#?}");
    let shadow_orders: Vec<String> =
        sqlx::query_scalar(&format!("SELECT order_id FROM {schema}_shadow.fulfillments ORDER BY order_id"))
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(shadow_orders, ["f-6", "f-7", "f-8", "f-9"]);
    let table = report.tables.iter().find(|t| t.table == "fulfillments").unwrap();
    assert_eq!((table.live_rows, table.shadow_rows), (10, 4));

    // A partial rebuild never replaces the live store.
    replay_args.promote = true;
    let refused = registry(&kafka_args(), &replay_args).await.unwrap_err();
    assert!(format!("{refused:#}").contains("--promote needs a rebuild from the beginning"), "{refused:#}");
    pool.close().await;
}
