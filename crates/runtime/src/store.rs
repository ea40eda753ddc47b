//! The runtime's own tables in each consumer's schema: the stored offsets (authoritative,
//! written in the same transaction as the batch's effects), the applied-event ledger, and
//! the natural keys of facts that happen once (an order id: docs/events.md, "Natural keys").
//! An event is recorded in one of the last two: by its natural key's claim when it has one
//! (the claim names the event), in the ledger otherwise.
//! Every statement binds its values; identifiers come only from the validated schema name.
//!
//! # Owns
//! Every statement against `orderflow_offsets`, `orderflow_applied_events`,
//! `orderflow_natural_keys` and `orderflow_offset_moves` (operators' moves of the offsets). Tools that need
//! the runtime's tables from outside (the `orderflow` CLI, the bench) use the functions here
//! ([`stored_offsets`], [`stored_topic_ids`], [`seed_offsets`], [`move_offsets`],
//! [`offset_moves`], [`consumer_schemas`], [`applied_event_ids`],
//! [`ledger_size`], [`RUNTIME_TABLES`]) instead
//! of writing SQL against them, so their layout can change in one place.
//!
//! # Must not touch
//! A consumer's own tables: the handler writes those, through the batch's transaction.

use std::collections::{BTreeMap, HashMap};

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// The stored offsets: one row per partition, the next offset to apply and the id of the
/// topic (KIP-516) whose log that offset counts (`NULL` until known: written by a consumer
/// before topic ids were stored, or moved by `orderflow offsets reset`; the runtime adopts
/// the topic's id at its next assignment, once the offset checked out against the log).
pub const OFFSETS_TABLE: &str = "orderflow_offsets";
/// The applied-event ledger: event ids applied within the retention.
pub const LEDGER_TABLE: &str = "orderflow_applied_events";
/// The natural keys applied within the retention: which event first applied each fact.
pub const NATURAL_KEYS_TABLE: &str = "orderflow_natural_keys";
/// Tables in a consumer's schema that are not its read store: the runtime's, the operators'
/// offset moves, and the migration history sqlx keeps for the handler's migrations (run by
/// the runtime at start).
pub const RUNTIME_TABLES: [&str; 5] =
    [OFFSETS_TABLE, LEDGER_TABLE, NATURAL_KEYS_TABLE, OFFSET_MOVES_TABLE, "_sqlx_migrations"];

/// How long Postgres lets a batch's transaction sit idle before it ends the session
/// (`idle_in_transaction_session_timeout`). A batch's transaction is idle only between its
/// statements, which is microseconds, or while a dead letter waits for the broker. A process
/// frozen inside one (SIGSTOP, a paused VM, a stalled host) would otherwise keep its
/// partition's offset row locked for as long as it is frozen, and the instance the group gives
/// the partition to after the session timeout (10 s) would wait behind it forever. With this,
/// the zombie's transaction is rolled back, the new owner proceeds, and the zombie's commit
/// fails when it wakes (a transient error: its retry finds the offset moved and drops the
/// stale batch). A transaction killed while a dead letter waited for a slow broker is retried
/// like any transient failure.
pub const IDLE_IN_TRANSACTION_TIMEOUT: &str = "10s";

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
    let options = options
        .options([("search_path", schema), ("idle_in_transaction_session_timeout", IDLE_IN_TRANSACTION_TIMEOUT)])
        .application_name(schema);
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
        ALTER TABLE orderflow_offsets ADD COLUMN IF NOT EXISTS topic_id text;
        CREATE TABLE IF NOT EXISTS orderflow_applied_events (
            event_id   uuid        PRIMARY KEY,
            topic      text        NOT NULL,
            partition  integer     NOT NULL,
            "offset"   bigint      NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX IF NOT EXISTS orderflow_applied_events_applied_at
            ON orderflow_applied_events (applied_at);
        CREATE TABLE IF NOT EXISTS orderflow_natural_keys (
            kind        text        NOT NULL,
            key         text        NOT NULL,
            fingerprint bytea       NOT NULL,
            event_id    uuid        NOT NULL,
            topic       text        NOT NULL,
            partition   integer     NOT NULL,
            "offset"    bigint      NOT NULL,
            applied_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (kind, key)
        );
        CREATE INDEX IF NOT EXISTS orderflow_natural_keys_applied_at
            ON orderflow_natural_keys (applied_at);
        "#,
    )
    .execute(&mut *tx)
    .await
    .context("Failed to create the runtime's tables")?;
    tx.commit().await?;
    Ok(())
}

/// One partition's stored position: the next offset to apply, and the id of the topic whose
/// log it counts (`None` until known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOffset {
    pub next_offset: i64,
    pub topic_id: Option<String>,
}

/// Stored positions of `topic`'s partitions.
pub async fn load_offsets(pool: &PgPool, topic: &str) -> Result<HashMap<i32, StoredOffset>, sqlx::Error> {
    let rows: Vec<(i32, i64, Option<String>)> =
        sqlx::query_as("SELECT partition, next_offset, topic_id FROM orderflow_offsets WHERE topic = $1")
            .bind(topic)
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().map(|(p, next_offset, topic_id)| (p, StoredOffset { next_offset, topic_id })).collect())
}

/// Record `topic_id` as the topic of `partitions`' stored offsets where none is recorded yet
/// (their offsets were just checked against that topic's log).
pub async fn adopt_topic_id(
    pool: &PgPool,
    topic: &str,
    partitions: &[i32],
    topic_id: &str,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE orderflow_offsets SET topic_id = $3 WHERE topic = $1 AND partition = ANY($2) AND topic_id IS NULL",
    )
    .bind(topic)
    .bind(partitions)
    .bind(topic_id)
    .execute(pool)
    .await?
    .rows_affected())
}

/// Whether `schema` (validated here) holds `table`.
async fn table_exists(pool: &PgPool, schema: &str, table: &str) -> anyhow::Result<bool> {
    validate_schema_name(schema)?;
    sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("{schema}.{table}"))
        .fetch_one(pool)
        .await
        .with_context(|| format!("Failed to look for {schema}.{table}"))
}

/// The topic ids stored with the offsets of the consumer whose store is `schema` (absent where
/// none is recorded, or the table does not exist).
pub async fn stored_topic_ids(pool: &PgPool, schema: &str) -> anyhow::Result<BTreeMap<(String, i32), String>> {
    if !table_exists(pool, schema, OFFSETS_TABLE).await? {
        return Ok(BTreeMap::new());
    }
    // A table from before topic ids were stored gains the column at the consumer's next start.
    let has_column: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns
                        WHERE table_schema = $1 AND table_name = $2 AND column_name = 'topic_id')",
    )
    .bind(schema)
    .bind(OFFSETS_TABLE)
    .fetch_one(pool)
    .await?;
    if !has_column {
        return Ok(BTreeMap::new());
    }
    let rows: Vec<(String, i32, String)> = sqlx::query_as(&format!(
        "SELECT topic, partition, topic_id FROM {schema}.{OFFSETS_TABLE} WHERE topic_id IS NOT NULL"
    ))
    .fetch_all(pool)
    .await
    .with_context(|| format!("Failed to read the topic ids in {schema}.{OFFSETS_TABLE}"))?;
    Ok(rows.into_iter().map(|(topic, partition, id)| ((topic, partition), id)).collect())
}

/// Schemas that hold the runtime's offsets table: the consumers in this database.
pub async fn consumer_schemas(pool: &PgPool) -> anyhow::Result<Vec<String>> {
    sqlx::query_scalar("SELECT table_schema::text FROM information_schema.tables WHERE table_name = $1 ORDER BY 1")
        .bind(OFFSETS_TABLE)
        .fetch_all(pool)
        .await
        .context("Failed to list the consumers' schemas")
}

/// The stored next offset of one partition (in the pool's schema), `None` before its first batch.
pub async fn next_offset(pool: &PgPool, topic: &str, partition: i32) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT next_offset FROM orderflow_offsets WHERE topic = $1 AND partition = $2")
        .bind(topic)
        .bind(partition)
        .fetch_optional(pool)
        .await
}

/// The stored next offset of every partition of the consumer whose store is `schema`, or
/// `None` when the schema has no offsets table (the consumer never started there).
pub async fn stored_offsets(pool: &PgPool, schema: &str) -> anyhow::Result<Option<BTreeMap<(String, i32), i64>>> {
    if !table_exists(pool, schema, OFFSETS_TABLE).await? {
        return Ok(None);
    }
    let rows: Vec<(String, i32, i64)> =
        sqlx::query_as(&format!("SELECT topic, partition, next_offset FROM {schema}.{OFFSETS_TABLE} ORDER BY 1, 2"))
            .fetch_all(pool)
            .await
            .with_context(|| format!("Failed to read {schema}.{OFFSETS_TABLE}"))?;
    Ok(Some(rows.into_iter().map(|(topic, partition, next)| ((topic, partition), next)).collect()))
}

/// The event ids the consumer whose store is `schema` applied within the ledger's retention:
/// the applied-event ledger's, and those of the events that claimed a natural key (an event
/// with a natural key is recorded by its claim alone).
pub async fn applied_event_ids(pool: &PgPool, schema: &str) -> anyhow::Result<Vec<Uuid>> {
    validate_schema_name(schema)?;
    sqlx::query_scalar(&format!(
        "SELECT event_id FROM {schema}.{LEDGER_TABLE} UNION ALL SELECT event_id FROM {schema}.{NATURAL_KEYS_TABLE}"
    ))
    .fetch_all(pool)
    .await
    .with_context(|| format!("Failed to read the applied event ids of {schema}"))
}

/// The ledger's size in the pool's schema: rows (applied-event ledger and natural keys
/// together) and bytes on disk, indexes included.
pub async fn ledger_size(pool: &PgPool) -> Result<(u64, u64), sqlx::Error> {
    let (rows, bytes): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM orderflow_applied_events) + (SELECT count(*) FROM orderflow_natural_keys),
                (pg_total_relation_size('orderflow_applied_events')
                 + pg_total_relation_size('orderflow_natural_keys'))::bigint",
    )
    .fetch_one(pool)
    .await?;
    Ok((rows.max(0) as u64, bytes.max(0) as u64))
}

/// Set where partitions of the consumer whose store is `schema` start: each next offset is
/// written in one transaction, and the runtime seeks there when it is next assigned the
/// partition. Only for a stopped consumer: a running one overwrites them with its next batch.
/// A seeded offset names the log as it is now: its topic id is cleared, and the runtime
/// records the topic's current id at its next assignment, once the offset checks out against
/// that log's start and end.
pub async fn seed_offsets(pool: &PgPool, schema: &str, starts: &BTreeMap<(String, i32), i64>) -> anyhow::Result<()> {
    validate_schema_name(schema)?;
    let mut tx = pool.begin().await.context("Failed to begin the offsets transaction")?;
    write_offsets(&mut tx, schema, starts).await?;
    tx.commit().await.with_context(|| format!("Failed to commit the new offsets in {schema}"))?;
    Ok(())
}

async fn write_offsets(
    tx: &mut PgConnection,
    schema: &str,
    starts: &BTreeMap<(String, i32), i64>,
) -> anyhow::Result<()> {
    for ((topic, partition), next) in starts {
        sqlx::query(&format!(
            "INSERT INTO {schema}.{OFFSETS_TABLE} (topic, partition, next_offset) VALUES ($1, $2, $3)
             ON CONFLICT (topic, partition)
             DO UPDATE SET next_offset = EXCLUDED.next_offset, topic_id = NULL, updated_at = now()"
        ))
        .bind(topic)
        .bind(partition)
        .bind(next)
        .execute(&mut *tx)
        .await
        .with_context(|| format!("Failed to write {schema}.{OFFSETS_TABLE} for {topic}[{partition}]"))?;
    }
    Ok(())
}

/// The audit trail of offsets moved by an operator (`orderflow offsets reset`): one row per
/// partition and move, written in the move's transaction.
pub const OFFSET_MOVES_TABLE: &str = "orderflow_offset_moves";

/// One partition's move by an operator.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OffsetMove {
    pub topic: String,
    pub partition: i32,
    /// The stored next offset before (`None`: the partition had none).
    pub from: Option<i64>,
    pub to: i64,
    /// The topic id the old offset belonged to, if one was recorded.
    pub from_topic_id: Option<String>,
}

/// Move the stopped consumer's offsets like [`seed_offsets`], and record each move with who
/// made it (`by`), why (`reason`) and when, in the same transaction: the offsets move only
/// with their audit trail.
pub async fn move_offsets(
    pool: &PgPool,
    schema: &str,
    moves: &[OffsetMove],
    by: &str,
    reason: &str,
) -> anyhow::Result<()> {
    validate_schema_name(schema)?;
    let mut tx = pool.begin().await.context("Failed to begin the offsets transaction")?;
    sqlx::query(&format!(
        "CREATE TABLE IF NOT EXISTS {schema}.{OFFSET_MOVES_TABLE} (
             topic         text        NOT NULL,
             partition     integer     NOT NULL,
             from_offset   bigint,
             to_offset     bigint      NOT NULL,
             from_topic_id text,
             moved_by      text        NOT NULL,
             reason        text        NOT NULL,
             moved_at      timestamptz NOT NULL DEFAULT now()
         )"
    ))
    .execute(&mut *tx)
    .await
    .or_else(ignore_duplicate)
    .with_context(|| format!("Failed to create {schema}.{OFFSET_MOVES_TABLE}"))?;
    let starts: BTreeMap<(String, i32), i64> = moves.iter().map(|m| ((m.topic.clone(), m.partition), m.to)).collect();
    write_offsets(&mut tx, schema, &starts).await?;
    for m in moves {
        sqlx::query(&format!(
            "INSERT INTO {schema}.{OFFSET_MOVES_TABLE}
                 (topic, partition, from_offset, to_offset, from_topic_id, moved_by, reason)
             VALUES ($1, $2, $3, $4, $5, $6, $7)"
        ))
        .bind(&m.topic)
        .bind(m.partition)
        .bind(m.from)
        .bind(m.to)
        .bind(&m.from_topic_id)
        .bind(by)
        .bind(reason)
        .execute(&mut *tx)
        .await
        .with_context(|| format!("Failed to record the move of {}[{}] in {schema}", m.topic, m.partition))?;
    }
    tx.commit().await.with_context(|| format!("Failed to commit the moved offsets in {schema}"))?;
    Ok(())
}

/// The operator moves recorded for the consumer whose store is `schema`, oldest first: each
/// with who, why and when (RFC 3339). Empty when none was ever made.
pub async fn offset_moves(pool: &PgPool, schema: &str) -> anyhow::Result<Vec<(OffsetMove, String, String, String)>> {
    if !table_exists(pool, schema, OFFSET_MOVES_TABLE).await? {
        return Ok(Vec::new());
    }
    type Row = (String, i32, Option<i64>, i64, Option<String>, String, String, String);
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT topic, partition, from_offset, to_offset, from_topic_id, moved_by, reason,
                to_char(moved_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
         FROM {schema}.{OFFSET_MOVES_TABLE} ORDER BY moved_at, topic, partition"
    ))
    .fetch_all(pool)
    .await
    .with_context(|| format!("Failed to read {schema}.{OFFSET_MOVES_TABLE}"))?;
    Ok(rows
        .into_iter()
        .map(|(topic, partition, from, to, from_topic_id, by, reason, at)| {
            (OffsetMove { topic, partition, from, to, from_topic_id }, by, reason, at)
        })
        .collect())
}

/// Lock the partition's offset row for this transaction and return the stored next offset
/// (0 when the partition was never applied). The lock fences two instances that both
/// believe they own the partition during a rebalance: the second waits, then sees the
/// first one's offset and skips what it applied.
///
/// One statement per batch once the row exists; the partition's first batch inserts it, with
/// `topic_id` (the topic's id when the partition was assigned) so that from its first offset
/// on the row says which log it counts. Two instances racing to insert both end up locking
/// the one row.
pub async fn lock_offset(
    tx: &mut PgConnection,
    topic: &str,
    partition: i32,
    topic_id: Option<&str>,
) -> Result<i64, sqlx::Error> {
    const LOCK: &str = "SELECT next_offset FROM orderflow_offsets WHERE topic = $1 AND partition = $2 FOR UPDATE";
    if let Some(next) = sqlx::query_scalar(LOCK).bind(topic).bind(partition).fetch_optional(&mut *tx).await? {
        return Ok(next);
    }
    sqlx::query(
        "INSERT INTO orderflow_offsets (topic, partition, next_offset, topic_id) VALUES ($1, $2, 0, $3)
         ON CONFLICT DO NOTHING",
    )
    .bind(topic)
    .bind(partition)
    .bind(topic_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query_scalar(LOCK).bind(topic).bind(partition).fetch_one(&mut *tx).await
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

/// A natural key claimed by an event of a batch.
#[derive(Debug, Clone)]
pub struct NaturalKeyClaim {
    pub kind: &'static str,
    pub key: String,
    pub fingerprint: Vec<u8>,
    pub event_id: Uuid,
    pub offset: i64,
}

/// Who first applied a natural key: its fingerprint and event id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NaturalKeyOwner {
    pub fingerprint: Vec<u8>,
    pub event_id: Uuid,
}

/// Record the claims' natural keys as applied; returns the event ids whose claim was new. A
/// key applied before, or claimed earlier in `claims`, keeps its first owner. Claims are
/// inserted in key order, so two partitions claiming the same keys cannot deadlock.
pub async fn claim_natural_keys(
    tx: &mut PgConnection,
    topic: &str,
    partition: i32,
    claims: &[NaturalKeyClaim],
) -> Result<Vec<Uuid>, sqlx::Error> {
    let mut sorted: Vec<&NaturalKeyClaim> = claims.iter().collect();
    sorted.sort_by(|a, b| (a.kind, &a.key, a.offset).cmp(&(b.kind, &b.key, b.offset)));
    let kinds: Vec<&str> = sorted.iter().map(|c| c.kind).collect();
    let keys: Vec<&str> = sorted.iter().map(|c| c.key.as_str()).collect();
    let fingerprints: Vec<&[u8]> = sorted.iter().map(|c| c.fingerprint.as_slice()).collect();
    let ids: Vec<Uuid> = sorted.iter().map(|c| c.event_id).collect();
    let offsets: Vec<i64> = sorted.iter().map(|c| c.offset).collect();
    sqlx::query_scalar(
        r#"INSERT INTO orderflow_natural_keys (kind, key, fingerprint, event_id, topic, partition, "offset")
           SELECT kind, key, fp, id, $1, $2, off
           FROM UNNEST($3::text[], $4::text[], $5::bytea[], $6::uuid[], $7::bigint[])
               WITH ORDINALITY AS t(kind, key, fp, id, off, n)
           ORDER BY n
           ON CONFLICT (kind, key) DO NOTHING
           RETURNING event_id"#,
    )
    .bind(topic)
    .bind(partition)
    .bind(kinds)
    .bind(keys)
    .bind(fingerprints)
    .bind(ids)
    .bind(offsets)
    .fetch_all(&mut *tx)
    .await
}

/// The first owner of each of `(kind, key)` that has one.
pub async fn natural_key_owners(
    tx: &mut PgConnection,
    keys: &[(&str, &str)],
) -> Result<HashMap<(String, String), NaturalKeyOwner>, sqlx::Error> {
    let kinds: Vec<&str> = keys.iter().map(|(kind, _)| *kind).collect();
    let names: Vec<&str> = keys.iter().map(|(_, key)| *key).collect();
    let rows: Vec<(String, String, Vec<u8>, Uuid)> = sqlx::query_as(
        "SELECT n.kind, n.key, n.fingerprint, n.event_id
         FROM orderflow_natural_keys n
         JOIN UNNEST($1::text[], $2::text[]) AS t(kind, key) ON n.kind = t.kind AND n.key = t.key",
    )
    .bind(kinds)
    .bind(names)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(kind, key, fingerprint, event_id)| ((kind, key), NaturalKeyOwner { fingerprint, event_id }))
        .collect())
}

/// Forget ledger entries and natural keys older than `retention`, a chunk at a time.
/// Returns rows deleted.
pub async fn prune_ledger(pool: &PgPool, retention: std::time::Duration) -> Result<u64, sqlx::Error> {
    let seconds = retention.as_secs_f64();
    let mut total = 0;
    for statement in [
        "DELETE FROM orderflow_applied_events WHERE event_id IN (
             SELECT event_id FROM orderflow_applied_events
             WHERE applied_at < now() - make_interval(secs => $1) LIMIT 10000)",
        "DELETE FROM orderflow_natural_keys WHERE (kind, key) IN (
             SELECT kind, key FROM orderflow_natural_keys
             WHERE applied_at < now() - make_interval(secs => $1) LIMIT 10000)",
    ] {
        loop {
            let deleted = sqlx::query(statement).bind(seconds).execute(pool).await?.rows_affected();
            total += deleted;
            if deleted < 10000 {
                break;
            }
        }
    }
    Ok(total)
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
