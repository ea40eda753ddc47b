//! The alert rules and the dashboard (`deploy/prometheus/alerts.yml`, `deploy/grafana/
//! orderflow.json`) are real: `promtool` checks and unit-tests the rules, and every metric the
//! rules and the dashboard use is exported by the binaries they watch, started here with
//! their shipped defaults (a metric renamed in the code fails this test, not the pager).

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use orderflow_testkit::events::order_request;
use orderflow_testkit::process::BinaryProcess;
use orderflow_testkit::{fresh_topic, repo_root, unique_ident, wait_until};

const TOKEN: &str = "tok-alerts-0123456789";

fn free_addr() -> String {
    format!("127.0.0.1:{}", TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port())
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo_root().join("deploy/prometheus"))
        .output()
        .expect("promtool runs (Debian's prometheus package; scripts/stack installs it)");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?}:\n{said}");
    said
}

/// Metric names in PromQL expressions: ours start with `orderflow_`, `ingress_` or
/// `outbox_relay_`; a histogram's `_bucket` is its name.
fn metric_names(exprs: &[String]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for expr in exprs {
        let mut word = String::new();
        for c in expr.chars().chain(std::iter::once(' ')) {
            if c.is_ascii_alphanumeric() || c == '_' {
                word.push(c);
                continue;
            }
            if ["orderflow_", "ingress_", "outbox_relay_"].iter().any(|p| word.starts_with(p)) {
                names.insert(word.strip_suffix("_bucket").unwrap_or(&word).to_owned());
            }
            word.clear();
        }
    }
    names
}

fn used_metrics() -> BTreeSet<String> {
    let rules: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(repo_root().join("deploy/prometheus/alerts.yml")).unwrap())
            .unwrap();
    let mut exprs = Vec::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            exprs.push(rule["expr"].as_str().unwrap().to_owned());
        }
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join("deploy/grafana/orderflow.json")).unwrap())
            .unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    metric_names(&exprs)
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    assert!(promtool(&["check", "rules", "alerts.yml"]).contains("SUCCESS"));
    assert!(promtool(&["test", "rules", "alerts.test.yml"]).contains("SUCCESS"));
    // Every alert has a unit test.
    let rules = std::fs::read_to_string(repo_root().join("deploy/prometheus/alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(repo_root().join("deploy/prometheus/alerts.test.yml")).unwrap();
    for line in rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")) {
        assert!(tests.contains(&format!("alertname: {line}")), "alert {line} has no promtool test");
    }
}

#[tokio::test]
async fn every_metric_the_rules_and_the_dashboard_use_is_exported_by_the_binaries() {
    // Arrange: the ingress, a consumer of each kind the rules watch, and the outbox relay.
    let orders = fresh_topic("alerts-orders", 1).await;
    let inventory = fresh_topic("alerts-inventory", 1).await;
    let ns = unique_ident("alerts");
    let ingress = free_addr();
    let tokens = format!("checkout:{TOKEN}");
    let key_schema = format!("{ns}_ingress");
    let mut processes = vec![
        BinaryProcess::spawn(
            "ingress",
            &["--listen", &ingress],
            &[
                ("INGRESS_TOKENS", &tokens),
                ("INGRESS_ORDERS_TOPIC", &orders),
                ("INGRESS_INVENTORY_TOPIC", &inventory),
                ("INGRESS_IDEMPOTENCY_SCHEMA", &key_schema),
                ("INGRESS_RATE_LIMITS", "*=1000/1000"),
            ],
        )
        .unwrap(),
    ];
    let mut scraped = vec![ingress.clone()];
    for (binary, topics) in [("fulfillment", vec![&orders, &inventory]), ("email", vec![&orders])] {
        let addr = free_addr();
        let (schema, group) = (format!("{ns}_{binary}"), format!("{ns}.{binary}"));
        let dlq = format!("{group}.dlq");
        let mut args = vec!["--listen", &addr, "--schema", &schema, "--group", &group, "--dlq-topic", &dlq];
        for topic in &topics {
            args.extend(["--topic", topic.as_str()]);
        }
        processes.push(BinaryProcess::spawn(binary, &args, &[("SMTP_URL", "smtp://127.0.0.1:1")]).unwrap());
        scraped.push(addr);
    }
    let relay = free_addr();
    let outbox = unique_ident("alerts_outbox");
    processes.push(
        BinaryProcess::spawn(
            "outbox-relay",
            &["--listen", &relay],
            &[("OUTBOX_SCHEMA", &outbox), ("OUTBOX_ORDERS_TOPIC", &orders), ("OUTBOX_INVENTORY_TOPIC", &inventory)],
        )
        .unwrap(),
    );
    scraped.push(relay);
    let http = reqwest::Client::new();
    for addr in &scraped {
        wait_until(&format!("{addr} to answer /healthz"), Duration::from_secs(60), || async {
            http.get(format!("http://{addr}/healthz")).send().await.ok().filter(|r| r.status().is_success())
        })
        .await;
    }

    // Act: one order (with a key, twice), so the request and batch series exist.
    for _ in 0..2 {
        let response = http
            .post(format!("http://{ingress}/v1/orders"))
            .bearer_auth(TOKEN)
            .header("Idempotency-Key", "alerts-1")
            .json(&order_request("alerts-1", &[("sku-1", 1)]))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }

    // Assert: every metric used is on some /metrics page, once the order went through.
    let used = used_metrics();
    assert!(used.len() >= 15, "{used:?}");
    let last_missing = std::sync::Mutex::new(Vec::new());
    let found = tokio::time::timeout(Duration::from_secs(45), async {
        wait_until("every metric the rules and the dashboard use", Duration::from_secs(60), || async {
            let mut exported = String::new();
            for addr in &scraped {
                exported.push_str(&http.get(format!("http://{addr}/metrics")).send().await.ok()?.text().await.ok()?);
            }
            let names: BTreeSet<&str> = exported
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split(['{', ' ']).next())
                .map(|n| n.strip_suffix("_bucket").unwrap_or(n))
                .collect();
            let missing: Vec<String> = used.iter().filter(|m| !names.contains(m.as_str())).cloned().collect();
            let done = missing.is_empty();
            *last_missing.lock().unwrap() = missing;
            done.then_some(())
        })
        .await
    })
    .await;
    assert!(
        found.is_ok(),
        "used by the rules or the dashboard, exported by no binary: {:?}",
        last_missing.lock().unwrap()
    );
    drop(processes);
}
