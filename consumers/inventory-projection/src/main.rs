use orderflow_consumer_kit::NoFlags;
use orderflow_inventory_projection::{CONSUMER, connect};

fn main() -> anyhow::Result<()> {
    orderflow_consumer_kit::main(&CONSUMER, |runtime, NoFlags {}| connect(runtime))
}
