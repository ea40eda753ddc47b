//! Every place that names consumers agrees with the registry: the crates under consumers/,
//! docker-compose.yml (whose consumer services `orderflow consumers deploy` writes), docs/consumers.md and the
//! README. A consumer added to the registry but forgotten in one of them fails here, naming it.

use std::collections::{BTreeMap, BTreeSet};

use orderflow_registry::CONSUMERS;
use orderflow_testkit::repo_root;
use serde::Deserialize;

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// (package, binaries) of every crate under consumers/.
fn consumer_crates() -> BTreeMap<String, (String, BTreeSet<String>)> {
    let mut crates = BTreeMap::new();
    for entry in std::fs::read_dir(repo_root().join("consumers")).unwrap().flatten() {
        let manifest = entry.path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else { continue };
        let value = |line: &str| line.split_once('=').map(|(_, v)| v.trim().trim_matches('"').to_owned());
        let mut lines = text.lines().map(str::trim);
        let package = lines.clone().find(|l| l.starts_with("name")).and_then(value).expect("a package name");
        let mut bins = BTreeSet::new();
        while let Some(line) = lines.next() {
            if line == "[[bin]]" {
                bins.extend(lines.next().filter(|l| l.starts_with("name")).and_then(value));
            }
        }
        crates.insert(entry.file_name().to_string_lossy().into_owned(), (package, bins));
    }
    crates
}

#[test]
fn every_crate_under_consumers_is_registered_with_its_binary() {
    let crates = consumer_crates();
    let registered: BTreeSet<&str> = CONSUMERS.iter().map(|c| c.name).collect();
    let directories: BTreeSet<&str> = crates.keys().map(String::as_str).collect();
    assert_eq!(registered, directories, "consumers/ and the registry (crates/registry/Cargo.toml) disagree");
    for spec in CONSUMERS {
        let (package, bins) = &crates[spec.name];
        assert_eq!(package, &format!("orderflow-{}", spec.name), "consumers/{}'s package", spec.name);
        assert!(bins.contains(spec.binary), "consumers/{} builds {bins:?}, not {}", spec.name, spec.binary);
    }
}

#[test]
fn ports_are_unique_and_the_contract_ports_hold() {
    let ports: BTreeMap<&str, u16> = CONSUMERS.iter().map(|c| (c.name, c.port)).collect();
    for (name, port) in [("fulfillment", 8081), ("email", 8082), ("analytics", 8083), ("inventory-projection", 8084)] {
        assert_eq!(ports.get(name), Some(&port), "{name}'s port is the contract's");
    }
    let distinct: BTreeSet<u16> = ports.values().copied().collect();
    assert_eq!(distinct.len(), ports.len(), "two consumers share a port: {ports:?}");
    for spec in CONSUMERS {
        assert!(spec.port > 8080, "{}: the demo puts consumers above the ingress's port", spec.name);
        assert!(!spec.topics.is_empty(), "{} reads no topic", spec.name);
    }
}

#[derive(Debug, Deserialize)]
struct Compose {
    services: BTreeMap<String, Service>,
}

#[derive(Debug, Deserialize)]
struct Service {
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    ports: Vec<String>,
    #[serde(default)]
    environment: BTreeMap<String, serde_yaml_ng::Value>,
}

#[test]
fn docker_compose_runs_exactly_the_registered_consumers_on_their_ports() {
    let compose: Compose = serde_yaml_ng::from_str(&read("docker-compose.yml")).expect("docker-compose.yml parses");
    let binaries: BTreeSet<String> = consumer_crates().into_values().flat_map(|(_, bins)| bins).collect();
    let running: BTreeMap<&str, &Service> = compose
        .services
        .iter()
        .filter(|(_, s)| s.command.first().is_some_and(|c| binaries.contains(c)))
        .map(|(name, s)| (name.as_str(), s))
        .collect();
    let registered: BTreeSet<&str> = CONSUMERS.iter().map(|c| c.name).collect();
    assert_eq!(running.keys().copied().collect::<BTreeSet<_>>(), registered, "docker-compose.yml's consumer services");
    for spec in CONSUMERS {
        let service = running[spec.name];
        assert_eq!(service.command, [spec.binary], "{}: command", spec.name);
        assert_eq!(service.ports, [format!("{0}:{0}", spec.port)], "{}: ports", spec.name);
        let listen = service.environment.get("LISTEN_ADDR").and_then(|v| v.as_str());
        assert_eq!(listen, Some(format!("0.0.0.0:{}", spec.port).as_str()), "{}: LISTEN_ADDR", spec.name);
    }
    // No other service holds a consumer's host port.
    for (name, service) in &compose.services {
        if running.contains_key(name.as_str()) {
            continue;
        }
        for spec in CONSUMERS {
            let taken = service.ports.iter().any(|p| p.split(':').next() == Some(&spec.port.to_string()));
            assert!(!taken, "{name} holds host port {}, {}'s", spec.port, spec.name);
        }
    }
}

#[test]
fn every_consumer_is_documented_in_consumers_md_and_listed_in_the_readme() {
    let docs = read("docs/consumers.md");
    let readme = read("README.md");
    for spec in CONSUMERS {
        let row = docs
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", spec.binary)))
            .unwrap_or_else(|| panic!("docs/consumers.md's table has no row for `{}`", spec.binary));
        assert!(
            row.contains(&format!("| {} |", spec.port)),
            "docs/consumers.md: {} is on port {}: {row}",
            spec.name,
            spec.port
        );
        for topic in spec.topics {
            assert!(row.contains(&format!("`{topic}`")), "docs/consumers.md: {} reads {topic}: {row}", spec.name);
        }
        assert!(docs.contains(&format!("\n## {}\n", spec.name)), "docs/consumers.md has no `## {}` section", spec.name);
        let map = readme.lines().find(|l| l.starts_with("| `consumers/` |")).expect("README's map has consumers/");
        assert!(map.contains(&format!("`{}`", spec.name)), "README's map of consumers/ does not list {}", spec.name);
    }
}
