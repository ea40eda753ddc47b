//! Helpers shared by the integration tests.
#![allow(dead_code)]

use apache_avro::Schema;
use apache_avro::types::Value;

/// A hypothetical older InventoryChanged writer schema: no `order_id`, only two reasons.
pub const INVENTORY_V0: &str = r#"{"type":"record","name":"InventoryChanged","namespace":"orderflow.events","fields":[
    {"name":"event_id","type":"string"},{"name":"sku","type":"string"},{"name":"warehouse","type":"string"},
    {"name":"delta","type":"long"},
    {"name":"reason","type":{"type":"enum","name":"Reason","symbols":["received","shipped"]}},
    {"name":"occurred_at","type":{"type":"long","logicalType":"timestamp-micros"}}]}"#;

/// A datum written with [`INVENTORY_V0`] (`reason` index 0 = received, 1 = shipped).
pub fn inventory_v0_datum(event_id: &str, sku: &str, delta: i64, reason: u32) -> Vec<u8> {
    let schema = Schema::parse_str(INVENTORY_V0).unwrap();
    let symbol = ["received", "shipped"][reason as usize];
    let value = Value::Record(vec![
        ("event_id".into(), Value::String(event_id.into())),
        ("sku".into(), Value::String(sku.into())),
        ("warehouse".into(), Value::String("w1".into())),
        ("delta".into(), Value::Long(delta)),
        ("reason".into(), Value::Enum(reason, symbol.into())),
        ("occurred_at".into(), Value::TimestampMicros(1_700_000_000_000_000)),
    ]);
    apache_avro::to_avro_datum(&schema, value).unwrap()
}

/// Confluent wire format: `00`, big-endian schema id, datum.
pub fn confluent_frame(id: u32, datum: &[u8]) -> Vec<u8> {
    let mut b = vec![0];
    b.extend_from_slice(&id.to_be_bytes());
    b.extend_from_slice(datum);
    b
}
