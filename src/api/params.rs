//! Parameter parsing with Binance's codes: -1102 for a mandatory parameter
//! missing, -1100 for a malformed value, -1121 for an unknown symbol,
//! -1115/-1116/-1117 for bad enum values.

use crate::api::host::Host;
use crate::binance;
use crate::http::{HttpError, Params};
use tradsys_engine::account::OrderRef;
use tradsys_engine::num::{parse_units, Amount, Price, Qty};
use tradsys_engine::order::{ClientOrderId, MarketId, OrderQty, OrderRequest, OrderType, Side, StpMode, TimeInForce};

pub(crate) fn mandatory<'a>(params: &'a Params<'a>, name: &str) -> Result<&'a str, HttpError> {
    match params.get(name) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(HttpError::new(
            400,
            binance::MANDATORY_PARAM_EMPTY_OR_MALFORMED,
            format!("Mandatory parameter '{name}' was not sent, was empty/null, or malformed."),
        )),
    }
}

pub(crate) fn malformed(name: &str) -> HttpError {
    HttpError::new(
        400,
        binance::ILLEGAL_CHARS,
        format!("Illegal characters found in parameter '{name}'."),
    )
}

/// The market named by `symbol` (mandatory).
pub(crate) fn market_param(shard: &impl Host, params: &Params<'_>) -> Result<MarketId, HttpError> {
    let symbol = mandatory(params, "symbol")?;
    shard.trading().market(symbol).ok_or_else(bad_symbol)
}

pub(crate) fn bad_symbol() -> HttpError {
    HttpError::new(400, binance::BAD_SYMBOL, binance::MSG_BAD_SYMBOL)
}

/// The markets a `symbols` parameter names: a JSON array of symbols, in
/// its order.
pub(crate) fn symbols_markets(trading: &crate::trading::Trading, list: &str) -> Result<Vec<MarketId>, HttpError> {
    let names: Vec<String> = serde_json::from_str(list).map_err(|_| malformed("symbols"))?;
    names.iter().map(|n| trading.market(n).ok_or_else(bad_symbol)).collect()
}

pub(crate) fn decimal_param(params: &Params<'_>, name: &str) -> Result<Option<i64>, HttpError> {
    match params.get(name) {
        None | Some("") => Ok(None),
        Some(text) => parse_units(text).map(Some).map_err(|_| malformed(name)),
    }
}

pub(crate) fn u64_param(params: &Params<'_>, name: &str) -> Result<Option<u64>, HttpError> {
    match params.get(name) {
        None | Some("") => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| malformed(name)),
    }
}

/// `limit` within 1..=max, `default` when absent.
pub(crate) fn limit_param(params: &Params<'_>, default: usize, max: usize) -> Result<usize, HttpError> {
    match u64_param(params, "limit")? {
        None => Ok(default),
        Some(0) => Err(HttpError::new(
            400,
            binance::ILLEGAL_CHARS,
            "Illegal characters found in parameter 'limit'.",
        )),
        Some(n) => Ok((n as usize).min(max)),
    }
}

pub(crate) fn enum_param<T>(
    params: &Params<'_>,
    name: &str,
    parse: fn(&str) -> Option<T>,
    code: i32,
    msg: &str,
) -> Result<Option<T>, HttpError> {
    match params.get(name) {
        None | Some("") => Ok(None),
        Some(text) => parse(text)
            .map(Some)
            .ok_or_else(|| HttpError::new(400, code, msg.to_string())),
    }
}

pub(crate) fn client_id_param(params: &Params<'_>, name: &str) -> Result<Option<ClientOrderId>, HttpError> {
    match params.get(name) {
        None | Some("") => Ok(None),
        Some(text) => {
            let legal = text.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:/-".contains(&b));
            if !legal {
                return Err(malformed(name));
            }
            ClientOrderId::new(text).map(Some).ok_or_else(|| malformed(name))
        }
    }
}

/// Order parameters of Binance's that tradsys does not implement, with the
/// refusal Binance gives a symbol without them (exchangeInfo says
/// `pegInstructionsAllowed` is false): an order carrying one is refused,
/// never placed as a plain order.
const UNSUPPORTED_ORDER_PARAMS: [(&str, &str); 3] = [
    ("pegPriceType", PEGS_REFUSED),
    ("pegOffsetValue", PEGS_REFUSED),
    ("pegOffsetType", PEGS_REFUSED),
];
const PEGS_REFUSED: &str = "Pegged orders are not supported for this symbol.";

/// Binance's order parameters that tradsys neither stores nor acts on:
/// `strategyId` and `strategyType` (tags Binance echoes back),
/// `cancelRestrictions` and `orderRateLimitExceededMode`. A request
/// carrying one is refused rather than run as if it had not been sent.
pub(crate) const ORDER_PARAMS_NOT_TAKEN: [&str; 4] = [
    "strategyId",
    "strategyType",
    "cancelRestrictions",
    "orderRateLimitExceededMode",
];

/// Refuses a request that carries one of `names` (-1106), naming it.
pub(crate) fn refuse_not_taken(params: &Params<'_>, names: &[&str]) -> Result<(), HttpError> {
    match names
        .iter()
        .find(|name| params.get(name).is_some_and(|v| !v.is_empty()))
    {
        Some(name) => Err(HttpError::new(
            400,
            binance::PARAM_NOT_REQUIRED,
            format!("Parameter '{name}' sent when not required."),
        )),
        None => Ok(()),
    }
}

/// The order a new-order request describes, checked for form only; the
/// account machine checks filters and funds.
pub(crate) fn order_request(shard: &impl Host, params: &Params<'_>) -> Result<OrderRequest, HttpError> {
    let market = market_param(shard, params)?;
    for (name, refusal) in UNSUPPORTED_ORDER_PARAMS {
        if params.get(name).is_some_and(|v| !v.is_empty()) {
            return Err(HttpError::new(400, binance::NEW_ORDER_REJECTED, refusal));
        }
    }
    refuse_not_taken(params, &ORDER_PARAMS_NOT_TAKEN)?;
    let side = enum_param(params, "side", Side::parse, binance::INVALID_SIDE, "Invalid side.")?;
    let side = side.ok_or_else(|| mandatory(params, "side").unwrap_err())?;
    let kind = enum_param(
        params,
        "type",
        OrderType::parse,
        binance::INVALID_ORDER_TYPE,
        "Invalid orderType.",
    )?;
    let kind = kind.ok_or_else(|| mandatory(params, "type").unwrap_err())?;
    let time_in_force = enum_param(
        params,
        "timeInForce",
        TimeInForce::parse,
        binance::INVALID_TIME_IN_FORCE,
        "Invalid timeInForce.",
    )?;
    let stp = enum_param(
        params,
        "selfTradePreventionMode",
        StpMode::parse,
        binance::ILLEGAL_CHARS,
        "Illegal characters found in parameter 'selfTradePreventionMode'.",
    )?;
    let qty = match (
        decimal_param(params, "quantity")?,
        decimal_param(params, "quoteOrderQty")?,
    ) {
        (Some(q), None) => OrderQty::Base(Qty(q)),
        (None, Some(q)) => OrderQty::Quote(Amount(q)),
        (Some(_), Some(_)) => {
            return Err(HttpError::new(
                400,
                binance::PARAM_NOT_REQUIRED,
                "Parameter 'quoteOrderQty' sent when not required.",
            ))
        }
        (None, None) => {
            return Err(HttpError::new(
                400,
                binance::MANDATORY_PARAM_EMPTY_OR_MALFORMED,
                "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!",
            ))
        }
    };
    Ok(OrderRequest {
        market,
        side,
        kind,
        time_in_force,
        price: decimal_param(params, "price")?.map(Price),
        qty,
        stop_price: decimal_param(params, "stopPrice")?.map(Price),
        client_order_id: client_id_param(params, "newClientOrderId")?,
        stp: stp.unwrap_or(StpMode::None),
        // Binance counts an order as an iceberg when its icebergQty is
        // above zero: zero asks for a plain order.
        iceberg_qty: decimal_param(params, "icebergQty")?.filter(|&q| q != 0).map(Qty),
        // Beyond u32 it is beyond the TRAILING_DELTA filter too, which
        // refuses it.
        trailing_delta: u64_param(params, "trailingDelta")?.map(|d| u32::try_from(d).unwrap_or(u32::MAX)),
    })
}

/// How much of an order the response shows (newOrderRespType).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RespType {
    Ack,
    Result,
    Full,
}

pub(crate) fn resp_type(params: &Params<'_>, kind: OrderType) -> Result<RespType, HttpError> {
    Ok(resp_type_sent(params)?.unwrap_or(match kind {
        OrderType::Market | OrderType::Limit => RespType::Full,
        _ => RespType::Ack,
    }))
}

/// `newOrderRespType` as sent, if it was.
pub(crate) fn resp_type_sent(params: &Params<'_>) -> Result<Option<RespType>, HttpError> {
    let parse = |t: &str| match t {
        "ACK" => Some(RespType::Ack),
        "RESULT" => Some(RespType::Result),
        "FULL" => Some(RespType::Full),
        _ => None,
    };
    enum_param(
        params,
        "newOrderRespType",
        parse,
        binance::ILLEGAL_CHARS,
        "Illegal characters found in parameter 'newOrderRespType'.",
    )
}

pub(crate) fn order_ref(params: &Params<'_>, id_name: &str, client_name: &str) -> Result<OrderRef, HttpError> {
    if let Some(id) = u64_param(params, id_name)? {
        return Ok(OrderRef::Id(id));
    }
    match client_id_param(params, client_name)? {
        Some(client) => Ok(OrderRef::Client(client)),
        None => Err(HttpError::new(
            400,
            binance::MANDATORY_PARAM_EMPTY_OR_MALFORMED,
            format!("Param '{client_name}' or '{id_name}' must be sent, but both were empty/null!"),
        )),
    }
}
