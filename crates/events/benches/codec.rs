//! Codec throughput: encode and decode, both framings, a typical OrderPlaced (3 lines) and an
//! InventoryChanged. Targets: OrderPlaced <= 2 µs, InventoryChanged <= 1 µs per operation.
//! Also measures apache-avro's generic path (Value + resolution) for comparison.
//!
//! `cargo bench -p orderflow-events --bench codec -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use orderflow_events::schema::shipped;
use orderflow_events::{Codec, Event, avro_value, samples};

fn registry_codec(rt: &tokio::runtime::Runtime) -> (Codec, tokio::task::JoinHandle<()>) {
    // A tiny in-process registry (id 1 for orders, 2 for inventory), so the wire-format path
    // with cached ids is measured without network I/O in the loop.
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/subjects/{s}/versions",
        post(|axum::extract::Path(s): axum::extract::Path<String>| async move {
            axum::Json(serde_json::json!({"id": if s.starts_with("orders") { 1 } else { 2 }}))
        }),
    );
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    (Codec::with_registry(&url).unwrap(), server)
}

/// Polls a future that must complete without waiting (single-object, cached ids): measures the
/// codec, not an executor.
fn now<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("codec awaited on a path that must not"),
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let single = Codec::new();
    let (wire, server) = registry_codec(&rt);
    let cases: [(&str, Event); 2] = [
        ("order_placed_3_lines", samples::order_placed().into()),
        ("inventory_changed", samples::inventory_changed().into()),
    ];
    for (name, event) in &cases {
        let so = single.encode_single_object(event).unwrap();
        // Registers on first use; later encodes and decodes use the cached id.
        let cw = rt.block_on(wire.encode(event)).unwrap();
        let mut g = c.benchmark_group(*name);
        g.bench_function("encode/single_object", |b| b.iter(|| now(single.encode(black_box(event))).unwrap()));
        g.bench_function("decode/single_object", |b| b.iter(|| now(single.decode(black_box(&so))).unwrap()));
        g.bench_function("encode/confluent_cached_id", |b| b.iter(|| now(wire.encode(black_box(event))).unwrap()));
        g.bench_function("decode/confluent_cached_id", |b| b.iter(|| now(wire.decode(black_box(&cw))).unwrap()));
        // The generic apache-avro path (used for other writer versions), for comparison.
        let schema = &shipped().current(event.kind()).schema;
        g.bench_function("encode/apache_avro_value", |b| {
            b.iter(|| apache_avro::to_avro_datum(schema, avro_value::to_value(black_box(event))).unwrap())
        });
        g.bench_function("decode/apache_avro_resolve", |b| {
            b.iter(|| {
                let v = apache_avro::from_avro_datum(schema, &mut &so[10..], Some(schema)).unwrap();
                avro_value::from_value(event.kind(), &v).unwrap()
            })
        });
        g.finish();
    }
    server.abort();
}

criterion_group!(benches, bench);
criterion_main!(benches);
