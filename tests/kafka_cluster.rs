//! Apache Kafka clusters of the tests' own (`orderflow_testkit::cluster`): a topic with
//! replication 3 loses no acknowledged record when its leader is killed with `kill -9`, and
//! the ingress and a consumer work against a SASL_SSL listener with the documented settings,
//! while a wrong password stops them at startup with a clear error.

use std::collections::{BTreeMap, HashSet};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use orderflow_kafka::admin::{CLUSTER_DEFAULT_REPLICATION, ensure_topic};
use orderflow_testkit::cluster::KafkaCluster;
use orderflow_testkit::events::order_request;
use orderflow_testkit::process::BinaryProcess;
use orderflow_testkit::{database_url, unique_ident, unique_name, wait_until};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

async fn start_cluster(nodes: usize, secure: bool) -> KafkaCluster {
    tokio::task::spawn_blocking(move || if secure { KafkaCluster::start_secure() } else { KafkaCluster::start(nodes) })
        .await
        .unwrap()
        .expect("a private Apache Kafka cluster starts (scripts/stack broker up)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replicated_topic_keeps_every_acknowledged_record_when_its_leader_is_killed() {
    orderflow_testkit::init_test_logs();
    // Arrange: three nodes, a topic with the cluster's default replication (3).
    let cluster = start_cluster(3, false).await;
    let kafka = cluster.kafka_args();
    let topic = unique_name("survive");
    ensure_topic(&kafka, &topic, 3, CLUSTER_DEFAULT_REPLICATION).await.unwrap();
    for partition in 0..3 {
        assert_eq!(cluster.replicas(&topic, partition).unwrap().len(), 3, "partition {partition} has 3 replicas");
    }
    let producer: FutureProducer = kafka.producer_config().create().unwrap();
    let acked: Arc<Mutex<Vec<u32>>> = Arc::default();

    // Act: send a steady stream (a record a millisecond at most, 32 in flight); kill -9 the
    // leader of partition 0 in the middle of it. The stream goes on until the test says so:
    // after the kill, once another node leads and records were acknowledged after it.
    // Bounded by a count and a deadline, so it cannot run for ever.
    const MAX_RECORDS: u32 = 100_000;
    const AFTER_KILL: usize = 500;
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (producer, topic, acked, stop) = (producer.clone(), topic.clone(), acked.clone(), stop.clone());
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut pace = tokio::time::interval(Duration::from_millis(1));
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::spawn(async move {
            let sends = futures::stream::unfold((0..MAX_RECORDS, pace), move |(mut numbers, mut pace)| {
                let go_on = !stop.load(Ordering::Relaxed) && Instant::now() < deadline;
                async move {
                    let i = numbers.next().filter(|_| go_on)?;
                    pace.tick().await;
                    Some((i, (numbers, pace)))
                }
            })
            .map(|i| {
                let (producer, topic) = (&producer, &topic);
                async move {
                    let key = format!("k{}", i % 17);
                    let payload = i.to_string();
                    let result = producer
                        .send(FutureRecord::to(topic).key(&key).payload(&payload), Duration::from_secs(60))
                        .await;
                    (i, result.is_ok())
                }
            })
            .buffer_unordered(32);
            let mut sends = std::pin::pin!(sends);
            while let Some((i, ok)) = sends.next().await {
                if ok {
                    acked.lock().unwrap().push(i);
                }
            }
        })
    };
    wait_until("1,000 records acknowledged", Duration::from_secs(60), || async {
        (acked.lock().unwrap().len() >= 1000).then_some(())
    })
    .await;
    let leader = cluster.leader(&topic, 0).unwrap().expect("partition 0 has a leader") as usize;
    let killed_at = acked.lock().unwrap().len();
    cluster.kill(leader).unwrap();
    let new_leader = wait_until("another node to lead partition 0", Duration::from_secs(30), || async {
        cluster.leader(&topic, 0).ok().flatten().filter(|&l| l as usize != leader)
    })
    .await;
    wait_until("records acknowledged after the kill", Duration::from_secs(120), || async {
        (acked.lock().unwrap().len() >= killed_at + AFTER_KILL).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    sender.await.unwrap();
    let acked: Vec<u32> = acked.lock().unwrap().clone();
    eprintln!(
        "killed node {leader} after {killed_at} acks; node {new_leader} leads partition 0; {} acknowledged in all",
        acked.len()
    );
    cluster.restart(leader).unwrap();

    // Assert: every acknowledged record is readable, once (the idempotent producer's retries
    // leave no duplicate), from the surviving replicas and the restarted node alike.
    let consumer: StreamConsumer = kafka.consumer_config(&unique_name("survive-read")).create().unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let mut seen: BTreeMap<u32, usize> = BTreeMap::new();
    let wanted: HashSet<u32> = acked.iter().copied().collect();
    let mut unseen = wanted.len();
    let mut stream = consumer.stream();
    tokio::time::timeout(Duration::from_secs(90), async {
        while unseen > 0 {
            let message = stream.next().await.expect("stream ended").expect("consume error");
            let value: u32 = message.payload_view::<str>().unwrap().unwrap().parse().unwrap();
            let times = seen.entry(value).or_default();
            *times += 1;
            if *times == 1 && wanted.contains(&value) {
                unseen -= 1;
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        let missing: Vec<_> = wanted.iter().filter(|i| !seen.contains_key(i)).take(20).collect();
        panic!("acknowledged records missing after the leader's kill: {missing:?}…")
    });
    assert!(acked.len() >= killed_at + AFTER_KILL, "the stream went on after the kill");
    let doubled: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).map(|(i, _)| i).collect();
    assert!(doubled.is_empty(), "records written twice: {doubled:?}");
}

fn free_addr() -> String {
    format!("127.0.0.1:{}", TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port())
}

const TOKEN: &str = "secure-test-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ingress_and_a_consumer_work_over_sasl_scram_and_tls_and_a_wrong_password_stops_them_at_startup() {
    orderflow_testkit::init_test_logs();
    // Arrange: one node with a SASL_SSL listener; the topics made over the plaintext one.
    let cluster = start_cluster(1, true).await;
    let orders = unique_name("secure-orders");
    let inventory = unique_name("secure-inventory");
    for topic in [&orders, &inventory] {
        ensure_topic(&cluster.kafka_args(), topic, 2, CLUSTER_DEFAULT_REPLICATION).await.unwrap();
    }
    let client_env = cluster.client_env().unwrap();
    assert!(client_env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL", "{:?}", client_env.keys());
    let secure: Vec<(&str, &str)> = client_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let tokens = format!("checkout:{TOKEN}");
    let ingress_env = [
        ("INGRESS_TOKENS", tokens.as_str()),
        ("INGRESS_ORDERS_TOPIC", &orders),
        ("INGRESS_INVENTORY_TOPIC", &inventory),
    ];
    let schema = unique_ident("secure");
    let group = unique_name("secure-group");
    let dlq = format!("{orders}.dlq");
    let database = database_url();
    let consumer_env = [("DLQ_TOPIC", dlq.as_str()), ("DATABASE_URL", database.as_str())];

    // Act: the ingress and fulfillment with the documented KAFKA_* settings only.
    let ingress_addr = free_addr();
    let _ingress =
        BinaryProcess::spawn("ingress", &["--listen", &ingress_addr], &[secure.as_slice(), &ingress_env].concat())
            .unwrap();
    let consumer_addr = free_addr();
    let args =
        ["--listen", &consumer_addr, "--topic", &orders, "--topic", &inventory, "--schema", &schema, "--group", &group];
    let _fulfillment =
        BinaryProcess::spawn("fulfillment", &args, &[secure.as_slice(), &consumer_env].concat()).unwrap();
    let http = reqwest::Client::new();
    wait_until("the ingress to answer /healthz", Duration::from_secs(60), || async {
        http.get(format!("http://{ingress_addr}/healthz")).send().await.ok()?.status().is_success().then_some(())
    })
    .await;
    let response = http
        .post(format!("http://{ingress_addr}/v1/orders"))
        .bearer_auth(TOKEN)
        .json(&order_request("o-secure", &[("sku-1", 2)]))
        .send()
        .await
        .unwrap();

    // Assert: acknowledged over SASL_SSL, and applied by a consumer reading over SASL_SSL.
    assert_eq!(response.status().as_u16(), 202, "{}", response.text().await.unwrap_or_default());
    wait_until("fulfillment to store the order it read over SASL_SSL", Duration::from_secs(60), || async {
        let url = format!("http://{consumer_addr}/v1/fulfillments/o-secure");
        let response = http.get(url).bearer_auth(orderflow_testkit::API_TOKEN).send().await.ok()?;
        (response.status().as_u16() == 200).then_some(())
    })
    .await;

    // And with a wrong password the ingress, a consumer and the outbox relay refuse to start,
    // saying why, within seconds.
    let wrong: Vec<(&str, &str)> = secure
        .iter()
        .map(|&(k, v)| if k == "KAFKA_SASL_PASSWORD" { (k, "not-the-password") } else { (k, v) })
        .collect();
    let bad_ingress_addr = free_addr();
    let bad_consumer_addr = free_addr();
    let bad_relay_addr = free_addr();
    let relay_schema = unique_ident("secure_relay");
    let bad_args = ["--listen", &bad_consumer_addr, "--topic", &orders, "--schema", &schema, "--group", &group];
    let mut bad = [
        BinaryProcess::spawn("ingress", &["--listen", &bad_ingress_addr], &[wrong.as_slice(), &ingress_env].concat())
            .unwrap(),
        BinaryProcess::spawn("fulfillment", &bad_args, &[wrong.as_slice(), &consumer_env].concat()).unwrap(),
        BinaryProcess::spawn(
            "outbox-relay",
            &["--listen", &bad_relay_addr],
            &[wrong.as_slice(), &[("DATABASE_URL", database.as_str()), ("OUTBOX_SCHEMA", relay_schema.as_str())]]
                .concat(),
        )
        .unwrap(),
    ];
    for process in &mut bad {
        let status = process
            .wait(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("a binary with a wrong password kept running: {e:#}\n{}", process.output()));
        let output = process.output();
        assert!(!status.success(), "{output}");
        assert!(output.contains("authentication failed for SASL user `orderflow`"), "{output}");
        assert!(!output.contains("not-the-password"), "the password must never be logged:\n{output}");
    }
}

/// A topic deleted and created again on the three-node cluster (what a move to a new
/// cluster with its topics created anew looks like to a consumer whose store was kept): the
/// consumer holds every partition, applies nothing from the old positions, and after the
/// operator's reset applies the new log exactly once (docs/operations.md, "When offsets and
/// the log disagree").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_topic_recreated_on_a_three_node_cluster_is_held_until_the_operator_resets_it() {
    use orderflow_cli::offsets::{ResetTo, Selection, reset};
    use orderflow_cli::position::{ConsumerRef, running_instances};
    use orderflow_runtime::testing::{Recorder, Running, isolated_args, spawn};
    use orderflow_testkit::events::{order, publish};

    orderflow_testkit::init_test_logs();
    // Arrange: a consumer applied 30 orders from a replicated topic and stopped; the topic is
    // recreated and gets 60 orders, more than the stored offsets.
    let cluster = start_cluster(3, false).await;
    let kafka = cluster.kafka_args();
    let topic = unique_name("recreated3");
    ensure_topic(&kafka, &topic, 3, CLUSTER_DEFAULT_REPLICATION).await.unwrap();
    let producer: FutureProducer = kafka.producer_config().create().unwrap();
    let orders = |prefix: &str, n: usize| -> Vec<orderflow_events::Event> {
        (0..n).map(|i| order(&format!("{prefix}-{i}"), &[("sku-a", 1)])).collect()
    };
    publish(&producer, &topic, &orders("old", 30)).await;
    let mut args = isolated_args("recreated3", std::slice::from_ref(&topic));
    args.kafka = kafka.clone();
    let name = args.schema.clone().unwrap().replace('_', "-");
    let consumer = ConsumerRef::new(&name, args.schema.as_deref(), args.group.as_deref()).unwrap();
    let pool = sqlx::PgPool::connect(&database_url()).await.unwrap();
    let stop = |running: Running| {
        let (kafka, pool, consumer) = (kafka.clone(), pool.clone(), consumer.clone());
        async move {
            running.shutdown().await;
            wait_until("the consumer stopped", Duration::from_secs(60), || async {
                running_instances(&kafka, &pool, &consumer).await.unwrap().is_empty().then_some(())
            })
            .await;
        }
    };
    let running = spawn(Recorder::new(&name), args.clone()).await;
    running.wait_for_offsets_sum(30, Duration::from_secs(60)).await;
    stop(running).await;
    orderflow_testkit::recreate_topic(&kafka, &topic, 3).await;
    publish(&producer, &topic, &orders("new", 60)).await;

    // Act
    let running = spawn(Recorder::new(&name), args.clone()).await;

    // Assert: every partition held, nothing of the new log applied.
    let detail = running
        .wait_for("the three partitions held", "/readyz", |status, body| {
            let detail = body["detail"].as_str().unwrap_or_default();
            (status == 503 && detail.contains("3 partition(s) held")).then(|| detail.to_owned())
        })
        .await;
    assert!(detail.contains("but the topic's id is now"), "{detail}");
    assert_eq!(Recorder::applied(&running.pool).await.len(), 30, "{detail}");

    // Resolve, and the store holds both logs' orders once each.
    stop(running).await;
    let selection = Selection { conflicts_only: true, reason: "moved to a new cluster", ..Default::default() };
    assert_eq!(reset(&kafka, &pool, &consumer, &ResetTo::Earliest, &selection, false).await.unwrap().len(), 3);
    let running = spawn(Recorder::new(&name), args.clone()).await;
    running.wait_for_offsets_sum(60, Duration::from_secs(60)).await;
    let applied = Recorder::applied(&running.pool).await;
    assert_eq!(applied.len(), 90);
    assert!(applied.values().all(|&n| n == 1), "each order applied once");
    running.shutdown().await;
}
