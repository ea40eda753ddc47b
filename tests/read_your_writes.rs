//! Read-your-writes across the asynchronous boundary (docs/read-your-writes.md), through the
//! real binaries with their shipped defaults: the ingress answers a write with a consistency
//! token, and a read that carries it sees the write, or is told plainly that the consumer has
//! not got there yet.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use orderflow_service::consistency::Token;
use orderflow_testkit::events::order_request;
use orderflow_testkit::process::BinaryProcess;
use orderflow_testkit::{API_TOKEN, fresh_topic, unique_ident, wait_until};
use reqwest::StatusCode;
use serde_json::Value;

const TOKEN: &str = "tok-ryw-0123456789";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Pipeline {
    ingress: String,
    /// Two fulfillment instances in one group: a read lands on the owner of the order's
    /// partition or on the other instance.
    fulfillment: [String; 2],
    order_history: String,
    inventory_topic: String,
    http: reqwest::Client,
    _processes: Vec<BinaryProcess>,
}

async fn start() -> Pipeline {
    orderflow_testkit::init_test_logs();
    let ns = unique_ident("ryw");
    let orders = fresh_topic("ryw-orders", 4).await;
    let inventory = fresh_topic("ryw-inventory", 1).await;
    // Reads carry the read API token (the test kit starts consumers accepting it); writes
    // set the ingress's own.
    let mut read_token = reqwest::header::HeaderMap::new();
    read_token.insert(reqwest::header::AUTHORIZATION, format!("Bearer {API_TOKEN}").parse().unwrap());
    let http = reqwest::Client::builder().default_headers(read_token).build().unwrap();
    let tokens = format!("checkout:{TOKEN}");
    let ingress = format!("127.0.0.1:{}", free_port());
    let key_schema = format!("{ns}_ingress");
    let mut processes = vec![
        BinaryProcess::spawn(
            "ingress",
            &["--listen", &ingress],
            &[
                ("INGRESS_TOKENS", tokens.as_str()),
                ("INGRESS_ORDERS_TOPIC", orders.as_str()),
                ("INGRESS_INVENTORY_TOPIC", inventory.as_str()),
                ("INGRESS_IDEMPOTENCY_SCHEMA", key_schema.as_str()),
            ],
        )
        .unwrap(),
    ];
    let mut consumer = |binary: &str, name: &str, topics: &[&str]| {
        let addr = format!("127.0.0.1:{}", free_port());
        let (schema, group) = (format!("{ns}_{}", name.replace('-', "_")), format!("{ns}.{name}"));
        let dlq = format!("{group}.dlq");
        let mut args = vec!["--listen", &addr, "--schema", &schema, "--group", &group, "--dlq-topic", &dlq];
        for topic in topics {
            args.extend(["--topic", topic]);
        }
        processes.push(BinaryProcess::spawn(binary, &args, &[]).unwrap());
        addr
    };
    let fulfillment = [
        consumer("fulfillment", "fulfillment", &[&orders, &inventory]),
        consumer("fulfillment", "fulfillment", &[&orders, &inventory]),
    ];
    let order_history = consumer("order-history", "order-history", &[&orders]);
    for addr in [&ingress, &fulfillment[0], &fulfillment[1], &order_history] {
        wait_until(&format!("{addr} to be ready"), Duration::from_secs(60), || async {
            let response = http.get(format!("http://{addr}/readyz")).send().await.ok()?;
            response.status().is_success().then_some(())
        })
        .await;
    }
    Pipeline { ingress, fulfillment, order_history, inventory_topic: inventory, http, _processes: processes }
}

impl Pipeline {
    async fn post(&self, path: &str, body: &Value) -> Value {
        let url = format!("http://{}{path}", self.ingress);
        let response = self.http.post(url).bearer_auth(TOKEN).json(body).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        response.json().await.unwrap()
    }

    async fn get(&self, addr: &str, path_and_query: &str) -> reqwest::Response {
        self.http.get(format!("http://{addr}{path_and_query}")).send().await.unwrap()
    }
}

#[tokio::test]
async fn a_read_with_the_writes_token_sees_the_write_every_time_and_garbage_tokens_are_refused() {
    let pipeline = start().await;

    // Load beside the tries: stock changes through the same ingress, at a steady pace (20
    // requests of 20 changes a second), so the load is the same on any machine.
    let loading = tokio::spawn({
        let (http, ingress) = (pipeline.http.clone(), pipeline.ingress.clone());
        async move {
            let mut pace = tokio::time::interval(Duration::from_millis(50));
            pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                pace.tick().await;
                let body = serde_json::json!({"changes": (0..20).map(|i| serde_json::json!(
                    {"sku": format!("load-{i}"), "warehouse": "w1", "delta": 1, "reason": "received"})).collect::<Vec<_>>()});
                let url = format!("http://{ingress}/v1/inventory/changes");
                let _ = http.post(url).bearer_auth(TOKEN).json(&body).send().await;
            }
        }
    });

    // 1,000 tries, 8 at a time: POST an order, then at once GET it with the token, from
    // either fulfillment instance (one owns the order's partition, the other reads Postgres).
    // The contract: the read sees the write, or says plainly it has not got there yet (503
    // with Retry-After; the client retries with the same token), never 404 or stale data.
    let tries = futures::future::join_all((0..8).map(|worker| {
        let pipeline = &pipeline;
        async move {
            let (mut slowest, mut not_yet) = (Duration::ZERO, 0u32);
            for i in 0..125 {
                let order_id = format!("ryw-{worker}-{i}");
                let accepted = pipeline.post("/v1/orders", &order_request(&order_id, &[("sku-1", 1)])).await;
                let token = accepted["consistency_token"].as_str().expect("the 202 carries a consistency token");
                let instance = &pipeline.fulfillment[i % 2];
                let started = Instant::now();
                let response = loop {
                    let response = if i % 3 == 0 {
                        let url = format!("http://{instance}/v1/fulfillments/{order_id}");
                        pipeline.http.get(url).header("consistency-token", token).send().await.unwrap()
                    } else {
                        pipeline.get(instance, &format!("/v1/fulfillments/{order_id}?after={token}")).await
                    };
                    if response.status() != StatusCode::SERVICE_UNAVAILABLE {
                        break response;
                    }
                    // Not applied yet: a plain 503 saying so, with Retry-After, never an answer.
                    not_yet += 1;
                    let retry_after = response.headers().get("retry-after").expect("a 503 carries Retry-After");
                    let retry_after: u64 = retry_after.to_str().unwrap().parse().unwrap();
                    let body: Value = response.json().await.unwrap();
                    assert!(body["error"].as_str().unwrap().contains("not applied yet"), "{order_id}: {body}");
                    assert!(
                        started.elapsed() < Duration::from_secs(120),
                        "{order_id} still not applied after {:?}",
                        started.elapsed()
                    );
                    tokio::time::sleep(Duration::from_secs(retry_after)).await;
                };
                slowest = slowest.max(started.elapsed());
                assert_eq!(response.status(), StatusCode::OK, "{order_id} read with its token");
                assert!(response.headers().contains_key("orderflow-applied-through"));
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["order_id"], order_id.as_str());
            }
            (slowest, not_yet)
        }
    }))
    .await;
    loading.abort();
    let slowest = tries.iter().map(|(slowest, _)| *slowest).max().unwrap();
    let not_yet: u32 = tries.iter().map(|(_, not_yet)| not_yet).sum();
    eprintln!("slowest read with a token: {slowest:?}; 503 (not applied yet, retried) {not_yet} times");

    // Reads without a token say how fresh they are.
    let plain = pipeline.get(&pipeline.fulfillment[0], "/v1/fulfillments/ryw-0-0").await;
    assert_eq!(plain.status(), StatusCode::OK);
    assert!(plain.headers().contains_key("orderflow-applied-through"));
    let age: i64 = plain.headers()["orderflow-last-applied-age-ms"].to_str().unwrap().parse().unwrap();
    assert!(age >= 0);

    // Garbage tokens: 400, naming the parameter.
    let inventory_write = pipeline
        .post(
            "/v1/inventory/changes",
            &serde_json::json!({"changes": [{"sku": "x", "warehouse": "w1", "delta": 1, "reason": "received"}]}),
        )
        .await;
    let inventory_token = inventory_write["consistency_token"].as_str().unwrap().to_owned();
    assert!(inventory_token.starts_with("v1."));
    let history = format!("/v1/customers/c-1/orders?limit=5&after={inventory_token}");
    let garbage = [
        (
            pipeline.fulfillment[0].as_str(),
            "/v1/fulfillments/ryw-0-0?after=hello".to_owned(),
            "not a consistency token",
        ),
        (pipeline.fulfillment[0].as_str(), "/v1/fulfillments/ryw-0-0?after=v1.%2A%2A".to_owned(), "bad encoding"),
        (pipeline.order_history.as_str(), history, &*format!("names topic {}", pipeline.inventory_topic)),
    ];
    for (addr, path, problem) in &garbage {
        let response = pipeline.get(addr, path).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["field"], "after", "{body}");
        assert!(body["error"].as_str().unwrap().contains(problem), "{path}: {body}");
    }
    // The route's own parameters still work beside the token.
    let order_token =
        pipeline.post("/v1/orders", &order_request("ryw-last", &[("sku-1", 1)])).await["consistency_token"].clone();
    let history = pipeline
        .get(
            &pipeline.order_history,
            &format!("/v1/customers/c-1/orders?limit=1&after={}", order_token.as_str().unwrap()),
        )
        .await;
    assert_eq!(history.status(), StatusCode::OK);
    let body: Value = history.json().await.unwrap();
    assert_eq!(body["orders"][0]["order_id"], "ryw-last", "{body}");
}

#[tokio::test]
async fn a_read_whose_write_the_consumer_has_not_reached_gets_503_with_retry_after_and_the_lag() {
    let pipeline = start().await;
    let accepted = pipeline.post("/v1/orders", &order_request("ryw-far", &[("sku-1", 1)])).await;
    let (topic, partition) = (accepted["topic"].as_str().unwrap(), accepted["partition"].as_i64().unwrap());
    // A write far beyond the end of the partition: what a reader sees while a consumer is
    // stopped or stuck behind.
    let ahead = Token::new([(topic, partition as i32, accepted["offset"].as_i64().unwrap() + 1_000_000)]).encode();

    let started = Instant::now();
    let response = pipeline.get(&pipeline.fulfillment[0], &format!("/v1/fulfillments/ryw-far?after={ahead}")).await;
    let waited = started.elapsed();

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    assert!(waited >= Duration::from_millis(1900), "waits the shipped --read-wait-ms (2 s) first: {waited:?}");
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("not applied yet"), "{body}");
    assert_eq!(body["behind"][0]["topic"], topic, "{body}");
    assert!(body["behind"][0]["next_offset"].as_i64().unwrap() <= accepted["offset"].as_i64().unwrap() + 1, "{body}");
    assert!(body["lag"].is_i64(), "{body}");
}
