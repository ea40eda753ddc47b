//! `orderflow verify`: compare what the consumers' read APIs answer with the totals that
//! `orderflow simulate --expect-file` wrote, one store at a time, as a client sees them:
//!
//! - fulfillment: every accepted order has its fulfillment (`GET /v1/fulfillments/{id}`), with
//!   status `shipped` for the shipped orders and `pending` for the others;
//! - email: every accepted order has exactly one confirmation (`GET /v1/emails?order_id=`),
//!   `sent` (backorder notices beside it are not counted);
//! - analytics: orders and revenue per currency in the run's window (`GET /v1/sales`, whole
//!   hours around the run, minus a baseline recorded before the load when one is given), and
//!   units ordered per sku of the run (`GET /v1/units`);
//! - inventory-projection: on hand, reserved, available and on hand per warehouse of every sku
//!   of the run (`GET /v1/inventory/{sku}`);
//! - order-history: every accepted order is in its customer's history
//!   (`GET /v1/customers/{customer_id}/orders`);
//! - allocator: on hand per sku as expected, no warehouse allocating more than it has, no
//!   unit available while the sku has backorders (`GET /v1/stock/{sku}`), and every accepted
//!   order decided (`GET /v1/allocations/{order_id}`).
//!
//! Each consumer is read at `http://127.0.0.1:<its port>` (`orderflow consumers`) unless a
//! flag moves it. A registered consumer this command has no check for is reported as skipped.
//!
//! Order ids and skus carry the run's id, so those checks hold on a store shared with other
//! runs. Sales are totals over time, not per run: on a shared store, record them with
//! `--save-analytics-baseline` before the load and pass the file with `--analytics-baseline`.
//!
//! `--wait` polls the stores that still differ until they match or the deadline passes (the
//! email sender delivers after the consumer applied the order).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, DurationRound, NaiveTime, SecondsFormat, TimeDelta, Utc};
use futures::{StreamExt, TryStreamExt};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::simulate::Expected;

/// Widest range the analytics API accepts for daily buckets and units.
const MAX_DAILY_RANGE_DAYS: i64 = 366;
/// How far ahead a baseline reaches: runs that end within it can use it.
const BASELINE_DAYS: i64 = 31;

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  orderflow simulate --orders 200 --expect-file expected.json
  orderflow verify --expect-file expected.json --wait 60s

  # a store shared with earlier runs: record the sales before the load
  orderflow verify --save-analytics-baseline before.json
  orderflow simulate --orders 200 --expect-file expected.json
  orderflow verify --expect-file expected.json --analytics-baseline before.json --wait 60s

Exit codes: 0 every store matches, 3 a store differs or could not be read, 1 error (bad
file or flag).")]
pub struct VerifyArgs {
    /// Expected totals, as written by `orderflow simulate --expect-file`.
    #[arg(long, value_name = "FILE", required_unless_present = "save_analytics_baseline")]
    pub expect_file: Option<PathBuf>,
    /// Sales recorded with --save-analytics-baseline before the load: analytics must show
    /// these plus the run's.
    #[arg(long, value_name = "FILE")]
    pub analytics_baseline: Option<PathBuf>,
    /// Record the sales analytics shows now, from this hour on (31 days), to FILE and exit.
    /// Run it before the load, once every consumer caught up.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["expect_file", "analytics_baseline"])]
    pub save_analytics_baseline: Option<PathBuf>,
    /// Base URL of the fulfillment consumer [default: http://127.0.0.1:8081].
    #[arg(long, value_name = "URL")]
    pub fulfillment_url: Option<Url>,
    /// Base URL of the email consumer [default: http://127.0.0.1:8082].
    #[arg(long, value_name = "URL")]
    pub email_url: Option<Url>,
    /// Base URL of the analytics consumer [default: http://127.0.0.1:8083].
    #[arg(long, value_name = "URL")]
    pub analytics_url: Option<Url>,
    /// Base URL of the inventory-projection consumer [default: http://127.0.0.1:8084].
    #[arg(long, value_name = "URL")]
    pub inventory_url: Option<Url>,
    /// Base URL of any registered consumer, by name (repeatable), e.g.
    /// `--consumer-url order-history=http://127.0.0.1:18087`; default: its port on 127.0.0.1.
    #[arg(long = "consumer-url", value_name = "NAME=URL", value_parser = parse_consumer_url)]
    pub consumer_urls: Vec<(String, Url)>,
    /// Bearer token sent to the read APIs (Authorization header).
    #[arg(long, env = "ORDERFLOW_READ_TOKEN", hide_env_values = true)]
    pub read_token: Option<String>,
    /// Keep polling the stores that differ until they match or this much time passed
    /// (e.g. 60s, 2m, 500ms; 0 checks once).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub wait: Duration,
    /// Differences shown per store.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub max_differences: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
}

/// One store's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreReport {
    /// The consumer's name.
    pub store: &'static str,
    /// What was compared, e.g. `200 orders (100 shipped, 100 pending)`.
    pub checked: String,
    /// Every difference found; empty when the store matches.
    pub differences: Vec<String>,
}

impl StoreReport {
    pub fn ok(&self) -> bool {
        self.differences.is_empty()
    }
}

/// A store differs from the expected totals (or could not be read); exit code 3.
#[derive(Debug, thiserror::Error)]
#[error("{} of {total} read store(s) do not match {file}: {}", differing.len(), differing.join(", "))]
pub struct VerifyFailed {
    pub file: String,
    pub total: usize,
    pub differing: Vec<String>,
}

/// What analytics showed before the load (`--save-analytics-baseline`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalyticsBaseline {
    /// Sales are read over `[from, to)`.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub taken_at: DateTime<Utc>,
    pub sales: BTreeMap<String, Sales>,
}

/// Orders and revenue of one currency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sales {
    pub orders: i64,
    pub revenue_minor: i64,
}

pub async fn run(args: VerifyArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.save_analytics_baseline {
        let baseline = save_baseline(&args, path).await?;
        let totals: Vec<String> = baseline
            .sales
            .iter()
            .map(|(c, s)| format!("{c} {} orders, {} minor units", s.orders, s.revenue_minor))
            .collect();
        println!(
            "analytics baseline [{}, {}) written to {}: {}",
            rfc3339(baseline.from),
            rfc3339(baseline.to),
            path.display(),
            if totals.is_empty() { "no sales yet".to_owned() } else { totals.join("; ") }
        );
        return Ok(());
    }
    let reports = verify(&args).await?;
    for report in &reports {
        print!("{}", format_report(report, args.max_differences));
    }
    for name in skipped() {
        println!("{name:<20} skipped  orderflow verify has no check for this consumer");
    }
    let differing: Vec<String> = reports.iter().filter(|r| !r.ok()).map(|r| r.store.to_owned()).collect();
    if differing.is_empty() {
        return Ok(());
    }
    let file = args.expect_file.as_deref().map(|p| p.display().to_string()).unwrap_or_default();
    Err(VerifyFailed { file, total: reports.len(), differing }.into())
}

/// `<store>  ok  <checked>`, or `<store>  DIFFERS  ...` and at most `max` differences.
pub fn format_report(report: &StoreReport, max: usize) -> String {
    if report.ok() {
        return format!("{:<20} ok       {}\n", report.store, report.checked);
    }
    let mut out = format!(
        "{:<20} DIFFERS  {} difference(s); checked {}\n",
        report.store,
        report.differences.len(),
        report.checked
    );
    for difference in report.differences.iter().take(max) {
        out.push_str(&format!("    {difference}\n"));
    }
    if report.differences.len() > max {
        out.push_str(&format!("    ... and {} more\n", report.differences.len() - max));
    }
    out
}

/// Compare every store with the expected file; with `--wait`, poll the stores that differ
/// until they match or the deadline passes. Errors only for bad input (file, flags).
pub async fn verify(args: &VerifyArgs) -> anyhow::Result<Vec<StoreReport>> {
    let path = args.expect_file.as_deref().context("--expect-file is required")?;
    let expected = read_expected(path)?;
    let baseline = args.analytics_baseline.as_deref().map(read_baseline).transpose()?;
    let window = sales_window(&expected, baseline.as_ref())?;
    let checker = Checker::new(args)?;
    let deadline = Instant::now() + args.wait;
    let mut reports: Vec<Option<StoreReport>> = vec![None; STORES.len()];
    let mut interval = Duration::from_millis(200);
    let mut announced = false;
    loop {
        for (i, store) in STORES.iter().enumerate() {
            if reports[i].as_ref().is_some_and(StoreReport::ok) {
                continue;
            }
            reports[i] = Some(checker.check(*store, &expected, &window, baseline.as_ref()).await);
        }
        let differing: Vec<&StoreReport> = reports.iter().flatten().filter(|r| !r.ok()).collect();
        let now = Instant::now();
        if differing.is_empty() || now >= deadline {
            break;
        }
        if !announced {
            let names: Vec<&str> = differing.iter().map(|r| r.store).collect();
            eprintln!(
                "{} differ(s) so far; polling until every store matches or {:?} passed",
                names.join(", "),
                args.wait
            );
            announced = true;
        }
        tokio::time::sleep(interval.min(deadline - now)).await;
        interval = (interval * 2).min(Duration::from_secs(1));
    }
    Ok(reports.into_iter().flatten().collect())
}

/// Record the sales analytics shows for `[this hour, +31 days)` to `path`.
pub async fn save_baseline(args: &VerifyArgs, path: &Path) -> anyhow::Result<AnalyticsBaseline> {
    let checker = Checker::new(args)?;
    let taken_at = Utc::now();
    let from = floor_hour(taken_at);
    let to = from + TimeDelta::days(BASELINE_DAYS);
    let sales = checker.sales(from, to).await.map_err(|e| anyhow::anyhow!("recording the analytics baseline: {e}"))?;
    let baseline = AnalyticsBaseline { from, to, taken_at, sales };
    std::fs::write(path, serde_json::to_vec_pretty(&baseline)?)
        .with_context(|| format!("Failed to write {}", path.display()))?;
    Ok(baseline)
}

fn read_expected(path: &Path) -> anyhow::Result<Expected> {
    let bytes =
        std::fs::read(path).with_context(|| format!("Failed to read the expected totals {}", path.display()))?;
    let expected: Expected = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{} is not an expected-totals file of this version of `orderflow simulate --expect-file`",
            path.display()
        )
    })?;
    if expected.finished_at < expected.started_at {
        bail!("{}: finished_at is before started_at", path.display());
    }
    Ok(expected)
}

fn read_baseline(path: &Path) -> anyhow::Result<AnalyticsBaseline> {
    let bytes =
        std::fs::read(path).with_context(|| format!("Failed to read the analytics baseline {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| {
        format!("{} is not a file written by `orderflow verify --save-analytics-baseline`", path.display())
    })
}

/// The range analytics' sales are compared over.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Window {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

/// With a baseline, its range (the run must lie inside it); without, the whole hours the run
/// touched (sales are kept per hour).
fn sales_window(expected: &Expected, baseline: Option<&AnalyticsBaseline>) -> anyhow::Result<Window> {
    let window = match baseline {
        Some(b) => {
            if expected.started_at < b.taken_at || expected.finished_at >= b.to {
                bail!(
                    "the run ({} to {}) is not inside the analytics baseline (taken {}, reaching to {}): record the baseline right before the load",
                    rfc3339(expected.started_at),
                    rfc3339(expected.finished_at),
                    rfc3339(b.taken_at),
                    rfc3339(b.to)
                );
            }
            Window { from: b.from, to: b.to }
        }
        None => {
            Window { from: floor_hour(expected.started_at), to: floor_hour(expected.finished_at) + TimeDelta::hours(1) }
        }
    };
    if window.to - window.from > TimeDelta::days(MAX_DAILY_RANGE_DAYS) {
        bail!("the run lasted more than {MAX_DAILY_RANGE_DAYS} days; analytics cannot answer for such a range");
    }
    Ok(window)
}

fn floor_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::hours(1)).unwrap_or(t)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    Fulfillment,
    Email,
    Analytics,
    Inventory,
    OrderHistory,
    Allocator,
}

const STORES: [Store; 6] =
    [Store::Fulfillment, Store::Email, Store::Analytics, Store::Inventory, Store::OrderHistory, Store::Allocator];

impl Store {
    fn name(self) -> &'static str {
        match self {
            Store::Fulfillment => "fulfillment",
            Store::Email => "email",
            Store::Analytics => "analytics",
            Store::Inventory => "inventory-projection",
            Store::OrderHistory => "order-history",
            Store::Allocator => "allocator",
        }
    }
}

/// Registered consumers this command has no check for.
pub fn skipped() -> Vec<&'static str> {
    orderflow_registry::names().into_iter().filter(|name| !STORES.iter().any(|s| s.name() == *name)).collect()
}

/// `NAME=URL` of `--consumer-url`.
fn parse_consumer_url(text: &str) -> Result<(String, Url), String> {
    let (name, url) = text.split_once('=').ok_or_else(|| format!("expected NAME=URL, got '{text}'"))?;
    orderflow_registry::get(name).map_err(|e| e.to_string())?;
    let url = Url::parse(url).map_err(|e| format!("{name}: '{url}' is not a URL ({e})"))?;
    Ok((name.to_owned(), url))
}

/// Where each registered consumer is read: its own flag, else `--consumer-url`, else its
/// registered port on 127.0.0.1.
fn consumer_urls(args: &VerifyArgs) -> anyhow::Result<BTreeMap<&'static str, (String, Url)>> {
    let legacy = [
        ("fulfillment", "--fulfillment-url", &args.fulfillment_url),
        ("email", "--email-url", &args.email_url),
        ("analytics", "--analytics-url", &args.analytics_url),
        ("inventory-projection", "--inventory-url", &args.inventory_url),
    ];
    let mut urls = BTreeMap::new();
    for spec in orderflow_registry::CONSUMERS {
        let given = args.consumer_urls.iter().rev().find(|(name, _)| name == spec.name);
        let flag = legacy.iter().find(|(name, _, url)| *name == spec.name && url.is_some());
        let (flag, url) = match (flag, given) {
            (Some((_, flag, Some(url))), _) => ((*flag).to_owned(), url.clone()),
            (_, Some((_, url))) => (format!("--consumer-url {}=", spec.name), url.clone()),
            _ => ("the default".to_owned(), Url::parse(&format!("http://127.0.0.1:{}", spec.port))?),
        };
        urls.insert(spec.name, (flag, url));
    }
    Ok(urls)
}

/// What one GET found out about one order or sku: nothing wrong, a difference, or the store
/// could not be read at all (which ends that store's check).
type Finding = Result<Option<String>, String>;

struct Checker {
    http: reqwest::Client,
    token: Option<String>,
    fulfillment: Url,
    email: Url,
    analytics: Url,
    inventory: Url,
    order_history: Url,
    allocator: Url,
    concurrency: usize,
}

impl Checker {
    fn new(args: &VerifyArgs) -> anyhow::Result<Checker> {
        let urls = consumer_urls(args)?;
        for (flag, url) in urls.values() {
            if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
                bail!("{flag} must be an http(s) base URL like http://127.0.0.1:8081 (got {url})");
            }
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("Failed to build the HTTP client")?;
        Ok(Checker {
            http,
            token: args.read_token.clone().filter(|t| !t.is_empty()),
            fulfillment: urls["fulfillment"].1.clone(),
            email: urls["email"].1.clone(),
            analytics: urls["analytics"].1.clone(),
            inventory: urls["inventory-projection"].1.clone(),
            order_history: urls["order-history"].1.clone(),
            allocator: urls["allocator"].1.clone(),
            concurrency: usize::from(args.concurrency),
        })
    }

    async fn check(
        &self,
        store: Store,
        expected: &Expected,
        window: &Window,
        baseline: Option<&AnalyticsBaseline>,
    ) -> StoreReport {
        let (checked, differences) = match store {
            Store::Fulfillment => self.check_fulfillment(expected).await,
            Store::Email => self.check_email(expected).await,
            Store::Analytics => self.check_analytics(expected, window, baseline).await,
            Store::Inventory => self.check_inventory(expected).await,
            Store::OrderHistory => self.check_order_history(expected).await,
            Store::Allocator => self.check_allocator(expected).await,
        };
        StoreReport { store: store.name(), checked, differences }
    }

    /// `base` + path segments (each percent-encoded) + query pairs.
    fn url(base: &Url, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// GET `url` and parse a JSON body. `Err` when the store cannot be read at all (no
    /// connection, a 401/403, a 5xx): later requests would fail the same way.
    async fn get(&self, url: Url) -> Result<(u16, Value), String> {
        let mut request = self.http.get(url.clone());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| format!("GET {url}: {}", error_chain(&e)))?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|e| format!("GET {url}: reading the body: {}", error_chain(&e)))?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if matches!(status, 401 | 403) || status >= 500 {
            return Err(format!("GET {url}: HTTP {status} {}", api_error(&body)));
        }
        Ok((status, body))
    }

    /// Run `check` for every item, `concurrency` at once; the differences in item order, or
    /// the first reason the store could not be read.
    async fn each<'a, I, F, Fut>(&self, items: I, check: F) -> Vec<String>
    where
        I: IntoIterator<Item = &'a String>,
        F: Fn(&'a String) -> Fut,
        Fut: std::future::Future<Output = Finding>,
    {
        let found: Result<Vec<String>, String> = futures::stream::iter(items)
            .map(check)
            .buffered(self.concurrency)
            .try_filter_map(|finding| async move { Ok(finding) })
            .try_collect()
            .await;
        found.unwrap_or_else(|unreadable| vec![unreadable])
    }

    async fn check_fulfillment(&self, expected: &Expected) -> (String, Vec<String>) {
        let want = |id: &String| if expected.shipped_orders.contains(id) { "shipped" } else { "pending" };
        let orders = expected.shipped_orders.iter().chain(&expected.pending_orders);
        let differences = self
            .each(orders, |id| async move {
                let (status, body) = self.get(Self::url(&self.fulfillment, &["v1", "fulfillments", id], &[])).await?;
                let want = want(id);
                Ok(match status {
                    200 => match body["status"].as_str() {
                        Some(got) if got == want && body["order_id"] == id.as_str() => None,
                        Some(got) if got != want => Some(format!("{id}: status {got}, expected {want}")),
                        _ => Some(format!("{id}: unexpected answer {body}")),
                    },
                    404 => Some(format!("{id}: no fulfillment (404), expected {want}")),
                    _ => Some(format!("{id}: HTTP {status} {}", api_error(&body))),
                })
            })
            .await;
        let checked = format!(
            "{} orders ({} shipped, {} pending)",
            expected.shipped_orders.len() + expected.pending_orders.len(),
            expected.shipped_orders.len(),
            expected.pending_orders.len()
        );
        (checked, differences)
    }

    async fn check_email(&self, expected: &Expected) -> (String, Vec<String>) {
        let mut orders: Vec<&String> = expected.shipped_orders.iter().chain(&expected.pending_orders).collect();
        orders.sort();
        let count = orders.len();
        let differences = self
            .each(orders, |id| async move {
                let (status, body) = self.get(Self::url(&self.email, &["v1", "emails"], &[("order_id", id)])).await?;
                if status != 200 {
                    return Ok(Some(format!("{id}: HTTP {status} {}", api_error(&body))));
                }
                let Some(emails) = body["emails"].as_array() else {
                    return Ok(Some(format!("{id}: unexpected answer {body}")));
                };
                // The confirmation (a backorder notice may come beside it; emails without a
                // kind are confirmations from before notices existed).
                let emails: Vec<&Value> =
                    emails.iter().filter(|e| e["kind"].as_str().is_none_or(|kind| kind == "confirmation")).collect();
                Ok(match emails.as_slice() {
                    [] => Some(format!("{id}: no email")),
                    [email] => match email["status"].as_str() {
                        Some("sent") => None,
                        Some(other) => Some(format!(
                            "{id}: email {other} after {} attempt(s){}, expected sent",
                            email["attempts"],
                            email["last_error"].as_str().map(|e| format!(" (last error: {e})")).unwrap_or_default()
                        )),
                        None => Some(format!("{id}: unexpected answer {body}")),
                    },
                    many => Some(format!("{id}: {} emails, expected one", many.len())),
                })
            })
            .await;
        (format!("{count} orders, one confirmation each, sent"), differences)
    }

    /// Orders and revenue per currency over `[from, to)`, summed over the buckets.
    async fn sales(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<BTreeMap<String, Sales>, String> {
        let (from, to) = (rfc3339(from), rfc3339(to));
        let url = Self::url(&self.analytics, &["v1", "sales"], &[("bucket", "day"), ("from", &from), ("to", &to)]);
        let (status, body) = self.get(url.clone()).await?;
        let buckets = match (status, body["buckets"].as_array()) {
            (200, Some(buckets)) => buckets,
            _ => return Err(format!("GET {url}: HTTP {status} {}", api_error(&body))),
        };
        let mut sales: BTreeMap<String, Sales> = BTreeMap::new();
        for bucket in buckets {
            let (Some(currency), Some(orders), Some(revenue)) =
                (bucket["currency"].as_str(), bucket["orders"].as_i64(), bucket["revenue_minor"].as_i64())
            else {
                return Err(format!("GET {url}: unexpected bucket {bucket}"));
            };
            let entry = sales.entry(currency.to_owned()).or_default();
            entry.orders += orders;
            entry.revenue_minor += revenue;
        }
        Ok(sales)
    }

    /// Units ordered per sku on the days of the run.
    async fn units(&self, expected: &Expected) -> Result<BTreeMap<String, i64>, String> {
        let day = |t: DateTime<Utc>| rfc3339(t.date_naive().and_time(NaiveTime::MIN).and_utc());
        let (from, to) = (day(expected.started_at), day(expected.finished_at + TimeDelta::days(1)));
        let url = Self::url(&self.analytics, &["v1", "units"], &[("from", &from), ("to", &to)]);
        let (status, body) = self.get(url.clone()).await?;
        let days = match (status, body["days"].as_array()) {
            (200, Some(days)) => days,
            _ => return Err(format!("GET {url}: HTTP {status} {}", api_error(&body))),
        };
        let mut units: BTreeMap<String, i64> = BTreeMap::new();
        for day in days {
            let (Some(sku), Some(n)) = (day["sku"].as_str(), day["units"].as_i64()) else {
                return Err(format!("GET {url}: unexpected day {day}"));
            };
            if expected.skus.contains_key(sku) {
                *units.entry(sku.to_owned()).or_default() += n;
            }
        }
        Ok(units)
    }

    async fn check_analytics(
        &self,
        expected: &Expected,
        window: &Window,
        baseline: Option<&AnalyticsBaseline>,
    ) -> (String, Vec<String>) {
        let revenue: Vec<String> = expected.revenue_minor.iter().map(|(c, r)| format!("{c} {r}")).collect();
        let checked = format!(
            "{} orders, revenue {} minor units in [{}, {}){}, units of {} skus",
            expected.orders,
            if revenue.is_empty() { "none".to_owned() } else { revenue.join(", ") },
            rfc3339(window.from),
            rfc3339(window.to),
            if baseline.is_some() { " above the baseline" } else { "" },
            expected.skus.len()
        );
        let mut differences = Vec::new();
        match self.sales(window.from, window.to).await {
            Err(unreadable) => return (checked, vec![unreadable]),
            Ok(sales) => {
                let before = baseline.map(|b| b.sales.clone()).unwrap_or_default();
                let currencies: std::collections::BTreeSet<&String> = sales
                    .keys()
                    .chain(expected.orders_by_currency.keys())
                    .chain(expected.revenue_minor.keys())
                    .collect();
                for currency in currencies {
                    let now = sales.get(currency).copied().unwrap_or_default();
                    let was = before.get(currency).copied().unwrap_or_default();
                    let (orders, revenue) = (now.orders - was.orders, now.revenue_minor - was.revenue_minor);
                    let want_orders = expected.orders_by_currency.get(currency).copied().unwrap_or(0) as i64;
                    let want_revenue = expected.revenue_minor.get(currency).copied().unwrap_or(0);
                    if orders != want_orders {
                        differences.push(format!("{currency}: {orders} orders, expected {want_orders}"));
                    }
                    if revenue != want_revenue {
                        differences.push(format!("{currency}: revenue {revenue} minor units, expected {want_revenue}"));
                    }
                }
            }
        }
        match self.units(expected).await {
            Err(unreadable) => differences.push(unreadable),
            Ok(units) => {
                for (sku, totals) in &expected.skus {
                    let got = units.get(sku).copied().unwrap_or(0);
                    if got != totals.units_ordered {
                        differences.push(format!("{sku}: {got} units ordered, expected {}", totals.units_ordered));
                    }
                }
            }
        }
        (checked, differences)
    }

    async fn check_inventory(&self, expected: &Expected) -> (String, Vec<String>) {
        let differences = self
            .each(expected.skus.keys(), |sku| async move {
                let want = &expected.skus[sku];
                let (status, body) = self.get(Self::url(&self.inventory, &["v1", "inventory", sku], &[])).await?;
                Ok(match status {
                    200 => inventory_differences(sku, want, &body),
                    404 => Some(format!("{sku}: no inventory (404), expected on_hand {}", want.on_hand)),
                    _ => Some(format!("{sku}: HTTP {status} {}", api_error(&body))),
                })
            })
            .await;
        (format!("{} skus (on hand, reserved, available, per warehouse)", expected.skus.len()), differences)
    }
}

impl Checker {
    /// Every accepted order of the run is in its customer's history (a customer of the run
    /// has at most [`HISTORY_PAGE`] orders in it, all of them this run's).
    async fn check_order_history(&self, expected: &Expected) -> (String, Vec<String>) {
        let orders: usize = expected.customers.values().map(BTreeSet::len).sum();
        if orders == 0 && expected.orders > 0 {
            let checked = "nothing: the expected file names no customers (an older `orderflow simulate` wrote it)";
            return (checked.to_owned(), vec![]);
        }
        let differences = self
            .each(expected.customers.keys(), |customer| async move {
                let want = &expected.customers[customer];
                let limit = HISTORY_PAGE.to_string();
                let url =
                    Self::url(&self.order_history, &["v1", "customers", customer, "orders"], &[("limit", &limit)]);
                let (status, body) = self.get(url).await?;
                let Some(listed) = body["orders"].as_array().filter(|_| status == 200) else {
                    return Ok(Some(format!("{customer}: HTTP {status} {}", api_error(&body))));
                };
                let listed: BTreeSet<&str> = listed.iter().filter_map(|o| o["order_id"].as_str()).collect();
                let missing: Vec<&str> = want.iter().map(String::as_str).filter(|id| !listed.contains(id)).collect();
                Ok((!missing.is_empty()).then(|| format!("{customer}: missing {}", missing.join(", "))))
            })
            .await;
        (
            format!("{orders} orders of {} customers, each in its customer's history", expected.customers.len()),
            differences,
        )
    }
}

impl Checker {
    /// The allocator's stock agrees with the run's (on hand per sku), no warehouse holds
    /// more for orders than it has, no unit sits free while an order waits for the sku, and
    /// every accepted order was decided.
    async fn check_allocator(&self, expected: &Expected) -> (String, Vec<String>) {
        // One pass over skus and orders (tagged), so a store that cannot be read is one line.
        let orders: Vec<&String> = expected.shipped_orders.iter().chain(&expected.pending_orders).collect();
        let items: Vec<String> = expected
            .skus
            .keys()
            .map(|sku| format!("sku\u{0}{sku}"))
            .chain(orders.iter().map(|order| format!("order\u{0}{order}")))
            .collect();
        let differences = self
            .each(&items, |item| async move {
                let (kind, id) = item.split_once('\u{0}').unwrap_or_default();
                let segment = if kind == "sku" { "stock" } else { "allocations" };
                let (status, body) = self.get(Self::url(&self.allocator, &["v1", segment, id], &[])).await?;
                Ok(match (kind, status) {
                    ("sku", 200) => allocator_differences(id, expected.skus[id].on_hand, &body),
                    (_, 200) => None,
                    ("order", 404) => Some(format!("{id}: not decided")),
                    _ => Some(format!("{id}: HTTP {status} {}", api_error(&body))),
                })
            })
            .await;
        (
            format!(
                "{} skus (on hand, allocated within it, no stock idle while orders wait) and {} orders decided",
                expected.skus.len(),
                orders.len()
            ),
            differences,
        )
    }
}

fn allocator_differences(sku: &str, on_hand: i64, body: &Value) -> Option<String> {
    let mut wrong = Vec::new();
    match body["on_hand"].as_i64() {
        Some(got) if got == on_hand => {}
        got => wrong.push(format!("on_hand {got:?} (expected {on_hand})")),
    }
    for warehouse in body["warehouses"].as_array().into_iter().flatten() {
        let (held, there) = (warehouse["allocated"].as_i64().unwrap_or(0), warehouse["on_hand"].as_i64().unwrap_or(0));
        if held > there.max(0) {
            wrong.push(format!("{} allocates {held} units of {there} on hand", warehouse["warehouse"]));
        }
    }
    let (available, waiting) = (body["available"].as_i64().unwrap_or(0), body["backordered"].as_i64().unwrap_or(0));
    if available > 0 && waiting > 0 {
        wrong.push(format!("{available} units available while {waiting} are backordered"));
    }
    (!wrong.is_empty()).then(|| format!("{sku}: {}", wrong.join(", ")))
}

/// The page `verify` reads a customer's history with (the API's largest).
const HISTORY_PAGE: u16 = 100;

/// One line naming every field of a sku that differs, or `None` when it matches.
fn inventory_differences(sku: &str, want: &crate::simulate::SkuTotals, body: &Value) -> Option<String> {
    let mut wrong = Vec::new();
    for (field, want) in [("on_hand", want.on_hand), ("reserved", want.reserved), ("available", want.available)] {
        match body[field].as_i64() {
            Some(got) if got == want => {}
            Some(got) => wrong.push(format!("{field} {got} (expected {want})")),
            None => wrong.push(format!("{field} missing (expected {want})")),
        }
    }
    // A warehouse at zero is the same as one never stocked.
    let want_warehouses: BTreeMap<&str, i64> =
        want.warehouses.iter().filter(|(_, n)| **n != 0).map(|(w, n)| (w.as_str(), *n)).collect();
    let got_warehouses: Option<BTreeMap<&str, i64>> = body["warehouses"].as_array().map(|list| {
        list.iter()
            .filter_map(|w| Some((w["warehouse"].as_str()?, w["on_hand"].as_i64()?)))
            .filter(|(_, n)| *n != 0)
            .collect()
    });
    match got_warehouses {
        Some(got) if got == want_warehouses => {}
        Some(got) => wrong.push(format!("warehouses {got:?} (expected {want_warehouses:?})")),
        None => wrong.push(format!("warehouses missing (expected {want_warehouses:?})")),
    }
    (!wrong.is_empty()).then(|| format!("{sku}: {}", wrong.join(", ")))
}

/// The `error` of a read API's JSON error body, or the body itself (shortened).
fn api_error(body: &Value) -> String {
    let text = match body.get("error").and_then(Value::as_str) {
        Some(error) => error.to_owned(),
        None => match body {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        },
    };
    let mut short: String = text.chars().take(200).collect();
    if short.len() < text.len() {
        short.push_str("...");
    }
    short
}

/// reqwest's error with its causes ("error sending request: ... Connection refused").
fn error_chain(error: &reqwest::Error) -> String {
    let mut out = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        out.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    out
}

/// `500ms`, `60s`, `2m`, `1h`, or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let invalid = || format!("invalid duration '{text}': use a whole number with ms, s, m or h, e.g. 60s");
    let n: u64 = number.parse().map_err(|_| invalid())?;
    let millis = match unit {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(invalid()),
    };
    millis.map(Duration::from_millis).ok_or_else(|| format!("duration '{text}' is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::SkuTotals;

    #[test]
    fn durations_take_a_unit_or_mean_seconds() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "s", "1.5s", "-1s", "10 days", "5d", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_duration("5d").unwrap_err().contains("e.g. 60s"));
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_sales_window_covers_the_hours_of_the_run_or_the_baselines_range() {
        let expected = Expected {
            started_at: at("2026-03-01T10:59:58Z"),
            finished_at: at("2026-03-01T11:00:03Z"),
            ..Expected::default()
        };
        assert_eq!(
            sales_window(&expected, None).unwrap(),
            Window { from: at("2026-03-01T10:00:00Z"), to: at("2026-03-01T12:00:00Z") }
        );
        let baseline = AnalyticsBaseline {
            from: at("2026-03-01T10:00:00Z"),
            to: at("2026-04-01T10:00:00Z"),
            taken_at: at("2026-03-01T10:59:50Z"),
            sales: BTreeMap::new(),
        };
        assert_eq!(sales_window(&expected, Some(&baseline)).unwrap(), Window { from: baseline.from, to: baseline.to });
        let late = AnalyticsBaseline { taken_at: at("2026-03-01T11:00:00Z"), ..baseline };
        let error = sales_window(&expected, Some(&late)).unwrap_err().to_string();
        assert!(error.contains("record the baseline right before the load"), "{error}");
    }

    #[test]
    fn inventory_differences_name_each_field_and_ignore_empty_warehouses() {
        let want = SkuTotals {
            on_hand: 5,
            warehouses: BTreeMap::from([("wh-0".to_owned(), 5), ("wh-1".to_owned(), 0)]),
            reserved: 2,
            available: 3,
            units_ordered: 4,
        };
        let body = serde_json::json!({"sku": "S", "on_hand": 5, "reserved": 2, "available": 3,
            "warehouses": [{"warehouse": "wh-0", "on_hand": 5}]});
        assert_eq!(inventory_differences("S", &want, &body), None);
        let body = serde_json::json!({"sku": "S", "on_hand": 6, "reserved": 2,
            "warehouses": [{"warehouse": "wh-0", "on_hand": 6}]});
        let line = inventory_differences("S", &want, &body).unwrap();
        assert!(line.starts_with("S: on_hand 6 (expected 5), available missing (expected 3), warehouses"), "{line}");
    }

    #[test]
    fn a_report_shows_at_most_the_requested_differences() {
        let report = StoreReport {
            store: "email",
            checked: "3 orders".into(),
            differences: vec!["a".into(), "b".into(), "c".into()],
        };
        assert_eq!(
            format_report(&report, 2),
            "email                DIFFERS  3 difference(s); checked 3 orders\n    a\n    b\n    ... and 1 more\n"
        );
        let ok = StoreReport { differences: vec![], ..report };
        assert_eq!(format_report(&ok, 2), "email                ok       3 orders\n");
    }

    #[test]
    fn urls_keep_the_base_path_and_encode_ids() {
        let base = Url::parse("http://127.0.0.1:8081/prefix/").unwrap();
        let url = Checker::url(&base, &["v1", "fulfillments", "a b/c"], &[("order_id", "x&y")]);
        assert_eq!(url.as_str(), "http://127.0.0.1:8081/prefix/v1/fulfillments/a%20b%2Fc?order_id=x%26y");
    }
}
