//! Kafka plumbing shared by every orderflow binary: connection settings, producer and
//! consumer configuration with the project's delivery defaults, and the admin calls the
//! stack and the operators need (wait for a broker, create topics).
//!
//! # Layout
//! - [`KafkaArgs`]: the `KAFKA_BROKERS` / `--kafka-option` / `KAFKA_SASL_*` settings every
//!   binary flattens into its clap config. Secret values never reach `Debug` or the logs.
//! - [`KafkaArgs::producer_config`]: `acks=all`, `enable.idempotence=true`, lz4.
//! - [`admin`]: metadata wait and idempotent topic creation.
//! - [`topic_ids`]: Kafka topic ids (KIP-516), the one module allowed `unsafe`.
//!
//! This crate must not know about events, schemas or Postgres: it only talks to the broker.
//! The contract's topic names belong to the events (`orderflow_events::ORDERS_TOPIC`,
//! `INVENTORY_TOPIC`).

pub mod admin;
mod settings;
pub mod topic_ids;

pub use settings::{DEFAULT_BROKERS, KafkaArgs, KafkaOption};
