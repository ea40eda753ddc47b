//! The publisher against the real broker.

use std::time::{Duration, Instant};

use orderflow_events::{Codec, Event};
use orderflow_publisher::{Limits, PublishError, Publisher};
use orderflow_testkit::events::{order, stock_change};
use orderflow_testkit::{fresh_topic, kafka_args};

#[tokio::test]
async fn acknowledged_events_keep_their_order_per_key() {
    let orders = fresh_topic("publisher-orders", 3).await;
    let inventory = fresh_topic("publisher-inventory", 3).await;
    let publisher = Publisher::new(&kafka_args(), Codec::new(), "test").unwrap().with_topics(&orders, &inventory);
    let mut events: Vec<Event> =
        (0..50).map(|i| stock_change(&format!("sku-{}", i % 5), i + 1, "received", None)).collect();
    events.push(order("o-1", &[("sku-1", 1)]));

    let acks: Vec<_> = publisher.publish_all(&events, None).await.into_iter().map(Result::unwrap).collect();

    assert_eq!(acks.last().unwrap().topic, orders);
    for (event, ack) in events.iter().zip(&acks) {
        assert_eq!(ack.event_id, event.event_id());
    }
    // Same key → same partition, increasing offsets in the order given.
    for sku in 0..5 {
        let of_key: Vec<_> = acks[..50].iter().skip(sku).step_by(5).collect();
        assert!(of_key.windows(2).all(|w| w[0].partition == w[1].partition && w[0].offset < w[1].offset), "{of_key:?}");
    }
}

#[tokio::test]
async fn an_unreachable_broker_fails_within_the_message_timeout_as_retryable() {
    let limits = Limits { message_timeout: Duration::from_millis(800), ..Limits::default() };
    let publisher =
        Publisher::with_limits(&orderflow_kafka::KafkaArgs::with_brokers("127.0.0.1:1"), Codec::new(), "test", limits)
            .unwrap();
    let started = Instant::now();
    let error = publisher.publish(&order("o-1", &[("a", 1)]), None).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert!(error.is_retryable(), "{error}");
    assert!(matches!(error, PublishError::Timeout(_) | PublishError::BrokerUnavailable(_)), "{error:?}");
    assert!(!publisher.broker_reachable(Duration::from_millis(300)).await);
}
