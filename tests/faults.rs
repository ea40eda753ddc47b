//! Faults under load, Jepsen-style: the ingress and every consumer run as processes with
//! their shipped defaults, clients post orders and stock changes through the ingress with
//! idempotency keys and record what they were told (`orderflow_testkit::workload`), a fault
//! is injected mid-load, and once it is over and the consumers drained, the checker
//! (`orderflow_testkit::checker`) compares every read store and the SMTP server's mailbox with
//! that history: nothing acknowledged lost, nothing applied twice, nothing never sent.
//!
//! Each test prints its report (run with `--nocapture` to see it); docs/reliability.md has
//! the figures of a run. Faults that kill a broker or a database use a private one
//! (`KafkaCluster`, `PrivatePostgres`): the shared stack is never touched.

use std::time::{Duration, Instant};

use orderflow_testkit::checker::{Report, check_until};
use orderflow_testkit::cluster::KafkaCluster;
use orderflow_testkit::pipeline::{ConsumerSpec, Pipeline};
use orderflow_testkit::postgres::PrivatePostgres;
use orderflow_testkit::workload::{self, History, WorkloadConfig};
use orderflow_testkit::{database_url, wait_until};

/// Every registered consumer, as the pipeline starts them.
fn consumers() -> Vec<ConsumerSpec> {
    orderflow_registry::CONSUMERS
        .iter()
        .map(|spec| ConsumerSpec { name: spec.name.into(), binary: spec.binary.into(), topics: spec.topic_list() })
        .collect()
}

async fn start_cluster(nodes: usize) -> KafkaCluster {
    tokio::task::spawn_blocking(move || KafkaCluster::start(nodes))
        .await
        .unwrap()
        .expect("a private Apache Kafka cluster starts (scripts/stack broker up)")
}

/// The ingress's readiness right now (200 or 503), or 0 when it does not answer.
async fn ingress_ready(pipeline: &Pipeline) -> u16 {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    match http.get(format!("{}/readyz", pipeline.ingress_url)).send().await {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

/// Drain, check, print the report, and assert the promise: nothing lost, doubled or
/// phantom; never a 500; every 503 with `Retry-After`.
async fn check_and_report(pipeline: &Pipeline, history: &History, faults: &[String]) -> Report {
    pipeline.wait_drained(Duration::from_secs(180)).await;
    let report = check_until(pipeline, history, faults, Duration::from_secs(90)).await;
    eprintln!("{report}");
    assert!(report.clean(), "the stores differ from the history:\n{report}");
    let statuses = history.statuses();
    assert!(!statuses.contains_key(&500), "the ingress answered 500 during the fault:\n{report}");
    assert_eq!(history.unavailable_without_retry_after, 0, "a 503 without Retry-After:\n{report}");
    assert!(report.acknowledged > 0, "{report}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_broker_down_for_ten_seconds_loses_nothing_and_doubles_nothing() {
    orderflow_testkit::init_test_logs();
    // Arrange: a private single-node cluster; the pipeline on it, stores in the shared database.
    let cluster = start_cluster(1).await;
    let pipeline = Pipeline::start(&cluster.bootstrap(), &database_url(), &consumers(), 3).await.unwrap();
    let load = workload::start(WorkloadConfig::new(&pipeline.ingress_url, 300));

    // Act: kill -9 the broker a quarter into the load, keep it down 10 s, restart it on its data.
    let total = load.total;
    wait_until("a quarter of the requests acknowledged", Duration::from_secs(60), || async {
        (load.progress.acknowledged() >= total / 4).then_some(())
    })
    .await;
    tokio::task::block_in_place(|| cluster.kill(1)).unwrap();
    let killed = Instant::now();
    let acked_before = load.progress.acknowledged();
    wait_until("the broker down for 10 s, and the ingress not ready", Duration::from_secs(60), || async {
        (killed.elapsed() >= Duration::from_secs(10) && ingress_ready(&pipeline).await == 503).then_some(())
    })
    .await;
    let acked_while_down = load.progress.acknowledged() - acked_before;
    let down_for = killed.elapsed();
    tokio::task::block_in_place(|| cluster.restart(1)).unwrap();
    let broker_back = load.began.elapsed();
    let restart_took = killed.elapsed() - down_for;
    let acked_at_restart = load.progress.acknowledged();
    wait_until("the ingress ready again", Duration::from_secs(60), || async {
        (ingress_ready(&pipeline).await == 200).then_some(())
    })
    .await;
    let ready_after = killed.elapsed();
    let history = load.finish().await;
    let first_ack = history.first_ack_after(broker_back).unwrap_or_default();

    // Assert: the ingress said 503 while the broker was down, then acknowledged again, and
    // every store matches what the clients were told.
    let faults = vec![format!(
        "kill -9 the only broker after {acked_before} acknowledgements; restarted on its data after {down_for:.1?} \
         ({acked_while_down} acknowledged while it was down), up again {restart_took:.1?} later; first acknowledgement \
         {first_ack:.1?} after that; the ingress ready again {ready_after:.1?} after the kill"
    )];
    let report = check_and_report(&pipeline, &history, &faults).await;
    assert!(history.statuses().contains_key(&503), "the ingress never said 503 while the broker was down:\n{report}");
    assert!(history.acknowledged() > acked_at_restart, "nothing acknowledged after the restart:\n{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partition_leader_killed_mid_load_loses_no_acknowledged_order_and_the_ingress_says_503_not_500() {
    orderflow_testkit::init_test_logs();
    // Arrange: three nodes (replication 3, min.insync.replicas 2), six partitions per topic.
    let cluster = start_cluster(3).await;
    let pipeline = Pipeline::start(&cluster.bootstrap(), &database_url(), &consumers(), 6).await.unwrap();
    let load = workload::start(WorkloadConfig::new(&pipeline.ingress_url, 300));

    // Act: a quarter into the load, kill -9 the node that leads most of the orders topic's
    // partitions; restart it once the load has gone on without it for a while.
    let total = load.total;
    wait_until("a quarter of the requests acknowledged", Duration::from_secs(60), || async {
        (load.progress.acknowledged() >= total / 4).then_some(())
    })
    .await;
    let mut led: std::collections::BTreeMap<i32, Vec<i32>> = Default::default();
    for partition in 0..6 {
        let leader = cluster.leader(&pipeline.orders_topic, partition).unwrap().expect("a leader");
        led.entry(leader).or_default().push(partition);
    }
    let (&victim, partitions) = led.iter().max_by_key(|(_, p)| p.len()).unwrap();
    let partitions = partitions.clone();
    tokio::task::block_in_place(|| cluster.kill(victim as usize)).unwrap();
    let killed = Instant::now();
    let acked_before = load.progress.acknowledged();
    wait_until("other nodes to lead the killed node's partitions", Duration::from_secs(60), || async {
        partitions
            .iter()
            .all(|&p| cluster.leader(&pipeline.orders_topic, p).ok().flatten().is_some_and(|l| l != victim))
            .then_some(())
    })
    .await;
    let failover = killed.elapsed();
    wait_until("a hundred more requests acknowledged without the node", Duration::from_secs(120), || async {
        (load.progress.acknowledged() >= (acked_before + 100).min(total)).then_some(())
    })
    .await;
    tokio::task::block_in_place(|| cluster.restart(victim as usize)).unwrap();
    let down_for = killed.elapsed();
    let history = load.finish().await;

    // Assert
    let faults = vec![format!(
        "kill -9 node {victim} (leader of orders partitions {partitions:?}) after {acked_before} acknowledgements; \
         new leaders after {failover:.1?}; restarted after {down_for:.1?}"
    )];
    check_and_report(&pipeline, &history, &faults).await;
}

/// A checkout service that writes orders through the transactional outbox of its own
/// database, 20 a second: at least `orders` of them, and on until `stop` is set (so it is
/// still writing when the fault comes, however slow the rest of the load is). One
/// transaction per order, retried with the same event id until it commits or 60 s pass. A unique violation on retry means an earlier attempt did commit (its
/// answer was lost with the connection): acknowledged. Records what it was told like the
/// HTTP clients do (202 for a commit, 0 for a failed attempt).
async fn outbox_checkout(
    database_url: String,
    outbox: orderflow_outbox_relay::Outbox,
    run_id: String,
    orders: usize,
    first_index: usize,
    failures: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<workload::Op> {
    use orderflow_events::{Event, OrderRequest, idempotent_event_id};
    use orderflow_testkit::events::order_request;
    use workload::{Op, Outcome, Request};
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(2))
        .connect(&database_url)
        .await
        .unwrap();
    let began = Instant::now();
    let mut ops = Vec::new();
    for i in 0.. {
        if i >= orders && stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        // 20 orders a second.
        tokio::time::sleep_until((began + Duration::from_millis(50 * i as u64)).into()).await;
        let key = format!("{run_id}-outbox-{i}");
        let order_id = format!("{run_id}-outbox-o{i}");
        let event_id = idempotent_event_id("outbox", &key, 0);
        let lines = vec![(format!("{run_id}-sku-outbox"), 1u32)];
        let request: OrderRequest = serde_json::from_value(order_request(&order_id, &[(&lines[0].0, 1)])).unwrap();
        let event = Event::OrderPlaced(request.into_event(event_id, chrono::Utc::now()).unwrap());
        let started = Instant::now();
        let mut op = Op {
            index: first_index + i,
            key,
            request: Request::Order { order_id, lines, total_minor: 250 },
            event_ids: vec![event_id],
            outcome: Outcome::Unknown,
            statuses: Vec::new(),
            latency: Duration::ZERO,
            started: started - began,
        };
        while started.elapsed() < Duration::from_secs(60) {
            let attempt = async {
                let mut tx = pool.begin().await?;
                outbox.enqueue(&mut tx, &event).await?;
                tx.commit().await
            };
            match attempt.await {
                Ok(()) => {
                    op.outcome = Outcome::Acknowledged;
                    op.statuses.push(202);
                    break;
                }
                Err(e) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("23505") => {
                    op.outcome = Outcome::Acknowledged;
                    op.statuses.push(202);
                    break;
                }
                Err(_) => {
                    failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    op.statuses.push(0);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        op.latency = started.elapsed();
        ops.push(op);
    }
    ops
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_crashed_and_restarted_mid_load_everything_resumes_without_restarting_our_processes() {
    orderflow_testkit::init_test_logs();
    // Arrange: a private Postgres (the shared one serves the rest of the suite), the shared
    // broker; the pipeline's stores and a checkout's outbox in that Postgres, and the relay.
    let postgres =
        tokio::task::spawn_blocking(PrivatePostgres::start).await.unwrap().expect("a private Postgres starts");
    let brokers = orderflow_testkit::kafka_args().brokers.clone();
    let pipeline = Pipeline::start(&brokers, &postgres.url(), &consumers(), 3).await.unwrap();
    let outbox = orderflow_outbox_relay::Outbox::new(&orderflow_testkit::unique_ident("checkout")).unwrap();
    outbox.migrate(&postgres.url()).await.unwrap();
    let relay_addr =
        format!("127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
    let _relay = orderflow_testkit::process::BinaryProcess::spawn(
        "outbox-relay",
        &["--listen", &relay_addr],
        &[
            ("KAFKA_BROKERS", brokers.as_str()),
            ("DATABASE_URL", postgres.url().as_str()),
            ("OUTBOX_SCHEMA", outbox.schema()),
            ("OUTBOX_ORDERS_TOPIC", pipeline.orders_topic.as_str()),
            ("OUTBOX_INVENTORY_TOPIC", pipeline.inventory_topic.as_str()),
        ],
    )
    .unwrap();
    let config = WorkloadConfig::new(&pipeline.ingress_url, 200);
    let run_id = config.run_id.clone();
    let load = workload::start(config);
    let outbox_failures = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop_checkout = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let checkout = tokio::spawn(outbox_checkout(
        postgres.url(),
        outbox.clone(),
        run_id,
        100,
        load.total,
        outbox_failures.clone(),
        stop_checkout.clone(),
    ));

    // Act: a quarter into the load, stop Postgres with `-m immediate` (every backend killed,
    // no checkpoint: a crash), wait until the checkout has seen it fail, start it again.
    let total = load.total;
    wait_until("a quarter of the requests acknowledged", Duration::from_secs(60), || async {
        (load.progress.acknowledged() >= total / 4).then_some(())
    })
    .await;
    tokio::task::block_in_place(|| postgres.stop_immediate()).unwrap();
    let stopped = Instant::now();
    let acked_before = load.progress.acknowledged();
    wait_until("5 s of outage, and the checkout's writes failing", Duration::from_secs(60), || async {
        (stopped.elapsed() >= Duration::from_secs(5) && outbox_failures.load(std::sync::atomic::Ordering::Relaxed) > 0)
            .then_some(())
    })
    .await;
    tokio::task::block_in_place(|| postgres.start_server()).unwrap();
    let down_for = stopped.elapsed();
    stop_checkout.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut history = load.finish().await;
    history.ops.extend(checkout.await.unwrap());

    // Assert: no process was restarted, and every store (fed by the ingress and the relay)
    // matches what the clients were told.
    let faults = vec![format!(
        "pg_ctl stop -m immediate after {acked_before} acknowledgements; started again after {down_for:.1?} \
         ({} failed outbox transactions meanwhile)",
        outbox_failures.load(std::sync::atomic::Ordering::Relaxed)
    )];
    check_and_report(&pipeline, &history, &faults).await;
    let mut pipeline = pipeline;
    for consumer in &mut pipeline.consumers {
        assert!(consumer.process.is_running(), "{} exited:\n{}", consumer.spec.name, consumer.process.output());
    }
}

/// Set every `quantity` field inside `value` to 0 (out of range: an order line has at least one).
fn zero_quantities(value: &mut apache_avro::types::Value) {
    use apache_avro::types::Value;
    match value {
        Value::Record(fields) => {
            for (name, field) in fields.iter_mut() {
                match (name.as_str(), &*field) {
                    ("quantity", Value::Int(_)) => *field = Value::Int(0),
                    ("quantity", Value::Long(_)) => *field = Value::Long(0),
                    _ => zero_quantities(field),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(zero_quantities),
        Value::Union(_, inner) => zero_quantities(inner),
        _ => {}
    }
}

/// An order encoded like the producers do, but with quantity 0 on every line: the framing
/// and the schema are right, the values are not.
fn order_with_out_of_range_values() -> Vec<u8> {
    use orderflow_events::{Codec, EventKind, schema::shipped};
    let valid =
        Codec::new().encode_single_object(&orderflow_testkit::events::order("hostile-range", &[("sku-h", 2)])).unwrap();
    let schema = &shipped().current(EventKind::OrderPlaced).schema;
    let mut datum = &valid[10..];
    let mut value = apache_avro::from_avro_datum(schema, &mut datum, None).unwrap();
    zero_quantities(&mut value);
    let mut out = valid[..10].to_vec();
    out.extend(apache_avro::to_avro_datum(schema, value).unwrap());
    out
}

/// The first record of `topic` (value, key, headers), to copy it exactly.
async fn first_record(
    kafka: &orderflow_kafka::KafkaArgs,
    topic: &str,
) -> (Option<Vec<u8>>, Option<Vec<u8>>, rdkafka::message::OwnedHeaders) {
    use rdkafka::Message;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    let consumer: StreamConsumer = kafka.consumer_config(&orderflow_testkit::fresh_group("copy")).create().unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await.expect("a record").unwrap();
    (
        message.payload().map(<[u8]>::to_vec),
        message.key().map(<[u8]>::to_vec),
        message.headers().map(|h| h.detach()).unwrap_or_default(),
    )
}

/// Every record of `topic` until `count` arrived: (headers, value length).
async fn read_dead_letters(
    kafka: &orderflow_kafka::KafkaArgs,
    topic: &str,
    count: usize,
) -> Vec<(std::collections::BTreeMap<String, String>, Option<usize>)> {
    use rdkafka::Message;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    let consumer: StreamConsumer = kafka.consumer_config(&orderflow_testkit::fresh_group("dlq-read")).create().unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while out.len() < count {
            let message = consumer.recv().await.unwrap();
            out.push((orderflow_testkit::events::header_pairs(&message), message.payload().map(<[u8]>::len)));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {count} dead letters on {topic}", out.len()));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_records_written_straight_to_the_topic_are_dead_lettered_by_every_consumer_and_every_partition_keeps_flowing()
 {
    use orderflow_runtime::dlq::headers as dlq;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    orderflow_testkit::init_test_logs();
    // Arrange: the pipeline on the shared broker and database, under load.
    let brokers = orderflow_testkit::kafka_args().brokers.clone();
    let pipeline = Pipeline::start(&brokers, &database_url(), &consumers(), 3).await.unwrap();
    let load = workload::start(WorkloadConfig::new(&pipeline.ingress_url, 150));
    let total = load.total;
    wait_until("a quarter of the requests acknowledged", Duration::from_secs(60), || async {
        (load.progress.acknowledged() >= total / 4).then_some(())
    })
    .await;

    // Act: another team's producer writes these straight onto the orders topic, on every
    // partition in turn, in the middle of the load.
    let (copy_value, copy_key, copy_headers) = first_record(&pipeline.kafka, &pipeline.orders_topic).await;
    let valid = orderflow_events::Codec::new()
        .encode_single_object(&orderflow_testkit::events::order("hostile-truncated", &[("sku-h", 1)]))
        .unwrap();
    let mut unknown_fingerprint = vec![0xC3, 0x01];
    unknown_fingerprint.extend([0xAB; 8]);
    unknown_fingerprint.extend(&valid[10..]);
    let mut unknown_schema_id = vec![0x00];
    unknown_schema_id.extend(0x7FFF_FF01u32.to_be_bytes());
    unknown_schema_id.extend(&valid[10..]);
    let random: Vec<u8> = (0..200u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 0x80).collect();
    // The framing and fingerprint of a real order, then 900 KB that are not its datum.
    let mut huge = valid[..10].to_vec();
    huge.extend((0..900 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8));
    let hostile: Vec<(&str, Option<Vec<u8>>, &str)> = vec![
        ("random bytes", Some(random), "undecodable"),
        ("unknown single-object fingerprint", Some(unknown_fingerprint), "unknown_schema"),
        ("unknown Confluent schema id", Some(unknown_schema_id), "unknown_schema"),
        ("truncated Avro", Some(valid[..valid.len() / 2].to_vec()), "undecodable"),
        ("empty value (tombstone)", None, "undecodable"),
        ("a 900 KB value", Some(huge), "undecodable"),
        ("a valid event with out-of-range values", Some(order_with_out_of_range_values()), "undecodable"),
    ];
    let producer: FutureProducer = pipeline.kafka.producer_config().create().unwrap();
    let mut written = Vec::new();
    for (i, (what, value, class)) in hostile.iter().enumerate() {
        let key = format!("hostile-{i}");
        let mut record = FutureRecord::to(&pipeline.orders_topic).key(&key).partition(i as i32 % 3);
        if let Some(value) = value {
            record = record.payload(value);
        }
        let delivery = producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).expect(what);
        written.push((*what, delivery.partition, delivery.offset, *class, value.as_ref().map(Vec::len)));
    }
    let mut copy = FutureRecord::to(&pipeline.orders_topic).headers(copy_headers);
    if let Some(key) = &copy_key {
        copy = copy.key(key);
    }
    if let Some(value) = &copy_value {
        copy = copy.payload(value);
    }
    producer.send(copy, Duration::from_secs(30)).await.map_err(|(e, _)| e).expect("the copy");
    let history = load.finish().await;

    // Assert: the stores match the history (the copy was skipped, not applied twice), and
    // every consumer dead-lettered exactly the seven bad records, in order per partition,
    // with the headers that say where each came from and why.
    let faults = vec![format!(
        "{} hostile records and an exact copy of a real one written to the orders topic mid-load",
        hostile.len()
    )];
    check_and_report(&pipeline, &history, &faults).await;
    for consumer in &pipeline.consumers {
        let dead = read_dead_letters(&pipeline.kafka, &consumer.dlq_topic, written.len()).await;
        let mut got: Vec<(i32, i64, String, Option<usize>)> = dead
            .iter()
            .map(|(h, len)| {
                assert_eq!(h[dlq::ORIGINAL_TOPIC], pipeline.orders_topic, "{h:?}");
                assert_eq!(h[dlq::CONSUMER], consumer.spec.name, "{h:?}");
                assert!(!h[dlq::ERROR_MESSAGE].is_empty() && !h[dlq::TIME].is_empty(), "{h:?}");
                (
                    h[dlq::ORIGINAL_PARTITION].parse().unwrap(),
                    h[dlq::ORIGINAL_OFFSET].parse().unwrap(),
                    h[dlq::ERROR_CLASS].clone(),
                    *len,
                )
            })
            .collect();
        got.sort();
        let mut want: Vec<(i32, i64, String, Option<usize>)> =
            written.iter().map(|(_, p, o, class, len)| (*p, *o, (*class).to_owned(), *len)).collect();
        want.sort();
        assert_eq!(got, want, "{}'s dead letters (partition, offset, class, value length)", consumer.spec.name);
    }
}

/// The value of the gauge or counter `name` (first series) on a service's `/metrics`.
async fn metric(addr: &str, name: &str) -> Option<f64> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().ok()?;
    let text = http.get(format!("http://{addr}/metrics")).send().await.ok()?.text().await.ok()?;
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .reduce(|a, b| a + b)
}

/// The local TCP ports of process `pid`'s sockets (from /proc), to find its Postgres backends
/// in `pg_stat_activity.client_port`.
fn local_ports(pid: u32) -> Vec<i32> {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|target| {
                    let target = target.to_string_lossy().into_owned();
                    Some(target.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut ports = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 9
                && inodes.contains(fields[9])
                && let Some(port) = fields[1].rsplit(':').next().and_then(|p| i32::from_str_radix(p, 16).ok())
            {
                ports.push(port);
            }
        }
    }
    ports
}

/// The stored next offsets of every partition of `topics` in `schema`.
async fn stored_offsets(
    pool: &sqlx::PgPool,
    schema: &str,
    topics: &[String],
) -> std::collections::BTreeMap<(String, i32), i64> {
    let rows: Vec<(String, i32, i64)> = sqlx::query_as(&format!(
        "SELECT topic, partition, next_offset FROM {schema}.orderflow_offsets WHERE topic = ANY($1)"
    ))
    .bind(topics)
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter().map(|(t, p, o)| ((t, p), o)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zombie_consumer_frozen_mid_batch_past_its_session_applies_nothing_twice_and_does_not_block_the_new_owner() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    orderflow_testkit::init_test_logs();
    // Arrange: two instances of inventory-projection (its on-hand sums show any double
    // application) share a group; the load runs.
    let specs: Vec<ConsumerSpec> = consumers().into_iter().filter(|c| c.name == "inventory-projection").collect();
    let brokers = orderflow_testkit::kafka_args().brokers.clone();
    let pipeline = Pipeline::start(&brokers, &database_url(), &specs, 4).await.unwrap();
    let zombie = pipeline.consumer("inventory-projection");
    let (_twin, twin_addr) = zombie.spawn_twin().unwrap();
    const ASSIGNED: &str = "orderflow_consumer_assigned_partitions";
    wait_until("both instances to own partitions", Duration::from_secs(60), || async {
        let (a, b) = (metric(&zombie.addr, ASSIGNED).await?, metric(&twin_addr, ASSIGNED).await?);
        (a > 0.0 && b > 0.0 && a + b == (4 * zombie.topics.len()) as f64).then_some(())
    })
    .await;
    let mut config = WorkloadConfig::new(&pipeline.ingress_url, 200);
    config.rate_per_sec = 15.0;
    let load = workload::start(config);
    let total = load.total;
    wait_until("a fifth of the requests acknowledged", Duration::from_secs(60), || async {
        (load.progress.acknowledged() >= total / 5).then_some(())
    })
    .await;

    // Act: catch the first instance inside a batch's transaction (it holds its partition's
    // offset row lock): lock the store tables so its write waits, freeze it (SIGSTOP), let the
    // write through. It is now a zombie holding a transaction open.
    let pool = pipeline.pool().await;
    let mut blocker = pool.begin().await.unwrap();
    let schema = &zombie.schema;
    sqlx::query(&format!("LOCK TABLE {schema}.stock, {schema}.order_skus IN EXCLUSIVE MODE"))
        .execute(&mut *blocker)
        .await
        .unwrap();
    let zombie_pid = zombie.process.pid();
    wait_until("the first instance's batch to wait for the store table", Duration::from_secs(30), || {
        let ports = local_ports(zombie_pid);
        let pool = pool.clone();
        async move {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE client_port = ANY($1) AND wait_event_type = 'Lock'",
            )
            .bind(&ports)
            .fetch_one(&pool)
            .await
            .ok()?;
            (waiting > 0).then_some(())
        }
    })
    .await;
    kill(Pid::from_raw(zombie_pid as i32), Signal::SIGSTOP).unwrap();
    let frozen = Instant::now();
    blocker.commit().await.unwrap();
    let topics = zombie.topics.clone();
    let at_freeze = stored_offsets(&pool, &zombie.schema, &topics).await;

    // The group hands the zombie's partitions to the twin, which must then apply every
    // partition, including the one whose offset row the zombie's open transaction locked.
    wait_until("the twin to own every partition", Duration::from_secs(60), || async {
        (metric(&twin_addr, ASSIGNED).await? == (4 * zombie.topics.len()) as f64).then_some(())
    })
    .await;
    let handed_over = frozen.elapsed();
    wait_until("the twin to advance every partition past where the zombie froze", Duration::from_secs(60), || async {
        let now = stored_offsets(&pool, &zombie.schema, &topics).await;
        at_freeze.iter().all(|(tp, offset)| now.get(tp).is_some_and(|n| n > offset)).then_some(())
    })
    .await;
    let all_advanced = frozen.elapsed();
    kill(Pid::from_raw(zombie_pid as i32), Signal::SIGCONT).unwrap();
    let history = load.finish().await;

    // Assert: the zombie gave its stale batch up (nothing of it applied twice: the store
    // matches the history) and lives on; it skipped nothing through the ledger either, so
    // the offset fence alone kept it out.
    let faults = vec![format!(
        "SIGSTOP one of two inventory-projection instances inside a batch's transaction; \
         partitions handed over after {handed_over:.1?}; every partition advanced by the new owner after \
         {all_advanced:.1?}; SIGCONT"
    )];
    check_and_report(&pipeline, &history, &faults).await;
    let mut pipeline = pipeline;
    let zombie = pipeline.consumer_mut("inventory-projection");
    assert!(zombie.process.is_running(), "the zombie exited:\n{}", zombie.process.output());
    let skipped = metric(&zombie.addr, "orderflow_duplicates_skipped_total").await.unwrap_or(0.0);
    assert_eq!(skipped, 0.0, "the ledger, not the offset fence, stopped the zombie's batch");
    // Its log shows the fence: the stale batch's commit failed (Postgres had ended the idle
    // transaction), then the group took the partitions away. The woken process may write
    // either line after this point: wait up to 30 s for both, then check what it wrote.
    let shows_fence = |log: &str| {
        log.find("batch failed transiently").is_some_and(|failed| log[failed..].contains("partitions revoked"))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let log = wait_until("the zombie's log to show the fence, or 30 s", Duration::from_secs(60), || {
        let (log, over) = (zombie.process.output(), Instant::now() >= deadline);
        async move { (over || shows_fence(&log)).then_some(log) }
    })
    .await;
    let failed = log.find("batch failed transiently").unwrap_or_else(|| panic!("no failed stale batch:\n{log}"));
    assert!(log[failed..].contains("partitions revoked"), "the zombie never gave its partitions up:\n{log}");
}
