-- The outbox: one order-confirmation email per order, written in the batch transaction and
-- delivered by the sender task. `message_id` is derived from the OrderPlaced event id, so a
-- resend after a crash carries the same Message-ID and receivers can drop the duplicate.
CREATE TABLE emails (
    order_id text PRIMARY KEY,
    event_id uuid NOT NULL,
    to_address text NOT NULL,
    subject text NOT NULL,
    body_text text NOT NULL,
    body_html text NOT NULL,
    message_id text NOT NULL,
    -- queued → sent | failed; suppressed = recorded during a replay, never sent.
    status text NOT NULL CHECK (status IN ('queued', 'sent', 'failed', 'suppressed')),
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    -- When the sender may (re)try; a claim pushes it forward by a lease, so a sender that
    -- dies mid-send leaves the row to be retried when the lease runs out.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz
);
CREATE INDEX emails_due ON emails (next_attempt_at) WHERE status = 'queued';
