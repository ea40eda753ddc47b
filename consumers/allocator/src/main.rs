use orderflow_allocator::{AllocatorArgs, CONSUMER, connect};

fn main() -> anyhow::Result<()> {
    orderflow_consumer_kit::main(&CONSUMER, |runtime, args: AllocatorArgs| connect(runtime, args))
}
