//! The email outbox's queries: queue confirmations in the batch transaction, claim due ones
//! for the sender (`FOR UPDATE SKIP LOCKED`, then a lease), record what a send did, read.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::template::Rendered;

/// Most characters of an SMTP error kept in `last_error`.
const MAX_ERROR_LEN: usize = 1000;

/// Queue (or, in a replay, record as `suppressed`) the confirmations of a batch, keyed by
/// order id. An order that already has an email keeps it: one confirmation per order.
pub async fn queue(
    tx: &mut PgConnection,
    emails: &BTreeMap<String, (Uuid, Rendered)>,
    replay: bool,
) -> Result<(), sqlx::Error> {
    if emails.is_empty() {
        return Ok(());
    }
    let order_ids: Vec<&str> = emails.keys().map(String::as_str).collect();
    let event_ids: Vec<Uuid> = emails.values().map(|(id, _)| *id).collect();
    let column = |f: fn(&Rendered) -> &str| emails.values().map(|(_, r)| f(r)).collect::<Vec<&str>>();
    sqlx::query(
        "INSERT INTO emails (order_id, event_id, to_address, subject, body_text, body_html, message_id, status)
         SELECT o, e, t, s, bt, bh, m, $8
         FROM UNNEST($1::text[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]) AS u(o, e, t, s, bt, bh, m)
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(&order_ids)
    .bind(&event_ids)
    .bind(column(|r| &r.to))
    .bind(column(|r| &r.subject))
    .bind(column(|r| &r.text))
    .bind(column(|r| &r.html))
    .bind(column(|r| &r.message_id))
    .bind(if replay { "suppressed" } else { "queued" })
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// An email the sender claimed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub order_id: String,
    pub to_address: String,
    pub subject: String,
    pub body_text: String,
    pub body_html: String,
    pub message_id: String,
    /// Including this one.
    pub attempts: i32,
}

/// Claim up to `limit` due emails: count the attempt and push `next_attempt_at` forward by
/// `lease`, so other senders skip them and a sender that dies mid-send leaves them to be
/// retried once the lease runs out.
pub async fn claim(pool: &PgPool, limit: i64, lease: Duration) -> Result<Vec<Claimed>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE emails SET attempts = attempts + 1, next_attempt_at = now() + make_interval(secs => $2)
         WHERE order_id IN (
             SELECT order_id FROM emails WHERE status = 'queued' AND next_attempt_at <= now()
             ORDER BY next_attempt_at, order_id LIMIT $1 FOR UPDATE SKIP LOCKED)
         RETURNING order_id, to_address, subject, body_text, body_html, message_id, attempts",
    )
    .bind(limit)
    .bind(lease.as_secs_f64())
    .fetch_all(pool)
    .await
}

pub async fn mark_sent(pool: &PgPool, order_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE emails SET status = 'sent', sent_at = now(), last_error = NULL WHERE order_id = $1 AND status = 'queued'")
        .bind(order_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Record a failed attempt: retry after `retry_in`, or give up (`failed`) when `None`.
pub async fn mark_attempt_failed(
    pool: &PgPool,
    order_id: &str,
    error: &str,
    retry_in: Option<Duration>,
) -> Result<(), sqlx::Error> {
    let error: String = error.chars().take(MAX_ERROR_LEN).collect();
    sqlx::query(
        "UPDATE emails SET last_error = $2,
             status = CASE WHEN $3::float8 IS NULL THEN 'failed' ELSE status END,
             next_attempt_at = CASE WHEN $3::float8 IS NULL THEN next_attempt_at ELSE now() + make_interval(secs => $3::float8) END
         WHERE order_id = $1 AND status = 'queued'",
    )
    .bind(order_id)
    .bind(error)
    .bind(retry_in.map(|d| d.as_secs_f64()))
    .execute(pool)
    .await?;
    Ok(())
}

/// The server could not take the message now (outage): give the claim's attempt back and
/// make the email due again after `delay`. Only messages the server rejects use up attempts.
pub async fn defer(pool: &PgPool, order_id: &str, error: &str, delay: Duration) -> Result<(), sqlx::Error> {
    let error: String = error.chars().take(MAX_ERROR_LEN).collect();
    sqlx::query(
        "UPDATE emails SET attempts = greatest(attempts - 1, 0), last_error = $2,
             next_attempt_at = now() + make_interval(secs => $3)
         WHERE order_id = $1 AND status = 'queued'",
    )
    .bind(order_id)
    .bind(error)
    .bind(delay.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(())
}

/// Claimed emails the sender did not start (the circuit opened mid-round): due again now,
/// their attempts given back.
pub async fn release(pool: &PgPool, order_ids: &[&str]) -> Result<(), sqlx::Error> {
    if order_ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE emails SET attempts = greatest(attempts - 1, 0), next_attempt_at = now()
         WHERE order_id = ANY($1) AND status = 'queued'",
    )
    .bind(order_ids)
    .execute(pool)
    .await?;
    Ok(())
}

/// One email as `GET /v1/emails` shows it.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct EmailView {
    pub order_id: String,
    #[sqlx(rename = "to_address")]
    pub to: String,
    pub subject: String,
    pub status: String,
    pub attempts: i32,
    pub message_id: String,
    pub last_error: Option<String>,
    pub next_attempt_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

pub async fn emails_for_order(pool: &PgPool, order_id: &str) -> Result<Vec<EmailView>, sqlx::Error> {
    sqlx::query_as(
        "SELECT order_id, to_address, subject, status, attempts, message_id, last_error, next_attempt_at, sent_at
         FROM emails WHERE order_id = $1",
    )
    .bind(order_id)
    .fetch_all(pool)
    .await
}
