//! The runtime's own tables in each consumer's schema: the stored offsets (authoritative,
//! written in the same transaction as the batch's effects) and the applied-event ledger.
//! Every statement binds its values; identifiers come only from the validated schema name.

use std::collections::HashMap;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Check that `schema` is a plain lowercase SQL identifier, so it can be spliced into DDL.
pub fn validate_schema_name(schema: &str) -> anyhow::Result<()> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && schema.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    anyhow::ensure!(ok, "schema name `{schema}` must be 1-63 characters of [a-z0-9_], starting with a letter or _");
    Ok(())
}

/// A pool whose connections use `schema` as their search path (created if missing).
pub async fn connect(database_url: &str, schema: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    validate_schema_name(schema)?;
    let options: PgConnectOptions = database_url.parse().context("DATABASE_URL is not a valid Postgres URL")?;
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone())
        .await
        .with_context(|| format!("Failed to connect to Postgres at {}", redact_url(database_url)))?;
    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .execute(&admin)
        .await
        .or_else(ignore_duplicate)
        .with_context(|| format!("Failed to create schema {schema}"))?;
    admin.close().await;
    // application_name lets operators (and tests) tell the consumer's connections apart.
    let options = options.options([("search_path", schema)]).application_name(schema);
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect_with(options)
        .await
        .with_context(|| format!("Failed to connect to Postgres at {}", redact_url(database_url)))
}

/// Two instances may race to create the same object; the loser's error is harmless.
fn ignore_duplicate(error: sqlx::Error) -> Result<sqlx::postgres::PgQueryResult, sqlx::Error> {
    match &error {
        sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("23505") | Some("42P06") | Some("42P07")) => {
            Ok(Default::default())
        }
        _ => Err(error),
    }
}

/// The URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}@{host}")
            }
            None => url.to_owned(),
        },
        None => "<unparseable url>".to_owned(),
    }
}

/// Create the runtime's tables in the pool's schema (idempotent, safe to race).
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    // Serialise concurrent instances creating the same tables.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext(current_schema()))").execute(&mut *tx).await?;
    sqlx::raw_sql(
        r#"
        CREATE TABLE IF NOT EXISTS orderflow_offsets (
            topic       text        NOT NULL,
            partition   integer     NOT NULL,
            next_offset bigint      NOT NULL,
            updated_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (topic, partition)
        );
        CREATE TABLE IF NOT EXISTS orderflow_applied_events (
            event_id   uuid        PRIMARY KEY,
            topic      text        NOT NULL,
            partition  integer     NOT NULL,
            "offset"   bigint      NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX IF NOT EXISTS orderflow_applied_events_applied_at
            ON orderflow_applied_events (applied_at);
        "#,
    )
    .execute(&mut *tx)
    .await
    .context("Failed to create the runtime's tables")?;
    tx.commit().await?;
    Ok(())
}

/// Stored next offsets of `topic`'s partitions.
pub async fn load_offsets(pool: &PgPool, topic: &str) -> Result<HashMap<i32, i64>, sqlx::Error> {
    let rows: Vec<(i32, i64)> = sqlx::query_as("SELECT partition, next_offset FROM orderflow_offsets WHERE topic = $1")
        .bind(topic)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().collect())
}

/// Lock the partition's offset row for this transaction and return the stored next offset
/// (0 when the partition was never applied). The lock fences two instances that both
/// believe they own the partition during a rebalance: the second waits, then sees the
/// first one's offset and skips what it applied.
pub async fn lock_offset(tx: &mut PgConnection, topic: &str, partition: i32) -> Result<i64, sqlx::Error> {
    sqlx::query(
        "INSERT INTO orderflow_offsets (topic, partition, next_offset) VALUES ($1, $2, 0) ON CONFLICT DO NOTHING",
    )
    .bind(topic)
    .bind(partition)
    .execute(&mut *tx)
    .await?;
    sqlx::query_scalar("SELECT next_offset FROM orderflow_offsets WHERE topic = $1 AND partition = $2 FOR UPDATE")
        .bind(topic)
        .bind(partition)
        .fetch_one(&mut *tx)
        .await
}

pub async fn save_offset(
    tx: &mut PgConnection,
    topic: &str,
    partition: i32,
    next_offset: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE orderflow_offsets SET next_offset = $3, updated_at = now() WHERE topic = $1 AND partition = $2",
    )
    .bind(topic)
    .bind(partition)
    .bind(next_offset)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Record `ids` (with their offsets) as applied; returns the ids that were new. An id seen
/// before, in an earlier batch or earlier in this one, is not returned.
pub async fn record_applied(
    tx: &mut PgConnection,
    topic: &str,
    partition: i32,
    ids: &[Uuid],
    offsets: &[i64],
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        r#"INSERT INTO orderflow_applied_events (event_id, topic, partition, "offset")
           SELECT id, $1, $2, off FROM UNNEST($3::uuid[], $4::bigint[]) AS t(id, off)
           ON CONFLICT (event_id) DO NOTHING
           RETURNING event_id"#,
    )
    .bind(topic)
    .bind(partition)
    .bind(ids)
    .bind(offsets)
    .fetch_all(&mut *tx)
    .await
}

/// Forget ledger entries older than `retention`, a chunk at a time. Returns rows deleted.
pub async fn prune_ledger(pool: &PgPool, retention: std::time::Duration) -> Result<u64, sqlx::Error> {
    let seconds = retention.as_secs_f64();
    let mut total = 0;
    loop {
        let deleted = sqlx::query(
            "DELETE FROM orderflow_applied_events WHERE event_id IN (
                 SELECT event_id FROM orderflow_applied_events
                 WHERE applied_at < now() - make_interval(secs => $1) LIMIT 10000)",
        )
        .bind(seconds)
        .execute(pool)
        .await?
        .rows_affected();
        total += deleted;
        if deleted < 10000 {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(validate_schema_name("fulfillment").is_ok());
        assert!(validate_schema_name("t_abc_12").is_ok());
        for bad in ["", "Fulfillment", "a-b", "x;drop table y", "1abc", &"a".repeat(64)] {
            assert!(validate_schema_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(redact_url("postgres://u:secret@h:5432/db"), "postgres://u@h:5432/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }
}
