//! Read-your-writes across the asynchronous boundary (docs/read-your-writes.md): a read that
//! carries the ingress's consistency token (`?after=<token>` or the `consistency-token`
//! header) waits, up to `--read-wait-ms`, until this consumer has applied every position in it,
//! then runs as usual; past the wait it gets 503 + `Retry-After` and how far behind the
//! consumer is, never stale data presented as fresh. Every read answer says how fresh it is:
//! `orderflow-applied-through` (the next offset applied per partition) and
//! `orderflow-last-applied-age-ms`.
//!
//! # Owns
//! The layer around every consumer's read API ([`layer`]).
//!
//! # Must not touch
//! The read API's own routes and the store's tables: it reads the stored offsets only.
//!
//! The wait never holds a database connection: a partition this instance owns is watched in
//! memory (woken by each commit); one another instance owns is polled in Postgres, one short
//! query at a time.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use orderflow_service::consistency::{self, Token};
use sqlx::PgPool;
use tokio::time::Instant;

use crate::consumer::{Health, PartitionStatus};
use crate::store;

/// How often a partition owned by another instance is polled in Postgres.
const POLL_EVERY: Duration = Duration::from_millis(20);
/// Header: per partition read (or named by the token), the next offset this consumer applies.
pub const APPLIED_THROUGH_HEADER: &str = "orderflow-applied-through";
/// Header: milliseconds since the last event this instance applied was written to Kafka.
pub const LAST_APPLIED_AGE_HEADER: &str = "orderflow-last-applied-age-ms";

/// What the layer needs: the consumer's progress, its store, the topics it reads, the wait.
pub struct Consistency {
    health: Arc<Health>,
    pool: PgPool,
    topics: Vec<String>,
    wait: Duration,
}

impl Consistency {
    pub fn new(health: Arc<Health>, pool: PgPool, topics: Vec<String>, wait: Duration) -> Arc<Self> {
        Arc::new(Consistency { health, pool, topics, wait })
    }

    fn local(&self, topic: &str, partition: i32) -> Option<Arc<PartitionStatus>> {
        self.health.partitions.lock().unwrap().get(&(topic.to_owned(), partition)).cloned()
    }

    /// The next offset this consumer will apply on a partition: from memory when this instance
    /// owns it, else from Postgres (`None` before its first batch).
    async fn next_offset(&self, topic: &str, partition: i32) -> Result<Option<i64>, sqlx::Error> {
        if let Some(status) = self.local(topic, partition) {
            let next = status.next_offset.load(Ordering::SeqCst);
            if next >= 0 {
                return Ok(Some(next));
            }
        }
        store::next_offset(&self.pool, topic, partition).await
    }

    /// Wait until every position of `token` is applied; else the positions still behind,
    /// with how far each got.
    async fn wait_for(&self, token: &Token) -> Result<(), Vec<Behind>> {
        let deadline = Instant::now() + self.wait;
        loop {
            // Register for the wake-ups before reading, so a commit in between is not missed.
            let statuses: Vec<Option<Arc<PartitionStatus>>> =
                token.positions().map(|(topic, partition, _)| self.local(topic, partition)).collect();
            let mut wakes: Vec<_> = statuses
                .iter()
                .map(|status| {
                    status.as_ref().map(|s| {
                        let mut notified = Box::pin(s.applied.notified());
                        notified.as_mut().enable();
                        notified
                    })
                })
                .collect();
            let mut behind = Vec::new();
            let mut first_behind = None;
            for (i, (topic, partition, offset)) in token.positions().enumerate() {
                let next = match self.next_offset(topic, partition).await {
                    Ok(next) => next,
                    Err(error) => {
                        tracing::warn!(error = %error, "could not read the stored offset for a consistency token");
                        None
                    }
                };
                if next.is_none_or(|next| next <= offset) {
                    behind.push(Behind { topic: topic.to_owned(), partition, offset, next_offset: next });
                    first_behind.get_or_insert(i);
                }
            }
            if behind.is_empty() {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(behind);
            }
            match first_behind.and_then(|i| wakes[i].take()) {
                // Owned here: a commit wakes us (the cap covers a revocation meanwhile).
                Some(notified) => {
                    let _ = tokio::time::timeout_at(deadline.min(now + Duration::from_millis(250)), notified).await;
                }
                None => tokio::time::sleep_until(deadline.min(now + POLL_EVERY)).await,
            }
        }
    }

    /// The freshness headers: the positions of `token` (or every partition this instance owns)
    /// and the age of the last applied event.
    async fn freshness(&self, token: Option<&Token>, response: &mut Response) {
        let mut applied = Vec::new();
        match token {
            Some(token) => {
                for (topic, partition, _) in token.positions() {
                    if let Ok(Some(next)) = self.next_offset(topic, partition).await {
                        applied.push(format!("{topic}:{partition}:{next}"));
                    }
                }
            }
            None => {
                let partitions = self.health.partitions.lock().unwrap();
                let mut owned: Vec<_> = partitions.iter().collect();
                owned.sort_by(|a, b| a.0.cmp(b.0));
                for ((topic, partition), status) in owned {
                    let next = status.next_offset.load(Ordering::SeqCst);
                    if next >= 0 {
                        applied.push(format!("{topic}:{partition}:{next}"));
                    }
                }
            }
        }
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&applied.join(",")) {
            headers.insert(APPLIED_THROUGH_HEADER, value);
        }
        let last =
            self.health.partitions.lock().unwrap().values().map(|s| s.last_applied_ms.load(Ordering::Relaxed)).max();
        if let Some(last) = last.filter(|ms| *ms > 0) {
            let age = (chrono::Utc::now().timestamp_millis() - last).max(0);
            headers.insert(LAST_APPLIED_AGE_HEADER, HeaderValue::from(age));
        }
    }
}

/// A position of a token the consumer has not applied yet.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Behind {
    topic: String,
    partition: i32,
    /// The token's offset.
    offset: i64,
    /// The next offset this consumer applies there (`null`: none applied yet).
    next_offset: Option<i64>,
}

/// The 503 of a read whose consistency token was not reached within the wait.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct NotAppliedYet {
    pub error: String,
    /// The token's positions this consumer has not applied yet.
    pub behind: Vec<Behind>,
    /// Records this instance's partitions are behind in all (those it knows the lag of).
    pub lag: i64,
}

/// `api` with every route behind the consistency layer.
pub fn layer(api: axum::Router, consistency: Arc<Consistency>) -> axum::Router {
    api.layer(axum::middleware::from_fn_with_state(consistency, wait_then_read))
}

async fn wait_then_read(State(consistency): State<Arc<Consistency>>, mut request: Request, next: Next) -> Response {
    // Only reads wait: any other method goes on to the route (a read route answers it 405).
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    let token = match take_token(&mut request) {
        Ok(token) => token,
        Err(problem) => return bad_token(&problem),
    };
    if let Some(token) = &token {
        if let Some((topic, _, _)) =
            token.positions().find(|(topic, _, _)| !consistency.topics.iter().any(|t| t == topic))
        {
            return bad_token(&format!(
                "the token names topic {topic}, which this consumer does not read (it reads {})",
                consistency.topics.join(", ")
            ));
        }
        if let Err(behind) = consistency.wait_for(token).await {
            let (lag, _) = consistency.health.total_lag();
            let body = NotAppliedYet {
                error: format!(
                    "not applied yet: this consumer did not reach the write within {} ms; retry after Retry-After seconds with the same token",
                    consistency.wait.as_millis()
                ),
                behind,
                lag,
            };
            let mut response = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1));
            consistency.freshness(Some(token), &mut response).await;
            return response;
        }
    }
    let mut response = next.run(request).await;
    consistency.freshness(token.as_ref(), &mut response).await;
    response
}

/// The token of a request (query parameter first, then header), removed from the query so
/// the route's own parameter parsing never sees it.
fn take_token(request: &mut Request) -> Result<Option<Token>, String> {
    let mut from_query = None;
    if let Some(query) = request.uri().query() {
        let mut kept = Vec::new();
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if name == consistency::QUERY_PARAM {
                from_query = Some(value.into_owned());
            } else {
                kept.push((name.into_owned(), value.into_owned()));
            }
        }
        if from_query.is_some() {
            let query = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(kept).finish();
            let path = request.uri().path();
            let rebuilt = if query.is_empty() { path.to_owned() } else { format!("{path}?{query}") };
            let mut parts = request.uri().clone().into_parts();
            parts.path_and_query = Some(rebuilt.parse().map_err(|_| "the request's query cannot be kept".to_owned())?);
            *request.uri_mut() = Uri::from_parts(parts).map_err(|_| "the request's query cannot be kept".to_owned())?;
        }
    }
    let raw = match from_query {
        Some(value) => Some(value),
        None => match request.headers().get(consistency::HEADER) {
            Some(value) => {
                Some(value.to_str().map_err(|_| "not a consistency token (bad characters)".to_owned())?.to_owned())
            }
            None => None,
        },
    };
    raw.map(|raw| Token::parse(raw.trim())).transpose()
}

fn bad_token(problem: &str) -> Response {
    let body = crate::http::ErrorBody::field(consistency::QUERY_PARAM, problem);
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}
