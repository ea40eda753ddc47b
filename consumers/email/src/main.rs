use orderflow_email::{CONSUMER, SenderArgs, connect};

fn main() -> anyhow::Result<()> {
    orderflow_consumer_kit::main(&CONSUMER, |runtime, sender: SenderArgs| connect(runtime, sender))
}
