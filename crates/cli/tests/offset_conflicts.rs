//! Stored offsets that do not belong to the log (docs/operations.md, "When offsets and the log
//! disagree"), on the real broker and Postgres, with the runtime in-process: a topic deleted
//! and created again (under a stopped and under a running consumer), a stored offset beyond
//! the log's end, and records deleted before they were applied. Each time the consumer holds
//! the partition (nothing applied from the wrong position, `/readyz` says why), `orderflow lag`
//! and `offsets show` say so, the audited `offsets reset` resolves it, and the store ends
//! exactly as the events say.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{consumer_args, orders};
use orderflow_cli::lag::measure;
use orderflow_cli::offsets::{Move, ResetTo, Selection, reset};
use orderflow_cli::position::{self, ConsumerRef};
use orderflow_runtime::testing::{Recorder, Running, spawn};
use orderflow_runtime::{RuntimeArgs, store};
use orderflow_testkit::events::{producer, publish};
use orderflow_testkit::{database_url, fresh_topic, kafka_args, wait_until};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use sqlx::PgPool;

fn consumer_ref(name: &str, args: &RuntimeArgs) -> ConsumerRef {
    ConsumerRef::new(name, args.schema.as_deref(), args.group.as_deref()).unwrap()
}

async fn admin_pool() -> PgPool {
    PgPool::connect(&database_url()).await.unwrap()
}

async fn topic_id(topic: &str) -> Option<String> {
    orderflow_testkit::topic_id(&kafka_args(), topic).await
}

async fn recreate(topic: &str, partitions: usize) {
    orderflow_testkit::recreate_topic(&kafka_args(), topic, partitions).await
}

/// Wait until `/readyz` says 503 with an offset conflict on `held` partitions; its detail.
async fn wait_held(running: &Running, held: usize) -> String {
    let needle = format!("{held} partition(s) held");
    running
        .wait_for("the consumer to hold its conflicting partitions", "/readyz", |status, body: &Value| {
            let detail = body["detail"].as_str().unwrap_or_default();
            (status == 503 && detail.contains(&needle)).then(|| detail.to_owned())
        })
        .await
}

async fn stop(running: Running, consumer: &ConsumerRef) {
    running.shutdown().await;
    let pool = admin_pool().await;
    wait_until(&format!("consumer {} stopped", consumer.name), Duration::from_secs(60), || async {
        position::running_instances(&kafka_args(), &pool, consumer).await.unwrap().is_empty().then_some(())
    })
    .await;
}

/// The lag binary's exit code and stdout for the consumer.
fn lag_cli(consumer: &ConsumerRef) -> (Option<i32>, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args(["lag", "--consumer", &consumer.name, "--schema", &consumer.schema, "--group", &consumer.group])
        .env("KAFKA_BROKERS", &kafka_args().brokers)
        .env("DATABASE_URL", database_url())
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A consumer of a fresh topic of its own, run in-process with the runtime's test handler.
struct Scenario {
    topic: String,
    name: String,
    args: RuntimeArgs,
    consumer: ConsumerRef,
    producer: rdkafka::producer::FutureProducer,
}

impl Scenario {
    /// `old` orders on a fresh topic of `partitions`, applied by a consumer that then stopped.
    async fn applied_then_stopped(prefix: &str, partitions: usize, old: usize) -> Scenario {
        let scenario = Scenario::new(prefix, partitions, old).await;
        let running = scenario.start().await;
        running.wait_for_offsets_sum(old as i64, Duration::from_secs(60)).await;
        stop(running, &scenario.consumer).await;
        scenario
    }

    /// `old` orders on a fresh topic of `partitions`, and a consumer that has not started.
    async fn new(prefix: &str, partitions: usize, old: usize) -> Scenario {
        let topic = fresh_topic(prefix, partitions).await;
        let producer = producer();
        publish(&producer, &topic, &orders("old", old)).await;
        let (name, args) = consumer_args(prefix, &topic);
        let consumer = consumer_ref(&name, &args);
        Scenario { topic, name, args, consumer, producer }
    }

    async fn start(&self) -> Running {
        spawn(Recorder::new(&self.name), self.args.clone()).await
    }

    async fn publish(&self, prefix: &str, n: usize) {
        publish(&self.producer, &self.topic, &orders(prefix, n)).await;
    }

    /// Stop the consumer, move its held partitions to the log's start with `reason`, start it
    /// again and wait until its offsets add up to `offsets`. Returns the moves and the
    /// restarted consumer.
    async fn resolve(&self, running: Running, reason: &str, offsets: i64) -> (Vec<Move>, Running) {
        stop(running, &self.consumer).await;
        let selection = Selection { conflicts_only: true, reason, ..Selection::default() };
        let moves = reset(&kafka_args(), &admin_pool().await, &self.consumer, &ResetTo::Earliest, &selection, false)
            .await
            .unwrap();
        let running = self.start().await;
        running.wait_for_offsets_sum(offsets, Duration::from_secs(60)).await;
        (moves, running)
    }
}

fn ids(applied: &BTreeMap<String, i64>) -> Vec<(String, i64)> {
    applied.iter().map(|(k, v)| (k.clone(), *v)).collect()
}

fn each_once(prefixes: &[(&str, usize)]) -> Vec<(String, i64)> {
    let mut all: Vec<(String, i64)> =
        prefixes.iter().flat_map(|(p, n)| (0..*n).map(move |i| (format!("{p}-{i}"), 1))).collect();
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_topic_recreated_under_a_stopped_consumer_is_held_until_an_audited_reset_then_applied_exactly() {
    // Arrange: a consumer applied 20 orders and stopped; the topic is deleted and created
    // again, and the new log gets 40 orders: more than the stored offsets, so only the topic
    // id tells the positions belong to the old log.
    let scenario = Scenario::applied_then_stopped("recreated", 2, 20).await;
    let (topic, consumer) = (&scenario.topic, &scenario.consumer);
    recreate(topic, 2).await;
    scenario.publish("new", 40).await;

    // Act: start it on the new log.
    let running = scenario.start().await;

    // Assert: held, saying why, and nothing of the new log applied from the old positions.
    let detail = wait_held(&running, 2).await;
    assert!(detail.contains(&format!("{topic}[0]")) && detail.contains("but the topic's id is now"), "{detail}");
    assert_eq!(ids(&Recorder::applied(&running.pool).await), each_once(&[("old", 20)]));
    let (kafka, pool) = (kafka_args(), admin_pool().await);
    let rows = measure(&kafka, &pool, consumer, &[]).await.unwrap();
    assert!(rows.iter().all(|r| r.conflict_reason == Some("topic_recreated")), "{rows:#?}");
    let (code, stdout, stderr) = lag_cli(consumer);
    assert_eq!(code, Some(4), "a conflict is never LAG 0: {stdout}{stderr}");
    assert!(stdout.contains("RECREATED") && stderr.contains("conflict"), "{stdout}{stderr}");
    let running_refused = reset(&kafka, &pool, consumer, &ResetTo::Earliest, &Selection::default(), false).await;
    assert!(running_refused.unwrap_err().to_string().contains("is running"));

    // Resolve: stopped, moved to the new log's start, recorded with who and why; the
    // restarted consumer applies the whole new log, once.
    let (moves, running) = scenario.resolve(running, "orders topic recreated", 40).await;
    assert_eq!(moves.len(), 2);
    assert!(moves.iter().all(|m| m.to == 0 && m.conflict.is_some()), "{moves:?}");
    let audit = store::offset_moves(&pool, &consumer.schema).await.unwrap();
    assert_eq!(audit.len(), 2);
    assert!(
        audit.iter().all(|(m, by, reason, _)| m.from_topic_id.is_some()
            && by.contains('@')
            && reason == "orders topic recreated")
    );

    // The topic's new id is recorded with the offsets.
    running.wait_for("ready", "/readyz", |status, _| (status == 200).then_some(())).await;
    assert_eq!(ids(&Recorder::applied(&running.pool).await), each_once(&[("old", 20), ("new", 40)]));
    let recorded = store::stored_topic_ids(&pool, &consumer.schema).await.unwrap();
    let new_id = topic_id(topic).await.unwrap();
    assert!(recorded.len() == 2 && recorded.values().all(|id| *id == new_id), "{recorded:?}");
    assert_eq!(lag_cli(consumer).0, Some(0));
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_topic_recreated_under_a_running_consumer_holds_it_instead_of_reading_the_new_log_at_old_positions() {
    // Arrange: a running consumer that applied 30 orders on one partition.
    let scenario = Scenario::new("recreated-live", 1, 30).await;
    let topic = &scenario.topic;
    let running = scenario.start().await;
    running.wait_for_offsets_sum(30, Duration::from_secs(60)).await;

    // Act: the topic is deleted and created again under it, and gets 50 orders.
    recreate(topic, 1).await;
    scenario.publish("new", 50).await;

    // Assert: held; none of the new log applied from offset 30 on.
    let detail = wait_held(&running, 1).await;
    assert!(detail.contains(&format!("{topic}[0]")), "{detail}");
    assert_eq!(ids(&Recorder::applied(&running.pool).await), each_once(&[("old", 30)]), "{detail}");

    // Resolve, and the store is exactly both logs once.
    let (moves, running) = scenario.resolve(running, "recreated under a running consumer", 50).await;
    assert_eq!(moves.len(), 1);
    assert_eq!(ids(&Recorder::applied(&running.pool).await), each_once(&[("old", 30), ("new", 50)]));
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stored_offset_beyond_the_log_end_is_held_and_shown_ahead_never_as_lag_0() {
    // Arrange: 10 orders applied, then the store restored from a "newer" backup: offset 500.
    let scenario = Scenario::applied_then_stopped("ahead", 1, 10).await;
    let (topic, consumer) = (&scenario.topic, &scenario.consumer);
    let pool = admin_pool().await;
    store::seed_offsets(&pool, &consumer.schema, &BTreeMap::from([((topic.clone(), 0), 500)])).await.unwrap();
    scenario.publish("b", 5).await;

    // Act
    let running = scenario.start().await;

    // Assert: held, ahead by 485, named in /readyz, `offsets show` and `lag`.
    let detail = wait_held(&running, 1).await;
    assert!(detail.contains(&format!("{topic}[0]: stored offset 500 is ahead of the log end 15")), "{detail}");
    let positions = position::positions(&kafka_args(), &pool, consumer, &[]).await.unwrap();
    assert_eq!((positions[0].conflict_reason, positions[0].lag_cell().as_str()), (Some("ahead_of_log"), "AHEAD 485"));
    let (code, stdout, _) = lag_cli(consumer);
    assert_eq!(code, Some(4));
    assert!(stdout.contains("AHEAD 485"), "{stdout}");
    assert_eq!(ids(&Recorder::applied(&running.pool).await), each_once(&[("old", 10)]));

    // Resolve from the log's start: what was applied is skipped by the ledger, the rest applied.
    let (_, running) = scenario.resolve(running, "restored a newer backup", 15).await;
    assert_eq!(ids(&Recorder::applied(&running.pool).await), each_once(&[("old", 10), ("b", 5)]));
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_deleted_before_they_were_applied_hold_the_partition_until_an_operator_accepts_the_loss() {
    // Arrange: 10 orders applied; 10 more arrive while the consumer is stopped, and the log's
    // start moves to offset 15 before they are applied (what retention does to a consumer
    // stopped for longer than `retention.ms`; DeleteRecords moves the log start the same way
    // without waiting for the broker's retention check).
    let scenario = Scenario::applied_then_stopped("retention", 1, 10).await;
    let (topic, consumer) = (&scenario.topic, &scenario.consumer);
    scenario.publish("b", 10).await;
    let admin: AdminClient<DefaultClientContext> = kafka_args().client_config().create().unwrap();
    let mut up_to = TopicPartitionList::new();
    up_to.add_partition_offset(topic, 0, Offset::Offset(15)).unwrap();
    admin.delete_records(&up_to, &AdminOptions::new()).await.unwrap();

    // Act
    let running = scenario.start().await;

    // Assert
    let detail = wait_held(&running, 1).await;
    assert!(detail.contains("stored offset 10 is below the log start 15"), "{detail}");
    let (code, stdout, _) = lag_cli(consumer);
    assert_eq!(code, Some(4));
    assert!(stdout.contains("LOST 5"), "{stdout}");
    assert_eq!(ids(&Recorder::applied(&running.pool).await), each_once(&[("old", 10)]));

    // Resolve: the operator accepts the loss; the rest is applied.
    let (moves, running) = scenario.resolve(running, "b-0..b-4 lost to retention", 20).await;
    assert_eq!((moves[0].from, moves[0].to), (10, 15));
    let mut expected = each_once(&[("old", 10)]);
    expected.extend((5..10).map(|i| (format!("b-{i}"), 1)));
    expected.sort();
    assert_eq!(ids(&Recorder::applied(&running.pool).await), expected);
    running.shutdown().await;
}
