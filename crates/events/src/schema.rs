//! The Avro schemas orderflow ships (`schemas/*.avsc`, embedded at build time), their Parsing
//! Canonical Form and CRC-64-AVRO (Rabin) fingerprints.
//!
//! The canonical form is computed here from the schema JSON, following the specification
//! (`[PRIMITIVES]`, `[FULLNAMES]`, `[STRIP]`, `[ORDER]`, `[STRINGS]`, `[INTEGERS]`), rather
//! than with apache-avro's, so that the fingerprint is exactly what other implementations
//! (Java, fastavro) compute; `tests/interop/check_vectors.py` checks that against fastavro.

use std::collections::HashMap;
use std::sync::OnceLock;

use apache_avro::Schema;

use crate::event::EventKind;

/// One shipped schema version.
#[derive(Debug)]
pub struct ShippedSchema {
    pub kind: EventKind,
    /// File name under `schemas/`, e.g. `order_placed.v1.avsc`.
    pub file: &'static str,
    pub version: u32,
    /// The `.avsc` text as shipped (registered as-is with a Schema Registry).
    pub json: &'static str,
    pub schema: Schema,
    pub canonical_form: String,
    /// CRC-64-AVRO of the canonical form (the single-object header carries it little-endian).
    pub fingerprint: u64,
}

/// Every shipped version, oldest first per kind. A new version is added here (and its file
/// under `schemas/`); the newest of a kind is the reader and writer schema of this build.
const SHIPPED: &[(EventKind, &str, u32, &str)] = &[
    (EventKind::OrderPlaced, "order_placed.v1.avsc", 1, include_str!("../../../schemas/order_placed.v1.avsc")),
    (
        EventKind::InventoryChanged,
        "inventory_changed.v1.avsc",
        1,
        include_str!("../../../schemas/inventory_changed.v1.avsc"),
    ),
    (EventKind::OrderAllocated, "order_allocated.v1.avsc", 1, include_str!("../../../schemas/order_allocated.v1.avsc")),
    (
        EventKind::OrderBackordered,
        "order_backordered.v1.avsc",
        1,
        include_str!("../../../schemas/order_backordered.v1.avsc"),
    ),
    (
        EventKind::BackorderAllocated,
        "backorder_allocated.v1.avsc",
        1,
        include_str!("../../../schemas/backorder_allocated.v1.avsc"),
    ),
];

/// Largest allocation apache-avro may make for one decoded value (bytes, strings, arrays).
/// Set once per process, before any apache-avro decoding (see [`shipped`]).
pub const MAX_AVRO_ALLOCATION: usize = 16 << 20;

pub struct Shipped {
    pub all: Vec<ShippedSchema>,
    by_fingerprint: HashMap<u64, usize>,
    current: HashMap<EventKind, usize>,
}

impl Shipped {
    /// The schema this build writes (and reads into) for `kind`.
    pub fn current(&self, kind: EventKind) -> &ShippedSchema {
        &self.all[self.current[&kind]]
    }
    pub fn by_fingerprint(&self, fingerprint: u64) -> Option<&ShippedSchema> {
        self.by_fingerprint.get(&fingerprint).map(|&i| &self.all[i])
    }
}

/// The shipped schemas, parsed once per process. Also caps apache-avro's allocations.
pub fn shipped() -> &'static Shipped {
    static SHIPPED_SCHEMAS: OnceLock<Shipped> = OnceLock::new();
    SHIPPED_SCHEMAS.get_or_init(|| {
        apache_avro::util::max_allocation_bytes(MAX_AVRO_ALLOCATION);
        let mut all = Vec::new();
        for &(kind, file, version, json) in SHIPPED {
            // The embedded files are part of this crate; tests parse every one of them.
            let schema = Schema::parse_str(json).unwrap_or_else(|e| panic!("shipped schema {file} is invalid: {e}"));
            let value: serde_json::Value = serde_json::from_str(json).expect("shipped schema is JSON");
            let canonical_form = canonical_form(&value).expect("shipped schema has a canonical form");
            let fingerprint = rabin(canonical_form.as_bytes());
            all.push(ShippedSchema { kind, file, version, json, schema, canonical_form, fingerprint });
        }
        let by_fingerprint = all.iter().enumerate().map(|(i, s)| (s.fingerprint, i)).collect();
        let mut current: HashMap<EventKind, usize> = HashMap::new();
        for (i, s) in all.iter().enumerate() {
            let newer = current.get(&s.kind).is_none_or(|&j| all[j].version < s.version);
            if newer {
                current.insert(s.kind, i);
            }
        }
        Shipped { all, by_fingerprint, current }
    })
}

/// CRC-64-AVRO (the Rabin fingerprint of the Avro specification).
pub fn rabin(data: &[u8]) -> u64 {
    const EMPTY: u64 = 0xc15d_213a_a4d7_a795;
    static TABLE: OnceLock<[u64; 256]> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u64; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut fp = i as u64;
            for _ in 0..8 {
                fp = (fp >> 1) ^ (EMPTY & 0u64.wrapping_sub(fp & 1));
            }
            *slot = fp;
        }
        t
    });
    let mut fp = EMPTY;
    for &b in data {
        fp = (fp >> 8) ^ table[((fp ^ u64::from(b)) & 0xff) as usize];
    }
    fp
}

/// Error of [`canonical_form`]: the JSON is not a schema.
#[derive(Debug, thiserror::Error)]
#[error("not an Avro schema: {0}")]
pub struct NotASchema(String);

/// Parsing Canonical Form of a schema given as JSON (Avro specification).
pub fn canonical_form(schema: &serde_json::Value) -> Result<String, NotASchema> {
    let mut out = String::new();
    pcf(schema, None, &mut out, 0)?;
    Ok(out)
}

const PRIMITIVES: [&str; 8] = ["null", "boolean", "int", "long", "float", "double", "bytes", "string"];

fn full_name(name: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if !name.contains('.') && !ns.is_empty() => format!("{ns}.{name}"),
        _ => name.to_owned(),
    }
}

fn pcf(v: &serde_json::Value, ns: Option<&str>, out: &mut String, depth: usize) -> Result<(), NotASchema> {
    use serde_json::Value as J;
    if depth > 64 {
        return Err(NotASchema("nested too deeply".into()));
    }
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
    match v {
        J::String(s) => {
            if PRIMITIVES.contains(&s.as_str()) {
                out.push_str(&quote(s));
            } else {
                out.push_str(&quote(&full_name(s, ns)));
            }
        }
        J::Array(branches) => {
            out.push('[');
            for (i, b) in branches.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                pcf(b, ns, out, depth + 1)?;
            }
            out.push(']');
        }
        J::Object(m) => {
            let ty = m.get("type").ok_or_else(|| NotASchema("object without type".into()))?;
            let ty_str = match ty {
                J::String(t) => t.as_str(),
                // {"type": {...}} or {"type": [...]} is the inner schema itself.
                other => return pcf(other, ns, out, depth + 1),
            };
            match ty_str {
                "record" | "error" | "enum" | "fixed" => {
                    let name = m
                        .get("name")
                        .and_then(J::as_str)
                        .ok_or_else(|| NotASchema("named type without name".into()))?;
                    let own_ns = m.get("namespace").and_then(J::as_str).or(ns);
                    let fname = full_name(name, own_ns);
                    let inner_ns = fname.rsplit_once('.').map(|(n, _)| n.to_owned());
                    out.push_str(&format!("{{\"name\":{},\"type\":{}", quote(&fname), quote(ty_str)));
                    match ty_str {
                        "enum" => {
                            let symbols = m.get("symbols").ok_or_else(|| NotASchema("enum without symbols".into()))?;
                            out.push_str(&format!(
                                ",\"symbols\":{}",
                                serde_json::to_string(symbols).unwrap_or_default()
                            ));
                        }
                        "fixed" => {
                            let size = m
                                .get("size")
                                .and_then(|s| s.as_u64().or_else(|| s.as_str()?.parse().ok()))
                                .ok_or_else(|| NotASchema("fixed without size".into()))?;
                            out.push_str(&format!(",\"size\":{size}"));
                        }
                        _ => {
                            let fields = m
                                .get("fields")
                                .and_then(J::as_array)
                                .ok_or_else(|| NotASchema("record without fields".into()))?;
                            out.push_str(",\"fields\":[");
                            for (i, f) in fields.iter().enumerate() {
                                if i > 0 {
                                    out.push(',');
                                }
                                let fname = f
                                    .get("name")
                                    .and_then(J::as_str)
                                    .ok_or_else(|| NotASchema("field without name".into()))?;
                                let fty = f.get("type").ok_or_else(|| NotASchema("field without type".into()))?;
                                out.push_str(&format!("{{\"name\":{},\"type\":", quote(fname)));
                                pcf(fty, inner_ns.as_deref(), out, depth + 1)?;
                                out.push('}');
                            }
                            out.push(']');
                        }
                    }
                    out.push('}');
                }
                "array" => {
                    out.push_str("{\"type\":\"array\",\"items\":");
                    pcf(m.get("items").ok_or_else(|| NotASchema("array without items".into()))?, ns, out, depth + 1)?;
                    out.push('}');
                }
                "map" => {
                    out.push_str("{\"type\":\"map\",\"values\":");
                    pcf(m.get("values").ok_or_else(|| NotASchema("map without values".into()))?, ns, out, depth + 1)?;
                    out.push('}');
                }
                // A primitive, possibly with a logicalType or other attributes: those are stripped.
                other => pcf(&J::String(other.to_owned()), ns, out, depth + 1)?,
            }
        }
        _ => return Err(NotASchema("neither string, array nor object".into())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::rabin::Rabin;

    #[test]
    fn rabin_matches_apache_avro_and_spec_vectors() {
        // Spec: fingerprint of "null" is 0x63dd24e7cc258f8a (as a signed long 7195948357588979594).
        assert_eq!(rabin(br#""null""#), 0x63dd_24e7_cc25_8f8a);
        let s = Schema::parse_str(r#""int""#).unwrap();
        let fp = s.fingerprint::<Rabin>();
        assert_eq!(fp.bytes, rabin(br#""int""#).to_le_bytes());
    }

    #[test]
    fn canonical_form_strips_docs_and_logical_types_and_qualifies_names() {
        let s = shipped().current(EventKind::InventoryChanged);
        assert!(s.canonical_form.starts_with(
            r#"{"name":"orderflow.events.InventoryChanged","type":"record","fields":[{"name":"event_id","type":"string"}"#
        ), "{}", s.canonical_form);
        assert!(s.canonical_form.contains(r#"{"name":"occurred_at","type":"long"}"#));
        assert!(s.canonical_form.contains(r#""name":"orderflow.events.Reason","type":"enum""#));
        assert!(!s.canonical_form.contains("doc"));
    }

    #[test]
    fn every_shipped_schema_parses_and_fingerprints_are_distinct() {
        let sh = shipped();
        assert_eq!(sh.by_fingerprint.len(), sh.all.len());
        for k in EventKind::ALL {
            assert_eq!(sh.current(k).schema.name().map(|n| n.fullname(None)), Some(k.avro_name().to_owned()));
        }
    }
}
