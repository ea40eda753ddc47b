//! The outbox relay against the real broker and Postgres.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use clap::Parser;
use orderflow_events::Event;
use orderflow_outbox_relay::{Outbox, RelayConfig};
use orderflow_testkit::events::{high_watermark_sum, read_distinct, stock_change};
use orderflow_testkit::process::BinaryProcess;
use orderflow_testkit::{database_url, fresh_topic, kafka_args, unique_ident, wait_until};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const PARTITIONS: usize = 3;

struct Fixture {
    outbox: Outbox,
    pool: PgPool,
    orders_topic: String,
    inventory_topic: String,
    allocations_topic: String,
}

async fn fixture() -> Fixture {
    orderflow_testkit::init_test_logs();
    let outbox = Outbox::new(&unique_ident("outbox")).unwrap();
    outbox.migrate(&database_url()).await.unwrap();
    Fixture {
        outbox,
        pool: PgPool::connect(&database_url()).await.unwrap(),
        orders_topic: fresh_topic("relay-orders", PARTITIONS).await,
        inventory_topic: fresh_topic("relay-inventory", PARTITIONS).await,
        allocations_topic: fresh_topic("relay-allocations", PARTITIONS).await,
    }
}

impl Fixture {
    fn spawn_relay(&self, batch_size: usize) -> BinaryProcess {
        let batch = batch_size.to_string();
        let brokers = kafka_args().brokers;
        let db = database_url();
        BinaryProcess::spawn(
            "outbox-relay",
            &[
                "--schema",
                self.outbox.schema(),
                "--batch-size",
                &batch,
                "--orders-topic",
                &self.orders_topic,
                "--inventory-topic",
                &self.inventory_topic,
                "--allocations-topic",
                &self.allocations_topic,
                "--listen",
                "127.0.0.1:0",
                "--poll-interval-ms",
                "200",
            ],
            &[("KAFKA_BROKERS", brokers.as_str()), ("DATABASE_URL", db.as_str()), ("RUST_LOG", "info")],
        )
        .unwrap()
    }

    /// A relay in this process on port 0 (the binary's `--listen 127.0.0.1:0` port is not
    /// known to the test), publishing through `brokers`.
    async fn start_in_process(&self, brokers: &str) -> InProcessRelay {
        let db = database_url();
        let config = RelayConfig::parse_from([
            "outbox-relay",
            "--kafka-brokers",
            brokers,
            "--database-url",
            &db,
            "--schema",
            self.outbox.schema(),
            "--orders-topic",
            &self.orders_topic,
            "--inventory-topic",
            &self.inventory_topic,
            "--poll-interval-ms",
            "200",
        ]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(orderflow_outbox_relay::run_with_listener(config, listener, async {
            let _ = stopped.await;
        }));
        InProcessRelay { url, stop, task, http: reqwest::Client::new() }
    }

    async fn count(&self, condition: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {} WHERE {condition}", self.outbox.table()))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// `per_sku` stock changes for each of `skus` skus, delta = 1, 2, 3... per sku, enqueued
    /// in that order, in transactions of 500: one event per statement (`enqueue`) and the
    /// whole transaction in one statement (`enqueue_all`), in turns.
    async fn enqueue_sequences(&self, skus: usize, per_sku: i64) -> usize {
        let events: Vec<Event> = (1..=per_sku)
            .flat_map(|n| (0..skus).map(move |s| stock_change(&format!("sku-{s}"), n, "received", None)))
            .collect();
        for (i, chunk) in events.chunks(500).enumerate() {
            let mut conn = self.pool.acquire().await.unwrap();
            let mut tx = conn.begin().await.unwrap();
            if i % 2 == 0 {
                for event in chunk {
                    self.outbox.enqueue(&mut tx, event).await.unwrap();
                }
            } else {
                let all: Vec<_> = chunk.iter().map(|event| (event.clone(), None)).collect();
                self.outbox.enqueue_all(&mut tx, &all).await.unwrap();
            }
            tx.commit().await.unwrap();
        }
        events.len()
    }
}

struct InProcessRelay {
    url: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
    http: reqwest::Client,
}

impl InProcessRelay {
    /// GET `path`: the status and the body (JSON, or the text as a JSON string).
    async fn get(&self, path: &str) -> (u16, Value) {
        assert!(!self.task.is_finished(), "the relay stopped early");
        let response = self.http.get(format!("{}{path}", self.url)).send().await.expect("GET reaches the relay");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("the relay task ended").expect("the relay stopped cleanly");
    }
}

async fn read_topic(topic: &str, expected: usize) -> Vec<Event> {
    read_distinct(topic, expected, Duration::from_secs(60)).await.into_iter().map(|r| r.event).collect()
}

#[tokio::test]
async fn a_relay_killed_mid_batch_and_restarted_publishes_every_row_in_order_per_key() {
    let f = fixture().await;
    let total = f.enqueue_sequences(10, 600).await;

    let mut relay = f.spawn_relay(50);
    wait_until("some batches published", Duration::from_secs(60), || async {
        (f.count("published_at IS NOT NULL").await >= 500).then_some(())
    })
    .await;
    // Gate the relay so the kill lands mid-batch at any machine speed: SHARE mode blocks the
    // relay's `UPDATE ... SET published_at` (ROW EXCLUSIVE) but not its `SELECT ... FOR UPDATE
    // SKIP LOCKED` (ROW SHARE), so its next batch is claimed and acknowledged by Kafka, then
    // waits to be marked published. Kill it there.
    let mut gate = f.pool.begin().await.unwrap();
    sqlx::query(&format!("LOCK TABLE {} IN SHARE MODE", f.outbox.table())).execute(&mut *gate).await.unwrap();
    let marking = format!("UPDATE {} SET published_at", f.outbox.table());
    wait_until("the relay's next batch to wait to be marked published", Duration::from_secs(60), || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND starts_with(query, $1)",
        )
        .bind(&marking)
        .fetch_one(&f.pool)
        .await
        .ok()?;
        (waiting > 0).then_some(())
    })
    .await;
    relay.kill_hard().unwrap();
    let published_before_kill = f.count("published_at IS NOT NULL").await;
    assert!((published_before_kill as usize) < total, "the kill must land before the relay finished");
    // The killed relay's session, unblocked, finds its client gone: its batch stays pending.
    gate.rollback().await.unwrap();

    let mut relay = f.spawn_relay(50);
    wait_until("every row marked published", Duration::from_secs(120), || async {
        (f.count("published_at IS NULL").await == 0).then_some(())
    })
    .await;
    relay.terminate(Duration::from_secs(10)).unwrap();

    // At least once: every event is on the topic; consumers dedupe by id, so compare the
    // first occurrence of each id, per key, with the enqueue order.
    let records = read_topic(&f.inventory_topic, total).await;
    let mut seen = HashSet::new();
    let mut per_key: HashMap<String, Vec<i64>> = HashMap::new();
    for event in &records {
        if seen.insert(event.event_id()) {
            let Event::InventoryChanged(change) = event else { panic!("unexpected {event:?}") };
            per_key.entry(event.key().to_owned()).or_default().push(change.delta.get());
        }
    }
    assert_eq!(seen.len(), total);
    println!("{} records for {total} events ({} published before the kill)", records.len(), published_before_kill);
    // The batch acknowledged by Kafka but not marked before the kill went out again.
    let on_topic = high_watermark_sum(&f.inventory_topic);
    assert!(on_topic > total as i64, "the killed batch is published again: {on_topic} records for {total} events");
    for (key, deltas) in per_key {
        assert_eq!(deltas, (1..=600).collect::<Vec<_>>(), "order of {key}");
    }
}

#[tokio::test]
async fn only_committed_enqueues_are_published() {
    let f = fixture().await;
    let kept = stock_change("sku-kept", 1, "received", None);
    let dropped = stock_change("sku-dropped", 1, "received", None);
    let mut conn = PgConnection::connect(&database_url()).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    f.outbox.enqueue(&mut tx, &dropped).await.unwrap();
    tx.rollback().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    f.outbox.enqueue(&mut tx, &kept).await.unwrap();
    tx.commit().await.unwrap();

    let mut relay = f.spawn_relay(10);
    wait_until("the committed row published", Duration::from_secs(30), || async {
        (f.count("published_at IS NOT NULL").await == 1).then_some(())
    })
    .await;
    let records = read_topic(&f.inventory_topic, 1).await;
    assert_eq!(records[0].event_id(), kept.event_id());
    assert_eq!(f.count("true").await, 1);

    // Woken by NOTIFY (poll interval is 200 ms either way; this checks a later insert flows).
    let later = stock_change("sku-later", 2, "received", None);
    let mut tx = conn.begin().await.unwrap();
    f.outbox.enqueue(&mut tx, &later).await.unwrap();
    tx.commit().await.unwrap();
    wait_until("the later row published", Duration::from_secs(30), || async {
        (f.count("published_at IS NOT NULL").await == 2).then_some(())
    })
    .await;
    relay.terminate(Duration::from_secs(10)).unwrap();
}

/// A schema name may have 63 characters; the NOTIFY channel built from it must still fit
/// (an enqueue used to fail with "channel name too long" past 46).
#[tokio::test]
async fn an_outbox_in_a_schema_with_the_longest_name_enqueues_and_is_published() {
    let mut f = fixture().await;
    let mut long = format!("{}_{}", f.outbox.schema(), "x".repeat(63));
    long.truncate(63);
    f.outbox = Outbox::new(&long).unwrap();
    f.outbox.migrate(&database_url()).await.unwrap();
    assert_eq!(f.outbox.channel().len(), 63);
    let mut relay = f.spawn_relay(10);
    let change = stock_change("sku-long", 1, "received", None);
    let mut conn = PgConnection::connect(&database_url()).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    f.outbox.enqueue(&mut tx, &change).await.unwrap();
    tx.commit().await.unwrap();
    wait_until("the row published", Duration::from_secs(30), || async {
        (f.count("published_at IS NOT NULL").await == 1).then_some(())
    })
    .await;
    assert_eq!(read_topic(&f.inventory_topic, 1).await[0].event_id(), change.event_id());
    relay.terminate(Duration::from_secs(10)).unwrap();
}

#[tokio::test]
async fn a_standby_relay_takes_over_when_the_active_one_dies() {
    let f = fixture().await;
    let mut first = f.spawn_relay(50);
    let mut second = f.spawn_relay(50);
    let total = f.enqueue_sequences(2, 50).await;
    wait_until("first batch published", Duration::from_secs(30), || async {
        (f.count("published_at IS NULL").await == 0).then_some(())
    })
    .await;
    let (active, standby) =
        if first.output().contains("active relay") { (&mut first, &mut second) } else { (&mut second, &mut first) };
    // The other one stands by (on a busy machine it may start after the batch went out).
    wait_until("the other relay to stand by", Duration::from_secs(30), || async {
        standby.output().contains("standing by").then_some(())
    })
    .await;
    assert!(!standby.output().contains("active relay"), "exactly one relay is active");
    active.kill_hard().unwrap();

    let more = f.enqueue_sequences(2, 50).await;
    wait_until("the standby published the rest", Duration::from_secs(60), || async {
        (f.count("published_at IS NULL").await == 0).then_some(())
    })
    .await;
    assert!(standby.output().contains("active relay"));
    assert_eq!(f.count("published_at IS NOT NULL").await as usize, total + more);
    standby.terminate(Duration::from_secs(10)).unwrap();
}

#[tokio::test]
async fn an_unreadable_row_is_marked_with_its_error_and_never_blocks_the_rows_after_it() {
    let f = fixture().await;
    let good = stock_change("sku-good", 3, "received", None);
    sqlx::query(&format!(
        "INSERT INTO {} (event_id, topic, key, payload) VALUES (gen_random_uuid(), 'inventory.v1', 'x', '{{\"not\": \"an event\"}}')",
        f.outbox.table()
    ))
    .execute(&f.pool)
    .await
    .unwrap();
    let mut conn = f.pool.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    f.outbox.enqueue(&mut tx, &good).await.unwrap();
    tx.commit().await.unwrap();

    let mut relay = f.spawn_relay(10);
    wait_until("the good row published", Duration::from_secs(30), || async {
        (f.count("published_at IS NOT NULL").await == 1).then_some(())
    })
    .await;
    assert_eq!(read_topic(&f.inventory_topic, 1).await[0].event_id(), good.event_id());
    let error: String = sqlx::query_scalar(&format!("SELECT error FROM {} WHERE error IS NOT NULL", f.outbox.table()))
        .fetch_one(&f.pool)
        .await
        .unwrap();
    assert!(error.contains("payload is not an event"), "{error}");
    relay.terminate(Duration::from_secs(10)).unwrap();
}

#[tokio::test]
async fn healthz_and_readyz_answer_the_shared_json_once_postgres_and_the_broker_answer() {
    let f = fixture().await;
    let relay = f.start_in_process(&kafka_args().brokers).await;

    assert_eq!(relay.get("/healthz").await, (200, json!({"status": "ok"})));
    // The only relay on this outbox takes its lock and becomes the active one.
    let body = wait_until("/readyz to report the active relay", Duration::from_secs(30), || async {
        let (status, body) = relay.get("/readyz").await;
        (status == 200 && body["detail"].as_str()?.contains("active relay")).then_some(body)
    })
    .await;
    assert_eq!(body, json!({"ready": true, "detail": "Postgres and a broker answered; active relay"}));
    let (status, metrics) = relay.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.as_str().unwrap().contains("outbox_relay_active"), "{metrics}");
    relay.stop().await;
}

#[tokio::test]
async fn readyz_answers_503_naming_the_broker_while_no_broker_answers() {
    let f = fixture().await;
    let relay = f.start_in_process("127.0.0.1:1").await;

    assert_eq!(relay.get("/healthz").await, (200, json!({"status": "ok"})));
    // Only the broker's sentence is certain: a slow Postgres check may add its own before it.
    let (status, body) = relay.get("/readyz").await;
    assert_eq!((status, &body["ready"]), (503, &json!(false)), "{body}");
    let detail = body["detail"].as_str().unwrap_or_else(|| panic!("no detail: {body}"));
    assert!(detail.contains("no broker answered a metadata request within 2 s"), "{body}");
    relay.stop().await;
}

#[tokio::test]
async fn allocation_decisions_go_to_the_allocations_topic_keyed_by_order_with_their_trace() {
    use orderflow_events::{TraceParent, samples};
    let f = fixture().await;
    let decisions = [
        Event::OrderAllocated(samples::order_allocated()),
        Event::OrderBackordered(samples::order_backordered()),
        Event::BackorderAllocated(samples::backorder_allocated()),
    ];
    let trace = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    let mut conn = PgConnection::connect(&database_url()).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    for decision in &decisions {
        f.outbox.enqueue_traced(&mut tx, decision, Some(&trace)).await.unwrap();
    }
    tx.commit().await.unwrap();

    let mut relay = f.spawn_relay(10);
    let records = read_distinct(&f.allocations_topic, decisions.len(), Duration::from_secs(60)).await;
    // One order: one partition, in the order the decisions were enqueued.
    assert_eq!(records.iter().map(|r| &r.event).collect::<Vec<_>>(), decisions.iter().collect::<Vec<_>>());
    assert!(records.iter().all(|r| r.partition == records[0].partition));
    for record in &records {
        let header = |key: &str| record.headers.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        assert_eq!(header("ce_type").unwrap(), record.event.ce_type().as_bytes());
        assert_eq!(header("traceparent").unwrap(), trace.as_str().as_bytes());
    }
    relay.terminate(Duration::from_secs(10)).unwrap();
}
