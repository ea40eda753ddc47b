//! The fulfillment consumer against the real broker and Postgres: status as shipments cover
//! the lines, shipments and allocation decisions applied before their order, and the read
//! API's errors.

use orderflow_consumer_kit::testing::{TestConsumer, fresh_topics, isolated_args, start};
use orderflow_fulfillment::connect;
use orderflow_testkit::events::{order, producer, publish, stock_change};
use orderflow_testkit::wait_until;
use serde_json::{Value, json};
use std::time::Duration;

async fn start_fulfillment(prefix: &str) -> (TestConsumer, String, String) {
    let (orders, inventory) = fresh_topics(prefix).await;
    let args = isolated_args(prefix, &[orders.clone(), inventory.clone()]);
    let consumer = start(connect(args).await.expect("store connects")).await;
    (consumer, orders, inventory)
}

/// Wait until the fulfillment of `order_id`, without its `placed_at`, is `expected`.
async fn wait_for_fulfillment(consumer: &TestConsumer, order_id: &str, expected: Value) {
    let what = format!("fulfillment {order_id} to be {expected}");
    consumer
        .wait_for(&what, &format!("/v1/fulfillments/{order_id}"), |status, body| {
            let mut body = body.clone();
            body.as_object_mut()?.remove("placed_at")?;
            (status == 200 && body == expected).then_some(())
        })
        .await
}

fn fulfillment(status: &str, a_shipped: i64, b_shipped: i64) -> Value {
    json!({"order_id": "o-1", "status": status, "lines": [
        {"sku": "SKU-A", "quantity": 2, "shipped": a_shipped, "allocated": 0, "backordered": 0},
        {"sku": "SKU-B", "quantity": 1, "shipped": b_shipped, "allocated": 0, "backordered": 0},
    ]})
}

#[tokio::test]
async fn status_goes_from_pending_to_partially_shipped_to_shipped_as_shipments_cover_lines() {
    let (consumer, orders, inventory) = start_fulfillment("ful-inorder").await;
    let producer = producer();
    publish(&producer, &orders, &[order("o-1", &[("SKU-A", 2), ("SKU-B", 1)])]).await;
    wait_for_fulfillment(&consumer, "o-1", fulfillment("pending", 0, 0)).await;

    // Stock changes that are not shipments of this order change nothing.
    publish(
        &producer,
        &inventory,
        &[stock_change("SKU-A", 50, "received", None), stock_change("SKU-A", -1, "shipped", Some("o-other"))],
    )
    .await;
    publish(&producer, &inventory, &[stock_change("SKU-A", -1, "shipped", Some("o-1"))]).await;
    wait_for_fulfillment(&consumer, "o-1", fulfillment("partially_shipped", 1, 0)).await;

    publish(
        &producer,
        &inventory,
        &[stock_change("SKU-A", -1, "shipped", Some("o-1")), stock_change("SKU-B", -1, "shipped", Some("o-1"))],
    )
    .await;
    wait_for_fulfillment(&consumer, "o-1", fulfillment("shipped", 2, 1)).await;
    consumer.shutdown().await;
}

#[tokio::test]
async fn shipments_applied_before_their_order_count_once_it_arrives() {
    let (orders, inventory) = fresh_topics("ful-reordered").await;
    let connected =
        connect(isolated_args("ful-reordered", &[orders.clone(), inventory.clone()])).await.expect("store connects");
    let pool = connected.pool().clone();
    let consumer = start(connected).await;
    let producer = producer();
    publish(
        &producer,
        &inventory,
        &[stock_change("SKU-A", -2, "shipped", Some("o-1")), stock_change("SKU-B", -1, "shipped", Some("o-1"))],
    )
    .await;
    // Both shipments are in the store while the order is still unknown.
    wait_until("the shipments to be applied", Duration::from_secs(60), || async {
        let units: Option<i64> =
            sqlx::query_scalar("SELECT sum(shipped)::bigint FROM shipments WHERE order_id = 'o-1'")
                .fetch_one(&pool)
                .await
                .ok()?;
        (units == Some(3)).then_some(())
    })
    .await;
    let (status, _) = consumer.get("/v1/fulfillments/o-1").await;
    assert_eq!(status, 404, "an order known only from its shipments is not a fulfillment yet");

    publish(&producer, &orders, &[order("o-1", &[("SKU-A", 2), ("SKU-B", 1)])]).await;
    wait_for_fulfillment(&consumer, "o-1", fulfillment("shipped", 2, 1)).await;
    consumer.shutdown().await;
}

#[tokio::test]
async fn unknown_orders_answer_404_and_malformed_ids_400_with_json() {
    let (consumer, _orders, _inventory) = start_fulfillment("ful-errors").await;
    let (status, body) = consumer.get("/v1/fulfillments/o-never").await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("o-never"), "{body}");
    let (status, body) = consumer.get(&format!("/v1/fulfillments/{}", "x".repeat(300))).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("order_id")), "{body}");
    consumer.shutdown().await;
}

#[tokio::test]
async fn each_line_shows_what_the_allocator_decided_whichever_topic_came_first() {
    use orderflow_events::{
        AllocatedLine, Allocation, Backorder, Event, MissingLine, OrderId, Quantity, Sku, WarehouseId,
    };
    let (orders, inventory) = fresh_topics("ful-decided").await;
    let allocations = orderflow_testkit::fresh_topic("ful-decided-allocations", 1).await;
    let args = isolated_args("ful-decided", &[orders.clone(), inventory, allocations.clone()]);
    let consumer = start(connect(args).await.expect("store connects")).await;
    let producer = producer();
    let order_id = OrderId::parse("o-1").unwrap();
    let allocated = |sku: &str, units: i64| AllocatedLine {
        sku: Sku::parse(sku).unwrap(),
        warehouse: WarehouseId::parse("w1").unwrap(),
        quantity: Quantity::parse(units).unwrap(),
    };
    let decision = |lines| Allocation {
        event_id: uuid::Uuid::new_v4(),
        order_id: order_id.clone(),
        caused_by: uuid::Uuid::new_v4(),
        lines,
        decided_at: chrono::Utc::now(),
    };
    // The decisions come first: SKU-A 1 of 2 allocated, 1 backordered, then covered later.
    let decided = [
        Event::OrderAllocated(decision(vec![allocated("SKU-A", 1), allocated("SKU-B", 1)])),
        Event::OrderBackordered(Backorder {
            event_id: uuid::Uuid::new_v4(),
            order_id: order_id.clone(),
            caused_by: uuid::Uuid::new_v4(),
            lines: vec![MissingLine {
                sku: Sku::parse("SKU-A").unwrap(),
                quantity_missing: Quantity::parse(1).unwrap(),
            }],
            decided_at: chrono::Utc::now(),
        }),
    ];
    publish(&producer, &allocations, &decided).await;
    publish(&producer, &orders, &[order("o-1", &[("SKU-A", 2), ("SKU-B", 1)])]).await;
    let line = |sku: &str, quantity: i64, allocated: i64, backordered: i64| json!({"sku": sku, "quantity": quantity, "shipped": 0, "allocated": allocated, "backordered": backordered});
    let waiting =
        json!({"order_id": "o-1", "status": "pending", "lines": [line("SKU-A", 2, 1, 1), line("SKU-B", 1, 1, 0)]});
    wait_for_fulfillment(&consumer, "o-1", waiting).await;

    publish(&producer, &allocations, &[Event::BackorderAllocated(decision(vec![allocated("SKU-A", 1)]))]).await;
    let covered =
        json!({"order_id": "o-1", "status": "pending", "lines": [line("SKU-A", 2, 2, 0), line("SKU-B", 1, 1, 0)]});
    wait_for_fulfillment(&consumer, "o-1", covered).await;
    consumer.shutdown().await;
}
