//! `orderflow dlq` with a real consumer: a poison order is dead-lettered, listed, shown, and
//! after the fix redriven; it ends applied exactly once, and the redrive is audited.

mod common;

use std::time::Duration;

use common::consumer_args;
use orderflow_cli::dlq::{self, Selection, dead_letters, redrive};
use orderflow_runtime::dlq::headers as dlq_headers;
use orderflow_runtime::testing::{Recorder, spawn};
use orderflow_testkit::events::{order, producer, publish};
use orderflow_testkit::{fresh_topic, kafka_args};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redriven_poison_order_is_applied_exactly_once_and_the_redrive_is_audited() {
    // Arrange: a consumer that rejects POISON skus dead-letters one of three orders.
    let topic = fresh_topic("dlq", 1).await;
    let (name, args) = consumer_args("dlq", &topic);
    let dlq_topic = args.dlq_topic.clone().unwrap();
    let producer = producer();
    let events =
        [order("good-1", &[("sku-a", 1)]), order("poison-1", &[("POISON-x", 2)]), order("good-2", &[("sku-a", 1)])];
    let positions = publish(&producer, &topic, &events).await;
    let running = spawn(Recorder { name: name.clone(), accept_poison: false }, args.clone()).await;
    running.wait_for_offsets_sum(3, Duration::from_secs(60)).await;
    running.shutdown().await;

    // Act 1: list it.
    let (letters, _) = dead_letters(&kafka_args(), &dlq_topic, 1000).await.unwrap();

    // Assert 1: the dead letter says where it came from and why.
    assert_eq!(letters.len(), 1, "{letters:#?}");
    let letter = &letters[0];
    assert_eq!(letter.key.as_deref(), Some("poison-1"));
    assert_eq!((letter.original_topic.as_str(), letter.original_offset), (topic.as_str(), Some(positions[1].1)));
    assert_eq!(letter.error_class, "permanent");
    assert!(letter.error_message.contains("poisoned sku"), "{letter:?}");
    assert!(letter.redriven_to.is_empty());

    // Act 2: the fix is deployed (the handler accepts the sku); redrive by class, twice.
    let running = spawn(Recorder { name: name.clone(), accept_poison: true }, args.clone()).await;
    let selection = Selection { class: Some("permanent".into()), ..Selection::default() };
    let dry = redrive(&kafka_args(), &dlq_topic, &selection, 1000, true).await.unwrap();
    assert_eq!((dry.len(), dry[0].to), (1, None));
    let first = redrive(&kafka_args(), &dlq_topic, &selection, 1000, false).await.unwrap();
    let second = redrive(&kafka_args(), &dlq_topic, &selection, 1000, false).await.unwrap();
    running.wait_for_offsets_sum(4, Duration::from_secs(60)).await;
    let applied = Recorder::applied(&running.pool).await;
    running.shutdown().await;

    // Assert 2: applied exactly once; the second redrive found nothing left to redrive.
    assert_eq!(first.len(), 1);
    assert!(second.is_empty(), "{second:?}");
    assert_eq!(applied.get("poison-1"), Some(&1), "{applied:?}");
    assert_eq!(applied.values().sum::<i64>(), 3, "{applied:?}");

    // The redriven record carries the original headers minus dlq_*, plus the audit ones.
    let (partition, offset) = first[0].to.unwrap();
    let reader = orderflow_cli::records::reader(&kafka_args()).unwrap();
    let record = orderflow_cli::records::read_one(&reader, &topic, partition, offset, Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    let headers = orderflow_cli::records::headers_map(&record);
    assert_eq!(headers[dlq::headers::REDRIVE_OF], format!("{}:{}", letter.partition, letter.offset));
    assert!(headers.contains_key(dlq::headers::REDRIVEN_BY) && headers.contains_key(dlq::headers::REDRIVEN_AT));
    assert_eq!(headers["ce_type"], "orderflow.order.placed.v1");
    assert!(!headers.contains_key(dlq_headers::ERROR_CLASS) && !headers.contains_key(dlq_headers::ORIGINAL_TOPIC));

    // The DLQ lists the dead letter as redriven, pointing at the new record.
    let (letters, _) = dead_letters(&kafka_args(), &dlq_topic, 1000).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].redriven_to, [format!("{topic}[{partition}]@{offset}")]);
}
