//! The order-history consumer against the real broker and Postgres: a customer's orders come
//! newest first whatever order they arrive in, an order placed twice is listed once, and the
//! read API bounds its page and answers bad parameters with JSON 400s.

use chrono::{DateTime, TimeDelta, Utc};
use orderflow_consumer_kit::testing::{TestConsumer, isolated_args, start};
use orderflow_events::{CustomerId, Event};
use orderflow_order_history::connect;
use orderflow_testkit::events::{order, producer, publish};
use orderflow_testkit::fresh_topic;
use serde_json::{Value, json};

async fn start_history(prefix: &str) -> (TestConsumer, String) {
    let orders = fresh_topic(&format!("{prefix}-orders"), 3).await;
    let consumer =
        start(connect(isolated_args(prefix, std::slice::from_ref(&orders))).await.expect("store connects")).await;
    (consumer, orders)
}

/// An order of `customer` placed at `placed_at`, with one line per sku (2 units at 2.50 each).
fn order_of(order_id: &str, customer: &str, placed_at: DateTime<Utc>, skus: &[&str]) -> Event {
    let lines: Vec<(&str, u32)> = skus.iter().map(|sku| (*sku, 2)).collect();
    let Event::OrderPlaced(mut placed) = order(order_id, &lines) else { unreachable!("order() makes an OrderPlaced") };
    placed.customer.id = CustomerId::parse(customer).expect("a valid customer id");
    placed.placed_at = placed_at;
    Event::OrderPlaced(placed)
}

fn at(minutes: i64) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-22T13:00:00Z").unwrap().with_timezone(&Utc) + TimeDelta::minutes(minutes)
}

fn listed(order_id: &str, minutes: i64, lines: usize) -> Value {
    json!({"order_id": order_id, "placed_at": at(minutes).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
           "total_minor": 500 * lines, "currency": "EUR", "lines": lines})
}

#[tokio::test]
async fn a_customers_orders_come_newest_first_whatever_order_they_arrive_in() {
    let (consumer, orders) = start_history("hist-newest").await;
    // The oldest order arrives last, and another customer's order in between.
    publish(
        &producer(),
        &orders,
        &[
            order_of("h-2", "cust-a", at(2), &["SKU-A"]),
            order_of("h-3", "cust-a", at(3), &["SKU-A", "SKU-B"]),
            order_of("h-other", "cust-b", at(4), &["SKU-A"]),
            order_of("h-1", "cust-a", at(1), &["SKU-A", "SKU-B", "SKU-C"]),
        ],
    )
    .await;
    let expected = json!({"customer_id": "cust-a", "more": false,
        "orders": [listed("h-3", 3, 2), listed("h-2", 2, 1), listed("h-1", 1, 3)]});
    consumer.wait_for_json("/v1/customers/cust-a/orders", &expected).await;
    consumer.shutdown().await;
}

#[tokio::test]
async fn an_order_placed_twice_is_listed_once() {
    let (consumer, orders) = start_history("hist-twice").await;
    let first = order_of("h-dup", "cust-d", at(5), &["SKU-A"]);
    // The same event twice (the ledger skips it), and the same order re-published under a
    // new event id (one row per order id).
    let again = order_of("h-dup", "cust-d", at(5), &["SKU-A"]);
    publish(&producer(), &orders, &[first.clone(), first, again]).await;
    consumer.wait_for_offsets_sum(3, std::time::Duration::from_secs(60)).await;
    let expected = json!({"customer_id": "cust-d", "more": false, "orders": [listed("h-dup", 5, 1)]});
    consumer.wait_for_json("/v1/customers/cust-d/orders", &expected).await;
    consumer.shutdown().await;
}

#[tokio::test]
async fn the_page_is_bounded_by_limit_and_bad_parameters_answer_json_400() {
    let (consumer, orders) = start_history("hist-limit").await;
    let events: Vec<Event> = (0..3).map(|i| order_of(&format!("h-l{i}"), "cust-l", at(i), &["SKU-A"])).collect();
    publish(&producer(), &orders, &events).await;
    let expected =
        json!({"customer_id": "cust-l", "more": true, "orders": [listed("h-l2", 2, 1), listed("h-l1", 1, 1)]});
    consumer.wait_for_json("/v1/customers/cust-l/orders?limit=2", &expected).await;

    let (status, body) = consumer.get("/v1/customers/cust-never/orders").await;
    assert_eq!((status, body), (200, json!({"customer_id": "cust-never", "orders": [], "more": false})));
    for (path, field) in [
        ("/v1/customers/cust-l/orders?limit=0", "limit"),
        ("/v1/customers/cust-l/orders?limit=101", "limit"),
        ("/v1/customers/cust-l/orders?limit=ten", "limit"),
        ("/v1/customers/has%20space/orders", "customer_id"),
    ] {
        let (status, body) = consumer.get(path).await;
        assert_eq!((status, body["field"].as_str()), (400, Some(field)), "{path}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| e.starts_with(&format!("{field}: "))), "{path}: {body}");
    }
    let (status, body) = consumer.get(&format!("/v1/customers/{}/orders", "c".repeat(300))).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("customer_id")), "{body}");
    consumer.shutdown().await;
}
