use clap::Parser;
use orderflow_ingress::IngressConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = IngressConfig::parse();
    let _telemetry = orderflow_telemetry::init("ingress");
    orderflow_ingress::run(config, orderflow_service::shutdown_signal()).await
}
