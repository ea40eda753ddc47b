use clap::Parser;
use orderflow_email::{Config, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let _telemetry = orderflow_telemetry::init("email");
    run(config, orderflow_runtime::shutdown_signal()).await
}
