//! The real consumers under load: every registered consumer (`crates/registry`) runs as its
//! own release binary (the sibling of the harness's executable) over the events it reads,
//! into a fresh schema, with a fresh group. Per consumer: apply rate (1% to 100% of its
//! stored offsets), peak RSS and CPU per 1000 events.
//!
//! The orders are the round's ceiling topic (distinct orders, 3 lines, skus spread over
//! [`ceilings::SKUS`]); the stock changes fill one topic per harness run ([`Workload`]): a
//! realistic mix (mostly shipments of those orders' lines, then receipts, adjustments,
//! returns and damage) over the same skus and [`WAREHOUSES`] warehouses. The email consumer
//! delivers to an SMTP sink inside the harness (accepts everything, stores nothing), so its
//! sender does its real work beside the apply path without a mail server's speed in the figure.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use chrono::{TimeDelta, Utc};
use orderflow_events::{
    Event, INVENTORY_TOPIC, InventoryChanged, OrderId, Reason, Sku, StockDelta, WarehouseId, samples,
};
use orderflow_registry::{CONSUMERS, Spec};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use uuid::Uuid;

use crate::ceilings::{self, unique};
use crate::pipeline::run_consumer;
use crate::report::{Figures, cell, fmt_num};
use crate::{Env, Settings};

/// Warehouses the stock changes spread over.
pub const WAREHOUSES: usize = 8;

/// Whether `spec` reads the inventory topic besides the orders topic.
fn reads_inventory(spec: &Spec) -> bool {
    spec.topics.contains(&INVENTORY_TOPIC)
}

/// What `spec` reads, for the report.
fn reads(spec: &Spec) -> &'static str {
    if reads_inventory(spec) { "orders + stock changes" } else { "orders" }
}

/// Figure names of `spec`: apply rate, peak RSS, CPU per 1000 events (`<name>_apply`, ...).
pub(crate) fn figures(spec: &Spec) -> [&'static str; 3] {
    // Made once per process; the report keys figures by `&'static str`.
    static NAMES: OnceLock<Vec<(&'static str, [&'static str; 3])>> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        let leak = |name: &str, kind: &str| -> &'static str { Box::leak(format!("{name}_{kind}").into_boxed_str()) };
        CONSUMERS.iter().map(|c| (c.name, [leak(c.name, "apply"), leak(c.name, "rss"), leak(c.name, "cpu")])).collect()
    });
    names.iter().find(|(name, _)| *name == spec.name).map(|(_, f)| *f).expect("a registered consumer")
}

/// One consumer's figures in one round.
#[derive(Debug, Clone)]
pub struct Measured {
    pub binary: &'static str,
    pub events: usize,
    pub apply_per_sec: f64,
    pub peak_rss_mb: f64,
    pub cpu_ms_per_1000: f64,
}

/// The stock-change topic, filled once per harness run and read again every round.
#[derive(Debug, Clone)]
pub struct Workload {
    pub inventory_topic: String,
    pub inventory_events: usize,
}

/// How many stock changes go with `orders` orders: as many as orders (so the consumers that
/// read both see half of each).
pub fn inventory_events(orders: usize) -> usize {
    orders
}

/// `n` stock changes over the skus of [`ceilings::orders`]`(orders)`: per 20, 12 shipments of
/// an order's line (negative, naming the order), 4 receipts, 2 adjustments, a return and a
/// damage, spread over [`ceilings::SKUS`] skus and [`WAREHOUSES`] warehouses, today.
pub fn stock_changes(n: usize, orders: usize) -> anyhow::Result<Vec<InventoryChanged>> {
    let orders = ceilings::orders(orders.max(1))?;
    let base = samples::inventory_changed();
    let now = Utc::now();
    let invalid = |e: orderflow_events::Invalid| anyhow::anyhow!("{e:?}");
    (0..n)
        .map(|i| {
            let spread = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
            let mut change = base.clone();
            change.event_id = Uuid::new_v4();
            change.warehouse = WarehouseId::parse(format!("wh-{}", spread % WAREHOUSES as u64)).map_err(invalid)?;
            change.occurred_at = now - TimeDelta::milliseconds((n - i) as i64);
            change.order_id = None;
            change.sku = Sku::parse(format!("SKU-{}", spread % ceilings::SKUS as u64)).map_err(invalid)?;
            let (reason, delta) = match i % 20 {
                0..12 => {
                    // The (i / 20 * 12 + i % 20)-th shipment ships one line of an order.
                    let shipment = i / 20 * 12 + i % 20;
                    let order = &orders[shipment / 3 % orders.len()];
                    let line = &order.lines[shipment % order.lines.len()];
                    change.sku = line.sku.clone();
                    change.order_id = Some(order.order_id.clone());
                    (Reason::Shipped, -i64::from(line.quantity.get()))
                }
                12..16 => (Reason::Received, 50 + (spread % 450) as i64),
                16..18 => {
                    let sign = if spread.is_multiple_of(2) { 1 } else { -1 };
                    (Reason::Adjusted, sign * (1 + (spread % 5) as i64))
                }
                18 => {
                    change.order_id =
                        Some(OrderId::parse(format!("bench-{}", spread % orders.len() as u64)).map_err(invalid)?);
                    (Reason::Returned, 1)
                }
                _ => (Reason::Damaged, -1),
            };
            change.reason = reason;
            change.delta = StockDelta::parse(delta).map_err(invalid)?;
            Ok(change)
        })
        .collect()
}

impl Workload {
    /// Fill a fresh stock-change topic for orders of `settings.records` orders.
    pub async fn fill(env: &Env, settings: &Settings) -> anyhow::Result<Workload> {
        let inventory_topic = unique("bench-inventory").replace('_', "-");
        ceilings::create_topic(env, &inventory_topic).await?;
        let inventory_events = inventory_events(settings.records);
        let changes = stock_changes(inventory_events, settings.records)?;
        let records = ceilings::encoded(changes.into_iter().map(Event::InventoryChanged))?;
        let rate = ceilings::produce(env, &inventory_topic, &records).await?;
        tracing::info!(inventory_topic, inventory_events, rate, "stock changes filled");
        Ok(Workload { inventory_topic, inventory_events })
    }
}

/// The consumer binary `name` next to the harness's own executable (`target/<profile>/`).
fn binary(spec: &Spec) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.parent().context("the harness has no directory")?.join(spec.binary);
    anyhow::ensure!(
        path.exists(),
        "no {} next to {}: build it with the same profile (`cargo build --release --workspace --bins`; scripts/bench does)",
        spec.binary,
        exe.display(),
    );
    Ok(path)
}

/// Measure every consumer once over `orders_topic` (`settings.records` orders) and the
/// workload's stock changes.
pub async fn measure(
    env: &Env,
    settings: &Settings,
    workload: &Workload,
    orders_topic: &str,
) -> anyhow::Result<Vec<Measured>> {
    let mut measured = Vec::new();
    // The email consumer delivers here (the others ignore SMTP_URL).
    let sink = SmtpSink::start().await?;
    for spec in CONSUMERS {
        let schema = unique(&format!("bench_{}", spec.binary.replace('-', "_")));
        let mut command = Command::new(binary(spec)?);
        command
            .args(["--kafka-brokers", &env.kafka.brokers, "--database-url", &env.database_url])
            .args(["--schema", &schema, "--group", &unique(&format!("bench-{}", spec.binary))])
            .args(["--dlq-topic", &format!("{}-{}.dlq", workload.inventory_topic, spec.binary)])
            .args(["--batch-size", &settings.batch_size.to_string(), "--listen", "127.0.0.1:0"])
            .args(["--topic", orders_topic])
            .env("SMTP_URL", format!("smtp://{}", sink.addr))
            // The bench reads no read API, but a consumer does not start without its tokens.
            .env("API_TOKENS", format!("bench:{}", uuid::Uuid::new_v4().simple()));
        let mut events = settings.records;
        if reads_inventory(spec) {
            command.args(["--topic", &workload.inventory_topic]);
            events += workload.inventory_events;
        }
        let before = sink.delivered();
        let run =
            run_consumer(env, command, &schema, events).await.with_context(|| format!("measuring {}", spec.binary))?;
        if sink.delivered() > before {
            tracing::info!(delivered = sink.delivered() - before, "emails delivered to the SMTP sink during the run");
        }
        measured.push(Measured {
            binary: spec.binary,
            events,
            apply_per_sec: run.per_sec,
            peak_rss_mb: run.peak_rss_mb,
            cpu_ms_per_1000: run.cpu_seconds * 1000.0 / events as f64 * 1000.0,
        });
    }
    Ok(measured)
}

impl Figures {
    pub fn push_consumers(&mut self, measured: &[Measured]) {
        for m in measured {
            if let Some(spec) = CONSUMERS.iter().find(|s| s.binary == m.binary) {
                let [apply, rss, cpu] = figures(spec);
                self.push(apply, m.apply_per_sec);
                self.push(rss, m.peak_rss_mb);
                self.push(cpu, m.cpu_ms_per_1000);
            }
        }
    }
}

/// The per-consumer table of the report.
pub fn render(md: &mut String, settings: &Settings, f: &Figures) {
    let ceiling = f.raw_ceiling();
    let _ = writeln!(md, "\n### Consumers\n");
    let _ = writeln!(
        md,
        "Each consumer binary reads the round's {} orders and, those that read `inventory.v1`, {} stock changes (mostly shipments of those orders; {} warehouses), into a fresh schema with a fresh group; `email` delivers to an SMTP sink inside the harness. Ceiling: min(consume, upsert) = {}.\n",
        settings.records,
        inventory_events(settings.records),
        WAREHOUSES,
        fmt_num(ceiling)
    );
    let _ = writeln!(
        md,
        "| consumer | reads | apply rate (events/s) | ratio | target | | peak RSS (MB) | CPU per 1000 events (ms) |\n|---|---|---|---|---|---|---|---|"
    );
    for spec in CONSUMERS {
        let [apply, rss, cpu] = figures(spec);
        let ratio = f.median(apply) / ceiling;
        let _ = writeln!(
            md,
            "| `{}` consumer | {} | {} | {:.0}% | ≥ 80% | {} | {} | {} |",
            spec.binary,
            reads(spec),
            cell(f, apply),
            ratio * 100.0,
            if ratio >= 0.8 { "met" } else { "**missed**" },
            cell(f, rss),
            cell(f, cpu)
        );
    }
}

/// An SMTP server on a loopback port that accepts every message and keeps only a count.
struct SmtpSink {
    addr: SocketAddr,
    delivered: Arc<AtomicU64>,
    accept: tokio::task::JoinHandle<()>,
}

impl SmtpSink {
    async fn start() -> anyhow::Result<SmtpSink> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("Failed to bind the SMTP sink")?;
        let addr = listener.local_addr()?;
        let delivered = Arc::new(AtomicU64::new(0));
        let counter = delivered.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    if let Err(error) = smtp_session(stream, &counter).await {
                        tracing::debug!(%error, "SMTP sink session ended");
                    }
                });
            }
        });
        Ok(SmtpSink { addr, delivered, accept })
    }

    fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Longest line the sink reads (SMTP allows 1000 bytes; the rest of a longer line is read as
/// further lines).
const MAX_SMTP_LINE: u64 = 4096;

async fn smtp_session(stream: tokio::net::TcpStream, delivered: &AtomicU64) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    write.write_all(b"220 orderflow-bench sink\r\n").await?;
    let mut line = Vec::new();
    let mut in_data = false;
    loop {
        line.clear();
        if (&mut read).take(MAX_SMTP_LINE).read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        if in_data {
            if line == b".\r\n" || line == b".\n" {
                in_data = false;
                delivered.fetch_add(1, Ordering::Relaxed);
                write.write_all(b"250 queued\r\n").await?;
            }
            continue;
        }
        let verb = line.get(..4).map(|v| v.to_ascii_uppercase()).unwrap_or_default();
        let reply: &[u8] = match verb.as_slice() {
            b"EHLO" => b"250-orderflow-bench\r\n250 8BITMIME\r\n",
            b"DATA" => {
                in_data = true;
                b"354 end with .\r\n"
            }
            b"QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => b"250 ok\r\n",
        };
        write.write_all(reply).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stock_changes_are_valid_and_their_shipments_ship_lines_of_the_orders() {
        let orders = ceilings::orders(50).unwrap();
        let changes = stock_changes(200, 50).unwrap();
        assert_eq!(changes.len(), 200);
        for change in &changes {
            change.validate().unwrap();
            if change.reason == Reason::Shipped {
                let order_id = change.order_id.as_ref().expect("a shipment names its order");
                let order = orders.iter().find(|o| &o.order_id == order_id).expect("a known order");
                let line = order.lines.iter().find(|l| l.sku == change.sku).expect("one of its lines");
                assert_eq!(change.delta.get(), -i64::from(line.quantity.get()));
            }
        }
        let shipped = changes.iter().filter(|c| c.reason == Reason::Shipped).count();
        assert_eq!(shipped, 120, "12 in 20 are shipments");
        let warehouses: std::collections::BTreeSet<_> = changes.iter().map(|c| c.warehouse.as_str()).collect();
        assert_eq!(warehouses.len(), WAREHOUSES);
    }

    #[tokio::test]
    async fn smtp_sink_accepts_a_message_and_counts_it() {
        let sink = SmtpSink::start().await.unwrap();
        let stream = tokio::net::TcpStream::connect(sink.addr).await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        assert!(lines.next_line().await.unwrap().unwrap().starts_with("220"));
        for (command, reply) in [
            ("EHLO client\r\n", "250-"),
            ("MAIL FROM:<a@example.com>\r\n", "250"),
            ("RCPT TO:<b@example.com>\r\n", "250"),
            ("DATA\r\n", "354"),
            ("Subject: hi\r\n\r\nbody\r\n.\r\n", "250"),
            ("QUIT\r\n", "221"),
        ] {
            write.write_all(command.as_bytes()).await.unwrap();
            let line = lines.next_line().await.unwrap().unwrap();
            assert!(line.starts_with(reply), "{command:?} got {line:?}");
            if reply == "250-" {
                lines.next_line().await.unwrap().unwrap();
            }
        }
        assert_eq!(sink.delivered(), 1);
    }
}
