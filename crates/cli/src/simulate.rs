//! `orderflow simulate`: a realistic sample load sent THROUGH THE INGRESS HTTP API, for demos
//! and end-to-end tests.
//!
//! Phases, each with at most `--concurrency` requests in flight: restocks (reason `received`,
//! in batches) → orders → shipments (reason `shipped`, with the order id, for the first
//! `--ship-fraction` of the accepted orders; each line shipped from the warehouse that has
//! the most stock of its sku). Every request carries an `Idempotency-Key`; `--retries` of them are
//! deliberately sent a second time with the same key (as a client would after a lost answer),
//! and 503s are retried after `Retry-After`. Only 202s count toward the expected totals,
//! which `--expect-file` writes as JSON so a test can wait for the consumers to match and
//! `orderflow verify` can compare the read stores with them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Base URL of the ingress.
    #[arg(long, env = "INGRESS_URL", default_value = "http://127.0.0.1:8080")]
    pub ingress_url: String,
    /// Bearer token for the ingress.
    #[arg(long, env = "INGRESS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Orders to place.
    #[arg(long, default_value_t = 100)]
    pub orders: usize,
    /// Distinct skus.
    #[arg(long, default_value_t = 20)]
    pub skus: usize,
    /// Distinct warehouses.
    #[arg(long, default_value_t = 3)]
    pub warehouses: usize,
    /// Restock changes (reason `received`).
    #[arg(long, default_value_t = 60)]
    pub restocks: usize,
    /// Fraction of accepted orders that get shipped (0..=1).
    #[arg(long, default_value_t = 0.5)]
    pub ship_fraction: f64,
    /// Requests deliberately sent twice with the same Idempotency-Key.
    #[arg(long, default_value_t = 10)]
    pub retries: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Stock changes per `POST /v1/inventory/changes`.
    #[arg(long, default_value_t = 20)]
    pub batch: usize,
    /// Prefix of order ids and skus (default: random), so runs do not collide.
    #[arg(long)]
    pub run_id: Option<String>,
    /// Seed of the random choices (default: random).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Write the expected totals (what consumers should show) to this JSON file.
    #[arg(long)]
    pub expect_file: Option<PathBuf>,
}

/// What was sent and what came back.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub requests: usize,
    pub accepted: usize,
    /// Deliberate same-key resends.
    pub retried: usize,
    /// Resends after a 503 / network error.
    pub backoff_retries: usize,
    pub by_status: BTreeMap<String, usize>,
    pub failed: usize,
}

/// Totals the pipeline should reach once every consumer caught up (only accepted requests).
/// This is the `--expect-file` JSON that `orderflow verify` reads.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Expected {
    pub run_id: String,
    /// Before the first request was sent: no order of the run was placed earlier (the
    /// ingress stamps `placed_at` when it receives the order).
    pub started_at: DateTime<Utc>,
    /// After the last answer came back: no order of the run was placed later.
    pub finished_at: DateTime<Utc>,
    /// Distinct event ids accepted (retries reuse ids).
    pub events: usize,
    pub orders: usize,
    /// Accepted orders per currency.
    pub orders_by_currency: BTreeMap<String, usize>,
    pub shipped_orders: BTreeSet<String>,
    pub pending_orders: BTreeSet<String>,
    /// Sum of the accepted orders' totals per currency, in minor units.
    pub revenue_minor: BTreeMap<String, i64>,
    pub skus: BTreeMap<String, SkuTotals>,
    /// Accepted orders per customer (customer ids carry the run's id). Absent in files of
    /// earlier versions.
    #[serde(default)]
    pub customers: BTreeMap<String, BTreeSet<String>>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuTotals {
    pub on_hand: i64,
    pub warehouses: BTreeMap<String, i64>,
    /// Ordered, not yet shipped.
    pub reserved: i64,
    pub available: i64,
    pub units_ordered: i64,
}

/// Every sample order is in this currency.
const CURRENCY: &str = "EUR";

struct Request {
    path: &'static str,
    body: Value,
    key: String,
    /// Send it a second time with the same key.
    resend: bool,
}

struct Outcome {
    accepted: bool,
    event_ids: Vec<String>,
}

pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let (report, expected) = simulate(&args).await?;
    eprintln!(
        "sent {} request(s) in {:.1?}: {} accepted, {} deliberately retried, {} retried after 503/errors, {} failed",
        report.requests,
        started.elapsed(),
        report.accepted,
        report.retried,
        report.backoff_retries,
        report.failed
    );
    for (status, n) in &report.by_status {
        eprintln!("  {status}: {n}");
    }
    println!(
        "{}",
        serde_json::to_string(&json!({"report": report, "events": expected.events, "orders": expected.orders}))?
    );
    if let Some(path) = &args.expect_file {
        eprintln!("expected totals written to {}", path.display());
    }
    if report.failed > 0 {
        bail!("{} request(s) were not accepted", report.failed);
    }
    Ok(())
}

/// Run the simulation and return what happened and what consumers should show.
pub async fn simulate(args: &SimulateArgs) -> anyhow::Result<(Report, Expected)> {
    if args.skus == 0 || args.warehouses == 0 || args.concurrency == 0 || args.batch == 0 {
        bail!("--skus, --warehouses, --concurrency and --batch must be at least 1");
    }
    if !(0.0..=1.0).contains(&args.ship_fraction) {
        bail!("--ship-fraction must be between 0 and 1");
    }
    let mut rng = StdRng::seed_from_u64(args.seed.unwrap_or_else(rand::random));
    let run_id = args.run_id.clone().unwrap_or_else(|| format!("sim{:06x}", rng.random_range(0..0xff_ffff)));
    let client = Arc::new(Client::new(args)?);
    let skus: Vec<String> = (0..args.skus).map(|i| format!("{run_id}-SKU-{i:03}")).collect();
    let warehouses: Vec<String> = (0..args.warehouses).map(|i| format!("wh-{i}")).collect();
    let mut expected = Expected { run_id: run_id.clone(), started_at: Utc::now(), ..Expected::default() };
    let mut report = Report::default();
    let mut retries_left = args.retries;
    let mut resend = |rng: &mut StdRng, remaining: usize| {
        // Spread the deliberate retries over all requests.
        let take = retries_left > 0 && rng.random_range(0..remaining.max(1)) < retries_left;
        if take {
            retries_left -= 1;
        }
        take
    };
    let total_requests = args.restocks.div_ceil(args.batch) + args.orders;
    let mut sent = 0;

    // Restocks.
    let restocks: Vec<(String, String, i64)> = (0..args.restocks)
        .map(|_| {
            (
                skus[rng.random_range(0..skus.len())].clone(),
                warehouses[rng.random_range(0..warehouses.len())].clone(),
                rng.random_range(10..=100),
            )
        })
        .collect();
    let mut requests = Vec::new();
    for (i, batch) in restocks.chunks(args.batch).enumerate() {
        let changes: Vec<Value> = batch
            .iter()
            .map(|(sku, wh, delta)| json!({"sku": sku, "warehouse": wh, "delta": delta, "reason": "received"}))
            .collect();
        requests.push(Request {
            path: "/v1/inventory/changes",
            body: json!({"changes": changes}),
            key: format!("{run_id}-restock-{i}"),
            resend: resend(&mut rng, total_requests - sent),
        });
        sent += 1;
    }
    let outcomes = client.send_all(requests, &mut report).await;
    for (batch, outcome) in restocks.chunks(args.batch).zip(&outcomes) {
        if outcome.accepted {
            for (sku, wh, delta) in batch {
                add_stock(&mut expected, sku, wh, *delta);
            }
        }
        expected.events += outcome.event_ids.len();
    }

    // Orders.
    let mut orders = Vec::new();
    for i in 0..args.orders {
        let order_id = format!("{run_id}-ord-{i:05}");
        // About three orders per customer, so histories have more than one.
        let customer = format!("{run_id}-cust-{}", rng.random_range(0..args.orders.div_ceil(3).max(1)));
        let mut chosen = BTreeSet::new();
        let lines: Vec<(String, i64, i64)> = (0..rng.random_range(1..=3))
            .filter_map(|_| {
                let sku = skus[rng.random_range(0..skus.len())].clone();
                chosen.insert(sku.clone()).then(|| (sku, rng.random_range(1..=3), rng.random_range(100..=10_000)))
            })
            .collect();
        orders.push((order_id, customer, lines));
    }
    let requests = orders
        .iter()
        .map(|(order_id, customer, lines)| {
            let total: i64 = lines.iter().map(|(_, q, p)| q * p).sum();
            let body = json!({
                "order_id": order_id,
                "customer": {"id": customer, "email": format!("buyer{}@example.com", rng.random_range(0..1000)), "name": "Sam Buyer"},
                "currency": CURRENCY,
                "lines": lines.iter().map(|(sku, q, p)| json!({"sku": sku, "quantity": q, "unit_price_minor": p})).collect::<Vec<_>>(),
                "total_minor": total,
                "shipping_address": {"line1": "1 Sample Street", "city": "Zurich", "postal_code": "8000", "country": "CH"},
                "channel": "web",
            });
            let request = Request { path: "/v1/orders", body, key: format!("{order_id}-placed"), resend: resend(&mut rng, total_requests - sent) };
            sent += 1;
            request
        })
        .collect();
    let outcomes = client.send_all(requests, &mut report).await;
    let mut accepted_orders = Vec::new();
    for ((order_id, customer, lines), outcome) in orders.iter().zip(&outcomes) {
        expected.events += outcome.event_ids.len();
        if outcome.accepted {
            expected.customers.entry(customer.clone()).or_default().insert(order_id.clone());
            expected.orders += 1;
            *expected.orders_by_currency.entry(CURRENCY.to_owned()).or_default() += 1;
            *expected.revenue_minor.entry(CURRENCY.to_owned()).or_default() +=
                lines.iter().map(|(_, q, p)| q * p).sum::<i64>();
            for (sku, q, _) in lines {
                let totals = expected.skus.entry(sku.clone()).or_default();
                totals.units_ordered += q;
                totals.reserved += q;
            }
            accepted_orders.push((order_id, lines));
        }
    }

    // Shipments of the first ship_fraction of accepted orders, one request per order.
    let to_ship = (accepted_orders.len() as f64 * args.ship_fraction).round() as usize;
    let mut shipments = Vec::new();
    for (order_id, lines) in accepted_orders.iter().take(to_ship) {
        let changes: Vec<(String, String, i64)> = lines
            .iter()
            .map(|(sku, q, _)| {
                let wh = expected
                    .skus
                    .get(sku)
                    .and_then(|t| t.warehouses.iter().max_by_key(|(_, n)| **n).map(|(w, _)| w.clone()));
                (sku.clone(), wh.unwrap_or_else(|| warehouses[0].clone()), -q)
            })
            .collect();
        shipments.push(((*order_id).clone(), changes));
    }
    let requests = shipments
        .iter()
        .map(|(order_id, changes)| Request {
            path: "/v1/inventory/changes",
            body: json!({"changes": changes.iter().map(|(sku, wh, d)| json!({"sku": sku, "warehouse": wh, "delta": d, "reason": "shipped", "order_id": order_id})).collect::<Vec<_>>()}),
            key: format!("{order_id}-shipped"),
            resend: false,
        })
        .collect();
    let outcomes = client.send_all(requests, &mut report).await;
    let mut shipped = BTreeSet::new();
    for ((order_id, changes), outcome) in shipments.iter().zip(&outcomes) {
        expected.events += outcome.event_ids.len();
        if outcome.accepted {
            for (sku, wh, delta) in changes {
                add_stock(&mut expected, sku, wh, *delta);
                expected.skus.entry(sku.clone()).or_default().reserved += delta;
            }
            shipped.insert(order_id.clone());
        }
    }
    for (order_id, _) in &accepted_orders {
        if !shipped.contains(*order_id) {
            expected.pending_orders.insert((*order_id).clone());
        }
    }
    expected.shipped_orders = shipped;
    expected.finished_at = Utc::now();
    for totals in expected.skus.values_mut() {
        totals.available = totals.on_hand - totals.reserved;
    }
    if let Some(path) = &args.expect_file {
        std::fs::write(path, serde_json::to_vec_pretty(&expected)?)
            .with_context(|| format!("Failed to write {}", path.display()))?;
    }
    Ok((report, expected))
}

fn add_stock(expected: &mut Expected, sku: &str, warehouse: &str, delta: i64) {
    let totals = expected.skus.entry(sku.to_owned()).or_default();
    totals.on_hand += delta;
    *totals.warehouses.entry(warehouse.to_owned()).or_default() += delta;
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    concurrency: usize,
}

/// Attempts per request when the ingress sheds load (503) or the connection fails.
const ATTEMPTS: usize = 8;

impl Client {
    fn new(args: &SimulateArgs) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .context("Failed to build the HTTP client")?;
        Ok(Client {
            http,
            base: args.ingress_url.trim_end_matches('/').to_owned(),
            token: args.token.clone(),
            concurrency: args.concurrency,
        })
    }

    /// Send every request, at most `concurrency` at once; outcomes in the order given.
    async fn send_all(self: &Arc<Self>, requests: Vec<Request>, report: &mut Report) -> Vec<Outcome> {
        let results: Vec<(Outcome, Vec<Sent>)> = futures::stream::iter(requests)
            .map(|request| {
                let client = self.clone();
                async move { client.send(request).await }
            })
            .buffered(self.concurrency)
            .collect()
            .await;
        results
            .into_iter()
            .map(|(outcome, attempts)| {
                for sent in attempts {
                    report.requests += 1;
                    *report.by_status.entry(sent.status).or_default() += 1;
                    report.retried += usize::from(sent.deliberate_retry);
                    report.backoff_retries += usize::from(sent.backoff_retry);
                }
                report.accepted += usize::from(outcome.accepted);
                report.failed += usize::from(!outcome.accepted);
                outcome
            })
            .collect()
    }

    async fn send(&self, request: Request) -> (Outcome, Vec<Sent>) {
        let mut sent = Vec::new();
        let mut outcome = self.send_until_answered(&request, false, &mut sent).await;
        if request.resend && outcome.accepted {
            let again = self.send_until_answered(&request, true, &mut sent).await;
            if again.accepted && again.event_ids != outcome.event_ids {
                tracing::error!(key = request.key, "a retry with the same Idempotency-Key got different event ids");
                outcome.accepted = false;
            }
        }
        (outcome, sent)
    }

    async fn send_until_answered(&self, request: &Request, deliberate: bool, sent: &mut Vec<Sent>) -> Outcome {
        for attempt in 0..ATTEMPTS {
            let mut builder = self
                .http
                .post(format!("{}{}", self.base, request.path))
                .header("Idempotency-Key", &request.key)
                .json(&request.body);
            if let Some(token) = &self.token {
                builder = builder.bearer_auth(token);
            }
            let backoff_retry = attempt > 0;
            let response = match builder.send().await {
                Ok(response) => response,
                Err(error) => {
                    sent.push(Sent { status: "error".to_owned(), deliberate_retry: deliberate, backoff_retry });
                    tracing::warn!(error = %error, path = request.path, "request failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 << attempt.min(5))).await;
                    continue;
                }
            };
            let status = response.status();
            sent.push(Sent { status: status.as_u16().to_string(), deliberate_retry: deliberate, backoff_retry });
            if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                let wait = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1)
                    .min(30);
                tokio::time::sleep(Duration::from_secs(wait)).await;
                continue;
            }
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if status != reqwest::StatusCode::ACCEPTED {
                tracing::warn!(status = status.as_u16(), path = request.path, %body, "request rejected");
                return Outcome { accepted: false, event_ids: Vec::new() };
            }
            let event_ids = match body.get("events").and_then(Value::as_array) {
                Some(events) => events.iter().filter_map(|e| e["event_id"].as_str().map(str::to_owned)).collect(),
                None => body["event_id"].as_str().map(str::to_owned).into_iter().collect(),
            };
            return Outcome { accepted: true, event_ids };
        }
        Outcome { accepted: false, event_ids: Vec::new() }
    }
}

struct Sent {
    status: String,
    deliberate_retry: bool,
    backoff_retry: bool,
}
