//! The HTTP APIs against their OpenAPI descriptions (docs/openapi/, docs/api.md): the committed
//! copies are what the code generates and what each service serves at `/openapi.json`, and
//! Schemathesis (tests/requirements.txt), run against the live ingress and each live read API
//! with its shipped defaults, finds no failure: every generated request, valid or not, gets an
//! answer the description allows (status, headers, body), never a 5xx. For the ingress, every
//! request that was not accepted published nothing: the topics hold exactly the events of the
//! 202 answers.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use orderflow_testkit::events::high_watermark_sum;
use orderflow_testkit::process::BinaryProcess;
use orderflow_testkit::{API_TOKEN, fresh_topic, repo_root, unique_ident, wait_until};
use serde_json::Value;

const INGRESS_TOKEN: &str = "tok-openapi-0123456789";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Schemathesis's `st`, beside the tests' Python (`ORDERFLOW_PYTHON`, set by `scripts/stack test`).
fn schemathesis() -> PathBuf {
    match std::env::var("ORDERFLOW_PYTHON") {
        Ok(python) => Path::new(&python).with_file_name("st"),
        Err(_) => PathBuf::from("st"),
    }
}

/// Run Schemathesis against the API at `addr` with `token`; panics with its report when it
/// finds a failure. Returns the exchanges it made (HAR entries).
fn fuzz(name: &str, addr: &str, token: &str) -> Vec<Value> {
    let report = tempfile::Builder::new().prefix("orderflow-schemathesis-").tempdir().unwrap();
    let har = report.path().join(format!("{name}.har"));
    let config = repo_root().join("tests/schemathesis/schemathesis.toml");
    let st = schemathesis();
    let output = Command::new(&st)
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(format!("http://{addr}/openapi.json"))
        .arg("--report-har-path")
        .arg(&har)
        .env("API_TOKEN", token)
        .env("NO_COLOR", "1")
        .current_dir(report.path())
        .output()
        .unwrap_or_else(|e| {
            panic!("starting {}: {e} (run `scripts/stack install`, or set ORDERFLOW_PYTHON)", st.display())
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "Schemathesis found failures in the {name} API ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let summary = stdout.lines().rev().find(|l| l.contains("passed") || l.contains("generated")).unwrap_or("");
    eprintln!("schemathesis {name}: {summary}");
    let har: Value = serde_json::from_str(&std::fs::read_to_string(&har).unwrap()).unwrap();
    let entries = har["log"]["entries"].as_array().cloned().unwrap_or_default();
    assert!(entries.len() >= 50, "{name}: only {} requests were made:\n{stdout}", entries.len());
    entries
}

fn header<'a>(entry: &'a Value, name: &str) -> Option<&'a str> {
    entry["response"]["headers"]
        .as_array()?
        .iter()
        .find(|h| h["name"].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))?["value"]
        .as_str()
}

async fn wait_ready(addr: &str) {
    wait_until(&format!("{addr} to be ready"), Duration::from_secs(60), || async {
        let response = reqwest::get(format!("http://{addr}/readyz")).await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;
}

/// What `addr` serves at `/openapi.json` is the committed description of `name`.
async fn serves_the_committed_description(name: &str, addr: &str) {
    let served = reqwest::get(format!("http://{addr}/openapi.json")).await.unwrap();
    assert_eq!(served.status(), 200);
    let served = served.text().await.unwrap();
    let committed = std::fs::read_to_string(repo_root().join(format!("docs/openapi/{name}.json"))).unwrap();
    assert!(served == committed, "{name} serves another description than docs/openapi/{name}.json");
}

#[test]
fn the_committed_descriptions_are_what_the_code_generates() {
    let output = Command::new(orderflow_testkit::process::bin_path("orderflow").unwrap())
        .args(["openapi", "--check", "--dir"])
        .arg(repo_root().join("docs/openapi"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn schemathesis_finds_nothing_in_the_ingress_and_refused_requests_publish_nothing() {
    orderflow_testkit::init_test_logs();
    let ns = unique_ident("openapi");
    let orders = fresh_topic("openapi-orders", 2).await;
    let inventory = fresh_topic("openapi-inventory", 2).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let tokens = format!("fuzzer:{INGRESS_TOKEN}");
    let key_schema = format!("{ns}_ingress");
    let _ingress = BinaryProcess::spawn(
        "ingress",
        &["--listen", &addr],
        &[
            ("INGRESS_TOKENS", tokens.as_str()),
            ("INGRESS_ORDERS_TOPIC", orders.as_str()),
            ("INGRESS_INVENTORY_TOPIC", inventory.as_str()),
            ("INGRESS_IDEMPOTENCY_SCHEMA", key_schema.as_str()),
        ],
    )
    .unwrap();
    wait_ready(&addr).await;
    serves_the_committed_description("ingress", &addr).await;

    let entries = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || fuzz("ingress", &addr, INGRESS_TOKEN)
    })
    .await
    .unwrap();

    // Every event the topics hold belongs to a 202 that was not a replayed answer.
    let (mut accepted_orders, mut accepted_changes, mut refused) = (0i64, 0i64, 0usize);
    for entry in &entries {
        let status = entry["response"]["status"].as_i64().unwrap_or(0);
        let url = entry["request"]["url"].as_str().unwrap_or("");
        if status != 202 {
            refused += 1;
            continue;
        }
        if header(entry, "idempotent-replayed") == Some("true") {
            continue;
        }
        let body: Value = serde_json::from_str(entry["request"]["postData"]["text"].as_str().unwrap_or("null"))
            .expect("an accepted request has a JSON body");
        if url.ends_with("/v1/orders") {
            accepted_orders += 1;
        } else if url.ends_with("/v1/inventory/changes") {
            accepted_changes += body["changes"].as_array().map_or(0, |c| c.len() as i64);
        } else {
            panic!("202 from {url}");
        }
    }
    assert!(refused > 0 && accepted_orders + accepted_changes > 0, "the fuzzer exercised both sides");
    let (orders_held, changes_held) = (high_watermark_sum(&orders), high_watermark_sum(&inventory));
    eprintln!(
        "ingress: {} requests, {refused} refused; accepted {accepted_orders} orders and {accepted_changes} changes; \
         the topics hold {orders_held} and {changes_held}",
        entries.len()
    );
    assert_eq!((orders_held, changes_held), (accepted_orders, accepted_changes));
}

#[tokio::test]
async fn schemathesis_finds_nothing_in_any_read_api() {
    orderflow_testkit::init_test_logs();
    let ns = unique_ident("openapi");
    // Each contract topic the consumers read, as a fresh topic of this test.
    let mut topics = std::collections::BTreeMap::new();
    for spec in orderflow_registry::CONSUMERS {
        for topic in spec.topics {
            if !topics.contains_key(topic) {
                topics.insert(*topic, fresh_topic(&format!("openapi-{}", topic.replace('.', "-")), 1).await);
            }
        }
    }
    let mut running = Vec::new();
    for spec in orderflow_registry::CONSUMERS {
        let addr = format!("127.0.0.1:{}", free_port());
        let (schema, group) = (format!("{ns}_{}", spec.schema()), format!("{ns}.{}", spec.name));
        let dlq = format!("{group}.dlq");
        let mut args = vec!["--listen", &addr, "--schema", &schema, "--group", &group, "--dlq-topic", &dlq];
        for topic in spec.topics {
            args.extend(["--topic", topics[topic].as_str()]);
        }
        let process = BinaryProcess::spawn(spec.binary, &args, &[]).unwrap();
        running.push((spec.name, addr, process));
    }
    for (name, addr, _) in &running {
        wait_ready(addr).await;
        serves_the_committed_description(name, addr).await;
    }
    for (name, addr, _) in &running {
        let (name, addr) = (name.to_string(), addr.clone());
        let entries = tokio::task::spawn_blocking(move || fuzz(&name, &addr, API_TOKEN)).await.unwrap();
        assert!(entries.iter().any(|e| e["response"]["status"] == 401), "the fuzzer tried without a token");
    }
}
