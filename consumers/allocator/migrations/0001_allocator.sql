-- The allocator's store (docs/allocation.md). Every row of one sku is written only while the
-- transaction holds that sku's advisory lock, so decisions on a sku never interleave.

-- Stock per sku and warehouse: what arrived (on_hand) and what orders hold (allocated).
CREATE TABLE stock (
    sku       text   NOT NULL,
    warehouse text   NOT NULL,
    on_hand   bigint NOT NULL DEFAULT 0,
    allocated bigint NOT NULL DEFAULT 0 CHECK (allocated >= 0),
    PRIMARY KEY (sku, warehouse)
);

-- Every order decided, once: a second OrderPlaced of an order is never decided again.
CREATE TABLE decided_orders (
    order_id       text        PRIMARY KEY,
    order_event_id uuid        NOT NULL,
    placed_at      timestamptz NOT NULL,
    decided_at     timestamptz NOT NULL
);

-- What each order holds, per sku and warehouse, and by which decision event.
CREATE TABLE allocations (
    order_id   text        NOT NULL,
    sku        text        NOT NULL,
    warehouse  text        NOT NULL,
    quantity   bigint      NOT NULL CHECK (quantity > 0),
    event_id   uuid        NOT NULL,
    decided_at timestamptz NOT NULL
);
CREATE INDEX allocations_order ON allocations (order_id);

-- Order lines waiting for stock, served first placed first; a row goes when its line is covered.
CREATE TABLE backorders (
    order_id         text        NOT NULL,
    sku              text        NOT NULL,
    quantity_missing bigint      NOT NULL CHECK (quantity_missing > 0),
    placed_at        timestamptz NOT NULL,
    traceparent      text        NULL,
    PRIMARY KEY (order_id, sku)
);
CREATE INDEX backorders_queue ON backorders (sku, placed_at, order_id);
