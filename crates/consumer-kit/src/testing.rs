//! Run one of orderflow's consumers in-process for a test, through the runtime's harness
//! (`orderflow_runtime::testing`): fresh topics, schema, group and dead-letter topic, an HTTP
//! port of its own, and helpers to read its API until it shows what the test expects.
//!
//! Owns only what is particular to a [`Consumer`] (its read API and companion tasks); the
//! harness itself is the runtime's, so it exists once.

use orderflow_runtime::Handler;
pub use orderflow_runtime::testing::{Running as TestConsumer, isolated_args};
use orderflow_testkit::fresh_topic;

use crate::Consumer;

/// Fresh orders and inventory topics (3 partitions each) for one test.
pub async fn fresh_topics(prefix: &str) -> (String, String) {
    (fresh_topic(&format!("{prefix}-orders"), 3).await, fresh_topic(&format!("{prefix}-inventory"), 3).await)
}

/// Run a connected consumer (its read API and companions included) on a free port until the
/// test stops it.
pub async fn start<H: Handler>(consumer: Consumer<H>) -> TestConsumer {
    let (pool, schema) = (consumer.pool().clone(), consumer.schema().to_owned());
    orderflow_runtime::testing::spawn_serving(pool, schema, move |listener, stop| consumer.serve(listener, stop)).await
}
