-- tradsys history, PostgreSQL engine, version 4: an order's iceberg
-- quantity (Binance's icebergQty), the most it shows in the book at a
-- time; 0 for a plain order. The default fills every existing row, so
-- orders stored before read back as plain orders, as they were. Added on
-- the partitioned parent, it reaches every partition (the default one
-- and those history_ensure_partitions makes later); a constant default
-- is kept in the catalog, so no partition is rewritten (PostgreSQL 11
-- and later). An order's iceberg quantity never changes, so the writer's
-- upsert leaves it alone. See docs/schema.md.

ALTER TABLE orders ADD COLUMN iceberg_qty NUMERIC(38, 8) NOT NULL DEFAULT 0;
