//! `/readyz` of a consumer: 503 until the group assigned its partitions and while its lag is
//! above `--ready-max-lag`, 200 once it caught up. Real broker, real Postgres.

use std::time::Duration;

use orderflow_runtime::testing::{self, isolated_args};
use orderflow_runtime::{BatchContext, Envelope, Handler, HandlerError, Runtime};
use orderflow_testkit::events::{order, producer, publish};
use orderflow_testkit::{database_url, fresh_topic, wait_until};
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
    let topic = fresh_topic("readyz", 1).await;
    let events: Vec<_> = (0..30).map(|i| order(&format!("readyz-{i}"), &[("sku-1", 1)])).collect();
    publish(&producer(), &topic, &events).await;
    let mut args = isolated_args("readyz", std::slice::from_ref(&topic));
    args.ready_max_lag = 5;
    let schema = args.schema.clone().unwrap();
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

    let running = testing::spawn_runtime(runtime, handler, axum::Router::new()).await;

    // Act + assert 1: the group handed out the partition, the consumer is still taking it.
    wait_until("the assignment to wait on the offsets table", Duration::from_secs(60), || async {
        someone_waits_on_offsets(&admin, &schema).await.then_some(())
    })
    .await;
    let (status, body) = running.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false);
    assert!(body["detail"].as_str().unwrap().contains("not yet assigned"), "{body}");

    // 2: assigned, but 30 events behind and none applied.
    lock.commit().await.unwrap();
    let body = running
        .wait_for("/readyz to report the backlog", "/readyz", |status, body| {
            (status == 503 && body["detail"].as_str()?.contains("lag 30 messages")).then(|| body.clone())
        })
        .await;
    assert_eq!(body["ready"], false);

    // 3: applied everything: ready.
    open_gate.send(true).unwrap();
    let body = running
        .wait_for("/readyz to answer 200", "/readyz", |status, body| (status == 200).then(|| body.clone()))
        .await;
    assert_eq!(body["ready"], true);
    assert!(body["detail"].as_str().unwrap().contains("1 partitions assigned"), "{body}");

    running.shutdown().await;
}
