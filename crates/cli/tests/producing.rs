//! `orderflow publish` and `orderflow simulate` against the real broker (and an in-process
//! ingress for simulate).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use clap::Parser;
use orderflow_cli::Cli;
use orderflow_cli::simulate::simulate;
use orderflow_events::Event;
use orderflow_ingress::IngressConfig;
use orderflow_ingress::config::Secret;
use orderflow_testkit::events::{high_watermark_sum, read_distinct};
use orderflow_testkit::{fresh_topic, kafka_args};

const PARTITIONS: usize = 3;

async fn read_events(topic: &str, distinct: usize) -> Vec<Event> {
    read_distinct(topic, distinct, Duration::from_secs(30)).await.into_iter().map(|r| r.event).collect()
}

#[tokio::test]
async fn publish_reports_every_rejected_line_and_still_publishes_the_good_ones() {
    let orders = fresh_topic("cli-publish-orders", PARTITIONS).await;
    let inventory = fresh_topic("cli-publish-inventory", PARTITIONS).await;
    let file = tempfile::NamedTempFile::new().unwrap();
    let lines = [
        r#"{"type": "order", "order_id": "o-1", "customer": {"id": "c", "email": "a@example.com", "name": "A"}, "currency": "EUR", "lines": [{"sku": "s1", "quantity": 1, "unit_price_minor": 100}], "total_minor": 100, "shipping_address": {"line1": "x", "city": "y", "postal_code": "1", "country": "CH"}}"#,
        r#"{"sku": "s1", "warehouse": "w1", "delta": 5, "reason": "received"}"#,
        r#"{"sku": "s1", "warehouse": "w1", "delta": 5, "reason": "stolen"}"#,
        r#"{"sku": "s1", "#,
        "# a comment",
        "",
        r#"{"type": "inventory_change", "sku": "s2", "warehouse": "w1", "delta": -1, "reason": "damaged"}"#,
    ];
    std::fs::write(file.path(), lines.join("\n")).unwrap();
    let path = file.path().to_str().unwrap();
    let brokers = kafka_args().brokers;
    let cli = || {
        Cli::parse_from([
            "orderflow",
            "--kafka-brokers",
            &brokers,
            "publish",
            path,
            "--orders-topic",
            &orders,
            "--inventory-topic",
            &inventory,
            "--quiet",
        ])
    };
    let orderflow_cli::Command::Publish(args) = cli().command else { unreachable!() };
    let summary = orderflow_cli::publish::publish_file(&kafka_args(), &args).await.unwrap();
    assert_eq!(summary.published, 3);
    assert!(summary.failed.is_empty());
    let rejected: Vec<(usize, &str)> =
        summary.rejected.iter().flat_map(|r| r.errors.iter().map(move |e| (r.line, e.field.as_str()))).collect();
    assert_eq!(rejected, vec![(3, "reason"), (4, "line")]);

    // The command itself exits non-zero because of the rejected lines, and publishing the
    // same file again reuses the event ids.
    let error = orderflow_cli::run(cli()).await.unwrap_err();
    assert!(error.to_string().contains("2 line(s) rejected"), "{error:#}");
    let events = read_events(&inventory, 2).await;
    wait_for_watermark(&inventory, 4).await;
    let distinct: HashSet<_> = events.iter().map(Event::event_id).collect();
    assert_eq!(distinct.len(), 2);
    assert_eq!(high_watermark_sum(&orders), 2);
}

async fn wait_for_watermark(topic: &str, n: i64) {
    orderflow_testkit::wait_until("records on the topic", Duration::from_secs(20), || async {
        (high_watermark_sum(topic) >= n).then_some(())
    })
    .await;
}

#[tokio::test]
async fn simulate_sends_its_load_through_the_ingress_and_its_totals_match_the_topics() {
    let orders_topic = fresh_topic("cli-sim-orders", PARTITIONS).await;
    let inventory_topic = fresh_topic("cli-sim-inventory", PARTITIONS).await;
    let mut config = IngressConfig::parse_from([
        "ingress",
        "--kafka-brokers",
        &kafka_args().brokers,
        "--orders-topic",
        &orders_topic,
        "--inventory-topic",
        &inventory_topic,
    ]);
    config.tokens = Some(Secret("sim:sim-token-123456".to_owned()));
    // The run id (and so every Idempotency-Key) is fixed: a key store of this run's own, or
    // the ingress would replay the answers of the last run.
    config.idempotency_schema = orderflow_testkit::unique_ident("sim_keys");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(orderflow_ingress::run_with_listener(config, listener, async {
        let _ = stopped.await;
    }));

    let expect_file = tempfile::NamedTempFile::new().unwrap();
    let cli = Cli::parse_from([
        "orderflow",
        "simulate",
        "--ingress-url",
        &url,
        "--token",
        "sim-token-123456",
        "--orders",
        "20",
        "--skus",
        "5",
        "--warehouses",
        "2",
        "--restocks",
        "30",
        "--batch",
        "10",
        "--retries",
        "5",
        "--concurrency",
        "4",
        "--seed",
        "7",
        "--expect-file",
        expect_file.path().to_str().unwrap(),
    ]);
    let orderflow_cli::Command::Simulate(args) = cli.command else { unreachable!() };
    let (report, expected) = simulate(&args).await.unwrap();

    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(report.retried, 5);
    assert_eq!(report.by_status.get("202"), Some(&report.requests));
    assert_eq!(expected.orders, 20);
    assert_eq!(expected.shipped_orders.len(), 10);

    let orders = read_events(&orders_topic, 20).await;
    let changes = read_events(&inventory_topic, expected.events - 20).await;
    let mut on_hand: BTreeMap<String, i64> = BTreeMap::new();
    let mut seen = HashSet::new();
    for event in orders.iter().chain(&changes) {
        if let (true, Event::InventoryChanged(c)) = (seen.insert(event.event_id()), event) {
            *on_hand.entry(c.sku.as_str().to_owned()).or_default() += c.delta.get();
        }
    }
    assert_eq!(seen.len(), expected.events);
    for (sku, totals) in &expected.skus {
        assert_eq!(on_hand.get(sku).copied().unwrap_or(0), totals.on_hand, "{sku}");
    }
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(expect_file.path()).unwrap()).unwrap();
    assert_eq!(written["orders"], 20);
    assert_eq!(written["orders_by_currency"]["EUR"], 20);
    // The run's window, which `orderflow verify` reads analytics' sales over.
    assert!(expected.started_at <= expected.finished_at);
    assert!(written["started_at"].is_string() && written["finished_at"].is_string(), "{written}");
}
