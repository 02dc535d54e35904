//! exchangeInfo: each market's object rendered once at start-up, the
//! whole body (but serverTime) cached per halt state, and filtered by
//! `symbol` or `symbols`.
//!
//! A halted market's `status` is `HALT`. The full list is cached (see
//! `cache`) under a name that fingerprints the markets and limits (so
//! instances with other markets never share it) at a version that
//! fingerprints which markets are halted: a halt changes the version, and
//! the shard that answers the halt publishes it.

use crate::api::host::Host;
use crate::api::{Body, Reply};
use crate::binance;
use crate::endpoint::Endpoint;
use crate::http::{HttpError, Params};
use crate::limits::RateLimits;
use crate::metrics::Route;
use serde_json::json;
use tradsys_engine::market::MarketSpec;
use tradsys_engine::num::write_units;

/// exchangeInfo, pre-rendered: everything but serverTime is fixed at start.
pub(crate) struct ExchangeInfo {
    /// The limits it publishes, for the WebSocket API's `rateLimits`.
    pub(crate) limits: RateLimits,
    /// `"rateLimits":[..],"exchangeFilters":[]` with the leading comma.
    limits_json: String,
    /// (symbol, its JSON object) in file order.
    symbols: Vec<(String, String)>,
    /// The cache name of the full list: fingerprints the markets and
    /// limits.
    cache_name: String,
}

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
    pub(crate) fn new(markets: &[MarketSpec], limits: &RateLimits) -> ExchangeInfo {
        let rate_limits = json!([
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": limits.request_weight_per_minute_max},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": limits.orders_per_10s_max},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": limits.orders_per_day_max},
            {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": limits.raw_requests_per_5m_max},
        ]);
        let limits_json = format!(",\"rateLimits\":{rate_limits},\"exchangeFilters\":[]");
        let symbols: Vec<(String, String)> = markets.iter().map(|m| (m.symbol.clone(), symbol_json(m))).collect();
        let mut fingerprint = fnv1a(FNV_OFFSET, limits_json.as_bytes());
        for (_, json) in &symbols {
            fingerprint = fnv1a(fingerprint, json.as_bytes());
        }
        ExchangeInfo {
            limits: *limits,
            limits_json,
            symbols,
            cache_name: format!("exchangeInfo:{fingerprint:016x}"),
        }
    }

    /// The cache name of the full list, and of what else depends only on
    /// the markets (their fingerprint).
    pub(crate) fn cache_name(&self) -> &str {
        &self.cache_name
    }

    /// The full body for the symbols selected (all when `None`).
    fn render(&self, selected: Option<&[usize]>, halted: &[bool], server_time_ms: u64) -> Vec<u8> {
        let mut out = head(server_time_ms);
        out.extend_from_slice(self.render_tail(selected, halted).as_bytes());
        out
    }

    /// Everything after serverTime.
    fn render_tail(&self, selected: Option<&[usize]>, halted: &[bool]) -> String {
        let mut out = String::with_capacity(1024 + 1536 * self.symbols.len());
        out.push_str(&self.limits_json);
        out.push_str(",\"symbols\":[");
        let mut first = true;
        let mut push = |i: usize| {
            if !first {
                out.push(',');
            }
            first = false;
            let json = &self.symbols[i].1;
            match halted.get(i) {
                Some(true) => out.push_str(&json.replacen(STATUS_TRADING, STATUS_HALT, 1)),
                _ => out.push_str(json),
            }
        };
        match selected {
            Some(indexes) => indexes.iter().for_each(|&i| push(i)),
            None => (0..self.symbols.len()).for_each(&mut push),
        }
        out.push_str("]}");
        out
    }

    fn index_of(&self, symbol: &str) -> Option<usize> {
        self.symbols.iter().position(|(s, _)| s == symbol)
    }
}

const STATUS_TRADING: &str = "\"status\":\"TRADING\"";
const STATUS_HALT: &str = "\"status\":\"HALT\"";
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The body up to and with serverTime.
fn head(server_time_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"{\"timezone\":\"UTC\",\"serverTime\":");
    out.extend_from_slice(itoa::Buffer::new().format(server_time_ms).as_bytes());
    out
}

/// Which markets are halted, by market index.
pub(crate) fn halted(shard: &impl Host) -> Vec<bool> {
    let trading = shard.trading();
    (0..trading.specs().len())
        .map(|m| trading.is_halted(tradsys_engine::order::MarketId(m as u16)))
        .collect()
}

/// The cache version of the full list: which markets are halted.
pub(crate) fn version(halted: &[bool]) -> u64 {
    let bits: Vec<u8> = halted.iter().map(|&h| u8::from(h)).collect();
    fnv1a(FNV_OFFSET, &bits)
}

/// Everything after serverTime of the full list, from the cache.
pub(crate) async fn all_symbols(shard: &impl Host) -> Result<std::rc::Rc<[u8]>, HttpError> {
    let info = shard.exchange_info();
    let halted = halted(shard);
    let cache = shard.cache();
    let fill = || async { Ok(info.render_tail(None, &halted).into_bytes()) };
    cache
        .get_or_fill(info.cache_name(), version(&halted), cache.ttl_ms(), fill)
        .await
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
        "icebergAllowed": true,
        "ocoAllowed": true,
        "otoAllowed": true,
        "quoteOrderQtyMarketAllowed": true,
        "allowTrailingStop": true,
        "pegInstructionsAllowed": false,
        "cancelReplaceAllowed": true,
        "amendAllowed": true,
        "isSpotTradingAllowed": true,
        "isMarginTradingAllowed": false,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": decimal(m.min_price.0), "maxPrice": decimal(m.max_price.0), "tickSize": decimal(m.tick_size.0)},
            {"filterType": "LOT_SIZE", "minQty": decimal(m.min_qty.0), "maxQty": decimal(m.max_qty.0), "stepSize": decimal(m.step_size.0)},
            {"filterType": "ICEBERG_PARTS", "limit": tradsys_engine::account::ICEBERG_PARTS_MAX},
            {"filterType": "TRAILING_DELTA",
             "minTrailingAboveDelta": tradsys_engine::account::TRAILING_DELTA_MIN,
             "maxTrailingAboveDelta": tradsys_engine::account::TRAILING_DELTA_MAX,
             "minTrailingBelowDelta": tradsys_engine::account::TRAILING_DELTA_MIN,
             "maxTrailingBelowDelta": tradsys_engine::account::TRAILING_DELTA_MAX},
            {"filterType": "NOTIONAL", "minNotional": decimal(m.min_notional.0), "applyMinToMarket": true,
             "maxNotional": decimal(m.max_notional.0), "applyMaxToMarket": false, "avgPriceMins": 5},
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": tradsys_engine::account::OPEN_ORDERS_PER_USER_MARKET_MAX},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": tradsys_engine::account::ALGO_ORDERS_PER_USER_MARKET_MAX},
            {"filterType": "MAX_NUM_ICEBERG_ORDERS", "maxNumIcebergOrders": tradsys_engine::account::ICEBERG_ORDERS_PER_USER_MARKET_MAX},
            {"filterType": "MAX_NUM_ORDER_AMENDS", "maxNumOrderAmends": tradsys_engine::account::AMENDS_PER_ORDER_MAX},
            {"filterType": "MAX_NUM_ORDER_LISTS", "maxNumOrderLists": tradsys_engine::account::ORDER_LISTS_PER_USER_MARKET_MAX},
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "NONE",
        "allowedSelfTradePreventionModes": STP_MODES,
    })
    .to_string()
}

pub(crate) async fn exchange_info(shard: &impl Host, params: &Params<'_>) -> Reply {
    let route = Route::Api(Endpoint::ExchangeInfo);
    let info = shard.exchange_info();
    let selected = match select_symbols(info, params.get("symbol"), params.get("symbols")) {
        Ok(s) => s,
        Err(e) => return Reply::error(route, &e),
    };
    let now_ms = crate::clock::now_ms();
    let Some(selected) = selected else {
        return match all_symbols(shard).await {
            Ok(tail) => {
                let mut body = head(now_ms);
                body.extend_from_slice(&tail);
                Reply::json(route, Body::Owned(body))
            }
            Err(e) => Reply::error(route, &e),
        };
    };
    Reply::json(route, Body::Owned(info.render(Some(&selected), &halted(shard), now_ms)))
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
                return Err(HttpError::new(
                    400,
                    binance::MANDATORY_PARAM_EMPTY_OR_MALFORMED,
                    "Parameter 'symbols' was empty.",
                ));
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
        ExchangeInfo::new(&markets, &crate::limits::RATE_LIMITS_DEFAULT)
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
            (
                Some("BTCUSDT"),
                Some("[\"BTCUSDT\"]"),
                Err(binance::OPTIONAL_PARAMS_BAD_COMBO),
            ),
        ];
        for (symbol, symbols, expected) in table {
            let got = select_symbols(&info, *symbol, *symbols).map_err(|e| e.code);
            assert_eq!(&got, expected, "{symbol:?} {symbols:?}");
        }
    }

    #[test]
    fn renders_binance_fields() {
        let body = info().render(Some(&[0]), &[], 1_700_000_000_000);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["serverTime"], 1_700_000_000_000u64);
        let s = &v["symbols"][0];
        assert_eq!(s["symbol"], "BTCUSDT");
        assert_eq!(s["filters"][0]["tickSize"], "0.01000000");
        assert_eq!(s["filters"][1]["stepSize"], "0.00001000");
        assert_eq!(s["filters"][2]["limit"], 10);
        assert_eq!(s["filters"][3]["filterType"], "TRAILING_DELTA");
        assert_eq!(s["filters"][4]["minNotional"], "5.00000000");
        assert_eq!(v["rateLimits"][0]["limit"], 6000);
        assert_eq!(s["status"], "TRADING");
    }

    #[test]
    fn a_halted_market_is_halt_and_changes_the_version() {
        let info = info();
        let body = info.render(None, &[false, true], 0);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let statuses: Vec<&str> = v["symbols"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["status"].as_str().unwrap())
            .collect();
        assert_eq!(statuses[..3], ["TRADING", "HALT", "TRADING"]);
        assert_ne!(version(&[false, true]), version(&[false, false]));
        assert_ne!(version(&[true, false]), version(&[false, true]));
        // The name fingerprints the markets and limits, not the halts.
        assert!(info.cache_name().starts_with("exchangeInfo:"));
        let other = ExchangeInfo::new(&[], &crate::limits::RATE_LIMITS_DEFAULT);
        assert_ne!(info.cache_name(), other.cache_name());
    }
}
