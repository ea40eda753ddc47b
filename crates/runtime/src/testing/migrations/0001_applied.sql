-- The table of orderflow_runtime::testing::Recorder: one row per application of an order
-- (no key, so an order applied twice shows as two rows).
CREATE TABLE applied (
    order_id  text    NOT NULL,
    units     bigint  NOT NULL,
    partition integer NOT NULL,
    "offset"  bigint  NOT NULL
);
