-- tradsys history, PostgreSQL engine, version 6: the order list (OCO,
-- OTO, OTOCO) an order is a leg of (Binance's orderListId); 0 for an
-- order that belongs to no list, which the API reports as -1. An id, so
-- a BIGINT like the other ids. The default fills every existing row, so
-- orders stored before read back as plain orders, as they were. Added on
-- the partitioned parent, it reaches every partition (the default one
-- and those history_ensure_partitions makes later); a constant default
-- is kept in the catalog, so no partition is rewritten (PostgreSQL 11
-- and later). An order's list never changes, so the writer's upsert
-- leaves it alone. See docs/schema.md.

ALTER TABLE orders ADD COLUMN order_list_id BIGINT NOT NULL DEFAULT 0;
