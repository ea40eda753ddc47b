//! The ingress against the real broker: started in-process on port 0 with fresh topics, read
//! back with a consumer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use orderflow_events::{CeHeaders, Event};
use orderflow_ingress::config::Secret;
use orderflow_ingress::{AppState, IngressConfig};
use orderflow_testkit::events::{high_watermark_sum, read_distinct};
use orderflow_testkit::{database_url, fresh_topic, kafka_args, unique_ident, unique_name, wait_until};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::oneshot;

const TOKEN: &str = "tok-checkout-0123456789";
const PARTITIONS: usize = 3;

struct TestIngress {
    url: String,
    orders_topic: String,
    inventory_topic: String,
    /// The schema of its `Idempotency-Key` store.
    keys_schema: String,
    http: reqwest::Client,
    _stop: oneshot::Sender<()>,
}

fn base_config(brokers: &str, orders: &str, inventory: &str) -> IngressConfig {
    let mut config = IngressConfig::parse_from([
        "ingress",
        "--listen",
        "127.0.0.1:0",
        "--kafka-brokers",
        brokers,
        "--orders-topic",
        orders,
        "--inventory-topic",
        inventory,
    ]);
    config.tokens = Some(Secret(format!("checkout:{TOKEN}")));
    config.tokens_file = None;
    config.schema_registry_url = None;
    // Each test's keys in a store of its own.
    config.idempotency_schema = unique_ident("ingress_keys");
    config
}

async fn spawn_ingress(customize: impl FnOnce(&mut IngressConfig)) -> TestIngress {
    orderflow_testkit::init_test_logs();
    let orders_topic = fresh_topic("ingress-orders", PARTITIONS).await;
    let inventory_topic = fresh_topic("ingress-inventory", PARTITIONS).await;
    let mut config = base_config(&kafka_args().brokers, &orders_topic, &inventory_topic);
    customize(&mut config);
    let (orders_topic, inventory_topic) = (config.orders_topic.clone(), config.inventory_topic.clone());
    let keys_schema = config.idempotency_schema.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        if let Err(e) = orderflow_ingress::run_with_listener(config, listener, async {
            let _ = stopped.await;
        })
        .await
        {
            panic!("ingress failed: {e:#}");
        }
    });
    TestIngress { url, orders_topic, inventory_topic, keys_schema, http: reqwest::Client::new(), _stop: stop }
}

impl TestIngress {
    async fn post(&self, path: &str, body: &Value, key: Option<&str>) -> reqwest::Response {
        let mut request = self.http.post(format!("{}{path}", self.url)).bearer_auth(TOKEN).json(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        request.send().await.unwrap()
    }
}

impl TestIngress {
    /// POST and return the JSON answer, whatever its status.
    async fn post_json(&self, path: &str, body: &Value, key: Option<&str>) -> Value {
        self.post(path, body, key).await.json().await.unwrap()
    }
}

fn order_body(order_id: &str) -> Value {
    json!({
        "order_id": order_id,
        "customer": {"id": "c-1", "email": "ada@example.com", "name": "Ada Lovelace"},
        "currency": "EUR",
        "lines": [{"sku": "sku-1", "quantity": 2, "unit_price_minor": 1999}],
        "total_minor": 3998,
        "shipping_address": {"line1": "1 Main St", "city": "Zurich", "postal_code": "8000", "country": "CH"}
    })
}

fn changes_body(skus: &[&str]) -> Value {
    json!({"changes": skus.iter().map(|s| json!({"sku": s, "warehouse": "w1", "delta": 5, "reason": "received"})).collect::<Vec<_>>()})
}

/// Records on `topic` once `expected` distinct events are there: (event, CE headers, traceparent).
async fn read_all(topic: &str, expected: usize) -> Vec<(Event, CeHeaders, Option<String>)> {
    read_distinct(topic, expected, Duration::from_secs(30))
        .await
        .into_iter()
        .map(|r| {
            let headers = CeHeaders::from_pairs(r.headers.iter().map(|(k, v)| (k.as_str(), v.as_slice()))).unwrap();
            let traceparent = r.header("traceparent");
            (r.event, headers, traceparent)
        })
        .collect()
}

#[tokio::test]
async fn every_accepted_event_is_on_its_topic_with_its_id_headers_and_trace() {
    let ingress = spawn_ingress(|_| {}).await;
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    let response = ingress
        .http
        .post(format!("{}/v1/orders", ingress.url))
        .bearer_auth(TOKEN)
        .header("traceparent", trace)
        .json(&order_body("o-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let order: Value = response.json().await.unwrap();
    assert_eq!(order["topic"], ingress.orders_topic.as_str());
    assert!(order["offset"].as_i64().unwrap() >= 0);

    let response = ingress.post("/v1/inventory/changes", &changes_body(&["a", "b", "c"]), None).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let batch: Value = response.json().await.unwrap();
    let ids: Vec<&str> = batch["events"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3);

    let orders = read_all(&ingress.orders_topic, 1).await;
    let (event, headers, traceparent) = &orders[0];
    assert_eq!(event.event_id().to_string(), order["event_id"].as_str().unwrap());
    assert_eq!(event.key(), "o-1");
    assert_eq!(headers.id, event.event_id());
    let traceparent = traceparent.as_deref().expect("traceparent header");
    assert!(traceparent.contains("4bf92f3577b34da6a3ce929d0e0e4736"), "trace continued: {traceparent}");

    let mut changes: Vec<String> =
        read_all(&ingress.inventory_topic, 3).await.iter().map(|(e, _, _)| e.event_id().to_string()).collect();
    changes.sort();
    let mut expected: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(changes, expected);
}

#[tokio::test]
async fn a_retried_request_with_the_same_idempotency_key_is_answered_from_the_store_and_published_once() {
    let ingress = spawn_ingress(|_| {}).await;
    let body = order_body("o-retry");

    // The first request publishes; every retry with the same key, sequential or concurrent,
    // gets the same 202 byte for byte and publishes nothing.
    let first = ingress.post("/v1/orders", &body, Some("key-1")).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    assert!(!first.headers().contains_key("idempotent-replayed"));
    let first = first.bytes().await.unwrap();
    let retries = futures::future::join_all((0..4).map(|_| ingress.post("/v1/orders", &body, Some("key-1")))).await;
    for response in retries {
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        assert_eq!(response.headers()["idempotent-replayed"], "true");
        assert_eq!(response.bytes().await.unwrap(), first, "a replay is the stored answer, byte for byte");
    }
    // The same body formatted differently is the same request.
    let reformatted = ingress
        .http
        .post(format!("{}/v1/orders", ingress.url))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .header("Idempotency-Key", "key-1")
        .body(serde_json::to_string_pretty(&body).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(reformatted.status(), StatusCode::ACCEPTED);
    assert_eq!(reformatted.bytes().await.unwrap(), first);

    let other: Value = ingress.post_json("/v1/orders", &body, Some("key-2")).await;
    let first: Value = serde_json::from_slice(&first).unwrap();
    assert_ne!(other["event_id"], first["event_id"]);

    // Batches: each change keeps its own id under one key.
    let batch = changes_body(&["x", "y"]);
    let a = ingress.post_json("/v1/inventory/changes", &batch, Some("b-1")).await;
    let b = ingress.post_json("/v1/inventory/changes", &batch, Some("b-1")).await;
    let ids = |v: &Value| v["events"].as_array().unwrap().iter().map(|e| e["event_id"].clone()).collect::<Vec<_>>();
    assert_eq!(a, b);
    assert_ne!(ids(&a)[0], ids(&a)[1]);

    // On the topics: key-1 once, key-2 once; the batch once.
    let on_topic = read_all(&ingress.orders_topic, 2).await;
    assert_eq!(high_watermark_sum(&ingress.orders_topic), 2, "nothing published twice");
    assert_eq!(high_watermark_sum(&ingress.inventory_topic), 2);
    let distinct: std::collections::HashSet<_> = on_topic.iter().map(|(e, _, _)| e.event_id()).collect();
    assert_eq!(distinct.len(), 2, "key-1 and key-2");
}

#[tokio::test]
async fn the_same_idempotency_key_with_another_body_is_refused_with_422_and_nothing_is_published() {
    let ingress = spawn_ingress(|_| {}).await;
    let first = ingress.post("/v1/orders", &order_body("o-1"), Some("k")).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);

    let reused = ingress.post("/v1/orders", &order_body("o-2"), Some("k")).await;

    assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let said: Value = reused.json().await.unwrap();
    assert_eq!(said["error"], "idempotency_key_reused", "{said}");
    assert!(said["message"].as_str().unwrap().contains("different request body"), "{said}");
    assert_eq!(high_watermark_sum(&ingress.orders_topic), 1);
    // The key still answers its own request.
    let again = ingress.post("/v1/orders", &order_body("o-1"), Some("k")).await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
}

#[tokio::test]
async fn a_key_in_flight_gets_409_and_a_key_whose_request_failed_is_processed_again() {
    // Arrange: an orders topic that does not exist, so a publish waits its whole timeout.
    let ingress = spawn_ingress(|c| c.orders_topic = unique_name("no-such-topic")).await;
    let body = order_body("o-slow");
    let slow = tokio::spawn({
        let (http, url) = (ingress.http.clone(), ingress.url.clone());
        let body = body.clone();
        async move {
            let request = http.post(format!("{url}/v1/orders")).bearer_auth(TOKEN).header("Idempotency-Key", "k-slow");
            request.json(&body).send().await.unwrap()
        }
    });
    let store = PgPool::connect(&database_url()).await.unwrap();
    let claimed = format!("SELECT count(*) FROM {}.idempotency_keys WHERE key = 'k-slow'", ingress.keys_schema);
    wait_until("the first request claimed its key", Duration::from_secs(10), || async {
        let n: i64 = sqlx::query_scalar(&claimed).fetch_one(&store).await.unwrap_or(0);
        (n == 1).then_some(())
    })
    .await;

    // Act: the same key while the first request is in flight.
    let second = ingress.post("/v1/orders", &body, Some("k-slow")).await;

    // Assert: 409 with Retry-After; the first ends with 503 and frees the key, so a retry is
    // processed (and fails the same way) instead of meeting 409.
    assert_eq!(second.status(), StatusCode::CONFLICT);
    assert_eq!(second.headers()["retry-after"], "1");
    let said: Value = second.json().await.unwrap();
    assert_eq!(said["error"], "idempotency_key_in_flight", "{said}");
    assert_eq!(slow.await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    let n: i64 = sqlx::query_scalar(&claimed).fetch_one(&store).await.unwrap();
    assert_eq!(n, 0, "a failed request releases its key");
    let retry = ingress.post("/v1/orders", &body, Some("k-slow")).await;
    assert_eq!(retry.status(), StatusCode::SERVICE_UNAVAILABLE, "processed again, not 409");
}

#[tokio::test]
async fn two_ingress_instances_share_the_key_store() {
    let first = spawn_ingress(|_| {}).await;
    let (orders, inventory, schema) =
        (first.orders_topic.clone(), first.inventory_topic.clone(), first.keys_schema.clone());
    let second = spawn_ingress(move |c| {
        c.orders_topic = orders;
        c.inventory_topic = inventory;
        c.idempotency_schema = schema;
    })
    .await;
    let body = order_body("o-shared");

    let a = first.post("/v1/orders", &body, Some("shared-1")).await;
    let b = second.post("/v1/orders", &body, Some("shared-1")).await;

    assert_eq!((a.status(), b.status()), (StatusCode::ACCEPTED, StatusCode::ACCEPTED));
    assert_eq!(b.headers()["idempotent-replayed"], "true");
    assert_eq!(a.bytes().await.unwrap(), b.bytes().await.unwrap());
    assert_eq!(high_watermark_sum(&first.orders_topic), 1);
}

#[tokio::test]
async fn without_its_database_the_ingress_still_accepts_keyed_requests_and_says_so() {
    let ingress = spawn_ingress(|c| c.database.database_url = "postgres://postgres@127.0.0.1:1/nowhere".into()).await;
    let body = order_body("o-no-store");

    let a = ingress.post("/v1/orders", &body, Some("k-no-store")).await;
    let b = ingress.post("/v1/orders", &body, Some("k-no-store")).await;

    // Both published (no replay without the store), under the same event id.
    assert_eq!((a.status(), b.status()), (StatusCode::ACCEPTED, StatusCode::ACCEPTED));
    let (a, b): (Value, Value) = (a.json().await.unwrap(), b.json().await.unwrap());
    assert_eq!(a["event_id"], b["event_id"]);
    assert_eq!(high_watermark_sum(&ingress.orders_topic), 2);
    let metrics = ingress.http.get(format!("{}/metrics", ingress.url)).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("ingress_idempotency_bypassed_total{route=\"/v1/orders\"}")),
        "{metrics}"
    );
}

#[tokio::test]
async fn expired_keys_are_pruned_and_an_expired_key_starts_over() {
    use orderflow_ingress::idempotency::KeyStore;
    let ingress = spawn_ingress(|_| {}).await;
    let body = order_body("o-old");
    assert_eq!(ingress.post("/v1/orders", &body, Some("k-old")).await.status(), StatusCode::ACCEPTED);
    let store = PgPool::connect(&database_url()).await.unwrap();
    let table = format!("{}.idempotency_keys", ingress.keys_schema);
    sqlx::query(&format!("UPDATE {table} SET expires_at = now() - interval '1 second'")).execute(&store).await.unwrap();

    // An expired key is a new key: processed and published again.
    let again = ingress.post("/v1/orders", &body, Some("k-old")).await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert!(!again.headers().contains_key("idempotent-replayed"));
    assert_eq!(high_watermark_sum(&ingress.orders_topic), 2);

    // Pruning deletes what expired and keeps the rest.
    assert_eq!(ingress.post("/v1/orders", &order_body("o-new"), Some("k-new")).await.status(), StatusCode::ACCEPTED);
    sqlx::query(&format!("UPDATE {table} SET expires_at = now() - interval '1 second' WHERE key = 'k-old'"))
        .execute(&store)
        .await
        .unwrap();
    let keys = KeyStore::new(&database_url(), &ingress.keys_schema, Duration::from_secs(60), Duration::from_secs(5), 1)
        .unwrap();
    assert_eq!(keys.prune().await.unwrap(), 1);
    let left: Vec<String> = sqlx::query_scalar(&format!("SELECT key FROM {table}")).fetch_all(&store).await.unwrap();
    assert_eq!(left, ["k-new"]);
}

#[tokio::test]
async fn bad_input_gets_its_status_and_a_useful_message_and_nothing_is_published() {
    let ingress = spawn_ingress(|c| {
        c.max_body_bytes = 2048;
        c.max_changes = 2;
    })
    .await;
    let post_raw = |path: &str, content_type: Option<&str>, body: Vec<u8>| {
        let mut request = ingress.http.post(format!("{}{path}", ingress.url)).bearer_auth(TOKEN).body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        request.send()
    };

    let r = post_raw("/v1/orders", Some("application/json"), b"{\"order_id\": ".to_vec()).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("malformed JSON"));

    let mut invalid = order_body("");
    invalid["lines"][0]["quantity"] = json!(0);
    invalid["currency"] = json!("EURO");
    let r = ingress.post("/v1/orders", &invalid, None).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = r.json().await.unwrap();
    let fields: Vec<&str> = body["fields"].as_array().unwrap().iter().map(|f| f["field"].as_str().unwrap()).collect();
    for expected in ["order_id", "currency", "lines[0].quantity"] {
        assert!(fields.contains(&expected), "{expected} in {body}");
    }
    assert!(body["fields"].as_array().unwrap().iter().all(|f| !f["problem"].as_str().unwrap().is_empty()));

    let r = ingress.post("/v1/orders", &json!({"order_id": 5}), None).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json::<Value>().await.unwrap()["fields"][0]["field"], "order_id");

    let r = ingress
        .post("/v1/inventory/changes", &json!({"changes": [{"sku": "a", "delta": 1, "reason": "stolen"}]}), None)
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let text = r.text().await.unwrap();
    assert!(text.contains("changes[0].reason") && text.contains("changes[0].warehouse"), "{text}");

    let r = ingress.post("/v1/inventory/changes", &changes_body(&["a", "b", "c"]), None).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.text().await.unwrap().contains("at most 2"));

    let big = format!("{{\"order_id\": \"{}\"}}", "x".repeat(4096)).into_bytes();
    let r = post_raw("/v1/orders", Some("application/json"), big).await.unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let r = post_raw("/v1/orders", Some("text/plain"), serde_json::to_vec(&order_body("o-2")).unwrap()).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = post_raw("/v1/orders", None, serde_json::to_vec(&order_body("o-2")).unwrap()).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let r = ingress.post("/v1/orders", &order_body("o-3"), Some(&"k".repeat(300))).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("Idempotency-Key"));

    assert_eq!(high_watermark_sum(&ingress.orders_topic), 0);
    assert_eq!(high_watermark_sum(&ingress.inventory_topic), 0);
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_refused_and_nothing_is_published() {
    let ingress = spawn_ingress(|_| {}).await;
    let url = format!("{}/v1/orders", ingress.url);
    let body = order_body("o-auth");
    let none = ingress.http.post(&url).json(&body).send().await.unwrap();
    let wrong = ingress.http.post(&url).bearer_auth("tok-checkout-0123456780").json(&body).send().await.unwrap();
    let basic =
        ingress.http.post(&url).header("authorization", format!("Basic {TOKEN}")).json(&body).send().await.unwrap();
    for r in [none, wrong, basic] {
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        assert!(!r.text().await.unwrap().contains(TOKEN));
    }
    assert_eq!(high_watermark_sum(&ingress.orders_topic), 0);
}

#[tokio::test]
async fn an_unreachable_broker_gets_a_quick_503_with_retry_after() {
    let ingress = spawn_ingress(|c| {
        c.kafka.brokers = "127.0.0.1:1".to_owned();
        c.publish_timeout_ms = 1500;
    })
    .await;
    let started = Instant::now();
    let r = ingress.post("/v1/orders", &order_body("o-down"), Some("k-down")).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(r.headers().contains_key("retry-after"));
    assert!(r.text().await.unwrap().contains("retry"));

    let ready = ingress.http.get(format!("{}/readyz", ingress.url)).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body, json!({"ready": false, "detail": "no broker answered a metadata request within 2 s"}));
    // The process itself is fine: only readiness depends on the broker.
    let health = ingress.http.get(format!("{}/healthz", ingress.url)).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.json::<Value>().await.unwrap(), json!({"status": "ok"}));
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served() {
    let ingress = spawn_ingress(|_| {}).await;
    let get = |path: &'static str| ingress.http.get(format!("{}{path}", ingress.url)).send();
    let health = get("/healthz").await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.json::<Value>().await.unwrap(), json!({"status": "ok"}));
    let ready = wait_until("ingress ready", Duration::from_secs(20), || async {
        let response = get("/readyz").await.unwrap();
        (response.status() == StatusCode::OK).then_some(response)
    })
    .await;
    assert_eq!(
        ready.json::<Value>().await.unwrap(),
        json!({"ready": true, "detail": "a broker answered a metadata request"})
    );
    assert_eq!(ingress.post("/v1/orders", &order_body("o-m"), None).await.status(), StatusCode::ACCEPTED);
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(metrics.contains("ingress_requests_total{route=\"/v1/orders\",status=\"202\"}"), "{metrics}");
    assert!(metrics.contains("ingress_publish_duration_seconds"), "{metrics}");
}

#[test]
fn refuses_to_start_without_tokens_unless_told_to_be_insecure() {
    let mut config = base_config("127.0.0.1:9092", "o", "i");
    config.tokens = None;
    let error = AppState::from_config(&config).err().expect("no tokens must be refused");
    assert!(format!("{error:#}").contains("INGRESS_TOKENS"));
    config.insecure_no_auth = true;
    let _rt = tokio::runtime::Runtime::new().unwrap();
    let state = Arc::new(AppState::from_config(&config).expect("insecure mode starts"));
    assert!(state.tokens.is_none());
}

#[tokio::test]
async fn a_full_producer_queue_sheds_load_at_once_with_503() {
    // One queued record at most, and a broker that never acks: the first request holds the
    // only slot until its timeout, so the second is refused at once instead of queueing.
    const PUBLISH_TIMEOUT_MS: u64 = 3000;
    let ingress = spawn_ingress(|c| {
        c.kafka.brokers = "127.0.0.1:1".to_owned();
        c.publish_timeout_ms = PUBLISH_TIMEOUT_MS;
        c.producer_queue = 1;
    })
    .await;
    let first_body = order_body("o-q1");
    let first = ingress.post("/v1/orders", &first_body, None);
    let second = async {
        // Let the first request reach the producer before the second is sent.
        wait_until("the first record queued", Duration::from_secs(5), || async {
            let metrics = ingress.http.get(format!("{}/metrics", ingress.url)).send().await.ok()?.text().await.ok()?;
            metrics.contains("ingress_producer_in_flight_records 1").then_some(())
        })
        .await;
        let started = Instant::now();
        let response = ingress.post("/v1/orders", &order_body("o-q2"), None).await;
        (response, started.elapsed())
    };
    let (first, (second, second_took)) = tokio::join!(first, second);
    assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(second.headers().contains_key("retry-after"));
    // A second request that waited for the slot would take the whole publish timeout (the
    // first's record expires only then). Two thirds of it tells the two apart with room for a
    // loaded machine; "queue is full" below says which refusal it was.
    let at_once = Duration::from_millis(PUBLISH_TIMEOUT_MS * 2 / 3);
    assert!(second_took < at_once, "refused at once, took {second_took:?}");
    assert!(second.text().await.unwrap().contains("queue is full"));
    assert_eq!(first.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[test]
fn the_ingress_binary_refuses_to_start_without_tokens_and_says_why() {
    let mut ingress = orderflow_testkit::process::BinaryProcess::spawn(
        "ingress",
        &["--listen", "127.0.0.1:0"],
        &[("INGRESS_TOKENS", ""), ("LOG_FORMAT", "pretty")],
    )
    .unwrap();
    let status = ingress.wait(Duration::from_secs(30)).unwrap();
    assert!(!status.success());
    assert!(ingress.output().contains("no ingress tokens configured"), "{}", ingress.output());
}

#[tokio::test]
async fn a_client_over_its_rate_limit_gets_429_with_retry_after_while_another_client_is_unaffected() {
    let ingress = spawn_ingress(|c| {
        c.tokens = Some(Secret(format!("checkout:{TOKEN},backfill:tok-backfill-0123456789")));
        c.rate_limits = orderflow_ingress::ratelimit::Limits::parse("backfill=1/3,*=1000/1000").unwrap();
    })
    .await;
    let post_as = |token: &'static str, i: usize| {
        let request = ingress.http.post(format!("{}/v1/orders", ingress.url)).bearer_auth(token);
        request.json(&order_body(&format!("o-{token}-{i}"))).send()
    };

    // backfill may send 3 at once, then 1 per second; checkout shares nothing with it. All six
    // at once, so none of them waits for another's publish (a refill in between would let a
    // fourth through).
    let responses: Vec<reqwest::Response> =
        futures::future::join_all((0..6).map(|i| post_as("tok-backfill-0123456789", i)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    let statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    let limited = responses.into_iter().find(|r| r.status() == StatusCode::TOO_MANY_REQUESTS);
    let checkout: Vec<u16> = futures::future::join_all((0..6).map(|i| post_as(TOKEN, i)))
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();

    let count = |status: u16| statuses.iter().filter(|s| **s == status).count();
    assert_eq!(count(202), 3, "the burst passes: {statuses:?}");
    assert_eq!(count(429), 3, "then the limit: {statuses:?}");
    assert_eq!(checkout, [202; 6], "another client is unaffected");
    let limited = limited.unwrap();
    assert_eq!(limited.headers()["retry-after"], "1");
    assert_eq!(limited.headers()["ratelimit-policy"], "\"per-client\";q=3;w=3");
    assert_eq!(limited.headers()["ratelimit"], "\"per-client\";r=0;t=1");
    let said: Value = limited.json().await.unwrap();
    assert_eq!(said["error"], "rate_limited", "{said}");
    // Accepted requests say how much budget is left; 429s published nothing.
    let accepted = post_as(TOKEN, 99).await.unwrap();
    assert!(accepted.headers()["ratelimit"].to_str().unwrap().starts_with("\"per-client\";r="));
    let rejected = statuses.iter().filter(|s| **s == 429).count() as i64;
    assert_eq!(high_watermark_sum(&ingress.orders_topic), 6 - rejected + 6 + 1);
}

/// Write a whole request (headers, then the body) before reading anything, as Python's urllib
/// does, and return what the server answered.
async fn send_whole_then_read(addr: &str, head: String, body: Vec<u8>) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&body).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test]
async fn a_client_that_sends_a_4_mb_body_before_reading_gets_the_413_not_a_broken_pipe() {
    let ingress = spawn_ingress(|_| {}).await;
    let addr = ingress.url.trim_start_matches("http://").to_owned();
    let body = vec![b'x'; 4 * 1024 * 1024];

    // With a declared length over the limit, and chunked without one.
    let declared = format!(
        "POST /v1/orders HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let answer = send_whole_then_read(&addr, declared, body.clone()).await.expect("the whole body is accepted");
    assert!(answer.starts_with("HTTP/1.1 413"), "{}", &answer[..answer.len().min(300)]);
    assert!(answer.contains("larger than 262144 bytes"), "{answer}");

    let mut chunked_body = Vec::new();
    for chunk in body.chunks(64 * 1024) {
        chunked_body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked_body.extend_from_slice(chunk);
        chunked_body.extend_from_slice(b"\r\n");
    }
    chunked_body.extend_from_slice(b"0\r\n\r\n");
    let chunked = format!(
        "POST /v1/orders HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let answer = send_whole_then_read(&addr, chunked, chunked_body).await.expect("the whole body is accepted");
    assert!(answer.starts_with("HTTP/1.1 413"), "{}", &answer[..answer.len().min(300)]);
    assert_eq!(high_watermark_sum(&ingress.orders_topic), 0);
}

#[tokio::test]
async fn a_key_whose_instance_died_mid_request_is_taken_over_once_its_lease_ends() {
    // Arrange: a claim left by an instance that died before it published (its lease over),
    // and one still within its lease.
    let ingress = spawn_ingress(|_| {}).await;
    let store = PgPool::connect(&database_url()).await.unwrap();
    // The table exists once the ingress served a keyed request.
    let first = ingress.post("/v1/orders", &order_body("o-warmup"), Some("k-warmup")).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let body = order_body("o-orphan");
    let fingerprint = orderflow_ingress::idempotency::fingerprint("/v1/orders", &body);
    for (key, lease) in [("k-dead", "-1 second"), ("k-alive", "60 seconds")] {
        sqlx::query(&format!(
            "INSERT INTO {}.idempotency_keys (client, route, key, fingerprint, owner, lease_until, expires_at)
             VALUES ('checkout', '/v1/orders', $1, $2, gen_random_uuid(), now() + $3::interval, now() + interval '1 day')",
            ingress.keys_schema
        ))
        .bind(key)
        .bind(&fingerprint)
        .bind(lease)
        .execute(&store)
        .await
        .unwrap();
    }

    // Act
    let dead = ingress.post("/v1/orders", &body, Some("k-dead")).await;
    let alive = ingress.post("/v1/orders", &body, Some("k-alive")).await;

    // Assert: the orphaned key is processed (and then replayed); the live one is in flight.
    assert_eq!(dead.status(), StatusCode::ACCEPTED);
    assert!(!dead.headers().contains_key("idempotent-replayed"));
    assert_eq!(alive.status(), StatusCode::CONFLICT);
    let again = ingress.post("/v1/orders", &body, Some("k-dead")).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(high_watermark_sum(&ingress.orders_topic), 2, "the warm-up and the orphan, once each");
}
