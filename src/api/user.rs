//! The Binance REST surface, run on the shard that owns the data: signed
//! endpoints on the user's shard, market endpoints on the market's shard.
//!
//! The connection shard (`api`) picks the owner and either calls in here
//! directly (same shard, borrowing the request bytes) or ships an owned
//! `RestRequest` over the mesh and gets a rendered `RestReply` back. Either
//! way the JSON is rendered once, where the data lives.
//!
//! Parameter errors use Binance's codes: -1102 mandatory parameter, -1100
//! malformed value, -1121 unknown symbol, -1115/-1116/-1117 bad enum values.

use crate::binance;
use crate::auth::{self, AuthRequest};
use crate::http::{HttpError, Params};
use crate::json::JsonWriter;
use crate::limits::Endpoint;
use crate::server::shard::Shard;
use crate::trading::{PlaceOutcome, TradingError};
use tradsys_engine::account::{NewOrderResult, OrderRef};
use tradsys_engine::market::MarketSpec;
use tradsys_engine::num::{parse_units, Amount, Price, Qty};
use tradsys_engine::order::{
    CancelReplaceMode, ClientOrderId, MarketId, OrderQty, OrderRequest, OrderType, OrderView, Side, StpMode,
    TimeInForce, UserId, UserTrade,
};
use tradsys_engine::EngineError;

/// Rows a list endpoint returns by default and at most.
pub const LIST_LIMIT_DEFAULT: usize = 500;
pub const LIST_LIMIT_MAX: usize = 1000;
/// Depth levels by default and at most (Binance's figures).
pub const DEPTH_LIMIT_DEFAULT: usize = 100;
pub const DEPTH_LIMIT_MAX: usize = 5000;

/// A request shipped to the owning shard. Plain data, so it can cross.
#[derive(Debug)]
pub struct RestRequest {
    pub endpoint: Endpoint,
    pub query: Vec<u8>,
    pub body: Vec<u8>,
    pub form_body: bool,
    pub api_key: Option<Vec<u8>>,
    pub now_ms: u64,
}

impl RestRequest {
    pub fn borrowed(&self) -> RequestRef<'_> {
        RequestRef {
            endpoint: self.endpoint,
            query: &self.query,
            body: &self.body,
            form_body: self.form_body,
            api_key: self.api_key.as_deref(),
            now_ms: self.now_ms,
        }
    }
}

/// The same request, borrowed from the connection's buffer.
#[derive(Clone, Copy, Debug)]
pub struct RequestRef<'a> {
    pub endpoint: Endpoint,
    pub query: &'a [u8],
    pub body: &'a [u8],
    pub form_body: bool,
    pub api_key: Option<&'a [u8]>,
    pub now_ms: u64,
}

impl<'a> RequestRef<'a> {
    pub fn to_owned(&self) -> RestRequest {
        RestRequest {
            endpoint: self.endpoint,
            query: self.query.to_vec(),
            body: self.body.to_vec(),
            form_body: self.form_body,
            api_key: self.api_key.map(<[u8]>::to_vec),
            now_ms: self.now_ms,
        }
    }

    fn params(&self, shard: &Shard) -> Result<Params<'a>, HttpError> {
        let body = self.form_body.then_some(self.body);
        Params::parse(self.query, body, shard.http_limits().params_count_max)
    }
}

/// A rendered answer: status, extra headers, JSON body.
#[derive(Debug)]
pub struct RestReply {
    pub status: u16,
    pub headers: Vec<String>,
    pub body: Vec<u8>,
}

impl RestReply {
    pub fn json(body: Vec<u8>) -> RestReply {
        RestReply {
            status: 200,
            headers: Vec::new(),
            body,
        }
    }

    pub fn error(error: &HttpError) -> RestReply {
        RestReply {
            status: error.status,
            headers: Vec::new(),
            body: crate::http::error_body(error.code, &error.msg).into_bytes(),
        }
    }
}

fn from_result(result: Result<Vec<u8>, HttpError>) -> RestReply {
    match result {
        Ok(body) => RestReply::json(body),
        Err(e) => RestReply::error(&e),
    }
}

// ---- errors ----

pub fn engine_error(e: EngineError) -> HttpError {
    HttpError::new(400, e.code(), e.msg())
}

pub fn trading_error(e: TradingError) -> HttpError {
    match e {
        TradingError::Engine(e) => engine_error(e),
        TradingError::Busy => HttpError::new(
            503,
            binance::SERVER_BUSY,
            binance::MSG_SERVER_BUSY,
        ),
        TradingError::Halted => HttpError::new(400, binance::NEW_ORDER_REJECTED, "Market is closed."),
        TradingError::UnknownUser(_) => HttpError::new(400, binance::REJECTED_MBX_KEY, binance::MSG_REJECTED_KEY),
        TradingError::UsersFull => HttpError::new(503, binance::SERVER_BUSY, "User limit reached."),
        TradingError::UnknownAsset => HttpError::new(400, binance::ILLEGAL_CHARS, "Unknown asset."),
    }
}

fn gone() -> HttpError {
    HttpError::new(
        503,
        binance::DISCONNECTED,
        binance::MSG_INTERNAL,
    )
}

// ---- parameters ----

pub fn mandatory<'a>(params: &'a Params<'a>, name: &str) -> Result<&'a str, HttpError> {
    match params.get(name) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(HttpError::new(
            400,
            binance::MANDATORY_PARAM_EMPTY_OR_MALFORMED,
            format!("Mandatory parameter '{name}' was not sent, was empty/null, or malformed."),
        )),
    }
}

fn malformed(name: &str) -> HttpError {
    HttpError::new(400, binance::ILLEGAL_CHARS, format!("Illegal characters found in parameter '{name}'."))
}

/// The market named by `symbol` (mandatory).
pub fn market_param(shard: &Shard, params: &Params<'_>) -> Result<MarketId, HttpError> {
    let symbol = mandatory(params, "symbol")?;
    shard.trading().market(symbol).ok_or_else(bad_symbol)
}

pub fn bad_symbol() -> HttpError {
    HttpError::new(400, binance::BAD_SYMBOL, binance::MSG_BAD_SYMBOL)
}

fn decimal_param(params: &Params<'_>, name: &str) -> Result<Option<i64>, HttpError> {
    match params.get(name) {
        None | Some("") => Ok(None),
        Some(text) => parse_units(text).map(Some).map_err(|_| malformed(name)),
    }
}

fn u64_param(params: &Params<'_>, name: &str) -> Result<Option<u64>, HttpError> {
    match params.get(name) {
        None | Some("") => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| malformed(name)),
    }
}

/// `limit` within 1..=max, `default` when absent.
pub fn limit_param(params: &Params<'_>, default: usize, max: usize) -> Result<usize, HttpError> {
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

fn enum_param<T>(
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

fn client_id_param(params: &Params<'_>, name: &str) -> Result<Option<ClientOrderId>, HttpError> {
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

/// The order a new-order request describes, checked for form only; the
/// account machine checks filters and funds.
pub fn order_request(shard: &Shard, params: &Params<'_>) -> Result<OrderRequest, HttpError> {
    let market = market_param(shard, params)?;
    let side = enum_param(params, "side", Side::parse, binance::INVALID_SIDE, "Invalid side.")?;
    let side = side.ok_or_else(|| mandatory(params, "side").unwrap_err())?;
    let kind = enum_param(params, "type", OrderType::parse, binance::INVALID_ORDER_TYPE, "Invalid orderType.")?;
    let kind = kind.ok_or_else(|| mandatory(params, "type").unwrap_err())?;
    let time_in_force = enum_param(params, "timeInForce", TimeInForce::parse, binance::INVALID_TIME_IN_FORCE, "Invalid timeInForce.")?;
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
    })
}

/// How much of an order the response shows (newOrderRespType).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RespType {
    Ack,
    Result,
    Full,
}

fn resp_type(params: &Params<'_>, kind: OrderType) -> Result<RespType, HttpError> {
    let parse = |t: &str| match t {
        "ACK" => Some(RespType::Ack),
        "RESULT" => Some(RespType::Result),
        "FULL" => Some(RespType::Full),
        _ => None,
    };
    let given = enum_param(
        params,
        "newOrderRespType",
        parse,
        binance::ILLEGAL_CHARS,
        "Illegal characters found in parameter 'newOrderRespType'.",
    )?;
    Ok(given.unwrap_or(match kind {
        OrderType::Market | OrderType::Limit => RespType::Full,
        _ => RespType::Ack,
    }))
}

fn order_ref(params: &Params<'_>, id_name: &str, client_name: &str) -> Result<OrderRef, HttpError> {
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

// ---- the user's shard ----

/// Runs a signed or API-key request of a user owned by this shard.
pub async fn user_request(shard: &Shard, req: RequestRef<'_>) -> RestReply {
    match req.params(shard) {
        Ok(params) => user_request_parsed(shard, req, &params).await,
        Err(e) => RestReply::error(&e),
    }
}

/// `user_request` with the parameters already parsed (by the connection's
/// shard, when it owns the user).
pub async fn user_request_parsed(shard: &Shard, req: RequestRef<'_>, params: &Params<'_>) -> RestReply {
    let security = req.endpoint.security();
    let auth_request = AuthRequest {
        api_key: req.api_key,
        query: req.query,
        body: if req.form_body { req.body } else { &[] },
        timestamp: params.get("timestamp"),
        recv_window: params.get("recvWindow"),
    };
    let scope = security.scope().unwrap_or(auth::Scope::Read);
    let authenticated = auth::authenticate(
        shard.trading().keys(),
        &auth_request,
        scope,
        security.signed(),
        req.now_ms,
    );
    let user = match authenticated {
        Ok(context) => context.user_id,
        Err(e) => return RestReply::error(&e.into()),
    };
    let mut order_headers = Vec::new();
    if req.endpoint.is_order() {
        match shard.admit_order(user, req.now_ms) {
            Ok(headers) => order_headers = headers,
            Err(refused) => return refused,
        }
    }
    let mut reply = user_endpoint(shard, req, params, user).await;
    reply.headers.extend(order_headers);
    reply
}

async fn user_endpoint(shard: &Shard, req: RequestRef<'_>, params: &Params<'_>, user: UserId) -> RestReply {
    let now = req.now_ms;
    let result = match req.endpoint {
        Endpoint::OrderNew => new_order(shard, params, user, now).await,
        Endpoint::OrderTest => order_test(shard, params),
        Endpoint::OrderQuery => query_order(shard, params, user),
        Endpoint::OrderCancel => cancel_order(shard, params, user, now).await,
        Endpoint::OrderCancelReplace => return cancel_replace(shard, params, user, now).await,
        Endpoint::OpenOrders => open_orders(shard, params, user),
        Endpoint::OpenOrdersCancel => cancel_open_orders(shard, params, user, now).await,
        Endpoint::AllOrders => all_orders(shard, params, user),
        Endpoint::Account => account(shard, params, user, now),
        Endpoint::MyTrades => my_trades(shard, params, user),
        Endpoint::UserDataStreamStart => listen_key_start(shard, user, now),
        Endpoint::UserDataStreamKeepalive => listen_key_touch(shard, params, user, now, true),
        Endpoint::UserDataStreamClose => listen_key_touch(shard, params, user, now, false),
        other => unreachable!("{other:?} is not a user endpoint"),
    };
    from_result(result)
}

/// Where a MARKET order's lock is sized from: the book's best price on the
/// other side, asked of the market's shard when it lives elsewhere.
async fn reference_price(shard: &Shard, request: &OrderRequest) -> Result<Option<Price>, HttpError> {
    if request.kind != OrderType::Market {
        return Ok(None);
    }
    let owner = shard.trading().market_shard(request.market) as usize;
    if owner == shard.index() {
        return Ok(shard.trading().reference_price(request.market, request.side));
    }
    shard
        .reference_price_remote(owner, request.market, request.side)
        .await
        .map_err(|_| gone())
}

fn with_client_id(shard: &Shard, mut request: OrderRequest) -> OrderRequest {
    if request.client_order_id.is_none() {
        request.client_order_id = Some(shard.next_client_order_id());
    }
    request
}

async fn new_order(shard: &Shard, params: &Params<'_>, user: UserId, now: u64) -> Result<Vec<u8>, HttpError> {
    let request = with_client_id(shard, order_request(shard, params)?);
    let resp_type = resp_type(params, request.kind)?;
    let reference = reference_price(shard, &request).await?;
    let placed = shard.trading_mut().place(user, &request, reference, now);
    shard.flush_engine();
    let (_, outcome) = placed.map_err(trading_error)?;
    let PlaceOutcome { result, fills } = outcome.await.ok_or_else(gone)?;
    let view = result.map_err(engine_error)?;
    let trading = shard.trading();
    let mut w = JsonWriter::with_capacity(512);
    write_new_order(
        &mut w,
        trading.spec(view.market),
        &view,
        resp_type,
        &fills,
        now,
        trading.accounts().asset_names(),
    );
    Ok(w.into_bytes())
}

fn order_test(shard: &Shard, params: &Params<'_>) -> Result<Vec<u8>, HttpError> {
    let request = order_request(shard, params)?;
    shard.trading().accounts().check_order(&request).map_err(engine_error)?;
    if params.get("computeCommissionRates") != Some("true") {
        return Ok(b"{}".to_vec());
    }
    let spec = shard.trading().spec(request.market).clone();
    let mut w = JsonWriter::with_capacity(256);
    w.begin_object().key("standardCommissionForOrder").begin_object();
    w.field_decimal("maker", spec.maker_commission.0)
        .field_decimal("taker", spec.taker_commission.0);
    w.end_object().key("taxCommissionForOrder").begin_object();
    w.field_decimal("maker", 0).field_decimal("taker", 0).end_object();
    w.key("discount")
        .begin_object()
        .field_bool("enabledForAccount", false)
        .field_bool("enabledForSymbol", false);
    w.field_str("discountAsset", "BNB")
        .field_decimal("discount", 0)
        .end_object()
        .end_object();
    Ok(w.into_bytes())
}

fn query_order(shard: &Shard, params: &Params<'_>, user: UserId) -> Result<Vec<u8>, HttpError> {
    let market = market_param(shard, params)?;
    let target = order_ref(params, "orderId", "origClientOrderId")?;
    let trading = shard.trading();
    let view = trading.accounts().order(user, market, target).map_err(engine_error)?;
    let mut w = JsonWriter::with_capacity(512);
    write_order(&mut w, trading.spec(market), &view);
    Ok(w.into_bytes())
}

async fn cancel_order(shard: &Shard, params: &Params<'_>, user: UserId, now: u64) -> Result<Vec<u8>, HttpError> {
    let market = market_param(shard, params)?;
    let target = order_ref(params, "orderId", "origClientOrderId")?;
    let cancel_id = client_id_param(params, "newClientOrderId")?;
    let cancel_id = cancel_id.unwrap_or_else(|| shard.next_client_order_id());
    let canceled = shard.trading_mut().cancel_with_id(user, market, target, cancel_id, now);
    shard.flush_engine();
    let rx = canceled.map_err(|e| match e {
        TradingError::Engine(EngineError::NoSuchOrder) => engine_error(EngineError::UnknownOrder),
        other => trading_error(other),
    })?;
    let view = rx.await.ok_or_else(gone)?.map_err(engine_error)?;
    let mut w = JsonWriter::with_capacity(512);
    write_canceled(&mut w, shard.trading().spec(market), &view, cancel_id.as_str(), now);
    Ok(w.into_bytes())
}

async fn cancel_open_orders(shard: &Shard, params: &Params<'_>, user: UserId, now: u64) -> Result<Vec<u8>, HttpError> {
    let market = market_param(shard, params)?;
    let started = shard.trading_mut().cancel_all(user, market, now);
    shard.flush_engine();
    let views = started.map_err(trading_error)?.await.ok_or_else(gone)?;
    if views.is_empty() {
        // Binance answers a cancel-all with nothing open as an unknown order.
        return Err(engine_error(EngineError::UnknownOrder));
    }
    let spec = shard.trading().spec(market).clone();
    let mut w = JsonWriter::with_capacity(256 + 512 * views.len());
    w.begin_array();
    for view in &views {
        write_canceled(&mut w, &spec, view, shard.next_client_order_id().as_str(), now);
    }
    w.end_array();
    Ok(w.into_bytes())
}

async fn cancel_replace(shard: &Shard, params: &Params<'_>, user: UserId, now: u64) -> RestReply {
    match cancel_replace_inner(shard, params, user, now).await {
        Ok(reply) => reply,
        Err(e) => RestReply::error(&e),
    }
}

async fn cancel_replace_inner(
    shard: &Shard,
    params: &Params<'_>,
    user: UserId,
    now: u64,
) -> Result<RestReply, HttpError> {
    let request = with_client_id(shard, order_request(shard, params)?);
    let mode = enum_param(
        params,
        "cancelReplaceMode",
        CancelReplaceMode::parse,
        binance::ILLEGAL_CHARS,
        "Illegal characters found in parameter 'cancelReplaceMode'.",
    )?;
    let mode = mode.ok_or_else(|| mandatory(params, "cancelReplaceMode").unwrap_err())?;
    let target = order_ref(params, "cancelOrderId", "cancelOrigClientOrderId")?;
    let cancel_id = match client_id_param(params, "cancelNewClientOrderId")? {
        Some(id) => id,
        None => shard.next_client_order_id(),
    };
    let cancel_id = cancel_id.as_str();
    let resp_type = resp_type(params, request.kind)?;
    let reference = reference_price(shard, &request).await?;
    let started = shard
        .trading_mut()
        .cancel_replace(user, target, mode, &request, reference, now);
    shard.flush_engine();
    let (_, rx) = started.map_err(trading_error)?;
    let outcome = rx.await.ok_or_else(gone)?;
    let trading = shard.trading();
    let spec = trading.spec(request.market);
    let cancel_failed = outcome.cancel.is_err();
    let new_failed = !matches!(outcome.new, NewOrderResult::Success(_));
    let mut w = JsonWriter::with_capacity(1024);
    let write_results = |w: &mut JsonWriter| {
        w.field_str("cancelResult", if cancel_failed { "FAILURE" } else { "SUCCESS" });
        let new_result = match outcome.new {
            NewOrderResult::Success(_) => "SUCCESS",
            NewOrderResult::Failure(_) => "FAILURE",
            NewOrderResult::NotAttempted => "NOT_ATTEMPTED",
        };
        w.field_str("newOrderResult", new_result);
        w.key("cancelResponse");
        match &outcome.cancel {
            Ok(view) => write_canceled(w, spec, view, cancel_id, now),
            Err(e) => error_object(w, e.code(), e.msg()),
        }
        w.key("newOrderResponse");
        match &outcome.new {
            NewOrderResult::Success(view) => write_new_order(
                w,
                spec,
                view,
                resp_type,
                &outcome.fills,
                now,
                trading.accounts().asset_names(),
            ),
            NewOrderResult::Failure(e) => error_object(w, e.code(), e.msg()),
            NewOrderResult::NotAttempted => {
                w.null();
            }
        }
    };
    if cancel_failed || new_failed {
        // Binance answers a failure with the details in "data".
        let (code, msg) = if cancel_failed && new_failed {
            (binance::CANCEL_REPLACE_FAILED, "Order cancel-replace failed.")
        } else {
            (binance::CANCEL_REPLACE_PARTIALLY_FAILED, "Order cancel-replace partially failed.")
        };
        w.begin_object()
            .field_int("code", i64::from(code))
            .field_str("msg", msg)
            .key("data")
            .begin_object();
        write_results(&mut w);
        w.end_object().end_object();
        // Binance: 409 when one half succeeded, 400 when neither did.
        let status = if cancel_failed && new_failed { 400 } else { 409 };
        return Ok(RestReply {
            status,
            headers: Vec::new(),
            body: w.into_bytes(),
        });
    }
    w.begin_object();
    write_results(&mut w);
    w.end_object();
    Ok(RestReply::json(w.into_bytes()))
}

fn error_object(w: &mut JsonWriter, code: i32, msg: &str) {
    w.begin_object()
        .field_int("code", i64::from(code))
        .field_str("msg", msg)
        .end_object();
}

fn open_orders(shard: &Shard, params: &Params<'_>, user: UserId) -> Result<Vec<u8>, HttpError> {
    let trading = shard.trading();
    let markets: Vec<MarketId> = match params.get("symbol") {
        Some(_) => vec![market_param(shard, params)?],
        None => (0..trading.specs().len()).map(|m| MarketId(m as u16)).collect(),
    };
    let mut views = Vec::new();
    let mut w = JsonWriter::with_capacity(1024);
    w.begin_array();
    for market in markets {
        views.clear();
        trading.accounts().open_orders(user, market, &mut views);
        for view in &views {
            write_order(&mut w, trading.spec(market), view);
        }
    }
    w.end_array();
    Ok(w.into_bytes())
}

fn all_orders(shard: &Shard, params: &Params<'_>, user: UserId) -> Result<Vec<u8>, HttpError> {
    let market = market_param(shard, params)?;
    let from_id = u64_param(params, "orderId")?.unwrap_or(0);
    let start = u64_param(params, "startTime")?.unwrap_or(0);
    let end = u64_param(params, "endTime")?.unwrap_or(u64::MAX);
    let limit = limit_param(params, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX)?;
    let trading = shard.trading();
    let mut views = trading.accounts().all_orders(user, market);
    views.retain(|v| v.order_id >= from_id && v.time_ms >= start && v.time_ms <= end);
    views.sort_by_key(|v| v.order_id);
    let skip = views.len().saturating_sub(limit);
    let mut w = JsonWriter::with_capacity(512 * views.len().min(limit) + 2);
    w.begin_array();
    for view in &views[skip..] {
        write_order(&mut w, trading.spec(market), view);
    }
    w.end_array();
    Ok(w.into_bytes())
}

fn account(shard: &Shard, params: &Params<'_>, user: UserId, now: u64) -> Result<Vec<u8>, HttpError> {
    let omit_zero = params.get("omitZeroBalances") == Some("true");
    let trading = shard.trading();
    let (maker, taker) = trading
        .specs()
        .first()
        .map(|s| (s.maker_commission.0, s.taker_commission.0))
        .unwrap_or((0, 0));
    let mut w = JsonWriter::with_capacity(1024);
    w.begin_object();
    // Binance's integer commissions are in basis points (0.001 = 10).
    w.field_int("makerCommission", maker / 10_000)
        .field_int("takerCommission", taker / 10_000);
    w.field_int("buyerCommission", 0).field_int("sellerCommission", 0);
    w.key("commissionRates")
        .begin_object()
        .field_decimal("maker", maker)
        .field_decimal("taker", taker);
    w.field_decimal("buyer", 0).field_decimal("seller", 0).end_object();
    w.field_bool("canTrade", true)
        .field_bool("canWithdraw", true)
        .field_bool("canDeposit", true);
    w.field_bool("brokered", false)
        .field_bool("requireSelfTradePrevention", false)
        .field_bool("preventSor", false);
    w.field_uint("updateTime", now).field_str("accountType", "SPOT");
    w.key("balances").begin_array();
    for (asset, balance) in trading.balances(user) {
        if omit_zero && balance.free.0 == 0 && balance.locked.0 == 0 {
            continue;
        }
        w.begin_object().field_str("asset", trading.asset_name(asset));
        w.field_decimal("free", balance.free.0)
            .field_decimal("locked", balance.locked.0)
            .end_object();
    }
    w.end_array();
    w.key("permissions").begin_array().str("SPOT").end_array();
    w.field_uint("uid", user).end_object();
    Ok(w.into_bytes())
}

fn my_trades(shard: &Shard, params: &Params<'_>, user: UserId) -> Result<Vec<u8>, HttpError> {
    let market = market_param(shard, params)?;
    let order_id = u64_param(params, "orderId")?;
    let from_id = u64_param(params, "fromId")?.unwrap_or(0);
    let start = u64_param(params, "startTime")?.unwrap_or(0);
    let end = u64_param(params, "endTime")?.unwrap_or(u64::MAX);
    let limit = limit_param(params, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX)?;
    let trading = shard.trading();
    let trades: Vec<&UserTrade> = trading
        .accounts()
        .trades(user)
        .filter(|t| t.market == market && t.trade_id >= from_id && t.time_ms >= start && t.time_ms <= end)
        .filter(|t| order_id.is_none_or(|id| t.order_id == id))
        .collect();
    let skip = trades.len().saturating_sub(limit);
    let spec = trading.spec(market);
    let mut w = JsonWriter::with_capacity(256 * trades.len().min(limit) + 2);
    w.begin_array();
    for t in &trades[skip..] {
        w.begin_object()
            .field_str("symbol", &spec.symbol)
            .field_uint("id", t.trade_id);
        w.field_uint("orderId", t.order_id).field_int("orderListId", -1);
        w.field_decimal("price", t.price.0)
            .field_decimal("qty", t.qty.0)
            .field_decimal("quoteQty", t.quote_qty.0);
        w.field_decimal("commission", t.commission.0)
            .field_str("commissionAsset", trading.asset_name(t.commission_asset));
        w.field_uint("time", t.time_ms)
            .field_bool("isBuyer", t.is_buyer)
            .field_bool("isMaker", t.is_maker);
        w.field_bool("isBestMatch", true).end_object();
    }
    w.end_array();
    Ok(w.into_bytes())
}

fn listen_key_start(shard: &Shard, user: UserId, now: u64) -> Result<Vec<u8>, HttpError> {
    let mut entropy = [0u8; 64];
    crate::server::shard::random_bytes(&mut entropy);
    let key = shard
        .trading_mut()
        .listen_key_create(user, &entropy, now)
        .map_err(trading_error)?;
    let mut w = JsonWriter::with_capacity(96);
    w.begin_object().field_str("listenKey", &key).end_object();
    Ok(w.into_bytes())
}

fn listen_key_touch(
    shard: &Shard,
    params: &Params<'_>,
    user: UserId,
    now: u64,
    keep: bool,
) -> Result<Vec<u8>, HttpError> {
    let key = mandatory(params, "listenKey")?;
    if !shard.trading_mut().listen_key_touch(user, key, keep, now) {
        return Err(HttpError::new(400, binance::INVALID_LISTEN_KEY, "This listenKey does not exist."));
    }
    Ok(b"{}".to_vec())
}

// ---- order JSON ----

fn write_order_fields(w: &mut JsonWriter, spec: &MarketSpec, view: &OrderView) {
    w.field_str("symbol", &spec.symbol)
        .field_uint("orderId", view.order_id)
        .field_int("orderListId", -1);
    w.field_str(
        "clientOrderId",
        view.client_order_id.as_ref().map(ClientOrderId::as_str).unwrap_or(""),
    );
}

fn write_order_state(w: &mut JsonWriter, view: &OrderView) {
    w.field_decimal("price", view.price.0)
        .field_decimal("origQty", view.orig_qty.0);
    w.field_decimal("executedQty", view.executed_qty.0);
    w.field_decimal("origQuoteOrderQty", view.orig_quote_qty.0);
    w.field_decimal("cummulativeQuoteQty", view.cummulative_quote_qty.0);
    w.field_str("status", view.status.as_str())
        .field_str("timeInForce", view.time_in_force.as_str());
    w.field_str("type", view.kind.as_str())
        .field_str("side", view.side.as_str());
}

/// GET /api/v3/order's shape.
pub fn write_order(w: &mut JsonWriter, spec: &MarketSpec, view: &OrderView) {
    w.begin_object();
    write_order_fields(w, spec, view);
    write_order_state(w, view);
    w.field_decimal("stopPrice", view.stop_price.0)
        .field_decimal("icebergQty", 0);
    w.field_uint("time", view.time_ms)
        .field_uint("updateTime", view.update_time_ms);
    w.field_bool(
        "isWorking",
        !view.kind.is_stop() || view.status != tradsys_engine::order::OrderStatus::New,
    );
    w.field_uint("workingTime", view.time_ms);
    w.field_str("selfTradePreventionMode", view.stp.as_str()).end_object();
}

fn write_new_order(
    w: &mut JsonWriter,
    spec: &MarketSpec,
    view: &OrderView,
    resp_type: RespType,
    fills: &[UserTrade],
    now: u64,
    asset_names: &[String],
) {
    w.begin_object();
    write_order_fields(w, spec, view);
    w.field_uint("transactTime", now);
    if resp_type != RespType::Ack {
        write_order_state(w, view);
        w.field_uint("workingTime", view.time_ms);
        if view.kind.is_stop() {
            w.field_decimal("stopPrice", view.stop_price.0);
        }
        w.field_str("selfTradePreventionMode", view.stp.as_str());
    }
    if resp_type == RespType::Full {
        w.key("fills").begin_array();
        for f in fills {
            w.begin_object()
                .field_decimal("price", f.price.0)
                .field_decimal("qty", f.qty.0);
            w.field_decimal("commission", f.commission.0)
                .field_str("commissionAsset", &asset_names[usize::from(f.commission_asset.0)]);
            w.field_uint("tradeId", f.trade_id).end_object();
        }
        w.end_array();
    }
    w.end_object();
}

fn write_canceled(w: &mut JsonWriter, spec: &MarketSpec, view: &OrderView, cancel_id: &str, now: u64) {
    w.begin_object().field_str("symbol", &spec.symbol);
    w.field_str(
        "origClientOrderId",
        view.client_order_id.as_ref().map(ClientOrderId::as_str).unwrap_or(""),
    );
    w.field_uint("orderId", view.order_id)
        .field_int("orderListId", -1)
        .field_str("clientOrderId", cancel_id);
    w.field_uint("transactTime", now);
    write_order_state(w, view);
    if view.kind.is_stop() {
        w.field_decimal("stopPrice", view.stop_price.0);
    }
    w.field_str("selfTradePreventionMode", view.stp.as_str()).end_object();
}

// ---- the market's shard ----

/// Runs a public request about one market owned by this shard.
pub fn market_request(shard: &Shard, req: RequestRef<'_>) -> RestReply {
    match req.params(shard) {
        Ok(params) => market_request_parsed(shard, req, &params),
        Err(e) => RestReply::error(&e),
    }
}

/// `market_request` with the parameters already parsed (by the connection's
/// shard, when it owns the market).
pub fn market_request_parsed(shard: &Shard, req: RequestRef<'_>, params: &Params<'_>) -> RestReply {
    let result = market_param(shard, params).and_then(|market| match req.endpoint {
        Endpoint::Depth => depth(shard, params, market),
        _ => {
            let mut w = JsonWriter::with_capacity(512);
            market_fragment(shard, req.endpoint, market, params, req.now_ms, &mut w)?;
            Ok(w.into_bytes())
        }
    });
    from_result(result)
}

/// One market's entry of a ticker-style endpoint; with several markets the
/// connection shard joins the entries into an array.
pub fn market_fragment(
    shard: &Shard,
    endpoint: Endpoint,
    market: MarketId,
    params: &Params<'_>,
    now: u64,
    w: &mut JsonWriter,
) -> Result<(), HttpError> {
    let trading = shard.trading();
    let book = trading.book(market).ok_or_else(gone)?;
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
        _ => crate::api::market::write(shard, endpoint, market, params, now, w)?,
    }
    Ok(())
}

fn depth(shard: &Shard, params: &Params<'_>, market: MarketId) -> Result<Vec<u8>, HttpError> {
    let limit = limit_param(params, DEPTH_LIMIT_DEFAULT, DEPTH_LIMIT_MAX)?;
    let trading = shard.trading();
    let book = trading.book(market).ok_or_else(gone)?;
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
