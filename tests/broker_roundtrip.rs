//! The test kit against the real broker: records produced with the project's producer
//! settings (acks=all, idempotence) come back, all of them, once, in order per key.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use orderflow_testkit::{fresh_group, fresh_topic, kafka_args, wait_until};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

#[tokio::test]
async fn acknowledged_records_come_back_once_in_order_per_key() {
    orderflow_testkit::init_test_logs();
    // Arrange
    let topic = fresh_topic("roundtrip", 3).await;
    let args = kafka_args();
    let producer: FutureProducer = args.producer_config().create().unwrap();
    const RECORDS: usize = 600;
    const KEYS: usize = 7;

    // Act: many sends in flight, every one acknowledged.
    let sends = futures::future::join_all((0..RECORDS).map(|i| {
        let producer = &producer;
        let topic = &topic;
        async move {
            let key = format!("k{}", i % KEYS);
            let payload = format!("{i}");
            producer
                .send(FutureRecord::to(topic).key(&key).payload(&payload), Duration::from_secs(30))
                .await
                .map_err(|(error, _)| error)
        }
    }))
    .await;
    for result in &sends {
        result.as_ref().expect("broker acknowledged every send");
    }

    let consumer: StreamConsumer = args.consumer_config(&fresh_group("roundtrip")).create().unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let mut per_key: HashMap<String, Vec<usize>> = HashMap::new();
    let mut stream = consumer.stream();
    let mut received = 0;
    tokio::time::timeout(Duration::from_secs(60), async {
        while received < RECORDS {
            let message = stream.next().await.expect("stream ended").expect("consume error");
            let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
            let value: usize = message.payload_view::<str>().unwrap().unwrap().parse().unwrap();
            per_key.entry(key).or_default().push(value);
            received += 1;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {received} of {RECORDS} records came back within 60s"));

    // Assert: every record exactly once, and each key's records in the order they were sent.
    let mut all: Vec<usize> = per_key.values().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..RECORDS).collect::<Vec<_>>());
    for (key, values) in &per_key {
        let mut sorted = values.clone();
        sorted.sort_unstable();
        assert_eq!(values, &sorted, "records of {key} out of order");
    }
}

#[tokio::test]
async fn fresh_schemas_isolate_tests_from_each_other() {
    let first = orderflow_testkit::fresh_schema("isolation").await;
    let second = orderflow_testkit::fresh_schema("isolation").await;
    assert_ne!(first.name, second.name);
    sqlx::query("CREATE TABLE items (id int PRIMARY KEY)").execute(&first.pool).await.unwrap();
    sqlx::query("INSERT INTO items VALUES (1)").execute(&first.pool).await.unwrap();
    // The same unqualified table name is free in the second schema.
    sqlx::query("CREATE TABLE items (id int PRIMARY KEY)").execute(&second.pool).await.unwrap();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM items").fetch_one(&second.pool).await.unwrap();
    assert_eq!(count, 0);
}

#[tokio::test]
async fn wait_until_returns_the_value_once_the_condition_holds() {
    let started = std::time::Instant::now();
    let value = wait_until("the clock to pass 50ms", Duration::from_secs(5), || async {
        (started.elapsed() > Duration::from_millis(50)).then_some(42)
    })
    .await;
    assert_eq!(value, 42);
}

#[tokio::test]
#[should_panic(expected = "timed out after")]
async fn wait_until_fails_with_the_condition_named_after_the_deadline() {
    wait_until::<(), _, _>("something that never happens", Duration::from_millis(100), || async { None }).await;
}
