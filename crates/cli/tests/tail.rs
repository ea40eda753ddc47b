//! `orderflow tail` against the real broker: every record as a JSON line with its position,
//! undecodable ones with an `error` field, filters, time starts and follow mode.

mod common;

use std::time::Duration;

use common::tail_json;
use orderflow_cli::tail::{TailArgs, tail};
use orderflow_events::Event;
use orderflow_testkit::events::{order, producer, publish, publish_raw, stock_change};
use orderflow_testkit::{fresh_topic, kafka_args};

fn order_ids(lines: &[serde_json::Value]) -> Vec<String> {
    let mut ids: Vec<String> =
        lines.iter().filter_map(|l| l["value"]["order_id"].as_str().map(str::to_owned)).collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_every_record_with_its_position_and_marks_undecodable_ones() {
    // Arrange: three orders over two partitions and one record that is not Avro.
    let topic = fresh_topic("tail-all", 2).await;
    let producer = producer();
    let events: Vec<Event> = (0..3).map(|i| order(&format!("o-{i}"), &[("sku-a", 1)])).collect();
    let positions = publish(&producer, &topic, &events).await;
    let (bad_partition, bad_offset) = publish_raw(&producer, &topic, "garbage", b"not avro").await;

    // Act
    let lines = tail_json(&TailArgs::new(&topic)).await;

    // Assert
    assert_eq!(lines.len(), 4, "{lines:#?}");
    assert_eq!(order_ids(&lines), ["o-0", "o-1", "o-2"]);
    for line in lines.iter().filter(|l| l.get("value").is_some()) {
        let id = line["value"]["order_id"].as_str().unwrap();
        let index: usize = id.trim_start_matches("o-").parse().unwrap();
        assert_eq!(line["partition"].as_i64(), Some(i64::from(positions[index].0)));
        assert_eq!(line["offset"].as_i64(), Some(positions[index].1));
        assert_eq!(line["key"].as_str(), Some(id));
        assert_eq!(line["headers"]["ce_type"].as_str(), Some("orderflow.order.placed.v1"));
        assert!(line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{line}");
    }
    let bad = lines.iter().find(|l| l.get("error").is_some()).expect("the garbage record is printed");
    assert_eq!(bad["partition"].as_i64(), Some(i64::from(bad_partition)));
    assert_eq!(bad["offset"].as_i64(), Some(bad_offset));
    assert_eq!(bad["key"].as_str(), Some("garbage"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_filters_by_key_type_partition_offset_and_limit() {
    // Arrange
    let topic = fresh_topic("tail-filter", 1).await;
    let producer = producer();
    let events = vec![
        order("o-1", &[("sku-a", 1)]),
        stock_change("sku-a", 5, "received", None),
        order("o-2", &[("sku-b", 2)]),
        order("o-3", &[("sku-b", 2)]),
    ];
    publish(&producer, &topic, &events).await;

    // Act / Assert
    let mut by_key = TailArgs::new(&topic);
    by_key.key = Some("o-2".into());
    assert_eq!(order_ids(&tail_json(&by_key).await), ["o-2"]);

    let mut by_type = TailArgs::new(&topic);
    by_type.ce_type = Some("orderflow.inventory.changed.v1".into());
    let changes = tail_json(&by_type).await;
    assert_eq!(changes.len(), 1, "{changes:#?}");
    assert_eq!(changes[0]["value"]["sku"].as_str(), Some("sku-a"));

    let mut from_offset = TailArgs::new(&topic);
    from_offset.offset = Some(2);
    from_offset.partitions = vec![0];
    assert_eq!(order_ids(&tail_json(&from_offset).await), ["o-2", "o-3"]);

    let mut limited = TailArgs::new(&topic);
    limited.limit = Some(1);
    assert_eq!(order_ids(&tail_json(&limited).await), ["o-1"]);

    let mut no_such_partition = TailArgs::new(&topic);
    no_such_partition.partitions = vec![7];
    let error = tail(&kafka_args(), &no_such_partition, &mut Vec::new(), std::future::pending()).await.unwrap_err();
    assert!(error.to_string().contains(&topic) && error.to_string().contains("partition 7"), "{error:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_since_prints_exactly_the_records_at_or_after_the_time() {
    // Arrange: two rounds of records; the time is the timestamp of a record of the second.
    let topic = fresh_topic("tail-since", 2).await;
    let producer = producer();
    for round in 0..2 {
        let events: Vec<Event> = (0..10).map(|i| order(&format!("r{round}-{i:02}"), &[("sku-a", 1)])).collect();
        publish(&producer, &topic, &events).await;
    }
    let all = tail_json(&TailArgs::new(&topic)).await;
    let time = |l: &serde_json::Value| chrono::DateTime::parse_from_rfc3339(l["timestamp"].as_str().unwrap()).unwrap();
    let since =
        all.iter().filter(|l| l["value"]["order_id"].as_str().unwrap().starts_with("r1")).map(time).min().unwrap();
    let expected: Vec<serde_json::Value> = all.iter().filter(|l| time(l) >= since).cloned().collect();

    // Act
    let mut args = TailArgs::new(&topic);
    args.since = Some(since.into());
    let lines = tail_json(&args).await;

    // Assert
    assert_eq!(order_ids(&lines).iter().filter(|id| id.starts_with("r1")).count(), 10);
    assert_eq!(order_ids(&lines), order_ids(&expected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_follow_prints_records_published_after_it_started() {
    // Arrange: one record before the tail starts.
    let topic = fresh_topic("tail-follow", 2).await;
    let producer = producer();
    publish(&producer, &topic, &[order("before", &[("sku-a", 1)])]).await;

    // Act: follow from the beginning until three records came; publish two more meanwhile.
    let mut args = TailArgs::new(&topic);
    args.follow = true;
    args.from_beginning = true;
    args.limit = Some(3);
    let task = tokio::spawn(async move { tail_json(&args).await });
    publish(&producer, &topic, &[order("after-1", &[("sku-a", 1)]), order("after-2", &[("sku-a", 1)])]).await;
    let lines = tokio::time::timeout(Duration::from_secs(30), task).await.expect("follow ends at its limit").unwrap();

    // Assert
    assert_eq!(order_ids(&lines), ["after-1", "after-2", "before"]);
}
