//! What orderflow's own consumers (`consumers/*`) share beyond the runtime.
//!
//! # Owns
//! - [`Spec`] and [`main`]: what the registry knows of a consumer (name, binary, port,
//!   topics, how to run its handler alone), and the whole `main` of a consumer binary;
//! - [`Consumer`]: connect a handler's store, build its read API, then consume and serve;
//! - [`ApiError`]: the JSON error bodies of the read APIs (400 with the parameter and the
//!   problem, 404 for unknown ids, 500 without internals);
//! - [`shipment`], [`ordered_quantities`], [`Decided`], [`Amounts`]: the facts several projections key on;
//! - [`registered!`]: the three `Handler` methods every registered consumer answers alike
//!   (name and topics from its [`Spec`], its migrations);
//! - [`lock_keys`]: per-key advisory locks in one global order (the allocator's skus, the email
//!   consumer's orders);
//! - [`testing`] (feature `testing`): run a consumer in-process against the real broker and
//!   Postgres with a fresh schema, group and port, and read its HTTP API.
//!
//! # Must not touch
//! Kafka, offsets and batching (that is `orderflow-runtime`), and any consumer's tables.

mod service;
#[cfg(feature = "testing")]
pub mod testing;

pub use service::{Bare, BoxFuture, Flags, LocalBoxFuture, NoFlags, Rebuild, Spec, bare, bare_with, main};

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use orderflow_events::{InventoryChanged, OrderPlaced, Reason};
pub use orderflow_runtime::http::ErrorBody;
use orderflow_runtime::{CancellationToken, Handler, Runtime, RuntimeArgs};
use sqlx::PgPool;
pub use utoipa_axum::router::OpenApiRouter;

#[doc(hidden)]
pub use sqlx as __sqlx;

/// Inside `impl Handler for ...`: `name` and `topics` from the consumer's [`Spec`] (the
/// registry's line), and `migrator` returning its migrations. Every registered consumer
/// answers these three the same way; its handler writes `wants` and `apply`.
///
/// ```text
/// static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
///
/// impl Handler for OrderHistory {
///     orderflow_consumer_kit::registered!(crate::CONSUMER, MIGRATOR);
///     // wants, apply
/// }
/// ```
#[macro_export]
macro_rules! registered {
    ($spec:expr, $migrator:expr) => {
        fn name(&self) -> &str {
            $spec.name
        }

        fn topics(&self) -> Vec<String> {
            $spec.topic_list()
        }

        fn migrator(&self) -> Option<&'static $crate::__sqlx::migrate::Migrator> {
            Some(&$migrator)
        }
    };
}

/// A consumer's read API: its routes on the store's pool, each handler annotated with
/// `#[utoipa::path]` and added with `utoipa_axum::routes!`, so the routes and their OpenAPI
/// description (`/openapi.json`, docs/openapi/) come from the same code.
pub type ReadApi = fn() -> OpenApiRouter<PgPool>;

/// The OpenAPI description consumer `spec` serves at `/openapi.json`.
pub fn openapi(spec: &Spec) -> utoipa::openapi::OpenApi {
    orderflow_runtime::http::openapi(spec.name, (spec.api)().into_openapi())
}

/// Longest path or query parameter a read API accepts, in bytes.
pub const MAX_PARAM_LEN: usize = 256;

/// An error answer of a read endpoint: `{"error": "...", "field": "..."}`.
#[derive(Debug)]
pub enum ApiError {
    /// A parameter is missing, malformed or out of range (400).
    BadRequest { field: &'static str, problem: String },
    /// Nothing is known under this id (404).
    NotFound(String),
    /// The store failed (500); the cause is logged here, never sent.
    Internal(anyhow::Error),
}

impl ApiError {
    pub fn bad(field: &'static str, problem: impl Into<String>) -> Self {
        ApiError::BadRequest { field, problem: problem.into() }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        ApiError::Internal(error.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApiError::BadRequest { field, problem } => (StatusCode::BAD_REQUEST, ErrorBody::field(field, problem)),
            ApiError::NotFound(what) => (StatusCode::NOT_FOUND, ErrorBody::new(format!("{what} not found"))),
            ApiError::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "read endpoint failed");
                (StatusCode::INTERNAL_SERVER_ERROR, ErrorBody::new("internal error, see the service's log"))
            }
        };
        (status, Json(body)).into_response()
    }
}

/// Check a parameter's length before parsing it.
pub fn bounded<'a>(field: &'static str, value: &'a str) -> Result<&'a str, ApiError> {
    if value.len() > MAX_PARAM_LEN {
        return Err(ApiError::bad(field, format!("longer than {MAX_PARAM_LEN} bytes")));
    }
    Ok(value)
}

/// A task that runs beside the consumer (the email sender): it gets a token of the runtime's
/// tree that is cancelled when the consumer has stopped, and should return soon after.
type Companion = Box<dyn FnOnce(CancellationToken) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// How long [`Consumer::serve`] waits for companion tasks to finish at shutdown.
const COMPANION_GRACE: Duration = Duration::from_secs(30);

/// A consumer whose store is connected and migrated, with its read API built on the pool;
/// [`Consumer::serve`] consumes and serves. Split in two so a test can connect (and fail
/// clearly) before it spawns the consuming part.
pub struct Consumer<H: Handler> {
    runtime: Runtime,
    handler: H,
    api: OpenApiRouter,
    companions: Vec<Companion>,
}

impl<H: Handler> Consumer<H> {
    /// Connect the handler's store (schema, runtime tables, migrations) and build its read
    /// API (routes and their description, see [`ReadApi`]) on the pool.
    pub async fn connect(handler: H, args: RuntimeArgs, api: ReadApi) -> anyhow::Result<Self> {
        let runtime = Runtime::connect(&handler, args).await?;
        let api = api().with_state(runtime.pool().clone());
        Ok(Consumer { runtime, handler, api, companions: Vec::new() })
    }

    /// The read store's pool (search path = the consumer's schema).
    pub fn pool(&self) -> &PgPool {
        self.runtime.pool()
    }

    /// The handler's name (group, schema and dead-letter prefix by default).
    pub fn name(&self) -> &str {
        self.handler.name()
    }

    /// The read store's Postgres schema.
    pub fn schema(&self) -> &str {
        self.runtime.schema()
    }

    /// Run `task` beside the consumer while it serves; it is told to stop (its token is
    /// cancelled) after the consumer stopped, or when the consumer is dropped, and is awaited
    /// for up to 30 s.
    pub fn with_companion<F, Fut>(mut self, task: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.companions.push(Box::new(move |stop| Box::pin(task(stop))));
        self
    }

    /// Consume and serve on `listen` until `shutdown` resolves.
    pub async fn run(
        self,
        listen: SocketAddr,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let listener =
            tokio::net::TcpListener::bind(listen).await.with_context(|| format!("Failed to listen on {listen}"))?;
        self.serve(listener, shutdown).await
    }

    /// Consume and serve on `listener` (tests bind port 0) until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let companions: Vec<_> =
            self.companions.into_iter().map(|task| tokio::spawn(task(self.runtime.child_token()))).collect();
        // The runtime cancels the companions' tokens once it has stopped consuming.
        let result = self.runtime.run_with_listener(self.handler, self.api, listener, shutdown).await;
        for companion in companions {
            if tokio::time::timeout(COMPANION_GRACE, companion).await.is_err() {
                tracing::warn!("a companion task did not stop within {COMPANION_GRACE:?}");
            }
        }
        result
    }
}

/// Amounts keyed by two strings ((sku, warehouse), (order id, sku), ...), in key order, the
/// order batched upserts lock rows in (so concurrent batches cannot deadlock).
pub type Amounts = std::collections::BTreeMap<(String, String), i64>;

/// `amounts` as three columns for `INSERT ... SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[])`.
fn amount_columns(amounts: &Amounts) -> (Vec<String>, Vec<String>, Vec<i64>) {
    let mut first = Vec::with_capacity(amounts.len());
    let mut second = Vec::with_capacity(amounts.len());
    let mut values = Vec::with_capacity(amounts.len());
    for ((a, b), amount) in amounts {
        first.push(a.clone());
        second.push(b.clone());
        values.push(*amount);
    }
    (first, second, values)
}

/// A shipment of an order: a `shipped` stock change that names its order, as
/// ((order id, sku), units shipped). Shipped deltas are negative; the units are `-delta`.
pub fn shipment(change: &InventoryChanged) -> Option<((String, String), i64)> {
    match (change.reason, &change.order_id) {
        (Reason::Shipped, Some(order_id)) => {
            Some(((order_id.as_str().to_owned(), change.sku.as_str().to_owned()), -change.delta.get()))
        }
        _ => None,
    }
}

/// Take a Postgres advisory lock per key for the rest of the transaction
/// (`pg_advisory_xact_lock(class, hashtext(key))`), in one global order (the keys' hashes), so
/// two batches that need overlapping keys wait for each other instead of deadlocking. `class`
/// keeps one consumer's locks apart from any other user's. For facts about one key that
/// arrive on different topics (an order and its decision), or rows several partitions write
/// (a sku's stock).
pub async fn lock_keys<'a>(
    tx: &mut sqlx::PgConnection,
    class: i32,
    keys: impl IntoIterator<Item = &'a str>,
) -> Result<(), sqlx::Error> {
    let keys: Vec<&str> = keys.into_iter().collect();
    if keys.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "SELECT pg_advisory_xact_lock($1, k)
         FROM (SELECT DISTINCT hashtext(key) AS k FROM unnest($2::text[]) AS key ORDER BY 1) AS keys",
    )
    .bind(class)
    .bind(&keys)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The allocator's decisions (`allocations.v1`) as units per (order id, sku), the sums a
/// projection that follows them keeps (order-insensitive, like every other amount here):
/// `allocated` from `OrderAllocated` and `BackorderAllocated`, `backordered` from
/// `OrderBackordered`, `refilled` (backordered units stock covered later) from
/// `BackorderAllocated`. Still waiting = backordered − refilled.
#[derive(Debug, Default)]
pub struct Decided {
    pub allocated: Amounts,
    pub backordered: Amounts,
    pub refilled: Amounts,
}

impl Decided {
    /// Add `event`'s units if it is a decision.
    pub fn add(&mut self, event: &orderflow_events::Event) {
        use orderflow_events::Event;
        let key = |order: &orderflow_events::OrderId, sku: &orderflow_events::Sku| {
            (order.as_str().to_owned(), sku.as_str().to_owned())
        };
        match event {
            Event::OrderAllocated(d) | Event::BackorderAllocated(d) => {
                let later = matches!(event, Event::BackorderAllocated(_));
                for line in &d.lines {
                    *self.allocated.entry(key(&d.order_id, &line.sku)).or_default() += i64::from(line.quantity);
                    if later {
                        *self.refilled.entry(key(&d.order_id, &line.sku)).or_default() += i64::from(line.quantity);
                    }
                }
            }
            Event::OrderBackordered(d) => {
                for line in &d.lines {
                    *self.backordered.entry(key(&d.order_id, &line.sku)).or_default() +=
                        i64::from(line.quantity_missing);
                }
            }
            _ => {}
        }
    }

    /// Add the sums to `table (order_id, sku, allocated, backordered, refilled)` (the caller's
    /// constant).
    pub async fn upsert(&self, tx: &mut sqlx::PgConnection, table: &'static str) -> Result<(), sqlx::Error> {
        for (column, units) in
            [("allocated", &self.allocated), ("backordered", &self.backordered), ("refilled", &self.refilled)]
        {
            upsert_amounts(tx, table, ["order_id", "sku", column], Merge::Add, units).await?;
        }
        Ok(())
    }
}

/// An order's quantity per sku (two lines of one sku are summed), in sku order.
pub fn ordered_quantities(order: &OrderPlaced) -> std::collections::BTreeMap<String, i64> {
    let mut quantities = std::collections::BTreeMap::new();
    for line in &order.lines {
        *quantities.entry(line.sku.as_str().to_owned()).or_default() += i64::from(line.quantity.get());
    }
    quantities
}

/// How [`upsert_amounts`] merges an amount into an existing row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// `value = value + new` (sums: stock, shipped units).
    Add,
    /// `value = new` (set-once facts: an order's quantities).
    Replace,
}

/// Upsert `amounts` into `table (key1, key2, value)` in one `INSERT ... SELECT FROM UNNEST`
/// statement, keys in sorted order. The merge happens in the row under its lock, so
/// concurrent batches never lose each other's updates. `table` and `columns` are the
/// caller's constants (identifiers cannot be bound); the data is bound.
pub async fn upsert_amounts(
    tx: &mut sqlx::PgConnection,
    table: &'static str,
    [key1, key2, value]: [&'static str; 3],
    merge: Merge,
    amounts: &Amounts,
) -> Result<(), sqlx::Error> {
    if amounts.is_empty() {
        return Ok(());
    }
    let merged = match merge {
        Merge::Add => format!("{table}.{value} + EXCLUDED.{value}"),
        Merge::Replace => format!("EXCLUDED.{value}"),
    };
    let sql = format!(
        "INSERT INTO {table} ({key1}, {key2}, {value})
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[])
         ON CONFLICT ({key1}, {key2}) DO UPDATE SET {value} = {merged}"
    );
    let (first, second, values) = amount_columns(amounts);
    sqlx::query(&sql).bind(first).bind(second).bind(values).execute(&mut *tx).await?;
    Ok(())
}
