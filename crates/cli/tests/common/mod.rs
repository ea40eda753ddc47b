//! Shared parts of the CLI tests: a small handler to run in-process with the runtime's own
//! harness (`orderflow_runtime::testing`), and tailing a topic into memory.
#![allow(dead_code)]

use orderflow_cli::tail::{TailArgs, tail};
use orderflow_events::Event;
use orderflow_runtime::testing::isolated_args;
use orderflow_runtime::{BatchContext, Envelope, Handler, HandlerError, RuntimeArgs};
use orderflow_testkit::kafka_args;
use sqlx::{PgConnection, PgPool};

/// Records every application as a row, so an event applied twice shows as two rows.
/// Orders with a sku starting with `POISON` are rejected permanently unless `accept_poison`.
pub struct Recorder {
    pub name: String,
    pub accept_poison: bool,
}

impl Handler for Recorder {
    fn name(&self) -> &str {
        &self.name
    }

    fn topics(&self) -> Vec<String> {
        vec![]
    }

    async fn apply(&self, tx: &mut PgConnection, batch: &[Envelope], _ctx: &BatchContext) -> Result<(), HandlerError> {
        sqlx::query("CREATE TABLE IF NOT EXISTS applied (order_id text NOT NULL, units bigint NOT NULL)")
            .execute(&mut *tx)
            .await?;
        for envelope in batch {
            let Event::OrderPlaced(order) = &envelope.event else {
                continue;
            };
            if !self.accept_poison && order.lines.iter().any(|l| l.sku.as_str().starts_with("POISON")) {
                return Err(HandlerError::permanent(format!("order {} has a poisoned sku", order.order_id.as_str())));
            }
            let units: i64 = order.lines.iter().map(|l| i64::from(l.quantity.get())).sum();
            sqlx::query("INSERT INTO applied (order_id, units) VALUES ($1, $2)")
                .bind(order.order_id.as_str())
                .bind(units)
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    }
}

/// `n` one-line orders `<prefix>-<i>`.
pub fn orders(prefix: &str, n: usize) -> Vec<Event> {
    (0..n).map(|i| orderflow_testkit::events::order(&format!("{prefix}-{i}"), &[("sku-a", 1)])).collect()
}

/// A future that completes once `path` exists (stops an export after its first chunk).
pub fn when_exists(path: std::path::PathBuf) -> impl std::future::Future<Output = ()> {
    std::future::poll_fn(move |_| if path.exists() { std::task::Poll::Ready(()) } else { std::task::Poll::Pending })
}

/// Runtime settings for a consumer of `topic` with a fresh name, schema, group and
/// dead-letter topic; the name is the schema's with `_` → `-`.
pub fn consumer_args(prefix: &str, topic: &str) -> (String, RuntimeArgs) {
    let args = isolated_args(prefix, &[topic.to_owned()]);
    let name = args.schema.clone().unwrap_or_default().replace('_', "-");
    (name, args)
}

/// How many times each order was applied.
pub async fn applied_counts(pool: &PgPool) -> std::collections::BTreeMap<String, i64> {
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT order_id, count(*) FROM applied GROUP BY order_id")
        .fetch_all(pool)
        .await
        .unwrap_or_default();
    rows.into_iter().collect()
}

/// Tail with `args` into memory and parse the JSON lines.
pub async fn tail_json(args: &TailArgs) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    tail(&kafka_args(), args, &mut out, std::future::pending()).await.unwrap();
    String::from_utf8(out).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}
