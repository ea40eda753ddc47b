//! deploy/kubernetes/ (docs/deploy.md) cannot be applied here (no cluster), so keep it honest:
//! kubeconform validates every manifest strictly against the real Kubernetes and KEDA schemas
//! (scripts/kubernetes/kubeconform.sh fetches them from the package registries) and refuses a
//! broken one; and every service the registry lists runs there as the docs say: probes on
//! `/healthz` and `/readyz`, resources, secrets from the Secret, a KEDA ScaledObject bounded by
//! the partition count.

use std::collections::BTreeMap;
use std::process::Command;

use orderflow_testkit::repo_root;
use serde::Deserialize as _;
use serde_yaml_ng::Value;

/// Every manifest file: the deployable ones and the examples.
fn manifest_files() -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for dir in ["deploy/kubernetes", "deploy/kubernetes/examples"] {
        for entry in std::fs::read_dir(repo_root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The documents of the deployable manifests, by (kind, name).
fn resources() -> BTreeMap<(String, String), Value> {
    let mut out = BTreeMap::new();
    for path in manifest_files().into_iter().filter(|p| !p.to_string_lossy().contains("/examples/")) {
        let text = std::fs::read_to_string(&path).unwrap();
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let value = Value::deserialize(document).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let kind = value["kind"].as_str().unwrap().to_owned();
            let name = value["metadata"]["name"].as_str().unwrap().to_owned();
            assert!(out.insert((kind.clone(), name.clone()), value).is_none(), "{kind} {name} twice");
        }
    }
    out
}

/// Run the validator over `files`; (success, stdout).
fn kubeconform(files: &[std::path::PathBuf]) -> (bool, String) {
    let output = Command::new(repo_root().join("scripts/kubernetes/kubeconform.sh"))
        .args(["-summary", "-output", "json"])
        .args(files)
        .output()
        .expect("running scripts/kubernetes/kubeconform.sh");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("error:"), "the validator could not run: {stderr}");
    (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
fn kubeconform_accepts_every_manifest_strictly_and_refuses_a_broken_one() {
    let files = manifest_files();
    let (ok, report) = kubeconform(&files);
    assert!(ok, "kubeconform refused a manifest:\n{report}");
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let summary = &report["summary"];
    let documents: usize = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap().split("\n---\n").filter(|d| d.contains("kind:")).count())
        .sum();
    assert_eq!(summary["valid"], documents, "every document validated against a schema: {summary}");
    for field in ["invalid", "errors", "skipped"] {
        assert_eq!(summary[field], 0, "{field}: {summary}");
    }

    // The validator is not a formality: a wrong type in a Deployment and a misspelt field in
    // a ScaledObject (a CRD schema) both fail.
    let broken = std::fs::read_to_string(repo_root().join("deploy/kubernetes/fulfillment.yaml"))
        .unwrap()
        .replace("  replicas: 1\n", "  replicas: one\n")
        .replace("  maxReplicaCount: 6\n", "  maxReplicaCont: 6\n");
    let path = std::env::temp_dir().join(orderflow_testkit::unique_name("broken")).with_extension("yaml");
    std::fs::write(&path, broken).unwrap();
    let (ok, report) = kubeconform(std::slice::from_ref(&path));
    let _ = std::fs::remove_file(&path);
    assert!(!ok, "a broken manifest passed:\n{report}");
    assert!(report.contains("/spec/replicas") && report.contains("maxReplicaCont"), "{report}");
}

/// The container of a Deployment.
fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

/// The environment a container sets, by name: `Some(value)` for a literal, `None` for one
/// taken from a Secret.
fn env(container: &Value) -> BTreeMap<String, Option<String>> {
    container["env"]
        .as_sequence()
        .map(|vars| {
            vars.iter()
                .map(|v| {
                    let name = v["name"].as_str().unwrap().to_owned();
                    let literal = v["value"].as_str().map(str::to_owned);
                    if literal.is_none() {
                        assert_eq!(v["valueFrom"]["secretKeyRef"]["name"], "orderflow", "{name} comes from the Secret");
                    }
                    (name, literal)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_service_runs_with_probes_resources_and_secrets_from_the_secret_and_consumers_scale_on_lag() {
    let resources = resources();
    let get = |kind: &str, name: &str| {
        resources
            .get(&(kind.to_owned(), name.to_owned()))
            .unwrap_or_else(|| panic!("no {kind} {name} in deploy/kubernetes"))
    };
    let partitions: usize =
        get("ConfigMap", "orderflow")["data"]["TOPIC_PARTITIONS"].as_str().unwrap().parse().unwrap();
    let mut services: Vec<(&str, &str, u16)> =
        orderflow_registry::CONSUMERS.iter().map(|spec| (spec.name, spec.binary, spec.port)).collect();
    services.extend([("ingress", "ingress", 8080), ("outbox-relay", "outbox-relay", 8086)]);
    services.push(("allocations-relay", "outbox-relay", 8089));
    for (name, binary, port) in services {
        let deployment = get("Deployment", name);
        let c = container(deployment);
        assert_eq!(c["command"][0], binary, "{name} runs {binary}");
        let vars = env(c);
        assert_eq!(vars["LISTEN_ADDR"].as_deref(), Some(format!("0.0.0.0:{port}").as_str()), "{name}'s port");
        assert_eq!(c["ports"][0]["containerPort"].as_u64(), Some(u64::from(port)));
        for secret in ["DATABASE_URL", "API_TOKENS", "INGRESS_TOKENS", "SMTP_URL"] {
            assert!(vars.get(secret).is_none_or(Option::is_none), "{name} writes {secret} in clear");
        }
        assert!(vars.contains_key("DATABASE_URL"), "{name} reads DATABASE_URL from the Secret");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz", "{name}");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz", "{name}");
        for (kind, resource) in [("requests", "cpu"), ("requests", "memory"), ("limits", "memory")] {
            assert!(c["resources"][kind][resource].as_str().is_some(), "{name}: no {kind}.{resource}");
        }
        assert_eq!(c["envFrom"][0]["configMapRef"]["name"], "orderflow", "{name} reads the ConfigMap");
        get("PodDisruptionBudget", name);
        get("Service", name);
    }
    for spec in orderflow_registry::CONSUMERS {
        let vars = env(container(get("Deployment", spec.name)));
        assert!(vars.contains_key("API_TOKENS"), "{}'s read API needs its tokens", spec.name);
        let scaled = get("ScaledObject", spec.name);
        assert_eq!(scaled["spec"]["scaleTargetRef"]["name"], spec.name);
        assert_eq!(
            scaled["spec"]["maxReplicaCount"].as_u64(),
            Some(partitions as u64),
            "{}: at most a partition each",
            spec.name
        );
        let trigger = &scaled["spec"]["triggers"][0];
        assert_eq!(
            (trigger["type"].as_str(), trigger["metadata"]["consumerGroup"].as_str()),
            (Some("kafka"), Some(spec.name))
        );
    }
    assert!(
        get("Deployment", "email")["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "SMTP_URL")
    );
    get("HorizontalPodAutoscaler", "ingress");
    get("Job", "orderflow-topics");
    // No consumer that the registry no longer lists.
    for (kind, name) in resources.keys() {
        if kind == "ScaledObject" {
            assert!(
                orderflow_registry::find(name).is_some(),
                "deploy/kubernetes has a ScaledObject for {name}, not a registered consumer"
            );
        }
    }
}

#[test]
fn the_consumers_manifests_are_what_the_registry_implies() {
    let stale = orderflow_cli::deploy::stale(&repo_root()).unwrap();
    let stale: Vec<_> = stale.iter().filter(|p| p.starts_with(repo_root().join("deploy/kubernetes"))).collect();
    assert!(
        stale.is_empty(),
        "written by hand or for another registry: {stale:?}; run `cargo run -p orderflow-cli -- consumers deploy`"
    );
}
