//! The contract between a consumer and the runtime: [`Handler`] and [`HandlerError`].

use std::future::Future;

use chrono::{DateTime, Utc};
use orderflow_events::Event;
use sqlx::PgConnection;

/// One decoded event with where it came from.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub event: Event,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The record's Kafka timestamp.
    pub timestamp: Option<DateTime<Utc>>,
    /// W3C trace context of the request that produced the event, if any.
    pub traceparent: Option<String>,
}

/// What a handler may know about the batch it applies.
#[derive(Debug, Clone)]
pub struct BatchContext {
    /// The consumer's name (its group, schema and dead-letter topic prefix).
    pub consumer: String,
    /// True while rebuilding a store from the topics (`--replay`, `orderflow replay`):
    /// handlers with side effects outside Postgres (email) must not act.
    pub replay: bool,
}

/// How a handler failed, which decides what the runtime does next.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth retrying (database down, deadlock, timeout): the runtime rolls back, backs off,
    /// and retries the same batch; the offset does not advance.
    #[error("transient: {0:#}")]
    Transient(anyhow::Error),
    /// Retrying cannot help (the event breaks a rule of the store): the runtime isolates the
    /// event, sends it to `<consumer>.dlq`, and applies the rest of the batch.
    #[error("permanent: {0:#}")]
    Permanent(anyhow::Error),
}

impl HandlerError {
    pub fn permanent(message: impl std::fmt::Display) -> Self {
        HandlerError::Permanent(anyhow::anyhow!("{message}"))
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, HandlerError::Transient(_))
    }
}

/// Database errors are transient unless Postgres says the data itself is wrong
/// (SQLSTATE class 22 data exception, 23 integrity constraint violation).
impl From<sqlx::Error> for HandlerError {
    fn from(error: sqlx::Error) -> Self {
        let permanent = match &error {
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default();
                code.starts_with("22") || code.starts_with("23")
            }
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) | sqlx::Error::TypeNotFound { .. } => true,
            _ => false,
        };
        if permanent { HandlerError::Permanent(error.into()) } else { HandlerError::Transient(error.into()) }
    }
}

/// What a team implements to make a consumer.
///
/// The runtime calls [`Handler::apply`] with a batch of new events (never an event it has
/// applied before: offsets and the applied-event ledger are checked first) inside an open
/// transaction on the consumer's own schema. The handler writes its rows through `tx` and
/// returns; the runtime then writes the offsets and the ledger in the same transaction and
/// commits. A handler must not commit, and must not act outside Postgres unless
/// `ctx.replay` is false (and then only through an outbox table it writes in `tx`).
pub trait Handler: Send + Sync + 'static {
    /// The consumer's name: default consumer group, Postgres schema and `<name>.dlq`.
    fn name(&self) -> &str;

    /// Topics to read (the runtime's `--topic` flags override them).
    fn topics(&self) -> Vec<String>;

    /// Whether the handler wants this event; others are skipped and their offsets advance.
    fn wants(&self, _event: &Event) -> bool {
        true
    }

    /// The consumer's migrations (`sqlx::migrate!()`), run in its schema at start-up.
    fn migrator(&self) -> Option<&'static sqlx::migrate::Migrator> {
        None
    }

    /// Apply `batch` to the store through `tx`. Events of one partition arrive in offset
    /// order; events of different partitions arrive in different batches, concurrently.
    fn apply(
        &self,
        tx: &mut PgConnection,
        batch: &[Envelope],
        ctx: &BatchContext,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}
