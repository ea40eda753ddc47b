//! What an event does to the fulfillment store: an order creates its fulfillment and lines;
//! a `shipped` stock change naming an order adds to that order's shipped units.

use orderflow_events::contract::{AllocationField, BackorderField, Field, InventoryChangedField, OrderPlacedField};
use std::collections::BTreeMap;

use orderflow_consumer_kit::{Amounts, Decided, ordered_quantities, shipment};
use orderflow_events::Event;
use orderflow_runtime::{BatchContext, Envelope, Handler, HandlerError};
use sqlx::PgConnection;

use crate::store;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The consumer's name: group, schema and DLQ prefix.
pub const NAME: &str = "fulfillment";

/// Every event field this handler reads (its contract: `orderflow contracts`; a test replaces
/// every other field and expects the same store).
pub const READS: &[Field] = &[
    Field::OrderPlaced(OrderPlacedField::OrderId),
    Field::OrderPlaced(OrderPlacedField::PlacedAt),
    Field::OrderPlaced(OrderPlacedField::LineSku),
    Field::OrderPlaced(OrderPlacedField::LineQuantity),
    Field::InventoryChanged(InventoryChangedField::Reason),
    Field::InventoryChanged(InventoryChangedField::OrderId),
    Field::InventoryChanged(InventoryChangedField::Sku),
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
pub struct Fulfillment;

impl Handler for Fulfillment {
    orderflow_consumer_kit::registered!(crate::CONSUMER, MIGRATOR);

    /// Stock changes that are not shipments of an order do not concern fulfillment.
    fn wants(&self, event: &Event) -> bool {
        match event {
            Event::OrderPlaced(_) => true,
            Event::InventoryChanged(change) => shipment(change).is_some(),
            Event::OrderAllocated(_) | Event::OrderBackordered(_) | Event::BackorderAllocated(_) => true,
        }
    }

    async fn apply(&self, tx: &mut PgConnection, batch: &[Envelope], _ctx: &BatchContext) -> Result<(), HandlerError> {
        let mut orders = BTreeMap::new();
        let mut lines = Amounts::new();
        let mut shipped = Amounts::new();
        let mut decided = Decided::default();
        for envelope in batch {
            match &envelope.event {
                Event::OrderPlaced(order) => {
                    let order_id = order.order_id.as_str();
                    orders.entry(order_id.to_owned()).or_insert(order.placed_at);
                    lines.retain(|(id, _), _| id != order_id);
                    for (sku, quantity) in ordered_quantities(order) {
                        lines.insert((order_id.to_owned(), sku), quantity);
                    }
                }
                Event::InventoryChanged(change) => {
                    if let Some((key, units)) = shipment(change) {
                        *shipped.entry(key).or_default() += units;
                    }
                }
                decision @ (Event::OrderAllocated(_) | Event::OrderBackordered(_) | Event::BackorderAllocated(_)) => {
                    decided.add(decision);
                }
            }
        }
        store::insert_orders(tx, &orders, &lines).await?;
        store::add_shipped(tx, &shipped).await?;
        decided.upsert(tx, "allocation_lines").await?;
        Ok(())
    }
}
