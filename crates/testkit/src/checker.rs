//! The checker of a faults run: reads every read store of a [`Pipeline`] (and what the SMTP
//! server received) and compares it with the workload's [`History`]:
//!
//! - every **acknowledged** request's events are applied exactly once in every consumer that
//!   reads them (its ledger holds the event id, its store shows the effect once);
//! - an **unknown** request's are applied at most once;
//! - nothing that was never sent, or was rejected, appears;
//! - exactly one email went out per applied order (counted at the SMTP server by Message-ID);
//! - the inventory and analytics sums equal the sums of the applied requests.
//!
//! "Applied" is judged from each consumer's ledger (`orderflow_applied_events`, and for events
//! with a natural key `orderflow_natural_keys`, whose claim is their ledger entry): the set of
//! requests whose event ids it holds is what the store must show, exactly; an acknowledged
//! request missing from it is **lost**, a store showing more than it is **doubled**.
//!
//! It knows the five stores of orderflow; a consumer it does not know is checked through its
//! ledger only.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use uuid::Uuid;

use crate::pipeline::Pipeline;
use crate::workload::{History, Op, Outcome, Request};

/// What a check found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Faults the test injected, in order, as it described them.
    pub faults: Vec<String>,
    pub requests: usize,
    pub acknowledged: usize,
    pub rejected: usize,
    pub unknown: usize,
    /// Unknown requests that were applied (once).
    pub unknown_applied: usize,
    /// Acknowledged effects missing from a store, one line each.
    pub lost: Vec<String>,
    /// Effects a store shows more than once, one line each.
    pub doubled: Vec<String>,
    /// Effects of requests that were never sent or were rejected.
    pub phantom: Vec<String>,
    /// Stores checked and what each one held.
    pub stores: Vec<String>,
    /// The workload's statuses and latencies.
    pub history: String,
}

impl Report {
    pub fn clean(&self) -> bool {
        self.lost.is_empty() && self.doubled.is_empty() && self.phantom.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "== faults run report ==")?;
        for fault in &self.faults {
            writeln!(f, "fault: {fault}")?;
        }
        writeln!(
            f,
            "requests {}: acknowledged {}, rejected {}, unknown {} ({} of them applied); lost {}, doubled {}, phantom {}",
            self.requests,
            self.acknowledged,
            self.rejected,
            self.unknown,
            self.unknown_applied,
            self.lost.len(),
            self.doubled.len(),
            self.phantom.len()
        )?;
        writeln!(f, "{}", self.history)?;
        for store in &self.stores {
            writeln!(f, "  {store}")?;
        }
        for (what, lines) in [("LOST", &self.lost), ("DOUBLED", &self.doubled), ("PHANTOM", &self.phantom)] {
            for line in lines.iter().take(20) {
                writeln!(f, "  {what}: {line}")?;
            }
            if lines.len() > 20 {
                writeln!(f, "  {what}: ... and {} more", lines.len() - 20)?;
            }
        }
        Ok(())
    }
}

/// Check until the stores match the history or `timeout` passes (consumers still draining,
/// emails still being sent), and return the last report.
pub async fn check_until(pipeline: &Pipeline, history: &History, faults: &[String], timeout: Duration) -> Report {
    let pool = pipeline.pool().await;
    let deadline = Instant::now() + timeout;
    loop {
        let mut report = check(&pool, pipeline, history).await;
        report.faults = faults.to_vec();
        if report.clean() || Instant::now() >= deadline {
            pool.close().await;
            return report;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Which requests a consumer reads.
#[derive(Clone, Copy)]
enum Interest {
    Orders,
    OrdersAndStock,
}

fn interest(consumer: &str) -> Option<Interest> {
    match consumer {
        "fulfillment" | "email" | "order-history" => Some(Interest::Orders),
        "analytics" | "inventory-projection" => Some(Interest::OrdersAndStock),
        _ => None,
    }
}

fn wanted(interest: Interest, op: &Op) -> bool {
    matches!((interest, &op.request), (_, Request::Order { .. }) | (Interest::OrdersAndStock, Request::Stock { .. }))
}

/// One check of every store (see the module doc).
pub async fn check(pool: &PgPool, pipeline: &Pipeline, history: &History) -> Report {
    let mut report = Report {
        requests: history.ops.len(),
        acknowledged: history.acknowledged(),
        rejected: history.rejected(),
        unknown: history.unknown(),
        history: history.summary(),
        ..Report::default()
    };
    let by_id: HashMap<Uuid, &Op> =
        history.ops.iter().flat_map(|op| op.event_ids.iter().map(move |id| (*id, op))).collect();
    let mut unknown_applied: HashSet<usize> = HashSet::new();
    for consumer in &pipeline.consumers {
        let name = consumer.spec.name.as_str();
        let schema = consumer.schema.as_str();
        // What `orderflow_runtime::store::applied_event_ids` reads (this crate sits below the
        // runtime): the ledger, and the events that claimed a natural key.
        let ledger: Vec<Uuid> = match sqlx::query_scalar(&format!(
            "SELECT event_id FROM {schema}.orderflow_applied_events
             UNION ALL SELECT event_id FROM {schema}.orderflow_natural_keys"
        ))
        .fetch_all(pool)
        .await
        {
            Ok(ids) => ids,
            Err(e) => {
                report.lost.push(format!("{name}: its ledger could not be read: {e:#}"));
                continue;
            }
        };
        // The requests this consumer applied, by its ledger.
        let mut applied: BTreeMap<usize, &Op> = BTreeMap::new();
        for id in &ledger {
            match by_id.get(id) {
                Some(op) if matches!(op.outcome, Outcome::Rejected(_)) => {
                    report.phantom.push(format!("{name}: applied rejected request {} ({id})", op.key))
                }
                Some(op) => {
                    if op.outcome == Outcome::Unknown {
                        unknown_applied.insert(op.index);
                    }
                    applied.insert(op.index, op);
                }
                None => report.phantom.push(format!("{name}: applied event {id}, which no request sent")),
            }
        }
        let Some(interest) = interest(name) else {
            report.stores.push(format!("{name}: {} events in its ledger (no store check for it)", ledger.len()));
            continue;
        };
        for op in history.ops.iter().filter(|op| op.outcome == Outcome::Acknowledged && wanted(interest, op)) {
            if !applied.contains_key(&op.index) {
                report.lost.push(format!("{name}: acknowledged request {} is not in its ledger", op.key));
            }
        }
        let applied: Vec<&Op> = applied.into_values().collect();
        let result = match name {
            "fulfillment" => check_fulfillment(pool, schema, &applied).await,
            "email" => check_email(pool, schema, &applied, &pipeline.smtp.messages(), &by_id).await,
            "analytics" => check_analytics(pool, schema, &applied).await,
            "inventory-projection" => check_inventory(pool, schema, &applied).await,
            "order-history" => check_order_history(pool, schema, &applied).await,
            _ => Ok(Findings::default()),
        };
        match result {
            Ok(findings) => {
                report.stores.push(format!("{name}: {} ledger entries; {}", ledger.len(), findings.checked));
                report.lost.extend(findings.lost.into_iter().map(|l| format!("{name}: {l}")));
                report.doubled.extend(findings.doubled.into_iter().map(|l| format!("{name}: {l}")));
                report.phantom.extend(findings.phantom.into_iter().map(|l| format!("{name}: {l}")));
            }
            Err(e) => report.lost.push(format!("{name}: its store could not be read: {e}")),
        }
    }
    report.unknown_applied = unknown_applied.len();
    report
}

#[derive(Debug, Default)]
struct Findings {
    checked: String,
    lost: Vec<String>,
    doubled: Vec<String>,
    phantom: Vec<String>,
}

impl Findings {
    /// Compare `actual` with `expected` per key: less is lost, more is doubled, a key only in
    /// `actual` is phantom.
    fn compare<K: Ord + fmt::Debug>(&mut self, what: &str, expected: &BTreeMap<K, i64>, actual: &BTreeMap<K, i64>) {
        for (key, want) in expected {
            let got = actual.get(key).copied().unwrap_or(0);
            if got < *want {
                self.lost.push(format!("{what} {key:?}: {got}, expected {want}"));
            } else if got > *want {
                self.doubled.push(format!("{what} {key:?}: {got}, expected {want}"));
            }
        }
        for (key, got) in actual {
            if !expected.contains_key(key) && *got != 0 {
                self.phantom.push(format!("{what} {key:?}: {got}, expected none"));
            }
        }
    }
}

fn orders<'a>(applied: &'a [&'a Op]) -> impl Iterator<Item = (&'a str, &'a [(String, u32)], i64)> + 'a {
    applied.iter().filter_map(|op| match &op.request {
        Request::Order { order_id, lines, total_minor } => Some((order_id.as_str(), lines.as_slice(), *total_minor)),
        Request::Stock { .. } => None,
    })
}

fn stock<'a>(applied: &'a [&'a Op]) -> impl Iterator<Item = (&'a str, i64, &'a str)> + 'a {
    applied.iter().filter_map(|op| match &op.request {
        Request::Stock { sku, delta, reason } => Some((sku.as_str(), *delta, reason.as_str())),
        Request::Order { .. } => None,
    })
}

fn order_lines(applied: &[&Op]) -> BTreeMap<(String, String), i64> {
    let mut lines = BTreeMap::new();
    for (order_id, order_lines, _) in orders(applied) {
        for (sku, quantity) in order_lines {
            *lines.entry((order_id.to_owned(), sku.clone())).or_default() += i64::from(*quantity);
        }
    }
    lines
}

fn ones<K: Ord>(keys: impl IntoIterator<Item = K>) -> BTreeMap<K, i64> {
    let mut map = BTreeMap::new();
    for key in keys {
        *map.entry(key).or_default() += 1;
    }
    map
}

async fn check_fulfillment(pool: &PgPool, schema: &str, applied: &[&Op]) -> sqlx::Result<Findings> {
    let mut findings = Findings::default();
    let rows: Vec<String> =
        sqlx::query_scalar(&format!("SELECT order_id FROM {schema}.fulfillments")).fetch_all(pool).await?;
    let lines: Vec<(String, String, i64)> =
        sqlx::query_as(&format!("SELECT order_id, sku, quantity FROM {schema}.fulfillment_lines"))
            .fetch_all(pool)
            .await?;
    findings.compare(
        "fulfillment of order",
        &ones(orders(applied).map(|(id, _, _)| id.to_owned())),
        &ones(rows.clone()),
    );
    let actual: BTreeMap<(String, String), i64> = lines.into_iter().map(|(o, s, q)| ((o, s), q)).collect();
    findings.compare("fulfillment line", &order_lines(applied), &actual);
    findings.checked = format!("{} fulfillments", rows.len());
    Ok(findings)
}

async fn check_email(
    pool: &PgPool,
    schema: &str,
    applied: &[&Op],
    messages: &[String],
    by_id: &HashMap<Uuid, &Op>,
) -> sqlx::Result<Findings> {
    let mut findings = Findings::default();
    let rows: Vec<(String, String)> =
        sqlx::query_as(&format!("SELECT order_id, status FROM {schema}.emails")).fetch_all(pool).await?;
    findings.compare(
        "email row of order",
        &ones(orders(applied).map(|(id, _, _)| id.to_owned())),
        &ones(rows.iter().map(|(o, _)| o.clone())),
    );
    let unsent: Vec<&(String, String)> = rows.iter().filter(|(_, status)| status != "sent").collect();
    for (order_id, status) in unsent.iter().take(5) {
        findings.lost.push(format!("email of order {order_id} is {status}, not sent"));
    }
    // Messages at the SMTP server, by the order whose event id is in their Message-ID.
    let mut sent: BTreeMap<String, i64> = BTreeMap::new();
    for message in messages {
        let id = message
            .lines()
            .find_map(|l| l.strip_prefix("Message-ID: <").or_else(|| l.strip_prefix("Message-Id: <")))
            .and_then(|rest| rest.split('@').next())
            .and_then(|id| id.parse::<Uuid>().ok());
        let order = id.and_then(|id| by_id.get(&id)).and_then(|op| match &op.request {
            Request::Order { order_id, .. } => Some(order_id.clone()),
            Request::Stock { .. } => None,
        });
        *sent.entry(order.unwrap_or_else(|| format!("<unknown Message-ID {id:?}>"))).or_default() += 1;
    }
    findings.compare(
        "message at the SMTP server for order",
        &ones(orders(applied).map(|(id, _, _)| id.to_owned())),
        &sent,
    );
    findings.checked = format!(
        "{} email rows ({} not sent), {} messages at the SMTP server",
        rows.len(),
        unsent.len(),
        messages.len()
    );
    Ok(findings)
}

async fn check_analytics(pool: &PgPool, schema: &str, applied: &[&Op]) -> sqlx::Result<Findings> {
    let mut findings = Findings::default();
    let (orders_count, revenue): (i64, i64) = sqlx::query_as(&format!(
        "SELECT COALESCE(SUM(orders), 0)::bigint, COALESCE(SUM(revenue_minor), 0)::bigint FROM {schema}.sales_hourly"
    ))
    .fetch_one(pool)
    .await?;
    let units: Vec<(String, i64)> =
        sqlx::query_as(&format!("SELECT sku, SUM(units)::bigint FROM {schema}.units_daily GROUP BY sku"))
            .fetch_all(pool)
            .await?;
    let movements: Vec<(String, i64)> = sqlx::query_as(&format!(
        "SELECT reason, SUM(movements)::bigint FROM {schema}.stock_movements_daily GROUP BY reason"
    ))
    .fetch_all(pool)
    .await?;
    let expected_orders = orders(applied).count() as i64;
    let expected_revenue: i64 = orders(applied).map(|(_, _, total)| total).sum();
    findings.compare(
        "analytics total",
        &BTreeMap::from([("orders", expected_orders), ("revenue_minor", expected_revenue)]),
        &BTreeMap::from([("orders", orders_count), ("revenue_minor", revenue)]),
    );
    let mut expected_units: BTreeMap<String, i64> = BTreeMap::new();
    for ((_, sku), quantity) in order_lines(applied) {
        *expected_units.entry(sku).or_default() += quantity;
    }
    findings.compare("analytics units of sku", &expected_units, &units.into_iter().collect());
    findings.compare(
        "analytics stock movements of reason",
        &ones(stock(applied).map(|(_, _, reason)| reason.to_owned())),
        &movements.into_iter().collect(),
    );
    findings.checked = format!("{orders_count} orders, {revenue} revenue");
    Ok(findings)
}

async fn check_inventory(pool: &PgPool, schema: &str, applied: &[&Op]) -> sqlx::Result<Findings> {
    let mut findings = Findings::default();
    let on_hand: Vec<(String, i64)> =
        sqlx::query_as(&format!("SELECT sku, SUM(on_hand)::bigint FROM {schema}.stock GROUP BY sku"))
            .fetch_all(pool)
            .await?;
    let ordered: Vec<(String, String, i64)> =
        sqlx::query_as(&format!("SELECT order_id, sku, ordered FROM {schema}.order_skus WHERE ordered <> 0"))
            .fetch_all(pool)
            .await?;
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for (sku, delta, _) in stock(applied) {
        *expected.entry(sku.to_owned()).or_default() += delta;
    }
    let actual: BTreeMap<String, i64> = on_hand.into_iter().collect();
    findings.compare("on hand of sku", &expected, &actual);
    findings.compare(
        "ordered of order line",
        &order_lines(applied),
        &ordered.into_iter().map(|(o, s, q)| ((o, s), q)).collect(),
    );
    findings.checked = format!("{} skus, {} units on hand", actual.len(), actual.values().sum::<i64>());
    Ok(findings)
}

async fn check_order_history(pool: &PgPool, schema: &str, applied: &[&Op]) -> sqlx::Result<Findings> {
    let mut findings = Findings::default();
    let rows: Vec<(String, i64)> =
        sqlx::query_as(&format!("SELECT order_id, total_minor FROM {schema}.customer_orders")).fetch_all(pool).await?;
    let expected: BTreeMap<String, i64> = orders(applied).map(|(id, _, total)| (id.to_owned(), total)).collect();
    findings.compare("order-history total of order", &expected, &rows.iter().cloned().collect());
    findings.compare(
        "order-history row of order",
        &ones(expected.keys().cloned()),
        &ones(rows.into_iter().map(|(o, _)| o)),
    );
    findings.checked = format!("{} orders", expected.len());
    Ok(findings)
}
