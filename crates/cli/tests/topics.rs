//! `orderflow topics delete` against the real broker: what `scripts/stack test` uses to remove
//! earlier runs' topics.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use orderflow_kafka::admin::topic_partitions;
use orderflow_testkit::{fresh_topic, kafka_args, unique_name};

fn orderflow(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args(args)
        .env("KAFKA_BROKERS", &kafka_args().brokers)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

async fn wait_until_gone(topic: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while topic_partitions(&kafka_args(), topic).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "{topic} is still in the broker's metadata 30s after its deletion");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn delete_removes_named_and_piped_topics_and_reports_unknown_ones() {
    let named = fresh_topic("cli-delete-named", 2).await;
    let piped = fresh_topic("cli-delete-piped", 1).await;
    let kept = fresh_topic("cli-delete-kept", 1).await;
    let missing = unique_name("cli-delete-missing");

    let out = orderflow(&["topics", "delete", &named, &missing, "--stdin"], &format!("{piped}\n\n"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("unknown {missing}")), "{stdout}");
    assert!(stdout.contains("deleted 2 topic(s)"), "{stdout}");
    wait_until_gone(&named).await;
    wait_until_gone(&piped).await;
    assert_eq!(topic_partitions(&kafka_args(), &kept).await.unwrap(), Some(1), "an unnamed topic survives");
}

#[tokio::test]
async fn delete_refuses_broker_topics_and_an_empty_list() {
    let kept = fresh_topic("cli-delete-refused", 1).await;
    let out = orderflow(&["topics", "delete", &kept, "__consumer_offsets"], "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to delete __consumer_offsets"));
    assert_eq!(topic_partitions(&kafka_args(), &kept).await.unwrap(), Some(1), "nothing is deleted");

    let out = orderflow(&["topics", "delete", "--stdin"], "\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no topics to delete"));
}
