-- tradsys history, SQLite engine, version 1. Money is INTEGER units of
-- 1e-8; times are milliseconds since the Unix epoch; enums are Binance's
-- names. See docs/schema.md.

CREATE TABLE progress (
    shard       INTEGER PRIMARY KEY,
    generation  INTEGER NOT NULL,
    lsn         INTEGER NOT NULL
);

CREATE TABLE users (
    user_id     INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    created_ms  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    api_key     TEXT PRIMARY KEY,
    user_id     INTEGER NOT NULL,
    scopes      TEXT NOT NULL,
    revoked     INTEGER NOT NULL,
    changed_ms  INTEGER NOT NULL
);
CREATE INDEX api_keys_user ON api_keys (user_id);

CREATE TABLE orders (
    order_id              INTEGER PRIMARY KEY,
    user_id               INTEGER NOT NULL,
    symbol                TEXT NOT NULL,
    client_order_id       TEXT NOT NULL,
    price                 INTEGER NOT NULL,
    orig_qty              INTEGER NOT NULL,
    orig_quote_qty        INTEGER NOT NULL,
    executed_qty          INTEGER NOT NULL,
    cummulative_quote_qty INTEGER NOT NULL,
    status                TEXT NOT NULL,
    time_in_force         TEXT NOT NULL,
    order_type            TEXT NOT NULL,
    side                  TEXT NOT NULL,
    stop_price            INTEGER NOT NULL,
    time_ms               INTEGER NOT NULL,
    update_time_ms        INTEGER NOT NULL,
    stp_mode              TEXT NOT NULL
);
CREATE INDEX orders_user_symbol_id ON orders (user_id, symbol, order_id);
CREATE INDEX orders_user_symbol_time ON orders (user_id, symbol, time_ms);
CREATE INDEX orders_user_symbol_client ON orders (user_id, symbol, client_order_id);

-- Every change of every order, in journal order.
CREATE TABLE order_events (
    shard                 INTEGER NOT NULL,
    generation            INTEGER NOT NULL,
    lsn                   INTEGER NOT NULL,
    seq                   INTEGER NOT NULL,
    order_id              INTEGER NOT NULL,
    status                TEXT NOT NULL,
    executed_qty          INTEGER NOT NULL,
    cummulative_quote_qty INTEGER NOT NULL,
    update_time_ms        INTEGER NOT NULL,
    PRIMARY KEY (shard, generation, lsn, seq)
);
CREATE INDEX order_events_order ON order_events (order_id);

-- One row per side of a trade.
CREATE TABLE trades (
    symbol            TEXT NOT NULL,
    trade_id          INTEGER NOT NULL,
    is_buyer          INTEGER NOT NULL,
    user_id           INTEGER NOT NULL,
    order_id          INTEGER NOT NULL,
    price             INTEGER NOT NULL,
    qty               INTEGER NOT NULL,
    quote_qty         INTEGER NOT NULL,
    commission        INTEGER NOT NULL,
    commission_asset  TEXT NOT NULL,
    is_maker          INTEGER NOT NULL,
    time_ms           INTEGER NOT NULL,
    PRIMARY KEY (symbol, trade_id, is_buyer)
);
CREATE INDEX trades_user_symbol_id ON trades (user_id, symbol, trade_id, is_buyer);
CREATE INDEX trades_user_symbol_time ON trades (user_id, symbol, time_ms);
CREATE INDEX trades_user_symbol_order ON trades (user_id, symbol, order_id);

-- Double-entry: the entries of one cause and reference sum to zero per
-- asset over all shards.
CREATE TABLE ledger (
    shard       INTEGER NOT NULL,
    generation  INTEGER NOT NULL,
    lsn         INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    account     INTEGER NOT NULL,
    asset       TEXT NOT NULL,
    delta       INTEGER NOT NULL,
    cause       TEXT NOT NULL,
    reference   INTEGER NOT NULL,
    time_ms     INTEGER NOT NULL,
    PRIMARY KEY (shard, generation, lsn, seq)
);
CREATE INDEX ledger_account ON ledger (account, asset, time_ms);
