//! The endpoints: routing by method and path, and the bodies they answer.
//!
//! Each request is routed here after `http` has framed it. Handlers for
//! local data answer at once; `/metrics` gathers from every shard over the
//! mesh. **Invariant:** JSON is produced only here and in `http` (error
//! bodies); the engine never sees it.

pub mod admin;
pub mod market;
pub mod user;

use crate::binance;
use crate::auth;
use crate::http::{self, Head, HttpError, Method, Params, CONTENT_JSON, CONTENT_PROMETHEUS};
use crate::limits::{self, Endpoint, Security, WeightParams};
use crate::server::mesh::{Call, MeshError, Reply as Reply2};
use crate::metrics::{self, Route};
use crate::api::user::{self as rest, RequestRef, RestReply};
use crate::server::shard::Shard;
use crate::trading::user_of_key;
use serde_json::json;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};
use tradsys_engine::market::MarketSpec;
use tradsys_engine::num::write_units;
use tradsys_engine::order::MarketId;


/// What a handler answers.
pub struct Reply {
    pub route: Route,
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Headers,
    pub body: Body,
}

pub enum Headers {
    Static(&'static [&'static str]),
    Owned(Vec<String>),
}

pub enum Body {
    Static(&'static [u8]),
    Owned(Vec<u8>),
}

impl Body {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Body::Static(b) => b,
            Body::Owned(b) => b,
        }
    }
}

impl Reply {
    fn json(route: Route, body: Body) -> Reply {
        Reply {
            route,
            status: 200,
            content_type: CONTENT_JSON,
            headers: Headers::Static(&[]),
            body,
        }
    }

    pub fn error(route: Route, error: &HttpError) -> Reply {
        Reply {
            route,
            status: error.status,
            content_type: CONTENT_JSON,
            headers: Headers::Static(&[]),
            body: Body::Owned(http::error_body(error.code, &error.msg).into_bytes()),
        }
    }

    pub fn rest(route: Route, reply: RestReply) -> Reply {
        Reply {
            route,
            status: reply.status,
            content_type: CONTENT_JSON,
            headers: Headers::Owned(reply.headers),
            body: Body::Owned(reply.body),
        }
    }
}

/// Answers one framed request on the API listener.
pub async fn handle(shard: &Shard, buf: &[u8], head: &Head, peer: IpAddr) -> Reply {
    let path = &buf[head.path.clone()];
    let fixed = match path {
        b"/health" => Some(Route::Health),
        b"/ready" => Some(Route::Ready),
        b"/metrics" => Some(Route::Metrics),
        _ => None,
    };
    if let Some(route) = fixed {
        if !matches!(head.method, Method::Get | Method::Head) {
            let mut reply = Reply::error(
                route,
                &HttpError::new(405, binance::UNSUPPORTED_OPERATION, "Method not allowed; use GET."),
            );
            reply.headers = Headers::Static(&["Allow: GET, HEAD"]);
            return reply;
        }
        return match route {
            Route::Health => Reply::json(route, Body::Static(b"{\"status\":\"ok\"}")),
            Route::Ready => ready(shard),
            _ => gather_metrics(shard).await,
        };
    }
    if !shard.is_ready() {
        return Reply::error(Route::NotFound, &starting());
    }
    match Endpoint::from_request(head.method, path) {
        Some(endpoint) => rest_endpoint(shard, buf, head, endpoint, peer).await,
        None => unknown_path(path),
    }
}

fn unknown_path(path: &[u8]) -> Reply {
    let known = Endpoint::ALL.iter().filter(|e| e.route().1.as_bytes() == path);
    let allowed: Vec<String> = known.map(|e| format!("{:?}", e.route().0).to_uppercase()).collect();
    if allowed.is_empty() {
        let msg = format!("Unknown path {}.", String::from_utf8_lossy(path));
        return Reply::error(Route::NotFound, &HttpError::new(404, binance::UNSUPPORTED_OPERATION, msg));
    }
    let msg = format!("Method not allowed; use {}.", allowed.join(" or "));
    let mut reply = Reply::error(Route::NotFound, &HttpError::new(405, binance::UNSUPPORTED_OPERATION, msg));
    reply.headers = Headers::Owned(vec![format!("Allow: {}", allowed.join(", "))]);
    reply
}

async fn rest_endpoint(shard: &Shard, buf: &[u8], head: &Head, endpoint: Endpoint, peer: IpAddr) -> Reply {
    let route = Route::Api(endpoint);
    let params = match params(shard, buf, head) {
        Ok(p) => p,
        Err(e) => return Reply::error(route, &e),
    };
    let weight = limits::weight(endpoint, &WeightParams::from_params(&params));
    let now = now_ms();
    let usage = match shard.admit_request(peer, weight, now) {
        Ok(usage) => usage,
        Err(e) => return Reply::rest(route, e),
    };
    let req = RequestRef {
        endpoint,
        query: &buf[head.query.clone()],
        body: &buf[head.body.clone()],
        form_body: head.form_body,
        api_key: head.api_key.clone().map(|r| &buf[r]),
        now_ms: now,
    };
    let mut reply = match endpoint {
        Endpoint::Ping => Reply::json(route, Body::Static(b"{}")),
        Endpoint::Time => Reply::json(route, Body::Owned(format!("{{\"serverTime\":{now}}}").into_bytes())),
        Endpoint::ExchangeInfo => exchange_info(shard, &params),
        _ if endpoint.security() == Security::None => Reply::rest(route, market_endpoint(shard, req, &params).await),
        _ => Reply::rest(route, user_endpoint(shard, req, &params).await),
    };
    let header = format!("{}: {}", binance::HEADER_USED_WEIGHT_1M, usage.used_weight_1m);
    match &mut reply.headers {
        Headers::Owned(headers) => headers.push(header),
        Headers::Static(_) => reply.headers = Headers::Owned(vec![header]),
    }
    reply
}

/// A public market request: to the market's shard, or gathered from every
/// shard for the ticker forms without one symbol.
async fn market_endpoint(shard: &Shard, req: RequestRef<'_>, params: &Params<'_>) -> RestReply {
    if params.get("symbol").is_some()
        || !matches!(
            req.endpoint,
            Endpoint::Ticker24hr | Endpoint::TickerPrice | Endpoint::TickerBookTicker
        )
    {
        let market = match rest::market_param(shard, params) {
            Ok(m) => m,
            Err(e) => return RestReply::error(&e),
        };
        let owner = shard.trading().market_shard(market) as usize;
        if owner == shard.index() {
            let reply = rest::market_request_parsed(shard, req, params);
            shard.settle().await;
            return reply;
        }
        return call_rest(shard, owner, req).await;
    }
    if params.get("symbol").is_some() && params.get("symbols").is_some() {
        return RestReply::error(&HttpError::new(
            400,
            binance::OPTIONAL_PARAMS_BAD_COMBO,
            binance::MSG_BAD_COMBINATION,
        ));
    }
    let markets = match ticker_markets(shard, params.get("symbols")) {
        Ok(m) => m,
        Err(e) => return RestReply::error(&e),
    };
    shard.gather_fragments(req, markets).await
}

/// The markets of `symbols=[...]`, or all of them.
fn ticker_markets(shard: &Shard, symbols: Option<&str>) -> Result<Vec<MarketId>, HttpError> {
    let trading = shard.trading();
    let Some(list) = symbols else {
        return Ok((0..trading.specs().len()).map(|m| MarketId(m as u16)).collect());
    };
    let names: Vec<String> = serde_json::from_str(list).map_err(|_| {
        HttpError::new(
            400,
            binance::ILLEGAL_CHARS,
            "Illegal characters found in parameter 'symbols'.",
        )
    })?;
    names
        .iter()
        .map(|n| trading.market(n).ok_or_else(rest::bad_symbol))
        .collect()
}

/// A signed or API-key request: to the shard of the user the key names.
async fn user_endpoint(shard: &Shard, req: RequestRef<'_>, params: &Params<'_>) -> RestReply {
    let malformed = || RestReply::error(&HttpError::new(401, binance::BAD_API_KEY_FMT, "API-key format invalid."));
    let Some(key) = req.api_key else {
        return malformed();
    };
    let well_formed = !key.is_empty() && key.len() <= auth::API_KEY_BYTES_MAX && key.iter().all(u8::is_ascii_graphic);
    if !well_formed {
        return malformed();
    }
    // A well-formed key that names no user was never issued here.
    let Some(user) = user_of_key(key) else {
        return RestReply::error(&HttpError::new(
            401,
            binance::REJECTED_MBX_KEY,
            binance::MSG_REJECTED_KEY,
        ));
    };
    let owner = shard.trading().user_shard(user) as usize;
    if owner == shard.index() {
        let reply = rest::user_request_parsed(shard, req, params).await;
        shard.settle().await;
        return reply;
    }
    call_rest(shard, owner, req).await
}

async fn call_rest(shard: &Shard, owner: usize, req: RequestRef<'_>) -> RestReply {
    shard.metrics_mut().mesh_sent += 1;
    match shard.call(owner, Call::Rest(Box::new(req.to_owned()))).await {
        Ok(Reply2::Rest(reply)) => {
            shard.metrics_mut().mesh_received += 1;
            *reply
        }
        Ok(_) | Err(MeshError::PeerGone(_)) => RestReply::error(&HttpError::new(
            503,
            binance::DISCONNECTED,
            binance::MSG_INTERNAL,
        )),
        Err(MeshError::Overloaded(_)) => RestReply::error(&rest::trading_error(crate::trading::TradingError::Busy)),
    }
}

/// Milliseconds since the Unix epoch, as Binance reports time.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The answer to everything but /health, /ready and /metrics while the
/// shard is still recovering its state.
pub fn starting() -> HttpError {
    HttpError::new(503, binance::SERVICE_SHUTTING_DOWN, "Service starting; try again shortly.")
}

fn ready(shard: &Shard) -> Reply {
    if shard.is_draining() {
        let error = HttpError::new(503, binance::SERVICE_SHUTTING_DOWN, "Service shutting down.");
        return Reply::error(Route::Ready, &error);
    }
    if !shard.is_ready() {
        let error = HttpError::new(503, binance::SERVICE_SHUTTING_DOWN, "Service starting.");
        return Reply::error(Route::Ready, &error);
    }
    Reply::json(Route::Ready, Body::Static(b"{\"status\":\"ready\"}"))
}

async fn gather_metrics(shard: &Shard) -> Reply {
    let mut snapshots = Vec::with_capacity(shard.mesh().shards());
    for peer in 0..shard.mesh().shards() {
        if peer == shard.index() {
            snapshots.push(shard.snapshot());
            continue;
        }
        shard.metrics_mut().mesh_sent += 1;
        match shard.call(peer, Call::Metrics).await {
            Ok(Reply2::Metrics(snapshot)) => {
                shard.metrics_mut().mesh_received += 1;
                snapshots.push(*snapshot);
            }
            Ok(_) | Err(_) => {
                let error = HttpError::new(503, binance::DISCONNECTED, "Metrics unavailable: a shard did not answer.");
                return Reply::error(Route::Metrics, &error);
            }
        }
    }
    Reply {
        content_type: CONTENT_PROMETHEUS,
        ..Reply::json(Route::Metrics, Body::Owned(metrics::render(&snapshots).into_bytes()))
    }
}

/// exchangeInfo, pre-rendered: everything but serverTime is fixed at start.
pub struct ExchangeInfo {
    /// `"rateLimits":[..],"exchangeFilters":[]` with the leading comma.
    limits_json: String,
    /// (symbol, its JSON object) in file order.
    symbols: Vec<(String, String)>,
}

/// Binance's published default request limits, as exchangeInfo shows them.
pub struct RateLimits {
    pub request_weight_per_minute_max: u32,
    pub orders_per_10s_max: u32,
    pub orders_per_day_max: u32,
    pub raw_requests_per_5m_max: u32,
}

pub const RATE_LIMITS_DEFAULT: RateLimits = RateLimits {
    request_weight_per_minute_max: 6000,
    orders_per_10s_max: 100,
    orders_per_day_max: 200_000,
    raw_requests_per_5m_max: 61_000,
};

/// Order types the matching engine accepts, with Binance's names.
const ORDER_TYPES: [&str; 7] = [
    "LIMIT",
    "LIMIT_MAKER",
    "MARKET",
    "STOP_LOSS",
    "STOP_LOSS_LIMIT",
    "TAKE_PROFIT",
    "TAKE_PROFIT_LIMIT",
];
const STP_MODES: [&str; 4] = ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"];

impl ExchangeInfo {
    pub fn new(markets: &[MarketSpec], limits: &RateLimits) -> ExchangeInfo {
        let rate_limits = json!([
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": limits.request_weight_per_minute_max},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": limits.orders_per_10s_max},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": limits.orders_per_day_max},
            {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": limits.raw_requests_per_5m_max},
        ]);
        ExchangeInfo {
            limits_json: format!(",\"rateLimits\":{rate_limits},\"exchangeFilters\":[]"),
            symbols: markets.iter().map(|m| (m.symbol.clone(), symbol_json(m))).collect(),
        }
    }

    /// The full body for the symbols selected (all when `None`).
    fn render(&self, selected: Option<&[usize]>, server_time_ms: u64) -> Vec<u8> {
        let mut out = String::with_capacity(1024 + 1536 * self.symbols.len());
        out.push_str("{\"timezone\":\"UTC\",\"serverTime\":");
        out.push_str(itoa::Buffer::new().format(server_time_ms));
        out.push_str(&self.limits_json);
        out.push_str(",\"symbols\":[");
        let mut first = true;
        let mut push = |json: &str| {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(json);
        };
        match selected {
            Some(indexes) => indexes.iter().for_each(|&i| push(&self.symbols[i].1)),
            None => self.symbols.iter().for_each(|(_, json)| push(json)),
        }
        out.push_str("]}");
        out.into_bytes()
    }

    fn index_of(&self, symbol: &str) -> Option<usize> {
        self.symbols.iter().position(|(s, _)| s == symbol)
    }
}

fn decimal(units: i64) -> String {
    let mut out = String::new();
    write_units(&mut out, units, 8);
    out
}

fn symbol_json(m: &MarketSpec) -> String {
    json!({
        "symbol": m.symbol,
        "status": "TRADING",
        "baseAsset": m.base_asset,
        "baseAssetPrecision": m.base_asset_precision,
        "quoteAsset": m.quote_asset,
        "quotePrecision": m.quote_asset_precision,
        "quoteAssetPrecision": m.quote_asset_precision,
        "baseCommissionPrecision": m.base_asset_precision,
        "quoteCommissionPrecision": m.quote_asset_precision,
        "orderTypes": ORDER_TYPES,
        "icebergAllowed": false,
        "ocoAllowed": false,
        "otoAllowed": false,
        "quoteOrderQtyMarketAllowed": true,
        "allowTrailingStop": false,
        "cancelReplaceAllowed": true,
        "isSpotTradingAllowed": true,
        "isMarginTradingAllowed": false,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": decimal(m.min_price.0), "maxPrice": decimal(m.max_price.0), "tickSize": decimal(m.tick_size.0)},
            {"filterType": "LOT_SIZE", "minQty": decimal(m.min_qty.0), "maxQty": decimal(m.max_qty.0), "stepSize": decimal(m.step_size.0)},
            {"filterType": "NOTIONAL", "minNotional": decimal(m.min_notional.0), "applyMinToMarket": true,
             "maxNotional": decimal(m.max_notional.0), "applyMaxToMarket": false, "avgPriceMins": 5},
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "NONE",
        "allowedSelfTradePreventionModes": STP_MODES,
    })
    .to_string()
}

fn exchange_info(shard: &Shard, params: &Params<'_>) -> Reply {
    let route = Route::Api(Endpoint::ExchangeInfo);
    let info = shard.exchange_info();
    let selected = match select_symbols(info, params.get("symbol"), params.get("symbols")) {
        Ok(s) => s,
        Err(e) => return Reply::error(route, &e),
    };
    Reply::json(route, Body::Owned(info.render(selected.as_deref(), now_ms())))
}

/// The request's parameters: query string first, then a form body.
pub fn params<'a>(shard: &Shard, buf: &'a [u8], head: &Head) -> Result<Params<'a>, HttpError> {
    let body = head.form_body.then(|| &buf[head.body.clone()]);
    Params::parse(&buf[head.query.clone()], body, shard.http_limits().params_count_max)
}

fn select_symbols(
    info: &ExchangeInfo,
    symbol: Option<&str>,
    symbols: Option<&str>,
) -> Result<Option<Vec<usize>>, HttpError> {
    let bad_symbol = || HttpError::new(400, binance::BAD_SYMBOL, binance::MSG_BAD_SYMBOL);
    match (symbol, symbols) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(HttpError::new(
            400,
            binance::OPTIONAL_PARAMS_BAD_COMBO,
            binance::MSG_BAD_COMBINATION,
        )),
        (Some(symbol), None) => Ok(Some(vec![info.index_of(symbol).ok_or_else(bad_symbol)?])),
        (None, Some(list)) => {
            let names: Vec<String> = serde_json::from_str(list).map_err(|_| {
                HttpError::new(
                    400,
                    binance::ILLEGAL_CHARS,
                    "Illegal characters found in parameter 'symbols'; legal range is '[\"SYMBOL\",...]'.",
                )
            })?;
            if names.is_empty() {
                return Err(HttpError::new(400, binance::MANDATORY_PARAM_EMPTY_OR_MALFORMED, "Parameter 'symbols' was empty."));
            }
            names
                .iter()
                .map(|n| info.index_of(n).ok_or_else(bad_symbol))
                .collect::<Result<Vec<_>, _>>()
                .map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> ExchangeInfo {
        let markets = tradsys_engine::market::parse_markets(include_str!("../../shards/markets.toml")).unwrap();
        ExchangeInfo::new(&markets, &RATE_LIMITS_DEFAULT)
    }

    #[test]
    fn selects_symbols() {
        let info = info();
        type Case<'a> = (Option<&'a str>, Option<&'a str>, Result<Option<Vec<usize>>, i32>);
        let table: &[Case] = &[
            (None, None, Ok(None)),
            (Some("ETHBTC"), None, Ok(Some(vec![2]))),
            (None, Some("[\"EURUSD\",\"BTCUSDT\"]"), Ok(Some(vec![3, 0]))),
            (Some("NOPE"), None, Err(binance::BAD_SYMBOL)),
            (None, Some("[\"BTCUSDT\",\"NOPE\"]"), Err(binance::BAD_SYMBOL)),
            (None, Some("BTCUSDT"), Err(binance::ILLEGAL_CHARS)),
            (Some("BTCUSDT"), Some("[\"BTCUSDT\"]"), Err(binance::OPTIONAL_PARAMS_BAD_COMBO)),
        ];
        for (symbol, symbols, expected) in table {
            let got = select_symbols(&info, *symbol, *symbols).map_err(|e| e.code);
            assert_eq!(&got, expected, "{symbol:?} {symbols:?}");
        }
    }

    #[test]
    fn renders_binance_fields() {
        let body = info().render(Some(&[0]), 1_700_000_000_000);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["serverTime"], 1_700_000_000_000u64);
        let s = &v["symbols"][0];
        assert_eq!(s["symbol"], "BTCUSDT");
        assert_eq!(s["filters"][0]["tickSize"], "0.01000000");
        assert_eq!(s["filters"][1]["stepSize"], "0.00001000");
        assert_eq!(s["filters"][2]["minNotional"], "5.00000000");
        assert_eq!(v["rateLimits"][0]["limit"], 6000);
    }
}
