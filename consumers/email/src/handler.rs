//! What an event does to the email store: an OrderPlaced queues its confirmation in the
//! outbox (in the batch transaction); an OrderBackordered (allocations.v1) queues one backorder
//! notice to the order's address, or keeps it pending until the order is applied. During a
//! replay both are recorded as `suppressed` and never sent. Sending is the
//! [`crate::sender`]'s job, outside the transaction.

use orderflow_events::contract::{BackorderField, Field, OrderPlacedField};
use std::collections::BTreeMap;

use orderflow_events::Event;
use orderflow_runtime::{BatchContext, Envelope, Handler, HandlerError};
use sqlx::PgConnection;

use crate::{store, template};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The consumer's name: group, schema and DLQ prefix.
pub const NAME: &str = "email";

/// Every event field this handler reads (its contract: `orderflow contracts`; a test replaces
/// every other field and expects the same store).
pub const READS: &[Field] = &[
    Field::OrderPlaced(OrderPlacedField::EventId),
    Field::OrderPlaced(OrderPlacedField::OrderId),
    Field::OrderPlaced(OrderPlacedField::CustomerEmail),
    Field::OrderPlaced(OrderPlacedField::CustomerName),
    Field::OrderPlaced(OrderPlacedField::Currency),
    Field::OrderPlaced(OrderPlacedField::TotalMinor),
    Field::OrderPlaced(OrderPlacedField::LineSku),
    Field::OrderPlaced(OrderPlacedField::LineQuantity),
    Field::OrderPlaced(OrderPlacedField::LineUnitPriceMinor),
    Field::OrderPlaced(OrderPlacedField::ShippingLine1),
    Field::OrderPlaced(OrderPlacedField::ShippingPostalCode),
    Field::OrderPlaced(OrderPlacedField::ShippingCity),
    Field::OrderPlaced(OrderPlacedField::ShippingCountry),
    Field::OrderBackordered(BackorderField::EventId),
    Field::OrderBackordered(BackorderField::OrderId),
    Field::OrderBackordered(BackorderField::LineSku),
    Field::OrderBackordered(BackorderField::LineQuantityMissing),
];

#[derive(Debug, Default, Clone, Copy)]
pub struct Email;

impl Handler for Email {
    orderflow_consumer_kit::registered!(crate::CONSUMER, MIGRATOR);

    fn wants(&self, event: &Event) -> bool {
        matches!(event, Event::OrderPlaced(_) | Event::OrderBackordered(_))
    }

    async fn apply(&self, tx: &mut PgConnection, batch: &[Envelope], ctx: &BatchContext) -> Result<(), HandlerError> {
        let mut emails = BTreeMap::new();
        let mut notices = Vec::new();
        for envelope in batch {
            match &envelope.event {
                Event::OrderPlaced(order) => {
                    // The first OrderPlaced of an order is the one confirmed.
                    emails
                        .entry(order.order_id.as_str().to_owned())
                        .or_insert_with(|| (order.event_id, template::render(order)));
                }
                Event::OrderBackordered(backorder) => {
                    let lines: Vec<(String, i64)> = backorder
                        .lines
                        .iter()
                        .map(|l| (l.sku.as_str().to_owned(), i64::from(l.quantity_missing)))
                        .collect();
                    notices.push((backorder.order_id.as_str().to_owned(), backorder.event_id, lines));
                }
                _ => {}
            }
        }
        // An order and its decision arrive on different topics, so two batches may handle them
        // at once: each would miss the other's uncommitted row and the notice would wait
        // forever. Both take the order's lock first (in one global order: no deadlock).
        let mut orders: Vec<&str> = emails.keys().map(String::as_str).collect();
        orders.extend(notices.iter().map(|(order, _, _)| order.as_str()));
        orderflow_consumer_kit::lock_keys(tx, store::LOCK_CLASS, orders).await?;
        store::queue(tx, "confirmation", &emails, ctx.replay).await?;
        // Notices of orders confirmed now that arrived before them, and this batch's notices.
        let confirmed: Vec<&str> = emails.keys().map(String::as_str).collect();
        notices.extend(store::take_pending(tx, &confirmed).await?);
        if notices.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = notices.iter().map(|(order, _, _)| order.as_str()).collect();
        let addresses = store::addresses(tx, &ids).await?;
        let (mut ready, mut pending) = (BTreeMap::new(), Vec::new());
        for (order_id, event_id, lines) in notices {
            match addresses.get(&order_id) {
                Some(to) => {
                    let rendered = template::render_backorder(&order_id, to, &lines, event_id);
                    ready.entry(order_id).or_insert((event_id, rendered));
                }
                None => pending.push((order_id, event_id, lines)),
            }
        }
        store::queue(tx, "backorder", &ready, ctx.replay).await?;
        store::keep_pending(tx, &pending).await?;
        Ok(())
    }
}
