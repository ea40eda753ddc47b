//! Stopping: dropping a running runtime (as a panicking test does, or a process dropping its
//! tokio runtime) stops everything it started, the poll thread included, and leaves the
//! consumer group. Real broker, real Postgres.

use std::time::{Duration, Instant};

use orderflow_runtime::testing::{self, Recorder, isolated_args};
use orderflow_testkit::events::{order, producer, publish};
use orderflow_testkit::{fresh_topic, kafka_args, wait_until};
use rdkafka::consumer::{BaseConsumer, Consumer};

/// The members of `group` right now.
fn group_members(group: &str) -> Vec<String> {
    let mut config = kafka_args().client_config();
    config.set("group.id", format!("{group}-observer"));
    let client: BaseConsumer = config.create().unwrap();
    let list = client.fetch_group_list(Some(group), Duration::from_secs(10)).unwrap();
    list.groups()
        .iter()
        .filter(|g| g.name() == group)
        .flat_map(|g| g.members().iter().map(|m| m.id().to_owned()))
        .collect()
}

#[test]
fn dropping_the_tokio_runtime_under_a_running_consumer_ends_its_poll_thread_and_leaves_the_group() {
    // Arrange: a consumer that joined its group and applied a few events, in a tokio runtime
    // of its own.
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (group, running) = tokio.block_on(async {
        let topic = fresh_topic("drop", 2).await;
        publish(&producer(), &topic, &(0..10).map(|i| order(&format!("d-{i}"), &[("sku-a", 1)])).collect::<Vec<_>>())
            .await;
        let args = isolated_args("drop", std::slice::from_ref(&topic));
        let group = args.group.clone().unwrap();
        let handler = Recorder::new(args.schema.clone().unwrap().replace('_', "-"));
        let running = testing::spawn(handler, args).await;
        running.wait_for_offsets_sum(10, Duration::from_secs(60)).await;
        (group, running)
    });
    assert!(!group_members(&group).is_empty(), "the consumer is a member of its group");

    // Act: drop everything without a graceful shutdown.
    let dropping = Instant::now();
    drop(running);
    drop(tokio);

    // Assert: dropping did not wait for anything, and the poll thread left the group.
    assert!(dropping.elapsed() < Duration::from_secs(5), "dropping took {:?}", dropping.elapsed());
    let waiter = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    waiter.block_on(wait_until("the dropped consumer to leave its group", Duration::from_secs(30), || async {
        group_members(&group).is_empty().then_some(())
    }));
}
