-- What the allocator decided per order and sku, summed from allocations.v1: units allocated
-- (at decision and later), backordered at decision, and refilled (backordered units stock
-- covered later). No foreign key: a decision may be applied before its order (other topic).
CREATE TABLE allocation_lines (
    order_id    text   NOT NULL,
    sku         text   NOT NULL,
    allocated   bigint NOT NULL DEFAULT 0,
    backordered bigint NOT NULL DEFAULT 0,
    refilled    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (order_id, sku)
);
