//! A private Apache Kafka cluster for one test: three nodes to kill a leader, or one node
//! with a SASL_SSL listener. Started through `scripts/stack broker`, the same code that starts
//! the local stack, in a directory and on ports of its own, so tests that kill brokers never
//! disturb the shared broker the rest of the suite uses. Stopped and deleted on drop.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use orderflow_kafka::KafkaArgs;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::repo_root;

/// A running cluster of its own (see the module doc).
pub struct KafkaCluster {
    nodes: usize,
    secure: bool,
    base_port: u16,
    dir: tempfile::TempDir,
}

impl KafkaCluster {
    /// `nodes` combined broker+controller nodes (1 or 3). Three nodes get replication 3 and
    /// `min.insync.replicas=2` by default, and fence a dead broker after 3 s.
    pub fn start(nodes: usize) -> anyhow::Result<Self> {
        Self::launch(nodes, false)
    }

    /// One node with a SASL_SSL (SCRAM-SHA-256/512) listener beside the plaintext one, and a
    /// CA made for it. [`KafkaCluster::client_env`] has the settings a client needs.
    pub fn start_secure() -> anyhow::Result<Self> {
        Self::launch(1, true)
    }

    fn launch(nodes: usize, secure: bool) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("orderflow-kafka-").tempdir().context("temp dir for the cluster")?;
        let base_port = free_port_block(nodes)?;
        let cluster = KafkaCluster { nodes, secure, base_port, dir };
        cluster.stack(&["up"])?;
        Ok(cluster)
    }

    fn stack(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut command = Command::new(repo_root().join("scripts/stack"));
        command.arg("broker").args(args).arg("--brokers").arg(self.nodes.to_string());
        if self.secure {
            command.arg("--secure");
        }
        let output = command
            .env("ORDERFLOW_STACK_DIR", self.dir.path())
            .env("ORDERFLOW_KAFKA_PORT", self.base_port.to_string())
            .env_remove("KAFKA_BROKERS")
            .output()
            .context("Failed to run scripts/stack broker")?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            bail!(
                "scripts/stack broker {} failed ({}):\n{stdout}{}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(stdout)
    }

    /// The plaintext bootstrap list, every node.
    pub fn bootstrap(&self) -> String {
        (1..=self.nodes).map(|id| format!("127.0.0.1:{}", self.port(id))).collect::<Vec<_>>().join(",")
    }

    /// Node `id`'s plaintext port.
    pub fn port(&self, id: usize) -> u16 {
        self.base_port + 10 * (id as u16 - 1)
    }

    /// Client settings for this cluster's plaintext listeners.
    pub fn kafka_args(&self) -> KafkaArgs {
        KafkaArgs::with_brokers(self.bootstrap())
    }

    /// The secure cluster's client environment (`KAFKA_BROKERS` on the SASL_SSL listener,
    /// `KAFKA_SECURITY_PROTOCOL`, `KAFKA_SASL_*`, `KAFKA_SSL_CA_LOCATION`), as written by
    /// `scripts/stack` to `client.env`.
    pub fn client_env(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let path = self.cluster_dir().join("client.env");
        let text = std::fs::read_to_string(&path).with_context(|| format!("Failed to read {}", path.display()))?;
        Ok(text
            .lines()
            .filter_map(|line| line.strip_prefix("export "))
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect())
    }

    fn cluster_dir(&self) -> PathBuf {
        let mut name = "kafka".to_owned();
        if self.nodes > 1 {
            name.push_str(&format!("-{}", self.nodes));
        }
        if self.secure {
            name.push_str("-secure");
        }
        self.dir.path().join(name)
    }

    /// Node `id`'s log (for failure messages).
    pub fn log_path(&self, id: usize) -> PathBuf {
        self.cluster_dir().join(format!("node-{id}/kafka.log"))
    }

    /// `kill -9` node `id` and wait until the process is gone.
    pub fn kill(&self, id: usize) -> anyhow::Result<()> {
        self.stack(&["kill", &id.to_string()]).map(drop)
    }

    /// Start node `id` again on its data and wait until it says it started.
    pub fn restart(&self, id: usize) -> anyhow::Result<()> {
        self.stack(&["start", &id.to_string()]).map(drop)
    }

    /// The node id leading `topic[partition]` in the metadata of any live node, or `None`
    /// while the partition has no leader.
    pub fn leader(&self, topic: &str, partition: i32) -> anyhow::Result<Option<i32>> {
        let consumer: BaseConsumer =
            self.kafka_args().client_config().set("log_level", "0").create().context("metadata client")?;
        let metadata =
            consumer.fetch_metadata(Some(topic), Duration::from_secs(5)).context("Failed to fetch metadata")?;
        let leader = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .and_then(|t| t.partitions().iter().find(|p| p.id() == partition))
            .map(|p| p.leader())
            .filter(|&leader| leader >= 0);
        Ok(leader)
    }

    /// Replica node ids of `topic[partition]`.
    pub fn replicas(&self, topic: &str, partition: i32) -> anyhow::Result<Vec<i32>> {
        let consumer: BaseConsumer =
            self.kafka_args().client_config().set("log_level", "0").create().context("metadata client")?;
        let metadata =
            consumer.fetch_metadata(Some(topic), Duration::from_secs(5)).context("Failed to fetch metadata")?;
        Ok(metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .and_then(|t| t.partitions().iter().find(|p| p.id() == partition))
            .map(|p| p.replicas().to_vec())
            .unwrap_or_default())
    }

    /// The directory all of the cluster's data and logs live in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        // Stops every node of this cluster only (its own stack dir); the temp dir goes after.
        let _ = self.stack(&["down"]);
    }
}

/// A base port `p` such that `p`, `p+1`, `p+2` of every node (`p + 10*(id-1)`) are free now,
/// below the ephemeral range (a killed node must get its ports back: [`crate::ports`]).
fn free_port_block(nodes: usize) -> anyhow::Result<u16> {
    let offsets: Vec<u16> = (0..nodes as u16).flat_map(|n| (0..3).map(move |o| 10 * n + o)).collect();
    crate::ports::free_block(&offsets)
}
