//! Run a consumer in-process for a test: fresh topics, schema, group and dead-letter topic,
//! an HTTP port of its own, and helpers to read its API until it shows what the test expects.

use std::time::Duration;

use orderflow_runtime::{Handler, RuntimeArgs};
use orderflow_testkit::{database_url, fresh_group, fresh_topic, kafka_args, unique_ident, wait_until};
use serde_json::Value;
use tokio::net::TcpListener;

use crate::Consumer;

/// Runtime settings that isolate one test: a fresh schema, group and DLQ topic, reading
/// `topics` (already created), with small batches so tests see progress quickly.
pub fn isolated_args(prefix: &str, topics: &[String]) -> RuntimeArgs {
    let mut args = RuntimeArgs::new(kafka_args(), database_url());
    args.schema = Some(unique_ident(prefix));
    args.group = Some(fresh_group(prefix));
    args.topics = topics.to_vec();
    args.dlq_topic = Some(format!("{}.dlq", orderflow_testkit::unique_name(prefix)));
    args.batch_size = 50;
    args.batch_wait_ms = 5;
    args
}

/// Fresh orders and inventory topics (3 partitions each) for one test.
pub async fn fresh_topics(prefix: &str) -> (String, String) {
    (fresh_topic(&format!("{prefix}-orders"), 3).await, fresh_topic(&format!("{prefix}-inventory"), 3).await)
}

/// A consumer running in this process.
pub struct TestConsumer {
    pub base_url: String,
    pub client: reqwest::Client,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Run a connected consumer on a free port until the test stops it.
pub async fn start<H: Handler>(consumer: Consumer<H>) -> TestConsumer {
    orderflow_testkit::init_test_logs();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a free port");
    let base_url = format!("http://{}", listener.local_addr().expect("local addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(consumer.serve(listener, async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("http client");
    TestConsumer { base_url, client, stop, task }
}

/// When a test panics with the consumer still running, tokio's runtime would wait forever
/// for the runtime's polling thread (a blocking task that only stops when told to), and the
/// test would hang until its timeout. The panic message is already printed: end the process.
impl Drop for TestConsumer {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.task.is_finished() {
            eprintln!("test failed with the consumer running; exiting instead of waiting for its polling thread");
            std::process::exit(101);
        }
    }
}

impl TestConsumer {
    /// GET `path`, returning the status and the JSON body (Null when the body is not JSON).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response =
            self.client.get(format!("{}{path}", self.base_url)).send().await.expect("GET reaches the consumer");
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// GET `path` until `check` accepts the (status, body), or panic after 60 s naming `what`.
    pub async fn wait_for<T>(&self, what: &str, path: &str, check: impl Fn(u16, &Value) -> Option<T>) -> T {
        wait_until(what, Duration::from_secs(60), || async {
            if self.task.is_finished() {
                panic!("the consumer stopped while waiting for {what}");
            }
            let response = self.client.get(format!("{}{path}", self.base_url)).send().await.ok()?;
            let status = response.status().as_u16();
            let body = response.json::<Value>().await.unwrap_or(Value::Null);
            check(status, &body)
        })
        .await
    }

    /// GET `path` until it answers 200 with exactly `expected`.
    pub async fn wait_for_json(&self, path: &str, expected: &Value) -> Value {
        let last = std::sync::Mutex::new(Value::Null);
        let what = format!("GET {path} to answer {expected}");
        // Shorter than wait_for's own deadline, so the panic names the last answer.
        let found = tokio::time::timeout(
            Duration::from_secs(50),
            self.wait_for(&what, path, |status, body| {
                *last.lock().unwrap() = body.clone();
                (status == 200 && body == expected).then(|| body.clone())
            }),
        )
        .await;
        match found {
            Ok(body) => body,
            Err(_) => panic!("{what}; last answer {}", last.lock().unwrap()),
        }
    }

    /// Stop the consumer and check it ended cleanly.
    pub async fn shutdown(mut self) {
        let (stop, _) = tokio::sync::oneshot::channel();
        let _ = std::mem::replace(&mut self.stop, stop).send(());
        tokio::time::timeout(Duration::from_secs(60), &mut self.task)
            .await
            .expect("consumer stops within 60s")
            .expect("consumer task did not panic")
            .expect("consumer ends cleanly");
    }
}
