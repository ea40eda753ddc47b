//! Command line and environment of the `analytics` binary.

use std::net::SocketAddr;

use orderflow_runtime::RuntimeArgs;

/// The contract's default port for this consumer.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8083";

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "analytics",
    version,
    about = "Sales per hour and currency, units per sku and day, stock movements per day and reason"
)]
pub struct Config {
    #[command(flatten)]
    pub runtime: RuntimeArgs,

    /// Address of the read API, /healthz, /readyz and /metrics.
    #[arg(long, env = "LISTEN_ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
}
