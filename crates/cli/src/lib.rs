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
//! - [`verify`]: compare the consumers' read APIs with those expected totals.
//!
//! - [`tail`], [`lag`], [`offsets`]: read records, show how far consumers are behind, and
//!   show or reset their stored offsets ([`records`] and [`position`] hold the shared parts).
//! - [`dlq`]: list, show and (auditably) redrive dead letters.
//! - [`export`]: a topic range to JSON Lines, CSV or Avro files, resumable.
//! - [`replay`]: rebuild a consumer's store into a shadow schema, diff, promote.
//! - [`consumers`]: the registered consumers (name, binary, port, topics), for scripts.
//! - [`schema_check`]: this build's readers against the writer schemas a topic holds.
//!
//! The CLI prints data to stdout and diagnostics to stderr, so its output can be piped.

pub mod broker;
pub mod consumers;
pub mod contracts;
pub mod deploy;
pub mod dlq;
pub mod export;
pub mod lag;
pub mod offsets;
pub mod openapi;
pub mod parquet_out;
pub mod position;
pub mod publish;
pub mod records;
pub mod replay;
pub mod schema_check;
pub mod simulate;
pub mod tail;
pub mod topics;
pub mod verify;

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
    /// Print a topic's records as JSON lines.
    Tail(tail::TailArgs),
    /// Show how far consumers are behind, in messages and seconds.
    Lag(lag::LagArgs),
    /// Show or reset a consumer's stored offsets.
    #[command(subcommand)]
    Offsets(offsets::OffsetsCommand),
    /// Inspect and redrive a consumer's dead letters.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Export a topic range to JSON Lines, CSV or Avro (resumable).
    Export(export::ExportArgs),
    /// Rebuild a consumer's store into a shadow schema, diff it, promote it.
    Replay(replay::ReplayArgs),
    /// Publish events from a JSON Lines file (one order or stock change per line).
    Publish(publish::PublishArgs),
    /// Send a realistic sample load through the ingress HTTP API.
    Simulate(simulate::SimulateArgs),
    /// Compare the consumers' read APIs with the totals `simulate --expect-file` wrote.
    Verify(Box<verify::VerifyArgs>),
    /// List the registered consumers (name, binary, port, topics), or write their deployment files.
    Consumers(consumers::ConsumersArgs),
    /// Who reads which event field; check a proposed schema against the readers.
    Contracts(contracts::ContractsArgs),
    /// The OpenAPI description of every HTTP service; write or check docs/openapi/.
    Openapi(openapi::OpenapiArgs),
    /// Check this build's readers against the writer schemas a topic really holds.
    #[command(subcommand)]
    Schema(schema_check::SchemaCommand),
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Topics(command) => topics::run(&cli.kafka, command).await,
        Command::Broker(command) => broker::run(&cli.kafka, command).await,
        Command::Tail(args) => tail::run(&cli.kafka, args).await,
        Command::Lag(args) => lag::run(&cli.kafka, args).await,
        Command::Offsets(command) => offsets::run(&cli.kafka, command).await,
        Command::Dlq(command) => dlq::run(&cli.kafka, command).await,
        Command::Export(args) => export::run(&cli.kafka, args).await,
        Command::Replay(args) => replay::run(&cli.kafka, args).await,
        Command::Publish(args) => publish::run(&cli.kafka, args).await,
        Command::Simulate(args) => simulate::run(args).await,
        Command::Verify(args) => verify::run(*args).await,
        Command::Consumers(args) => consumers::run(args),
        Command::Openapi(args) => openapi::run(args),
        Command::Contracts(args) => contracts::run(args),
        Command::Schema(command) => schema_check::run(&cli.kafka, command).await,
    }
}

/// Who runs this command, for audit trails (DLQ redrives, offset moves): `$USER@host`.
pub(crate) fn operator() -> String {
    format!(
        "{}@{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into()),
        std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "unknown".into())
    )
}

/// The process exit code for an error: 2 when a threshold was exceeded (`lag --max-lag`),
/// 3 when a read store does not match the expected totals (`verify`) or a reader cannot read
/// what a topic holds (`schema check`), 4 when a consumer's stored offsets do not belong to
/// the log it reads (`lag`: docs/operations.md, "When offsets and the log disagree"), 1
/// otherwise.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    if error.downcast_ref::<lag::LagExceeded>().is_some() {
        2
    } else if error.downcast_ref::<lag::OffsetsConflict>().is_some() {
        4
    } else if error.downcast_ref::<verify::VerifyFailed>().is_some()
        || error.downcast_ref::<schema_check::SchemaCheckFailed>().is_some()
    {
        3
    } else {
        1
    }
}
