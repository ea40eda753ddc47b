-- One row per order, keyed by its id: an order placed twice (re-published under a new event
-- id) stays one row, whichever copy is applied last.
CREATE TABLE customer_orders (
    order_id text PRIMARY KEY,
    customer_id text NOT NULL,
    placed_at timestamptz NOT NULL,
    total_minor bigint NOT NULL,
    currency text NOT NULL,
    lines integer NOT NULL
);

-- A customer's orders, newest first (the read API's order).
CREATE INDEX customer_orders_newest_first ON customer_orders (customer_id, placed_at DESC, order_id DESC);
