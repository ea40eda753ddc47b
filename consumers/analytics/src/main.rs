use clap::Parser;
use orderflow_analytics::{Config, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let _telemetry = orderflow_telemetry::init("analytics");
    run(config, orderflow_runtime::shutdown_signal()).await
}
