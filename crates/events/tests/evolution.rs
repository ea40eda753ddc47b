//! Schema evolution rule (docs/events.md): every pair of versions of one event in `schemas/` must
//! be readable both ways. Versions are discovered by file name (`<event>.v<N>.avsc`), so a new
//! version is checked as soon as its file exists. Each direction is checked twice: with
//! apache-avro's compatibility checker, and by a real encode-with-writer / decode-with-reader.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use apache_avro::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::types::Value;

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

/// event name → (version, path), sorted by version.
fn discover() -> BTreeMap<String, Vec<(u32, PathBuf)>> {
    let mut out: BTreeMap<String, Vec<(u32, PathBuf)>> = BTreeMap::new();
    for entry in std::fs::read_dir(schemas_dir()).expect("schemas/ exists") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".avsc") else {
            continue;
        };
        let (event, version) =
            stem.rsplit_once(".v").unwrap_or_else(|| panic!("{name}: schema files are named <event>.v<N>.avsc"));
        let version: u32 = version.parse().unwrap_or_else(|_| panic!("{name}: version must be a number"));
        out.entry(event.to_owned()).or_default().push((version, path));
    }
    for versions in out.values_mut() {
        versions.sort();
    }
    out
}

fn load(path: &Path) -> Schema {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Schema::parse_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn file(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A value exercising every field of `schema` (non-null union branches, two array items).
fn sample(schema: &Schema) -> Value {
    match schema {
        Schema::Null => Value::Null,
        Schema::Boolean => Value::Boolean(true),
        Schema::Int => Value::Int(7),
        Schema::Long => Value::Long(7),
        Schema::Float => Value::Float(1.5),
        Schema::Double => Value::Double(1.5),
        Schema::Bytes => Value::Bytes(vec![1, 2]),
        Schema::String => Value::String("s".into()),
        Schema::Uuid => Value::Uuid(uuid::Uuid::from_u128(1)),
        Schema::TimestampMicros => Value::TimestampMicros(1_700_000_000_000_000),
        Schema::TimestampMillis => Value::TimestampMillis(1_700_000_000_000),
        Schema::Date => Value::Date(20_000),
        Schema::Array(a) => Value::Array(vec![sample(&a.items), sample(&a.items)]),
        Schema::Map(m) => Value::Map([("k".to_owned(), sample(&m.types))].into()),
        Schema::Union(u) => {
            let (i, s) =
                u.variants().iter().enumerate().find(|(_, s)| !matches!(s, Schema::Null)).unwrap_or((0, &Schema::Null));
            Value::Union(i as u32, Box::new(sample(s)))
        }
        Schema::Record(r) => Value::Record(r.fields.iter().map(|f| (f.name.clone(), sample(&f.schema))).collect()),
        Schema::Enum(e) => Value::Enum(0, e.symbols[0].clone()),
        Schema::Fixed(f) => Value::Fixed(f.size, vec![0; f.size]),
        other => panic!("extend sample() for {other:?}"),
    }
}

/// Checks that data written with `writer` is readable with `reader`, with the checker and with
/// a real round trip (both always run); each problem names both files and the field.
fn check_direction(writer_path: &Path, reader_path: &Path) -> Vec<String> {
    let (writer, reader) = (load(writer_path), load(reader_path));
    let (w, r) = (file(writer_path), file(reader_path));
    let mut problems = Vec::new();
    if let Err(e) = SchemaCompatibility::can_read(&writer, &reader) {
        problems.push(format!("reader {r} cannot read data written with {w} (compatibility checker): {}", chain(&e)));
    }
    let datum = apache_avro::to_avro_datum(&writer, sample(&writer))
        .unwrap_or_else(|e| panic!("encoding a sample with {w}: {}", chain(&e)));
    if let Err(e) = apache_avro::from_avro_datum(&writer, &mut &datum[..], Some(&reader)) {
        problems.push(format!("reader {r} cannot read data written with {w} (round trip): {}", chain(&e)));
    }
    problems
}

/// Both directions; all problems.
fn check_pair(a: &Path, b: &Path) -> Vec<String> {
    let mut problems = check_direction(a, b);
    problems.extend(check_direction(b, a));
    problems
}

#[test]
fn every_pair_of_versions_is_readable_both_ways() {
    let found = discover();
    assert!(found.contains_key("order_placed") && found.contains_key("inventory_changed"), "{found:?}");
    let mut problems = Vec::new();
    let mut checked = 0;
    for versions in found.values() {
        for (i, (_, a)) in versions.iter().enumerate() {
            // Each version against itself too: proves the sample/round-trip machinery works.
            for (_, b) in &versions[i..] {
                problems.extend(check_pair(a, b));
                checked += 1;
            }
        }
    }
    assert!(problems.is_empty(), "incompatible schema versions:\n{}", problems.join("\n"));
    println!("checked {checked} pairs");
}

#[test]
fn every_schema_file_is_shipped_in_the_crate() {
    let shipped: Vec<&str> = orderflow_events::schema::shipped().all.iter().map(|s| s.file).collect();
    for versions in discover().values() {
        for (_, p) in versions {
            let f = file(p);
            assert!(
                shipped.contains(&f.as_str()),
                "{f} is in schemas/ but not in SHIPPED (crates/events/src/schema.rs)"
            );
            let text = std::fs::read_to_string(p).unwrap();
            let s = orderflow_events::schema::shipped().all.iter().find(|s| s.file == f).unwrap();
            assert_eq!(s.json, text, "{f}: embedded text differs from the file");
        }
    }
}

#[test]
fn every_record_and_field_has_a_doc() {
    fn walk(v: &serde_json::Value, at: &str, missing: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                let is_named = matches!(m.get("type").and_then(|t| t.as_str()), Some("record" | "enum"));
                if is_named && !m.contains_key("doc") {
                    missing.push(format!("{at} (type {})", m["name"]));
                }
                if let Some(fields) = m.get("fields").and_then(|f| f.as_array()) {
                    for f in fields {
                        let name = format!("{at}.{}", f["name"].as_str().unwrap_or("?"));
                        if f.get("doc").is_none() {
                            missing.push(name.clone());
                        }
                        walk(&f["type"], &name, missing);
                    }
                }
                if let Some(items) = m.get("items") {
                    walk(items, at, missing);
                }
                if let Some(t @ serde_json::Value::Object(_)) = m.get("type") {
                    walk(t, at, missing);
                }
            }
            serde_json::Value::Array(branches) => branches.iter().for_each(|b| walk(b, at, missing)),
            _ => {}
        }
    }
    for versions in discover().values() {
        for (_, p) in versions {
            let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
            let mut missing = Vec::new();
            walk(&v, "", &mut missing);
            assert!(missing.is_empty(), "{}: no doc on {missing:?}", file(p));
        }
    }
}

#[test]
fn adding_a_required_field_without_default_is_rejected_naming_the_field() {
    let v1 = schemas_dir().join("order_placed.v1.avsc");
    let bad = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/order_placed.incompatible.avsc");
    let problems = check_pair(&v1, &bad);
    for p in &problems {
        println!("{p}");
    }
    // Old reader reads new data (extra field skipped): fine. New reader reads old data: no
    // value and no default for gift_wrap.
    assert_eq!(problems.len(), 2, "checker and round trip must both fail: {problems:#?}");
    for p in &problems {
        assert!(
            p.starts_with("reader order_placed.incompatible.avsc cannot read data written with order_placed.v1.avsc"),
            "{p}"
        );
        assert!(p.contains("gift_wrap"), "{p}");
    }
    assert!(problems[0].contains("Field 'gift_wrap' in reader schema must have a default value"), "{}", problems[0]);
}

#[test]
fn changing_a_field_type_is_rejected_naming_the_field() {
    let v1 = schemas_dir().join("order_placed.v1.avsc");
    let text = std::fs::read_to_string(&v1)
        .unwrap()
        .replace(r#"{"name": "quantity", "type": "int""#, r#"{"name": "quantity", "type": "string""#);
    let dir = std::env::temp_dir().join(format!("orderflow-evolution-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let changed = dir.join("order_placed.quantity_as_string.avsc");
    std::fs::write(&changed, text).unwrap();
    let problems = check_pair(&v1, &changed);
    std::fs::remove_dir_all(&dir).ok();
    for p in &problems {
        println!("{p}");
    }
    let checker: Vec<_> = problems.iter().filter(|p| p.contains("compatibility checker")).collect();
    assert_eq!(checker.len(), 2, "both directions: {problems:#?}");
    assert!(checker.iter().all(|p| p.contains("'lines'") && p.contains("'quantity'")), "{problems:#?}");
}
