//! The inventory projection against the real broker and Postgres: on hand per warehouse,
//! reserved released by shipments, the same final state whichever topic's event comes first,
//! and the read API's errors.

use orderflow_consumer_kit::testing::{TestConsumer, fresh_topics, isolated_args, start};
use orderflow_events::{Event, WarehouseId};
use orderflow_inventory_projection::connect;
use orderflow_testkit::events::{order, producer, publish, stock_change};
use rdkafka::producer::FutureProducer;
use serde_json::json;

async fn start_projection(prefix: &str) -> (TestConsumer, String, String) {
    let (orders, inventory) = fresh_topics(prefix).await;
    let args = isolated_args(prefix, &[orders.clone(), inventory.clone()]);
    let consumer = start(connect(args).await.expect("store connects")).await;
    (consumer, orders, inventory)
}

fn in_warehouse(mut event: Event, warehouse: &str) -> Event {
    if let Event::InventoryChanged(change) = &mut event {
        change.warehouse = WarehouseId::parse(warehouse).unwrap();
    }
    event
}

/// SKU-A as the API shows it with `w1`, `w2` on hand and `reserved`.
fn sku_a(w1: i64, w2: i64, reserved: i64) -> serde_json::Value {
    json!({"sku": "SKU-A", "warehouses": [{"warehouse": "w1", "on_hand": w1}, {"warehouse": "w2", "on_hand": w2}],
           "on_hand": w1 + w2, "reserved": reserved, "available": w1 + w2 - reserved,
           "allocated": 0, "backordered": 0, "unallocated": w1 + w2})
}

/// Publish 10 units of SKU-A received in w1 and 5 in w2.
async fn receive_stock(producer: &FutureProducer, inventory: &str) {
    let changes =
        [stock_change("SKU-A", 10, "received", None), in_warehouse(stock_change("SKU-A", 5, "received", None), "w2")];
    publish(producer, inventory, &changes).await;
}

/// Publish a shipment of `units` of SKU-A for order o-1 from w1.
async fn ship(producer: &FutureProducer, inventory: &str, units: i64) {
    publish(producer, inventory, &[stock_change("SKU-A", -units, "shipped", Some("o-1"))]).await;
}

const PATH: &str = "/v1/inventory/SKU-A";

#[tokio::test]
async fn shipments_release_reservations_and_available_is_on_hand_minus_reserved() {
    let (consumer, orders, inventory) = start_projection("inv-inorder").await;
    let producer = producer();
    receive_stock(&producer, &inventory).await;
    publish(&producer, &orders, &[order("o-1", &[("SKU-A", 3)])]).await;
    consumer.wait_for_json(PATH, &sku_a(10, 5, 3)).await;

    ship(&producer, &inventory, 2).await;
    consumer.wait_for_json(PATH, &sku_a(8, 5, 1)).await;

    // Shipping more than the order asked for never makes reserved negative.
    ship(&producer, &inventory, 4).await;
    consumer.wait_for_json(PATH, &sku_a(4, 5, 0)).await;
    consumer.shutdown().await;
}

#[tokio::test]
async fn a_shipment_applied_before_its_order_gives_the_same_state_as_in_order() {
    let (consumer, orders, inventory) = start_projection("inv-reordered").await;
    let producer = producer();
    receive_stock(&producer, &inventory).await;
    ship(&producer, &inventory, 2).await;
    // The shipment is applied (on hand shows it) while the order is still unknown.
    consumer.wait_for_json(PATH, &sku_a(8, 5, 0)).await;

    publish(&producer, &orders, &[order("o-1", &[("SKU-A", 3)])]).await;
    // The same state as shipping 2 after the order (the in-order test's second step).
    consumer.wait_for_json(PATH, &sku_a(8, 5, 1)).await;
    consumer.shutdown().await;
}

#[tokio::test]
async fn orders_and_shipments_applied_concurrently_from_both_topics_lose_no_update() {
    let (consumer, orders, inventory) = start_projection("inv-concurrent").await;
    let producer = producer();
    let skus = ["SKU-0", "SKU-1", "SKU-2", "SKU-3", "SKU-4"];
    let received: Vec<_> = skus.iter().map(|sku| stock_change(sku, 100, "received", None)).collect();
    publish(&producer, &inventory, &received).await;
    // 100 orders of 3 units and a shipment of 2 units for each, published at the same time
    // on both topics, so order rows and shipment rows of one (order, sku) race.
    let order_events: Vec<_> = (0..100).map(|i| order(&format!("o-{i}"), &[(skus[i % 5], 3)])).collect();
    let shipments: Vec<_> =
        (0..100).map(|i| stock_change(skus[i % 5], -2, "shipped", Some(&format!("o-{i}")))).collect();
    tokio::join!(publish(&producer, &orders, &order_events), publish(&producer, &inventory, &shipments));

    // Per sku: 20 orders × 3 ordered, 20 × 2 shipped → on hand 60, reserved 20.
    for sku in skus {
        let expected = json!({"sku": sku, "warehouses": [{"warehouse": "w1", "on_hand": 60}], "on_hand": 60, "reserved": 20,
                              "available": 40, "allocated": 0, "backordered": 0, "unallocated": 60});
        consumer.wait_for_json(&format!("/v1/inventory/{sku}"), &expected).await;
    }
    consumer.shutdown().await;
}

#[tokio::test]
async fn unknown_skus_answer_404_and_malformed_skus_400_with_json() {
    let (consumer, _orders, _inventory) = start_projection("inv-errors").await;
    let (status, body) = consumer.get("/v1/inventory/NEVER-SEEN").await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("NEVER-SEEN"), "{body}");

    let long = "X".repeat(300);
    let (status, body) = consumer.get(&format!("/v1/inventory/{long}")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "sku", "{body}");
    let (status, body) = consumer.get("/v1/inventory/has%20space").await;
    assert_eq!(status, 400, "{body}");
    consumer.shutdown().await;
}
