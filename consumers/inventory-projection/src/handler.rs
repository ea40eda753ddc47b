//! What an event does to the inventory store: every stock change adds to on hand; an order
//! sets its ordered quantities; a `shipped` change of an order adds to that order's shipped
//! quantity (which releases its reservation); the allocator's decisions add to the order's
//! allocated, backordered and refilled units.

use orderflow_consumer_kit::{Decided, ordered_quantities, shipment};
use orderflow_events::Event;
use orderflow_events::contract::{AllocationField, BackorderField, Field, InventoryChangedField, OrderPlacedField};
use orderflow_runtime::{BatchContext, Envelope, Handler, HandlerError};
use sqlx::PgConnection;

use crate::store::{self, Amounts};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The consumer's name: group, schema (`inventory_projection`) and DLQ prefix.
pub const NAME: &str = "inventory-projection";

/// Every event field this handler reads (its contract: `orderflow contracts`; a test replaces
/// every other field and expects the same store).
pub const READS: &[Field] = &[
    Field::OrderPlaced(OrderPlacedField::OrderId),
    Field::OrderPlaced(OrderPlacedField::LineSku),
    Field::OrderPlaced(OrderPlacedField::LineQuantity),
    Field::InventoryChanged(InventoryChangedField::Reason),
    Field::InventoryChanged(InventoryChangedField::OrderId),
    Field::InventoryChanged(InventoryChangedField::Sku),
    Field::InventoryChanged(InventoryChangedField::Warehouse),
    Field::InventoryChanged(InventoryChangedField::Delta),
    Field::OrderAllocated(AllocationField::OrderId),
    Field::OrderAllocated(AllocationField::LineSku),
    Field::OrderAllocated(AllocationField::LineQuantity),
    Field::BackorderAllocated(AllocationField::OrderId),
    Field::BackorderAllocated(AllocationField::LineSku),
    Field::BackorderAllocated(AllocationField::LineQuantity),
    Field::OrderBackordered(BackorderField::OrderId),
    Field::OrderBackordered(BackorderField::LineSku),
    Field::OrderBackordered(BackorderField::LineQuantityMissing),
];

#[derive(Debug, Default, Clone, Copy)]
pub struct InventoryProjection;

impl Handler for InventoryProjection {
    orderflow_consumer_kit::registered!(crate::CONSUMER, MIGRATOR);

    async fn apply(&self, tx: &mut PgConnection, batch: &[Envelope], _ctx: &BatchContext) -> Result<(), HandlerError> {
        apply_batch(tx, batch).await
    }
}

async fn apply_batch(tx: &mut PgConnection, batch: &[Envelope]) -> Result<(), HandlerError> {
    let mut on_hand = Amounts::new();
    let mut ordered = Amounts::new();
    let mut shipped = Amounts::new();
    let mut decided = Decided::default();
    for envelope in batch {
        match &envelope.event {
            Event::OrderPlaced(order) => {
                // A later OrderPlaced of the same order replaces the earlier one.
                ordered.retain(|(order_id, _), _| order_id != order.order_id.as_str());
                for (sku, quantity) in ordered_quantities(order) {
                    ordered.insert((order.order_id.as_str().to_owned(), sku), quantity);
                }
            }
            Event::InventoryChanged(change) => {
                *on_hand.entry((change.sku.as_str().to_owned(), change.warehouse.as_str().to_owned())).or_default() +=
                    change.delta.get();
                if let Some((key, units)) = shipment(change) {
                    *shipped.entry(key).or_default() += units;
                }
            }
            decision @ (Event::OrderAllocated(_) | Event::OrderBackordered(_) | Event::BackorderAllocated(_)) => {
                decided.add(decision);
            }
        }
    }
    decided.upsert(tx, "order_skus").await?;
    store::add_on_hand(tx, &on_hand).await?;
    store::set_ordered(tx, &ordered).await?;
    store::add_shipped(tx, &shipped).await?;
    Ok(())
}
