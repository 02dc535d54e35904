-- tradsys history, SQLite engine, version 6: the order list (OCO, OTO,
-- OTOCO) an order is a leg of (Binance's orderListId); 0 for an order
-- that belongs to no list, which the API reports as -1. An id: BIGINT
-- has INTEGER affinity, the 64-bit integer the other ids are stored as.
-- The default fills every existing row, so orders stored before read
-- back as plain orders, as they were; SQLite adds a column with a
-- constant default without rewriting the table. An order's list never
-- changes, so the writer's upsert leaves it alone. See docs/schema.md.

ALTER TABLE orders ADD COLUMN order_list_id BIGINT NOT NULL DEFAULT 0;
