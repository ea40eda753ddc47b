//! Generates the registry's list from this crate's Cargo.toml: every dependency whose path
//! is under `consumers/` is a consumer crate exporting `CONSUMER`, listed in file order. So
//! registering a consumer is its one dependency line.

use std::fmt::Write as _;

fn main() {
    println!("cargo::rerun-if-changed=Cargo.toml");
    let manifest = std::fs::read_to_string("Cargo.toml").expect("the registry's Cargo.toml is readable");
    let mut list = String::from(
        "/// Every consumer, in the order of the registry's Cargo.toml.\npub static CONSUMERS: &[&Spec] = &[\n",
    );
    for line in manifest.lines() {
        let Some((package, rest)) = line.split_once('=') else { continue };
        let package = package.trim();
        if !package.starts_with("orderflow-") || !rest.contains("\"../../consumers/") {
            continue;
        }
        writeln!(list, "    &{}::CONSUMER,", package.replace('-', "_")).unwrap();
    }
    list.push_str("];\n");
    let out = std::path::Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("consumers.rs");
    std::fs::write(out, list).expect("OUT_DIR is writable");
}
