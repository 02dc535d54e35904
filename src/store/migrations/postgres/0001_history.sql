-- tradsys history, PostgreSQL engine, version 1. Money is NUMERIC(38, 8)
-- (exact); times are milliseconds since the Unix epoch; enums are
-- Binance's names. orders, trades and ledger are range-partitioned by
-- month of their time (see history_ensure_partitions). See docs/schema.md.

CREATE TABLE progress (
    shard       INTEGER PRIMARY KEY,
    generation  BIGINT NOT NULL,
    lsn         BIGINT NOT NULL
);

CREATE TABLE users (
    user_id     BIGINT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_ms  BIGINT NOT NULL
);

CREATE TABLE api_keys (
    api_key     TEXT PRIMARY KEY,
    user_id     BIGINT NOT NULL,
    scopes      TEXT NOT NULL,
    revoked     BOOLEAN NOT NULL,
    changed_ms  BIGINT NOT NULL
);
CREATE INDEX api_keys_user ON api_keys (user_id);

CREATE TABLE orders (
    order_id              BIGINT NOT NULL,
    user_id               BIGINT NOT NULL,
    symbol                TEXT NOT NULL,
    client_order_id       TEXT NOT NULL,
    price                 NUMERIC(38, 8) NOT NULL,
    orig_qty              NUMERIC(38, 8) NOT NULL,
    orig_quote_qty        NUMERIC(38, 8) NOT NULL,
    executed_qty          NUMERIC(38, 8) NOT NULL,
    cummulative_quote_qty NUMERIC(38, 8) NOT NULL,
    status                TEXT NOT NULL,
    time_in_force         TEXT NOT NULL,
    order_type            TEXT NOT NULL,
    side                  TEXT NOT NULL,
    stop_price            NUMERIC(38, 8) NOT NULL,
    time_ms               BIGINT NOT NULL,
    update_time_ms        BIGINT NOT NULL,
    stp_mode              TEXT NOT NULL,
    PRIMARY KEY (order_id, time_ms)
) PARTITION BY RANGE (time_ms);
CREATE INDEX orders_user_symbol_id ON orders (user_id, symbol, order_id);
CREATE INDEX orders_user_symbol_time ON orders (user_id, symbol, time_ms);
CREATE INDEX orders_user_symbol_client ON orders (user_id, symbol, client_order_id);

CREATE TABLE order_events (
    shard                 INTEGER NOT NULL,
    generation            BIGINT NOT NULL,
    lsn                   BIGINT NOT NULL,
    seq                   INTEGER NOT NULL,
    order_id              BIGINT NOT NULL,
    status                TEXT NOT NULL,
    executed_qty          NUMERIC(38, 8) NOT NULL,
    cummulative_quote_qty NUMERIC(38, 8) NOT NULL,
    update_time_ms        BIGINT NOT NULL,
    PRIMARY KEY (shard, generation, lsn, seq)
);
CREATE INDEX order_events_order ON order_events (order_id);

CREATE TABLE trades (
    symbol            TEXT NOT NULL,
    trade_id          BIGINT NOT NULL,
    is_buyer          BOOLEAN NOT NULL,
    user_id           BIGINT NOT NULL,
    order_id          BIGINT NOT NULL,
    price             NUMERIC(38, 8) NOT NULL,
    qty               NUMERIC(38, 8) NOT NULL,
    quote_qty         NUMERIC(38, 8) NOT NULL,
    commission        NUMERIC(38, 8) NOT NULL,
    commission_asset  TEXT NOT NULL,
    is_maker          BOOLEAN NOT NULL,
    time_ms           BIGINT NOT NULL,
    PRIMARY KEY (symbol, trade_id, is_buyer, time_ms)
) PARTITION BY RANGE (time_ms);
CREATE INDEX trades_user_symbol_id ON trades (user_id, symbol, trade_id, is_buyer);
CREATE INDEX trades_user_symbol_time ON trades (user_id, symbol, time_ms);
CREATE INDEX trades_user_symbol_order ON trades (user_id, symbol, order_id);

CREATE TABLE ledger (
    shard       INTEGER NOT NULL,
    generation  BIGINT NOT NULL,
    lsn         BIGINT NOT NULL,
    seq         INTEGER NOT NULL,
    account     BIGINT NOT NULL,
    asset       TEXT NOT NULL,
    delta       NUMERIC(38, 8) NOT NULL,
    cause       TEXT NOT NULL,
    reference   BIGINT NOT NULL,
    time_ms     BIGINT NOT NULL,
    PRIMARY KEY (shard, generation, lsn, seq, time_ms)
) PARTITION BY RANGE (time_ms);
CREATE INDEX ledger_account ON ledger (account, asset, time_ms);

-- Rows older than every monthly partition (or too far ahead) land here.
CREATE TABLE orders_default PARTITION OF orders DEFAULT;
CREATE TABLE trades_default PARTITION OF trades DEFAULT;
CREATE TABLE ledger_default PARTITION OF ledger DEFAULT;

-- Creates the monthly partitions of orders, trades and ledger from the
-- month of `from_ms` for `months` months, skipping those that exist.
CREATE FUNCTION history_ensure_partitions(from_ms BIGINT, months INTEGER) RETURNS INTEGER
LANGUAGE plpgsql AS $$
DECLARE
    first_month TIMESTAMPTZ := date_trunc('month', to_timestamp(from_ms / 1000.0) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    month_start TIMESTAMPTZ;
    lo BIGINT;
    hi BIGINT;
    parent TEXT;
    created INTEGER := 0;
BEGIN
    FOR i IN 0 .. months - 1 LOOP
        month_start := first_month + make_interval(months => i);
        lo := (extract(epoch FROM month_start) * 1000)::BIGINT;
        hi := (extract(epoch FROM month_start + INTERVAL '1 month') * 1000)::BIGINT;
        FOREACH parent IN ARRAY ARRAY['orders', 'trades', 'ledger'] LOOP
            IF to_regclass(format('%s_%s', parent, to_char(month_start AT TIME ZONE 'UTC', 'YYYYMM'))) IS NULL THEN
                EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%s) TO (%s)',
                    format('%s_%s', parent, to_char(month_start AT TIME ZONE 'UTC', 'YYYYMM')), parent, lo, hi);
                created := created + 1;
            END IF;
        END LOOP;
    END LOOP;
    RETURN created;
END;
$$;
