-- A second kind of email: the backorder notice, sent once per order the allocator could not
-- cover in full (OrderBackordered on allocations.v1). One email per (order, kind); the sender
-- addresses rows by their Message-ID, which is unique (derived from the event's id).
ALTER TABLE emails ADD COLUMN kind text NOT NULL DEFAULT 'confirmation' CHECK (kind IN ('confirmation', 'backorder'));
ALTER TABLE emails DROP CONSTRAINT emails_pkey;
ALTER TABLE emails ADD PRIMARY KEY (order_id, kind);
CREATE UNIQUE INDEX emails_message_id ON emails (message_id);

-- Notices whose order was not applied yet (the decision's topic came first): the address is
-- the order's, so the notice is rendered when the order arrives.
CREATE TABLE pending_notices (
    order_id text  PRIMARY KEY,
    event_id uuid  NOT NULL,
    lines    jsonb NOT NULL
);
