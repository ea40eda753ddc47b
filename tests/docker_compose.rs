//! docker-compose.yml cannot run here (no Docker engine), so keep it honest by reading it:
//! it parses, it has the services docs/local-stack.md promises and no others, images are
//! pinned, dependencies name real services, and project services build from the repo.

use std::collections::{BTreeMap, BTreeSet};

use orderflow_testkit::repo_root;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Compose {
    services: BTreeMap<String, Service>,
}

#[derive(Debug, Deserialize)]
struct Service {
    image: Option<String>,
    build: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    depends_on: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    environment: BTreeMap<String, serde_yaml_ng::Value>,
    #[serde(default)]
    command: Option<Vec<String>>,
}

fn compose() -> Compose {
    let text = std::fs::read_to_string(repo_root().join("docker-compose.yml")).unwrap();
    serde_yaml_ng::from_str(&text).expect("docker-compose.yml parses")
}

/// Service names from the table under the "docker-compose" heading of docs/local-stack.md:
/// rows that start with "| `name` |".
fn services_in_docs() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo_root().join("docs/local-stack.md")).unwrap();
    let section = text.split("## With Docker").nth(1).expect("docs/local-stack.md has a `## With Docker` section");
    let section = section.split("\n## ").next().unwrap();
    section
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`').map(|(name, _)| name.to_owned()))
        .collect()
}

#[test]
fn compose_file_has_exactly_the_services_the_docs_promise() {
    let in_file: BTreeSet<String> = compose().services.keys().cloned().collect();
    let in_docs = services_in_docs();
    assert!(in_docs.contains("kafka") && in_docs.contains("postgres") && in_docs.contains("schema-registry"));
    assert_eq!(in_file, in_docs, "docker-compose.yml and docs/local-stack.md disagree");
}

#[test]
fn compose_services_are_pinned_and_depend_on_real_services() {
    let compose = compose();
    for (name, service) in &compose.services {
        match (&service.image, &service.build) {
            (_, Some(_)) => assert!(repo_root().join("Dockerfile").exists(), "{name} builds from a missing Dockerfile"),
            (Some(image), None) => {
                let tag = image.rsplit_once(':').map(|(_, tag)| tag);
                assert!(matches!(tag, Some(t) if t != "latest"), "{name}: pin the image tag, got {image}");
            }
            (None, None) => panic!("{name} has neither image nor build"),
        }
        let deps: Vec<String> = match &service.depends_on {
            None => vec![],
            Some(serde_yaml_ng::Value::Sequence(list)) => {
                list.iter().filter_map(|v| v.as_str().map(String::from)).collect()
            }
            Some(serde_yaml_ng::Value::Mapping(map)) => {
                map.keys().filter_map(|k| k.as_str().map(String::from)).collect()
            }
            Some(other) => panic!("{name}: unexpected depends_on {other:?}"),
        };
        for dep in deps {
            assert!(compose.services.contains_key(&dep), "{name} depends on unknown service {dep}");
        }
    }
}

#[test]
fn compose_kafka_runs_kraft_and_project_services_reach_it_inside_the_network() {
    let compose = compose();
    let kafka = &compose.services["kafka"];
    let env = |key: &str| kafka.environment.get(key).and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
    assert_eq!(env("KAFKA_PROCESS_ROLES"), "broker,controller", "single-node KRaft");
    assert!(env("KAFKA_ADVERTISED_LISTENERS").contains("INTERNAL://kafka:19092"));
    for (name, service) in &compose.services {
        if let Some(brokers) = service.environment.get("KAFKA_BROKERS").and_then(|v| v.as_str()) {
            assert_eq!(brokers, "kafka:19092", "{name} must use the internal listener");
        }
    }
}

#[test]
fn compose_consumer_services_are_what_the_registry_implies() {
    let stale = orderflow_cli::deploy::stale(&repo_root()).unwrap();
    assert!(
        !stale.iter().any(|p| p.ends_with("docker-compose.yml")),
        "docker-compose.yml's consumer services differ from the registry: run `cargo run -p orderflow-cli -- consumers deploy`"
    );
}

#[test]
fn compose_services_that_read_or_write_events_use_the_stacks_schema_registry() {
    let compose = compose();
    let mut checked = 0;
    for (name, service) in &compose.services {
        let command = service.command.as_ref().map(|c| c.join(" ")).unwrap_or_default();
        if !service.environment.contains_key("KAFKA_BROKERS") || command.contains("topics create") {
            continue;
        }
        let url = service.environment.get("SCHEMA_REGISTRY_URL").and_then(|v| v.as_str());
        assert_eq!(url, Some("http://schema-registry:8081"), "{name} must encode and decode with the stack's registry");
        let waits = service.depends_on.as_ref().and_then(|d| d.get("schema-registry")).is_some();
        assert!(waits, "{name} must wait for the registry");
        checked += 1;
    }
    assert!(checked >= 9, "the ingress, both relays and every consumer: {checked}");
}

/// The Apache Kafka version the local stack runs: the default in scripts/kafka/kafka.sh.
fn stack_kafka_version() -> String {
    let script = std::fs::read_to_string(repo_root().join("scripts/kafka/kafka.sh")).unwrap();
    let line = script.lines().find(|l| l.starts_with("KAFKA_VERSION=")).expect("kafka.sh sets KAFKA_VERSION");
    line.split(":-")
        .nth(1)
        .and_then(|v| v.strip_suffix('}'))
        .expect("KAFKA_VERSION=${ORDERFLOW_KAFKA_VERSION:-x.y.z}")
        .to_owned()
}

#[test]
fn compose_and_the_local_stack_run_the_same_kafka_version() {
    let version = stack_kafka_version();
    let image = compose().services["kafka"].image.clone().expect("the kafka service names an image");
    assert_eq!(image, format!("apache/kafka:{version}"), "docker-compose.yml and scripts/stack disagree");
    let pom = std::fs::read_to_string(repo_root().join("scripts/kafka/pom.xml")).unwrap();
    assert!(
        pom.contains(&format!("<kafka.version>{version}</kafka.version>")),
        "scripts/kafka/pom.xml's default kafka.version is not {version}"
    );
}
