//! `orderflow schema check` against a real topic holding records of an old, the current and an
//! incompatible writer schema (Confluent framing, from a Schema Registry served in-process),
//! and single-object records whose writer schema this build does not ship.

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::types::Value;
use orderflow_cli::schema_check::{SchemaCheckArgs, SchemaCommand, check, render};
use orderflow_events::schema::shipped;
use orderflow_events::{Codec, EventKind};
use orderflow_testkit::events::order;
use orderflow_testkit::{fresh_topic, kafka_args};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// The current OrderPlaced schema without `shipping_address.line2`: an older writer the
/// current reader resolves (the reader's `line2` has a default).
fn old_schema() -> String {
    let mut schema: serde_json::Value = serde_json::from_str(shipped().current(EventKind::OrderPlaced).json).unwrap();
    let fields = schema["fields"].as_array_mut().unwrap();
    let address = fields.iter_mut().find(|f| f["name"] == "shipping_address").unwrap();
    address["type"]["fields"].as_array_mut().unwrap().retain(|f| f["name"] != "line2");
    schema.to_string()
}

/// The current schema with `total_minor` a string: no reader of this build can read it.
fn incompatible_schema() -> String {
    let mut schema: serde_json::Value = serde_json::from_str(shipped().current(EventKind::OrderPlaced).json).unwrap();
    let fields = schema["fields"].as_array_mut().unwrap();
    let total = fields.iter_mut().find(|f| f["name"] == "total_minor").unwrap();
    total["type"] = "string".into();
    schema.to_string()
}

/// A Schema Registry's `GET /schemas/ids/{id}`, in-process.
async fn registry(schemas: HashMap<u32, String>) -> String {
    use axum::extract::{Path, State};
    let schemas = Arc::new(schemas);
    let app = axum::Router::new()
        .route(
            "/schemas/ids/{id}",
            axum::routing::get(|State(schemas): State<Arc<HashMap<u32, String>>>, Path(id): Path<u32>| async move {
                match schemas.get(&id) {
                    Some(schema) => (axum::http::StatusCode::OK, axum::Json(serde_json::json!({"schema": schema}))),
                    None => (
                        axum::http::StatusCode::NOT_FOUND,
                        axum::Json(serde_json::json!({"error_code": 40403, "message": "Schema not found"})),
                    ),
                }
            }),
        )
        .with_state(schemas);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// A Confluent-framed record: `00`, the id, then the datum of `value` in `schema`.
fn confluent(id: u32, schema: &str, value: Value) -> Vec<u8> {
    let schema = apache_avro::Schema::parse_str(schema).unwrap();
    let mut bytes = vec![0];
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.extend(apache_avro::to_avro_datum(&schema, value).unwrap());
    bytes
}

/// An order as an Avro value of the current schema, optionally without `line2`, optionally
/// with `total_minor` as a string.
fn order_value(id: &str, drop_line2: bool, total_as_string: bool) -> Value {
    let Value::Record(mut fields) = orderflow_events::avro_value::to_value(&order(id, &[("sku-1", 2)])) else {
        unreachable!("an event is a record")
    };
    for (name, value) in fields.iter_mut() {
        if name == "shipping_address"
            && drop_line2
            && let Value::Record(address) = value
        {
            address.retain(|(field, _)| field != "line2");
        }
        if name == "total_minor" && total_as_string {
            *value = Value::String("500".into());
        }
    }
    Value::Record(fields)
}

#[tokio::test]
async fn the_check_groups_records_by_writer_schema_and_fails_on_the_ones_no_reader_can_read() {
    // Arrange: ids 1 (current), 2 (old, compatible), 3 (incompatible), 4 (not registered);
    // and single-object records, one with a fingerprint this build does not ship.
    let current = shipped().current(EventKind::OrderPlaced).json.to_owned();
    let url = registry(HashMap::from([(1, current.clone()), (2, old_schema()), (3, incompatible_schema())])).await;
    let topic = fresh_topic("schema-check", 2).await;
    let producer: FutureProducer = kafka_args().producer_config().create().unwrap();
    let mut records: Vec<Vec<u8>> = Vec::new();
    for i in 0..4 {
        records.push(confluent(1, &current, order_value(&format!("cur-{i}"), false, false)));
    }
    for i in 0..3 {
        records.push(confluent(2, &old_schema(), order_value(&format!("old-{i}"), true, false)));
    }
    records.push(confluent(3, &incompatible_schema(), order_value("bad-0", false, true)));
    records.push(confluent(4, &current, order_value("unregistered-0", false, false)));
    for i in 0..2 {
        records.push(Codec::new().encode_single_object(&order(&format!("so-{i}"), &[("sku-1", 1)])).unwrap());
    }
    let mut unknown = Codec::new().encode_single_object(&order("so-unknown", &[("sku-1", 1)])).unwrap();
    unknown[2..10].copy_from_slice(&[0xAB; 8]);
    records.push(unknown);
    for (i, value) in records.iter().enumerate() {
        let key = format!("k-{i}");
        producer
            .send(FutureRecord::to(&topic).key(&key).payload(value), std::time::Duration::from_secs(10))
            .await
            .unwrap();
    }

    // Act
    let args = SchemaCheckArgs { topic: topic.clone(), sample: None, schema_registry_url: Some(url), json: false };
    let report = check(&kafka_args(), &args).await.unwrap();

    // Assert: five writer groups, each with its count and verdict per reader of orders.
    let text = render(&report);
    let group =
        |writer: &str| report.groups.iter().find(|g| g.writer == writer).unwrap_or_else(|| panic!("{writer}:\n{text}"));
    assert_eq!(report.scanned, records.len() as u64);
    assert_eq!(report.groups.len(), 6, "{text}");
    let fingerprint = shipped().current(EventKind::OrderPlaced).fingerprint.to_le_bytes();
    let current_fp = format!("fingerprint:{}", fingerprint.iter().map(|b| format!("{b:02x}")).collect::<String>());
    for (writer, records, ok) in [
        ("registry-id:1", 4, true),
        ("registry-id:2", 3, true),
        ("registry-id:3", 1, false),
        ("registry-id:4", 1, false),
        (current_fp.as_str(), 2, true),
        ("fingerprint:abababababababab", 1, false),
    ] {
        let g = group(writer);
        assert_eq!((g.records, g.ok()), (records, ok), "{writer}:\n{text}");
        assert_eq!(
            g.readers.len(),
            orderflow_registry::CONSUMERS.len(),
            "every consumer reads orders: {:?}",
            g.readers
        );
        assert!(g.readers.values().all(|v| (v == "ok") == ok), "{writer}: {:?}", g.readers);
    }
    assert!(group("registry-id:3").readers["analytics"].contains("FAILS on 1 of 1 records"), "{text}");
    assert!(text.contains("first: partition"), "{text}");

    // The command's exit code says it: 3.
    let failed = orderflow_cli::schema_check::run(&kafka_args(), SchemaCommand::Check(args)).await.unwrap_err();
    assert_eq!(orderflow_cli::exit_code(&failed), 3, "{failed:#}");

    // A topic holding only readable records passes.
    let clean = fresh_topic("schema-check-clean", 1).await;
    let value = Codec::new().encode_single_object(&order("fine", &[("sku-1", 1)])).unwrap();
    producer
        .send(FutureRecord::<str, _>::to(&clean).payload(&value), std::time::Duration::from_secs(10))
        .await
        .unwrap();
    let args = SchemaCheckArgs { topic: clean, sample: Some(10), schema_registry_url: None, json: true };
    orderflow_cli::schema_check::run(&kafka_args(), SchemaCommand::Check(args)).await.unwrap();
}
