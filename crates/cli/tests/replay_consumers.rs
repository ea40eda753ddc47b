//! `orderflow replay` of the real consumers: a rebuild from the topics into a shadow schema
//! equals the store the live consumer built. (Email is left out on purpose: a replay records
//! its confirmations as `suppressed` instead of `queued`, so the stores differ by design.)

use std::time::Duration;

use orderflow_cli::position::ConsumerArgs;
use orderflow_cli::replay::{ReplayArgs, replay};
use orderflow_events::Event;
use orderflow_runtime::Handler;
use orderflow_runtime::testing::{self, isolated_args};
use orderflow_testkit::events::{order, producer, publish, stock_change};
use orderflow_testkit::{database_url, fresh_topic, kafka_args};

/// Run `handler` live over `topics` (fresh schema and group) until it applied `records`, stop
/// it, and return replay arguments for its store plus a pool on that database.
async fn run_live<H: Handler>(handler: impl Fn() -> H, topics: &[String], records: i64) -> (ReplayArgs, sqlx::PgPool) {
    let name = handler().name().to_owned();
    let args = isolated_args(&name, topics);
    let (schema, group) = (args.schema.clone().unwrap(), args.group.clone().unwrap());
    let running = testing::spawn(handler(), args).await;
    running.wait_for_offsets_sum(records, Duration::from_secs(60)).await;
    let pool = running.pool.clone();
    running.shutdown().await;
    let replay_args = ReplayArgs {
        consumer: ConsumerArgs {
            consumer: name,
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

/// Run `handler` live, then replay it into a shadow schema and assert every table equals
/// the live one.
async fn live_store_equals_its_replay<H: Handler>(handler: impl Fn() -> H, topics: &[String], records: i64) {
    let (replay_args, pool) = run_live(&handler, topics, records).await;
    pool.close().await;
    let name = replay_args.consumer.consumer.clone();
    let report = replay(handler(), &kafka_args(), &replay_args).await.unwrap();
    assert_eq!(report.records_replayed, records, "{name}: {report:#?}");
    assert!(!report.tables.is_empty(), "{name}: no tables compared");
    for table in &report.tables {
        assert!(table.equal(), "{name}: {} differs after replay: {table:#?}", table.table);
        assert!(table.live_rows > 0, "{name}: {} is empty, the comparison proves nothing", table.table);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_of_fulfillment_analytics_and_inventory_equals_their_live_stores() {
    // Arrange: orders, restocks and shipments for half of the orders, on two topics.
    let orders_topic = fresh_topic("replay-orders", 3).await;
    let inventory_topic = fresh_topic("replay-inventory", 3).await;
    let producer = producer();
    let orders: Vec<Event> = (0..30).map(|i| order(&format!("r-{i}"), &[(&format!("sku-{}", i % 4), 2)])).collect();
    let mut changes: Vec<Event> = (0..4).map(|s| stock_change(&format!("sku-{s}"), 100, "received", None)).collect();
    for i in (0..30).step_by(2) {
        changes.push(stock_change(&format!("sku-{}", i % 4), -2, "shipped", Some(&format!("r-{i}"))));
    }
    publish(&producer, &orders_topic, &orders).await;
    publish(&producer, &inventory_topic, &changes).await;
    let topics = [orders_topic, inventory_topic];
    let records = (orders.len() + changes.len()) as i64;

    // Act + Assert, per consumer.
    live_store_equals_its_replay(|| orderflow_fulfillment::handler::Fulfillment, &topics, records).await;
    live_store_equals_its_replay(|| orderflow_analytics::handler::Analytics, &topics, records).await;
    live_store_equals_its_replay(|| orderflow_inventory_projection::handler::InventoryProjection, &topics, records)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_from_an_offset_rebuilds_only_the_records_from_there_and_refuses_to_promote() {
    // Arrange: 10 orders on one partition, applied by the live consumer.
    let orders_topic = fresh_topic("replay-from", 1).await;
    let inventory_topic = fresh_topic("replay-from-inv", 1).await;
    let orders: Vec<Event> = (0..10).map(|i| order(&format!("f-{i}"), &[("sku-f", 1)])).collect();
    publish(&producer(), &orders_topic, &orders).await;
    let topics = [orders_topic, inventory_topic];
    let handler = || orderflow_fulfillment::handler::Fulfillment;
    let (mut replay_args, pool) = run_live(handler, &topics, 10).await;
    let schema = replay_args.consumer.schema.clone().unwrap();
    replay_args.from_offset = Some(6);
    replay_args.sample = 20;

    // Act
    let report = replay(handler(), &kafka_args(), &replay_args).await.unwrap();

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
    let refused = replay(handler(), &kafka_args(), &replay_args).await.unwrap_err();
    assert!(format!("{refused:#}").contains("--promote needs a rebuild from the beginning"), "{refused:#}");
    pool.close().await;
}
