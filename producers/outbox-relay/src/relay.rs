//! The relay loop: become the one active relay, then publish pending outbox rows in id order,
//! batch by batch, marking each batch published in the transaction that claimed it.
//!
//! # Delivery guarantee
//! At least once, in enqueue order per key. A batch's rows are marked published only after
//! the broker acknowledged every one of them; a crash between the acks and the commit
//! publishes those rows again on restart, with the same event ids (consumers skip the copies).
//!
//! # One active relay
//! Several relays may run against one outbox; they elect one with a session-level advisory
//! lock (`pg_try_advisory_lock`) taken on the same connection that runs the batches. Only the
//! lock holder publishes, so rows of one key are never published out of order by two relays
//! working on neighbouring batches (which `FOR UPDATE SKIP LOCKED` alone would allow). The
//! others stand by and retry the lock every poll interval; if the active relay dies, its
//! connection closes, Postgres releases the lock, and a standby takes over. Throughput of one
//! relay is bounded by the producer, not by Postgres, so this costs little.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use orderflow_events::{Event, TraceParent};
use orderflow_publisher::Publisher;
use sqlx::postgres::{PgConnectOptions, PgListener};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::outbox::Outbox;

/// How the relay works through the outbox.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    pub batch_size: usize,
    /// Longest wait for new rows when no NOTIFY arrives (and between lock attempts).
    pub poll_interval: Duration,
    /// Published rows older than this are deleted.
    pub retention: Duration,
}

/// What one batch did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub published: usize,
    pub unreadable: usize,
}

pub struct Relay {
    outbox: Outbox,
    options: PgConnectOptions,
    publisher: Publisher,
    settings: RelaySettings,
    /// Whether this relay holds the lock and publishes (else it stands by).
    active: Arc<AtomicBool>,
}

impl Relay {
    pub fn new(outbox: Outbox, options: PgConnectOptions, publisher: Publisher, settings: RelaySettings) -> Relay {
        Relay { outbox, options, publisher, settings, active: Arc::new(AtomicBool::new(false)) }
    }

    /// True while this relay is the active one (holds the lock); `/readyz` reports it.
    pub fn active_flag(&self) -> Arc<AtomicBool> {
        self.active.clone()
    }

    /// Relay until `shutdown` resolves. Errors (database or broker down) are logged and
    /// retried with backoff; they never end the loop.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(200);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                result = self.serve() => {
                    if let Err(error) = result {
                        tracing::warn!(error = format!("{error:#}"), ?backoff, "outbox relay failed; retrying");
                        metrics::counter!("outbox_relay_errors_total").increment(1);
                    }
                }
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// Connect, wait to become the active relay, and publish until an error.
    async fn serve(&self) -> anyhow::Result<()> {
        let mut conn = PgConnection::connect_with(&self.options).await.context("Failed to connect to Postgres")?;
        let lock_key = advisory_key(self.outbox.table());
        let mut announced = false;
        loop {
            let locked: bool =
                sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(lock_key).fetch_one(&mut conn).await?;
            if locked {
                break;
            }
            if !announced {
                tracing::info!(table = self.outbox.table(), "another relay is active; standing by");
                announced = true;
            }
            tokio::time::sleep(self.settings.poll_interval).await;
        }
        tracing::info!(table = self.outbox.table(), "active relay");
        // Exported at 0 from the start, so an alert's increase() sees the first one.
        orderflow_service::prometheus();
        metrics::counter!("outbox_relay_published_total").increment(0);
        metrics::counter!("outbox_relay_errors_total").increment(0);
        metrics::gauge!("outbox_relay_active").set(1.0);
        self.active.store(true, Ordering::Relaxed);
        let result = self.publish_while_active(&mut conn).await;
        self.active.store(false, Ordering::Relaxed);
        metrics::gauge!("outbox_relay_active").set(0.0);
        result
    }

    async fn publish_while_active(&self, conn: &mut PgConnection) -> anyhow::Result<()> {
        let mut listener = PgListener::connect_with(&sqlx::PgPool::connect_lazy_with(self.options.clone()))
            .await
            .context("Failed to connect the LISTEN session")?;
        listener.listen(&self.outbox.channel()).await.context("LISTEN on the outbox channel")?;
        let mut last_cleanup: Option<Instant> = None;
        loop {
            let outcome = self.relay_batch(conn).await?;
            if outcome.published + outcome.unreadable >= self.settings.batch_size {
                continue;
            }
            self.report_oldest_pending(conn).await;
            if last_cleanup.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                self.delete_old(conn).await?;
                last_cleanup = Some(Instant::now());
            }
            // Drained: sleep until a commit notifies us or the poll interval passes (a
            // notification can be missed while the listener reconnects).
            let _ = tokio::time::timeout(self.settings.poll_interval, listener.try_recv()).await;
        }
    }

    /// `outbox_relay_oldest_pending_seconds`: how long the oldest row still to publish has
    /// waited (0 when none); what an alert on a stuck relay watches.
    async fn report_oldest_pending(&self, conn: &mut PgConnection) {
        let table = self.outbox.table();
        let sql = format!(
            "SELECT EXTRACT(EPOCH FROM now() - created_at)::float8 FROM {table}
             WHERE published_at IS NULL AND error IS NULL ORDER BY id LIMIT 1"
        );
        match sqlx::query_scalar::<_, f64>(&sql).fetch_optional(&mut *conn).await {
            Ok(age) => metrics::gauge!("outbox_relay_oldest_pending_seconds").set(age.unwrap_or(0.0).max(0.0)),
            Err(error) => tracing::warn!(error = %error, "could not read the age of the oldest pending outbox row"),
        }
    }

    /// Claim the next batch of pending rows, publish them all (in flight together), mark them
    /// published, commit. On any publish failure the transaction rolls back and the rows stay
    /// pending.
    pub async fn relay_batch(&self, conn: &mut PgConnection) -> anyhow::Result<BatchOutcome> {
        let table = self.outbox.table();
        let mut tx = conn.begin().await?;
        let rows: Vec<(i64, Uuid, serde_json::Value, Option<String>)> = sqlx::query_as(&format!(
            "SELECT id, event_id, payload, traceparent FROM {table}
             WHERE published_at IS NULL AND error IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
        ))
        .bind(self.settings.batch_size as i64)
        .fetch_all(&mut *tx)
        .await
        .context("Failed to claim pending outbox rows")?;
        if rows.is_empty() {
            return Ok(BatchOutcome::default());
        }
        let mut ids = Vec::with_capacity(rows.len());
        let mut events = Vec::with_capacity(rows.len());
        let mut unreadable = 0;
        for (id, event_id, payload, traceparent) in rows {
            match read_row(event_id, payload) {
                Ok(event) => {
                    ids.push(id);
                    events.push((event, traceparent.and_then(|t| TraceParent::parse(&t).ok())));
                }
                Err(problem) => {
                    tracing::error!(id, %event_id, problem, "outbox row can never be published; marking it");
                    sqlx::query(&format!("UPDATE {table} SET error = $2 WHERE id = $1"))
                        .bind(id)
                        .bind(&problem)
                        .execute(&mut *tx)
                        .await?;
                    unreadable += 1;
                }
            }
        }
        let started = Instant::now();
        let outcomes = self.publisher.publish_traced(events.iter().map(|(e, t)| (e, t.clone())).collect()).await;
        if let Some(error) = outcomes.into_iter().find_map(Result::err) {
            tx.rollback().await?;
            return Err(anyhow::Error::new(error).context("Failed to publish an outbox batch (it stays pending)"));
        }
        sqlx::query(&format!("UPDATE {table} SET published_at = now() WHERE id = ANY($1)"))
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        tx.commit().await.context("marking the batch published")?;
        metrics::counter!("outbox_relay_published_total").increment(ids.len() as u64);
        metrics::histogram!("outbox_relay_batch_seconds").record(started.elapsed().as_secs_f64());
        tracing::debug!(published = ids.len(), first_id = ids.first(), "outbox batch published");
        Ok(BatchOutcome { published: ids.len(), unreadable })
    }

    async fn delete_old(&self, conn: &mut PgConnection) -> anyhow::Result<()> {
        let deleted = sqlx::query(&format!(
            "DELETE FROM {} WHERE published_at < now() - make_interval(secs => $1)",
            self.outbox.table()
        ))
        .bind(self.settings.retention.as_secs_f64())
        .execute(conn)
        .await
        .context("Failed to delete old published outbox rows")?
        .rows_affected();
        if deleted > 0 {
            tracing::info!(deleted, "deleted published outbox rows past retention");
        }
        Ok(())
    }
}

fn read_row(event_id: Uuid, payload: serde_json::Value) -> Result<Event, String> {
    let event: Event = serde_json::from_value(payload).map_err(|e| format!("payload is not an event: {e}"))?;
    if event.event_id() != event_id {
        return Err(format!("payload's event id {} differs from the row's", event.event_id()));
    }
    event.validate().map_err(|(field, problem)| format!("invalid event: {field}: {problem}"))?;
    Ok(event)
}

/// A stable 64-bit advisory lock key for one outbox table.
fn advisory_key(table: &str) -> i64 {
    let id = Uuid::new_v5(&orderflow_events::EVENT_ID_NAMESPACE, format!("outbox-relay:{table}").as_bytes());
    i64::from_be_bytes(id.as_bytes()[..8].try_into().expect("8 bytes"))
}
