//! A complete consumer: units sold per sku, from `orders.v1`. The example of
//! docs/adding-a-consumer.md, kept compiling by CI and used by the runtime's crash tests.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use clap::Parser;
use orderflow_events::{Event, ORDERS_TOPIC};
use orderflow_runtime::{BatchContext, Envelope, Handler, HandlerError, Runtime, RuntimeArgs};
use sqlx::PgConnection;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("examples/units_per_sku/migrations");

struct UnitsPerSku;

impl Handler for UnitsPerSku {
    fn name(&self) -> &str {
        "units-per-sku"
    }

    fn topics(&self) -> Vec<String> {
        vec![ORDERS_TOPIC.to_owned()]
    }

    fn migrator(&self) -> Option<&'static sqlx::migrate::Migrator> {
        Some(&MIGRATOR)
    }

    async fn apply(&self, tx: &mut PgConnection, batch: &[Envelope], _ctx: &BatchContext) -> Result<(), HandlerError> {
        // Sum the batch first, then upsert every sku in one statement, in sorted order: other
        // partitions' transactions touch the same rows, and a common lock order means they
        // wait for each other instead of deadlocking.
        let mut units: BTreeMap<&str, i64> = BTreeMap::new();
        for envelope in batch {
            let Event::OrderPlaced(order) = &envelope.event else { continue };
            for line in &order.lines {
                *units.entry(line.sku.as_str()).or_default() += i64::from(line.quantity.get());
            }
        }
        let (skus, counts): (Vec<&str>, Vec<i64>) = units.into_iter().unzip();
        sqlx::query(
            "INSERT INTO units_per_sku (sku, units) SELECT * FROM UNNEST($1::text[], $2::bigint[])
             ON CONFLICT (sku) DO UPDATE SET units = units_per_sku.units + EXCLUDED.units",
        )
        .bind(&skus)
        .bind(&counts)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

#[derive(Parser)]
struct Config {
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    // Held until main returns: dropping it flushes the spans not yet exported.
    let _telemetry = orderflow_telemetry::init("units-per-sku");
    let runtime = Runtime::connect(&UnitsPerSku, config.runtime).await?;
    runtime.run(UnitsPerSku, axum::Router::new(), config.listen, orderflow_runtime::shutdown_signal()).await
}
