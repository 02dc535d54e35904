//! JSON of the market-data endpoints: trades, historicalTrades, aggTrades,
//! klines and uiKlines, ticker/24hr and avgPrice, rendered on the market's
//! shard from its `MarketData` (and its book, for bid and ask).
//!
//! Shapes, field names and errors are Binance's: -1120 for an unknown
//! interval, -1128 for fromId with a time range, -1127 for an aggTrades
//! window over an hour. Ids a window has none of print as -1.

use crate::binance;
use crate::http::{HttpError, Params};
use crate::json::JsonWriter;
use crate::limits::Endpoint;
use crate::marketdata::{AggTradesQuery, Interval, MarketData, QueryError, QUERY_ROWS_DEFAULT, QUERY_ROWS_MAX};
use crate::api::user::{limit_param, mandatory};
use crate::server::shard::Shard;
use tradsys_engine::market::MarketSpec;
use tradsys_engine::order::MarketId;

/// Writes `endpoint`'s answer for `market` (owned by this shard) into `w`.
pub fn write(
    shard: &Shard,
    endpoint: Endpoint,
    market: MarketId,
    params: &Params<'_>,
    now_ms: u64,
    w: &mut JsonWriter,
) -> Result<(), HttpError> {
    let data = shard.market_data();
    let data = data[usize::from(market.0)].as_ref().ok_or_else(unavailable)?;
    let trading = shard.trading();
    let spec = trading.spec(market);
    match endpoint {
        Endpoint::Trades => trades(data, params, false, w),
        Endpoint::HistoricalTrades => trades(data, params, true, w),
        Endpoint::AggTrades => agg_trades(data, params, w),
        Endpoint::Klines | Endpoint::UiKlines => klines(data, params, w),
        Endpoint::AvgPrice => {
            let avg = data.avg_price(now_ms);
            w.begin_object().field_uint("mins", crate::marketdata::AVG_PRICE_MINS);
            w.field_decimal("price", avg.map_or(0, |a| a.price.0));
            w.field_uint("closeTime", avg.map_or(now_ms, |a| a.close_time_ms))
                .end_object();
            Ok(())
        }
        Endpoint::Ticker24hr => {
            let book = trading.book(market).ok_or_else(unavailable)?;
            let bid = book.best_bid().map_or((0, 0), |(p, q)| (p.0, q.0));
            let ask = book.best_ask().map_or((0, 0), |(p, q)| (p.0, q.0));
            ticker(data, spec, bid, ask, now_ms, w);
            Ok(())
        }
        other => unreachable!("{other:?} is not a market-data endpoint"),
    }
}

fn unavailable() -> HttpError {
    HttpError::new(
        503,
        binance::DISCONNECTED,
        binance::MSG_INTERNAL,
    )
}

fn u64_param(params: &Params<'_>, name: &str) -> Result<Option<u64>, HttpError> {
    match params.get(name) {
        None | Some("") => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|_| HttpError::new(400, binance::ILLEGAL_CHARS, format!("Illegal characters found in parameter '{name}'."))),
    }
}

/// Recent trades, or (historical) trades from `fromId`. Older ids than the
/// tape keeps are answered from the oldest kept trade.
fn trades(data: &MarketData, params: &Params<'_>, historical: bool, w: &mut JsonWriter) -> Result<(), HttpError> {
    let limit = limit_param(params, QUERY_ROWS_DEFAULT, QUERY_ROWS_MAX)?;
    let from_id = if historical { u64_param(params, "fromId")? } else { None };
    let rows = match from_id {
        None => data.recent(limit),
        Some(id) => match data.from_id(id, limit) {
            Ok(rows) => rows,
            Err(QueryError::NotKept { oldest_kept_id }) => data.from_id(oldest_kept_id, limit).unwrap_or_default(),
            Err(_) => Vec::new(),
        },
    };
    w.begin_array();
    for t in &rows {
        w.begin_object()
            .field_uint("id", t.id)
            .field_decimal("price", t.price.0)
            .field_decimal("qty", t.qty.0);
        w.field_decimal("quoteQty", t.quote_qty.0).field_uint("time", t.time_ms);
        w.field_bool("isBuyerMaker", t.is_buyer_maker)
            .field_bool("isBestMatch", true)
            .end_object();
    }
    w.end_array();
    Ok(())
}

fn agg_trades(data: &MarketData, params: &Params<'_>, w: &mut JsonWriter) -> Result<(), HttpError> {
    let query = AggTradesQuery {
        from_id: u64_param(params, "fromId")?,
        start_time_ms: u64_param(params, "startTime")?,
        end_time_ms: u64_param(params, "endTime")?,
        limit: limit_param(params, QUERY_ROWS_DEFAULT, QUERY_ROWS_MAX)?,
    };
    let rows = match data.agg_trades(&query) {
        Ok(rows) => rows,
        Err(QueryError::CombinationInvalid) => {
            return Err(HttpError::new(
                400,
                binance::OPTIONAL_PARAMS_BAD_COMBO,
                binance::MSG_BAD_COMBINATION,
            ))
        }
        Err(QueryError::WindowTooLong) => {
            return Err(HttpError::new(
                400,
                binance::MORE_THAN_XX_HOURS,
                "More than 1 hours between startTime and endTime.",
            ))
        }
        Err(QueryError::NotKept { .. }) => Vec::new(),
    };
    w.begin_array();
    for a in &rows {
        w.begin_object()
            .field_uint("a", a.id)
            .field_decimal("p", a.price.0)
            .field_decimal("q", a.qty.0);
        w.field_uint("f", a.first_trade_id)
            .field_uint("l", a.last_trade_id)
            .field_uint("T", a.time_ms);
        w.field_bool("m", a.is_buyer_maker).field_bool("M", true).end_object();
    }
    w.end_array();
    Ok(())
}

fn klines(data: &MarketData, params: &Params<'_>, w: &mut JsonWriter) -> Result<(), HttpError> {
    let interval =
        Interval::parse(mandatory(params, "interval")?).map_err(|_| HttpError::new(400, binance::BAD_INTERVAL, "Invalid interval."))?;
    if params
        .get("timeZone")
        .is_some_and(|tz| !matches!(tz, "0" | "+0" | "0:00" | "+00:00" | "00:00"))
    {
        return Err(HttpError::new(
            400,
            binance::ILLEGAL_CHARS,
            "Illegal characters found in parameter 'timeZone'; only UTC (0) is served.",
        ));
    }
    let start = u64_param(params, "startTime")?;
    let end = u64_param(params, "endTime")?;
    let limit = limit_param(params, QUERY_ROWS_DEFAULT, QUERY_ROWS_MAX)?;
    w.begin_array();
    for c in data.klines(interval, start, end, limit) {
        w.begin_array()
            .uint(c.open_time_ms)
            .decimal(c.open.0)
            .decimal(c.high.0)
            .decimal(c.low.0);
        w.decimal(c.close.0)
            .decimal(c.volume.0)
            .uint(c.close_time_ms)
            .decimal(c.quote_volume.0);
        w.uint(c.trade_count)
            .decimal(c.taker_buy_base_volume.0)
            .decimal(c.taker_buy_quote_volume.0)
            .str("0");
        w.end_array();
    }
    w.end_array();
    Ok(())
}

fn id_or_minus_one(id: Option<u64>) -> i64 {
    id.map_or(-1, |i| i as i64)
}

fn ticker(data: &MarketData, spec: &MarketSpec, bid: (i64, i64), ask: (i64, i64), now_ms: u64, w: &mut JsonWriter) {
    let t = data.ticker_24h(now_ms);
    w.begin_object().field_str("symbol", &spec.symbol);
    match &t {
        Some(t) => {
            w.field_decimal("priceChange", t.price_change.0)
                .field_str("priceChangePercent", &t.price_change_percent());
            w.field_decimal("weightedAvgPrice", t.weighted_avg_price.0);
            w.field_decimal("prevClosePrice", t.prev_close_price.0)
                .field_decimal("lastPrice", t.last_price.0);
            w.field_decimal("lastQty", t.last_qty.0);
        }
        None => {
            w.field_decimal("priceChange", 0)
                .field_str("priceChangePercent", "0.000");
            w.field_decimal("weightedAvgPrice", 0)
                .field_decimal("prevClosePrice", 0);
            w.field_decimal("lastPrice", 0).field_decimal("lastQty", 0);
        }
    }
    w.field_decimal("bidPrice", bid.0).field_decimal("bidQty", bid.1);
    w.field_decimal("askPrice", ask.0).field_decimal("askQty", ask.1);
    let open_time = now_ms.saturating_sub(crate::marketdata::TICKER_WINDOW_MS);
    match &t {
        Some(t) => {
            w.field_decimal("openPrice", t.open_price.0)
                .field_decimal("highPrice", t.high_price.0);
            w.field_decimal("lowPrice", t.low_price.0)
                .field_decimal("volume", t.volume.0);
            w.field_decimal("quoteVolume", t.quote_volume.0)
                .field_uint("openTime", t.open_time_ms);
            w.field_uint("closeTime", t.close_time_ms)
                .field_int("firstId", id_or_minus_one(t.first_id));
            w.field_int("lastId", id_or_minus_one(t.last_id))
                .field_uint("count", t.count);
        }
        None => {
            for key in ["openPrice", "highPrice", "lowPrice", "volume", "quoteVolume"] {
                w.field_decimal(key, 0);
            }
            w.field_uint("openTime", open_time).field_uint("closeTime", now_ms);
            w.field_int("firstId", -1)
                .field_int("lastId", -1)
                .field_uint("count", 0);
        }
    }
    w.end_object();
}
