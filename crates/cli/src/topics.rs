use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use orderflow_events::{ALLOCATIONS_TOPIC, INVENTORY_TOPIC, ORDERS_TOPIC};
use orderflow_kafka::KafkaArgs;
use orderflow_kafka::admin::{CLUSTER_DEFAULT_REPLICATION, TopicOutcome, delete_topics, ensure_topic, wait_for_broker};

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create topics unless they exist (idempotent). Without names: the contract topics
    /// `orders.v1`, `inventory.v1` and `allocations.v1`.
    ///
    /// Example: orderflow topics create --partitions 12
    Create {
        /// Topic names (default: orders.v1 inventory.v1 allocations.v1).
        names: Vec<String>,
        /// Partitions for topics that do not exist yet.
        #[arg(long, env = "TOPIC_PARTITIONS", default_value_t = 6, value_parser = clap::value_parser!(u16).range(1..))]
        partitions: u16,
        /// Replication factor for topics that do not exist yet. Without it the cluster's own
        /// `default.replication.factor` applies (3 on the three-node stack and in production).
        #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
        replication_factor: Option<i32>,
    },
    /// List topics and their partition counts.
    ///
    /// Example: orderflow topics list
    List,
    /// Delete topics and every record in them (no undo). Names the broker does not know are
    /// reported and skipped; with `--stdin` the names are read one per line.
    ///
    /// Example: orderflow topics delete orders-replay-test
    Delete {
        /// Topic names.
        names: Vec<String>,
        /// Also read topic names from standard input, one per line.
        #[arg(long)]
        stdin: bool,
    },
}

pub async fn run(kafka: &KafkaArgs, command: TopicsCommand) -> anyhow::Result<()> {
    match command {
        TopicsCommand::Create { names, partitions, replication_factor } => {
            let names = if names.is_empty() {
                [ORDERS_TOPIC, INVENTORY_TOPIC, ALLOCATIONS_TOPIC].map(str::to_owned).to_vec()
            } else {
                names
            };
            for name in names {
                match ensure_topic(
                    kafka,
                    &name,
                    partitions.into(),
                    replication_factor.unwrap_or(CLUSTER_DEFAULT_REPLICATION),
                )
                .await?
                {
                    TopicOutcome::Created { partitions } => println!("created {name} ({partitions} partitions)"),
                    TopicOutcome::Existed { partitions } => println!("exists  {name} ({partitions} partitions)"),
                }
            }
            Ok(())
        }
        TopicsCommand::List => {
            let info = wait_for_broker(kafka, Duration::from_secs(10)).await?;
            let mut topics = info.topics;
            topics.sort();
            for (name, partitions) in topics {
                println!("{name}\t{partitions}");
            }
            Ok(())
        }
        TopicsCommand::Delete { mut names, stdin } => {
            if stdin {
                for line in std::io::stdin().lines() {
                    let line = line.context("Failed to read topic names from standard input")?;
                    let name = line.trim();
                    if !name.is_empty() {
                        names.push(name.to_owned());
                    }
                }
            }
            if names.is_empty() {
                bail!("no topics to delete: name them, or pass --stdin and write them to standard input");
            }
            if let Some(internal) = names.iter().find(|name| name.starts_with("__")) {
                bail!("refusing to delete {internal}: topics starting with __ belong to the broker");
            }
            let unknown = delete_topics(kafka, &names).await?;
            for name in &unknown {
                println!("unknown {name} (not deleted: the broker has no such topic)");
            }
            println!("deleted {} topic(s)", names.len() - unknown.len());
            Ok(())
        }
    }
}
