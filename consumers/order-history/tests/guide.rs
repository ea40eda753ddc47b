//! docs/adding-a-consumer.md shows this crate in full: every code block whose info string
//! names a file (```` ```rust file=consumers/order-history/src/lib.rs ````) must be that file,
//! every file of the crate must be shown, and the lines of a ```` line-of=PATH ```` block must
//! be lines of PATH (the registry line). So the guide's code is compiled and tested code.

use std::collections::BTreeSet;
use std::path::Path;

use orderflow_testkit::repo_root;

/// (info string, code) of every fenced block of `markdown`.
fn blocks(markdown: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = markdown.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```").filter(|i| !i.is_empty()) else { continue };
        let code: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        out.push((info.to_owned(), code.join("\n")));
    }
    out
}

/// Every file of the crate, relative to the repository.
fn crate_files(dir: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            crate_files(&path, out);
        } else {
            out.insert(path.strip_prefix(repo_root()).unwrap().to_string_lossy().into_owned());
        }
    }
}

#[test]
fn the_guide_shows_every_file_of_this_consumer_exactly_and_its_registry_line() {
    let guide = std::fs::read_to_string(repo_root().join("docs/adding-a-consumer.md")).unwrap();
    let mut shown = BTreeSet::new();
    let mut registry_lines = 0;
    for (info, code) in blocks(&guide) {
        for word in info.split_whitespace() {
            if let Some(path) = word.strip_prefix("file=") {
                let file = std::fs::read_to_string(repo_root().join(path))
                    .unwrap_or_else(|e| panic!("the guide shows {path}, which cannot be read: {e}"));
                assert_eq!(code, file.trim_end(), "docs/adding-a-consumer.md's copy of {path} differs from the file");
                shown.insert(path.to_owned());
            } else if let Some(path) = word.strip_prefix("line-of=") {
                let file = std::fs::read_to_string(repo_root().join(path)).unwrap();
                for line in code.lines() {
                    assert!(file.lines().any(|l| l == line), "{path} has no line `{line}` (docs/adding-a-consumer.md)");
                }
                registry_lines += usize::from(path == "crates/registry/Cargo.toml");
            }
        }
    }
    let mut files = BTreeSet::new();
    crate_files(&repo_root().join("consumers/order-history"), &mut files);
    files.retain(|f| !f.starts_with("consumers/order-history/tests/guide.rs"));
    let missing: Vec<&String> = files.difference(&shown).collect();
    assert!(missing.is_empty(), "docs/adding-a-consumer.md does not show {missing:?}");
    assert_eq!(registry_lines, 1, "the guide shows the registry line once");
}
