use orderflow_analytics::{CONSUMER, connect};
use orderflow_consumer_kit::NoFlags;

fn main() -> anyhow::Result<()> {
    orderflow_consumer_kit::main(&CONSUMER, |runtime, NoFlags {}| connect(runtime))
}
