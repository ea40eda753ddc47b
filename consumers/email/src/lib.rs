//! The `email` consumer: one order-confirmation email per order, rendered from the
//! OrderPlaced (plain text + HTML), and one backorder notice per order the allocator could not
//! cover in full (OrderBackordered), delivered over SMTP with retries.
//!
//! Reads `orders.v1` and `allocations.v1` through `orderflow-runtime` (effectively once) into the Postgres schema
//! `email`, and serves `GET /v1/emails?order_id=` (port 8082).
//!
//! # Layout
//! [`CONSUMER`] (what the registry knows), [`config`] (the sender's flags, `SMTP_URL`), [`handler`] (queues the email in the outbox, in the batch
//! transaction), [`template`] (rendering), [`store`] (queries), [`sender`] (the task that
//! delivers the outbox), [`api`] (reads).
//!
//! # Effects outside Postgres
//! The handler never talks SMTP: it writes an outbox row (`(order_id, kind)` unique, so one
//! email of each kind per order whatever the duplicates), or a `suppressed` row during a replay. The sender claims
//! due rows with `FOR UPDATE SKIP LOCKED` and sends at least once, with a Message-ID derived
//! from the event id.
//!
//! Must not touch other consumers' schemas or any Kafka plumbing (that is the runtime's).

pub mod api;
pub mod breaker;
pub mod config;
pub mod handler;
pub mod sender;
pub mod store;
pub mod template;

pub use config::SenderArgs;
use handler::{Email, NAME};
use orderflow_consumer_kit::{Consumer, Spec, bare};
use orderflow_events::{ALLOCATIONS_TOPIC, ORDERS_TOPIC};
use orderflow_runtime::RuntimeArgs;

/// The consumer as the registry (`crates/registry`) and its binary know it. A replay runs the
/// handler alone: confirmations are recorded `suppressed`, and no sender runs.
pub const CONSUMER: Spec = Spec {
    name: NAME,
    binary: "email",
    port: 8082,
    topics: &[ORDERS_TOPIC, ALLOCATIONS_TOPIC],
    about: "One order-confirmation email per order from orders.v1, and one backorder notice per backordered order from allocations.v1, sent over SMTP",
    secrets: &["SMTP_URL"],
    rebuild: bare::<Email>,
    api: api::router,
    reads: handler::READS,
};

/// Connect the store (schema, migrations), build the read API and the sender, without
/// consuming or sending yet.
pub async fn connect(runtime: RuntimeArgs, sender: SenderArgs) -> anyhow::Result<Consumer<Email>> {
    // A bad SMTP_URL fails before any connection is tried.
    sender.smtp_url.parse()?;
    let consumer = Consumer::connect(Email, runtime, api::router).await?;
    let sender = sender::Sender::new(consumer.pool().clone(), sender)?;
    Ok(consumer.with_companion(|stop| sender.run(stop)))
}
