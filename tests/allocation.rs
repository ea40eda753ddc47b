//! The flash sale (docs/allocation.md), with the real binaries on the real broker and
//! Postgres: 100 units of one sku over three warehouses, 2,000 one-unit orders posted
//! concurrently through the ingress in three waves, the allocator killed with SIGKILL between
//! them (so each kill leaves orders undecided at any machine speed), then 40
//! units restocked. Exactly 140 units are allocated, never more than on hand at any moment
//! sampled, the rest is backordered, the restock goes to the 40 earliest-placed backorders,
//! every decision is on `allocations.v1` exactly once (published by `outbox-relay` from the
//! allocator's outbox), and the allocator's store says what those events say.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use orderflow_events::Event;
use orderflow_testkit::events::{high_watermark_sum, order_request, read_distinct};
use orderflow_testkit::pipeline::{ConsumerSpec, Pipeline, TOKEN};
use orderflow_testkit::process::BinaryProcess;
use orderflow_testkit::{API_TOKEN, database_url, kafka_args, unique_name, wait_until};
use serde_json::{Value, json};
use sqlx::{PgPool, Row};

const ORDERS: usize = 2_000;
const STOCK: [(&str, i64); 3] = [("w1", 40), ("w2", 35), ("w3", 25)];
const RESTOCK: i64 = 40;
/// Where each wave of the rush ends (the last runs to `ORDERS`), and how many orders are
/// decided before the allocator is killed, once per wave: each kill happens inside its wave.
const WAVE_ENDS: [usize; 2] = [700, 1_400];
const KILL_AFTER_DECIDED: [i64; 2] = [300, 1_000];

/// POST `body` to the ingress until it answers 202 (retrying with the same key, as a checkout
/// does, on anything but a 4xx).
async fn post(http: &reqwest::Client, url: &str, key: &str, body: &Value) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let sent = http.post(url).bearer_auth(TOKEN).header("Idempotency-Key", key).json(body).send().await;
        match sent {
            Ok(r) if r.status().as_u16() == 202 => return,
            Ok(r) if r.status().is_client_error() && r.status().as_u16() != 409 && r.status().as_u16() != 429 => {
                panic!("{url} refused {key}: {} {}", r.status(), r.text().await.unwrap_or_default())
            }
            _ => {}
        }
        assert!(std::time::Instant::now() < deadline, "{url} did not accept {key} within 120 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn scalar(pool: &PgPool, sql: &str, sku: &str) -> i64 {
    sqlx::query_scalar(sql).bind(sku).fetch_one(pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flash_sale_allocates_exactly_the_stock_once_through_two_crashes_and_serves_the_restock_first_come() {
    orderflow_testkit::init_test_logs();
    // The allocator, and the inventory projection that follows its decisions.
    let specs: Vec<ConsumerSpec> = ["allocator", "inventory-projection"]
        .map(|name| {
            let spec = orderflow_registry::get(name).unwrap();
            ConsumerSpec { name: spec.name.into(), binary: spec.binary.into(), topics: spec.topic_list() }
        })
        .into();
    let mut pipeline = Pipeline::start(&kafka_args().brokers, &database_url(), &specs, 6).await.unwrap();
    let schema = pipeline.consumer("allocator").schema.clone();
    let api = format!("http://{}", pipeline.consumer("allocator").addr);
    // The relay of the allocator's outbox (made when the allocator started), as shipped.
    let allocations = pipeline.allocations_topic.clone();
    let relay_addr = format!("127.0.0.1:{}", orderflow_testkit::ports::free_port().unwrap());
    let outbox_schema = format!("{schema}_outbox");
    let mut relay = BinaryProcess::spawn(
        "outbox-relay",
        &["--schema", &outbox_schema, "--allocations-topic", &allocations, "--listen", &relay_addr],
        &[("KAFKA_BROKERS", &kafka_args().brokers), ("DATABASE_URL", &database_url())],
    )
    .unwrap();
    let http = reqwest::Client::new();
    wait_until("the relay to be ready", Duration::from_secs(60), || async {
        let r = http.get(format!("http://{relay_addr}/readyz")).send().await.ok()?;
        (r.status().as_u16() == 200).then_some(())
    })
    .await;
    let pool = pipeline.pool().await;
    let sku = unique_name("tee");
    let stock_json = |http: reqwest::Client| {
        let url = format!("{api}/v1/stock/{sku}");
        async move { http.get(url).bearer_auth(API_TOKEN).send().await.ok()?.json::<Value>().await.ok() }
    };

    // Arrange: 100 units over three warehouses, applied before the sale opens.
    let changes: Vec<Value> =
        STOCK.iter().map(|(w, n)| json!({"sku": sku, "warehouse": w, "delta": n, "reason": "received"})).collect();
    let inventory_url = format!("{}/v1/inventory/changes", pipeline.ingress_url);
    post(&http, &inventory_url, &unique_name("stock"), &json!({"changes": changes})).await;
    wait_until("the allocator to hold 100 units", Duration::from_secs(60), || async {
        (stock_json(http.clone()).await?["on_hand"] == 100).then_some(())
    })
    .await;

    // Watch the store while it runs: no warehouse ever allocates more than it has.
    let stop = Arc::new(AtomicBool::new(false));
    let most_allocated = Arc::new(AtomicI64::new(0));
    let watcher = {
        let (pool, sku, stop, most) = (pool.clone(), sku.clone(), stop.clone(), most_allocated.clone());
        let sql = format!("SELECT warehouse, on_hand, allocated FROM {schema}.stock WHERE sku = $1");
        tokio::spawn(async move {
            let mut samples = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let rows = sqlx::query(&sql).bind(&sku).fetch_all(&pool).await.unwrap();
                let mut total = 0;
                for row in rows {
                    let (w, on_hand, allocated): (String, i64, i64) =
                        (row.get("warehouse"), row.get("on_hand"), row.get("allocated"));
                    assert!(allocated <= on_hand, "{w} allocated {allocated} of {on_hand} on hand");
                    total += allocated;
                }
                most.fetch_max(total, Ordering::Relaxed);
                samples += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            samples
        })
    };

    // Act: the rush, 64 requests in flight, in three waves; the allocator is killed twice, each
    // time once enough of the orders posted so far are decided and before the next wave is
    // posted, so each kill leaves orders to decide by construction, however fast the machine.
    let order_ids: Vec<String> = (0..ORDERS).map(|i| format!("{sku}-o{i:05}")).collect();
    let orders_url = format!("{}/v1/orders", pipeline.ingress_url);
    let post_wave = |ids: &[String]| {
        let (http, url, sku, ids) = (http.clone(), orders_url.clone(), sku.clone(), ids.to_vec());
        tokio::spawn(async move {
            futures::stream::iter(ids)
                .for_each_concurrent(64, |id| {
                    let (http, url, sku) = (http.clone(), url.clone(), sku.clone());
                    async move { post(&http, &url, &id, &order_request(&id, &[(&sku, 1)])).await }
                })
                .await;
        })
    };
    let decided_sql = format!("SELECT count(*) FROM {schema}.decided_orders WHERE order_id LIKE $1 || '-o%'");
    let mut rush = Vec::new();
    let mut posted = 0;
    for (wave_end, threshold) in WAVE_ENDS.into_iter().zip(KILL_AFTER_DECIDED) {
        rush.push(post_wave(&order_ids[posted..wave_end]));
        posted = wave_end;
        wait_until(&format!("{threshold} orders decided"), Duration::from_secs(180), || async {
            (scalar(&pool, &decided_sql, &sku).await >= threshold).then_some(())
        })
        .await;
        let allocator = pipeline.consumer_mut("allocator");
        allocator.process.kill_hard().unwrap();
        let decided = scalar(&pool, &decided_sql, &sku).await;
        assert!(decided < ORDERS as i64, "the allocator was killed with {decided} of {ORDERS} orders decided");
        eprintln!("killed the allocator with {decided} of {posted} posted orders decided ({ORDERS} in the sale)");
        allocator.restart().unwrap();
    }
    rush.push(post_wave(&order_ids[posted..]));
    for wave in rush {
        wave.await.unwrap();
    }
    wait_until("every order decided", Duration::from_secs(240), || async {
        (scalar(&pool, &decided_sql, &sku).await == ORDERS as i64).then_some(())
    })
    .await;
    // The restock, in one warehouse.
    let restock = json!({"changes": [{"sku": sku, "warehouse": "w2", "delta": RESTOCK, "reason": "received"}]});
    post(&http, &inventory_url, &unique_name("restock"), &restock).await;
    let stock = wait_until("the restock to be allocated", Duration::from_secs(120), || async {
        let body = stock_json(http.clone()).await?;
        (body["allocated"] == 140).then_some(body)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let samples = watcher.await.unwrap();

    // Assert: the store.
    assert_eq!((stock["on_hand"].as_i64(), stock["available"].as_i64()), (Some(140), Some(0)), "{stock}");
    assert_eq!(stock["backordered"].as_i64(), Some((ORDERS as i64) - 140), "{stock}");
    assert!(samples > 10, "the store was sampled during the sale ({samples} samples)");
    assert!(most_allocated.load(Ordering::Relaxed) <= 140);

    // Assert: the events, each decision exactly once.
    let expected_events = ORDERS + RESTOCK as usize;
    let records = read_distinct(&allocations, expected_events, Duration::from_secs(120)).await;
    let published = tokio::task::spawn_blocking({
        let topic = allocations.clone();
        move || high_watermark_sum(&topic)
    })
    .await
    .unwrap();
    assert_eq!(published, expected_events as i64, "every decision once on {allocations}, no copy");
    let mut first: HashMap<String, &Event> = HashMap::new();
    let (mut allocated_at_sale, mut restocked) = (BTreeMap::<String, i64>::new(), Vec::new());
    for record in &records {
        match &record.event {
            e @ (Event::OrderAllocated(_) | Event::OrderBackordered(_)) => {
                let order = e.order_id().unwrap().as_str().to_owned();
                assert!(first.insert(order.clone(), e).is_none(), "{order} was decided twice");
                if let Event::OrderAllocated(a) = e {
                    for line in &a.lines {
                        *allocated_at_sale.entry(line.warehouse.as_str().to_owned()).or_default() +=
                            i64::from(line.quantity);
                    }
                }
            }
            Event::BackorderAllocated(a) => {
                assert_eq!(a.lines.len(), 1);
                assert_eq!((a.lines[0].warehouse.as_str(), i64::from(a.lines[0].quantity)), ("w2", 1));
                restocked.push(a.order_id.as_str().to_owned());
            }
            other => panic!("not a decision on {allocations}: {other:?}"),
        }
    }
    assert_eq!(first.len(), ORDERS, "every order decided once");
    assert_eq!(allocated_at_sale, STOCK.iter().map(|(w, n)| ((*w).to_owned(), *n)).collect());
    let backordered: BTreeSet<&String> =
        first.iter().filter(|(_, e)| matches!(e, Event::OrderBackordered(_))).map(|(id, _)| id).collect();
    assert_eq!(backordered.len(), ORDERS - 100);

    // First placed, first served: the restock went to the 40 earliest-placed backorders.
    let placed: Vec<(String, chrono::DateTime<chrono::Utc>)> = sqlx::query(&format!(
        "SELECT order_id, placed_at FROM {schema}.decided_orders WHERE order_id LIKE $1 || '-o%' ORDER BY placed_at, order_id"
    ))
    .bind(&sku)
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .map(|r| (r.get("order_id"), r.get("placed_at")))
    .collect();
    let earliest: BTreeSet<&String> =
        placed.iter().map(|(id, _)| id).filter(|id| backordered.contains(id)).take(RESTOCK as usize).collect();
    assert_eq!(restocked.iter().collect::<BTreeSet<_>>(), earliest, "the restock served the earliest backorders");

    // The store says what the events say.
    let held: BTreeMap<String, i64> = sqlx::query(&format!(
        "SELECT order_id, SUM(quantity)::bigint AS units FROM {schema}.allocations GROUP BY order_id"
    ))
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .map(|r| (r.get("order_id"), r.get("units")))
    .collect();
    let mut implied: BTreeMap<String, i64> =
        first.iter().filter(|(_, e)| matches!(e, Event::OrderAllocated(_))).map(|(id, _)| (id.clone(), 1)).collect();
    implied.extend(restocked.iter().map(|id| (id.clone(), 1)));
    assert_eq!(held, implied);
    // The read API says the same per order.
    let get = |path: String, token: Option<&'static str>| {
        let request = http.get(format!("{api}{path}"));
        let request = match token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, served) = get(format!("/v1/allocations/{}", restocked[0]), Some(API_TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(served["allocated"], json!([{"sku": sku, "warehouse": "w2", "quantity": 1}]), "{served}");
    assert_eq!(served["backordered"], json!([]), "{served}");
    let waiting = backordered.iter().find(|id| !restocked.contains(id)).unwrap();
    let (status, waits) = get(format!("/v1/allocations/{waiting}"), Some(API_TOKEN)).await;
    assert_eq!((status, &waits["allocated"]), (200, &json!([])), "{waits}");
    assert_eq!(waits["backordered"], json!([{"sku": sku, "quantity_missing": 1}]), "{waits}");
    assert_eq!(get(format!("/v1/allocations/{sku}-never"), Some(API_TOKEN)).await.0, 404);
    assert_eq!(get("/v1/allocations/bad%20id".into(), Some(API_TOKEN)).await.0, 400);
    assert_eq!(get(format!("/v1/allocations/{waiting}"), None).await.0, 401, "customer data needs a token");

    // Downstream follows the facts: the inventory projection's allocated and backordered units
    // are what allocations.v1 says.
    let projection = format!("http://{}/v1/inventory/{sku}", pipeline.consumer("inventory-projection").addr);
    let followed = wait_until("the projection to follow the decisions", Duration::from_secs(120), || async {
        let body: Value = http.get(&projection).bearer_auth(API_TOKEN).send().await.ok()?.json().await.ok()?;
        (body["allocated"] == 140).then_some(body)
    })
    .await;
    assert_eq!(followed["backordered"].as_i64(), Some((ORDERS as i64) - 140), "{followed}");
    assert_eq!((followed["on_hand"].as_i64(), followed["unallocated"].as_i64()), (Some(140), Some(0)), "{followed}");

    let dlq = pipeline.consumer("allocator").dlq_topic.clone();
    if orderflow_kafka::admin::topic_partitions(&kafka_args(), &dlq).await.unwrap().is_some() {
        let dead = tokio::task::spawn_blocking(move || high_watermark_sum(&dlq)).await.unwrap();
        assert_eq!(dead, 0, "nothing was dead-lettered");
    }
    relay.terminate(Duration::from_secs(10)).unwrap();
}
