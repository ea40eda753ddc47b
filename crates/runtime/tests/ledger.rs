//! The applied-event ledger's retention (docs/adding-a-consumer.md): entries older than the
//! retention are forgotten, newer ones are kept and still stop a duplicate.

use std::time::Duration;

use orderflow_runtime::store;
use uuid::Uuid;

#[tokio::test]
async fn pruning_forgets_only_ledger_entries_older_than_the_retention() {
    // Arrange: 3 old and 2 recent applied events in a fresh schema.
    let schema = orderflow_testkit::fresh_schema("ledger").await;
    store::migrate(&schema.pool).await.unwrap();
    let ids: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    let mut tx = schema.pool.begin().await.unwrap();
    let new = store::record_applied(&mut tx, "t", 0, &ids, &[0, 1, 2, 3, 4]).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(new.len(), 5);
    sqlx::query("UPDATE orderflow_applied_events SET applied_at = now() - interval '8 days' WHERE event_id = ANY($1)")
        .bind(&ids[..3])
        .execute(&schema.pool)
        .await
        .unwrap();

    // Act
    let deleted = store::prune_ledger(&schema.pool, Duration::from_secs(7 * 24 * 3600)).await.unwrap();

    // Assert: the old ones are gone; the recent ones still count as applied.
    assert_eq!(deleted, 3);
    let mut tx = schema.pool.begin().await.unwrap();
    let again = store::record_applied(&mut tx, "t", 0, &ids[3..], &[5, 6]).await.unwrap();
    assert!(again.is_empty(), "recent ids must still be in the ledger: {again:?}");
    let forgotten = store::record_applied(&mut tx, "t", 0, &ids[..1], &[7]).await.unwrap();
    assert_eq!(forgotten, ids[..1], "an id older than the retention is applied again");
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn pruning_forgets_only_natural_keys_older_than_the_retention() {
    // Arrange: 3 old and 2 recent orders' claims (an order's claim is its ledger entry).
    let schema = orderflow_testkit::fresh_schema("ledger_keys").await;
    store::migrate(&schema.pool).await.unwrap();
    let claim = |i: i64| store::NaturalKeyClaim {
        kind: "order",
        key: format!("o-{i}"),
        fingerprint: vec![i as u8; 32],
        event_id: Uuid::new_v4(),
        offset: i,
    };
    let claims: Vec<store::NaturalKeyClaim> = (0..5).map(claim).collect();
    let mut tx = schema.pool.begin().await.unwrap();
    assert_eq!(store::claim_natural_keys(&mut tx, "t", 0, &claims).await.unwrap().len(), 5);
    tx.commit().await.unwrap();
    sqlx::query("UPDATE orderflow_natural_keys SET applied_at = now() - interval '8 days' WHERE key = ANY($1)")
        .bind(["o-0", "o-1", "o-2"])
        .execute(&schema.pool)
        .await
        .unwrap();

    // Act
    let deleted = store::prune_ledger(&schema.pool, Duration::from_secs(7 * 24 * 3600)).await.unwrap();

    // Assert: the old claims are gone, so those orders apply again; the recent ones still
    // stop a copy.
    assert_eq!(deleted, 3);
    let mut tx = schema.pool.begin().await.unwrap();
    let again = store::claim_natural_keys(&mut tx, "t", 0, &claims[3..]).await.unwrap();
    assert!(again.is_empty(), "recent claims must still hold: {again:?}");
    let forgotten = store::claim_natural_keys(&mut tx, "t", 0, &claims[..1]).await.unwrap();
    assert_eq!(forgotten, [claims[0].event_id], "a claim older than the retention is made again");
    tx.rollback().await.unwrap();
}
