//! The `Idempotency-Key` store (draft-ietf-httpapi-idempotency-key-header), in Postgres so
//! that every ingress instance shares it.
//!
//! Per client, route and key it keeps a fingerprint of the request body and, once the events
//! are on the topic, the exact bytes of the 202 answer, for `--idempotency-ttl-hours`:
//!
//! | the same key arrives with | while the first request | answer |
//! |---|---|---|
//! | the same body | succeeded | the stored 202, byte for byte; nothing published again |
//! | the same body | is still in flight | 409 + `Retry-After` |
//! | the same body | failed (503), or its instance died | processed again (same event ids) |
//! | a different body | any | 422 `idempotency_key_reused` |
//!
//! # When Postgres is unavailable
//! The ingress keeps serving: requests are published as without the store (their event ids,
//! derived from the key, still make consumers apply a retry once), the
//! `ingress_idempotency_store_available` gauge drops to 0, `ingress_idempotency_bypassed_total`
//! counts each such request, and one warning is logged per outage. The store is tried again
//! [`RETRY_AFTER_FAILURE`] after a failure. Availability beats the replay: a checkout that
//! cannot place orders while a side database restarts is the worse outage.
//!
//! # Owns
//! Every statement on the `idempotency_keys` table of `--idempotency-schema`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use metrics::{counter, gauge};
use sha2::Digest as _;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::sync::Mutex;
use tokio::time::Instant;
use uuid::Uuid;

/// How long a failing store is bypassed before it is tried again.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// Longest a store statement may take before the request goes on without it.
const STATEMENT_DEADLINE: Duration = Duration::from_secs(2);
/// How often expired keys are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// What the store says about a request carrying a key.
#[derive(Debug)]
pub enum Claim {
    /// This request owns the key: process it, then [`KeyStore::complete`] or [`KeyStore::release`].
    Owned(Lease),
    /// The key already succeeded with this body: answer with these bytes.
    Replay(Vec<u8>),
    /// The same key is being processed right now.
    InFlight,
    /// The key was used with a different body.
    Reused,
    /// The store is unavailable: process the request without it.
    Bypassed,
}

/// A claimed key; identifies this request's claim so that only it completes or releases it.
#[derive(Debug)]
pub struct Lease {
    client: String,
    route: &'static str,
    key: String,
    owner: Uuid,
}

/// The shared key store.
pub struct KeyStore {
    /// Made on first use (a pool needs the Tokio runtime), connecting lazily.
    pool: tokio::sync::OnceCell<PgPool>,
    options: PgConnectOptions,
    max_connections: u32,
    schema: String,
    ttl: Duration,
    /// How long a claim holds before another instance may take it over (its owner died).
    lease: Duration,
    /// Whether the schema and table exist (created on the first reachable moment).
    ready: AtomicBool,
    /// Until when the store is skipped after a failure.
    down_until: Mutex<Option<Instant>>,
}

impl KeyStore {
    /// A store in `schema` of `database_url`. Connects lazily: an unreachable database does
    /// not stop the ingress from starting.
    pub fn new(
        database_url: &str,
        schema: &str,
        ttl: Duration,
        lease: Duration,
        max_connections: u32,
    ) -> anyhow::Result<Arc<KeyStore>> {
        validate_schema(schema)?;
        let options: PgConnectOptions = database_url.parse().context("DATABASE_URL is not a valid Postgres URL")?;
        Ok(Arc::new(KeyStore {
            pool: tokio::sync::OnceCell::new(),
            options: options.application_name("orderflow-ingress"),
            max_connections,
            schema: schema.to_owned(),
            ttl,
            lease,
            ready: AtomicBool::new(false),
            down_until: Mutex::new(None),
        }))
    }

    async fn pool(&self) -> &PgPool {
        self.pool
            .get_or_init(|| async {
                PgPoolOptions::new()
                    .max_connections(self.max_connections)
                    .acquire_timeout(STATEMENT_DEADLINE)
                    .connect_lazy_with(self.options.clone())
            })
            .await
    }

    /// Create the schema and table if missing; later calls are free.
    pub async fn ensure_table(&self) -> anyhow::Result<()> {
        if self.ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let schema = &self.schema;
        // One simple-query string runs as one transaction: the advisory lock serialises
        // instances creating the same objects. (`schema` is a validated identifier.)
        let ddl = format!(
            r#"
            SELECT pg_advisory_xact_lock(hashtext('orderflow-ingress:{schema}'));
            CREATE SCHEMA IF NOT EXISTS {schema};
            CREATE TABLE IF NOT EXISTS {schema}.idempotency_keys (
                client      text        NOT NULL,
                route       text        NOT NULL,
                key         text        NOT NULL,
                fingerprint bytea       NOT NULL,
                owner       uuid        NOT NULL,
                response    bytea,
                lease_until timestamptz NOT NULL,
                created_at  timestamptz NOT NULL DEFAULT now(),
                expires_at  timestamptz NOT NULL,
                PRIMARY KEY (client, route, key)
            );
            CREATE INDEX IF NOT EXISTS idempotency_keys_expires_at ON {schema}.idempotency_keys (expires_at);
            "#
        );
        sqlx::raw_sql(&ddl)
            .execute(self.pool().await)
            .await
            .with_context(|| format!("Failed to create {schema}.idempotency_keys"))?;
        self.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Claim `key` for a request of `client` on `route` whose body has `fingerprint`.
    pub async fn claim(&self, client: &str, route: &'static str, key: &str, fingerprint: &[u8]) -> Claim {
        if self.skipping().await {
            return bypassed(route);
        }
        match tokio::time::timeout(STATEMENT_DEADLINE * 2, self.try_claim(client, route, key, fingerprint)).await {
            Ok(Ok(claim)) => {
                self.up();
                match &claim {
                    Claim::Replay(_) => counter!("ingress_idempotency_replays_total", "route" => route).increment(1),
                    Claim::InFlight => {
                        counter!("ingress_idempotency_rejected_total", "route" => route, "reason" => "in_flight")
                            .increment(1)
                    }
                    Claim::Reused => {
                        counter!("ingress_idempotency_rejected_total", "route" => route, "reason" => "body_differs")
                            .increment(1)
                    }
                    Claim::Owned(_) | Claim::Bypassed => {}
                }
                claim
            }
            Ok(Err(error)) => {
                self.down(&format!("{error:#}")).await;
                bypassed(route)
            }
            Err(_) => {
                self.down(&format!("no answer within {:?}", STATEMENT_DEADLINE * 2)).await;
                bypassed(route)
            }
        }
    }

    async fn try_claim(
        &self,
        client: &str,
        route: &'static str,
        key: &str,
        fingerprint: &[u8],
    ) -> anyhow::Result<Claim> {
        self.ensure_table().await?;
        let schema = &self.schema;
        let owner = Uuid::new_v4();
        // Take the key if it is new, expired, or claimed by a request whose lease ran out
        // (its instance died) with the same body.
        let sql = format!(
            "INSERT INTO {schema}.idempotency_keys
                 (client, route, key, fingerprint, owner, lease_until, expires_at)
             VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6), now() + make_interval(secs => $7))
             ON CONFLICT (client, route, key) DO UPDATE
                 SET fingerprint = EXCLUDED.fingerprint, owner = EXCLUDED.owner, response = NULL,
                     lease_until = EXCLUDED.lease_until, created_at = now(), expires_at = EXCLUDED.expires_at
                 WHERE idempotency_keys.expires_at < now()
                    OR (idempotency_keys.response IS NULL AND idempotency_keys.lease_until < now()
                        AND idempotency_keys.fingerprint = EXCLUDED.fingerprint)
             RETURNING owner"
        );
        let claimed: Option<Uuid> = sqlx::query_scalar(&sql)
            .bind(client)
            .bind(route)
            .bind(key)
            .bind(fingerprint)
            .bind(owner)
            .bind(self.lease.as_secs_f64())
            .bind(self.ttl.as_secs_f64())
            .fetch_optional(self.pool().await)
            .await
            .context("Failed to claim the Idempotency-Key")?;
        if claimed == Some(owner) {
            return Ok(Claim::Owned(Lease { client: client.to_owned(), route, key: key.to_owned(), owner }));
        }
        let sql = format!(
            "SELECT fingerprint, response FROM {schema}.idempotency_keys WHERE client = $1 AND route = $2 AND key = $3"
        );
        let existing: Option<(Vec<u8>, Option<Vec<u8>>)> = sqlx::query_as(&sql)
            .bind(client)
            .bind(route)
            .bind(key)
            .fetch_optional(self.pool().await)
            .await
            .context("Failed to read the Idempotency-Key")?;
        Ok(match existing {
            Some((stored, _)) if stored != fingerprint => Claim::Reused,
            Some((_, Some(response))) => Claim::Replay(response),
            // In flight, or gone between the two statements (pruned): retry later either way.
            Some((_, None)) | None => Claim::InFlight,
        })
    }

    /// The request succeeded: keep its answer for replays.
    pub async fn complete(&self, lease: &Lease, response: &[u8]) {
        let schema = &self.schema;
        let sql = format!(
            "UPDATE {schema}.idempotency_keys SET response = $5
             WHERE client = $1 AND route = $2 AND key = $3 AND owner = $4"
        );
        let done = sqlx::query(&sql)
            .bind(&lease.client)
            .bind(lease.route)
            .bind(&lease.key)
            .bind(lease.owner)
            .bind(response)
            .execute(self.pool().await);
        match tokio::time::timeout(STATEMENT_DEADLINE, done).await {
            Ok(Ok(_)) => {}
            // The events are on the topic; a retry after the lease runs out publishes them
            // again under the same ids, which consumers skip.
            Ok(Err(error)) => self.down(&format!("storing the answer: {error:#}")).await,
            Err(_) => self.down("storing the answer: no answer in time").await,
        }
    }

    /// The request failed: free the key so a retry is processed at once.
    pub async fn release(&self, lease: &Lease) {
        let schema = &self.schema;
        let sql = format!(
            "DELETE FROM {schema}.idempotency_keys
             WHERE client = $1 AND route = $2 AND key = $3 AND owner = $4 AND response IS NULL"
        );
        let freed = sqlx::query(&sql)
            .bind(&lease.client)
            .bind(lease.route)
            .bind(&lease.key)
            .bind(lease.owner)
            .execute(self.pool().await);
        // On failure the lease runs out by itself.
        if let Ok(Err(error)) = tokio::time::timeout(STATEMENT_DEADLINE, freed).await {
            tracing::warn!(error = %format!("{error:#}"), "could not release an Idempotency-Key; it frees itself when its lease ends");
        }
    }

    /// Delete expired keys, a chunk at a time. Returns how many.
    pub async fn prune(&self) -> anyhow::Result<u64> {
        self.ensure_table().await?;
        let schema = &self.schema;
        let sql = format!(
            "DELETE FROM {schema}.idempotency_keys WHERE (client, route, key) IN (
                 SELECT client, route, key FROM {schema}.idempotency_keys WHERE expires_at < now() LIMIT 10000)"
        );
        let mut total = 0;
        loop {
            let deleted = sqlx::query(&sql)
                .execute(self.pool().await)
                .await
                .context("Failed to delete expired Idempotency-Keys")?
                .rows_affected();
            total += deleted;
            if deleted < 10000 {
                return Ok(total);
            }
        }
    }

    /// Prune every [`PRUNE_EVERY`] until `stop` resolves.
    pub async fn prune_until(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(PRUNE_EVERY) => {}
            }
            if self.skipping().await {
                continue;
            }
            match self.prune().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "expired Idempotency-Keys deleted"),
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "could not delete expired Idempotency-Keys")
                }
            }
        }
    }

    async fn skipping(&self) -> bool {
        let mut down = self.down_until.lock().await;
        match *down {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                *down = None;
                false
            }
            None => false,
        }
    }

    pub(crate) fn up(&self) {
        gauge!("ingress_idempotency_store_available").set(1.0);
    }

    pub(crate) async fn down(&self, why: &str) {
        let mut down = self.down_until.lock().await;
        if down.is_none() {
            tracing::warn!(
                error = why,
                retry_in_s = RETRY_AFTER_FAILURE.as_secs(),
                "the Idempotency-Key store is unavailable; publishing without it (event ids from the key still make consumers apply a retry once)"
            );
        }
        *down = Some(Instant::now() + RETRY_AFTER_FAILURE);
        gauge!("ingress_idempotency_store_available").set(0.0);
    }
}

fn bypassed(route: &'static str) -> Claim {
    counter!("ingress_idempotency_bypassed_total", "route" => route).increment(1);
    Claim::Bypassed
}

/// SHA-256 of the route and the body's JSON in a canonical form (object keys sorted, no
/// insignificant whitespace): the same request formatted differently is the same request.
pub fn fingerprint(route: &str, body: &serde_json::Value) -> Vec<u8> {
    fn canonical(value: &serde_json::Value, out: &mut Vec<u8>) {
        match value {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                out.push(b'{');
                for (i, (key, value)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(serde_json::Value::String(key.clone()).to_string().as_bytes());
                    out.push(b':');
                    canonical(value, out);
                }
                out.push(b'}');
            }
            serde_json::Value::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    canonical(item, out);
                }
                out.push(b']');
            }
            scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
        }
    }
    let mut bytes = route.as_bytes().to_vec();
    bytes.push(0);
    canonical(body, &mut bytes);
    sha2::Sha256::digest(&bytes).to_vec()
}

/// Check that `schema` is a plain lowercase SQL identifier, so it can be spliced into SQL.
fn validate_schema(schema: &str) -> anyhow::Result<()> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && schema.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    anyhow::ensure!(
        ok,
        "--idempotency-schema `{schema}` must be 1-63 characters of [a-z0-9_], starting with a letter or _"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_json_formatted_differently_has_the_same_fingerprint() {
        let a: serde_json::Value = serde_json::from_str(r#"{"b": [1, {"y": 2, "x": "é"}], "a": null}"#).unwrap();
        let b: serde_json::Value = serde_json::from_str(r#"{"a":null,"b":[1,{"x":"é","y":2}]}"#).unwrap();
        assert_eq!(fingerprint("/v1/orders", &a), fingerprint("/v1/orders", &b));
        assert_ne!(fingerprint("/v1/orders", &a), fingerprint("/v1/inventory/changes", &a));
        let c: serde_json::Value = serde_json::from_str(r#"{"a":null,"b":[{"x":"é","y":2},1]}"#).unwrap();
        assert_ne!(fingerprint("/v1/orders", &a), fingerprint("/v1/orders", &c), "array order matters");
    }

    #[test]
    fn schema_names_must_be_plain_identifiers() {
        assert!(validate_schema("ingress").is_ok());
        for bad in ["", "Ingress", "a;drop table x", "1x", &"a".repeat(64)] {
            assert!(validate_schema(bad).is_err(), "{bad}");
        }
    }
}
