//! `orderflow`, the operator and analyst command line.
//!
//! # Layout
//! - [`Cli`]: the clap definition; each subcommand lives in its own module.
//! - [`topics`]: create and list topics (the local stack uses it to create the contract
//!   topics; operators use it against a real cluster).
//! - [`broker`]: wait for a broker, and a produce/consume round trip that proves a cluster
//!   works end to end with the project's producer settings.
//! - [`publish`]: publish events from a JSON Lines file.
//! - [`simulate`]: a sample load through the ingress HTTP API, with expected totals.
//!
//! The CLI prints data to stdout and diagnostics to stderr, so its output can be piped.

pub mod broker;
pub mod publish;
pub mod simulate;
pub mod topics;

use clap::{Parser, Subcommand};
use orderflow_kafka::KafkaArgs;

#[derive(Debug, Parser)]
#[command(name = "orderflow", version, about = "Operate and inspect an orderflow pipeline")]
pub struct Cli {
    #[command(flatten)]
    pub kafka: KafkaArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create and list topics.
    #[command(subcommand)]
    Topics(topics::TopicsCommand),
    /// Check that a broker answers and works.
    #[command(subcommand)]
    Broker(broker::BrokerCommand),
    /// Publish events from a JSON Lines file (one order or stock change per line).
    Publish(publish::PublishArgs),
    /// Send a realistic sample load through the ingress HTTP API.
    Simulate(simulate::SimulateArgs),
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Topics(command) => topics::run(&cli.kafka, command).await,
        Command::Broker(command) => broker::run(&cli.kafka, command).await,
        Command::Publish(args) => publish::run(&cli.kafka, args).await,
        Command::Simulate(args) => simulate::run(args).await,
    }
}
