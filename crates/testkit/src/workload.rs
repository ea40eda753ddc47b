//! A Jepsen-style client workload against the real `ingress`: `clients` tasks post orders and
//! stock changes at a steady rate, each request with its own `Idempotency-Key`, and retry it
//! with the same key (and the same body) the way a checkout service would: on a connection
//! error, a timeout, any 5xx, 409 (the key is in flight) and 429 (over the client's rate
//! limit), honouring `Retry-After` and backing off between attempts, until the request's
//! deadline passes.
//!
//! The [`History`] records what each client was finally told, per request:
//! - **acknowledged**: a 202 (a replayed 202 for a key seen before counts the same);
//! - **rejected**: any other 4xx (the event must then never appear);
//! - **unknown**: the deadline passed without a definite answer (may appear, at most once).
//!
//! It also keeps every status seen (so a test can assert "never a 500"), whether each 503
//! carried `Retry-After`, and each request's latency. The event ids a request publishes are
//! known in advance (`idempotent_event_id`, scoped by the client's name), so the checker
//! ([`crate::checker`]) can tell an unknown request that was applied from one that was not.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use orderflow_events::idempotent_event_id;
use uuid::Uuid;

use crate::events::order_request;

/// What the workload sends, how fast, and for how long a request is retried.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// `http://host:port` of the ingress.
    pub ingress_url: String,
    pub token: String,
    /// The client name the token stands for (the ingress scopes idempotency keys by it).
    pub client: String,
    /// Prefix of order ids, skus and keys, unique per run.
    pub run_id: String,
    /// Concurrent client tasks.
    pub clients: usize,
    pub orders: usize,
    pub stock_changes: usize,
    /// Distinct skus the orders and stock changes use.
    pub skus: usize,
    /// Requests started per second, all clients together.
    pub rate_per_sec: f64,
    /// How long one request is retried before its outcome is unknown.
    pub request_deadline: Duration,
}

impl WorkloadConfig {
    /// A workload against `ingress_url` with the pipeline's token: `orders` orders and half as
    /// many stock changes over 8 skus, from 8 clients at 40 requests per second, each retried
    /// for up to 60 s.
    pub fn new(ingress_url: &str, orders: usize) -> WorkloadConfig {
        WorkloadConfig {
            ingress_url: ingress_url.to_owned(),
            token: crate::pipeline::TOKEN.to_owned(),
            client: crate::pipeline::CLIENT.to_owned(),
            run_id: crate::unique_name("w"),
            clients: 8,
            orders,
            stock_changes: orders / 2,
            skus: 8,
            rate_per_sec: 40.0,
            request_deadline: Duration::from_secs(60),
        }
    }
}

/// One request the workload makes: what it carries, and the ids of the events it publishes.
#[derive(Debug, Clone)]
pub enum Request {
    /// `POST /v1/orders`: `(sku, quantity)` lines at 250 minor units each.
    Order { order_id: String, lines: Vec<(String, u32)>, total_minor: i64 },
    /// `POST /v1/inventory/changes` with one change of `delta` for `sku` in warehouse `w1`.
    Stock { sku: String, delta: i64, reason: String },
}

/// How a request ended, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Acknowledged,
    Rejected(u16),
    Unknown,
}

/// One request and everything the client saw of it.
#[derive(Debug, Clone)]
pub struct Op {
    pub index: usize,
    pub key: String,
    pub request: Request,
    /// The ids of the events it publishes, computed from the key (what the ingress assigns).
    pub event_ids: Vec<Uuid>,
    pub outcome: Outcome,
    /// Status of every attempt; 0 for a connection error or a client-side timeout.
    pub statuses: Vec<u16>,
    /// From the first attempt to the final answer.
    pub latency: Duration,
    /// When the first attempt started, from the start of the workload.
    pub started: Duration,
}

/// Every request of a run and what its client was told.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub ops: Vec<Op>,
    /// 503 and 429 answers that had no `Retry-After` header.
    pub unavailable_without_retry_after: usize,
    pub elapsed: Duration,
}

impl History {
    pub fn count(&self, outcome: impl Fn(Outcome) -> bool) -> usize {
        self.ops.iter().filter(|op| outcome(op.outcome)).count()
    }

    pub fn acknowledged(&self) -> usize {
        self.count(|o| o == Outcome::Acknowledged)
    }

    pub fn rejected(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Rejected(_)))
    }

    pub fn unknown(&self) -> usize {
        self.count(|o| o == Outcome::Unknown)
    }

    /// How many attempts got each status (0: connection error or timeout).
    pub fn statuses(&self) -> BTreeMap<u16, usize> {
        let mut counts = BTreeMap::new();
        for status in self.ops.iter().flat_map(|op| &op.statuses) {
            *counts.entry(*status).or_default() += 1;
        }
        counts
    }

    /// The `q` quantile (0.0..=1.0) of the acknowledged requests' latencies.
    pub fn latency_quantile(&self, q: f64) -> Duration {
        let mut latencies: Vec<Duration> =
            self.ops.iter().filter(|op| op.outcome == Outcome::Acknowledged).map(|op| op.latency).collect();
        latencies.sort();
        if latencies.is_empty() {
            return Duration::ZERO;
        }
        let index = ((latencies.len() - 1) as f64 * q).round() as usize;
        latencies[index]
    }

    /// One line: requests, outcomes, statuses and latencies.
    /// How long after `since` (from the start of the workload) the first request that
    /// started before it and ended after it was acknowledged: how long the clients waited for
    /// the system to come back once a fault was over.
    pub fn first_ack_after(&self, since: Duration) -> Option<Duration> {
        self.ops
            .iter()
            .filter(|op| op.outcome == Outcome::Acknowledged && op.started + op.latency >= since)
            .map(|op| op.started + op.latency - since)
            .min()
    }

    pub fn summary(&self) -> String {
        format!(
            "{} requests in {:.1?}: {} acknowledged, {} rejected, {} unknown; statuses {:?}; latency p50 {:.0?} p99 {:.0?} max {:.0?}",
            self.ops.len(),
            self.elapsed,
            self.acknowledged(),
            self.rejected(),
            self.unknown(),
            self.statuses(),
            self.latency_quantile(0.5),
            self.latency_quantile(0.99),
            self.latency_quantile(1.0),
        )
    }
}

/// Requests finished so far, readable while the workload runs (to time a fault).
#[derive(Debug, Default)]
pub struct Progress {
    pub finished: AtomicUsize,
    pub acknowledged: AtomicUsize,
}

impl Progress {
    pub fn acknowledged(&self) -> usize {
        self.acknowledged.load(Ordering::Relaxed)
    }

    pub fn finished(&self) -> usize {
        self.finished.load(Ordering::Relaxed)
    }
}

/// A running workload: watch its [`Progress`], then [`RunningWorkload::finish`] for the history.
pub struct RunningWorkload {
    pub progress: Arc<Progress>,
    pub total: usize,
    /// When the workload started: [`Op::started`] counts from here.
    pub began: Instant,
    handle: tokio::task::JoinHandle<History>,
}

impl RunningWorkload {
    /// Wait until every request has its outcome.
    pub async fn finish(self) -> History {
        self.handle.await.expect("the workload task panicked")
    }
}

/// The requests of a run, in the order they are sent: orders and stock changes interleaved.
pub fn plan(config: &WorkloadConfig) -> Vec<Op> {
    let total = config.orders + config.stock_changes;
    let mut ops = Vec::with_capacity(total);
    let (mut orders, mut changes) = (0, 0);
    for index in 0..total {
        // Spread the stock changes evenly among the orders.
        let is_order = changes >= config.stock_changes
            || (orders < config.orders && orders * config.stock_changes.max(1) <= changes * config.orders);
        let key = format!("{}-{index}", config.run_id);
        let mix = splitmix(index as u64);
        let sku = |n: u64| format!("{}-sku-{}", config.run_id, n % config.skus.max(1) as u64);
        let (request, route) = if is_order {
            orders += 1;
            let line_count = 1 + (mix % 2) as usize;
            let lines: Vec<(String, u32)> =
                (0..line_count).map(|l| (sku((mix >> 8) + l as u64), 1 + ((mix >> (16 + l)) % 3) as u32)).collect();
            let total_minor = lines.iter().map(|(_, q)| i64::from(*q) * 250).sum();
            (Request::Order { order_id: format!("{}-o{index}", config.run_id), lines, total_minor }, "orders")
        } else {
            changes += 1;
            let delta = 1 + (mix >> 8) as i64 % 20;
            let (delta, reason) = if mix.is_multiple_of(4) { (-delta, "adjusted") } else { (delta, "received") };
            (Request::Stock { sku: sku(mix >> 24), delta, reason: reason.to_owned() }, "inventory")
        };
        let event_ids = vec![idempotent_event_id(&format!("{}:{route}", config.client), &key, 0)];
        ops.push(Op {
            index,
            key,
            request,
            event_ids,
            outcome: Outcome::Unknown,
            statuses: Vec::new(),
            latency: Duration::ZERO,
            started: Duration::ZERO,
        });
    }
    ops
}

/// Start the workload in the background.
pub fn start(config: WorkloadConfig) -> RunningWorkload {
    let ops = plan(&config);
    let total = ops.len();
    let progress = Arc::new(Progress::default());
    let began = Instant::now();
    let handle = tokio::spawn(run(config, ops, progress.clone(), began));
    RunningWorkload { progress, total, began, handle }
}

async fn run(config: WorkloadConfig, ops: Vec<Op>, progress: Arc<Progress>, began: Instant) -> History {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .expect("http client");
    let next = Arc::new(AtomicUsize::new(0));
    let ops = Arc::new(ops);
    let config = Arc::new(config);
    let missing_retry_after = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..config.clients.max(1) {
        let (http, next, ops, config, progress, missing) =
            (http.clone(), next.clone(), ops.clone(), config.clone(), progress.clone(), missing_retry_after.clone());
        clients.push(tokio::spawn(async move {
            let mut done = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(op) = ops.get(index) else { break };
                // Open-loop pacing: request i starts no earlier than i / rate.
                let due = began + Duration::from_secs_f64(index as f64 / config.rate_per_sec);
                tokio::time::sleep_until(due.into()).await;
                let op = send(&http, &config, op.clone(), began, &missing).await;
                progress.finished.fetch_add(1, Ordering::Relaxed);
                if op.outcome == Outcome::Acknowledged {
                    progress.acknowledged.fetch_add(1, Ordering::Relaxed);
                }
                done.push(op);
            }
            done
        }));
    }
    let mut finished = Vec::new();
    for client in clients {
        finished.extend(client.await.expect("a workload client panicked"));
    }
    finished.sort_by_key(|op| op.index);
    History {
        ops: finished,
        unavailable_without_retry_after: missing_retry_after.load(Ordering::Relaxed),
        elapsed: began.elapsed(),
    }
}

/// Send one request until it is acknowledged, rejected, or its deadline passes.
async fn send(
    http: &reqwest::Client,
    config: &WorkloadConfig,
    mut op: Op,
    began: Instant,
    missing: &AtomicUsize,
) -> Op {
    let (path, body) = match &op.request {
        Request::Order { order_id, lines, .. } => {
            let lines: Vec<(&str, u32)> = lines.iter().map(|(s, q)| (s.as_str(), *q)).collect();
            ("/v1/orders", order_request(order_id, &lines))
        }
        Request::Stock { sku, delta, reason } => (
            "/v1/inventory/changes",
            serde_json::json!({"changes": [{"sku": sku, "warehouse": "w1", "delta": delta, "reason": reason}]}),
        ),
    };
    let body = serde_json::to_vec(&body).expect("request body");
    let started = Instant::now();
    op.started = started - began;
    let deadline = started + config.request_deadline;
    let mut backoff = Duration::from_millis(100);
    loop {
        let response = http
            .post(format!("{}{path}", config.ingress_url))
            .bearer_auth(&config.token)
            .header("content-type", "application/json")
            .header("idempotency-key", &op.key)
            .body(body.clone())
            .send()
            .await;
        let (status, retry_after) = match response {
            Ok(response) => {
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs);
                (response.status().as_u16(), retry_after)
            }
            Err(_) => (0, None),
        };
        op.statuses.push(status);
        match status {
            202 => {
                op.outcome = Outcome::Acknowledged;
                break;
            }
            400..=499 if status != 409 && status != 429 => {
                op.outcome = Outcome::Rejected(status);
                break;
            }
            _ => {}
        }
        if matches!(status, 503 | 429) && retry_after.is_none() {
            missing.fetch_add(1, Ordering::Relaxed);
        }
        // Retry: after Retry-After when given (at most a few seconds), else exponential backoff.
        let wait = retry_after.map_or(backoff, |r| r.min(Duration::from_secs(5)));
        backoff = (backoff * 2).min(Duration::from_secs(2));
        if Instant::now() + wait >= deadline {
            op.outcome = Outcome::Unknown;
            break;
        }
        tokio::time::sleep(wait).await;
    }
    op.latency = started.elapsed();
    op
}

/// A well-mixed 64-bit value from `n` (SplitMix64), so runs are reproducible without a seed.
fn splitmix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_interleaves_orders_and_stock_changes_with_one_key_each() {
        let config = WorkloadConfig::new("http://x", 10);
        let ops = plan(&config);
        assert_eq!(ops.len(), 15);
        let orders = ops.iter().filter(|op| matches!(op.request, Request::Order { .. })).count();
        assert_eq!(orders, 10);
        let keys: std::collections::HashSet<&str> = ops.iter().map(|op| op.key.as_str()).collect();
        assert_eq!(keys.len(), 15);
        // No long run of one kind: a change within every three requests.
        assert!(ops.windows(3).all(|w| w.iter().any(|op| matches!(op.request, Request::Stock { .. }))));
    }
}
