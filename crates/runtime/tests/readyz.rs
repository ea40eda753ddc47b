//! `/readyz` of a consumer: 503 until the group assigned its partitions and while its lag is
//! above `--ready-max-lag`, 200 once it caught up. Real broker, real Postgres.

use std::time::Duration;

use orderflow_runtime::{BatchContext, Envelope, Handler, HandlerError, Runtime, RuntimeArgs};
use orderflow_testkit::events::{order, producer, publish};
use orderflow_testkit::{database_url, fresh_group, fresh_topic, kafka_args, unique_ident, wait_until};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;

/// Applies nothing until its gate opens, so the test decides when the consumer catches up.
struct Gated {
    name: String,
    gate: watch::Receiver<bool>,
}

impl Handler for Gated {
    fn name(&self) -> &str {
        &self.name
    }

    fn topics(&self) -> Vec<String> {
        vec![]
    }

    async fn apply(
        &self,
        _tx: &mut PgConnection,
        _batch: &[Envelope],
        _ctx: &BatchContext,
    ) -> Result<(), HandlerError> {
        let mut gate = self.gate.clone();
        gate.wait_for(|open| *open).await.map_err(|e| HandlerError::Transient(e.into()))?;
        Ok(())
    }
}

async fn readyz(http: &reqwest::Client, url: &str) -> Option<(u16, Value)> {
    let response = http.get(format!("{url}/readyz")).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.ok()?))
}

/// Whether a session other than ours waits for a lock on `schema.orderflow_offsets`.
async fn someone_waits_on_offsets(pool: &PgPool, schema: &str) -> bool {
    sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE NOT l.granted AND c.relname = 'orderflow_offsets' AND n.nspname = $1",
    )
    .bind(schema)
    .fetch_one(pool)
    .await
    .unwrap()
        > 0
}

#[tokio::test]
async fn readyz_is_503_until_assigned_and_caught_up_then_200() {
    // Arrange: a backlog of 30 events and a consumer ready at a lag of at most 5.
    orderflow_testkit::init_test_logs();
    let topic = fresh_topic("readyz", 1).await;
    let events: Vec<_> = (0..30).map(|i| order(&format!("readyz-{i}"), &[("sku-1", 1)])).collect();
    publish(&producer(), &topic, &events).await;
    let schema = unique_ident("readyz");
    let mut args = RuntimeArgs::new(kafka_args(), database_url());
    args.schema = Some(schema.clone());
    args.group = Some(fresh_group("readyz"));
    args.topics = vec![topic.clone()];
    args.dlq_topic = Some(format!("{topic}.dlq"));
    args.ready_max_lag = 5;
    let (open_gate, gate) = watch::channel(false);
    let handler = Gated { name: schema.replace('_', "-"), gate };
    let runtime = Runtime::connect(&handler, args).await.unwrap();

    // Hold the offsets table, so the assignment (which reads the stored offsets) cannot finish.
    let admin = PgPool::connect(&database_url()).await.unwrap();
    let mut lock = admin.begin().await.unwrap();
    sqlx::query(&format!("LOCK TABLE {schema}.orderflow_offsets IN ACCESS EXCLUSIVE MODE"))
        .execute(&mut *lock)
        .await
        .unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(runtime.run_with_listener(handler, axum::Router::new(), listener, async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();

    // Act + assert 1: the group handed out the partition, the consumer is still taking it.
    wait_until("the assignment to wait on the offsets table", Duration::from_secs(60), || async {
        someone_waits_on_offsets(&admin, &schema).await.then_some(())
    })
    .await;
    let (status, body) = readyz(&http, &url).await.expect("/readyz answers");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false);
    assert!(body["detail"].as_str().unwrap().contains("not yet assigned"), "{body}");

    // 2: assigned, but 30 events behind and none applied.
    lock.commit().await.unwrap();
    let body = wait_until("/readyz to report the backlog", Duration::from_secs(60), || async {
        let (status, body) = readyz(&http, &url).await?;
        (status == 503 && body["detail"].as_str()?.contains("lag 30 messages")).then_some(body)
    })
    .await;
    assert_eq!(body["ready"], false);

    // 3: applied everything: ready.
    open_gate.send(true).unwrap();
    let body = wait_until("/readyz to answer 200", Duration::from_secs(60), || async {
        let (status, body) = readyz(&http, &url).await?;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(body["ready"], true);
    assert!(body["detail"].as_str().unwrap().contains("1 partitions assigned"), "{body}");

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(60), task).await.expect("stops").unwrap().expect("ends cleanly");
}
