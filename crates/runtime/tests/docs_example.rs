//! docs/adding-a-consumer.md shows the example consumer in full; CI compiles the example, and
//! this test keeps the copy in the docs identical to it, so the docs always compile too.

#[test]
fn the_consumer_in_the_docs_is_the_example_that_compiles() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let docs = std::fs::read_to_string(root.join("docs/adding-a-consumer.md")).unwrap();
    let example = std::fs::read_to_string(root.join("crates/runtime/examples/units_per_sku/main.rs")).unwrap();
    let shown = docs
        .split("```rust\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/adding-a-consumer.md has a rust code block");
    let code: String = example.lines().filter(|l| !l.starts_with("//!")).collect::<Vec<_>>().join("\n");
    assert_eq!(
        shown.trim(),
        code.trim(),
        "docs/adding-a-consumer.md and the example differ; copy the example into the docs"
    );
}
