//! One order is one order in every store, whatever the client does (docs/producing.md,
//! "Idempotency"), through the real binaries: two ingress instances sharing their key store,
//! and every registered consumer (`orderflow consumers`) with its shipped defaults.
//!
//! - the same order posted twice without an `Idempotency-Key`, one after the other, and
//!   twice at once through the two instances: applied once by every consumer, analytics
//!   included (the runtime's natural-key dedupe, docs/events.md "Natural keys");
//! - the same order id posted again with other lines: the first version applied, the second
//!   in each consumer's dead-letter topic with an error naming the order and the first event.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use orderflow_testkit::events::{high_watermark_sum, order_request, read_distinct};
use orderflow_testkit::process::{BinaryProcess, bin_path};
use orderflow_testkit::{database_url, fresh_topic, unique_ident, wait_until};
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;

const TOKEN: &str = "tok-idempotency-0123456789";

struct Consumer {
    name: String,
    schema: String,
    dlq: String,
    /// The topics it reads (this test's).
    topics: Vec<String>,
    _process: BinaryProcess,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `(name, binary, topics)` of every registered consumer.
fn registered() -> Vec<(String, String, Vec<String>)> {
    let out = Command::new(bin_path("orderflow").expect("the binaries are built (cargo build --workspace --bins)"))
        .arg("consumers")
        .output()
        .expect("orderflow consumers runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            (fields[0].to_owned(), fields[1].to_owned(), fields[3].split(',').map(str::to_owned).collect())
        })
        .collect()
}

async fn healthy(http: &reqwest::Client, what: &str, addr: &str) {
    wait_until(&format!("{what} to answer /healthz"), Duration::from_secs(60), || async {
        let response = http.get(format!("http://{addr}/healthz")).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;
}

async fn post(http: &reqwest::Client, ingress: &str, body: &Value) -> Value {
    let response = http.post(format!("http://{ingress}/v1/orders")).bearer_auth(TOKEN).json(body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    response.json().await.unwrap()
}

/// One statement's single integer answer.
async fn number(db: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar::<_, Option<i64>>(sql).fetch_one(db).await.unwrap_or_else(|e| panic!("{sql}: {e}")).unwrap_or(0)
}

#[tokio::test]
async fn an_order_posted_twice_without_a_key_is_one_order_everywhere_and_a_conflicting_one_is_dead_lettered() {
    // Arrange: fresh topics, two ingress instances on one key store, every consumer.
    orderflow_testkit::init_test_logs();
    let ns = unique_ident("idem");
    let orders = fresh_topic("idem-orders", 3).await;
    let inventory = fresh_topic("idem-inventory", 1).await;
    let allocations = fresh_topic("idem-allocations", 1).await;
    let ours = |topic: &str| match topic {
        "inventory.v1" => inventory.clone(),
        "allocations.v1" => allocations.clone(),
        _ => orders.clone(),
    };
    let http = reqwest::Client::new();
    let tokens = format!("checkout:{TOKEN}");
    let key_schema = format!("{ns}_ingress");
    let mut ingresses = Vec::new();
    for _ in 0..2 {
        let addr = format!("127.0.0.1:{}", free_port());
        let env = [
            ("INGRESS_TOKENS", tokens.as_str()),
            ("INGRESS_ORDERS_TOPIC", orders.as_str()),
            ("INGRESS_INVENTORY_TOPIC", inventory.as_str()),
            ("INGRESS_IDEMPOTENCY_SCHEMA", key_schema.as_str()),
        ];
        let process = BinaryProcess::spawn("ingress", &["--listen", &addr], &env).unwrap();
        ingresses.push((addr, process));
    }
    let mut consumers = Vec::new();
    let mut addrs = Vec::new();
    for (name, binary, topics) in registered() {
        let schema = format!("{ns}_{}", name.replace('-', "_"));
        let group = format!("{ns}.{name}");
        let dlq = format!("{group}.dlq");
        let addr = format!("127.0.0.1:{}", free_port());
        let topics: Vec<String> = topics.iter().map(|t| ours(t)).collect();
        let mut args = vec!["--listen", &addr, "--schema", &schema, "--group", &group, "--dlq-topic", &dlq];
        for topic in &topics {
            args.extend(["--topic", topic.as_str()]);
        }
        // Nothing listens there: the email consumer keeps its emails queued, one row each.
        let process = BinaryProcess::spawn(&binary, &args, &[("SMTP_URL", "smtp://127.0.0.1:1")]).unwrap();
        addrs.push((name.clone(), addr.clone()));
        consumers.push(Consumer { name, schema, dlq, topics, _process: process });
    }
    for (addr, _) in &ingresses {
        healthy(&http, "the ingress", addr).await;
    }
    for (name, addr) in &addrs {
        healthy(&http, name, addr).await;
    }
    let (one, two) = (ingresses[0].0.as_str(), ingresses[1].0.as_str());

    // Act: no Idempotency-Key anywhere.
    let twice = order_request("o-twice", &[("sku-a", 2)]);
    let a1 = post(&http, one, &twice).await;
    let a2 = post(&http, one, &twice).await;
    let raced = order_request("o-raced", &[("sku-b", 1)]);
    let (b1, b2) = futures::join!(post(&http, one, &raced), post(&http, two, &raced));
    let first = post(&http, one, &order_request("o-conflict", &[("sku-c", 1)])).await;
    let second = post(&http, two, &order_request("o-conflict", &[("sku-c", 7)])).await;
    post(&http, two, &order_request("o-once", &[("sku-d", 3)])).await;
    for (x, y) in [(&a1, &a2), (&b1, &b2), (&first, &second)] {
        assert_ne!(x["event_id"], y["event_id"], "without a key every request is a new event");
    }

    // Assert: every consumer applied all seven records ...
    let db = PgPool::connect(&database_url()).await.unwrap();
    for consumer in &consumers {
        let published: i64 = consumer.topics.iter().map(|t| high_watermark_sum(t)).sum();
        let applied = format!("SELECT sum(next_offset)::bigint FROM {}.orderflow_offsets", consumer.schema);
        let what = format!("{} to apply all {published} records", consumer.name);
        wait_until(&what, Duration::from_secs(60), || async {
            sqlx::query_scalar::<_, Option<i64>>(&applied)
                .fetch_one(&db)
                .await
                .ok()
                .flatten()
                .filter(|n| *n == published)
        })
        .await;
    }

    // ... holds each of the four orders once, the conflict's first version ...
    let by_name: BTreeMap<&str, &Consumer> = consumers.iter().map(|c| (c.name.as_str(), c)).collect();
    let per_order = [
        ("fulfillment", "fulfillments"),
        ("email", "emails"),
        ("order-history", "customer_orders"),
        ("inventory-projection", "order_skus"),
    ];
    for (consumer, table) in per_order {
        let schema = &by_name[consumer].schema;
        let rows = number(&db, &format!("SELECT count(*) FROM {schema}.{table}")).await;
        assert_eq!(rows, 4, "{consumer}: one row per order in {table}");
    }
    let fulfillment = &by_name["fulfillment"].schema;
    let conflict_quantity =
        number(&db, &format!("SELECT quantity FROM {fulfillment}.fulfillment_lines WHERE order_id = 'o-conflict'"))
            .await;
    assert_eq!(conflict_quantity, 1, "the first version of o-conflict is the one applied");
    let projection = &by_name["inventory-projection"].schema;
    let ordered = number(&db, &format!("SELECT sum(ordered)::bigint FROM {projection}.order_skus")).await;
    assert_eq!(ordered, 2 + 1 + 1 + 3, "each order's units once");
    let analytics = &by_name["analytics"].schema;
    let counted = number(&db, &format!("SELECT sum(orders)::bigint FROM {analytics}.sales_hourly")).await;
    let revenue = number(&db, &format!("SELECT sum(revenue_minor)::bigint FROM {analytics}.sales_hourly")).await;
    assert_eq!((counted, revenue), (4, (2 + 1 + 1 + 3) * 250), "analytics counts each order and its revenue once");

    // ... and dead-lettered the conflicting version, naming the order and the first event.
    for consumer in &consumers {
        let dead = read_distinct(&consumer.dlq, 1, Duration::from_secs(30)).await;
        assert_eq!(high_watermark_sum(&consumer.dlq), 1, "{}: only the conflict is dead-lettered", consumer.name);
        assert_eq!(dead[0].event.event_id().to_string(), second["event_id"].as_str().unwrap(), "{}", consumer.name);
        assert_eq!(dead[0].header("dlq_error_class").as_deref(), Some("permanent"), "{}", consumer.name);
        let message = dead[0].header("dlq_error_message").unwrap_or_default();
        assert!(message.contains("order o-conflict was already placed by event"), "{}: {message}", consumer.name);
        assert!(message.contains(first["event_id"].as_str().unwrap()), "{}: {message}", consumer.name);
    }
}
