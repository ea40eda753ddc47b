-- The transactional outbox: a checkout service inserts one row per event in the same
-- transaction as its own change; outbox-relay publishes pending rows in id order and marks them.
CREATE TABLE IF NOT EXISTS orderflow_outbox (
    id           bigserial   PRIMARY KEY,
    event_id     uuid        NOT NULL UNIQUE,
    -- The contract topic of the event's kind, for operators; the relay maps kinds to topics.
    topic        text        NOT NULL,
    key          text        NOT NULL,
    -- The event's JSON (orderflow-events serde shape); the relay encodes it with its codec.
    payload      jsonb       NOT NULL,
    traceparent  text        NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz NULL,
    -- Set by the relay when the payload can never be published (not an event it can read);
    -- such rows are skipped, kept for an operator, and never block the rows after them.
    error        text        NULL
);

CREATE INDEX IF NOT EXISTS orderflow_outbox_pending ON orderflow_outbox (id) WHERE published_at IS NULL AND error IS NULL;
CREATE INDEX IF NOT EXISTS orderflow_outbox_published ON orderflow_outbox (published_at) WHERE published_at IS NOT NULL;

-- Wake the relay as soon as a transaction that enqueued something commits (NOTIFY is
-- delivered at commit). One channel per schema, so outboxes in different schemas stay apart.
CREATE OR REPLACE FUNCTION orderflow_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('orderflow_outbox:' || TG_TABLE_SCHEMA, '');
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS orderflow_outbox_inserted ON orderflow_outbox;
CREATE TRIGGER orderflow_outbox_inserted AFTER INSERT ON orderflow_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION orderflow_outbox_notify();
