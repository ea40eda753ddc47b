//! The sender task: claims due emails from the outbox, sends each over SMTP with `lettre`,
//! and records the outcome: `sent`; for a message the server rejects (5xx), a retry after an
//! exponential backoff, or `failed` after the last attempt; for an outage (the server cannot
//! be reached, times out, or answers 4xx "not now"), the email waits and no attempt counts,
//! while a [`CircuitBreaker`] stops claiming until a probe gets through. An outage of any
//! length therefore fails no email.
//!
//! # Guarantee
//! At least once per email, never during a replay (replayed emails are `suppressed` and
//! never claimed). Once the SMTP server has accepted a message, `sent` is recorded even if the
//! database is away at that moment (restart, failover): the sender retries the update for up
//! to the claim's lease, so a database outage sends no second email. A crash of the sender
//! between the server accepting a message and `sent` being recorded (or an outage longer
//! than the lease) resends it after the lease; the Message-ID (derived from the event id) is
//! the same, so the receiving side can drop the duplicate.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use orderflow_runtime::CancellationToken;
use sqlx::PgPool;

use crate::breaker::{CircuitBreaker, Permit, State};
use crate::config::SenderArgs;
use crate::store::{self, Claimed};

/// Emails claimed per round.
const CLAIM_BATCH: i64 = 64;
/// How long a claim keeps other senders away; longer than an SMTP exchange can take.
const CLAIM_LEASE: Duration = Duration::from_secs(120);
/// Timeout of one SMTP exchange.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Sender {
    pool: PgPool,
    args: SenderArgs,
    from: Mailbox,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    breaker: CircuitBreaker,
}

/// Why a send did not go through.
enum Failure {
    /// The server is down, unreachable, slow or says "not now" (4xx): not this message's fault.
    Outage(String),
    /// The server rejected this message (5xx), or it cannot be built.
    Rejected { error: String, retryable: bool },
}

impl Sender {
    pub fn new(pool: PgPool, args: SenderArgs) -> anyhow::Result<Self> {
        let from: Mailbox =
            args.email_from.parse().with_context(|| format!("Invalid EMAIL_FROM {:?}", args.email_from))?;
        let smtp = args.smtp_url.parse()?;
        // Plain SMTP (a local relay); TLS would be a lettre feature and a scheme.
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.clone())
            .port(smtp.port)
            .timeout(Some(SMTP_TIMEOUT));
        if let Some((user, password)) = smtp.credentials() {
            builder = builder.credentials(Credentials::new(user, password));
        }
        let transport = builder.build();
        let breaker = CircuitBreaker::new(
            format!("{}:{}", smtp.host, smtp.port),
            args.smtp_breaker_failures,
            Duration::from_millis(args.smtp_breaker_open_ms),
            Duration::from_millis(args.smtp_breaker_open_max_ms),
        );
        Ok(Sender { pool, args, from, transport, breaker })
    }

    /// Deliver due emails until `stop` is cancelled (a send in flight finishes first).
    pub async fn run(self, stop: CancellationToken) {
        // Exported from the start, so an alert on failures has a series before the first one
        // (the recorder first: series registered before it exists go nowhere).
        orderflow_service::prometheus();
        for outcome in ["sent", "retry", "failed"] {
            metrics::counter!("orderflow_email_deliveries_total", "outcome" => outcome).increment(0);
        }
        tracing::info!(smtp = ?self.args.smtp_url, "email sender started");
        let poll = Duration::from_millis(self.args.email_poll_ms);
        while !stop.is_cancelled() {
            let sent_any = match self.round().await {
                Ok(n) => n > 0,
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "email sender round failed; retrying");
                    false
                }
            };
            if !sent_any {
                tokio::select! {
                    _ = tokio::time::sleep(poll) => {}
                    _ = stop.cancelled() => {}
                }
            }
        }
        tracing::info!("email sender stopped");
    }

    /// Claim and send one batch (one email while the circuit is half-open, none while it is
    /// open); returns how many were claimed.
    async fn round(&self) -> anyhow::Result<usize> {
        let limit = match self.breaker.permit() {
            Permit::None => return Ok(0),
            Permit::Probe => 1,
            Permit::All => CLAIM_BATCH,
        };
        let claimed = store::claim(&self.pool, limit, CLAIM_LEASE).await.context("Failed to claim due emails")?;
        // Several at once: each claimed email is this sender's alone, so their order does not
        // matter, and the rate is no longer bound by one message's round trips.
        let concurrency = self.args.email_send_concurrency.max(1) as usize;
        let mut waiting = claimed.iter();
        let mut in_flight = futures::stream::FuturesUnordered::new();
        let mut outcome = Ok(claimed.len());
        loop {
            // After an error, or once the circuit opened, start nothing new but let the sends
            // in flight record their outcome.
            while outcome.is_ok() && self.breaker.state() != State::Open && in_flight.len() < concurrency {
                let Some(email) = waiting.next() else { break };
                in_flight.push(self.deliver(email));
            }
            let Some(result) = in_flight.next().await else { break };
            if let (Err(error), Ok(_)) = (result, &outcome) {
                outcome = Err(error);
            }
        }
        let unstarted: Vec<&str> = waiting.map(|e| e.message_id.as_str()).collect();
        store::release(&self.pool, &unstarted).await.context("Failed to release unsent emails")?;
        outcome
    }

    async fn deliver(&self, email: &Claimed) -> anyhow::Result<()> {
        let attempts = u32::try_from(email.attempts).unwrap_or(u32::MAX);
        let outcome = match self.message(email) {
            // A message that cannot be built will not build next time either.
            Err(error) => Err(Failure::Rejected { error: format!("{error:#}"), retryable: false }),
            Ok(message) => self.transport.send(message).await.map(|_| ()).map_err(classify),
        };
        match outcome {
            Ok(()) => {
                self.breaker.on_success();
                tracing::info!(
                    order_id = email.order_id,
                    kind = email.kind,
                    message_id = email.message_id,
                    attempts,
                    "email sent"
                );
                record_sent(&self.pool, &email.order_id, &email.message_id).await?;
                delivered("sent");
            }
            Err(Failure::Outage(error)) => {
                self.breaker.on_connection_failure(&error);
                tracing::debug!(order_id = email.order_id, error, "SMTP server unavailable; the email waits");
                store::defer(&self.pool, &email.message_id, &error, Duration::ZERO).await?;
            }
            Err(Failure::Rejected { error, retryable }) => {
                // The server answered: it is up, whatever it thought of this message.
                self.breaker.on_success();
                let retry_in =
                    (retryable && attempts < self.args.email_max_attempts).then(|| self.args.backoff(attempts));
                match retry_in {
                    Some(delay) => tracing::warn!(
                        order_id = email.order_id,
                        attempts,
                        error,
                        retry_in_ms = delay.as_millis() as u64,
                        "the SMTP server rejected the email; will retry"
                    ),
                    None => {
                        tracing::error!(order_id = email.order_id, attempts, error, "sending email failed for good")
                    }
                }
                store::mark_attempt_failed(&self.pool, &email.message_id, &error, retry_in).await?;
                delivered(if retry_in.is_some() { "retry" } else { "failed" });
            }
        }
        Ok(())
    }

    fn message(&self, email: &Claimed) -> anyhow::Result<Message> {
        let to: Mailbox =
            email.to_address.parse().with_context(|| format!("Invalid recipient {:?}", email.to_address))?;
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(email.subject.clone())
            .message_id(Some(email.message_id.clone()))
            .multipart(MultiPart::alternative_plain_html(email.body_text.clone(), email.body_html.clone()))
            .context("Failed to build the email")
    }
}

/// Record `sent` for a message the server accepted, retrying while the database cannot be
/// reached. Giving up at once would leave the email `queued` with its claim's lease, and the
/// next claim after the lease would send it a second time.
/// Counts an attempt's outcome: `sent`, `retry` (rejected, will retry) or `failed` (for good).
fn delivered(outcome: &'static str) {
    metrics::counter!("orderflow_email_deliveries_total", "outcome" => outcome).increment(1);
}

async fn record_sent(pool: &PgPool, order_id: &str, message_id: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + CLAIM_LEASE;
    let mut backoff = Duration::from_millis(100);
    loop {
        match store::mark_sent(pool, message_id).await {
            Ok(()) => return Ok(()),
            Err(error) if Instant::now() + backoff < deadline => {
                tracing::warn!(order_id, error = %error, "the email was sent but recording it failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(error) => {
                return Err(error).with_context(|| {
                    format!(
                        "Failed to record that the email {message_id} of {order_id} was sent; it will be sent again"
                    )
                });
            }
        }
    }
}

/// An answer with a 5xx code (or a client-side error about the message) is about this
/// message; anything else (no answer, a timeout, TLS, a 4xx "try later") is an outage.
fn classify(error: lettre::transport::smtp::Error) -> Failure {
    let text = error.to_string();
    if error.is_permanent() {
        Failure::Rejected { error: text, retryable: true }
    } else if error.is_client() {
        Failure::Rejected { error: text, retryable: false }
    } else {
        Failure::Outage(text)
    }
}
