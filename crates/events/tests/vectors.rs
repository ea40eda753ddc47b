//! Golden vectors: encoded events committed under `schemas/vectors/` with their expected decoded
//! content (the event's JSON). A change to the encoder's bytes, the schemas or the JSON shape
//! fails here. Regenerate deliberately with `ORDERFLOW_BLESS_VECTORS=1` (and say why in the
//! commit). `tests/interop/check_vectors.py` reads the same files with fastavro.

use std::path::{Path, PathBuf};
use std::process::Command;

use orderflow_events::{Codec, Event, samples};

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/vectors")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cases() -> Vec<(&'static str, Event)> {
    vec![
        ("order_placed.v1.typical", samples::order_placed().into()),
        ("order_placed.v1.minimal", samples::order_placed_minimal().into()),
        ("inventory_changed.v1.shipped", samples::inventory_changed().into()),
        ("inventory_changed.v1.received", samples::inventory_received().into()),
        ("order_allocated.v1.typical", Event::OrderAllocated(samples::order_allocated())),
        ("order_backordered.v1.typical", Event::OrderBackordered(samples::order_backordered())),
        ("backorder_allocated.v1.typical", Event::BackorderAllocated(samples::backorder_allocated())),
    ]
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
}

#[test]
fn golden_vectors_decode_to_expected_json_and_reencode_to_the_same_bytes() {
    let codec = Codec::new();
    let bless = std::env::var_os("ORDERFLOW_BLESS_VECTORS").is_some();
    for (name, event) in cases() {
        let bin = vectors_dir().join(format!("{name}.bin"));
        let json = vectors_dir().join(format!("{name}.json"));
        if bless {
            std::fs::create_dir_all(vectors_dir()).unwrap();
            std::fs::write(&bin, codec.encode_single_object(&event).unwrap()).unwrap();
            std::fs::write(&json, serde_json::to_string_pretty(&event).unwrap() + "\n").unwrap();
        }
        let bytes = std::fs::read(&bin).unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
        let expected: Event = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let decoded = block_on(codec.decode(&bytes)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(decoded, expected, "{name}: decoded content differs from {name}.json");
        assert_eq!(codec.encode_single_object(&expected).unwrap(), bytes, "{name}: re-encoding changed the bytes");
        assert_eq!(expected, event, "{name}: the sample event changed; regenerate the vectors deliberately");
    }
}

/// Runs `tests/interop/check_vectors.py` (fastavro) over the golden vectors. The interpreter is
/// `$ORDERFLOW_PYTHON` (the stack script's venv from `tests/requirements.txt`), else `python3`.
#[test]
fn fastavro_reads_the_golden_vectors() {
    let python = std::env::var("ORDERFLOW_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python).args(["-c", "import fastavro"]).output();
    match probe {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "{python} cannot import fastavro ({}). Create a venv: python3 -m venv /root/.orderflow/venv && \
             /root/.orderflow/venv/bin/pip install -r tests/requirements.txt, then set ORDERFLOW_PYTHON=/root/.orderflow/venv/bin/python",
            String::from_utf8_lossy(&o.stderr).trim().lines().last().unwrap_or("")
        ),
        Err(e) => {
            panic!("cannot run {python} ({e}); set ORDERFLOW_PYTHON to a Python with tests/requirements.txt installed")
        }
    }
    let out = Command::new(&python)
        .arg(repo_root().join("tests/interop/check_vectors.py"))
        .arg(repo_root().join("schemas"))
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success(), "check_vectors.py failed:\n{text}");
    assert!(text.contains(&format!("{} vectors ok", cases().len())), "{text}");
}
