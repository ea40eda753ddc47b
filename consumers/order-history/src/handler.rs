//! What an event does to the order history: an OrderPlaced sets its order's row.

use orderflow_events::contract::{Field, OrderPlacedField};
use std::collections::BTreeMap;

use orderflow_events::Event;
use orderflow_runtime::{BatchContext, Envelope, Handler, HandlerError};
use sqlx::PgConnection;

use crate::store::{self, OrderRow};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The consumer's name: group, schema and DLQ prefix.
pub const NAME: &str = "order-history";

/// Every event field this handler reads (its contract: `orderflow contracts`; a test replaces
/// every other field and expects the same store).
pub const READS: &[Field] = &[
    Field::OrderPlaced(OrderPlacedField::OrderId),
    Field::OrderPlaced(OrderPlacedField::CustomerId),
    Field::OrderPlaced(OrderPlacedField::PlacedAt),
    Field::OrderPlaced(OrderPlacedField::TotalMinor),
    Field::OrderPlaced(OrderPlacedField::Currency),
];

#[derive(Debug, Default, Clone, Copy)]
pub struct OrderHistory;

impl Handler for OrderHistory {
    orderflow_consumer_kit::registered!(crate::CONSUMER, MIGRATOR);

    fn wants(&self, event: &Event) -> bool {
        matches!(event, Event::OrderPlaced(_))
    }

    async fn apply(&self, tx: &mut PgConnection, batch: &[Envelope], _ctx: &BatchContext) -> Result<(), HandlerError> {
        // One row per order id (a later copy of an order in the batch replaces an earlier
        // one), written in order id order so concurrent batches lock rows alike.
        let mut orders = BTreeMap::new();
        for envelope in batch {
            if let Event::OrderPlaced(order) = &envelope.event {
                orders.insert(order.order_id.as_str().to_owned(), OrderRow::of(order));
            }
        }
        store::upsert_orders(tx, &orders).await?;
        Ok(())
    }
}
