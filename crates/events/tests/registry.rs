//! Confluent wire format against a Schema Registry speaking the documented REST protocol,
//! served in-process (axum on 127.0.0.1:0) with request counters.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use orderflow_events::{Codec, DecodeError, EncodeError, Event, samples};
use serde_json::{Value, json};

#[derive(Default)]
struct Registry {
    schemas: Mutex<Vec<String>>,
    subjects: Mutex<HashMap<String, Vec<u32>>>,
    registers: AtomicUsize,
    fetches: AtomicUsize,
}

async fn register(
    State(r): State<Arc<Registry>>,
    Path(subject): Path<String>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    r.registers.fetch_add(1, Ordering::SeqCst);
    let Some(schema) = body.get("schema").and_then(Value::as_str) else {
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"error_code": 42201, "message": "Invalid schema"})));
    };
    let mut schemas = r.schemas.lock().unwrap();
    let id = match schemas.iter().position(|s| s == schema) {
        Some(i) => i as u32 + 1,
        None => {
            schemas.push(schema.to_owned());
            schemas.len() as u32
        }
    };
    r.subjects.lock().unwrap().entry(subject).or_default().push(id);
    (StatusCode::OK, Json(json!({"id": id})))
}

async fn by_id(State(r): State<Arc<Registry>>, Path(id): Path<u32>) -> (StatusCode, Json<Value>) {
    r.fetches.fetch_add(1, Ordering::SeqCst);
    match r.schemas.lock().unwrap().get((id as usize).wrapping_sub(1)) {
        Some(s) => (StatusCode::OK, Json(json!({"schema": s}))),
        None => (StatusCode::NOT_FOUND, Json(json!({"error_code": 40403, "message": "Schema not found"}))),
    }
}

async fn spawn_registry() -> (String, Arc<Registry>) {
    let state = Arc::new(Registry::default());
    let app = Router::new()
        .route("/subjects/{subject}/versions", post(register))
        .route("/schemas/ids/{id}", get(by_id))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, state)
}

fn events() -> Vec<Event> {
    vec![samples::order_placed().into(), samples::inventory_changed().into()]
}

#[tokio::test]
async fn wire_format_round_trip_registers_once_per_subject_and_caches_ids() {
    let (url, reg) = spawn_registry().await;
    let producer = Codec::with_registry(&url).unwrap();
    for _ in 0..3 {
        for e in events() {
            let b = producer.encode(&e).await.unwrap();
            assert_eq!(b[0], 0x00);
            assert_eq!(producer.decode(&b).await.unwrap(), e);
        }
    }
    assert_eq!(reg.registers.load(Ordering::SeqCst), 2, "one registration per subject");
    assert_eq!(reg.fetches.load(Ordering::SeqCst), 0, "ids the producer registered need no fetch");
    let subjects = reg.subjects.lock().unwrap().keys().cloned().collect::<std::collections::BTreeSet<_>>();
    assert_eq!(subjects.into_iter().collect::<Vec<_>>(), ["inventory.v1-value", "orders.v1-value"]);

    // A separate consumer fetches each id once, then decodes from its cache.
    let consumer = Codec::with_registry(&url).unwrap();
    for _ in 0..5 {
        for e in events() {
            let b = producer.encode(&e).await.unwrap();
            assert_eq!(consumer.decode(&b).await.unwrap(), e);
        }
    }
    assert_eq!(reg.fetches.load(Ordering::SeqCst), 2, "one GET /schemas/ids per id");
    // Clones share the cache.
    let b = producer.encode(&events()[0]).await.unwrap();
    consumer.clone().decode(&b).await.unwrap();
    assert_eq!(reg.fetches.load(Ordering::SeqCst), 2);
    // The registry codec still reads single-object values.
    let so = Codec::new().encode_single_object(&events()[1]).unwrap();
    assert_eq!(consumer.decode(&so).await.unwrap(), events()[1]);
}

#[tokio::test]
async fn a_record_for_another_topic_registers_under_that_topics_subject_once() {
    let (url, reg) = spawn_registry().await;
    let producer = Codec::with_registry(&url).unwrap();
    let order = events().remove(0);
    for _ in 0..3 {
        let b = producer.encode_to("staging.orders.v1", &order).await.unwrap();
        assert_eq!(producer.decode(&b).await.unwrap(), order);
    }
    producer.encode(&order).await.unwrap();
    assert_eq!(reg.registers.load(Ordering::SeqCst), 2, "one registration per subject");
    let subjects = reg.subjects.lock().unwrap().keys().cloned().collect::<std::collections::BTreeSet<_>>();
    assert_eq!(subjects.into_iter().collect::<Vec<_>>(), ["orders.v1-value", "staging.orders.v1-value"]);
}

#[tokio::test]
async fn unknown_schema_id_is_a_permanent_error() {
    let (url, _reg) = spawn_registry().await;
    let codec = Codec::with_registry(&url).unwrap();
    let e = codec.decode(&[0, 0, 0, 0, 42, 2]).await.unwrap_err();
    assert!(matches!(e, DecodeError::UnknownSchemaId(42)), "{e}");
    assert!(!e.is_transient());
}

#[tokio::test]
async fn unreachable_registry_is_transient() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let codec = Codec::with_registry(&format!("http://127.0.0.1:{port}")).unwrap();
    let e = codec.decode(&[0, 0, 0, 0, 1, 2]).await.unwrap_err();
    assert!(matches!(e, DecodeError::RegistryUnavailable(_)) && e.is_transient(), "{e}");
    let e = codec.encode(&events()[0]).await.unwrap_err();
    assert!(matches!(e, EncodeError::RegistryUnavailable(_)) && e.is_transient(), "{e}");
}

#[tokio::test]
async fn other_writer_versions_resolve_and_foreign_schemas_are_rejected() {
    let (url, reg) = spawn_registry().await;
    let codec = Codec::with_registry(&url).unwrap();
    // An older InventoryChanged writer without order_id.
    let registry = codec.registry().unwrap();
    let id = registry.register("inventory.v1-value", common::INVENTORY_V0).await.unwrap();
    let datum = common::inventory_v0_datum("01935f2a-7c00-7000-8000-00000000000a", "SKU-1", -3, 1);
    let b = common::confluent_frame(id, &datum);
    // A fresh codec must fetch v0 and resolve it.
    let fresh = Codec::with_registry(&url).unwrap();
    let Event::InventoryChanged(e) = fresh.decode(&b).await.unwrap() else { panic!("wrong type") };
    assert_eq!((e.sku.as_str(), e.delta.get(), e.order_id), ("SKU-1", -3, None));

    // A record that is not an orderflow event.
    let foreign =
        r#"{"type":"record","name":"Payment","namespace":"com.example","fields":[{"name":"x","type":"long"}]}"#;
    let id = codec.registry().unwrap().register("payments-value", foreign).await.unwrap();
    let b = common::confluent_frame(id, &[2]);
    let e = fresh.decode(&b).await.unwrap_err();
    assert!(matches!(&e, DecodeError::UnknownType(n) if n == "com.example.Payment"), "{e}");
    let before = reg.fetches.load(Ordering::SeqCst);
    assert!(fresh.decode(&b).await.is_err());
    assert_eq!(reg.fetches.load(Ordering::SeqCst), before, "unreadable writer schemas are cached too");
}
