-- On hand per sku and warehouse: the sum of every stock delta (order-insensitive).
CREATE TABLE stock (
    sku text NOT NULL,
    warehouse text NOT NULL,
    on_hand bigint NOT NULL,
    PRIMARY KEY (sku, warehouse)
);

-- Per order and sku: what the order asked for (set by OrderPlaced) and what shipments of
-- that order took (summed from `shipped` changes). Either side may arrive first, so
-- reserved = sum over orders of greatest(ordered - shipped, 0) does not depend on order.
CREATE TABLE order_skus (
    order_id text NOT NULL,
    sku text NOT NULL,
    ordered bigint NOT NULL DEFAULT 0,
    shipped bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (order_id, sku)
);
CREATE INDEX order_skus_by_sku ON order_skus (sku);
