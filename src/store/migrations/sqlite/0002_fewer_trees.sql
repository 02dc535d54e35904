-- tradsys history, SQLite engine, version 2: the same columns in fewer
-- B-trees, because every insert pays for every tree. order_events, trades
-- and ledger become WITHOUT ROWID tables keyed the way they are read
-- (uniqueness is the writer's business: each batch is applied once, with
-- its progress). See docs/schema.md.

CREATE TABLE order_events_v2 (
    order_id              INTEGER NOT NULL,
    shard                 INTEGER NOT NULL,
    generation            INTEGER NOT NULL,
    lsn                   INTEGER NOT NULL,
    seq                   INTEGER NOT NULL,
    status                TEXT NOT NULL,
    executed_qty          INTEGER NOT NULL,
    cummulative_quote_qty INTEGER NOT NULL,
    update_time_ms        INTEGER NOT NULL,
    PRIMARY KEY (order_id, shard, generation, lsn, seq)
) WITHOUT ROWID;
INSERT INTO order_events_v2 (order_id, shard, generation, lsn, seq, status, executed_qty,
    cummulative_quote_qty, update_time_ms)
SELECT order_id, shard, generation, lsn, seq, status, executed_qty, cummulative_quote_qty, update_time_ms
FROM order_events;
DROP TABLE order_events;
ALTER TABLE order_events_v2 RENAME TO order_events;

CREATE TABLE trades_v2 (
    user_id           INTEGER NOT NULL,
    symbol            TEXT NOT NULL,
    trade_id          INTEGER NOT NULL,
    is_buyer          INTEGER NOT NULL,
    order_id          INTEGER NOT NULL,
    price             INTEGER NOT NULL,
    qty               INTEGER NOT NULL,
    quote_qty         INTEGER NOT NULL,
    commission        INTEGER NOT NULL,
    commission_asset  TEXT NOT NULL,
    is_maker          INTEGER NOT NULL,
    time_ms           INTEGER NOT NULL,
    PRIMARY KEY (user_id, symbol, trade_id, is_buyer)
) WITHOUT ROWID;
INSERT INTO trades_v2 (user_id, symbol, trade_id, is_buyer, order_id, price, qty, quote_qty, commission,
    commission_asset, is_maker, time_ms)
SELECT user_id, symbol, trade_id, is_buyer, order_id, price, qty, quote_qty, commission,
    commission_asset, is_maker, time_ms
FROM trades;
DROP TABLE trades;
ALTER TABLE trades_v2 RENAME TO trades;
CREATE INDEX trades_user_symbol_time ON trades (user_id, symbol, time_ms);
CREATE INDEX trades_user_symbol_order ON trades (user_id, symbol, order_id);

CREATE TABLE ledger_v2 (
    account     INTEGER NOT NULL,
    asset       TEXT NOT NULL,
    time_ms     INTEGER NOT NULL,
    shard       INTEGER NOT NULL,
    generation  INTEGER NOT NULL,
    lsn         INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    delta       INTEGER NOT NULL,
    cause       TEXT NOT NULL,
    reference   INTEGER NOT NULL,
    PRIMARY KEY (account, asset, time_ms, shard, generation, lsn, seq)
) WITHOUT ROWID;
INSERT INTO ledger_v2 (account, asset, time_ms, shard, generation, lsn, seq, delta, cause, reference)
SELECT account, asset, time_ms, shard, generation, lsn, seq, delta, cause, reference FROM ledger;
DROP TABLE ledger;
ALTER TABLE ledger_v2 RENAME TO ledger;
