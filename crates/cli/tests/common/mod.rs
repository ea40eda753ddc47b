//! Shared parts of the CLI tests: settings for a consumer run in-process with the runtime's
//! own harness and handler (`orderflow_runtime::testing`), and tailing a topic into memory.
#![allow(dead_code)]

use orderflow_cli::tail::{TailArgs, tail};
use orderflow_events::Event;
use orderflow_runtime::RuntimeArgs;
use orderflow_runtime::testing::isolated_args;
use orderflow_testkit::kafka_args;

/// `n` one-line orders `<prefix>-<i>`.
pub fn orders(prefix: &str, n: usize) -> Vec<Event> {
    (0..n).map(|i| orderflow_testkit::events::order(&format!("{prefix}-{i}"), &[("sku-a", 1)])).collect()
}

/// A future that completes once `path` exists (stops an export after its first chunk).
pub fn when_exists(path: std::path::PathBuf) -> impl std::future::Future<Output = ()> {
    std::future::poll_fn(move |_| if path.exists() { std::task::Poll::Ready(()) } else { std::task::Poll::Pending })
}

/// Runtime settings for a consumer of `topic` with a fresh name, schema, group and
/// dead-letter topic; the name is the schema's with `_` → `-`.
pub fn consumer_args(prefix: &str, topic: &str) -> (String, RuntimeArgs) {
    let args = isolated_args(prefix, &[topic.to_owned()]);
    let name = args.schema.clone().unwrap_or_default().replace('_', "-");
    (name, args)
}

/// Tail with `args` into memory and parse the JSON lines.
pub async fn tail_json(args: &TailArgs) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    tail(&kafka_args(), args, &mut out, std::future::pending()).await.unwrap();
    String::from_utf8(out).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}
