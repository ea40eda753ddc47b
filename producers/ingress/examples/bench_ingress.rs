//! Ingress throughput and latency against the machine's own ceiling, in one run:
//!
//! 1. raw produce: `Publisher::publish_all` of N orders straight to a fresh topic;
//! 2. ingress: N `POST /v1/orders` (each its own request, `--concurrency` in flight) to an
//!    in-process ingress publishing to another fresh topic; requests/s and p50/p99 latency.
//!
//! `cargo run -p orderflow-ingress --example bench_ingress --release -- [N] [CONCURRENCY]`
//! (defaults 20000 and 64). Needs the local broker (`KAFKA_BROKERS`, default 127.0.0.1:9092).

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use orderflow_events::{Codec, Event};
use orderflow_ingress::IngressConfig;
use orderflow_ingress::config::Secret;
use orderflow_publisher::Publisher;
use orderflow_testkit::{fresh_topic, kafka_args};

const TOKEN: &str = "bench-token-0123456789";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(20_000);
    let concurrency: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(64);
    let orders: Vec<Event> = (0..n)
        .map(|i| orderflow_testkit::events::order(&format!("bench-{i}"), &[("SKU-1", 2), ("SKU-2", 1)]))
        .collect();

    // 1. Raw produce ceiling, same producer settings.
    let raw_topic = fresh_topic("bench-raw", 6).await;
    let publisher = Publisher::new(&kafka_args(), Codec::new(), "bench")?.with_topics(&raw_topic, &raw_topic);
    let started = Instant::now();
    let failed = publisher.publish_all(&orders, None).await.into_iter().filter(Result::is_err).count();
    let raw = started.elapsed();
    anyhow::ensure!(failed == 0, "{failed} raw publishes failed");
    println!("raw produce: {n} events in {raw:.2?} = {:.0} events/s", n as f64 / raw.as_secs_f64());

    // 2. The ingress.
    let topic = fresh_topic("bench-ingress", 6).await;
    let mut config = IngressConfig::parse_from([
        "ingress",
        "--kafka-brokers",
        &kafka_args().brokers,
        "--orders-topic",
        &topic,
        "--inventory-topic",
        &topic,
    ]);
    config.tokens = Some(Secret(format!("bench:{TOKEN}")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1/orders", listener.local_addr()?);
    tokio::spawn(orderflow_ingress::run_with_listener(config, listener, std::future::pending()));
    let bodies: Vec<serde_json::Value> = orders.iter().map(body).collect();
    let http = Arc::new(reqwest::Client::builder().pool_max_idle_per_host(concurrency).build()?);
    let started = Instant::now();
    let mut latencies: Vec<Duration> = futures::stream::iter(bodies)
        .map(|b| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let t = Instant::now();
                let r = http.post(&url).bearer_auth(TOKEN).json(&b).send().await.expect("request");
                assert_eq!(r.status(), reqwest::StatusCode::ACCEPTED);
                t.elapsed()
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let total = started.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "ingress: {n} requests ({concurrency} in flight) in {total:.2?} = {:.0} requests/s, p50 {:.1?}, p99 {:.1?}",
        n as f64 / total.as_secs_f64(),
        pct(0.50),
        pct(0.99)
    );
    println!("ingress / raw produce = {:.0}%", 100.0 * raw.as_secs_f64() / total.as_secs_f64());
    Ok(())
}

/// The request body that produces `event` (the JSON shape of the API).
fn body(event: &Event) -> serde_json::Value {
    let Event::OrderPlaced(o) = event else { unreachable!() };
    serde_json::json!({
        "order_id": o.order_id.as_str(),
        "customer": {"id": "c-1", "email": "ada@example.com", "name": "Ada Lovelace"},
        "currency": "EUR",
        "lines": o.lines.iter().map(|l| serde_json::json!({"sku": l.sku.as_str(), "quantity": l.quantity.get(), "unit_price_minor": 250})).collect::<Vec<_>>(),
        "total_minor": o.lines.iter().map(|l| i64::from(l.quantity.get()) * 250).sum::<i64>(),
        "shipping_address": {"line1": "1 Main St", "city": "Zurich", "postal_code": "8000", "country": "CH"},
    })
}
