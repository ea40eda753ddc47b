use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = orderflow_bench::Cli::parse();
    let _telemetry = orderflow_telemetry::init("orderflow-bench");
    orderflow_bench::main(cli).await
}
