//! `orderflow replay`: a rebuild equals the live store, a damaged live store shows up in the
//! diff, and after promotion the consumer continues with no gap and no double count.

mod common;

use std::time::Duration;

use common::{consumer_args, orders};
use orderflow_cli::position::ConsumerArgs;
use orderflow_cli::replay::{ReplayArgs, replay};
use orderflow_runtime::testing::{Recorder, spawn};
use orderflow_testkit::events::{producer, publish};
use orderflow_testkit::{database_url, fresh_topic, kafka_args};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_equals_the_live_store_and_promotion_continues_without_gap_or_double_count() {
    // Arrange: a live consumer applied 10 orders and stopped.
    let topic = fresh_topic("replay", 2).await;
    let producer = producer();
    publish(&producer, &topic, &orders("a", 10)).await;
    let (name, args) = consumer_args("replay", &topic);
    let live = spawn(Recorder { name: name.clone(), accept_poison: false }, args.clone()).await;
    live.wait_for_offsets_sum(10, Duration::from_secs(60)).await;
    // The consumer's own pool (its sessions carry the schema as application_name) is closed
    // with it: nothing of the test runs on it, so only a consumer's session can block promotion.
    let live_pool = live.pool.clone();
    live.shutdown().await;
    live_pool.close().await;
    let schema = args.schema.clone().unwrap();
    let mut replay_args = ReplayArgs {
        consumer: ConsumerArgs {
            consumer: name.clone(),
            schema: args.schema.clone(),
            group: args.group.clone(),
            db: orderflow_service::DatabaseArgs::new(database_url()),
        },
        topics: vec![topic.clone()],
        promote: false,
        since: None,
        from_offset: None,
        sample: 5,
        stall_timeout: 60,
    };
    let handler = || Recorder { name: name.clone(), accept_poison: false };

    // Act 1: rebuild and compare.
    let report = replay(handler(), &kafka_args(), &replay_args).await.unwrap();

    // Assert 1: equal.
    assert_eq!(report.records_replayed, 10);
    assert_eq!(report.tables.len(), 1, "{report:#?}");
    assert!(report.tables[0].equal(), "{report:#?}");
    assert_eq!(report.tables[0].live_rows, 10);

    // Act 2: the live store is damaged (a row counted twice); rebuild, compare, promote.
    let admin = sqlx::PgPool::connect(&database_url()).await.unwrap();
    sqlx::query(&format!("INSERT INTO {schema}.applied SELECT * FROM {schema}.applied WHERE order_id = 'a-3'"))
        .execute(&admin)
        .await
        .unwrap();
    // Promotion refuses while the consumer has Postgres sessions; wait until the stopped
    // consumer's are gone (and say what is left if they never go).
    let sessions = "SELECT format('pid %s, %s, since %s: %s', pid, state, backend_start, left(query, 200)) \
                    FROM pg_stat_activity WHERE application_name = $1";
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left: Vec<String> = sqlx::query_scalar(sessions).bind(&schema).fetch_all(&admin).await.unwrap();
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the stopped consumer's sessions are still there after 60 s: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    admin.close().await;
    replay_args.promote = true;
    let report = replay(handler(), &kafka_args(), &replay_args).await.unwrap();

    // Assert 2: the diff names the extra row; promotion happened.
    let table = &report.tables[0];
    assert!(!table.equal());
    assert_eq!((table.live_rows, table.shadow_rows), (11, 10));
    assert_eq!(table.only_live.len(), 1, "{table:#?}");
    assert!(table.only_live[0].starts_with("(a-3,1,"), "{table:#?}");
    assert!(table.only_shadow.is_empty());
    assert!(report.promoted);

    // Act 3: more orders arrive; the consumer starts on the promoted store.
    publish(&producer, &topic, &orders("b", 5)).await;
    let live = spawn(handler(), args.clone()).await;
    live.wait_for_offsets_sum(15, Duration::from_secs(60)).await;
    let applied = Recorder::applied(&live.pool).await;
    live.shutdown().await;

    // Assert 3: every order exactly once, nothing missing.
    assert_eq!(applied.len(), 15, "{applied:?}");
    assert!(applied.values().all(|&n| n == 1), "{applied:?}");
}
