-- Units sold per sku: the example consumer's whole read store.
CREATE TABLE units_per_sku (
    sku   text   PRIMARY KEY,
    units bigint NOT NULL
);
