//! What the machine itself can do, measured with the same records and row shapes the
//! pipeline uses: raw produce and consume through rdkafka, raw batched upserts with the
//! runtime's ledger and offset writes, binary COPY, one-row commits.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use orderflow_events::{CeHeaders, Codec, Event, OrderId, OrderPlaced, Sku, samples};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{Env, Settings};

pub const PARTITIONS: usize = 6;

/// Create a topic of the harness's own: [`PARTITIONS`] partitions, the cluster's default
/// replication factor.
pub async fn create_topic(env: &Env, topic: &str) -> anyhow::Result<()> {
    orderflow_kafka::admin::ensure_topic(
        &env.kafka,
        topic,
        PARTITIONS,
        orderflow_kafka::admin::CLUSTER_DEFAULT_REPLICATION,
    )
    .await?;
    Ok(())
}

/// One run's ceilings. `topic` holds `settings.records` distinct OrderPlaced events for the
/// pipeline measurements that follow.
#[derive(Debug, Clone)]
pub struct Ceilings {
    pub topic: String,
    pub record_bytes: usize,
    pub produce_per_sec: f64,
    pub consume_per_sec: f64,
    pub upsert_events_per_sec: f64,
    pub copy_rows_per_sec: f64,
    pub commits_per_sec: f64,
    pub commits_per_sec_8: f64,
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", Uuid::new_v4().simple().to_string().get(..12).unwrap_or("x"))
}

/// How many distinct skus the benchmark orders spread over (pseudo-randomly). Real catalogues
/// have many; with few skus every partition's transaction queues on the same rows (measured:
/// 3 or 1,000 skus held six concurrent partitions to the speed of one; see docs/benchmarks.md).
pub const SKUS: usize = 50_000;

/// `n` distinct OrderPlaced events (3 lines each, skus spread over [`SKUS`]).
pub fn orders(n: usize) -> anyhow::Result<Vec<OrderPlaced>> {
    orders_from(0, n)
}

/// Orders `bench-<first>` to `bench-<first + n - 1>`: a topic filled in chunks holds distinct
/// orders only when each chunk starts where the last one ended (an order id seen before is a
/// repeat the consumers skip, which would measure skipping instead of applying).
pub fn orders_from(first: usize, n: usize) -> anyhow::Result<Vec<OrderPlaced>> {
    let base = samples::order_placed();
    (first..first + n)
        .map(|i| {
            let mut order = base.clone();
            order.event_id = Uuid::new_v4();
            order.order_id = OrderId::parse(format!("bench-{i}")).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            for (k, line) in order.lines.iter_mut().enumerate() {
                let spread = (i as u64 * 3 + k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
                line.sku = Sku::parse(format!("SKU-{}", spread % SKUS as u64)).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            }
            Ok(order)
        })
        .collect()
}

/// `n` distinct encoded OrderPlaced records: (key, value, headers).
pub fn encoded_orders(n: usize) -> anyhow::Result<Vec<(String, Vec<u8>, OwnedHeaders)>> {
    encoded_orders_from(0, n)
}

/// [`orders_from`], encoded.
pub fn encoded_orders_from(first: usize, n: usize) -> anyhow::Result<Vec<(String, Vec<u8>, OwnedHeaders)>> {
    encoded(orders_from(first, n)?.into_iter().map(Event::OrderPlaced))
}

/// `events` as the producers send them: (key, single-object Avro value, CloudEvents headers).
pub fn encoded(events: impl Iterator<Item = Event>) -> anyhow::Result<Vec<(String, Vec<u8>, OwnedHeaders)>> {
    let codec = Codec::new();
    events
        .map(|event| {
            let value = codec.encode_single_object(&event)?;
            let mut headers = OwnedHeaders::new();
            for (key, value) in CeHeaders::for_event(&event, "orderflow-bench", None).to_pairs() {
                headers = headers.insert(Header { key, value: Some(&value) });
            }
            Ok((event.key().to_owned(), value, headers))
        })
        .collect()
}

/// Fill `topic` with `n` distinct orders ([`orders_from`]), 100,000 at a time so a large
/// backlog never sits in memory at once; returns records/s.
pub async fn fill_orders(env: &Env, topic: &str, n: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut filled = 0;
    while filled < n {
        let chunk = encoded_orders_from(filled, 100_000.min(n - filled))?;
        produce(env, topic, &chunk).await?;
        filled += chunk.len();
    }
    Ok(n as f64 / started.elapsed().as_secs_f64().max(1e-9))
}

/// Send `records` with many in flight; returns records/s.
pub async fn produce(env: &Env, topic: &str, records: &[(String, Vec<u8>, OwnedHeaders)]) -> anyhow::Result<f64> {
    let producer: FutureProducer = env.kafka.producer_config().create()?;
    let started = Instant::now();
    let mut acks = futures::stream::iter(records.iter())
        .map(|(key, value, headers)| {
            producer.send(
                FutureRecord::to(topic).key(key.as_str()).payload(value.as_slice()).headers(headers.clone()),
                Duration::from_secs(60),
            )
        })
        .buffer_unordered(20_000);
    while let Some(ack) = acks.next().await {
        ack.map_err(|(e, _)| e).with_context(|| format!("producing to {topic}"))?;
    }
    Ok(records.len() as f64 / started.elapsed().as_secs_f64())
}

/// Read `n` records of `topic` from the beginning (all partitions assigned, no group).
pub async fn consume(env: &Env, topic: &str, n: usize) -> anyhow::Result<f64> {
    let kafka = env.kafka.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = kafka.consumer_config(&unique("bench-raw")).create()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS as i32 {
            tpl.add_partition_offset(&topic, p, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let deadline = Instant::now() + Duration::from_secs(600);
        // Timed from the first record, like the consumer's apply rate (which leaves out its
        // group join), so both measure steady-state throughput.
        let mut started = None;
        let mut seen = 0;
        while seen < n {
            anyhow::ensure!(Instant::now() < deadline, "only {seen} of {n} records of {topic} within 600s");
            if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                message.with_context(|| format!("consuming {topic}"))?;
                started.get_or_insert_with(Instant::now);
                seen += 1;
            }
        }
        let elapsed = started.map(|s| s.elapsed().as_secs_f64()).unwrap_or(0.0).max(1e-9);
        Ok((n - 1) as f64 / elapsed)
    })
    .await?
}

/// The projection both the upsert ceiling and the benchmark consumer write: units per sku,
/// aggregated per batch and upserted in one statement.
pub async fn upsert_units(tx: &mut PgConnection, units: &BTreeMap<String, i64>) -> Result<(), sqlx::Error> {
    let skus: Vec<&str> = units.keys().map(String::as_str).collect();
    let counts: Vec<i64> = units.values().copied().collect();
    sqlx::query(
        "INSERT INTO bench_units (sku, units) SELECT * FROM UNNEST($1::text[], $2::bigint[])
         ON CONFLICT (sku) DO UPDATE SET units = bench_units.units + EXCLUDED.units",
    )
    .bind(&skus)
    .bind(&counts)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub async fn create_units_table(pool: &PgPool) -> Result<(), sqlx::Error> {
    // Two processes of the consumer create it at once: serialise them (`IF NOT EXISTS` alone
    // races on the catalog).
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.bench_units'))").execute(&mut *tx).await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS bench_units (sku text PRIMARY KEY, units bigint NOT NULL)")
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Batched transactions doing exactly the database work of the runtime plus the projection:
/// lock the offset row, ledger insert, UNNEST upsert, offset update, commit. Events/s.
async fn upsert(env: &Env, n: usize, batch_size: usize) -> anyhow::Result<f64> {
    let schema = unique("bench_upsert");
    let pool = orderflow_runtime::store::connect(&env.database_url, &schema, 2).await?;
    orderflow_runtime::store::migrate(&pool).await?;
    create_units_table(&pool).await?;
    let orders = orders(n)?;
    let started = Instant::now();
    let mut offset = 0i64;
    for batch in orders.chunks(batch_size) {
        let size = batch.len();
        let ids: Vec<Uuid> = batch.iter().map(|o| o.event_id).collect();
        let offsets: Vec<i64> = (offset..offset + size as i64).collect();
        let mut units = BTreeMap::new();
        for order in batch {
            for line in &order.lines {
                *units.entry(line.sku.as_str().to_owned()).or_insert(0) += i64::from(line.quantity.get());
            }
        }
        let mut tx = pool.begin().await?;
        orderflow_runtime::store::lock_offset(&mut tx, "bench", 0, None).await?;
        orderflow_runtime::store::record_applied(&mut tx, "bench", 0, &ids, &offsets).await?;
        upsert_units(&mut tx, &units).await?;
        offset += size as i64;
        orderflow_runtime::store::save_offset(&mut tx, "bench", 0, offset).await?;
        tx.commit().await?;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    drop_schema(env, &schema).await;
    Ok(rate)
}

/// Binary COPY of (sku, units, event_id) rows: the absolute ceiling for getting rows in.
async fn copy(env: &Env, rows: usize) -> anyhow::Result<f64> {
    let schema = unique("bench_copy");
    let pool = orderflow_runtime::store::connect(&env.database_url, &schema, 1).await?;
    sqlx::query("CREATE TABLE copy_rows (sku text NOT NULL, units bigint NOT NULL, event_id uuid NOT NULL)")
        .execute(&pool)
        .await?;
    let mut data = Vec::with_capacity(rows * 48 + 32);
    data.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    data.extend_from_slice(&0i32.to_be_bytes());
    data.extend_from_slice(&0i32.to_be_bytes());
    for i in 0..rows {
        let sku = format!("SKU-{}", i % 1000);
        data.extend_from_slice(&3i16.to_be_bytes());
        data.extend_from_slice(&(sku.len() as i32).to_be_bytes());
        data.extend_from_slice(sku.as_bytes());
        data.extend_from_slice(&8i32.to_be_bytes());
        data.extend_from_slice(&(i as i64).to_be_bytes());
        data.extend_from_slice(&16i32.to_be_bytes());
        data.extend_from_slice(Uuid::new_v4().as_bytes());
    }
    data.extend_from_slice(&(-1i16).to_be_bytes());
    let started = Instant::now();
    let mut conn = pool.acquire().await?;
    let mut copy = conn.copy_in_raw("COPY copy_rows FROM STDIN (FORMAT binary)").await?;
    for chunk in data.chunks(1 << 20) {
        copy.send(chunk).await?;
    }
    copy.finish().await?;
    let rate = rows as f64 / started.elapsed().as_secs_f64();
    drop(conn);
    pool.close().await;
    drop_schema(env, &schema).await;
    Ok(rate)
}

/// One-row transactions: sequential on one connection, and with 8 connections at once.
async fn commits(env: &Env, n: usize, connections: usize) -> anyhow::Result<f64> {
    let schema = unique("bench_commit");
    let pool = orderflow_runtime::store::connect(&env.database_url, &schema, connections as u32).await?;
    sqlx::query("CREATE TABLE one_row (id bigserial PRIMARY KEY, v int NOT NULL)").execute(&pool).await?;
    let started = Instant::now();
    let per = n / connections;
    let tasks = (0..connections).map(|_| {
        let pool = pool.clone();
        tokio::spawn(async move {
            for i in 0..per {
                let mut tx = pool.begin().await?;
                sqlx::query("INSERT INTO one_row (v) VALUES ($1)").bind(i as i32).execute(&mut *tx).await?;
                tx.commit().await?;
            }
            Ok::<_, sqlx::Error>(())
        })
    });
    for task in futures::future::join_all(tasks).await {
        task??;
    }
    let rate = (per * connections) as f64 / started.elapsed().as_secs_f64();
    pool.close().await;
    drop_schema(env, &schema).await;
    Ok(rate)
}

pub async fn drop_schema(env: &Env, schema: &str) {
    if let Ok(pool) = PgPool::connect(&env.database_url).await {
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).execute(&pool).await;
    }
}

pub async fn measure(env: &Env, settings: &Settings) -> anyhow::Result<Ceilings> {
    let topic = unique("bench-orders").replace('_', "-");
    create_topic(env, &topic).await?;
    let records = encoded_orders(settings.records)?;
    let record_bytes = records.first().map(|(_, v, _)| v.len()).unwrap_or(0);
    let produce_per_sec = produce(env, &topic, &records).await?;
    drop(records);
    let consume_per_sec = consume(env, &topic, settings.records).await?;
    let upsert_events_per_sec = upsert(env, settings.records, settings.batch_size).await?;
    let copy_rows_per_sec = copy(env, settings.records * 3).await?;
    let commit_n = if settings.quick { 200 } else { 5_000 };
    let commits_per_sec = commits(env, commit_n, 1).await?;
    let commits_per_sec_8 = commits(env, commit_n, 8).await?;
    Ok(Ceilings {
        topic,
        record_bytes,
        produce_per_sec,
        consume_per_sec,
        upsert_events_per_sec,
        copy_rows_per_sec,
        commits_per_sec,
        commits_per_sec_8,
    })
}
