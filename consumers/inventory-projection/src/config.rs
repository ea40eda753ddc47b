//! Command line and environment of the `inventory-projection` binary.

use std::net::SocketAddr;

use orderflow_runtime::RuntimeArgs;

/// The contract's default port for this consumer.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8084";

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "inventory-projection",
    version,
    about = "Stock on hand, reserved and available per sku, from orders.v1 and inventory.v1"
)]
pub struct Config {
    #[command(flatten)]
    pub runtime: RuntimeArgs,

    /// Address of the read API, /healthz, /readyz and /metrics.
    #[arg(long, env = "LISTEN_ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
}
