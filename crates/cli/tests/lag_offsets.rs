//! `orderflow lag` and `orderflow offsets` against a real consumer (the runtime in-process
//! with a small handler), the real broker and Postgres.

mod common;

use std::time::Duration;

use common::{consumer_args, orders};
use orderflow_cli::lag::measure;
use orderflow_cli::offsets::{ResetTo, Selection, reset};
use orderflow_cli::position::{self, ConsumerRef};
use orderflow_cli::tail::TailArgs;
use orderflow_runtime::testing::{Recorder, Running, spawn};
use orderflow_runtime::{RuntimeArgs, store};
use orderflow_testkit::events::{producer, publish};
use orderflow_testkit::{database_url, fresh_group, fresh_topic, kafka_args, unique_ident, wait_until};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::PgPool;

fn consumer_ref(name: &str, args: &RuntimeArgs) -> ConsumerRef {
    ConsumerRef::new(name, args.schema.as_deref(), args.group.as_deref()).unwrap()
}

async fn admin_pool() -> PgPool {
    PgPool::connect(&database_url()).await.unwrap()
}

/// Run the consumer until it applied everything on `topic` (`expected` records), then stop it.
async fn consume_all(name: &str, args: &RuntimeArgs, expected: i64) -> Running {
    let running = spawn(Recorder { name: name.to_owned(), accept_poison: false }, args.clone()).await;
    running.wait_for_offsets_sum(expected, Duration::from_secs(60)).await;
    running
}

async fn wait_for_instances(consumer: &ConsumerRef, present: bool) {
    let pool = admin_pool().await;
    wait_until(&format!("consumer {} running = {present}", consumer.name), Duration::from_secs(60), || async {
        let found = position::running_instances(&kafka_args(), &pool, consumer).await.unwrap();
        (found.is_empty() != present).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lag_counts_unapplied_messages_and_their_age_and_max_lag_exits_2() {
    // Arrange: a consumer applied 6 records, stopped, then 3 more arrived.
    let topic = fresh_topic("lag", 2).await;
    let producer = producer();
    publish(&producer, &topic, &orders("a", 6)).await;
    let (name, args) = consumer_args("lag", &topic);
    consume_all(&name, &args, 6).await.shutdown().await;
    publish(&producer, &topic, &orders("b", 3)).await;
    let consumer = consumer_ref(&name, &args);

    // Act
    let rows = measure(&kafka_args(), &admin_pool().await, &consumer, &[]).await.unwrap();

    // Assert
    assert_eq!(rows.len(), 2, "{rows:#?}");
    assert_eq!(rows.iter().map(|r| r.lag_messages).sum::<i64>(), 3);
    for row in &rows {
        assert_eq!(row.source, "postgres");
        assert_eq!(row.lag_messages, row.high_watermark - row.next_offset);
        let seconds = row.lag_seconds.expect("the oldest unapplied record was read");
        assert!((0.0..60.0).contains(&seconds), "{row:?}");
        if row.lag_messages == 0 {
            assert_eq!(seconds, 0.0);
        }
    }

    // The binary: exit code 2 above --max-lag, 0 at it.
    let lag_cli = |max: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
            .args([
                "lag",
                "--consumer",
                &name,
                "--schema",
                &consumer.schema,
                "--group",
                &consumer.group,
                "--max-lag",
                max,
            ])
            .env("KAFKA_BROKERS", &kafka_args().brokers)
            .env("DATABASE_URL", database_url())
            .output()
            .unwrap()
    };
    let over = lag_cli("2");
    assert_eq!(over.status.code(), Some(2), "{}", String::from_utf8_lossy(&over.stderr));
    assert!(String::from_utf8_lossy(&over.stderr).contains(&format!("{name} is 3 messages behind")));
    let fine = lag_cli("3");
    assert_eq!(fine.status.code(), Some(0), "{}", String::from_utf8_lossy(&fine.stderr));
    assert!(String::from_utf8_lossy(&fine.stdout).contains(&topic));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_falls_back_to_the_groups_kafka_offsets_without_an_offsets_table() {
    // Arrange: 4 records on one partition, the group committed offset 1, no Postgres table.
    let topic = fresh_topic("lag-kafka", 1).await;
    publish(&producer(), &topic, &orders("k", 4)).await;
    let group = fresh_group("lag-kafka");
    let client = position::group_client(&kafka_args(), &group).unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Offset(1)).unwrap();
    client.commit(&tpl, CommitMode::Sync).unwrap();
    let consumer = ConsumerRef::new("no-table", Some(&unique_ident("missing")), Some(&group)).unwrap();

    // Act
    let without_topics = measure(&kafka_args(), &admin_pool().await, &consumer, &[]).await.unwrap_err();
    let rows = measure(&kafka_args(), &admin_pool().await, &consumer, std::slice::from_ref(&topic)).await.unwrap();

    // Assert
    assert!(without_topics.to_string().contains("--topic"), "{without_topics:#}");
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].source, rows[0].next_offset, rows[0].lag_messages), ("kafka", 1, 3));
}

/// Partition 0 of `topic`.
fn on(topic: &str) -> Selection<'_> {
    Selection { topic: Some(topic), partition: Some(0), ..Selection::default() }
}

async fn stored(pool: &PgPool, schema: &str, topic: &str, partition: i32) -> i64 {
    let offsets = store::stored_offsets(pool, schema).await.unwrap().expect("the consumer's offsets table");
    offsets[&(topic.to_owned(), partition)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offsets_reset_moves_stored_and_committed_offsets_by_offset_time_earliest_and_latest() {
    // Arrange: a stopped consumer that applied 8 records of one partition.
    let topic = fresh_topic("reset", 1).await;
    let producer = producer();
    publish(&producer, &topic, &orders("first", 4)).await;
    publish(&producer, &topic, &orders("second", 4)).await;
    let (name, args) = consumer_args("reset", &topic);
    consume_all(&name, &args, 8).await.shutdown().await;
    let consumer = consumer_ref(&name, &args);
    wait_for_instances(&consumer, false).await;
    let (kafka, pool) = (kafka_args(), admin_pool().await);
    let reset_to = |to: ResetTo| {
        let (kafka, pool, consumer, topic) = (kafka.clone(), pool.clone(), consumer.clone(), topic.clone());
        async move { reset(&kafka, &pool, &consumer, &to, &on(&topic), false).await.unwrap() }
    };

    // Act / Assert: by offset, also committed to Kafka.
    let moves = reset_to(ResetTo::Offset(2)).await;
    assert_eq!((moves[0].from, moves[0].to), (8, 2));
    assert_eq!(stored(&pool, &consumer.schema, &topic, 0).await, 2);
    let positions = position::positions(&kafka, &pool, &consumer, &[]).await.unwrap();
    assert_eq!((positions[0].stored, positions[0].committed), (Some(2), Some(2)));

    // By time: the first record at or after the timestamp of the first "second" record.
    let records = common::tail_json(&TailArgs::new(&topic)).await;
    let time = |l: &serde_json::Value| chrono::DateTime::parse_from_rfc3339(l["timestamp"].as_str().unwrap()).unwrap();
    let since = records
        .iter()
        .filter(|l| l["value"]["order_id"].as_str().unwrap().starts_with("second"))
        .map(time)
        .min()
        .unwrap();
    let expected = records.iter().filter(|l| time(l) >= since).map(|l| l["offset"].as_i64().unwrap()).min().unwrap();
    reset_to(ResetTo::Time(since.into())).await;
    assert_eq!(stored(&pool, &consumer.schema, &topic, 0).await, expected);

    reset_to(ResetTo::Earliest).await;
    assert_eq!(stored(&pool, &consumer.schema, &topic, 0).await, 0);
    reset_to(ResetTo::Latest).await;
    assert_eq!(stored(&pool, &consumer.schema, &topic, 0).await, 8);

    // Out of range is refused, naming the partition.
    let error = reset(&kafka, &pool, &consumer, &ResetTo::Offset(99), &on(&topic), false).await.unwrap_err();
    assert!(error.to_string().contains(&format!("{topic}[0]")), "{error:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offsets_reset_refuses_while_the_consumer_runs_and_the_consumer_continues_from_the_reset() {
    // Arrange: a running consumer that applied 3 records.
    let topic = fresh_topic("reset-running", 1).await;
    let producer = producer();
    publish(&producer, &topic, &orders("applied", 3)).await;
    let (name, args) = consumer_args("reset-running", &topic);
    let running = consume_all(&name, &args, 3).await;
    let consumer = consumer_ref(&name, &args);
    wait_for_instances(&consumer, true).await;
    let (kafka, pool) = (kafka_args(), admin_pool().await);

    // Act / Assert: refused while it runs.
    let error = reset(&kafka, &pool, &consumer, &ResetTo::Latest, &Selection::default(), false).await.unwrap_err();
    assert!(error.to_string().contains("is running") && error.to_string().contains(&consumer.name), "{error:#}");
    assert_eq!(stored(&pool, &consumer.schema, &topic, 0).await, 3);

    // Stopped: skip two records by resetting to latest; the restarted consumer starts there.
    running.shutdown().await;
    wait_for_instances(&consumer, false).await;
    publish(&producer, &topic, &orders("skipped", 2)).await;
    reset(&kafka, &pool, &consumer, &ResetTo::Latest, &Selection::default(), false).await.unwrap();
    publish(&producer, &topic, &orders("after", 1)).await;
    let running = consume_all(&name, &args, 6).await;
    let applied = Recorder::applied(&running.pool).await;
    running.shutdown().await;
    let ids: Vec<&str> = applied.keys().map(String::as_str).collect();
    assert_eq!(ids, ["after-0", "applied-0", "applied-1", "applied-2"]);
    assert!(applied.values().all(|&n| n == 1), "{applied:?}");
}
