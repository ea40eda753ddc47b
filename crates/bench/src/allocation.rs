//! The allocator under contention (`orderflow-bench allocation`, `scripts/bench allocation`):
//! how many decisions per second the real `allocator` binary makes when every order wants the
//! same sku, and when orders spread over [`SPREAD_SKUS`] skus, each beside the synthetic
//! consumer's apply rate over the very same orders topic; then the latency from an order's
//! 202 at the ingress to its decision on the allocations topic, at half the rate the three
//! processes sustain together.
//!
//! **Decisions/s.** Each case fills a fresh stock topic (receipts over three warehouses), starts
//! the allocator on a fresh schema and group with the stock topic and an empty orders topic,
//! waits until it has applied the stock, then produces the orders. The rate is timed from 1%
//! to 100% of the orders' stored offsets, like every consumer rate in the report. Every order
//! is decided once (`OrderAllocated`, `OrderBackordered`, or both when partly covered); the
//! harness counts the orders with decisions in the allocator's outbox afterwards and fails the
//! run if one is missing. CPU of the
//! allocator and of PostgreSQL is read from `/proc` over the timed window.
//! - *hot*: `records` orders of one unit of one sku; the stock holds half as many units, so
//!   the second half of the orders is backordered. Every batch of every partition takes the
//!   same sku's lock: the allocator's worst case.
//! - *spread*: `records` orders of 3 lines over [`SPREAD_SKUS`] skus, 20 units per sku (about
//!   as many units as the orders ask for, so most are allocated and some backordered).
//!
//! **Latency.** The real `ingress`, `allocator` and `outbox-relay` run as children; the harness
//! reads the allocations topic (all partitions assigned, no group) and timestamps each
//! decision's arrival by its key (the order id). The maximum sustainable rate is the smaller of
//! the ingress's closed-loop rate with both beside it and the rate at which those orders'
//! decisions arrived; the open loop runs at half of it, latency measured from each POST's
//! scheduled send.

use std::fmt::Write as _;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::Utc;
use orderflow_events::{
    Event, InventoryChanged, MinorUnits, OrderLine, OrderPlaced, Quantity, Reason, Sku, StockDelta, WarehouseId,
    samples,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use uuid::Uuid;

use crate::ceilings::{self, PARTITIONS, unique};
// Order id → when its decision arrived on the allocations topic.
use crate::e2e::Seen;
use crate::ingress::{IngressUnderTest, OpenLoop, Sibling, mark, percentiles_ms, row};
use crate::pipeline::{self, KillOnDrop};
use crate::report::{Figures, cell, fmt_num};
use crate::{Env, Settings};

/// Skus the *spread* case's orders choose from.
pub const SPREAD_SKUS: usize = 10_000;
/// Units received per sku in the *spread* case.
const SPREAD_UNITS: i64 = 20;
/// The warehouses every case's stock is received into.
const WAREHOUSES: [&str; 3] = ["wh-a", "wh-b", "wh-c"];
/// Concurrency of the latency case's closed loop (the ingress alone does best at 64 or 256;
/// see the main report).
const CLOSED_LOOP_CONCURRENCY: usize = 64;

/// Which orders a decisions/s case sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    Hot,
    Spread,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::Hot => "hot",
            Case::Spread => "spread",
        }
    }

    /// The stock received before the sale, and `n` orders.
    fn workload(self, n: usize) -> anyhow::Result<(Vec<InventoryChanged>, Vec<OrderPlaced>)> {
        let invalid = |e: orderflow_events::Invalid| anyhow::anyhow!("{e:?}");
        let receipt = |sku: &str, warehouse: &str, units: i64| -> anyhow::Result<InventoryChanged> {
            let mut change = samples::inventory_changed();
            change.event_id = Uuid::new_v4();
            change.sku = Sku::parse(sku).map_err(invalid)?;
            change.warehouse = WarehouseId::parse(warehouse).map_err(invalid)?;
            change.reason = Reason::Received;
            change.delta = StockDelta::parse(units).map_err(invalid)?;
            change.order_id = None;
            change.occurred_at = Utc::now();
            Ok(change)
        };
        let base = samples::order_placed();
        let order = |i: usize, lines: Vec<OrderLine>| -> anyhow::Result<OrderPlaced> {
            let mut order = base.clone();
            order.event_id = Uuid::new_v4();
            order.order_id = orderflow_events::OrderId::parse(format!("alloc-{i}")).map_err(invalid)?;
            let total: i64 = lines.iter().map(|l| i64::from(l.quantity.get()) * l.unit_price_minor.get()).sum();
            order.total_minor = MinorUnits::parse(total).map_err(invalid)?;
            order.lines = lines;
            Ok(order)
        };
        let line = |sku: String, quantity: i64| -> anyhow::Result<OrderLine> {
            Ok(OrderLine {
                sku: Sku::parse(sku).map_err(invalid)?,
                quantity: Quantity::parse(quantity).map_err(invalid)?,
                unit_price_minor: MinorUnits::parse(1999).map_err(invalid)?,
            })
        };
        match self {
            Case::Hot => {
                // Half as many units as orders, over the three warehouses.
                let units = (n / 2).max(1) as i64;
                let share = units / WAREHOUSES.len() as i64;
                let stock = WAREHOUSES
                    .iter()
                    .enumerate()
                    .map(|(w, warehouse)| (warehouse, if w == 0 { units - share * 2 } else { share }))
                    .filter(|(_, units)| *units > 0)
                    .map(|(warehouse, units)| receipt("SKU-HOT", warehouse, units))
                    .collect::<anyhow::Result<_>>()?;
                let orders =
                    (0..n).map(|i| order(i, vec![line("SKU-HOT".into(), 1)?])).collect::<anyhow::Result<_>>()?;
                Ok((stock, orders))
            }
            Case::Spread => {
                let stock = (0..SPREAD_SKUS)
                    .map(|s| receipt(&format!("SKU-{s}"), WAREHOUSES[s % WAREHOUSES.len()], SPREAD_UNITS))
                    .collect::<anyhow::Result<_>>()?;
                let orders = (0..n)
                    .map(|i| {
                        let lines = (0..3u64)
                            .map(|k| {
                                let spread = (i as u64 * 3 + k).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
                                line(format!("SKU-{}", spread % SPREAD_SKUS as u64), k as i64 + 1)
                            })
                            .collect::<anyhow::Result<_>>()?;
                        order(i, lines)
                    })
                    .collect::<anyhow::Result<_>>()?;
                Ok((stock, orders))
            }
        }
    }
}

/// One decisions/s case, measured once.
#[derive(Debug, Clone, Default)]
pub struct Decisions {
    /// Orders decided per second.
    pub per_sec: f64,
    /// Orders allocated in full.
    pub allocated: usize,
    /// Orders backordered, in part or in whole.
    pub backordered: usize,
    /// Decision events written (an order partly covered has two).
    pub events: usize,
    pub allocator_cpu_ms_per_1000: f64,
    pub postgres_cpu_ms_per_1000: f64,
    /// The synthetic consumer's apply rate over the same orders topic.
    pub synthetic_per_sec: f64,
}

/// Latency from the ingress's 202 to the decision on the allocations topic.
#[derive(Debug, Clone, Default)]
pub struct Latency {
    pub ingress_closed_per_sec: f64,
    pub decided_per_sec: f64,
    pub sustainable_per_sec: f64,
    pub half: OpenLoop,
    pub latencies_us: Vec<u64>,
    /// From the allocator's transaction start to the relay's claim of the decision (ms).
    pub relay_p50_ms: f64,
    pub relay_p99_ms: f64,
}

/// One round of the allocation benchmark.
#[derive(Debug, Clone, Default)]
pub struct Allocation {
    pub hot: Decisions,
    pub spread: Decisions,
    pub latency: Latency,
}

/// Measure everything once.
pub async fn measure(env: &Env, settings: &Settings) -> anyhow::Result<Allocation> {
    Ok(Allocation {
        hot: decisions(env, settings, Case::Hot).await.context("the hot-sku case")?,
        spread: decisions(env, settings, Case::Spread).await.context("the spread case")?,
        latency: latency(env, settings).await.context("the latency case")?,
    })
}

/// The allocator's arguments for a run on `schema` reading `topics`.
fn allocator_args(schema: &str, topics: &[&str], settings: &Settings) -> Vec<String> {
    let mut args: Vec<String> =
        ["--schema", schema, "--group", &unique("bench-allocator")].into_iter().map(str::to_owned).collect();
    args.extend(["--dlq-topic".into(), format!("{}.dlq", topics[0])]);
    args.extend(["--batch-size".into(), settings.batch_size.to_string(), "--listen".into(), "127.0.0.1:0".into()]);
    for topic in topics {
        args.extend(["--topic".into(), (*topic).to_owned()]);
    }
    args
}

/// A token for the allocator's read API (the harness reads the store, not the API).
fn api_tokens() -> String {
    format!("bench:{}", Uuid::new_v4().simple())
}

async fn decisions(env: &Env, settings: &Settings, case: Case) -> anyhow::Result<Decisions> {
    let orders_topic = unique(&format!("bench-alloc-{}-orders", case.name())).replace('_', "-");
    let stock_topic = unique(&format!("bench-alloc-{}-stock", case.name())).replace('_', "-");
    ceilings::create_topic(env, &orders_topic).await?;
    ceilings::create_topic(env, &stock_topic).await?;
    let (stock, orders) = case.workload(settings.records)?;
    let (n_stock, n_orders) = (stock.len(), orders.len());
    ceilings::produce(env, &stock_topic, &ceilings::encoded(stock.into_iter().map(Event::InventoryChanged))?).await?;
    let orders = ceilings::encoded(orders.into_iter().map(Event::OrderPlaced))?;

    let schema = unique(&format!("bench_alloc_{}", case.name()));
    let mut command = Command::new(crate::ingress::sibling_binary("allocator")?);
    command
        .args(["--kafka-brokers", &env.kafka.brokers, "--database-url", &env.database_url])
        .args(allocator_args(&schema, &[&orders_topic, &stock_topic], settings))
        .env("API_TOKENS", api_tokens())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = KillOnDrop(command.spawn().context("Failed to start the allocator")?);
    let result = run_decisions(env, &schema, &mut child, &orders_topic, &orders, n_stock, n_orders).await;
    drop(child);
    ceilings::drop_schema(env, &schema).await;
    ceilings::drop_schema(env, &format!("{schema}_outbox")).await;
    let mut figures = result?;
    // The synthetic consumer over the very same orders.
    figures.synthetic_per_sec =
        pipeline::run_bench_consumer(env, &orders_topic, n_orders, settings.batch_size, false).await?.per_sec;
    Ok(figures)
}

async fn run_decisions(
    env: &Env,
    schema: &str,
    child: &mut KillOnDrop,
    orders_topic: &str,
    orders: &[(String, Vec<u8>, rdkafka::message::OwnedHeaders)],
    n_stock: usize,
    n_orders: usize,
) -> anyhow::Result<Decisions> {
    let pool = pipeline::connect_when_ready(env, schema, &mut child.0, "allocator").await?;
    let applied = |pool: sqlx::PgPool| async move {
        orderflow_runtime::store::stored_offsets(&pool, schema)
            .await
            .ok()
            .flatten()
            .map(|o| o.values().sum::<i64>() as usize)
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    while applied(pool.clone()).await < n_stock {
        if let Some(status) = child.0.try_wait()? {
            bail!("the allocator exited while applying the stock: {status}");
        }
        anyhow::ensure!(Instant::now() < deadline, "the allocator did not apply {n_stock} receipts within 300s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The orders go out while the allocator decides; it is timed from 1% of them.
    let total = n_stock + n_orders;
    let deadline = Instant::now() + Duration::from_secs(1800);
    let decide = async {
        let mut started: Option<Window> = None;
        loop {
            if let Some(status) = child.0.try_wait()? {
                bail!("the allocator exited during the benchmark: {status}");
            }
            let done = applied(pool.clone()).await;
            if started.is_none() && done >= n_stock + n_orders / 100 {
                started = Some((Instant::now(), done, pipeline::machine_ticks(), pipeline::proc_stats(child.0.id()).1));
            }
            if done >= total {
                return started.context("the start of the timed window");
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the allocator decided only {} of {n_orders} orders in 30 minutes",
                done.saturating_sub(n_stock)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (_, started) = tokio::try_join!(ceilings::produce(env, orders_topic, orders), decide)?;
    let (from, at, ticks, cpu) = started;
    let decided = (total - at).max(1) as f64;
    let per_1000 = 1000.0 * 1000.0 / decided;
    let allocator_cpu = (pipeline::proc_stats(child.0.id()).1 - cpu) * per_1000;
    let postgres_cpu = (pipeline::machine_ticks().1 - ticks.1) / pipeline::clock_ticks() * per_1000;
    let per_sec = decided / from.elapsed().as_secs_f64().max(1e-9);

    // Every order was decided, once: its decision events are in the outbox (an order partly
    // covered has both an OrderAllocated and an OrderBackordered).
    let table = format!("{schema}_outbox.orderflow_outbox");
    let (orders_decided, backordered, events): (i64, i64, i64) = sqlx::query_as(&format!(
        "SELECT count(DISTINCT key), count(DISTINCT key) FILTER (WHERE payload->>'type' = $1), count(*) FROM {table}"
    ))
    .bind("orderflow.order.backordered.v1")
    .fetch_one(&pool)
    .await
    .with_context(|| format!("counting the decisions in {table}"))?;
    pool.close().await;
    if orders_decided as usize != n_orders {
        bail!("expected a decision for each of {n_orders} orders, found decisions for {orders_decided} in {table}");
    }
    let (backordered, events) = (backordered as usize, events as usize);
    Ok(Decisions {
        per_sec,
        allocated: n_orders - backordered,
        backordered,
        events,
        allocator_cpu_ms_per_1000: allocator_cpu,
        postgres_cpu_ms_per_1000: postgres_cpu,
        synthetic_per_sec: 0.0,
    })
}

/// The start of a timed window: when, how many events were applied by then, the machine's
/// CPU ticks (broker, PostgreSQL, busy) and the allocator's CPU seconds.
type Window = (Instant, usize, (f64, f64, f64), f64);

/// The harness's reader of the allocations topic: a thread polling every partition from the
/// beginning, keeping each key's first arrival.
struct DecisionReader {
    seen: Seen,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl DecisionReader {
    fn start(env: &Env, topic: &str) -> anyhow::Result<DecisionReader> {
        let mut config = env.kafka.consumer_config(&unique("bench-decisions"));
        // The instrument must not add latency of its own: answer fetches at once.
        config.set("fetch.wait.max.ms", "5");
        let consumer: BaseConsumer = config.create()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS as i32 {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let (seen, stop) = (Seen::default(), Arc::new(AtomicBool::new(false)));
        let (sink, stopped) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || -> anyhow::Result<()> {
            while !stopped.load(Ordering::Relaxed) {
                let Some(message) = consumer.poll(Duration::from_millis(50)) else { continue };
                let message = message.context("reading the allocations topic")?;
                let at = Instant::now();
                if let Some(Ok(key)) = message.key_view::<str>()
                    && let Ok(mut seen) = sink.lock()
                {
                    seen.entry(key.to_owned()).or_insert(at);
                }
            }
            Ok(())
        });
        Ok(DecisionReader { seen, stop, thread: Some(thread) })
    }

    fn check_running(&mut self) -> anyhow::Result<()> {
        if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
            match self.thread.take().map(|t| t.join()) {
                Some(Ok(Err(error))) => return Err(error),
                Some(Err(_)) => bail!("the allocations reader panicked"),
                _ => bail!("the allocations reader stopped"),
            }
        }
        Ok(())
    }

    /// Arrival times of the decisions of `ids`, waiting up to `timeout` for all of them.
    async fn wait(
        &mut self,
        ids: &[String],
        timeout: Duration,
        processes: &[&Sibling],
    ) -> anyhow::Result<Vec<Instant>> {
        let deadline = Instant::now() + timeout;
        loop {
            let found: Vec<Instant> = match self.seen.lock() {
                Ok(seen) => ids.iter().filter_map(|id| seen.get(id).copied()).collect(),
                Err(_) => bail!("the allocations reader panicked"),
            };
            if found.len() == ids.len() {
                return Ok(found);
            }
            if Instant::now() > deadline {
                bail!(
                    "{} of {} accepted orders had no decision on the allocations topic within {timeout:?}",
                    ids.len() - found.len(),
                    ids.len()
                );
            }
            self.check_running()?;
            for process in processes {
                process.check_running()?;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for DecisionReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn latency(env: &Env, settings: &Settings) -> anyhow::Result<Latency> {
    let orders_topic = unique("bench-alloc-e2e-orders").replace('_', "-");
    let stock_topic = unique("bench-alloc-e2e-stock").replace('_', "-");
    let allocations_topic = unique("bench-alloc-e2e-decisions").replace('_', "-");
    for topic in [&orders_topic, &stock_topic, &allocations_topic] {
        ceilings::create_topic(env, topic).await?;
    }
    // Stock for the skus the ingress's orders name (`ingress::order_body`): 1,000 units of
    // each of the skus of the first `records` orders, so most orders are allocated.
    let mut skus: Vec<String> = (0..settings.records * 3)
        .map(|j| format!("SKU-{}", ((j as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % ceilings::SKUS as u64))
        .collect();
    skus.sort_unstable();
    skus.dedup();
    let invalid = |e: orderflow_events::Invalid| anyhow::anyhow!("{e:?}");
    let stock = skus
        .iter()
        .enumerate()
        .map(|(i, sku)| {
            let mut change = samples::inventory_changed();
            change.event_id = Uuid::new_v4();
            change.sku = Sku::parse(sku.clone()).map_err(invalid)?;
            change.warehouse = WarehouseId::parse(WAREHOUSES[i % WAREHOUSES.len()]).map_err(invalid)?;
            change.reason = Reason::Received;
            change.delta = StockDelta::parse(1_000).map_err(invalid)?;
            change.order_id = None;
            Ok(Event::InventoryChanged(change))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let n_stock = stock.len();
    ceilings::produce(env, &stock_topic, &ceilings::encoded(stock.into_iter())?).await?;

    let schema = unique("bench_alloc_e2e");
    let allocator = Sibling::spawn(
        env,
        "allocator",
        &allocator_args(&schema, &[&orders_topic, &stock_topic], settings)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        &[("DATABASE_URL", &env.database_url), ("API_TOKENS", &api_tokens())],
    )?;
    let result = latency_with(env, settings, &schema, &allocator, &orders_topic, &allocations_topic, n_stock).await;
    drop(allocator);
    ceilings::drop_schema(env, &schema).await;
    ceilings::drop_schema(env, &format!("{schema}_outbox")).await;
    result
}

async fn latency_with(
    env: &Env,
    settings: &Settings,
    schema: &str,
    allocator: &Sibling,
    orders_topic: &str,
    allocations_topic: &str,
    n_stock: usize,
) -> anyhow::Result<Latency> {
    // Wait for the allocator to apply the stock (its outbox exists from then on too).
    let pool = sqlx::PgPool::connect(&env.database_url).await.context("Failed to connect to Postgres")?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        allocator.check_running()?;
        let applied = orderflow_runtime::store::stored_offsets(&pool, schema)
            .await
            .ok()
            .flatten()
            .map(|o| o.values().sum::<i64>() as usize)
            .unwrap_or(0);
        if applied >= n_stock {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the allocator did not apply {n_stock} receipts within 300s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pool.close().await;
    let relay_listen = format!("127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port());
    let relay = Sibling::spawn(
        env,
        "outbox-relay",
        &["--schema", &format!("{schema}_outbox"), "--allocations-topic", allocations_topic, "--listen", &relay_listen],
        &[("DATABASE_URL", &env.database_url)],
    )?;
    let mut reader = DecisionReader::start(env, allocations_topic)?;
    let ingress = Arc::new(IngressUnderTest::start(env, orders_topic).await?);
    let processes = [allocator, &relay, &ingress.process];
    let ids = |phase: &str, indexes: &mut dyn Iterator<Item = usize>| -> Vec<String> {
        indexes.map(|i| ingress.order_id(phase, i)).collect()
    };

    // Warm up: the allocator's group is joined, the relay and the reader are reading.
    let warm = ingress.open_loop("warm", 50.0, Duration::from_millis(400)).await;
    reader.wait(&ids("warm", &mut warm.accepted.iter().copied()), Duration::from_secs(120), &processes).await?;

    // Maximum sustainable rate: the ingress's closed loop with both beside it, and the rate
    // at which those orders' decisions arrived.
    let phase = crate::ingress::phase(settings);
    let closed = ingress.closed_loop("max", CLOSED_LOOP_CONCURRENCY, phase / 4, phase / 2).await?;
    let prefix = format!("{}-max-", ingress.prefix);
    let seen = reader.seen.clone();
    let mut times = crate::e2e::arrivals(&seen, &prefix, closed.accepted, Duration::from_secs(300), || {
        reader.check_running()?;
        processes.iter().try_for_each(|process| process.check_running())
    })
    .await?;
    if times.len() < closed.accepted {
        bail!("only {} of {} accepted orders were decided within 300s", times.len(), closed.accepted);
    }
    let decided_per_sec = crate::e2e::arrival_rate(&mut times).context("timing the decisions")?;
    let sustainable = closed.per_sec.min(decided_per_sec);

    // Half of it, open loop: from each POST's scheduled send to its decision's arrival.
    let half = ingress.open_loop("half", sustainable * 0.5, phase).await;
    let accepted = ids("half", &mut half.accepted.iter().copied());
    let arrived = reader.wait(&accepted, Duration::from_secs(300), &processes).await?;
    let latencies_us = half
        .accepted
        .iter()
        .zip(arrived)
        .filter_map(|(&index, at)| Some(at.saturating_duration_since(half.scheduled(index)?).as_micros() as u64))
        .collect();
    for process in processes {
        process.check_running()?;
    }
    // Where the time goes: from the start of the allocator's transaction that wrote the
    // decision (the row's `created_at`) to the start of the relay's transaction that claimed it
    // for publication (`published_at`: the relay sets it to its transaction's `now()`).
    let pool = sqlx::PgPool::connect(&env.database_url).await.context("Failed to connect to Postgres")?;
    let (relay_p50_ms, relay_p99_ms): (Option<f64>, Option<f64>) = sqlx::query_as(&format!(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)
         FROM (SELECT extract(epoch FROM published_at - created_at) * 1000 AS ms
               FROM {schema}_outbox.orderflow_outbox WHERE key LIKE $1 AND published_at IS NOT NULL) AS published"
    ))
    .bind(format!("{}-half-%", ingress.prefix))
    .fetch_one(&pool)
    .await
    .context("reading the outbox's publication times")?;
    pool.close().await;
    Ok(Latency {
        ingress_closed_per_sec: closed.per_sec,
        decided_per_sec,
        sustainable_per_sec: sustainable,
        half,
        latencies_us,
        relay_p50_ms: relay_p50_ms.unwrap_or(f64::NAN),
        relay_p99_ms: relay_p99_ms.unwrap_or(f64::NAN),
    })
}

/// Figure names per case: decisions/s, synthetic apply rate, orders allocated, orders
/// backordered, decision events, allocator CPU, PostgreSQL CPU.
const CASE_NAMES: [(Case, [&str; 7]); 2] = [
    (
        Case::Hot,
        ["hot_rate", "hot_synthetic", "hot_allocated", "hot_backordered", "hot_events", "hot_cpu", "hot_pg_cpu"],
    ),
    (
        Case::Spread,
        [
            "spread_rate",
            "spread_synthetic",
            "spread_allocated",
            "spread_backordered",
            "spread_events",
            "spread_cpu",
            "spread_pg_cpu",
        ],
    ),
];

impl Figures {
    pub fn push_allocation(&mut self, a: &Allocation) {
        for (case, names) in CASE_NAMES {
            let d = if case == Case::Hot { &a.hot } else { &a.spread };
            let values = [
                d.per_sec,
                d.synthetic_per_sec,
                d.allocated as f64,
                d.backordered as f64,
                d.events as f64,
                d.allocator_cpu_ms_per_1000,
                d.postgres_cpu_ms_per_1000,
            ];
            for (name, value) in names.into_iter().zip(values) {
                self.push(name, value);
            }
            self.push(if case == Case::Hot { "hot_ratio" } else { "spread_ratio" }, d.per_sec / d.synthetic_per_sec);
        }
        let l = &a.latency;
        self.push("alloc_closed", l.ingress_closed_per_sec);
        self.push("alloc_decided", l.decided_per_sec);
        self.push("alloc_sustainable", l.sustainable_per_sec);
        self.push("alloc_half_rate", l.half.rate);
        let (p50, p99, p999) = percentiles_ms(&mut l.latencies_us.clone());
        self.push("alloc_p50", p50);
        self.push("alloc_p99", p99);
        self.push("alloc_p999", p999);
        self.push("alloc_failed", l.half.failed as f64);
        self.push("alloc_relay_p50", l.relay_p50_ms);
        self.push("alloc_relay_p99", l.relay_p99_ms);
    }
}

/// The allocation section of the report.
pub fn render(md: &mut String, settings: &Settings, f: &Figures) {
    let none = " | |";
    let _ = write!(
        md,
        "\n### Decisions per second\n\n\
             `records` = {} orders per case, {} partitions, batch size {}. *hot*: every order is one unit of `SKU-HOT`, \
             {} units in stock over three warehouses (half the orders are allocated, half backordered). *spread*: \
             3 lines per order over {} skus with {} units each. Beside each: the synthetic consumer (the runtime's \
             batched projection) over the same orders topic in the same round.\n\n\
             | figure | value | synthetic consumer, same orders | ratio | |\n|---|---|---|---|---|\n",
        settings.records,
        PARTITIONS,
        settings.batch_size,
        fmt_num((settings.records / 2) as f64),
        fmt_num(SPREAD_SKUS as f64),
        SPREAD_UNITS,
    );
    for (case, [rate, synthetic, allocated, backordered, events, cpu, pg_cpu]) in CASE_NAMES {
        let label = match case {
            Case::Hot => "one hot sku",
            Case::Spread => "spread over 10,000 skus",
        };
        let ratio = if case == Case::Hot { "hot_ratio" } else { "spread_ratio" };
        let rest = format!("{} | {:.0}% |", cell(f, synthetic), f.median(ratio) * 100.0);
        row(md, f, &format!("allocator decisions/s (orders decided), {label}"), rate, &rest);
        row(md, f, &format!("{label}: orders allocated in full"), allocated, none);
        row(md, f, &format!("{label}: orders backordered, in part or in whole"), backordered, none);
        row(md, f, &format!("{label}: decision events written"), events, none);
        row(md, f, &format!("{label}: allocator CPU per 1000 decisions (ms)"), cpu, none);
        row(md, f, &format!("{label}: PostgreSQL CPU per 1000 decisions (ms)"), pg_cpu, none);
    }
    md.push_str(
        "\n### From the order's 202 to its decision\n\n\
         The real `ingress`, `allocator` and `outbox-relay`; the harness reads the allocations topic. Orders as in the \
         main report's ingress figures (3 lines over 50,000 skus, 1,000 units of each in stock).\n\n\
         | figure | value | target | |\n|---|---|---|---|\n",
    );
    let none = "| ";
    row(md, f, "ingress requests/s, closed loop (64 in flight), allocator and relay running", "alloc_closed", none);
    row(md, f, "rate those orders' decisions arrived (decisions/s)", "alloc_decided", none);
    row(md, f, "maximum sustainable rate = min of the two above", "alloc_sustainable", none);
    row(md, f, "open loop at 50% of that (orders/s offered)", "alloc_half_rate", none);
    let label = "latency at 50%: scheduled POST → decision on `allocations.v1`";
    row(md, f, &format!("{label}, p50 (ms)"), "alloc_p50", none);
    row(md, f, &format!("{label}, p99 (ms)"), "alloc_p99", none);
    row(md, f, &format!("{label}, p99.9 (ms)"), "alloc_p999", none);
    let label = "of which: the allocator's transaction start → the relay claimed the decision";
    row(md, f, &format!("{label}, p50 (ms)"), "alloc_relay_p50", none);
    row(md, f, &format!("{label}, p99 (ms)"), "alloc_relay_p99", none);
    row(
        md,
        f,
        "requests not accepted at 50%",
        "alloc_failed",
        &format!("0 | {}", mark(f.median("alloc_failed") == 0.0)),
    );
}
