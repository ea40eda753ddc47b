//! The `allocator` consumer: decides, once per order, which warehouses' stock it gets, and
//! queues what no warehouse has as a backorder served first placed, first served.
//!
//! Reads `orders.v1` and `inventory.v1` through `orderflow-runtime` (effectively once) into the
//! Postgres schema `allocator`, writes every decision (`OrderAllocated`, `OrderBackordered`,
//! `BackorderAllocated`) to its transactional outbox `<schema>_outbox.orderflow_outbox` in the
//! same transaction, which `outbox-relay --schema allocator_outbox` publishes to
//! `allocations.v1`. Serves `GET /v1/stock/{sku}` and `GET /v1/allocations/{order_id}` (port 8088).
//!
//! # Layout
//! [`CONSUMER`] (what the registry knows), [`decide`] (the rule, no database), [`handler`]
//! (what an event does, which decisions it emits), [`store`] (queries), [`api`] (reads).
//!
//! # Why no overselling
//! Every batch takes an advisory lock per sku it touches, in one global order, before it reads
//! that sku's stock; so decisions on one sku never interleave, across partitions and
//! instances, and a batch never deadlocks another. See docs/allocation.md.
//!
//! Must not touch other consumers' schemas or any Kafka plumbing (that is the runtime's).

pub mod api;
pub mod decide;
pub mod handler;
pub mod store;

use anyhow::bail;
use handler::{Allocator, NAME};
use orderflow_consumer_kit::{Bare, Consumer, LocalBoxFuture, Spec};
use orderflow_events::{INVENTORY_TOPIC, ORDERS_TOPIC};
use orderflow_outbox::Outbox;
use orderflow_runtime::RuntimeArgs;

/// Why the allocator refuses `--replay` and `orderflow replay` (docs/decisions/0005-allocation-decisions-are-facts.md).
pub const NO_REPLAY: &str = "the allocator does not replay: its decisions are facts already published on \
allocations.v1, and deciding again from the topics could decide differently; its store is rebuilt from nothing \
only by deciding anew under a new schema, outbox and consumer group";

/// The consumer as the registry (`crates/registry`) and its binary know it.
pub const CONSUMER: Spec = Spec {
    name: NAME,
    binary: "allocator",
    port: 8088,
    topics: &[ORDERS_TOPIC, INVENTORY_TOPIC],
    about: "Decides stock for every order once (allocated or backordered, first placed first served) and publishes the decisions to allocations.v1 through its outbox",
    secrets: &[],
    rebuild: refuse_rebuild,
    api: api::router,
    reads: handler::READS,
};

fn refuse_rebuild(_: RuntimeArgs) -> LocalBoxFuture<anyhow::Result<Bare>> {
    Box::pin(async { bail!("{NO_REPLAY}") })
}

/// The allocator's own flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AllocatorArgs {
    /// Schema of the outbox its decisions are written to [default: `<consumer schema>_outbox`];
    /// run `outbox-relay --schema <it>` to publish them.
    #[arg(long, env = "ALLOCATOR_OUTBOX_SCHEMA")]
    pub outbox_schema: Option<String>,
}

/// Connect the store and the outbox (schemas, migrations) and build the read API, without
/// consuming yet. Refuses `--replay`.
pub async fn connect(runtime: RuntimeArgs, args: AllocatorArgs) -> anyhow::Result<Consumer<Allocator>> {
    if runtime.replay {
        bail!("{NO_REPLAY}");
    }
    let schema = runtime.schema.clone().unwrap_or_else(|| CONSUMER.schema());
    let outbox = Outbox::new(&args.outbox_schema.unwrap_or_else(|| format!("{schema}_outbox")))?;
    outbox.migrate(&runtime.database.database_url).await?;
    Consumer::connect(Allocator { outbox }, runtime, api::router).await
}
