-- One fulfillment per order, created by its OrderPlaced.
CREATE TABLE fulfillments (
    order_id text PRIMARY KEY,
    placed_at timestamptz NOT NULL
);

-- The order's lines (quantity per sku, lines of the same sku summed).
CREATE TABLE fulfillment_lines (
    order_id text NOT NULL REFERENCES fulfillments (order_id),
    sku text NOT NULL,
    quantity bigint NOT NULL,
    PRIMARY KEY (order_id, sku)
);

-- Units shipped per order and sku, summed from `shipped` stock changes. No foreign key:
-- a shipment may be applied before its order (different topics) and is counted when the
-- order arrives, so the status does not depend on which came first.
CREATE TABLE shipments (
    order_id text NOT NULL,
    sku text NOT NULL,
    shipped bigint NOT NULL,
    PRIMARY KEY (order_id, sku)
);
