use clap::Parser;
use orderflow_outbox_relay::RelayConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = RelayConfig::parse();
    let _telemetry = orderflow_telemetry::init("outbox-relay");
    orderflow_outbox_relay::run(config, orderflow_service::shutdown_signal()).await
}
