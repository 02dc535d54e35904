//! The public market endpoints: depth, trades, historicalTrades,
//! aggTrades, klines and uiKlines, the tickers and avgPrice. Each runs on
//! the market's shard and renders its JSON there, from the book and the
//! market's `MarketData`; the ticker forms over several markets gather one
//! entry per market from the shards that own them.
//!
//! Shapes, field names and errors are Binance's: -1120 for an unknown
//! interval, -1128 for fromId with a time range, -1127 for an aggTrades
//! window over an hour. Ids a window has none of print as -1.

use crate::api::host::Host;
use crate::api::params::{limit_param, market_param, u64_param};
use crate::api::peer::{PeerCall, PeerReply};
use crate::api::request::{from_result, unavailable, RequestRef, RestReply};
use crate::api::user::{DEPTH_LIMIT_DEFAULT, DEPTH_LIMIT_MAX};
use crate::binance;
use crate::endpoint::Endpoint;
use crate::http::{HttpError, Params};
use crate::json::JsonWriter;
use crate::marketdata::{AggTradesQuery, MarketData, QueryError, QUERY_ROWS_DEFAULT, QUERY_ROWS_MAX};
use tradsys_engine::market::MarketSpec;
use tradsys_engine::order::MarketId;

/// A public market request: to the market's shard, or gathered from every
/// shard for the ticker forms without one symbol.
pub(crate) async fn endpoint(shard: &impl Host, req: RequestRef<'_>, params: &Params<'_>) -> RestReply {
    let ticker = matches!(
        req.endpoint,
        Endpoint::Ticker24hr
            | Endpoint::TickerPrice
            | Endpoint::TickerBookTicker
            | Endpoint::TickerRolling
            | Endpoint::TickerTradingDay
    );
    // The rolling and trading-day tickers name their markets; the others
    // answer for every market without.
    let names_markets = matches!(req.endpoint, Endpoint::TickerRolling | Endpoint::TickerTradingDay);
    if names_markets && params.get("symbol").is_none() && params.get("symbols").is_none() {
        return RestReply::error(&HttpError::new(
            400,
            binance::MANDATORY_PARAM_EMPTY_OR_MALFORMED,
            "Parameter 'symbol' or 'symbols' must be sent.",
        ));
    }
    if params.get("symbol").is_some() || !ticker {
        let market = match market_param(shard, params) {
            Ok(m) => m,
            Err(e) => return RestReply::error(&e),
        };
        let elsewhere = shard
            .trading()
            .market_elsewhere(market)
            .map(|(i, owner)| (i, owner.clone()));
        if let Some((instance, owner)) = elsewhere {
            let what = format!("Market {}", shard.trading().spec(market).symbol);
            return crate::api::link::carry(shard, instance, &what, &owner, req).await;
        }
        let owner = shard.trading().market_shard(market) as usize;
        if owner == shard.index() {
            let reply = request_parsed(shard, req, params).await;
            shard.settle().await;
            return reply;
        }
        return crate::api::call_rest(shard, owner, req).await;
    }
    if params.get("symbol").is_some() && params.get("symbols").is_some() {
        return RestReply::error(&HttpError::new(
            400,
            binance::OPTIONAL_PARAMS_BAD_COMBO,
            binance::MSG_BAD_COMBINATION,
        ));
    }
    if req.endpoint == Endpoint::Ticker24hr && params.get("symbols").is_none() {
        return match every_ticker(shard, req, params).await {
            Ok(body) => RestReply::json(body.to_vec()),
            Err(e) => RestReply::error(&e),
        };
    }
    let markets = match ticker_markets(shard, params.get("symbols")) {
        Ok(m) => m,
        Err(e) => return RestReply::error(&e),
    };
    from_result(gather_fragments(shard, req, markets).await)
}

/// The 24 h statistics of every market (FULL or MINI), from the cache:
/// gathering them asks every shard, so one shard does it at most once per
/// `cache_ticker_ttl_ms` (and, with Redis, one instance), and an answer
/// is at most that old.
pub(crate) async fn every_ticker(
    shard: &impl Host,
    req: RequestRef<'_>,
    params: &Params<'_>,
) -> Result<std::rc::Rc<[u8]>, HttpError> {
    // The answer depends on `type` alone: the cache key names it, and the
    // gather sees nothing else.
    let kind = ticker_type(params)?;
    let (name, query): (_, &[u8]) = match kind {
        TickerType::Full => ("ticker24hr", b""),
        TickerType::Mini => ("ticker24hrMini", b"type=MINI"),
    };
    let name = format!("{name}:{}", shard.exchange_info().cache_name());
    let req = RequestRef {
        query,
        body: b"",
        form_body: false,
        ..req
    };
    let markets = ticker_markets(shard, None)?;
    let cache = shard.cache();
    cache
        .get_or_fill(&name, 0, cache.ticker_ttl_ms(), || {
            gather_fragments(shard, req, markets)
        })
        .await
}

/// The markets of `symbols=[...]`, or all of them.
fn ticker_markets(shard: &impl Host, symbols: Option<&str>) -> Result<Vec<MarketId>, HttpError> {
    let trading = shard.trading();
    let Some(list) = symbols else {
        return Ok((0..trading.specs().len()).map(|m| MarketId(m as u16)).collect());
    };
    crate::api::params::symbols_markets(&trading, list)
}

/// Why a request for `market` is not answered here: another instance of
/// the cluster owns it.
pub(crate) fn remote_market(shard: &impl Host, market: MarketId) -> Option<HttpError> {
    let trading = shard.trading();
    let (_, instance) = trading.market_elsewhere(market)?;
    let symbol = &trading.specs()[usize::from(market.0)].symbol;
    Some(crate::api::request::elsewhere(&format!("Market {symbol}"), instance))
}

/// A ticker-style endpoint over several markets: each market's entry is
/// rendered on its shard, joined here in the order asked.
async fn gather_fragments(
    shard: &impl Host,
    req: RequestRef<'_>,
    markets: Vec<MarketId>,
) -> Result<Vec<u8>, HttpError> {
    let mut entries: Vec<(MarketId, Vec<u8>)> = Vec::with_capacity(markets.len());
    // Other instances' markets first: one carried request each.
    let instances = shard.trading().cluster_place().map_or(0, |p| p.map.instances.len());
    for instance in 0..instances {
        let theirs: Vec<MarketId> = markets
            .iter()
            .copied()
            .filter(|&m| shard.trading().market_elsewhere(m).is_some_and(|(i, _)| i == instance))
            .collect();
        if !theirs.is_empty() {
            entries.extend(remote_fragments(shard, req, instance, &theirs).await?);
        }
    }
    for peer in 0..shard.shards() {
        let owned: Vec<MarketId> = markets
            .iter()
            .copied()
            .filter(|&m| shard.trading().market_elsewhere(m).is_none())
            .filter(|&m| shard.trading().market_shard(m) as usize == peer)
            .collect();
        if owned.is_empty() {
            continue;
        }
        if peer == shard.index() {
            entries.extend(local_fragments(shard, req, &owned)?);
            shard.settle().await;
            continue;
        }
        let call = PeerCall::Fragments {
            request: Box::new(req.to_request()),
            markets: owned,
        };
        match shard.call(peer, call).await {
            Ok(PeerReply::Fragments(part)) => entries.extend(part),
            _ => return Err(unavailable()),
        }
    }
    let mut body = Vec::with_capacity(2 + entries.iter().map(|(_, e)| e.len() + 1).sum::<usize>());
    body.push(b'[');
    for (i, market) in markets.iter().enumerate() {
        if let Some((_, entry)) = entries.iter().find(|(m, _)| m == market) {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(entry);
        }
    }
    body.push(b']');
    Ok(body)
}

/// The entries of `markets`, all of instance `instance`, asked of it with
/// the same request naming them in `symbols` (their order).
async fn remote_fragments(
    shard: &impl Host,
    req: RequestRef<'_>,
    instance: usize,
    markets: &[MarketId],
) -> Result<Vec<(MarketId, Vec<u8>)>, HttpError> {
    let (query, what, owner) = {
        let trading = shard.trading();
        let names: Vec<String> = markets
            .iter()
            .map(|&m| format!("%22{}%22", trading.spec(m).symbol))
            .collect();
        let mut query: Vec<&[u8]> = req
            .query
            .split(|&b| b == b'&')
            .filter(|p| !p.is_empty() && !p.starts_with(b"symbol=") && !p.starts_with(b"symbols="))
            .collect();
        let symbols = format!("symbols=%5B{}%5D", names.join(","));
        query.push(symbols.as_bytes());
        let owner = trading.cluster_place().map(|p| p.map.instances[instance].clone());
        let what = format!("Market {}", trading.spec(markets[0]).symbol);
        (query.join(&b'&'), what, owner)
    };
    let Some(owner) = owner else {
        return Err(unavailable());
    };
    let request = crate::api::request::RestRequest {
        now_ms: req.now_ms,
        ..crate::api::request::RestRequest::public(req.endpoint, query)
    };
    let reply = shard
        .call_instance(instance, crate::api::link::Carried::Rest(request))
        .await
        .map_err(|e| crate::api::link::carried_error(&what, &owner, e))?;
    if reply.status != 200 {
        let error: serde_json::Value = serde_json::from_slice(&reply.body).unwrap_or_default();
        let code = error["code"].as_i64().unwrap_or(i64::from(binance::DISCONNECTED)) as i32;
        let msg = error["msg"].as_str().unwrap_or(binance::MSG_INTERNAL).to_string();
        return Err(HttpError::new(reply.status, code, msg));
    }
    let elements = crate::json::array_elements(&reply.body).ok_or_else(unavailable)?;
    if elements.len() != markets.len() {
        return Err(unavailable());
    }
    Ok(markets
        .iter()
        .copied()
        .zip(elements.into_iter().map(<[u8]>::to_vec))
        .collect())
}

/// The entries of `markets` (owned here) of a ticker-style endpoint.
pub(crate) fn local_fragments(
    shard: &impl Host,
    req: RequestRef<'_>,
    markets: &[MarketId],
) -> Result<Vec<(MarketId, Vec<u8>)>, HttpError> {
    let params = Params::parse(req.query, None, shard.http_limits().params_count_max)?;
    markets
        .iter()
        .map(|&market| {
            let mut w = JsonWriter::with_capacity(512);
            fragment(shard, req.endpoint, market, &params, req.now_ms, &mut w)?;
            Ok((market, w.into_bytes()))
        })
        .collect()
}

/// Writes `endpoint`'s answer for `market` (owned by this shard) into `w`.
pub(crate) fn write(
    shard: &impl Host,
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
        Endpoint::AvgPrice => {
            let avg = data.avg_price(now_ms);
            w.begin_object().field_uint("mins", crate::marketdata::AVG_PRICE_MINS);
            w.field_decimal("price", avg.map_or(0, |a| a.price.0));
            w.field_uint("closeTime", avg.map_or(now_ms, |a| a.close_time_ms))
                .end_object();
            Ok(())
        }
        Endpoint::Ticker24hr if ticker_type(params)? == TickerType::Mini => {
            let open_minute = now_ms.saturating_sub(crate::marketdata::TICKER_WINDOW_MS) / 60_000;
            window_ticker(data, spec, open_minute, TickerType::Mini, now_ms, w);
            Ok(())
        }
        Endpoint::Ticker24hr => {
            let book = trading.book(market).ok_or_else(unavailable)?;
            let bid = book.best_bid().map_or((0, 0), |(p, q)| (p.0, q.0));
            let ask = book.best_ask().map_or((0, 0), |(p, q)| (p.0, q.0));
            ticker(data, spec, bid, ask, now_ms, w);
            Ok(())
        }
        Endpoint::TickerRolling => {
            let kind = ticker_type(params)?;
            let window_ms = window_size_ms(params.get("windowSize"))?;
            let open_minute = now_ms.saturating_sub(window_ms) / 60_000;
            window_ticker(data, spec, open_minute, kind, now_ms, w);
            Ok(())
        }
        Endpoint::TickerTradingDay => {
            let kind = ticker_type(params)?;
            utc_only(params.get("timeZone"))?;
            let day_start_ms = now_ms - now_ms % crate::marketdata::TICKER_WINDOW_MS;
            window_ticker(data, spec, day_start_ms / 60_000, kind, now_ms, w);
            Ok(())
        }
        other => unreachable!("{other:?} is not a market-data endpoint"),
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

/// The `type` of a ticker request: `FULL` (default) or `MINI`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TickerType {
    Full,
    Mini,
}

fn ticker_type(params: &Params<'_>) -> Result<TickerType, HttpError> {
    match params.get("type") {
        None | Some("FULL") => Ok(TickerType::Full),
        Some("MINI") => Ok(TickerType::Mini),
        Some(_) => Err(HttpError::new(
            400,
            binance::INVALID_TICKER_TYPE,
            "Invalid ticker type.",
        )),
    }
}

/// A rolling ticker's `windowSize` (`1m`..`59m`, `1h`..`23h`, `1d`), in
/// ms; default one day. Binance also takes `2d`..`7d`; tradsys keeps one
/// day of minute statistics and refuses those rather than answer for less.
fn window_size_ms(text: Option<&str>) -> Result<u64, HttpError> {
    const MINUTE_MS: u64 = 60_000;
    let Some(text) = text else {
        return Ok(crate::marketdata::TICKER_WINDOW_MS);
    };
    let invalid = || {
        HttpError::new(
            400,
            binance::ILLEGAL_CHARS,
            "Invalid windowSize; tradsys serves 1m to 59m, 1h to 23h and 1d.",
        )
    };
    // By characters: the text is the client's, and may end in any one.
    let mut chars = text.chars();
    let unit = chars.next_back().ok_or_else(invalid)?;
    let count: u64 = chars.as_str().parse().map_err(|_| invalid())?;
    let ms = match (unit, count) {
        ('m', 1..=59) => count * MINUTE_MS,
        ('h', 1..=23) => count * 60 * MINUTE_MS,
        ('d', 1) => crate::marketdata::TICKER_WINDOW_MS,
        _ => return Err(invalid()),
    };
    Ok(ms)
}

/// tradsys's days are UTC days, as its klines are.
fn utc_only(time_zone: Option<&str>) -> Result<(), HttpError> {
    match time_zone {
        None | Some("0") | Some("+0") | Some("-0") | Some("0:00") | Some("+0:00") => Ok(()),
        Some(_) => Err(HttpError::new(
            400,
            binance::ILLEGAL_CHARS,
            "Illegal characters found in parameter 'timeZone'; tradsys serves UTC (0) only.",
        )),
    }
}

/// The rolling or trading-day ticker from `open_minute` to `now_ms`, with
/// Binance's FULL or MINI fields.
fn window_ticker(
    data: &MarketData,
    spec: &MarketSpec,
    open_minute: u64,
    kind: TickerType,
    now_ms: u64,
    w: &mut JsonWriter,
) {
    let t = data.ticker_since(open_minute, now_ms);
    w.begin_object().field_str("symbol", &spec.symbol);
    if kind == TickerType::Full {
        let (change, percent, weighted) = t.as_ref().map_or((0, "0.000".to_string(), 0), |t| {
            (t.price_change.0, t.price_change_percent(), t.weighted_avg_price.0)
        });
        w.field_decimal("priceChange", change)
            .field_str("priceChangePercent", &percent)
            .field_decimal("weightedAvgPrice", weighted);
    }
    let t = t.as_ref();
    w.field_decimal("openPrice", t.map_or(0, |t| t.open_price.0))
        .field_decimal("highPrice", t.map_or(0, |t| t.high_price.0));
    w.field_decimal("lowPrice", t.map_or(0, |t| t.low_price.0))
        .field_decimal("lastPrice", t.map_or(0, |t| t.last_price.0));
    w.field_decimal("volume", t.map_or(0, |t| t.volume.0))
        .field_decimal("quoteVolume", t.map_or(0, |t| t.quote_volume.0));
    w.field_uint("openTime", t.map_or(open_minute * 60_000, |t| t.open_time_ms))
        .field_uint("closeTime", now_ms);
    w.field_int("firstId", id_or_minus_one(t.and_then(|t| t.first_id)))
        .field_int("lastId", id_or_minus_one(t.and_then(|t| t.last_id)))
        .field_uint("count", t.map_or(0, |t| t.count))
        .end_object();
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

/// Runs a public request about one market owned by this shard.
pub(crate) async fn request(shard: &impl Host, req: RequestRef<'_>) -> RestReply {
    match req.params(shard) {
        Ok(params) => request_parsed(shard, req, &params).await,
        Err(e) => RestReply::error(&e),
    }
}

/// `market_request` with the parameters already parsed (by the connection's
/// shard, when it owns the market).
pub(crate) async fn request_parsed(shard: &impl Host, req: RequestRef<'_>, params: &Params<'_>) -> RestReply {
    let market = match market_param(shard, params) {
        Ok(market) => market,
        Err(e) => return RestReply::error(&e),
    };
    let result = match req.endpoint {
        Endpoint::Depth => depth(shard, params, market),
        // Boxed: the store walk is a deep future that most requests
        // never reach, kept out of every connection's future.
        Endpoint::Klines | Endpoint::UiKlines => Box::pin(crate::api::klines::answer(shard, market, params)).await,
        _ => {
            let mut w = JsonWriter::with_capacity(512);
            fragment(shard, req.endpoint, market, params, req.now_ms, &mut w).map(|()| w.into_bytes())
        }
    };
    from_result(result)
}

/// One market's entry of a ticker-style endpoint; with several markets the
/// connection shard joins the entries into an array.
pub(crate) fn fragment(
    shard: &impl Host,
    endpoint: Endpoint,
    market: MarketId,
    params: &Params<'_>,
    now_ms: u64,
    w: &mut JsonWriter,
) -> Result<(), HttpError> {
    let trading = shard.trading();
    let book = trading.book(market).ok_or_else(unavailable)?;
    let spec = trading.spec(market);
    match endpoint {
        Endpoint::TickerPrice => {
            w.begin_object().field_str("symbol", &spec.symbol);
            w.field_decimal("price", book.last_price().map_or(0, |p| p.0))
                .end_object();
        }
        Endpoint::TickerBookTicker => {
            let (bid, bid_qty) = book.best_bid().map_or((0, 0), |(p, q)| (p.0, q.0));
            let (ask, ask_qty) = book.best_ask().map_or((0, 0), |(p, q)| (p.0, q.0));
            w.begin_object()
                .field_str("symbol", &spec.symbol)
                .field_decimal("bidPrice", bid);
            w.field_decimal("bidQty", bid_qty)
                .field_decimal("askPrice", ask)
                .field_decimal("askQty", ask_qty);
            w.end_object();
        }
        _ => write(shard, endpoint, market, params, now_ms, w)?,
    }
    Ok(())
}

fn depth(shard: &impl Host, params: &Params<'_>, market: MarketId) -> Result<Vec<u8>, HttpError> {
    let limit = limit_param(params, DEPTH_LIMIT_DEFAULT, DEPTH_LIMIT_MAX)?;
    let trading = shard.trading();
    let book = trading.book(market).ok_or_else(unavailable)?;
    let (mut bids, mut asks) = (Vec::new(), Vec::new());
    let update_id = book.depth(limit, &mut bids, &mut asks);
    let mut w = JsonWriter::with_capacity(64 + 48 * (bids.len() + asks.len()));
    w.begin_object().field_uint("lastUpdateId", update_id);
    for (name, side) in [("bids", &bids), ("asks", &asks)] {
        w.key(name).begin_array();
        for (price, qty) in side.iter() {
            w.begin_array().decimal(price.0).decimal(qty.0).end_array();
        }
        w.end_array();
    }
    w.end_object();
    Ok(w.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_sizes_are_read_by_character() {
        assert_eq!(window_size_ms(Some("1m")), Ok(60_000));
        assert_eq!(window_size_ms(Some("23h")), Ok(23 * 3_600_000));
        assert_eq!(window_size_ms(Some("1d")), Ok(86_400_000));
        // Refused, never a panic: a unit that is not ASCII, an empty text,
        // a count without a unit.
        for bad in ["\u{4fd3e}", "1\u{4fd3e}", "", "m", "60m", "7", "1é"] {
            assert_eq!(
                window_size_ms(Some(bad)).map_err(|e| (e.status, e.code)),
                Err((400, binance::ILLEGAL_CHARS)),
                "{bad:?}"
            );
        }
    }
}
