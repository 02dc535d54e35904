-- tradsys history, SQLite engine, version 5: an order's trailing delta
-- (Binance's trailingDelta), in basis points, how far a trailing stop's
-- trigger trails the best price; 0 for an order that does not trail. A
-- count, not money, so it is stored as it is, without the 10⁻⁸ scale.
-- The default fills every existing row, so orders stored before read
-- back as orders that do not trail, as they were; SQLite adds a column
-- with a constant default without rewriting the table. An order's
-- trailing delta never changes, so the writer's upsert leaves it alone.
-- See docs/schema.md.

ALTER TABLE orders ADD COLUMN trailing_delta INTEGER NOT NULL DEFAULT 0;
