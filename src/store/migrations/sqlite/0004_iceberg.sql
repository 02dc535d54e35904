-- tradsys history, SQLite engine, version 4: an order's iceberg quantity
-- (Binance's icebergQty), the most it shows in the book at a time; 0 for
-- a plain order. The default fills every existing row, so orders stored
-- before read back as plain orders, as they were; SQLite adds a column
-- with a constant default without rewriting the table. An order's
-- iceberg quantity never changes, so the writer's upsert leaves it alone.
-- See docs/schema.md.

ALTER TABLE orders ADD COLUMN iceberg_qty INTEGER NOT NULL DEFAULT 0;
