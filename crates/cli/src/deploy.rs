//! `orderflow consumers deploy`: the consumers' deployment files, written from the registry so
//! that registering a consumer (its crate's `CONSUMER` and the registry's dependency line) is
//! all a deployment needs:
//! - `deploy/kubernetes/<name>.yaml`: Deployment, Service, PodDisruptionBudget and KEDA
//!   ScaledObject (docs/deploy.md);
//! - the consumers' services in `docker-compose.yml`, between [`COMPOSE_BEGIN`] and
//!   [`COMPOSE_END`] (docs/local-stack.md).
//!
//! `--check` fails when a file differs from what the registry implies (CI runs the same check
//! through tests/kubernetes.rs and tests/docker_compose.rs).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use orderflow_registry::{CONSUMERS, Spec};

/// The image every Kubernetes manifest runs (built from the repository's Dockerfile).
pub const IMAGE: &str = "registry.example.com/orderflow:0.1.0";
/// Partitions of the contract topics (the ConfigMap's `TOPIC_PARTITIONS`): the most instances
/// a consumer can use.
pub const PARTITIONS: u32 = 6;
/// Where the generated consumer services start in docker-compose.yml.
pub const COMPOSE_BEGIN: &str =
    "  # consumers:begin (generated from the registry by `orderflow consumers deploy`; do not edit)";
/// Where they end.
pub const COMPOSE_END: &str = "  # consumers:end";

/// How the local compose stack provides a secret a consumer reads: its value, and the service
/// that serves it.
fn compose_secret(name: &str) -> (&'static str, Option<&'static str>) {
    match name {
        "SMTP_URL" => ("smtp://mailpit:1025", Some("mailpit")),
        _ => ("change-me", None),
    }
}

/// `deploy/kubernetes/<name>.yaml` of one consumer.
pub fn kubernetes(spec: &Spec) -> String {
    let (name, port) = (spec.name, spec.port);
    let mut env = String::new();
    let secret = |env: &mut String, key: &str| {
        let _ = write!(
            env,
            "            - name: {key}\n              valueFrom:\n                secretKeyRef:\n                  name: orderflow\n                  key: {key}\n"
        );
    };
    secret(&mut env, "DATABASE_URL");
    secret(&mut env, "API_TOKENS");
    let _ = write!(env, "            - name: LISTEN_ADDR\n              value: \"0.0.0.0:{port}\"\n");
    for key in spec.secrets {
        secret(&mut env, key);
    }
    format!(
        r#"# Generated from the registry by `orderflow consumers deploy`; do not edit.
# The {name} consumer (reads {topics}): one instance per partition at most; KEDA scales it
# on its group's lag (the ScaledObject below). Sizes: docs/deploy.md.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels:
    app.kubernetes.io/name: {name}
    app.kubernetes.io/part-of: orderflow
spec:
  replicas: 1
  selector:
    matchLabels:
      app.kubernetes.io/name: {name}
  template:
    metadata:
      labels:
        app.kubernetes.io/name: {name}
        app.kubernetes.io/part-of: orderflow
      annotations:
        prometheus.io/scrape: "true"
        prometheus.io/port: "{port}"
        prometheus.io/path: /metrics
    spec:
      # SIGTERM: the consumer finishes the batches in hand and commits first.
      terminationGracePeriodSeconds: 30
      containers:
        - name: {name}
          image: {IMAGE}
          command: ["{binary}"]
          ports:
            - name: http
              containerPort: {port}
          envFrom:
            - configMapRef:
                name: orderflow
          env:
{env}          livenessProbe:
            httpGet:
              path: /healthz
              port: http
            periodSeconds: 10
            failureThreshold: 3
          readinessProbe:
            httpGet:
              path: /readyz
              port: http
            periodSeconds: 5
            failureThreshold: 2
          resources:
            requests:
              cpu: 250m
              memory: 128Mi
            limits:
              memory: 384Mi
          securityContext:
            runAsNonRoot: true
            runAsUser: 10001
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
  labels:
    app.kubernetes.io/name: {name}
    app.kubernetes.io/part-of: orderflow
spec:
  selector:
    app.kubernetes.io/name: {name}
  ports:
    - name: http
      port: {port}
      targetPort: http
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {name}
spec:
  maxUnavailable: 1
  selector:
    matchLabels:
      app.kubernetes.io/name: {name}
---
# Scale on the group's lag: one more instance per 5,000 records behind, up to the partition
# count ({PARTITIONS}; an instance beyond it would get no partition).
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {name}
spec:
  scaleTargetRef:
    name: {name}
  minReplicaCount: 1
  maxReplicaCount: {PARTITIONS}
  cooldownPeriod: 300
  triggers:
    - type: kafka
      metadata:
        bootstrapServers: kafka-bootstrap.kafka.svc:9092
        consumerGroup: {name}
        lagThreshold: "5000"
        allowIdleConsumers: "false"
"#,
        topics = spec.topics.join(", "),
        binary = spec.binary,
    )
}

/// The consumers' services of docker-compose.yml, markers included.
pub fn compose(specs: &[&Spec]) -> String {
    let mut out = format!("{COMPOSE_BEGIN}\n");
    for spec in specs {
        let (name, port) = (spec.name, spec.port);
        let mut depends = String::from(
            "      schema-registry:\n        condition: service_healthy\n      kafka:\n        condition: service_healthy\n      postgres:\n        condition: service_healthy\n      topics-init:\n        condition: service_completed_successfully\n",
        );
        let mut env = String::new();
        for key in spec.secrets {
            let (value, service) = compose_secret(key);
            let _ = writeln!(env, "      {key}: {value}");
            if let Some(service) = service {
                let _ = write!(depends, "      {service}:\n        condition: service_started\n");
            }
        }
        let _ = write!(
            out,
            r#"
  # {about}
  {name}:
    build: .
    image: orderflow:local
    command: ["{binary}"]
    depends_on:
{depends}    ports:
      - "{port}:{port}"
    environment:
      KAFKA_BROKERS: kafka:19092
      # Confluent wire format with the stack's registry (docs/events.md, "Framings").
      SCHEMA_REGISTRY_URL: http://schema-registry:8081
      DATABASE_URL: postgres://postgres:orderflow@postgres:5432/orderflow
      LISTEN_ADDR: 0.0.0.0:{port}
      # Bearer token of the read API (it returns customer data): change it.
      API_TOKENS: "demo:demo-read-token-change-me"
{env}    restart: unless-stopped
"#,
            about = spec.about,
            binary = spec.binary,
        );
    }
    out.push_str(COMPOSE_END);
    out
}

/// `text` (docker-compose.yml) with its generated region replaced by [`compose`]'s.
pub fn replace_compose_region(text: &str, specs: &[&Spec]) -> anyhow::Result<String> {
    let start = text.find(COMPOSE_BEGIN).ok_or_else(|| anyhow::anyhow!("no `{COMPOSE_BEGIN}` line"))?;
    let end = text[start..].find(COMPOSE_END).map(|i| start + i + COMPOSE_END.len());
    let end = end.ok_or_else(|| anyhow::anyhow!("no `{COMPOSE_END}` line after the begin marker"))?;
    Ok(format!("{}{}{}", &text[..start], compose(specs), &text[end..]))
}

/// Every generated file of the repository at `repo`, with the content the registry implies.
pub fn expected(repo: &Path) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let mut files: Vec<(PathBuf, String)> = CONSUMERS
        .iter()
        .map(|spec| (repo.join("deploy/kubernetes").join(format!("{}.yaml", spec.name)), kubernetes(spec)))
        .collect();
    let compose_path = repo.join("docker-compose.yml");
    let current = std::fs::read_to_string(&compose_path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", compose_path.display()))?;
    files.push((compose_path, replace_compose_region(&current, CONSUMERS)?));
    Ok(files)
}

/// The generated files that differ from what the registry implies.
pub fn stale(repo: &Path) -> anyhow::Result<Vec<PathBuf>> {
    Ok(expected(repo)?
        .into_iter()
        .filter(|(path, text)| std::fs::read_to_string(path).ok().as_deref() != Some(text.as_str()))
        .map(|(path, _)| path)
        .collect())
}

/// Write (or with `check`, compare) the generated files under `repo`.
pub fn run(repo: &Path, check: bool) -> anyhow::Result<()> {
    let stale = stale(repo)?;
    if check {
        anyhow::ensure!(
            stale.is_empty(),
            "generated deployment files differ from the registry (run `orderflow consumers deploy`): {}",
            stale.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        );
        println!("deployment files match the registry ({} consumers)", CONSUMERS.len());
        return Ok(());
    }
    for (path, text) in expected(repo)? {
        if stale.contains(&path) {
            std::fs::write(&path, text).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consumers_secrets_come_from_the_secret_in_kubernetes_and_from_the_stack_in_compose() {
        let email = orderflow_registry::get("email").unwrap();
        let manifest = kubernetes(email);
        assert!(manifest.contains("            - name: SMTP_URL\n              valueFrom:\n"), "{manifest}");
        assert!(manifest.contains("command: [\"email\"]") && manifest.contains("containerPort: 8082"));
        let services = compose(&[email]);
        assert!(services.contains("      SMTP_URL: smtp://mailpit:1025\n"), "{services}");
        assert!(services.contains("      mailpit:\n        condition: service_started\n"), "{services}");
        assert!(services.starts_with(COMPOSE_BEGIN) && services.ends_with(COMPOSE_END));
    }

    #[test]
    fn replacing_the_compose_region_keeps_what_is_around_it() {
        let text = format!("services:\n  kafka: {{}}\n{COMPOSE_BEGIN}\n  old: {{}}\n{COMPOSE_END}\n  mailpit: {{}}\n");
        let spec = orderflow_registry::get("order-history").unwrap();
        let replaced = replace_compose_region(&text, &[spec]).unwrap();
        assert!(replaced.starts_with("services:\n  kafka: {}\n") && replaced.ends_with("\n  mailpit: {}\n"));
        assert!(!replaced.contains("old:") && replaced.contains("  order-history:\n"), "{replaced}");
        assert!(replace_compose_region("services: {}\n", &[spec]).is_err());
    }
}
