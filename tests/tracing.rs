//! One trace from an HTTP request to a read store: the real `ingress` and `fulfillment`
//! binaries export their spans over OTLP/HTTP to a collector inside this test, against the
//! real broker and Postgres.

use std::net::TcpListener as StdListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use orderflow_testkit::process::BinaryProcess;
use orderflow_testkit::{fresh_group, fresh_topic, unique_ident, wait_until};
use prost::Message;
use serde_json::{Value, json};

const TOKEN: &str = "tok-tracing-0123456789";

/// A span as the collector received it, with the `service.name` of the process that sent it.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    span: Span,
}

type Spans = Arc<Mutex<Vec<Received>>>;

/// An OTLP/HTTP collector on port 0 that keeps every span it is sent. Returns its base URL.
async fn start_collector() -> (String, Spans) {
    async fn traces(State(spans): State<Spans>, body: Bytes) -> Vec<u8> {
        let request = ExportTraceServiceRequest::decode(body).expect("a valid ExportTraceServiceRequest");
        let mut spans = spans.lock().unwrap();
        for resource_spans in request.resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|r| string_attribute(&r.attributes, "service.name"))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans.into_iter().map(|span| Received { service: service.clone(), span }));
            }
        }
        ExportTraceServiceResponse::default().encode_to_vec()
    }
    let spans = Spans::default();
    let app = axum::Router::new().route("/v1/traces", post(traces)).with_state(spans.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, spans)
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()
}

fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attribute(attributes, key)? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn int_attribute(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match attribute(attributes, key)? {
        any_value::Value::IntValue(i) => Some(*i),
        _ => None,
    }
}

/// A port nobody listens on right now, for a binary's `--listen`.
fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The first span `service` sent named `name` in trace `trace_id`.
async fn wait_for_span(spans: &Spans, service: &str, name: &str, trace_id: &str) -> Span {
    let what = format!("{service} to export a {name:?} span of trace {trace_id}");
    wait_until(&what, Duration::from_secs(60), || async {
        let spans = spans.lock().unwrap();
        spans
            .iter()
            .find(|r| r.service == service && r.span.name == name && hex(&r.span.trace_id) == trace_id)
            .map(|r| r.span.clone())
    })
    .await
}

// Two worker threads: `BinaryProcess::terminate` blocks its thread while the binaries flush
// their spans to the collector, which must keep answering on another thread meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_the_ingress_request_to_the_consumers_event_span() {
    // Arrange: a collector, fresh topics, the ingress and fulfillment exporting to the collector.
    let (collector, spans) = start_collector().await;
    let orders = fresh_topic("trace-orders", 2).await;
    let inventory = fresh_topic("trace-inventory", 1).await;
    let schema = unique_ident("trace");
    let group = fresh_group("trace");
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("LOG_FORMAT", "json"),
        ("RUST_LOG", "info"),
    ];
    let ingress_addr = format!("127.0.0.1:{}", free_port());
    let tokens = format!("checkout:{TOKEN}");
    let mut ingress_env = vec![
        ("INGRESS_TOKENS", tokens.as_str()),
        ("INGRESS_ORDERS_TOPIC", orders.as_str()),
        ("INGRESS_INVENTORY_TOPIC", inventory.as_str()),
    ];
    ingress_env.extend(otel);
    let mut ingress = BinaryProcess::spawn("ingress", &["--listen", &ingress_addr], &ingress_env).unwrap();
    let consumer_addr = format!("127.0.0.1:{}", free_port());
    let dlq = format!("{orders}.dlq");
    let args =
        ["--listen", &consumer_addr, "--topic", &orders, "--topic", &inventory, "--schema", &schema, "--group", &group];
    let mut fulfillment =
        BinaryProcess::spawn("fulfillment", &args, &[otel.as_slice(), &[("DLQ_TOPIC", dlq.as_str())]].concat())
            .unwrap();
    let http = reqwest::Client::new();
    for (what, url) in [("the ingress", &ingress_addr), ("fulfillment", &consumer_addr)] {
        wait_until(&format!("{what} to answer /healthz"), Duration::from_secs(60), || async {
            let response = http.get(format!("http://{url}/healthz")).send().await.ok()?;
            response.status().is_success().then_some(())
        })
        .await;
    }

    // Act: the checkout service posts an order inside its own trace.
    let trace_id = format!("{:032x}", rand::random::<u128>() | 1);
    let caller_span = "00f067aa0ba902b7";
    let response = http
        .post(format!("http://{ingress_addr}/v1/orders"))
        .bearer_auth(TOKEN)
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&json!({
            "order_id": "o-traced",
            "customer": {"id": "c-1", "email": "ada@example.com", "name": "Ada Lovelace"},
            "currency": "EUR",
            "lines": [{"sku": "sku-1", "quantity": 2, "unit_price_minor": 1999}],
            "total_minor": 3998,
            "shipping_address": {"line1": "1 Main St", "city": "Zurich", "postal_code": "8000", "country": "CH"}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let echoed = response.headers()["traceparent"].to_str().unwrap().to_owned();
    let accepted: Value = response.json().await.unwrap();
    wait_until("fulfillment to store the order", Duration::from_secs(60), || async {
        let url = format!("http://{consumer_addr}/v1/fulfillments/o-traced");
        let response = http.get(url).bearer_auth(orderflow_testkit::API_TOKEN).send().await.ok()?;
        (response.status().as_u16() == 200).then_some(())
    })
    .await;

    // Assert: the ingress span continues the caller's trace, and is what the record carried.
    let request = wait_for_span(&spans, "ingress", "ingress_request", &trace_id).await;
    assert_eq!(hex(&request.parent_span_id), caller_span, "the caller's span is the request span's parent");
    assert_eq!(echoed, format!("00-{trace_id}-{}-01", hex(&request.span_id)), "the response names the request span");
    assert_eq!(string_attribute(&request.attributes, "route").as_deref(), Some("/v1/orders"));

    // The consumer's event span is a child of the ingress span, and says which event it is.
    let event = wait_for_span(&spans, "fulfillment", "event", &trace_id).await;
    assert_eq!(hex(&event.parent_span_id), hex(&request.span_id), "the ingress span is the event span's parent");
    let attrs = &event.attributes;
    assert_eq!(string_attribute(attrs, "event_id").as_deref(), accepted["event_id"].as_str());
    assert_eq!(string_attribute(attrs, "order_id").as_deref(), Some("o-traced"));
    assert_eq!(string_attribute(attrs, "topic").as_deref(), Some(orders.as_str()));
    assert_eq!(int_attribute(attrs, "partition"), accepted["partition"].as_i64());
    assert_eq!(int_attribute(attrs, "offset"), accepted["offset"].as_i64());
    assert_eq!(string_attribute(attrs, "consumer").as_deref(), Some("fulfillment"));
    assert_eq!(string_attribute(attrs, "event_type").as_deref(), Some("orderflow.order.placed.v1"));
    // ...and is linked to the batch span that applied it (a trace of the consumer's own).
    assert_eq!(event.links.len(), 1, "one link, to the batch: {:?}", event.links);
    let batch_trace = hex(&event.links[0].trace_id);
    let batch = wait_for_span(&spans, "fulfillment", "batch", &batch_trace).await;
    assert_eq!(hex(&batch.span_id), hex(&event.links[0].span_id));

    // The ingress's log lines inside the request carry the trace id, so logs join the trace.
    let logged = ingress.output();
    let line = logged
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["fields"]["message"] == "request done" && l["span"]["trace_id"] == trace_id.as_str());
    assert!(line.is_some(), "a JSON 'request done' line with trace_id {trace_id}:\n{logged}");

    // Both stop cleanly on SIGTERM (flushing their spans on the way out).
    assert!(ingress.terminate(Duration::from_secs(30)).unwrap().success(), "{}", ingress.output());
    assert!(fulfillment.terminate(Duration::from_secs(60)).unwrap().success(), "{}", fulfillment.output());
}
