//! The email outbox's queries: queue confirmations and backorder notices in the batch
//! transaction, claim due ones for the sender (`FOR UPDATE SKIP LOCKED`, then a lease), record
//! what a send did (by Message-ID), read.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::template::Rendered;

/// Most characters of an SMTP error kept in `last_error`.
const MAX_ERROR_LEN: usize = 1000;

/// Queue (or, in a replay, record as `suppressed`) emails of `kind` (`confirmation` or
/// `backorder`), keyed by order id. An order that already has an email of that kind keeps it:
/// one of each kind per order.
pub async fn queue(
    tx: &mut PgConnection,
    kind: &str,
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
        "INSERT INTO emails (order_id, event_id, to_address, subject, body_text, body_html, message_id, status, kind)
         SELECT o, e, t, s, bt, bh, m, $8, $9
         FROM UNNEST($1::text[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]) AS u(o, e, t, s, bt, bh, m)
         ON CONFLICT DO NOTHING",
    )
    .bind(&order_ids)
    .bind(&event_ids)
    .bind(column(|r| &r.to))
    .bind(column(|r| &r.subject))
    .bind(column(|r| &r.text))
    .bind(column(|r| &r.html))
    .bind(column(|r| &r.message_id))
    .bind(if replay { "suppressed" } else { "queued" })
    .bind(kind)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// First key of the email consumer's advisory locks (`orderflow_consumer_kit::lock_keys`):
/// "mail" in ASCII.
pub const LOCK_CLASS: i32 = 0x6d61_696c;

/// The confirmation address of each of `order_ids` that has one (its order was applied).
pub async fn addresses(tx: &mut PgConnection, order_ids: &[&str]) -> Result<BTreeMap<String, String>, sqlx::Error> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT order_id, to_address FROM emails WHERE kind = 'confirmation' AND order_id = ANY($1)")
            .bind(order_ids)
            .fetch_all(&mut *tx)
            .await?;
    Ok(rows.into_iter().collect())
}

/// A backorder notice's lines: (sku, units missing).
pub type NoticeLines = Vec<(String, i64)>;

/// A backorder notice waiting for its order: (order id, event id, lines).
pub type Notice = (String, Uuid, NoticeLines);

/// Keep notices whose order is not applied yet.
pub async fn keep_pending(tx: &mut PgConnection, notices: &[Notice]) -> Result<(), sqlx::Error> {
    if notices.is_empty() {
        return Ok(());
    }
    let lines = notices
        .iter()
        .map(|(_, _, lines)| serde_json::to_value(lines))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(
        "INSERT INTO pending_notices (order_id, event_id, lines)
         SELECT * FROM UNNEST($1::text[], $2::uuid[], $3::jsonb[]) ON CONFLICT DO NOTHING",
    )
    .bind(notices.iter().map(|(o, _, _)| o.as_str()).collect::<Vec<_>>())
    .bind(notices.iter().map(|(_, e, _)| *e).collect::<Vec<_>>())
    .bind(lines)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Take the pending notices of `order_ids` (they are rendered now that the orders are here).
pub async fn take_pending(tx: &mut PgConnection, order_ids: &[&str]) -> Result<Vec<Notice>, sqlx::Error> {
    let rows: Vec<(String, Uuid, sqlx::types::Json<NoticeLines>)> =
        sqlx::query_as("DELETE FROM pending_notices WHERE order_id = ANY($1) RETURNING order_id, event_id, lines")
            .bind(order_ids)
            .fetch_all(&mut *tx)
            .await?;
    Ok(rows.into_iter().map(|(order_id, event_id, lines)| (order_id, event_id, lines.0)).collect())
}

/// An email the sender claimed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub order_id: String,
    /// `confirmation` or `backorder`.
    pub kind: String,
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
         WHERE message_id IN (
             SELECT message_id FROM emails WHERE status = 'queued' AND next_attempt_at <= now()
             ORDER BY next_attempt_at, order_id, kind LIMIT $1 FOR UPDATE SKIP LOCKED)
         RETURNING order_id, kind, to_address, subject, body_text, body_html, message_id, attempts",
    )
    .bind(limit)
    .bind(lease.as_secs_f64())
    .fetch_all(pool)
    .await
}

pub async fn mark_sent(pool: &PgPool, message_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE emails SET status = 'sent', sent_at = now(), last_error = NULL WHERE message_id = $1 AND status = 'queued'")
        .bind(message_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Record a failed attempt: retry after `retry_in`, or give up (`failed`) when `None`.
pub async fn mark_attempt_failed(
    pool: &PgPool,
    message_id: &str,
    error: &str,
    retry_in: Option<Duration>,
) -> Result<(), sqlx::Error> {
    let error: String = error.chars().take(MAX_ERROR_LEN).collect();
    sqlx::query(
        "UPDATE emails SET last_error = $2,
             status = CASE WHEN $3::float8 IS NULL THEN 'failed' ELSE status END,
             next_attempt_at = CASE WHEN $3::float8 IS NULL THEN next_attempt_at ELSE now() + make_interval(secs => $3::float8) END
         WHERE message_id = $1 AND status = 'queued'",
    )
    .bind(message_id)
    .bind(error)
    .bind(retry_in.map(|d| d.as_secs_f64()))
    .execute(pool)
    .await?;
    Ok(())
}

/// The server could not take the message now (outage): give the claim's attempt back and
/// make the email due again after `delay`. Only messages the server rejects use up attempts.
pub async fn defer(pool: &PgPool, message_id: &str, error: &str, delay: Duration) -> Result<(), sqlx::Error> {
    let error: String = error.chars().take(MAX_ERROR_LEN).collect();
    sqlx::query(
        "UPDATE emails SET attempts = greatest(attempts - 1, 0), last_error = $2,
             next_attempt_at = now() + make_interval(secs => $3)
         WHERE message_id = $1 AND status = 'queued'",
    )
    .bind(message_id)
    .bind(error)
    .bind(delay.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(())
}

/// Claimed emails the sender did not start (the circuit opened mid-round): due again now,
/// their attempts given back.
pub async fn release(pool: &PgPool, message_ids: &[&str]) -> Result<(), sqlx::Error> {
    if message_ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE emails SET attempts = greatest(attempts - 1, 0), next_attempt_at = now()
         WHERE message_id = ANY($1) AND status = 'queued'",
    )
    .bind(message_ids)
    .execute(pool)
    .await?;
    Ok(())
}

/// One email as `GET /v1/emails` shows it.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct EmailView {
    pub order_id: String,
    /// `confirmation` or `backorder`.
    pub kind: String,
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
        "SELECT order_id, kind, to_address, subject, status, attempts, message_id, last_error, next_attempt_at, sent_at
         FROM emails WHERE order_id = $1 ORDER BY kind DESC",
    )
    .bind(order_id)
    .fetch_all(pool)
    .await
}
