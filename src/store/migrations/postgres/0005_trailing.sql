-- tradsys history, PostgreSQL engine, version 5: an order's trailing
-- delta (Binance's trailingDelta), in basis points, how far a trailing
-- stop's trigger trails the best price; 0 for an order that does not
-- trail. A count, not money, so a plain INTEGER without the 10⁻⁸ scale.
-- The default fills every existing row, so orders stored before read
-- back as orders that do not trail, as they were. Added on the
-- partitioned parent, it reaches every partition (the default one and
-- those history_ensure_partitions makes later); a constant default is
-- kept in the catalog, so no partition is rewritten (PostgreSQL 11 and
-- later). An order's trailing delta never changes, so the writer's
-- upsert leaves it alone. See docs/schema.md.

ALTER TABLE orders ADD COLUMN trailing_delta INTEGER NOT NULL DEFAULT 0;
