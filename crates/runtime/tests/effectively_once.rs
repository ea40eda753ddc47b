//! Tests that try to break the runtime's promise: a consumer that crashes at any instant,
//! restarts, rebalances, loses its database or sees the same event twice ends with exactly
//! the store it would have had if nothing went wrong. Real broker, real Postgres.

use std::collections::BTreeMap;
use std::time::Duration;

use orderflow_events::Event;
use orderflow_runtime::RuntimeArgs;
use orderflow_runtime::dlq::headers as dlq_headers;
use orderflow_runtime::testing::{self, Recorder, Running, isolated_args, stored_offsets_sum};
use orderflow_testkit::events::{order, producer, publish, publish_raw};
use orderflow_testkit::process::BinaryProcess;
use orderflow_testkit::{database_url, fresh_group, fresh_topic, kafka_args, unique_ident, wait_until};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use sqlx::PgPool;

struct Setup {
    topic: String,
    args: RuntimeArgs,
    name: String,
}

async fn setup(prefix: &str, partitions: usize) -> Setup {
    let topic = fresh_topic(prefix, partitions).await;
    let args = isolated_args(prefix, std::slice::from_ref(&topic));
    let name = args.schema.clone().unwrap().replace('_', "-");
    Setup { topic, args, name }
}

/// Run the recorder in-process.
async fn start(setup: &Setup) -> Running {
    testing::spawn(Recorder::new(setup.name.clone()), setup.args.clone()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicates_published_twice_are_applied_once() {
    // Arrange: the same 40 events published twice (same event ids, new offsets).
    let setup = setup("dupes", 3).await;
    let events: Vec<Event> = (0..40).map(|i| order(&format!("o-{i}"), &[("sku-a", 1)])).collect();
    let producer = producer();
    publish(&producer, &setup.topic, &events).await;
    publish(&producer, &setup.topic, &events).await;

    // Act
    let running = start(&setup).await;
    running.wait_for_offsets_sum(80, Duration::from_secs(60)).await;

    // Assert: every order applied exactly once.
    let applied = Recorder::applied(&running.pool).await;
    assert_eq!(applied.len(), 40);
    assert!(applied.values().all(|&n| n == 1), "{applied:?}");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_records_go_to_the_dead_letter_topic_and_the_partition_keeps_flowing() {
    // Arrange: one partition: good, garbage, good, poisoned (handler rejects), good, truncated.
    let setup = setup("poison", 1).await;
    let producer = producer();
    publish(&producer, &setup.topic, &[order("good-1", &[("sku-a", 1)])]).await;
    let (_, garbage_offset) = publish_raw(&producer, &setup.topic, "junk", b"this is not avro").await;
    publish(&producer, &setup.topic, &[order("good-2", &[("sku-a", 2)])]).await;
    let poisoned = publish(&producer, &setup.topic, &[order("bad-1", &[("POISON-1", 1)])]).await[0].1;
    publish(&producer, &setup.topic, &[order("good-3", &[("sku-b", 3)])]).await;
    let truncated = publish_raw(&producer, &setup.topic, "short", &[0xC3, 0x01, 0x00]).await.1;
    publish(&producer, &setup.topic, &[order("good-4", &[("sku-b", 1)])]).await;

    // Act
    let running = start(&setup).await;
    running.wait_for_offsets_sum(7, Duration::from_secs(60)).await;

    // Assert: the good ones applied once; the bad ones dead-lettered with their reasons.
    let applied = Recorder::applied(&running.pool).await;
    assert_eq!(applied.keys().cloned().collect::<Vec<_>>(), ["good-1", "good-2", "good-3", "good-4"]);
    assert!(applied.values().all(|&n| n == 1));

    let dlq_topic = setup.args.dlq_topic.clone().unwrap();
    let dead = read_all(&dlq_topic, 3).await;
    let offsets: Vec<(String, String)> =
        dead.iter().map(|h| (h[dlq_headers::ORIGINAL_OFFSET].clone(), h[dlq_headers::ERROR_CLASS].clone())).collect();
    assert_eq!(
        offsets,
        [
            (garbage_offset.to_string(), "undecodable".to_owned()),
            (poisoned.to_string(), "permanent".to_owned()),
            (truncated.to_string(), "undecodable".to_owned()),
        ]
    );
    for headers in &dead {
        assert_eq!(headers[dlq_headers::ORIGINAL_TOPIC], setup.topic);
        assert_eq!(headers[dlq_headers::ORIGINAL_PARTITION], "0");
        assert_eq!(headers[dlq_headers::CONSUMER], setup.name);
        assert!(!headers[dlq_headers::ERROR_MESSAGE].is_empty());
        assert!(!headers[dlq_headers::ORIGINAL_TIMESTAMP].is_empty());
        assert!(!headers[dlq_headers::TIME].is_empty());
    }
    assert!(dead[1][dlq_headers::ERROR_MESSAGE].contains("poisoned sku"), "{:?}", dead[1]);
    running.shutdown().await;
}

/// Read `count` records of `topic` from the beginning and return their headers.
async fn read_all(topic: &str, count: usize) -> Vec<BTreeMap<String, String>> {
    let consumer: StreamConsumer = kafka_args().consumer_config(&fresh_group("dlq-reader")).create().unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while out.len() < count {
            let message = consumer.recv().await.unwrap();
            let mut headers = BTreeMap::new();
            if let Some(h) = message.headers() {
                for header in h.iter() {
                    headers.insert(
                        header.key.to_owned(),
                        String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned(),
                    );
                }
            }
            out.push(headers);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {count} records on {topic}", out.len()));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_connections_killed_mid_stream_lose_nothing_and_double_nothing() {
    // Arrange
    let setup = setup("pgkill", 3).await;
    let producer = producer();
    let running = start(&setup).await;
    let schema = running.schema.clone();
    let admin = PgPool::connect(&database_url()).await.unwrap();

    // Act: publish in waves while killing the consumer's connections over and over.
    const WAVES: usize = 8;
    const PER_WAVE: usize = 150;
    for wave in 0..WAVES {
        let events: Vec<Event> =
            (0..PER_WAVE).map(|i| order(&format!("w{wave}-o{i}"), &[("sku-a", 1), ("sku-b", 2)])).collect();
        publish(&producer, &setup.topic, &events).await;
        // Connections whose search_path is the consumer's schema are the consumer's.
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE pid <> pg_backend_pid() AND datname = current_database()
               AND query NOT ILIKE '%pg_terminate_backend%'
               AND pid IN (SELECT pid FROM pg_stat_activity WHERE application_name = $1)",
        )
        .bind(&schema)
        .fetch_all(&admin)
        .await
        .unwrap();
        tracing::info!(wave, killed = killed.len(), "terminated consumer connections");
    }

    // Assert
    let total = (WAVES * PER_WAVE) as i64;
    running.wait_for_offsets_sum(total, Duration::from_secs(120)).await;
    let applied = Recorder::applied(&running.pool).await;
    assert_eq!(applied.len(), WAVES * PER_WAVE);
    assert!(applied.values().all(|&n| n == 1), "an order was applied twice");
    running.shutdown().await;
}

/// Expected units per sku of `events`.
fn units_per_sku(events: &[Event]) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for event in events {
        if let Event::OrderPlaced(order) = event {
            for line in &order.lines {
                *out.entry(line.sku.as_str().to_owned()).or_default() += i64::from(line.quantity.get());
            }
        }
    }
    out
}

fn orders(prefix: &str, n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let sku = format!("sku-{}", i % 7);
            order(&format!("{prefix}-{i}"), &[(sku.as_str(), (i % 5 + 1) as u32), ("sku-common", 1)])
        })
        .collect()
}

struct ExampleConsumer {
    args: Vec<String>,
    schema: String,
}

impl ExampleConsumer {
    fn new(topic: &str, prefix: &str) -> Self {
        let schema = unique_ident(prefix);
        let args = vec![
            "--topic".into(),
            topic.into(),
            "--schema".into(),
            schema.clone(),
            "--group".into(),
            fresh_group(prefix),
            "--dlq-topic".into(),
            format!("{topic}.dlq"),
            "--batch-size".into(),
            "40".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            // No Kafka setting of its own: the kill tests run with the shipped defaults, so
            // what they prove about recovery time is what users get.
        ];
        ExampleConsumer { args, schema }
    }

    fn spawn(&self) -> BinaryProcess {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        BinaryProcess::spawn(
            "units-per-sku",
            &args,
            &[("KAFKA_BROKERS", &kafka_args().brokers), ("DATABASE_URL", &database_url())],
        )
        .unwrap()
    }

    async fn pool(&self) -> PgPool {
        let options: sqlx::postgres::PgConnectOptions = database_url().parse().unwrap();
        PgPool::connect_with(options.options([("search_path", self.schema.as_str())])).await.unwrap()
    }
}

async fn store_units(pool: &PgPool) -> BTreeMap<String, i64> {
    sqlx::query_as::<_, (String, i64)>("SELECT sku, units FROM units_per_sku")
        .fetch_all(pool)
        .await
        .map(|rows| rows.into_iter().collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consumer_killed_with_sigkill_at_random_moments_ends_with_the_exact_store() {
    // Arrange: a backlog held back in six waves, a consumer process. The test sets the pace:
    // each round publishes one more wave and kills the consumer once it has applied a random
    // part of it, so every kill leaves work behind by construction (the later waves are not
    // published yet), however fast the machine applies.
    const WAVES: usize = 6;
    const KILLS: usize = WAVES - 1;
    let topic = fresh_topic("kill9", 4).await;
    let events = orders("k", 6000);
    let expected = units_per_sku(&events);
    let waves: Vec<&[Event]> = events.chunks(events.len() / WAVES).collect();
    assert_eq!(waves.len(), WAVES);
    let producer = producer();
    let consumer = ExampleConsumer::new(&topic, "kill9");

    // Act: kill -9 five times, each after a random amount of the current wave, then let it finish.
    let test_started = std::time::Instant::now();
    let mut rng_state = std::process::id() as u64 ^ 0x9E37_79B9_7F4A_7C15;
    let (mut published, mut progress) = (0i64, 0i64);
    for (round, wave) in waves.iter().take(KILLS).enumerate() {
        publish(&producer, &topic, wave).await;
        published += wave.len() as i64;
        let mut process = consumer.spawn();
        let pool = consumer.pool().await;
        // The killed instance's partitions stay with its dead member until the group's
        // session timeout (10 s by default) passes (docs/operations.md, "Crash recovery").
        // The wave just published guarantees there is something to apply again; 30 s bounds
        // how long a restart that never resumes takes to show (librdkafka's own 45 s session
        // would fail it), with room for a loaded machine.
        if round > 0 {
            let restarted = std::time::Instant::now();
            wait_until(
                &format!("round {round}: applying again after the restart"),
                Duration::from_secs(30),
                || async { (stored_offsets_sum(&pool, &consumer.schema).await > progress).then_some(()) },
            )
            .await;
            eprintln!("round {round}: applying again {:?} after the restart", restarted.elapsed());
        }
        rng_state = rng_state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let step = 50 + (rng_state >> 33) as i64 % 250;
        let target = (progress + step).min(published);
        progress = wait_until(&format!("round {round}: offsets past {target}"), Duration::from_secs(60), || async {
            let sum = stored_offsets_sum(&pool, &consumer.schema).await;
            (sum >= target).then_some(sum)
        })
        .await;
        process.kill_hard().unwrap();
        let left = events.len() as i64 - progress;
        assert!(left > 0, "round {round}: killed with nothing left to apply");
        eprintln!(
            "round {round}: killed at {progress} applied ({} of this wave's {} still pending, {left} in all), {:?} into the test",
            published - progress,
            wave.len(),
            test_started.elapsed()
        );
    }
    publish(&producer, &topic, waves[KILLS]).await;
    let _last = consumer.spawn();
    let pool = consumer.pool().await;
    wait_until("the whole backlog applied", Duration::from_secs(120), || async {
        (stored_offsets_sum(&pool, &consumer.schema).await == events.len() as i64).then_some(())
    })
    .await;

    // Assert: exactly the store an uninterrupted run would have built.
    assert_eq!(store_units(&pool).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_partitions_and_the_survivor_takes_over_when_one_stops_mid_stream() {
    two_instances_hand_over("pair", &[]).await;
}

/// The same hand-over with the consumer group protocol of KIP-848 (`group.protocol=consumer`,
/// Kafka 4's new rebalance protocol, assignment decided by the broker), which users of Kafka 4
/// turn on with one `--kafka-option`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_the_new_group_protocol_hand_partitions_over_when_one_stops() {
    two_instances_hand_over("kip848", &["--kafka-option", "group.protocol=consumer"]).await;
}

async fn two_instances_hand_over(prefix: &str, extra_args: &[&str]) {
    // Arrange: two instances of one consumer in one group.
    let topic = fresh_topic(prefix, 6).await;
    let mut consumer = ExampleConsumer::new(&topic, prefix);
    consumer.args.extend(extra_args.iter().map(|a| a.to_string()));
    let mut first = consumer.spawn();
    let second = consumer.spawn();
    let first_wave = orders("a", 1500);
    let producer = producer();
    publish(&producer, &topic, &first_wave).await;
    let pool = consumer.pool().await;

    // Act: stop one instance mid-stream (SIGTERM: it finishes its batch and leaves the group),
    // publish more. A SIGKILLed member is covered by the single-instance test above.
    wait_until("some progress by the pair", Duration::from_secs(60), || async {
        (stored_offsets_sum(&pool, &consumer.schema).await >= 300).then_some(())
    })
    .await;
    let status = first.terminate(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "SIGTERM is a clean shutdown: {status:?}\n{}", first.output());
    let second_wave = orders("b", 1500);
    publish(&producer, &topic, &second_wave).await;

    // Assert
    let all: Vec<Event> = first_wave.into_iter().chain(second_wave).collect();
    let total = all.len() as i64;
    wait_until("the survivor applied everything", Duration::from_secs(120), || async {
        (stored_offsets_sum(&pool, &consumer.schema).await == total).then_some(())
    })
    .await;
    assert_eq!(store_units(&pool).await, units_per_sku(&all));
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_shutdown_commits_and_a_restart_continues_where_it_stopped() {
    let setup = setup("graceful", 2).await;
    let producer = producer();
    publish(&producer, &setup.topic, &orders("g1", 200)).await;
    let running = start(&setup).await;
    running.wait_for_offsets_sum(200, Duration::from_secs(60)).await;
    running.shutdown().await;

    publish(&producer, &setup.topic, &orders("g2", 200)).await;
    let running = start(&setup).await;
    running.wait_for_offsets_sum(400, Duration::from_secs(60)).await;
    let applied = Recorder::applied(&running.pool).await;
    assert_eq!(applied.len(), 400);
    assert!(applied.values().all(|&n| n == 1));
    running.shutdown().await;
}
