-- tradsys history, PostgreSQL engine, version 2: statistics for people who
-- query the record, as materialized views refreshed CONCURRENTLY by the
-- server on a timer (history_refresh_statistics). Each trade counts once:
-- its buyer's row.

CREATE MATERIALIZED VIEW market_daily_stats AS
SELECT symbol,
       (time_ms / 86400000) * 86400000 AS day_ms,
       count(*) AS trades,
       sum(qty) AS volume,
       sum(quote_qty) AS quote_volume,
       max(price) AS high,
       min(price) AS low,
       min(trade_id) AS first_trade_id,
       max(trade_id) AS last_trade_id
FROM trades WHERE is_buyer
GROUP BY symbol, (time_ms / 86400000) * 86400000
WITH DATA;
CREATE UNIQUE INDEX market_daily_stats_key ON market_daily_stats (symbol, day_ms);

CREATE MATERIALIZED VIEW user_daily_stats AS
SELECT user_id,
       symbol,
       (time_ms / 86400000) * 86400000 AS day_ms,
       count(*) AS trades,
       coalesce(sum(qty) FILTER (WHERE is_buyer), 0) AS bought,
       coalesce(sum(qty) FILTER (WHERE NOT is_buyer), 0) AS sold,
       coalesce(sum(quote_qty) FILTER (WHERE is_buyer), 0) AS quote_spent,
       coalesce(sum(quote_qty) FILTER (WHERE NOT is_buyer), 0) AS quote_received
FROM trades
GROUP BY user_id, symbol, (time_ms / 86400000) * 86400000
WITH DATA;
CREATE UNIQUE INDEX user_daily_stats_key ON user_daily_stats (user_id, symbol, day_ms);

-- The 24 hours before the last refresh.
CREATE MATERIALIZED VIEW market_24h_stats AS
SELECT symbol,
       count(*) AS trades,
       sum(qty) AS volume,
       sum(quote_qty) AS quote_volume,
       max(price) AS high,
       min(price) AS low
FROM trades
WHERE is_buyer AND time_ms >= (extract(epoch FROM now()) * 1000)::bigint - 86400000
GROUP BY symbol
WITH DATA;
CREATE UNIQUE INDEX market_24h_stats_key ON market_24h_stats (symbol);

CREATE MATERIALIZED VIEW user_24h_stats AS
SELECT user_id,
       symbol,
       count(*) AS trades,
       sum(qty) AS volume,
       sum(quote_qty) AS quote_volume
FROM trades
WHERE time_ms >= (extract(epoch FROM now()) * 1000)::bigint - 86400000
GROUP BY user_id, symbol
WITH DATA;
CREATE UNIQUE INDEX user_24h_stats_key ON user_24h_stats (user_id, symbol);
