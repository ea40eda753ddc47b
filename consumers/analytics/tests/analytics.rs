//! The analytics consumer against the real broker and Postgres: sales per hour and day per
//! currency, the CSV download, units and stock movements per day, and parameter checks.

use chrono::{DateTime, Utc};
use orderflow_analytics::connect;
use orderflow_consumer_kit::testing::{TestConsumer, fresh_topics, isolated_args, start};
use orderflow_events::{Currency, Event, MinorUnits};
use orderflow_testkit::events::{order, producer, publish, stock_change};
use serde_json::json;

async fn start_analytics(prefix: &str) -> (TestConsumer, String, String) {
    let (orders, inventory) = fresh_topics(prefix).await;
    let args = isolated_args(prefix, &[orders.clone(), inventory.clone()]);
    let consumer = start(connect(args).await.expect("store connects")).await;
    (consumer, orders, inventory)
}

fn at(time: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(time).unwrap().with_timezone(&Utc)
}

/// An order of `units` of SKU-A placed at `time` in `currency` (total = 250 per unit).
fn order_at(id: &str, time: &str, currency: &str, units: u32) -> Event {
    let mut event = order(id, &[("SKU-A", units)]);
    if let Event::OrderPlaced(o) = &mut event {
        o.placed_at = at(time);
        o.currency = Currency::parse(currency).unwrap();
        o.total_minor = MinorUnits::parse(250 * i64::from(units)).unwrap();
    }
    event
}

fn change_at(time: &str, delta: i64, reason: &str) -> Event {
    let mut event = stock_change("SKU-A", delta, reason, None);
    if let Event::InventoryChanged(c) = &mut event {
        c.occurred_at = at(time);
    }
    event
}

const RANGE: &str = "from=2026-11-22T00:00:00Z&to=2026-11-24T00:00:00Z";

#[tokio::test]
async fn sales_are_counted_per_hour_and_currency_and_days_sum_their_hours() {
    let (consumer, orders, _inventory) = start_analytics("ana-sales").await;
    let producer = producer();
    publish(
        &producer,
        &orders,
        &[
            order_at("o-1", "2026-11-22T13:05:00Z", "EUR", 1),
            order_at("o-2", "2026-11-22T13:59:59Z", "EUR", 2),
            order_at("o-3", "2026-11-22T13:30:00Z", "CHF", 1),
            order_at("o-4", "2026-11-22T14:00:00Z", "EUR", 4),
            order_at("o-5", "2026-11-23T01:00:00Z", "EUR", 1),
            order_at("o-outside", "2026-11-24T00:00:00Z", "EUR", 9),
        ],
    )
    .await;
    consumer
        .wait_for_json(
            &format!("/v1/sales?bucket=hour&{RANGE}"),
            &json!({"buckets": [
                {"bucket": "2026-11-22T13:00:00Z", "currency": "CHF", "orders": 1, "revenue_minor": 250},
                {"bucket": "2026-11-22T13:00:00Z", "currency": "EUR", "orders": 2, "revenue_minor": 750},
                {"bucket": "2026-11-22T14:00:00Z", "currency": "EUR", "orders": 1, "revenue_minor": 1000},
                {"bucket": "2026-11-23T01:00:00Z", "currency": "EUR", "orders": 1, "revenue_minor": 250},
            ]}),
        )
        .await;
    let day_json = json!({"buckets": [
        {"bucket": "2026-11-22T00:00:00Z", "currency": "CHF", "orders": 1, "revenue_minor": 250},
        {"bucket": "2026-11-22T00:00:00Z", "currency": "EUR", "orders": 3, "revenue_minor": 1750},
        {"bucket": "2026-11-23T00:00:00Z", "currency": "EUR", "orders": 1, "revenue_minor": 250},
    ]});
    assert_eq!(consumer.get(&format!("/v1/sales?bucket=day&{RANGE}")).await, (200, day_json));
    // The order at `to` is outside the half-open range, and inside the next one.
    consumer
        .wait_for_json(
            "/v1/sales?bucket=day&from=2026-11-24T00:00:00Z&to=2026-11-25T00:00:00Z",
            &json!({"buckets": [{"bucket": "2026-11-24T00:00:00Z", "currency": "EUR", "orders": 1, "revenue_minor": 2250}]}),
        )
        .await;

    let expected_csv = "bucket,currency,orders,revenue_minor\n2026-11-22T00:00:00Z,CHF,1,250\n2026-11-22T00:00:00Z,EUR,3,1750\n2026-11-23T00:00:00Z,EUR,1,250\n";
    let url = format!("{}/v1/sales?bucket=day&{RANGE}", consumer.base_url);
    let by_accept = consumer.client.get(&url).header("accept", "text/csv").send().await.unwrap();
    assert_eq!(by_accept.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(by_accept.text().await.unwrap(), expected_csv);
    let by_format = consumer.client.get(format!("{url}&format=csv")).send().await.unwrap();
    assert_eq!(by_format.text().await.unwrap(), expected_csv);
    consumer.shutdown().await;
}

#[tokio::test]
async fn units_per_sku_and_stock_movements_per_reason_are_counted_per_day() {
    let (consumer, orders, inventory) = start_analytics("ana-days").await;
    let producer = producer();
    publish(
        &producer,
        &orders,
        &[order_at("o-1", "2026-11-22T10:00:00Z", "EUR", 2), order_at("o-2", "2026-11-22T23:00:00Z", "CHF", 3)],
    )
    .await;
    publish(
        &producer,
        &inventory,
        &[
            change_at("2026-11-22T08:00:00Z", 10, "received"),
            change_at("2026-11-22T09:00:00Z", 5, "received"),
            change_at("2026-11-22T12:00:00Z", -2, "shipped"),
            change_at("2026-11-23T12:00:00Z", -1, "damaged"),
        ],
    )
    .await;
    consumer
        .wait_for_json(
            &format!("/v1/units?{RANGE}"),
            &json!({"days": [{"day": "2026-11-22", "sku": "SKU-A", "units": 5}]}),
        )
        .await;
    consumer
        .wait_for_json(
            &format!("/v1/stock-movements?{RANGE}"),
            &json!({"days": [
                {"day": "2026-11-22", "reason": "received", "movements": 2, "units": 15},
                {"day": "2026-11-22", "reason": "shipped", "movements": 1, "units": -2},
                {"day": "2026-11-23", "reason": "damaged", "movements": 1, "units": -1},
            ]}),
        )
        .await;
    consumer.shutdown().await;
}

#[tokio::test]
async fn bad_sales_parameters_answer_400_naming_the_parameter() {
    let (consumer, _orders, _inventory) = start_analytics("ana-params").await;
    let cases = [
        ("/v1/sales?bucket=week&from=2026-11-22T00:00:00Z&to=2026-11-23T00:00:00Z", "bucket"),
        ("/v1/sales?bucket=hour&from=yesterday&to=2026-11-23T00:00:00Z", "from"),
        ("/v1/sales?bucket=hour&from=2026-11-22T00:00:00Z", "to"),
        ("/v1/sales?bucket=hour&from=2026-11-23T00:00:00Z&to=2026-11-22T00:00:00Z", "from"),
        ("/v1/sales?bucket=hour&from=2026-01-01T00:00:00Z&to=2026-11-22T00:00:00Z", "to"),
        ("/v1/sales?bucket=day&from=2020-01-01T00:00:00Z&to=2026-11-22T00:00:00Z", "to"),
        ("/v1/sales?bucket=day&from=2026-11-22T00:00:00Z&to=2026-11-23T00:00:00Z&format=xml", "format"),
        ("/v1/units?from=2026-11-22T00:00:00Z&to=not-a-time", "to"),
    ];
    for (path, field) in cases {
        let (status, body) = consumer.get(path).await;
        assert_eq!((status, body["field"].as_str()), (400, Some(field)), "{path}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| e.starts_with(field)), "{path}: {body}");
    }
    let long = format!("/v1/sales?bucket=hour&from={}&to=2026-11-22T00:00:00Z", "9".repeat(1000));
    assert_eq!(consumer.get(&long).await.0, 400);
    // A whole year of days is fine, and an empty store answers an empty list.
    assert_eq!(
        consumer.get("/v1/sales?bucket=day&from=2025-11-22T00:00:00Z&to=2026-11-22T00:00:00Z").await,
        (200, json!({"buckets": []}))
    );
    consumer.shutdown().await;
}
