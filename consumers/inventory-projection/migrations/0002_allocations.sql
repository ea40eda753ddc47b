-- What the allocator decided per (order, sku), summed from allocations.v1 (order-insensitive
-- like the rest): units allocated (at decision and later), units backordered at decision, and
-- the part of those that stock covered later (refilled). Waiting = backordered - refilled.
ALTER TABLE order_skus
    ADD COLUMN allocated   bigint NOT NULL DEFAULT 0,
    ADD COLUMN backordered bigint NOT NULL DEFAULT 0,
    ADD COLUMN refilled    bigint NOT NULL DEFAULT 0;
