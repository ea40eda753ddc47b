use clap::Parser;
use orderflow_inventory_projection::{Config, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let _telemetry = orderflow_telemetry::init("inventory-projection");
    run(config, orderflow_runtime::shutdown_signal()).await
}
