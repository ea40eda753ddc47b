//! What an event does to the email store: an OrderPlaced queues its confirmation in the
//! outbox (in the batch transaction); during a replay it is recorded as `suppressed` and
//! never sent. Sending is the [`crate::sender`]'s job, outside the transaction.

use std::collections::BTreeMap;

use orderflow_events::Event;
use orderflow_runtime::{BatchContext, Envelope, Handler, HandlerError};
use sqlx::PgConnection;

use crate::{store, template};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The consumer's name: group, schema and DLQ prefix.
pub const NAME: &str = "email";

#[derive(Debug, Default, Clone, Copy)]
pub struct Email;

impl Handler for Email {
    fn name(&self) -> &str {
        NAME
    }

    fn topics(&self) -> Vec<String> {
        crate::CONSUMER.topic_list()
    }

    fn wants(&self, event: &Event) -> bool {
        matches!(event, Event::OrderPlaced(_))
    }

    fn migrator(&self) -> Option<&'static sqlx::migrate::Migrator> {
        Some(&MIGRATOR)
    }

    async fn apply(&self, tx: &mut PgConnection, batch: &[Envelope], ctx: &BatchContext) -> Result<(), HandlerError> {
        let mut emails = BTreeMap::new();
        for envelope in batch {
            if let Event::OrderPlaced(order) = &envelope.event {
                // The first OrderPlaced of an order is the one confirmed.
                emails
                    .entry(order.order_id.as_str().to_owned())
                    .or_insert_with(|| (order.event_id, template::render(order)));
            }
        }
        store::queue(tx, &emails, ctx.replay).await?;
        Ok(())
    }
}
