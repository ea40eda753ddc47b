//! The one in-process harness for tests of anything built on the runtime (feature `testing`):
//! run a handler, or a whole consumer with its read API, against the real broker and
//! Postgres with a fresh schema, group, dead-letter topic and HTTP port; wait until it shows
//! what the test expects; stop it gracefully.
//!
//! # Owns
//! [`isolated_args`], [`spawn`], [`spawn_runtime`], [`spawn_serving`] and [`Running`] (the
//! store's pool, the bound address, wait helpers, graceful shutdown), and [`Recorder`], the
//! handler tests of the runtime and of the tools around it run.
//!
//! # Must not touch
//! The runtime's internals: it drives the runtime through its public API only, so what a
//! test proves is what consumers get. It never mocks the broker or the database.
//!
//! A test that panics drops its [`Running`], which cancels the runtime: its poll thread and
//! workers end by themselves, so the failing test ends instead of hanging.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use orderflow_events::Event;
use orderflow_testkit::{database_url, fresh_group, kafka_args, unique_ident, unique_name, wait_until};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::{BatchContext, Envelope, Handler, HandlerError, Runtime, RuntimeArgs, store};

/// How long a wait helper waits before it fails the test.
pub const WAIT: Duration = Duration::from_secs(60);

/// Runtime settings that isolate one test: a fresh schema, group and dead-letter topic,
/// reading `topics` (already created). Batching keeps the shipped defaults: a worker applies
/// what its partition's queue holds as soon as the queue is empty, so tests see progress at
/// once without a test-only batch size.
pub fn isolated_args(prefix: &str, topics: &[String]) -> RuntimeArgs {
    let mut args = RuntimeArgs::new(kafka_args(), database_url());
    args.schema = Some(unique_ident(prefix));
    args.group = Some(fresh_group(prefix));
    args.topics = topics.to_vec();
    args.dlq_topic = Some(format!("{}.dlq", unique_name(prefix)));
    args.api_tokens = Some(crate::Secret(orderflow_testkit::API_TOKENS_ENV.1.to_owned()));
    args
}

/// Connect `handler`'s store with `args` and run it (no read API) until the test stops it.
pub async fn spawn<H: Handler>(handler: H, args: RuntimeArgs) -> Running {
    let runtime = Runtime::connect(&handler, args).await.expect("the runtime connects to Postgres");
    spawn_runtime(runtime, handler, axum::Router::new()).await
}

/// Run an already connected runtime, serving `api`, until the test stops it.
pub async fn spawn_runtime<H: Handler>(runtime: Runtime, handler: H, api: axum::Router) -> Running {
    let (pool, schema) = (runtime.pool().clone(), runtime.schema().to_owned());
    spawn_serving(pool, schema, move |listener, stop| runtime.run_with_listener(handler, api, listener, stop)).await
}

/// Run `serve` (anything that runs a runtime on a listener until a future completes, such as
/// the consumer kit's `Consumer::serve`) on a free local port until the test stops it.
/// `pool` and `schema` are its store's.
pub async fn spawn_serving<F, Fut>(pool: PgPool, schema: String, serve: F) -> Running
where
    F: FnOnce(TcpListener, WaitForCancellationFutureOwned) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    orderflow_testkit::init_test_logs();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a free port");
    let addr = listener.local_addr().expect("the listener's address");
    let stop = CancellationToken::new();
    let task = tokio::spawn(serve(listener, stop.clone().cancelled_owned()));
    // Every request of the harness carries the read API token `isolated_args` configures.
    let mut headers = reqwest::header::HeaderMap::new();
    let bearer = format!("Bearer {}", orderflow_testkit::API_TOKEN);
    headers.insert(reqwest::header::AUTHORIZATION, bearer.parse().expect("a valid header"));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .default_headers(headers)
        .build()
        .expect("an HTTP client");
    Running { pool, schema, addr, base_url: format!("http://{addr}"), client, stop, task: Some(task) }
}

/// A runtime running in this process. Dropping it cancels the runtime.
pub struct Running {
    /// The store's pool (search path = its schema).
    pub pool: PgPool,
    pub schema: String,
    /// Where `/healthz`, `/readyz`, `/metrics` and the read API answer.
    pub addr: SocketAddr,
    /// `http://{addr}`.
    pub base_url: String,
    pub client: reqwest::Client,
    stop: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Running {
    /// Whether the runtime still runs (it ends by itself only on an error).
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|task| !task.is_finished())
    }

    /// GET `path`, returning the status and the JSON body (Null when the body is not JSON).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response =
            self.client.get(format!("{}{path}", self.base_url)).send().await.expect("GET reaches the runtime");
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// GET `path` until `check` accepts the (status, body), or fail after [`WAIT`] naming `what`.
    pub async fn wait_for<T>(&self, what: &str, path: &str, check: impl Fn(u16, &Value) -> Option<T>) -> T {
        wait_until(what, WAIT, || async {
            self.assert_running(what);
            let response = self.client.get(format!("{}{path}", self.base_url)).send().await.ok()?;
            let status = response.status().as_u16();
            let body = response.json::<Value>().await.unwrap_or(Value::Null);
            check(status, &body)
        })
        .await
    }

    /// GET `path` until it answers 200 with exactly `expected`; a failure names the last answer.
    pub async fn wait_for_json(&self, path: &str, expected: &Value) -> Value {
        let last = std::sync::Mutex::new(Value::Null);
        let what = format!("GET {path} to answer {expected}");
        // Shorter than wait_for's own deadline, so the failure names the last answer.
        let found = tokio::time::timeout(
            WAIT - Duration::from_secs(10),
            self.wait_for(&what, path, |status, body| {
                *last.lock().unwrap() = body.clone();
                (status == 200 && body == expected).then(|| body.clone())
            }),
        )
        .await;
        match found {
            Ok(body) => body,
            Err(_) => panic!("{what}; last answer {}", last.lock().unwrap()),
        }
    }

    /// The stored next offset of every partition (empty before the first batch).
    pub async fn stored_offsets(&self) -> BTreeMap<(String, i32), i64> {
        store::stored_offsets(&self.pool, &self.schema)
            .await
            .expect("the stored offsets are readable")
            .unwrap_or_default()
    }

    /// Wait until the stored next offsets add up to `total` (with every partition starting at
    /// offset 0: until `total` records were consumed), for up to `within`.
    pub async fn wait_for_offsets_sum(&self, total: i64, within: Duration) {
        let what = format!("stored offsets to add up to {total}");
        wait_until(&what, within, || async {
            self.assert_running(&what);
            (stored_offsets_sum(&self.pool, &self.schema).await == total).then_some(())
        })
        .await
    }

    /// Stop the runtime gracefully and check it ended cleanly within 60 s.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        let task = self.task.take().expect("a running runtime has its task");
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("the runtime stops within 60 s")
            .expect("the runtime's task did not panic")
            .expect("the runtime ends cleanly");
    }

    fn assert_running(&self, waiting_for: &str) {
        assert!(self.is_running(), "the runtime stopped while waiting for {waiting_for}");
    }
}

/// The stored next offsets of the consumer whose store is `schema`, added up (0 while it has
/// none, -1 when they cannot be read). With every partition starting at offset 0, that is how
/// many records it consumed.
pub async fn stored_offsets_sum(pool: &PgPool, schema: &str) -> i64 {
    match store::stored_offsets(pool, schema).await {
        Ok(offsets) => offsets.unwrap_or_default().values().sum(),
        Err(_) => -1,
    }
}

/// A handler that records every application of an order as a row of its table `applied`
/// (order id, units, partition, offset; no key, so an order applied twice shows as two rows),
/// and rejects for good an order with a sku starting with `POISON` unless `accept_poison`.
/// Its table comes with its migration, so it exists before the first batch.
pub struct Recorder {
    pub name: String,
    pub accept_poison: bool,
}

impl Recorder {
    /// A recorder named `name` that rejects poisoned orders.
    pub fn new(name: impl Into<String>) -> Self {
        Recorder { name: name.into(), accept_poison: false }
    }

    /// How many times each order was applied to the store of `pool`.
    pub async fn applied(pool: &PgPool) -> BTreeMap<String, i64> {
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT order_id, count(*) FROM applied GROUP BY order_id")
            .fetch_all(pool)
            .await
            .expect("the recorder's table is readable");
        rows.into_iter().collect()
    }
}

impl Handler for Recorder {
    fn name(&self) -> &str {
        &self.name
    }

    fn topics(&self) -> Vec<String> {
        vec![]
    }

    fn migrator(&self) -> Option<&'static sqlx::migrate::Migrator> {
        static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/testing/migrations");
        Some(&MIGRATOR)
    }

    async fn apply(&self, tx: &mut PgConnection, batch: &[Envelope], _ctx: &BatchContext) -> Result<(), HandlerError> {
        for envelope in batch {
            let Event::OrderPlaced(order) = &envelope.event else { continue };
            if !self.accept_poison && order.lines.iter().any(|l| l.sku.as_str().starts_with("POISON")) {
                return Err(HandlerError::permanent(format!("order {} has a poisoned sku", order.order_id.as_str())));
            }
            let units: i64 = order.lines.iter().map(|l| i64::from(l.quantity.get())).sum();
            sqlx::query("INSERT INTO applied (order_id, units, partition, \"offset\") VALUES ($1, $2, $3, $4)")
                .bind(order.order_id.as_str())
                .bind(units)
                .bind(envelope.partition)
                .bind(envelope.offset)
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    }
}
