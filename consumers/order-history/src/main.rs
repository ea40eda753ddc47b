use orderflow_consumer_kit::NoFlags;
use orderflow_order_history::{CONSUMER, connect};

fn main() -> anyhow::Result<()> {
    orderflow_consumer_kit::main(&CONSUMER, |runtime, NoFlags {}| connect(runtime))
}
