//! The consumer the harness measures, run as a child process so its memory and CPU are its
//! own: a batched projection (units per sku, one UNNEST upsert per batch) on the runtime,
//! with the full effectively-once machinery on (offsets, ledger, DLQ).

use std::collections::BTreeMap;

use orderflow_events::Event;
use orderflow_runtime::{BatchContext, Envelope, Handler, HandlerError, Runtime, RuntimeArgs};
use sqlx::PgConnection;

use crate::Env;

#[derive(Debug, Clone, clap::Args)]
pub struct ChildArgs {
    #[arg(long)]
    pub topic: String,
    #[arg(long)]
    pub schema: String,
    #[arg(long)]
    pub group: String,
    #[arg(long, default_value_t = 500)]
    pub batch_size: u32,
    #[arg(long)]
    pub replay: bool,
}

pub struct BenchHandler;

impl Handler for BenchHandler {
    fn name(&self) -> &str {
        "bench"
    }

    fn topics(&self) -> Vec<String> {
        Vec::new()
    }

    async fn apply(&self, tx: &mut PgConnection, batch: &[Envelope], _ctx: &BatchContext) -> Result<(), HandlerError> {
        let mut units = BTreeMap::new();
        for envelope in batch {
            if let Event::OrderPlaced(order) = &envelope.event {
                for line in &order.lines {
                    *units.entry(line.sku.as_str().to_owned()).or_insert(0) += i64::from(line.quantity.get());
                }
            }
        }
        crate::ceilings::upsert_units(tx, &units).await?;
        Ok(())
    }
}

pub async fn run(env: &Env, args: ChildArgs) -> anyhow::Result<()> {
    let mut runtime_args = RuntimeArgs::new(env.kafka.clone(), env.database_url.clone());
    runtime_args.schema = Some(args.schema);
    runtime_args.group = Some(args.group);
    runtime_args.topics = vec![args.topic.clone()];
    runtime_args.dlq_topic = Some(format!("{}.dlq", args.topic));
    runtime_args.batch_size = args.batch_size;
    runtime_args.replay = args.replay;
    let runtime = Runtime::connect(&BenchHandler, runtime_args).await?;
    crate::ceilings::create_units_table(runtime.pool()).await?;
    let listen = "127.0.0.1:0".parse()?;
    runtime.run(BenchHandler, axum::Router::new(), listen, orderflow_runtime::shutdown_signal()).await
}
