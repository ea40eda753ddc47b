//! The transactional outbox: the library a checkout service (or the allocator) uses to create
//! the outbox table and enqueue events inside its own transaction. `outbox-relay` publishes
//! an event if and only if that transaction commits (docs/producing.md).
//!
//! # Owns
//! The table `<schema>.orderflow_outbox` (`migrations/`), its NOTIFY trigger, and enqueueing.
//!
//! # Must not touch
//! Kafka (publishing is the relay's).

use anyhow::{Context, bail};
use orderflow_events::{Event, TraceParent};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgConnection};

/// The outbox table's migrations (`migrations/`), applied in the outbox's schema.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Longest NOTIFY channel name Postgres accepts (NAMEDATALEN - 1).
const MAX_CHANNEL_LEN: usize = 63;

/// The outbox in one Postgres schema.
#[derive(Debug, Clone)]
pub struct Outbox {
    schema: String,
    table: String,
}

impl Outbox {
    /// The outbox table `<schema>.orderflow_outbox`. `schema` must be a plain lower-case
    /// identifier (it is spliced into SQL, so it is checked here).
    pub fn new(schema: &str) -> anyhow::Result<Outbox> {
        let valid = schema.len() <= 63
            && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && schema.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            bail!(
                "outbox schema {schema:?} must be a lower-case SQL identifier ([a-z_][a-z0-9_]*, at most 63 characters)"
            );
        }
        Ok(Outbox { schema: schema.to_owned(), table: format!("{schema}.orderflow_outbox") })
    }

    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// `<schema>.orderflow_outbox`.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The NOTIFY channel the insert trigger signals: `orderflow_outbox:<schema>`, cut to the
    /// 63 bytes a channel name may have (migration 0002).
    pub fn channel(&self) -> String {
        let mut channel = format!("orderflow_outbox:{}", self.schema);
        channel.truncate(MAX_CHANNEL_LEN);
        channel
    }

    /// Create the schema if needed and apply the outbox migrations in it.
    pub async fn migrate(&self, database_url: &str) -> anyhow::Result<()> {
        let options: PgConnectOptions = database_url.parse().context("DATABASE_URL is not a valid Postgres URL")?;
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options.options([("search_path", self.schema.as_str())]))
            .await
            .context("Failed to connect to Postgres to migrate the outbox")?;
        pool.execute(format!("CREATE SCHEMA IF NOT EXISTS {}", self.schema).as_str())
            .await
            .with_context(|| format!("Failed to create schema {}", self.schema))?;
        MIGRATOR.run(&pool).await.with_context(|| format!("migrating the outbox in schema {}", self.schema))?;
        pool.close().await;
        Ok(())
    }

    /// Add `event` to the outbox, inside the caller's open transaction: it is published
    /// once that transaction commits, and never if it rolls back. Enqueueing the same event
    /// id twice fails (unique `event_id`).
    pub async fn enqueue(&self, tx: &mut PgConnection, event: &Event) -> Result<(), sqlx::Error> {
        self.enqueue_traced(tx, event, None).await
    }

    /// [`Outbox::enqueue`] carrying the trace the event belongs to.
    pub async fn enqueue_traced(
        &self,
        tx: &mut PgConnection,
        event: &Event,
        traceparent: Option<&TraceParent>,
    ) -> Result<(), sqlx::Error> {
        event
            .validate()
            .map_err(|(field, problem)| sqlx::Error::Encode(format!("invalid event: {field}: {problem}").into()))?;
        let payload = serde_json::to_value(event).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        let sql = format!(
            "INSERT INTO {} (event_id, topic, key, payload, traceparent) VALUES ($1, $2, $3, $4, $5)",
            self.table
        );
        sqlx::query(&sql)
            .bind(event.event_id())
            .bind(event.topic())
            .bind(event.key())
            .bind(payload)
            .bind(traceparent.map(TraceParent::as_str))
            .execute(tx)
            .await?;
        Ok(())
    }

    /// [`Outbox::enqueue_traced`] for many events in one statement (one round trip, one
    /// NOTIFY), in the order given: the relay publishes them in that order.
    pub async fn enqueue_all(
        &self,
        tx: &mut PgConnection,
        events: &[(Event, Option<TraceParent>)],
    ) -> Result<(), sqlx::Error> {
        if events.is_empty() {
            return Ok(());
        }
        let n = events.len();
        let (mut ids, mut topics, mut keys, mut payloads, mut traces) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for (event, traceparent) in events {
            event
                .validate()
                .map_err(|(field, problem)| sqlx::Error::Encode(format!("invalid event: {field}: {problem}").into()))?;
            ids.push(event.event_id());
            topics.push(event.topic());
            keys.push(event.key());
            payloads.push(serde_json::to_value(event).map_err(|e| sqlx::Error::Encode(Box::new(e)))?);
            traces.push(traceparent.as_ref().map(TraceParent::as_str));
        }
        let sql = format!(
            "INSERT INTO {} (event_id, topic, key, payload, traceparent)
             SELECT event_id, topic, key, payload, traceparent
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::text[])
                  WITH ORDINALITY AS e(event_id, topic, key, payload, traceparent, n)
             ORDER BY n",
            self.table
        );
        sqlx::query(&sql).bind(ids).bind(topics).bind(keys).bind(payloads).bind(traces).execute(tx).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_that_are_not_plain_identifiers_are_refused() {
        assert!(Outbox::new("checkout").is_ok());
        assert!(Outbox::new("t_1").is_ok());
        for bad in ["", "Checkout", "a;drop table x", "1abc", "a.b", &"a".repeat(64)] {
            assert!(Outbox::new(bad).is_err(), "{bad:?}");
        }
    }
}
