//! End-to-end latency, from the moment an order was due to be POSTed to the ingress to the
//! moment its row is visible in the `fulfillment` read store, under open-loop load at 50% and
//! 80% of the maximum sustainable rate; and what the two processes cost under that load.
//!
//! The real `ingress` and `fulfillment` binaries run as child processes on a fresh topic and a
//! fresh schema. The harness adds an `AFTER INSERT` trigger on the bench schema's
//! `fulfillments` that sends the order id with `pg_notify`; Postgres delivers a notification
//! when the inserting transaction commits, i.e. when the row becomes visible, and the harness
//! timestamps its arrival on a `LISTEN` connection. The method's own delay is measured in the
//! same run (a `pg_notify` round trip from the harness to its listener) and reported.
//!
//! **Maximum sustainable rate** = the smaller of (a) the ingress's closed-loop rate (at the
//! concurrency that was best alone) while the consumer runs beside it, and (b) the rate at
//! which the consumer made those orders visible (rows / time from the first to the last).
//! When the consumer keeps up, (b) ≈ (a); when it falls behind, (b) caps the rate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::PgPool;
use sqlx::postgres::PgListener;

use crate::ceilings::{self, unique};
use crate::ingress::{IngressFigures, IngressUnderTest, OpenLoop, Sibling, mark, percentiles_ms, row};
use crate::report::Figures;
use crate::{Env, Settings};

/// One round's end-to-end figures.
#[derive(Debug, Clone, Default)]
pub struct E2eFigures {
    pub ingress_closed_per_sec: f64,
    pub apply_per_sec: f64,
    pub sustainable_per_sec: f64,
    pub at_50: E2eLatency,
    pub at_80: E2eLatency,
    /// Median delay of a `pg_notify` from the harness to its own listener (ms).
    pub notify_delay_ms: f64,
    pub ingress_peak_rss_mb: f64,
    pub ingress_cpu_ms_per_1000: f64,
    pub fulfillment_peak_rss_mb: f64,
    pub fulfillment_cpu_ms_per_1000: f64,
}

#[derive(Debug, Clone, Default)]
pub struct E2eLatency {
    pub rate: f64,
    /// From the scheduled send to the row's visibility (microseconds), per accepted order.
    pub latencies_us: Vec<u64>,
    /// Requests not accepted by the ingress (their orders are not expected).
    pub failed: usize,
}

/// Order id → when its row was seen, filled by the listener task.
pub(crate) type Seen = Arc<Mutex<HashMap<String, Instant>>>;

/// The fulfillment consumer on a fresh schema, and the harness's view of its rows.
struct Reader {
    process: Sibling,
    pool: PgPool,
    schema: String,
    seen: Seen,
    listener: tokio::task::JoinHandle<()>,
}

impl Reader {
    async fn start(env: &Env, topic: &str) -> anyhow::Result<Reader> {
        let schema = unique("bench_e2e");
        let group = unique("bench-e2e");
        let dlq = format!("{topic}.dlq");
        let listen = format!("127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port());
        let process = Sibling::spawn(
            env,
            "fulfillment",
            &["--topic", topic, "--schema", &schema, "--group", &group, "--dlq-topic", &dlq, "--listen", &listen],
            // The harness reads the store, not the read API; the API still needs its token.
            &[("DATABASE_URL", &env.database_url), ("API_TOKENS", &format!("bench:{}", uuid::Uuid::new_v4().simple()))],
        )?;
        let pool = PgPool::connect(&env.database_url).await.context("Failed to connect to Postgres")?;
        match Self::listen(&process, &pool, &schema).await {
            Ok((seen, listener)) => Ok(Reader { process, pool, schema, seen, listener }),
            Err(error) => {
                pool.close().await;
                drop(process);
                ceilings::drop_schema(env, &schema).await;
                Err(error)
            }
        }
    }

    /// Once the consumer has created its tables: the trigger, and a task recording when each
    /// order's row became visible.
    async fn listen(
        process: &Sibling,
        pool: &PgPool,
        schema: &str,
    ) -> anyhow::Result<(Seen, tokio::task::JoinHandle<()>)> {
        let table = format!("{schema}.fulfillments");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            process.check_running()?;
            let exists: bool =
                sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL").bind(&table).fetch_one(pool).await?;
            if exists {
                break;
            }
            if Instant::now() > deadline {
                bail!("fulfillment did not create {table} within 60s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The schema name is ours (`unique`), not input; identifiers cannot be bound. The
        // channel is the schema's name, so concurrent runs never hear each other.
        sqlx::query(&format!(
            "CREATE FUNCTION {schema}.bench_notify_visible() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN PERFORM pg_notify(TG_TABLE_SCHEMA, NEW.order_id); RETURN NULL; END $$"
        ))
        .execute(pool)
        .await?;
        sqlx::query(&format!(
            "CREATE TRIGGER bench_visible AFTER INSERT ON {schema}.fulfillments
             FOR EACH ROW EXECUTE FUNCTION {schema}.bench_notify_visible()"
        ))
        .execute(pool)
        .await?;
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(schema).await?;
        let seen: Seen = Arc::default();
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok(notification) = listener.recv().await {
                let at = Instant::now();
                if let Ok(mut seen) = sink.lock() {
                    seen.entry(notification.payload().to_owned()).or_insert(at);
                }
            }
        });
        Ok((seen, task))
    }

    fn seen_at(&self, id: &str) -> Option<Instant> {
        self.seen.lock().ok()?.get(id).copied()
    }

    /// Wait until every id is visible (up to `timeout`); how many are still missing.
    async fn wait_visible(&self, ids: &[String], timeout: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let missing = match self.seen.lock() {
                Ok(seen) => ids.iter().filter(|id| !seen.contains_key(*id)).count(),
                Err(_) => bail!("the listener task panicked"),
            };
            if missing == 0 || Instant::now() > deadline {
                return Ok(missing);
            }
            self.process.check_running()?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Median delay from a `pg_notify` on another connection to its arrival at the listener.
    async fn notify_delay_ms(&self) -> anyhow::Result<f64> {
        let mut micros = Vec::new();
        for i in 0..20 {
            let payload = format!("calibrate-{i}");
            let sent = Instant::now();
            sqlx::query("SELECT pg_notify($1, $2)").bind(&self.schema).bind(&payload).execute(&self.pool).await?;
            if self.wait_visible(std::slice::from_ref(&payload), Duration::from_secs(5)).await? > 0 {
                bail!("the harness's own notification did not arrive within 5s");
            }
            if let Some(at) = self.seen_at(&payload) {
                micros.push(at.duration_since(sent).as_micros() as u64);
            }
        }
        Ok(percentiles_ms(&mut micros).0)
    }

    async fn stop(self, env: &Env) {
        self.listener.abort();
        self.pool.close().await;
        drop(self.process);
        ceilings::drop_schema(env, &self.schema).await;
    }
}

/// Latency from each accepted order's scheduled send to its row's visibility.
async fn visible_latencies(
    reader: &Reader,
    ingress: &IngressUnderTest,
    phase: &str,
    open: &OpenLoop,
) -> anyhow::Result<E2eLatency> {
    let ids: Vec<String> = open.accepted.iter().map(|&i| ingress.order_id(phase, i)).collect();
    let missing = reader.wait_visible(&ids, Duration::from_secs(120)).await?;
    if missing > 0 {
        bail!("{missing} of {} accepted orders were not visible in fulfillment within 120s", ids.len());
    }
    let mut latencies_us = Vec::with_capacity(ids.len());
    for (&index, id) in open.accepted.iter().zip(&ids) {
        if let (Some(due), Some(at)) = (open.scheduled(index), reader.seen_at(id)) {
            latencies_us.push(at.saturating_duration_since(due).as_micros() as u64);
        }
    }
    Ok(E2eLatency { rate: open.rate, latencies_us, failed: open.failed })
}

/// When the ids starting with `prefix` arrived in `seen`, once `expected` of them have (or
/// `timeout` passed: then fewer), checking `alive` between looks.
pub(crate) async fn arrivals(
    seen: &Seen,
    prefix: &str,
    expected: usize,
    timeout: Duration,
    mut alive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Vec<Instant>> {
    let deadline = Instant::now() + timeout;
    loop {
        let times: Vec<Instant> = match seen.lock() {
            Ok(seen) => seen.iter().filter(|(id, _)| id.starts_with(prefix)).map(|(_, at)| *at).collect(),
            Err(_) => bail!("the task recording arrivals panicked"),
        };
        if times.len() >= expected || Instant::now() > deadline {
            return Ok(times);
        }
        alive()?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Arrivals per second from the first of `times` to the last (sorts them).
pub(crate) fn arrival_rate(times: &mut [Instant]) -> anyhow::Result<f64> {
    times.sort_unstable();
    let span = match (times.first(), times.last()) {
        (Some(first), Some(last)) => last.duration_since(*first).as_secs_f64(),
        _ => 0.0,
    };
    if times.len() < 2 || span <= 0.0 {
        bail!("too few arrivals to time ({})", times.len());
    }
    Ok((times.len() - 1) as f64 / span)
}

/// Ingress + fulfillment: the maximum sustainable rate, then open loops at 50% and 80% of it.
pub async fn measure(env: &Env, settings: &Settings, alone: &IngressFigures) -> anyhow::Result<E2eFigures> {
    let topic = unique("bench-e2e").replace('_', "-");
    ceilings::create_topic(env, &topic).await?;
    let reader = Reader::start(env, &topic).await?;
    let result = measure_with(env, settings, alone, &topic, &reader).await;
    reader.stop(env).await;
    result
}

async fn measure_with(
    env: &Env,
    settings: &Settings,
    alone: &IngressFigures,
    topic: &str,
    reader: &Reader,
) -> anyhow::Result<E2eFigures> {
    let ingress = Arc::new(IngressUnderTest::start(env, topic).await?);
    let mut figures = E2eFigures { notify_delay_ms: reader.notify_delay_ms().await?, ..E2eFigures::default() };
    let phase = crate::ingress::phase(settings);

    // Warm up: the consumer joins its group and both processes open their connections.
    let warm = ingress.open_loop("warm", 50.0, Duration::from_millis(400)).await;
    visible_latencies(reader, &ingress, "warm", &warm).await.context("warming up")?;

    // Maximum sustainable rate.
    let concurrency = alone.best_concurrency.max(1);
    let closed = ingress.closed_loop("max", concurrency, phase / 4, phase / 2).await?;
    figures.ingress_closed_per_sec = closed.per_sec;
    // Closed-loop indexes are handed out in order; failed ones leave gaps, so collect what
    // arrived rather than expecting `0..accepted`.
    let prefix = format!("{}-max-", ingress.prefix);
    let mut times =
        arrivals(&reader.seen, &prefix, closed.accepted, Duration::from_secs(120), || reader.process.check_running())
            .await?;
    if times.len() < closed.accepted {
        bail!("only {} of {} accepted orders were visible within 120s", times.len(), closed.accepted);
    }
    figures.apply_per_sec = arrival_rate(&mut times).context("timing the consumer")?;
    figures.sustainable_per_sec = figures.ingress_closed_per_sec.min(figures.apply_per_sec);

    // Open loops, with the processes' CPU over both.
    let cpu_before = (ingress.process.stats().1, reader.process.stats().1);
    let open_50 = ingress.open_loop("l50", figures.sustainable_per_sec * 0.5, phase).await;
    figures.at_50 = visible_latencies(reader, &ingress, "l50", &open_50).await?;
    let open_80 = ingress.open_loop("l80", figures.sustainable_per_sec * 0.8, phase).await;
    figures.at_80 = visible_latencies(reader, &ingress, "l80", &open_80).await?;
    let events = (open_50.accepted.len() + open_80.accepted.len()).max(1) as f64;
    let (ingress_rss, ingress_cpu) = ingress.process.stats();
    let (fulfillment_rss, fulfillment_cpu) = reader.process.stats();
    figures.ingress_peak_rss_mb = ingress_rss;
    figures.fulfillment_peak_rss_mb = fulfillment_rss;
    figures.ingress_cpu_ms_per_1000 = (ingress_cpu - cpu_before.0) * 1000.0 / events * 1000.0;
    figures.fulfillment_cpu_ms_per_1000 = (fulfillment_cpu - cpu_before.1) * 1000.0 / events * 1000.0;
    ingress.process.check_running()?;
    Ok(figures)
}

/// Figure names of the two open loops: rate, p50, p99, p99.9, requests not accepted.
const LOAD_NAMES: [[&str; 5]; 2] = [
    ["e2e50_rate", "e2e50_p50", "e2e50_p99", "e2e50_p999", "e2e50_failed"],
    ["e2e80_rate", "e2e80_p50", "e2e80_p99", "e2e80_p999", "e2e80_failed"],
];

impl Figures {
    pub fn push_e2e(&mut self, e: &E2eFigures) {
        self.push("e2e_ingress_closed", e.ingress_closed_per_sec);
        self.push("e2e_apply", e.apply_per_sec);
        self.push("e2e_sustainable", e.sustainable_per_sec);
        self.latencies.entry("e2e_50").or_default().extend(&e.at_50.latencies_us);
        self.latencies.entry("e2e_80").or_default().extend(&e.at_80.latencies_us);
        for (names, at) in [(LOAD_NAMES[0], &e.at_50), (LOAD_NAMES[1], &e.at_80)] {
            let (p50, p99, p999) = percentiles_ms(&mut at.latencies_us.clone());
            for (name, value) in names.into_iter().zip([at.rate, p50, p99, p999, at.failed as f64]) {
                self.push(name, value);
            }
        }
        self.push("e2e_notify_delay", e.notify_delay_ms);
        self.push("ingress_rss", e.ingress_peak_rss_mb);
        self.push("ingress_cpu", e.ingress_cpu_ms_per_1000);
        self.push("e2e_fulfillment_rss", e.fulfillment_peak_rss_mb);
        self.push("e2e_fulfillment_cpu", e.fulfillment_cpu_ms_per_1000);
    }
}

pub fn render(md: &mut String, f: &Figures) {
    let none = "| | | ";
    row(md, f, "ingress requests/s, closed loop, with fulfillment running", "e2e_ingress_closed", none);
    row(md, f, "fulfillment: rate those orders became visible (events/s)", "e2e_apply", none);
    row(md, f, "maximum sustainable rate = min of the two above (events/s)", "e2e_sustainable", none);
    for (load, [rate, p50, p99, p999, failed]) in [(50, LOAD_NAMES[0]), (80, LOAD_NAMES[1])] {
        row(md, f, &format!("end to end, open loop at {load}% of that (orders/s offered)"), rate, none);
        let label = format!("end-to-end latency at {load}%: scheduled send → row visible");
        let target = if load == 50 { format!("| | ≤ 5 ms | {}", mark(f.median(p50) <= 5.0)) } else { none.into() };
        row(md, f, &format!("{label}, p50 (ms)"), p50, &target);
        let target = if load == 50 { format!("| | ≤ 20 ms | {}", mark(f.median(p99) <= 20.0)) } else { none.into() };
        row(md, f, &format!("{label}, p99 (ms)"), p99, &target);
        row(md, f, &format!("{label}, p99.9 (ms)"), p999, none);
        row(md, f, &format!("end to end: requests not accepted at {load}%"), failed, "| | 0 | ");
    }
    row(md, f, "method: `pg_notify` delay to the harness's listener, p50 (ms)", "e2e_notify_delay", none);
    row(md, f, "ingress peak RSS under that load (MB)", "ingress_rss", none);
    row(md, f, "ingress CPU per 1000 orders in the open loops (ms)", "ingress_cpu", none);
    row(md, f, "fulfillment peak RSS under that load (MB)", "e2e_fulfillment_rss", none);
    row(md, f, "fulfillment CPU per 1000 orders in the open loops (ms)", "e2e_fulfillment_cpu", none);
}
