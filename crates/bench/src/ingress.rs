//! The ingress's own figures, taken from the real `ingress` binary (spawned next to the
//! harness, on a free port, publishing to a fresh topic) with a real HTTP client that reuses
//! its connections:
//!
//! - **maximum rate**: a closed loop (every worker sends its next request when the last one is
//!   answered) at [`CONCURRENCY`] requests in flight; the best is compared with the same
//!   round's raw produce ceiling;
//! - **latency at half load**: an open loop at 50% of that maximum. Requests are scheduled at
//!   fixed intervals and each latency is measured from its *scheduled* send time, so a slow
//!   response delays no later measurement (no coordinated omission): if the client or the
//!   server falls behind, the waiting shows up in the percentiles.
//!
//! The building blocks (spawning a sibling binary, the two load loops, percentiles) are shared
//! with [`crate::e2e`].

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::ceilings::{self, unique};
use crate::pipeline::{KillOnDrop, proc_stats};
use crate::report::{Figures, cell, fmt_num};
use crate::{Env, Settings};

/// Requests in flight tried by the closed loop; the best rate is the maximum.
pub const CONCURRENCY: [usize; 2] = [64, 256];

/// How long each load phase runs (seconds): the open loops, and half of it for each closed loop.
pub(crate) fn phase(settings: &Settings) -> Duration {
    Duration::from_secs(settings.load_secs.max(1))
}

/// One round's ingress figures.
#[derive(Debug, Clone, Default)]
pub struct IngressFigures {
    /// Closed-loop requests/s per concurrency.
    pub closed: Vec<(usize, f64)>,
    pub max_per_sec: f64,
    pub best_concurrency: usize,
    /// The bare HTTP ceiling ([`serve_bare`]): the best closed loop against a trivial handler.
    pub bare_max_per_sec: f64,
    /// The ingress process's CPU per 1000 requests over its closed loops (ms).
    pub cpu_ms_per_1000: f64,
    /// The open loop's offered rate (50% of the maximum) and what it measured.
    pub half: OpenLoop,
}

/// What a closed loop measured.
#[derive(Debug, Clone, Copy)]
pub struct ClosedLoop {
    /// Accepted requests/s after the warm-up.
    pub per_sec: f64,
    /// All accepted requests, warm-up included (indexes `0..` of the phase, some may be missing
    /// where requests failed).
    pub accepted: usize,
    /// Requests answered otherwise than 202, or not at all.
    pub failed: usize,
}

/// What an open loop measured.
#[derive(Debug, Clone, Default)]
pub struct OpenLoop {
    pub rate: f64,
    pub sent: usize,
    /// Indexes of the requests answered 202.
    pub accepted: Vec<usize>,
    /// Requests answered otherwise (503 when shedding load) or not at all.
    pub failed: usize,
    /// Latency of each accepted request from its scheduled send time (microseconds).
    pub latencies_us: Vec<u64>,
    /// When request `i` was due: `start + i / rate`.
    pub start: Option<Instant>,
}

impl OpenLoop {
    pub fn scheduled(&self, index: usize) -> Option<Instant> {
        Some(self.start? + Duration::from_secs_f64(index as f64 / self.rate))
    }
}

/// (p50, p99, p99.9) in milliseconds of `micros` (nearest rank; NaN when empty).
pub fn percentiles_ms(micros: &mut [u64]) -> (f64, f64, f64) {
    if micros.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    micros.sort_unstable();
    let at = |p: f64| {
        let rank = ((p * micros.len() as f64).ceil() as usize).clamp(1, micros.len());
        micros[rank - 1] as f64 / 1000.0
    };
    (at(0.50), at(0.99), at(0.999))
}

/// Path of a binary built next to the harness (`target/<profile>/<name>`).
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the harness executable")?;
    let mut dir = exe.parent().context("the harness executable has no directory")?.to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} not found; build it next to the harness (`cargo build [--release] -p orderflow-ingress -p orderflow-fulfillment`, as scripts/bench does)",
            path.display()
        );
    }
    Ok(path)
}

/// A sibling binary running as a child process, its output in a log file, killed on drop.
pub struct Sibling {
    name: &'static str,
    child: KillOnDrop,
    log: PathBuf,
}

impl Sibling {
    pub fn spawn(env: &Env, name: &'static str, args: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<Sibling> {
        let path = sibling_binary(name)?;
        let log = std::env::temp_dir().join(unique(&format!("orderflow-bench-{name}"))).with_extension("log");
        let file = std::fs::File::create(&log).with_context(|| format!("Failed to create {}", log.display()))?;
        let mut command = Command::new(&path);
        command.args(["--kafka-brokers", &env.kafka.brokers]);
        for option in &env.kafka.options {
            command.arg("--kafka-option").arg(format!("{}={}", option.key, option.value));
        }
        command.args(args).envs(envs.iter().copied()).stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file);
        let child = command.spawn().with_context(|| format!("Failed to start {}", path.display()))?;
        Ok(Sibling { name, child: KillOnDrop(child), log })
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// (peak RSS in MB, CPU seconds so far).
    pub fn stats(&self) -> (f64, f64) {
        proc_stats(self.pid())
    }

    /// An error if the process has exited, with the end of its log. (`/proc` tells: an exited
    /// child stays a zombie until it is reaped on drop.)
    pub fn check_running(&self) -> anyhow::Result<()> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
        if matches!(state, None | Some('Z') | Some('X')) {
            let output = std::fs::read_to_string(&self.log).unwrap_or_default();
            let mut tail: Vec<&str> = output.lines().rev().take(20).collect();
            tail.reverse();
            bail!("{} exited during the benchmark; its last lines:\n{}", self.name, tail.join("\n"));
        }
        Ok(())
    }
}

impl Drop for Sibling {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A free local port (bound, read, released: the child binds it a moment later).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running ingress publishing orders to `topic`, and an HTTP client for it.
pub struct IngressUnderTest {
    pub process: Sibling,
    client: reqwest::Client,
    url: String,
    token: String,
    /// Order ids are `<prefix>-<phase>-<index>`: unique per run, parsed back by the e2e listener.
    pub prefix: String,
}

impl IngressUnderTest {
    pub async fn start(env: &Env, topic: &str) -> anyhow::Result<IngressUnderTest> {
        let port = free_port()?;
        let listen = format!("127.0.0.1:{port}");
        let token = uuid::Uuid::new_v4().simple().to_string();
        let tokens = format!("bench:{token}");
        let process = Sibling::spawn(
            env,
            "ingress",
            &["--listen", &listen],
            &[("INGRESS_TOKENS", &tokens), ("INGRESS_ORDERS_TOPIC", topic), ("INGRESS_INVENTORY_TOPIC", topic)],
        )?;
        IngressUnderTest::ready(process, listen, token).await
    }

    /// The bare HTTP ceiling's server ([`serve_bare`], run as `orderflow-bench bare-http`),
    /// driven by the same client and loops as the ingress.
    pub async fn start_bare(env: &Env) -> anyhow::Result<IngressUnderTest> {
        let listen = format!("127.0.0.1:{}", free_port()?);
        let process = Sibling::spawn(env, "orderflow-bench", &["bare-http", "--listen", &listen], &[])?;
        IngressUnderTest::ready(process, listen, "bare".into()).await
    }

    async fn ready(process: Sibling, listen: String, token: String) -> anyhow::Result<IngressUnderTest> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        let ready = format!("http://{listen}/readyz");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            process.check_running()?;
            if client.get(&ready).send().await.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            if Instant::now() > deadline {
                bail!("{} at {listen} was not ready within 60s", process.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let prefix = unique("bench").replace('_', "-");
        Ok(IngressUnderTest { process, client, url: format!("http://{listen}/v1/orders"), token, prefix })
    }

    pub fn order_id(&self, phase: &str, index: usize) -> String {
        format!("{}-{phase}-{index}", self.prefix)
    }

    /// POST one order; true when it was accepted (202).
    async fn post(&self, phase: &str, index: usize) -> bool {
        let body = order_body(&self.order_id(phase, index), index);
        let response = self
            .client
            .post(&self.url)
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        match response {
            Ok(response) => {
                let accepted = response.status() == reqwest::StatusCode::ACCEPTED;
                // Read the body so the connection goes back to the pool.
                let _ = response.bytes().await;
                accepted
            }
            Err(_) => false,
        }
    }

    /// Closed loop: `concurrency` workers, each sending its next request when the previous
    /// one is answered, for `warmup + duration`; accepted requests/s over `duration` (the
    /// warm-up opens the connections).
    pub async fn closed_loop(
        self: &Arc<Self>,
        phase: &str,
        concurrency: usize,
        warmup: Duration,
        duration: Duration,
    ) -> anyhow::Result<ClosedLoop> {
        let phase: Arc<str> = phase.into();
        let next = Arc::new(AtomicUsize::new(0));
        let counted = Arc::new(AtomicU64::new(0));
        let accepted_total = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let from = Instant::now() + warmup;
        let until = from + duration;
        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                let (this, phase, next, counted) = (self.clone(), phase.clone(), next.clone(), counted.clone());
                let (accepted_total, failed) = (accepted_total.clone(), failed.clone());
                tokio::spawn(async move {
                    while Instant::now() < until {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        let accepted = this.post(&phase, index).await;
                        let now = Instant::now();
                        if !accepted {
                            failed.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        accepted_total.fetch_add(1, Ordering::Relaxed);
                        if now >= from && now <= until {
                            counted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for worker in futures::future::join_all(workers).await {
            worker.context("closed-loop worker")?;
        }
        self.process.check_running()?;
        Ok(ClosedLoop {
            per_sec: counted.load(Ordering::Relaxed) as f64 / duration.as_secs_f64(),
            accepted: accepted_total.load(Ordering::Relaxed),
            failed: failed.load(Ordering::Relaxed),
        })
    }

    /// Open loop: request `i` is due at `start + i / rate`, sent then whatever happened to the
    /// earlier ones, and its latency is measured from when it was due.
    pub async fn open_loop(self: &Arc<Self>, phase: &'static str, rate: f64, duration: Duration) -> OpenLoop {
        let rate = rate.max(1.0);
        let n = ((rate * duration.as_secs_f64()).ceil() as usize).max(1);
        let start = Instant::now() + Duration::from_millis(20);
        let mut requests = Vec::with_capacity(n);
        for index in 0..n {
            let due = start + Duration::from_secs_f64(index as f64 / rate);
            if Instant::now() < due {
                tokio::time::sleep_until(due.into()).await;
            }
            let this = self.clone();
            requests.push(tokio::spawn(async move {
                let accepted = this.post(phase, index).await;
                (index, accepted, due.elapsed())
            }));
        }
        let mut result = OpenLoop { rate, sent: n, start: Some(start), ..OpenLoop::default() };
        for request in futures::future::join_all(requests).await {
            match request {
                Ok((index, true, latency)) => {
                    result.accepted.push(index);
                    result.latencies_us.push(latency.as_micros() as u64);
                }
                _ => result.failed += 1,
            }
        }
        result
    }
}

/// The bare HTTP ceiling's server: the ingress's stack (a multi-threaded tokio runtime, hyper
/// through `axum::serve`, an axum router) with a handler that reads the whole body and answers
/// 202 with a small JSON body, and nothing else: no auth, no parsing, no broker. What the
/// ingress reaches beside it is the cost of its own work per request.
pub async fn serve_bare(listen: std::net::SocketAddr) -> anyhow::Result<()> {
    use axum::routing::{get, post};
    async fn accept(body: axum::body::Bytes) -> (axum::http::StatusCode, [(&'static str, &'static str); 1], String) {
        let answer = format!("{{\"accepted\":{}}}", body.len());
        (axum::http::StatusCode::ACCEPTED, [("content-type", "application/json")], answer)
    }
    let router = axum::Router::new().route("/v1/orders", post(accept)).route("/readyz", get(|| async { "ready" }));
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    axum::serve(listener, router).await.context("serving the bare HTTP ceiling")
}

/// The JSON body of one order: 3 lines, skus spread like the ceilings' records.
pub fn order_body(order_id: &str, index: usize) -> Vec<u8> {
    let lines: Vec<serde_json::Value> = (0..3u64)
        .map(|k| {
            let spread = (index as u64 * 3 + k).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
            serde_json::json!({"sku": format!("SKU-{}", spread % ceilings::SKUS as u64), "quantity": k + 1, "unit_price_minor": 1999})
        })
        .collect();
    serde_json::json!({
        "order_id": order_id,
        "customer": {"id": "c-bench", "email": "ada@example.com", "name": "Ada Lovelace"},
        "currency": "EUR",
        "lines": lines,
        "total_minor": 6 * 1999,
        "shipping_address": {"line1": "1 Main St", "city": "Zurich", "postal_code": "8000", "country": "CH"},
        "channel": "web",
    })
    .to_string()
    .into_bytes()
}

/// Ingress alone: the bare HTTP ceiling's closed loops, the ingress's closed loops for its
/// maximum (and its CPU per request), then an open loop at half of it.
pub async fn measure(env: &Env, settings: &Settings) -> anyhow::Result<IngressFigures> {
    let phase = phase(settings);
    let mut figures = IngressFigures::default();
    {
        let bare = Arc::new(IngressUnderTest::start_bare(env).await?);
        for concurrency in CONCURRENCY {
            let closed = bare.closed_loop(&format!("c{concurrency}"), concurrency, phase / 4, phase / 2).await?;
            figures.bare_max_per_sec = figures.bare_max_per_sec.max(closed.per_sec);
        }
    }
    let topic = unique("bench-ingress").replace('_', "-");
    ceilings::create_topic(env, &topic).await?;
    let ingress = Arc::new(IngressUnderTest::start(env, &topic).await?);
    let (_, cpu_before) = ingress.process.stats();
    let mut answered = 0;
    for concurrency in CONCURRENCY {
        let closed = ingress.closed_loop(&format!("c{concurrency}"), concurrency, phase / 4, phase / 2).await?;
        if closed.failed > 0 {
            tracing::warn!(concurrency, failed = closed.failed, "ingress closed loop: requests not accepted");
        }
        answered += closed.accepted + closed.failed;
        let rate = closed.per_sec;
        figures.closed.push((concurrency, rate));
        if rate > figures.max_per_sec {
            figures.max_per_sec = rate;
            figures.best_concurrency = concurrency;
        }
    }
    let (_, cpu_after) = ingress.process.stats();
    figures.cpu_ms_per_1000 = (cpu_after - cpu_before) * 1000.0 * 1000.0 / answered.max(1) as f64;
    if figures.max_per_sec <= 0.0 {
        bail!("the ingress accepted no request in its closed loop");
    }
    figures.half = ingress.open_loop("half", figures.max_per_sec * 0.5, phase).await;
    ingress.process.check_running()?;
    Ok(figures)
}

impl Figures {
    pub fn push_ingress(&mut self, i: &IngressFigures) {
        for (concurrency, rate) in &i.closed {
            let name = match concurrency {
                64 => "ingress_closed_64",
                256 => "ingress_closed_256",
                _ => continue,
            };
            self.push(name, *rate);
        }
        self.push("ingress_max", i.max_per_sec);
        self.push("ingress_bare", i.bare_max_per_sec);
        if i.bare_max_per_sec > 0.0 {
            self.push("ingress_ratio", i.max_per_sec / i.bare_max_per_sec);
        }
        self.push("ingress_closed_cpu", i.cpu_ms_per_1000);
        self.push("ingress_half_rate", i.half.rate);
        self.latencies.entry("ingress_50").or_default().extend(&i.half.latencies_us);
        let (p50, p99, p999) = percentiles_ms(&mut i.half.latencies_us.clone());
        self.push("ingress_p50", p50);
        self.push("ingress_p99", p99);
        self.push("ingress_p999", p999);
        self.push("ingress_failed", i.half.failed as f64);
    }
}

pub(crate) fn mark(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

/// One report row: label, the figure's median (spread), then `rest` (ceiling | ratio | target | mark).
pub(crate) fn row(md: &mut String, f: &Figures, label: &str, name: &str, rest: &str) {
    let _ = writeln!(md, "| {label} | {} | {rest} |", cell(f, name));
}

/// The ingress and end-to-end rows of the report.
pub fn render(md: &mut String, f: &Figures) {
    let none = "| | | ";
    let _ = writeln!(md, "\n### Ingress and end to end\n");
    let _ = writeln!(md, "| figure | value | ceiling | ratio | target | |\n|---|---|---|---|---|---|");
    let bare = f.median("ingress_bare");
    row(
        md,
        f,
        "bare HTTP ceiling: the same server stack and client, a handler that only reads the body (requests/s)",
        "ingress_bare",
        none,
    );
    for (name, concurrency) in [("ingress_closed_64", 64), ("ingress_closed_256", 256)] {
        let rest = format!("bare HTTP = {} | {:.0}% | |", fmt_num(bare), f.median(name) / bare * 100.0);
        row(md, f, &format!("ingress requests/s, closed loop, {concurrency} in flight"), name, &rest);
    }
    let ratio = f.median("ingress_ratio");
    let rest = format!("{} | {:.0}% | ≥ 50% | {}", fmt_num(bare), ratio * 100.0, mark(ratio >= 0.5));
    row(md, f, "ingress maximum requests/s (best closed loop; ratio: median of each run's own)", "ingress_max", &rest);
    row(md, f, "ingress CPU per 1000 requests, closed loops (ms)", "ingress_closed_cpu", none);
    row(md, f, "ingress open loop at 50% of the maximum (requests/s offered)", "ingress_half_rate", none);
    let label = "ingress latency at 50% load, from scheduled send";
    row(md, f, &format!("{label}, p50 (ms)"), "ingress_p50", none);
    let rest = format!("| | ≤ 10 ms | {}", mark(f.median("ingress_p99") <= 10.0));
    row(md, f, &format!("{label}, p99 (ms)"), "ingress_p99", &rest);
    row(md, f, &format!("{label}, p99.9 (ms)"), "ingress_p999", none);
    row(md, f, "ingress: requests not accepted at 50% load", "ingress_failed", "| | 0 | ");
    crate::e2e::render(md, f);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut micros: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        assert_eq!(percentiles_ms(&mut micros), (500.0, 990.0, 999.0));
        let mut one = vec![7000];
        assert_eq!(percentiles_ms(&mut one), (7.0, 7.0, 7.0));
        assert!(percentiles_ms(&mut []).0.is_nan());
    }

    #[test]
    fn order_bodies_name_their_order_and_three_lines() {
        let body: serde_json::Value = serde_json::from_slice(&order_body("bench-x-a-1", 1)).unwrap();
        assert_eq!(body["order_id"], "bench-x-a-1");
        assert_eq!(body["lines"].as_array().unwrap().len(), 3);
    }
}
