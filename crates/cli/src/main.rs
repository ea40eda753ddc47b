use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = orderflow_cli::Cli::parse();
    let _telemetry = orderflow_telemetry::init("orderflow");
    match orderflow_cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::from(orderflow_cli::exit_code(&error))
        }
    }
}
