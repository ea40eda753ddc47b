//! `orderflow verify` against stand-ins of the six read APIs (same paths, parameters, bodies
//! and range limits as the consumers'), so every difference can be staged exactly. The real
//! consumers are verified end to end by the demo test (`tests/demo.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, TimeDelta, Utc};
use clap::Parser;
use orderflow_cli::simulate::{Expected, SkuTotals};
use orderflow_cli::verify::{StoreReport, VerifyArgs, verify};
use orderflow_cli::{Cli, Command};
use serde_json::{Value, json};

/// What the stand-in stores hold.
#[derive(Default)]
struct Stores {
    /// order id → fulfillment status
    fulfillments: BTreeMap<String, String>,
    /// order id → statuses of its emails
    emails: BTreeMap<String, Vec<String>>,
    /// Emails answer `queued` for this many more requests, then as stored.
    email_queued_polls: usize,
    /// (currency, orders, revenue) rows of /v1/sales
    sales: Vec<(String, i64, i64)>,
    units: BTreeMap<String, i64>,
    inventory: BTreeMap<String, Value>,
    /// customer id → its order ids, as the order history lists them
    histories: BTreeMap<String, Vec<String>>,
    /// sku → the allocator's `/v1/stock/{sku}` body
    stock: BTreeMap<String, Value>,
    /// orders the allocator decided
    decided: BTreeSet<String>,
    /// Every request needs `Authorization: Bearer <token>`.
    token: Option<String>,
    /// Query strings of /v1/sales requests.
    sales_queries: Vec<BTreeMap<String, String>>,
}

type Shared = Arc<Mutex<Stores>>;

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"error": message}))).into_response()
}

/// The 401 a store answers without the right bearer token, if it wants one.
fn refused(stores: &Stores, headers: &HeaderMap) -> Option<Response> {
    let token = stores.token.as_ref()?;
    let given = headers.get("authorization").and_then(|v| v.to_str().ok());
    (given != Some(&format!("Bearer {token}"))).then(|| error(StatusCode::UNAUTHORIZED, "a bearer token is required"))
}

/// The analytics API's range check (RFC 3339 times, from <= to, at most `max_days` apart):
/// the 400 it answers, if any.
fn bad_range(q: &BTreeMap<String, String>, max_days: i64) -> Option<Response> {
    let time = |field: &str| q.get(field).and_then(|v| DateTime::parse_from_rfc3339(v).ok());
    let (Some(from), Some(to)) = (time("from"), time("to")) else {
        return Some(error(StatusCode::BAD_REQUEST, "from, to: must be RFC 3339 times"));
    };
    (from > to || to - from > TimeDelta::days(max_days))
        .then(|| error(StatusCode::BAD_REQUEST, &format!("to: the range is wider than {max_days} days")))
}

async fn fulfillment(State(s): State<Shared>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let s = s.lock().unwrap();
    if let Some(r) = refused(&s, &headers) {
        return r;
    }
    match s.fulfillments.get(&id) {
        Some(status) => {
            axum::Json(json!({"order_id": id, "status": status, "placed_at": "2026-01-01T00:00:00Z", "lines": []}))
                .into_response()
        }
        None => error(StatusCode::NOT_FOUND, &format!("order {id} not found")),
    }
}

async fn emails(State(s): State<Shared>, headers: HeaderMap, Query(q): Query<BTreeMap<String, String>>) -> Response {
    let mut s = s.lock().unwrap();
    if let Some(r) = refused(&s, &headers) {
        return r;
    }
    let Some(id) = q.get("order_id") else { return error(StatusCode::BAD_REQUEST, "order_id: is required") };
    let queued = s.email_queued_polls > 0;
    s.email_queued_polls = s.email_queued_polls.saturating_sub(1);
    let list: Vec<Value> = s
        .emails
        .get(id)
        .into_iter()
        .flatten()
        .map(|status| {
            let status = if queued { "queued" } else { status.as_str() };
            json!({"order_id": id, "to": "a@example.com", "status": status, "attempts": 0, "last_error": null})
        })
        .collect();
    axum::Json(json!({"emails": list})).into_response()
}

async fn sales(State(s): State<Shared>, headers: HeaderMap, Query(q): Query<BTreeMap<String, String>>) -> Response {
    let mut s = s.lock().unwrap();
    if let Some(r) = refused(&s, &headers) {
        return r;
    }
    s.sales_queries.push(q.clone());
    let max_days = match q.get("bucket").map(String::as_str) {
        None | Some("hour") => 31,
        Some("day") => 366,
        Some(_) => return error(StatusCode::BAD_REQUEST, "bucket: must be hour or day"),
    };
    if let Some(r) = bad_range(&q, max_days) {
        return r;
    }
    let buckets: Vec<Value> = s
        .sales
        .iter()
        .map(|(c, o, r)| json!({"bucket": "2026-01-01T00:00:00Z", "currency": c, "orders": o, "revenue_minor": r}))
        .collect();
    axum::Json(json!({"buckets": buckets})).into_response()
}

async fn units(State(s): State<Shared>, headers: HeaderMap, Query(q): Query<BTreeMap<String, String>>) -> Response {
    let s = s.lock().unwrap();
    if let Some(r) = refused(&s, &headers) {
        return r;
    }
    if let Some(r) = bad_range(&q, 366) {
        return r;
    }
    // Split each sku over two days, as a run across midnight would be.
    let days: Vec<Value> = s
        .units
        .iter()
        .flat_map(|(sku, n)| {
            [
                json!({"day": "2026-01-01", "sku": sku, "units": n / 2}),
                json!({"day": "2026-01-02", "sku": sku, "units": n - n / 2}),
            ]
        })
        .chain([json!({"day": "2026-01-01", "sku": "OTHER-RUN-SKU", "units": 7})])
        .collect();
    axum::Json(json!({"days": days})).into_response()
}

async fn inventory(State(s): State<Shared>, headers: HeaderMap, Path(sku): Path<String>) -> Response {
    let s = s.lock().unwrap();
    if let Some(r) = refused(&s, &headers) {
        return r;
    }
    match s.inventory.get(&sku) {
        Some(body) => axum::Json(body.clone()).into_response(),
        None => error(StatusCode::NOT_FOUND, &format!("sku {sku} not found")),
    }
}

async fn history(State(s): State<Shared>, headers: HeaderMap, Path(customer): Path<String>) -> Response {
    let s = s.lock().unwrap();
    if let Some(r) = refused(&s, &headers) {
        return r;
    }
    let orders: Vec<Value> =
        s.histories.get(&customer).into_iter().flatten().map(|id| json!({"order_id": id})).collect();
    axum::Json(json!({"customer_id": customer, "orders": orders, "more": false})).into_response()
}

async fn stock(State(s): State<Shared>, headers: HeaderMap, Path(sku): Path<String>) -> Response {
    let s = s.lock().unwrap();
    if let Some(r) = refused(&s, &headers) {
        return r;
    }
    let zero = json!({"sku": sku, "on_hand": 0, "allocated": 0, "available": 0, "backordered": 0, "warehouses": []});
    axum::Json(s.stock.get(&sku).cloned().unwrap_or(zero)).into_response()
}

async fn allocation(State(s): State<Shared>, headers: HeaderMap, Path(order): Path<String>) -> Response {
    let s = s.lock().unwrap();
    if let Some(r) = refused(&s, &headers) {
        return r;
    }
    if s.decided.contains(&order) {
        axum::Json(json!({"order_id": order, "allocated": [], "backordered": []})).into_response()
    } else {
        error(StatusCode::NOT_FOUND, &format!("a decision on order {order} not found"))
    }
}

/// The six read APIs on one free port.
async fn serve(stores: Stores) -> (String, Shared) {
    let shared = Arc::new(Mutex::new(stores));
    let app = axum::Router::new()
        .route("/v1/fulfillments/{order_id}", get(fulfillment))
        .route("/v1/emails", get(emails))
        .route("/v1/sales", get(sales))
        .route("/v1/units", get(units))
        .route("/v1/inventory/{sku}", get(inventory))
        .route("/v1/customers/{customer_id}/orders", get(history))
        .route("/v1/stock/{sku}", get(stock))
        .route("/v1/allocations/{order_id}", get(allocation))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, shared)
}

/// A small run: 4 orders (2 shipped), 2 skus.
fn sample_run() -> Expected {
    let now = Utc::now();
    let sku = |on_hand, reserved, units_ordered, warehouses: &[(&str, i64)]| SkuTotals {
        on_hand,
        warehouses: warehouses.iter().map(|(w, n)| ((*w).to_owned(), *n)).collect(),
        reserved,
        available: on_hand - reserved,
        units_ordered,
    };
    Expected {
        run_id: "simtest".into(),
        started_at: now - TimeDelta::seconds(2),
        finished_at: now,
        events: 9,
        orders: 4,
        orders_by_currency: BTreeMap::from([("EUR".into(), 4)]),
        shipped_orders: BTreeSet::from(["simtest-ord-00000".into(), "simtest-ord-00001".into()]),
        pending_orders: BTreeSet::from(["simtest-ord-00002".into(), "simtest-ord-00003".into()]),
        revenue_minor: BTreeMap::from([("EUR".into(), 12_345)]),
        skus: BTreeMap::from([
            ("simtest-SKU-000".into(), sku(40, 3, 5, &[("wh-0", 30), ("wh-1", 10), ("wh-2", 0)])),
            ("simtest-SKU-001".into(), sku(0, 2, 2, &[])),
        ]),
        customers: BTreeMap::from([
            ("simtest-cust-0".into(), BTreeSet::from(["simtest-ord-00000".into(), "simtest-ord-00002".into()])),
            ("simtest-cust-1".into(), BTreeSet::from(["simtest-ord-00001".into(), "simtest-ord-00003".into()])),
        ]),
    }
}

/// Stores that show exactly `expected`.
fn matching(expected: &Expected) -> Stores {
    let mut stores = Stores::default();
    for id in &expected.shipped_orders {
        stores.fulfillments.insert(id.clone(), "shipped".into());
    }
    for id in &expected.pending_orders {
        stores.fulfillments.insert(id.clone(), "pending".into());
    }
    for id in stores.fulfillments.keys() {
        stores.emails.insert(id.clone(), vec!["sent".into()]);
    }
    for (currency, orders) in &expected.orders_by_currency {
        // Split over two hours.
        let (o, r) = (*orders as i64, expected.revenue_minor[currency]);
        stores.sales.push((currency.clone(), o / 2, r / 2));
        stores.sales.push((currency.clone(), o - o / 2, r - r / 2));
    }
    for (customer, orders) in &expected.customers {
        stores.histories.insert(customer.clone(), orders.iter().cloned().collect());
    }
    stores.decided = expected.shipped_orders.iter().chain(&expected.pending_orders).cloned().collect();
    for (sku, totals) in &expected.skus {
        stores.units.insert(sku.clone(), totals.units_ordered);
        let warehouses: Vec<Value> =
            totals.warehouses.iter().map(|(w, n)| json!({"warehouse": w, "on_hand": n})).collect();
        stores.inventory.insert(
            sku.clone(),
            json!({"sku": sku, "warehouses": warehouses, "on_hand": totals.on_hand,
                   "reserved": totals.reserved, "available": totals.available}),
        );
        let held = totals.reserved.min(totals.on_hand);
        let bins: Vec<Value> = totals
            .warehouses
            .iter()
            .enumerate()
            .map(|(i, (w, n))| {
                let allocated = if i == 0 { held } else { 0 };
                json!({"warehouse": w, "on_hand": n, "allocated": allocated, "available": n - allocated})
            })
            .collect();
        stores.stock.insert(
            sku.clone(),
            json!({"sku": sku, "on_hand": totals.on_hand, "allocated": held, "available": totals.on_hand - held,
                   "backordered": totals.reserved - held, "warehouses": bins}),
        );
    }
    stores
}

struct Run {
    _dir: tempfile::TempDir,
    expect_file: String,
    dir_path: std::path::PathBuf,
}

fn write_expected(expected: &Expected) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("expected.json");
    std::fs::write(&path, serde_json::to_vec_pretty(expected).unwrap()).unwrap();
    Run { expect_file: path.to_str().unwrap().to_owned(), dir_path: dir.path().to_path_buf(), _dir: dir }
}

/// `orderflow verify` with every consumer URL pointing at `url` (unless `extra` names it),
/// plus `extra` flags.
fn cli(expect_file: &str, url: &str, extra: &[&str]) -> Cli {
    let mut argv = vec!["orderflow", "verify", "--expect-file", expect_file];
    for flag in ["--fulfillment-url", "--email-url", "--analytics-url", "--inventory-url"] {
        if !extra.contains(&flag) {
            argv.extend([flag, url]);
        }
    }
    let history = format!("order-history={url}");
    let allocator = format!("allocator={url}");
    argv.extend(["--consumer-url", &history, "--consumer-url", &allocator]);
    argv.extend(extra);
    Cli::parse_from(argv)
}

fn args(cli: Cli) -> VerifyArgs {
    let Command::Verify(args) = cli.command else { unreachable!() };
    *args
}

fn by_store(reports: &[StoreReport]) -> BTreeMap<&str, &StoreReport> {
    reports.iter().map(|r| (r.store, r)).collect()
}

#[tokio::test]
async fn a_matching_pipeline_verifies_and_every_store_says_ok() {
    let expected = sample_run();
    let (url, stores) = serve(matching(&expected)).await;
    let run = write_expected(&expected);

    let reports = verify(&args(cli(&run.expect_file, &url, &[]))).await.unwrap();

    assert_eq!(
        reports.iter().map(|r| r.store).collect::<Vec<_>>(),
        ["fulfillment", "email", "analytics", "inventory-projection", "order-history", "allocator"]
    );
    for report in &reports {
        assert!(report.ok(), "{report:?}");
    }
    let reports = by_store(&reports);
    assert_eq!(reports["fulfillment"].checked, "4 orders (2 shipped, 2 pending)");
    assert_eq!(reports["email"].checked, "4 orders, one confirmation each, sent");
    assert_eq!(reports["order-history"].checked, "4 orders of 2 customers, each in its customer's history");
    assert_eq!(
        reports["allocator"].checked,
        "2 skus (on hand, allocated within it, no stock idle while orders wait) and 4 orders decided"
    );
    assert!(
        reports["analytics"].checked.starts_with("4 orders, revenue EUR 12345 minor units in ["),
        "{:?}",
        reports["analytics"]
    );
    // Sales are read per day over whole hours, well within the API's 366 days.
    let queries = stores.lock().unwrap().sales_queries.clone();
    assert_eq!(queries.len(), 1);
    assert_eq!(queries[0]["bucket"], "day");
    assert!(queries[0]["from"].ends_with(":00:00Z"), "{queries:?}");
    // The command itself succeeds.
    orderflow_cli::run(cli(&run.expect_file, &url, &[])).await.unwrap();
}

#[tokio::test]
async fn each_store_reports_its_differences_and_the_command_exits_3() {
    let expected = sample_run();
    let mut stores = matching(&expected);
    stores.fulfillments.insert("simtest-ord-00000".into(), "pending".into());
    stores.fulfillments.remove("simtest-ord-00003");
    stores.emails.insert("simtest-ord-00001".into(), vec!["failed".into()]);
    stores.emails.insert("simtest-ord-00002".into(), vec!["sent".into(), "sent".into()]);
    stores.emails.remove("simtest-ord-00003");
    stores.sales[0].2 += 1;
    stores.units.insert("simtest-SKU-001".into(), 3);
    stores.inventory.get_mut("simtest-SKU-000").unwrap()["on_hand"] = json!(41);
    stores.inventory.remove("simtest-SKU-001");
    stores.histories.get_mut("simtest-cust-1").unwrap().retain(|id| id != "simtest-ord-00003");
    let oversold = stores.stock.get_mut("simtest-SKU-000").unwrap();
    oversold["warehouses"][1]["allocated"] = json!(11);
    oversold["available"] = json!(2);
    oversold["backordered"] = json!(1);
    stores.decided.remove("simtest-ord-00002");
    let (url, _stores) = serve(stores).await;
    let run = write_expected(&expected);

    let reports = verify(&args(cli(&run.expect_file, &url, &[]))).await.unwrap();

    let reports = by_store(&reports);
    assert_eq!(
        reports["fulfillment"].differences,
        [
            "simtest-ord-00000: status pending, expected shipped",
            "simtest-ord-00003: no fulfillment (404), expected pending"
        ]
    );
    assert_eq!(
        reports["email"].differences,
        [
            "simtest-ord-00001: email failed after 0 attempt(s), expected sent",
            "simtest-ord-00002: 2 emails, expected one",
            "simtest-ord-00003: no email"
        ]
    );
    assert_eq!(
        reports["analytics"].differences,
        ["EUR: revenue 12346 minor units, expected 12345", "simtest-SKU-001: 3 units ordered, expected 2"]
    );
    assert_eq!(
        reports["inventory-projection"].differences,
        ["simtest-SKU-000: on_hand 41 (expected 40)", "simtest-SKU-001: no inventory (404), expected on_hand 0"]
    );
    assert_eq!(reports["order-history"].differences, ["simtest-cust-1: missing simtest-ord-00003"]);
    assert_eq!(
        reports["allocator"].differences,
        [
            "simtest-SKU-000: \"wh-1\" allocates 11 units of 10 on hand, 2 units available while 1 are backordered",
            "simtest-ord-00002: not decided"
        ]
    );

    let error = orderflow_cli::run(cli(&run.expect_file, &url, &[])).await.unwrap_err();
    assert_eq!(orderflow_cli::exit_code(&error), 3);
    assert!(
        error.to_string().starts_with("6 of 6 read store(s) do not match")
            && error
                .to_string()
                .ends_with("fulfillment, email, analytics, inventory-projection, order-history, allocator"),
        "{error}"
    );
}

#[tokio::test]
async fn a_report_shows_the_first_differences_only() {
    let mut expected = sample_run();
    for i in 4..20 {
        expected.pending_orders.insert(format!("simtest-ord-{i:05}"));
    }
    let mut stores = matching(&sample_run());
    stores.emails.clear();
    let (url, _stores) = serve(stores).await;
    let run = write_expected(&expected);

    let reports = verify(&args(cli(&run.expect_file, &url, &[]))).await.unwrap();

    let email = by_store(&reports)["email"].clone();
    assert_eq!(email.differences.len(), 20);
    let shown = orderflow_cli::verify::format_report(&email, 3);
    assert_eq!(
        shown,
        "email                DIFFERS  20 difference(s); checked 20 orders, one confirmation each, sent\n    simtest-ord-00000: no email\n    simtest-ord-00001: no email\n    simtest-ord-00002: no email\n    ... and 17 more\n"
    );
}

#[tokio::test]
async fn wait_polls_until_the_sender_delivered() {
    let expected = sample_run();
    let mut stores = matching(&expected);
    stores.email_queued_polls = 4 * 3; // three rounds of four orders: the check once, then two polls
    let (url, stores) = serve(stores).await;
    let run = write_expected(&expected);

    let once = verify(&args(cli(&run.expect_file, &url, &[]))).await.unwrap();
    assert!(!by_store(&once)["email"].ok());
    assert!(by_store(&once)["email"].differences[0].contains("email queued"), "{once:?}");

    let waited = verify(&args(cli(&run.expect_file, &url, &["--wait", "20s"]))).await.unwrap();
    assert!(waited.iter().all(StoreReport::ok), "{waited:?}");
    assert_eq!(stores.lock().unwrap().email_queued_polls, 0);
}

#[tokio::test]
async fn wait_gives_up_at_its_deadline_with_the_last_differences() {
    let expected = sample_run();
    let mut stores = matching(&expected);
    stores.fulfillments.insert("simtest-ord-00000".into(), "pending".into());
    let (url, _stores) = serve(stores).await;
    let run = write_expected(&expected);

    let started = std::time::Instant::now();
    let reports = verify(&args(cli(&run.expect_file, &url, &["--wait", "700ms"]))).await.unwrap();

    assert!(started.elapsed() >= std::time::Duration::from_millis(700));
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(by_store(&reports)["fulfillment"].differences, ["simtest-ord-00000: status pending, expected shipped"]);
}

#[tokio::test]
async fn the_read_token_is_sent_as_a_bearer_token_when_given() {
    let expected = sample_run();
    let mut stores = matching(&expected);
    stores.token = Some("read-secret".into());
    let (url, _stores) = serve(stores).await;
    let run = write_expected(&expected);

    let without = verify(&args(cli(&run.expect_file, &url, &[]))).await.unwrap();
    for report in &without {
        // One line per store: a store that refuses the client is not read any further.
        assert_eq!(report.differences.len(), 1, "{report:?}");
        assert!(report.differences[0].contains("HTTP 401 a bearer token is required"), "{report:?}");
    }

    let with = verify(&args(cli(&run.expect_file, &url, &["--read-token", "read-secret"]))).await.unwrap();
    assert!(with.iter().all(StoreReport::ok), "{with:?}");
}

#[tokio::test]
async fn a_baseline_takes_out_the_sales_of_earlier_runs() {
    // Earlier runs sold in the same hours.
    let mut stores = matching(&sample_run());
    stores.sales = vec![("EUR".into(), 5, 1000), ("CHF".into(), 1, 50)];
    let (url, shared) = serve(stores).await;
    let dir = tempfile::tempdir().unwrap();
    let baseline = dir.path().join("before.json");
    let baseline = baseline.to_str().unwrap();
    let save = Cli::parse_from(["orderflow", "verify", "--save-analytics-baseline", baseline, "--analytics-url", &url]);
    orderflow_cli::run(save).await.unwrap();

    // This run starts after the baseline and adds its own sales.
    let mut expected = sample_run();
    expected.started_at = Utc::now();
    expected.finished_at = expected.started_at + TimeDelta::milliseconds(10);
    shared.lock().unwrap().sales.extend([("EUR".into(), 4, 12_345)]);
    let run = write_expected(&expected);

    let with = verify(&args(cli(&run.expect_file, &url, &["--analytics-baseline", baseline]))).await.unwrap();
    assert!(by_store(&with)["analytics"].ok(), "{with:?}");

    let without = verify(&args(cli(&run.expect_file, &url, &[]))).await.unwrap();
    assert_eq!(
        by_store(&without)["analytics"].differences,
        [
            "CHF: 1 orders, expected 0",
            "CHF: revenue 50 minor units, expected 0",
            "EUR: 9 orders, expected 4",
            "EUR: revenue 13345 minor units, expected 12345"
        ]
    );

    // A baseline taken after the run started cannot tell the run's sales apart.
    let saved: orderflow_cli::verify::AnalyticsBaseline =
        serde_json::from_slice(&std::fs::read(baseline).unwrap()).unwrap();
    let mut late = sample_run();
    late.started_at = saved.taken_at - TimeDelta::seconds(1);
    let run = write_expected(&late);
    let error = verify(&args(cli(&run.expect_file, &url, &["--analytics-baseline", baseline]))).await.unwrap_err();
    assert!(error.to_string().contains("record the baseline right before the load"), "{error}");
}

#[tokio::test]
async fn unreadable_inputs_are_clear_errors_with_exit_code_1() {
    let (url, _stores) = serve(matching(&sample_run())).await;
    let run = write_expected(&sample_run());

    let missing = run.dir_path.join("nope.json");
    let error = orderflow_cli::run(cli(missing.to_str().unwrap(), &url, &[])).await.unwrap_err();
    assert_eq!(orderflow_cli::exit_code(&error), 1);
    assert!(format!("{error:#}").contains("Failed to read the expected totals"), "{error:#}");

    let old = run.dir_path.join("old.json");
    std::fs::write(&old, r#"{"run_id": "x", "events": 1, "orders": 1}"#).unwrap();
    let error = orderflow_cli::run(cli(old.to_str().unwrap(), &url, &[])).await.unwrap_err();
    let message = format!("{error:#}");
    assert!(message.contains("is not an expected-totals file") && message.contains("missing field"), "{message}");

    let error = Cli::try_parse_from(["orderflow", "verify", "--expect-file", "x", "--wait", "soon"]).unwrap_err();
    assert!(error.to_string().contains("invalid duration 'soon'"), "{error}");
    let error =
        Cli::try_parse_from(["orderflow", "verify", "--expect-file", "x", "--email-url", "not a url"]).unwrap_err();
    assert!(error.to_string().contains("--email-url"), "{error}");
    assert!(Cli::try_parse_from(["orderflow", "verify"]).is_err(), "--expect-file is required");
}

#[tokio::test]
async fn a_store_that_does_not_answer_is_one_difference_naming_it() {
    let expected = sample_run();
    let (url, _stores) = serve(matching(&expected)).await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let run = write_expected(&expected);

    let reports = verify(&args(cli(&run.expect_file, &url, &["--inventory-url", &closed]))).await.unwrap();

    let reports = by_store(&reports);
    assert!(reports["fulfillment"].ok());
    let inventory = &reports["inventory-projection"].differences;
    assert_eq!(inventory.len(), 1, "{inventory:?}");
    assert!(inventory[0].starts_with(&format!("GET {closed}/v1/inventory/simtest-SKU-000: ")), "{inventory:?}");
}
