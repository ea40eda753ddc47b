-- Every table is a sum keyed by a time bucket, so events apply in any order.

-- Orders and revenue per hour (of placed_at, UTC) and currency.
CREATE TABLE sales_hourly (
    hour timestamptz NOT NULL,
    currency text NOT NULL,
    orders bigint NOT NULL,
    revenue_minor bigint NOT NULL,
    PRIMARY KEY (hour, currency)
);

-- Units sold per day (of placed_at, UTC) and sku.
CREATE TABLE units_daily (
    day date NOT NULL,
    sku text NOT NULL,
    units bigint NOT NULL,
    PRIMARY KEY (day, sku)
);

-- Stock movements per day (of occurred_at, UTC) and reason: how many changes, net units.
CREATE TABLE stock_movements_daily (
    day date NOT NULL,
    reason text NOT NULL,
    movements bigint NOT NULL,
    units bigint NOT NULL,
    PRIMARY KEY (day, reason)
);
