//! What an event does to the analytics store: an order counts once (and its total as
//! revenue) in the hour it was placed, and its units on that day per sku; a stock change
//! counts as a movement of its reason on the day it occurred.

use chrono::{DurationRound, TimeDelta};
use orderflow_events::Event;
use orderflow_events::contract::{Field, InventoryChangedField, OrderPlacedField};
use orderflow_runtime::{BatchContext, Envelope, Handler, HandlerError};
use sqlx::PgConnection;

use crate::store::{self, Increments, Pair};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The consumer's name: group, schema and DLQ prefix.
pub const NAME: &str = "analytics";

/// Every event field this handler reads (its contract: `orderflow contracts`; a test replaces
/// every other field and expects the same store).
pub const READS: &[Field] = &[
    Field::OrderPlaced(OrderPlacedField::PlacedAt),
    Field::OrderPlaced(OrderPlacedField::Currency),
    Field::OrderPlaced(OrderPlacedField::TotalMinor),
    Field::OrderPlaced(OrderPlacedField::LineSku),
    Field::OrderPlaced(OrderPlacedField::LineQuantity),
    Field::InventoryChanged(InventoryChangedField::OccurredAt),
    Field::InventoryChanged(InventoryChangedField::Reason),
    Field::InventoryChanged(InventoryChangedField::Delta),
];

#[derive(Debug, Default, Clone, Copy)]
pub struct Analytics;

/// What `batch` adds to the store.
pub fn increments(batch: &[Envelope]) -> Result<Increments, HandlerError> {
    let mut inc = Increments::default();
    for envelope in batch {
        match &envelope.event {
            Event::OrderPlaced(order) => {
                let hour = order
                    .placed_at
                    .duration_trunc(TimeDelta::hours(1))
                    .map_err(|e| HandlerError::permanent(format!("placed_at {} has no hour: {e}", order.placed_at)))?;
                *inc.sales.entry((hour, order.currency.as_str().to_owned())).or_default() +=
                    Pair(1, order.total_minor.get());
                let day = order.placed_at.date_naive();
                for line in &order.lines {
                    *inc.units.entry((day, line.sku.as_str().to_owned())).or_default() +=
                        i64::from(line.quantity.get());
                }
            }
            Event::InventoryChanged(change) => {
                let key = (change.occurred_at.date_naive(), change.reason.as_str().to_owned());
                *inc.movements.entry(key).or_default() += Pair(1, change.delta.get());
            }
            // The allocator's decisions (allocations.v1) are not counted here.
            Event::OrderAllocated(_) | Event::OrderBackordered(_) | Event::BackorderAllocated(_) => {}
        }
    }
    Ok(inc)
}

impl Handler for Analytics {
    orderflow_consumer_kit::registered!(crate::CONSUMER, MIGRATOR);

    async fn apply(&self, tx: &mut PgConnection, batch: &[Envelope], _ctx: &BatchContext) -> Result<(), HandlerError> {
        let inc = increments(batch)?;
        store::add(tx, &inc).await?;
        Ok(())
    }
}
