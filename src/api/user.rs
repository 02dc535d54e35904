//! The signed user endpoints, run on the user's shard: order (new, query,
//! cancel, test), cancelReplace, openOrders, allOrders, account, myTrades
//! and the userDataStream listen keys, with their JSON; the wallet's
//! signed endpoints are dispatched from here to `wallet` and `transfers`.
//!
//! Authentication (API key, signature, timestamp and recvWindow, scope) and the
//! ORDERS limits run here, where the user's keys and counts live.

use crate::api::host::Host;
use crate::api::params::{
    client_id_param, enum_param, limit_param, malformed, mandatory, market_param, order_ref, order_request,
    refuse_not_taken, resp_type, u64_param, RespType, ORDER_PARAMS_NOT_TAKEN,
};
use crate::api::peer::{PeerCall, PeerReply};
use crate::api::request::{engine_error, from_result, trading_error, unavailable, Credentials, RequestRef, RestReply};
use crate::api::{history, lists, transfers, wallet};
use crate::auth::{self, AuthRequest, SignedPart};
use crate::binance;
use crate::endpoint::Endpoint;
use crate::http::{HttpError, Params};
use crate::json::JsonWriter;
use crate::streams::list_id;
use crate::trading::{PlaceOutcome, ReplaceOutcome, TradingError};
use tradsys_engine::account::{AmendRequest, NewOrderResult};
use tradsys_engine::market::MarketSpec;
use tradsys_engine::num::{parse_units, Price, Qty};
use tradsys_engine::order::{
    CancelReplaceMode, ClientOrderId, ListKind, MarketId, OrderRequest, OrderType, OrderView, UserId, UserTrade,
};
use tradsys_engine::EngineError;

/// Rows a list endpoint returns by default and at most.
pub(crate) const LIST_LIMIT_DEFAULT: usize = 500;
pub(crate) const LIST_LIMIT_MAX: usize = 1000;
/// Depth levels by default and at most (Binance's figures).
pub(crate) const DEPTH_LIMIT_DEFAULT: usize = 100;
pub(crate) const DEPTH_LIMIT_MAX: usize = 5000;

/// Runs a signed or API-key request of a user owned by this shard.
pub(crate) async fn request(shard: &impl Host, req: RequestRef<'_>) -> RestReply {
    match req.params(shard) {
        Ok(params) => request_parsed(shard, req, &params).await,
        Err(e) => RestReply::error(&e),
    }
}

/// [`request`] with the parameters already parsed (by the connection's
/// shard, when it owns the user).
pub(crate) async fn request_parsed(shard: &impl Host, req: RequestRef<'_>, params: &Params<'_>) -> RestReply {
    let user = match authenticate(shard, &req, params) {
        Ok(context) => context.user_id,
        Err(e) => return RestReply::error(&e.into()),
    };
    let mut order_headers = Vec::new();
    if req.endpoint.is_order() {
        match shard.admit_order(user, req.now_ms).await {
            Ok(usage) => order_headers = usage.order_count_headers(),
            Err(refusal) => return crate::api::refused(refusal),
        }
    }
    let mut reply = user_endpoint(shard, req, params, user).await;
    reply.headers.extend(order_headers);
    reply
}

/// Who sent `req`, by the credentials it came with: REST signs the query
/// string and body, the WebSocket API a payload of sorted parameters or its
/// session's logon.
fn authenticate(
    shard: &impl Host,
    req: &RequestRef<'_>,
    params: &Params<'_>,
) -> Result<auth::AuthContext, auth::AuthError> {
    let security = req.endpoint.security();
    let scope = security.scope().unwrap_or(auth::Scope::Read);
    let signed = match req.credentials {
        Credentials::Rest => SignedPart::QueryAndBody {
            query: req.query,
            body: if req.form_body { req.body } else { &[] },
        },
        Credentials::Payload { payload, signature } => SignedPart::Payload { payload, signature },
        Credentials::Session => SignedPart::Session,
    };
    // The WebSocket API names a missing key as the missing parameter it is.
    if req.credentials != Credentials::Rest && req.api_key.is_none() {
        return Err(auth::AuthError::Mandatory("apiKey"));
    }
    let auth_request = AuthRequest {
        api_key: req.api_key,
        signed,
        timestamp: params.get("timestamp"),
        recv_window: params.get("recvWindow"),
    };
    auth::authenticate(
        shard.trading().keys(),
        &auth_request,
        scope,
        security.signed(),
        req.now_ms,
    )
}

async fn user_endpoint(shard: &impl Host, req: RequestRef<'_>, params: &Params<'_>, user: UserId) -> RestReply {
    let now_ms = req.now_ms;
    let result = match req.endpoint {
        Endpoint::OrderNew => new_order(shard, params, user, now_ms).await,
        Endpoint::OrderTest => order_test(shard, params),
        Endpoint::OrderQuery => history::query_order(shard, params, user).await,
        Endpoint::OrderCancel => cancel_order(shard, params, user, now_ms).await,
        Endpoint::OrderCancelReplace => return cancel_replace(shard, params, user, now_ms).await,
        Endpoint::OrderAmend => amend_order(shard, params, user, now_ms).await,
        Endpoint::OrderAmendments => amendments(shard, params, user),
        Endpoint::CountdownCancelAll => countdown_cancel_all(shard, params, user, now_ms),
        Endpoint::MmpSet => mmp_set(shard, params, user),
        Endpoint::MmpQuery => mmp_status(shard, params, user),
        Endpoint::MmpReset => market_param(shard, params).and_then(|market| {
            shard.trading_mut().reset_mmp(user, market);
            shard.flush_engine();
            mmp_status(shard, params, user)
        }),
        Endpoint::MmpDelete => market_param(shard, params).map(|market| {
            shard.trading_mut().set_mmp(user, market, None);
            shard.flush_engine();
            b"{}".to_vec()
        }),
        Endpoint::OpenOrders => open_orders(shard, params, user),
        Endpoint::OpenOrdersCancel => cancel_open_orders(shard, params, user, now_ms).await,
        Endpoint::AllOrders => history::all_orders(shard, params, user).await,
        Endpoint::OrderListOco => lists::place(shard, params, user, now_ms, Some(ListKind::Oco)).await,
        Endpoint::OrderListOto => lists::place(shard, params, user, now_ms, Some(ListKind::Oto)).await,
        Endpoint::OrderListOtoco => lists::place(shard, params, user, now_ms, Some(ListKind::Otoco)).await,
        Endpoint::OrderOco => lists::place(shard, params, user, now_ms, None).await,
        Endpoint::OrderListCancel => lists::cancel(shard, params, user, now_ms).await,
        Endpoint::OrderListQuery => lists::query(shard, params, user),
        Endpoint::AllOrderList => lists::all(shard, params, user),
        Endpoint::OpenOrderList => lists::open(shard, user),
        Endpoint::Account => account(shard, params, user, now_ms),
        Endpoint::MyTrades => history::my_trades(shard, params, user).await,
        Endpoint::RateLimitOrder => Ok(order_rate_limits(shard, user, now_ms).await),
        Endpoint::UserDataStreamStart => listen_key_start(shard, user, now_ms),
        Endpoint::UserDataStreamKeepalive => listen_key_touch(shard, params, user, now_ms, true),
        Endpoint::UserDataStreamClose => listen_key_touch(shard, params, user, now_ms, false),
        Endpoint::CapitalConfig => wallet::coins(shard, user),
        Endpoint::TradeFee => wallet::trade_fees(shard, params),
        Endpoint::AccountCommission => wallet::commission(shard, params),
        Endpoint::DepositHistory => transfers::deposits(shard, params, user, now_ms).await,
        Endpoint::WithdrawHistory => transfers::withdrawals(shard, params, user, now_ms).await,
        Endpoint::DepositAddress | Endpoint::WithdrawApply => Err(wallet::refused(req.endpoint)),
        Endpoint::ExportCreate => crate::api::jobs::create(shard, params, user, now_ms).await,
        Endpoint::ExportStatus => crate::api::jobs::status(shard, params, user),
        Endpoint::ExportDownload => crate::api::jobs::download(shard, params, user),
        other => unreachable!("{other:?} is not a user endpoint"),
    };
    from_result(result)
}

/// Where a MARKET order's lock is sized from: the book's best price on the
/// other side, asked of the market's shard when it lives elsewhere, and
/// of the market's instance (its depth, then its last price) when another
/// instance owns it.
pub(crate) async fn reference_price(shard: &impl Host, request: &OrderRequest) -> Result<Option<Price>, HttpError> {
    if request.kind != OrderType::Market {
        return Ok(None);
    }
    let remote = shard.trading().market_elsewhere(request.market).map(|(i, _)| i);
    if let Some(instance) = remote {
        return remote_reference_price(shard, instance, request).await;
    }
    let owner = shard.trading().market_shard(request.market) as usize;
    if owner == shard.index() {
        return Ok(shard.trading().reference_price(request.market, request.side));
    }
    let call = PeerCall::Reference {
        market: request.market,
        side: request.side,
    };
    match shard.call(owner, call).await {
        Ok(PeerReply::Reference(price)) => Ok(price),
        _ => Err(unavailable()),
    }
}

async fn remote_reference_price(
    shard: &impl Host,
    instance: usize,
    request: &OrderRequest,
) -> Result<Option<Price>, HttpError> {
    let symbol = shard.trading().spec(request.market).symbol.clone();
    let side = match request.side {
        tradsys_engine::order::Side::Buy => "asks",
        tradsys_engine::order::Side::Sell => "bids",
    };
    let depth = ask_instance(shard, instance, Endpoint::Depth, &format!("symbol={symbol}&limit=1")).await?;
    if let Some(price) = depth[side][0][0].as_str() {
        return Price::parse(price).map(Some).map_err(|_| unavailable());
    }
    let last = ask_instance(shard, instance, Endpoint::TickerPrice, &format!("symbol={symbol}")).await?;
    match last["price"].as_str().map(Price::parse) {
        Some(Ok(price)) if price != Price::ZERO => Ok(Some(price)),
        Some(Ok(_)) => Ok(None),
        _ => Err(unavailable()),
    }
}

/// The JSON answer of another instance to a public GET.
async fn ask_instance(
    shard: &impl Host,
    instance: usize,
    endpoint: Endpoint,
    query: &str,
) -> Result<serde_json::Value, HttpError> {
    let request = crate::api::request::RestRequest::public(endpoint, query.as_bytes().to_vec());
    let owner = shard
        .trading()
        .cluster_place()
        .map(|p| p.map.instances[instance].clone());
    let Some(owner) = owner else { return Err(unavailable()) };
    let reply = shard
        .call_instance(instance, crate::api::link::Carried::Rest(request))
        .await
        .map_err(|e| crate::api::link::carried_error("The market", &owner, e))?;
    match reply.status {
        200 => serde_json::from_slice(&reply.body).map_err(|_| unavailable()),
        _ => Err(unavailable()),
    }
}

/// Waits for what the engine answers about `market`: when another
/// instance owns the market, at most `link_call_timeout_ms`, after which
/// the client hears that the outcome is unknown (-1007): the order or
/// cancel still reaches the market and takes effect there, exactly once.
pub(crate) async fn engine_outcome<T>(
    shard: &impl Host,
    market: MarketId,
    rx: crate::oneshot::Receiver<T>,
) -> Result<T, HttpError> {
    let outcome = async { rx.await.ok_or_else(unavailable) };
    if shard.trading().market_elsewhere(market).is_none() {
        return outcome.await;
    }
    let timeout = async {
        shard.link_timeout().await;
        Err(crate::api::link::unknown_outcome())
    };
    futures_lite::future::or(outcome, timeout).await
}

fn with_client_id(shard: &impl Host, mut request: OrderRequest) -> OrderRequest {
    if request.client_order_id.is_none() {
        request.client_order_id = Some(shard.next_client_order_id());
    }
    request
}

async fn new_order(shard: &impl Host, params: &Params<'_>, user: UserId, now_ms: u64) -> Result<Vec<u8>, HttpError> {
    let request = with_client_id(shard, order_request(shard, params)?);
    let resp_type = resp_type(params, request.kind)?;
    let reference = reference_price(shard, &request).await?;
    let placed = shard.trading_mut().place(user, &request, reference, now_ms);
    shard.flush_engine();
    let (_, outcome) = placed.map_err(trading_error)?;
    let PlaceOutcome { result, fills } = engine_outcome(shard, request.market, outcome).await?;
    let view = result.map_err(engine_error)?;
    let trading = shard.trading();
    let mut w = JsonWriter::with_capacity(512);
    write_new_order(
        &mut w,
        trading.spec(view.market),
        &view,
        resp_type,
        &fills,
        now_ms,
        trading.accounts().asset_names(),
    );
    Ok(w.into_bytes())
}

fn order_test(shard: &impl Host, params: &Params<'_>) -> Result<Vec<u8>, HttpError> {
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
    write_no_discount(&mut w);
    w.end_object();
    Ok(w.into_bytes())
}

/// Binance's `discount` object as tradsys answers it: no BNB discount.
pub(crate) fn write_no_discount(w: &mut JsonWriter) {
    w.key("discount")
        .begin_object()
        .field_bool("enabledForAccount", false)
        .field_bool("enabledForSymbol", false);
    w.field_str("discountAsset", "BNB")
        .field_decimal("discount", 0)
        .end_object();
}

async fn cancel_order(shard: &impl Host, params: &Params<'_>, user: UserId, now_ms: u64) -> Result<Vec<u8>, HttpError> {
    let market = market_param(shard, params)?;
    refuse_not_taken(params, &ORDER_PARAMS_NOT_TAKEN)?;
    let target = order_ref(params, "orderId", "origClientOrderId")?;
    let cancel_id = client_id_param(params, "newClientOrderId")?;
    let cancel_id = cancel_id.unwrap_or_else(|| shard.next_client_order_id());
    let canceled = shard
        .trading_mut()
        .cancel_with_id(user, market, target, cancel_id, now_ms);
    shard.flush_engine();
    let rx = canceled.map_err(|e| match e {
        TradingError::Engine(EngineError::NoSuchOrder) => engine_error(EngineError::UnknownOrder),
        other => trading_error(other),
    })?;
    let view = engine_outcome(shard, market, rx).await?.map_err(engine_error)?;
    let mut w = JsonWriter::with_capacity(512);
    write_canceled(&mut w, shard.trading().spec(market), &view, cancel_id.as_str(), now_ms);
    Ok(w.into_bytes())
}

/// PUT /api/v3/order/amend/keepPriority: the order's quantity shrinks
/// where it rests, keeping its place in the queue.
async fn amend_order(shard: &impl Host, params: &Params<'_>, user: UserId, now_ms: u64) -> Result<Vec<u8>, HttpError> {
    let market = market_param(shard, params)?;
    let target = order_ref(params, "orderId", "origClientOrderId")?;
    let new_qty = parse_units(mandatory(params, "newQty")?).map_err(|_| malformed("newQty"))?;
    let new_id = client_id_param(params, "newClientOrderId")?;
    let new_id = new_id.unwrap_or_else(|| shard.next_client_order_id());
    let request = AmendRequest {
        market,
        target,
        new_qty: Qty(new_qty),
        new_client_order_id: Some(new_id),
    };
    let amended = shard.trading_mut().amend(user, request, now_ms);
    shard.flush_engine();
    let rx = amended.map_err(trading_error)?;
    let (view, amendment) = engine_outcome(shard, market, rx).await?.map_err(engine_error)?;
    let spec = shard.trading().spec(market).clone();
    let mut w = JsonWriter::with_capacity(512);
    w.begin_object()
        .field_uint("transactTime", now_ms)
        .field_uint("executionId", amendment.execution_id);
    w.key("amendedOrder").begin_object();
    w.field_str("symbol", &spec.symbol)
        .field_uint("orderId", view.order_id)
        .field_int("orderListId", -1);
    let client = |id: &Option<ClientOrderId>| id.as_ref().map(ClientOrderId::as_str).unwrap_or("").to_string();
    w.field_str("origClientOrderId", &client(&amendment.orig_client_order_id))
        .field_str("clientOrderId", &client(&view.client_order_id));
    w.field_decimal("price", view.price.0)
        .field_decimal("qty", view.orig_qty.0)
        .field_decimal("executedQty", view.executed_qty.0)
        .field_decimal("preventedQty", 0);
    w.field_decimal("quoteOrderQty", view.orig_quote_qty.0)
        .field_decimal("cumulativeQuoteQty", view.cummulative_quote_qty.0);
    w.field_str("status", view.status.as_str())
        .field_str("timeInForce", view.time_in_force.as_str())
        .field_str("type", view.kind.as_str())
        .field_str("side", view.side.as_str());
    if view.kind.is_stop() {
        w.field_decimal("stopPrice", view.stop_price.0);
    }
    w.field_uint("workingTime", view.time_ms)
        .field_str("selfTradePreventionMode", view.stp.as_str());
    w.end_object().end_object();
    Ok(w.into_bytes())
}

/// GET /api/v3/order/amendments: an order's amendments, oldest first,
/// from `fromExecutionId` on.
fn amendments(shard: &impl Host, params: &Params<'_>, user: UserId) -> Result<Vec<u8>, HttpError> {
    let market = market_param(shard, params)?;
    mandatory(params, "orderId")?;
    let order_id = u64_param(params, "orderId")?.unwrap_or(0);
    let from = u64_param(params, "fromExecutionId")?.unwrap_or(0);
    let limit = limit_param(params, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX)?;
    let trading = shard.trading();
    let symbol = &trading.spec(market).symbol;
    let client = |id: &Option<ClientOrderId>| id.as_ref().map(ClientOrderId::as_str).unwrap_or("").to_string();
    let mut w = JsonWriter::with_capacity(256);
    w.begin_array();
    let amendments = trading.amendments(user, order_id);
    let chosen = amendments
        .iter()
        .filter(|a| a.market == market && a.execution_id >= from)
        .take(limit);
    for a in chosen {
        w.begin_object()
            .field_str("symbol", symbol)
            .field_uint("orderId", a.order_id)
            .field_uint("executionId", a.execution_id);
        w.field_str("origClientOrderId", &client(&a.orig_client_order_id))
            .field_str("newClientOrderId", &client(&a.new_client_order_id));
        w.field_decimal("origQty", a.orig_qty.0)
            .field_decimal("newQty", a.new_qty.0)
            .field_uint("time", a.time_ms)
            .end_object();
    }
    w.end_array();
    Ok(w.into_bytes())
}

/// The longest dead-man's switch: a day.
const COUNTDOWN_MS_MAX: u64 = 86_400_000;

/// POST /api/v3/countdownCancelAll (a tradsys extension, in Binance's
/// futures form): unless called again within `countdownTime` ms, every
/// open order of the user on `symbol` is canceled; 0 turns it off.
fn countdown_cancel_all(
    shard: &impl Host,
    params: &Params<'_>,
    user: UserId,
    now_ms: u64,
) -> Result<Vec<u8>, HttpError> {
    let market = market_param(shard, params)?;
    mandatory(params, "countdownTime")?;
    let countdown_ms = u64_param(params, "countdownTime")?.unwrap_or(0);
    if countdown_ms > COUNTDOWN_MS_MAX {
        return Err(HttpError::new(
            400,
            binance::INVALID_PARAMETER,
            "Data sent for parameter 'countdownTime' is not valid.",
        ));
    }
    shard.trading_mut().set_countdown(user, market, countdown_ms, now_ms);
    shard.flush_engine();
    let mut w = JsonWriter::with_capacity(64);
    w.begin_object()
        .field_str("symbol", &shard.trading().spec(market).symbol)
        .field_str("countdownTime", &countdown_ms.to_string())
        .end_object();
    Ok(w.into_bytes())
}

/// The longest window and freeze of a market maker protection: a day.
const MMP_MS_MAX: u64 = 86_400_000;

fn invalid(name: &str) -> HttpError {
    HttpError::new(
        400,
        binance::INVALID_PARAMETER,
        format!("Data sent for parameter '{name}' is not valid."),
    )
}

/// POST /api/v3/mmpSet (a tradsys extension, in Binance's options form):
/// the user's market maker protection on `symbol`.
fn mmp_set(shard: &impl Host, params: &Params<'_>, user: UserId) -> Result<Vec<u8>, HttpError> {
    let market = market_param(shard, params)?;
    let millis = |name: &str, min: u64| -> Result<u64, HttpError> {
        mandatory(params, name)?;
        let value = u64_param(params, name)?.unwrap_or(0);
        match value >= min && value <= MMP_MS_MAX {
            true => Ok(value),
            false => Err(invalid(name)),
        }
    };
    let limit = |name: &str| -> Result<Qty, HttpError> {
        let value = parse_units(mandatory(params, name)?).map_err(|_| malformed(name))?;
        match value > 0 {
            true => Ok(Qty(value)),
            false => Err(invalid(name)),
        }
    };
    let config = tradsys_engine::account::MmpConfig {
        window_ms: millis("windowTimeInMilliseconds", 1)?,
        frozen_ms: millis("frozenTimeInMilliseconds", 0)?,
        qty_limit: limit("qtyLimit")?,
        delta_limit: limit("deltaLimit")?,
    };
    shard.trading_mut().set_mmp(user, market, Some(config));
    shard.flush_engine();
    mmp_status(shard, params, user)
}

/// GET /api/v3/mmp: the protection on `symbol`, and until when it is
/// frozen (0: not frozen; -1: until reset).
fn mmp_status(shard: &impl Host, params: &Params<'_>, user: UserId) -> Result<Vec<u8>, HttpError> {
    let market = market_param(shard, params)?;
    let trading = shard.trading();
    let Some(state) = trading.accounts().mmp(user, market) else {
        return Err(HttpError::new(
            400,
            binance::NO_SUCH_ORDER,
            "No market maker protection is set for this symbol.",
        ));
    };
    let mut w = JsonWriter::with_capacity(256);
    w.begin_object()
        .field_str("symbol", &trading.spec(market).symbol)
        .field_uint("windowTimeInMilliseconds", state.config.window_ms)
        .field_uint("frozenTimeInMilliseconds", state.config.frozen_ms)
        .field_decimal("qtyLimit", state.config.qty_limit.0)
        .field_decimal("deltaLimit", state.config.delta_limit.0);
    match state.frozen_until_ms {
        u64::MAX => w.field_int("frozenUntil", -1),
        until => w.field_uint("frozenUntil", until),
    };
    w.end_object();
    Ok(w.into_bytes())
}

async fn cancel_open_orders(
    shard: &impl Host,
    params: &Params<'_>,
    user: UserId,
    now_ms: u64,
) -> Result<Vec<u8>, HttpError> {
    let market = market_param(shard, params)?;
    let started = shard.trading_mut().cancel_all(user, market, now_ms);
    shard.flush_engine();
    let views = engine_outcome(shard, market, started.map_err(trading_error)?).await?;
    if views.is_empty() {
        // Binance answers a cancel-all with nothing open as an unknown order.
        return Err(engine_error(EngineError::UnknownOrder));
    }
    let spec = shard.trading().spec(market).clone();
    let mut w = JsonWriter::with_capacity(256 + 512 * views.len());
    w.begin_array();
    // Binance answers the orders of a list as that list, once.
    let mut lists_done = Vec::new();
    for view in &views {
        let cancel_id = shard.next_client_order_id();
        let list = view.order_list_id;
        if list == 0 {
            write_canceled(&mut w, &spec, view, cancel_id.as_str(), now_ms);
            continue;
        }
        if lists_done.contains(&list) {
            continue;
        }
        lists_done.push(list);
        match lists::canceled_list(shard, user, list) {
            Some((list, orders)) => lists::write_canceled_list(&mut w, &spec, &list, &orders, cancel_id, now_ms),
            None => write_canceled(&mut w, &spec, view, cancel_id.as_str(), now_ms),
        }
    }
    w.end_array();
    Ok(w.into_bytes())
}

async fn cancel_replace(shard: &impl Host, params: &Params<'_>, user: UserId, now_ms: u64) -> RestReply {
    match cancel_replace_inner(shard, params, user, now_ms).await {
        Ok(reply) => reply,
        Err(e) => RestReply::error(&e),
    }
}

async fn cancel_replace_inner(
    shard: &impl Host,
    params: &Params<'_>,
    user: UserId,
    now_ms: u64,
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
    let resp_type = resp_type(params, request.kind)?;
    let reference = reference_price(shard, &request).await?;
    let started = shard
        .trading_mut()
        .cancel_replace(user, target, mode, &request, reference, now_ms);
    shard.flush_engine();
    let (_, rx) = started.map_err(trading_error)?;
    let outcome = engine_outcome(shard, request.market, rx).await?;
    let trading = shard.trading();
    let answer = ReplaceAnswer {
        spec: trading.spec(request.market),
        outcome: &outcome,
        cancel_id: cancel_id.as_str(),
        resp_type,
        now_ms,
        assets: trading.accounts().asset_names(),
    };
    Ok(answer.reply())
}

/// What a cancelReplace answers, with what its JSON needs.
struct ReplaceAnswer<'a> {
    spec: &'a MarketSpec,
    outcome: &'a ReplaceOutcome,
    cancel_id: &'a str,
    resp_type: RespType,
    now_ms: u64,
    assets: &'a [String],
}

impl ReplaceAnswer<'_> {
    /// 200 when both halves succeeded; else Binance's error with the
    /// details in "data": 409 when one half succeeded, 400 when neither did.
    fn reply(&self) -> RestReply {
        let cancel_failed = self.outcome.cancel.is_err();
        let new_failed = !matches!(self.outcome.new, NewOrderResult::Success(_));
        let mut w = JsonWriter::with_capacity(1024);
        if !cancel_failed && !new_failed {
            w.begin_object();
            self.write_results(&mut w);
            w.end_object();
            return RestReply::json(w.into_bytes());
        }
        let (status, code, msg) = if cancel_failed && new_failed {
            (400, binance::CANCEL_REPLACE_FAILED, "Order cancel-replace failed.")
        } else {
            (
                409,
                binance::CANCEL_REPLACE_PARTIALLY_FAILED,
                "Order cancel-replace partially failed.",
            )
        };
        w.begin_object()
            .field_int("code", i64::from(code))
            .field_str("msg", msg)
            .key("data")
            .begin_object();
        self.write_results(&mut w);
        w.end_object().end_object();
        RestReply {
            status,
            headers: Vec::new(),
            body: w.into_bytes(),
        }
    }

    fn write_results(&self, w: &mut JsonWriter) {
        let outcome = self.outcome;
        let cancel_result = if outcome.cancel.is_err() { "FAILURE" } else { "SUCCESS" };
        w.field_str("cancelResult", cancel_result);
        let new_result = match outcome.new {
            NewOrderResult::Success(_) => "SUCCESS",
            NewOrderResult::Failure(_) => "FAILURE",
            NewOrderResult::NotAttempted => "NOT_ATTEMPTED",
        };
        w.field_str("newOrderResult", new_result);
        w.key("cancelResponse");
        match &outcome.cancel {
            Ok(view) => write_canceled(w, self.spec, view, self.cancel_id, self.now_ms),
            Err(e) => error_object(w, e.code(), e.msg()),
        }
        w.key("newOrderResponse");
        match &outcome.new {
            NewOrderResult::Success(view) => write_new_order(
                w,
                self.spec,
                view,
                self.resp_type,
                &outcome.fills,
                self.now_ms,
                self.assets,
            ),
            NewOrderResult::Failure(e) => error_object(w, e.code(), e.msg()),
            NewOrderResult::NotAttempted => {
                w.null();
            }
        }
    }
}

fn error_object(w: &mut JsonWriter, code: i32, msg: &str) {
    w.begin_object()
        .field_int("code", i64::from(code))
        .field_str("msg", msg)
        .end_object();
}

fn open_orders(shard: &impl Host, params: &Params<'_>, user: UserId) -> Result<Vec<u8>, HttpError> {
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

/// `GET /api/v3/rateLimit/order`: the user's unfilled order counts in
/// each ORDERS window, as exchangeInfo names the windows.
async fn order_rate_limits(shard: &impl Host, user: UserId, now_ms: u64) -> Vec<u8> {
    let (count_10s, count_1d) = shard.order_counts(user, now_ms).await;
    let limits = shard.exchange_info().limits;
    let mut w = JsonWriter::with_capacity(256);
    w.begin_array();
    for (interval, interval_num, limit, count) in [
        ("SECOND", 10, limits.orders_per_10s_max, count_10s),
        ("DAY", 1, limits.orders_per_day_max, count_1d),
    ] {
        w.begin_object()
            .field_str("rateLimitType", "ORDERS")
            .field_str("interval", interval)
            .field_uint("intervalNum", interval_num)
            .field_uint("limit", u64::from(limit))
            .field_uint("count", u64::from(count))
            .end_object();
    }
    w.end_array();
    w.into_bytes()
}

fn account(shard: &impl Host, params: &Params<'_>, user: UserId, now_ms: u64) -> Result<Vec<u8>, HttpError> {
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
    w.field_uint("updateTime", now_ms).field_str("accountType", "SPOT");
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

fn listen_key_start(shard: &impl Host, user: UserId, now_ms: u64) -> Result<Vec<u8>, HttpError> {
    let mut entropy = [0u8; 64];
    crate::auth::random_bytes(&mut entropy);
    let key = shard
        .trading_mut()
        .listen_key_create(user, &entropy, now_ms)
        .map_err(trading_error)?;
    let mut w = JsonWriter::with_capacity(96);
    w.begin_object().field_str("listenKey", &key).end_object();
    Ok(w.into_bytes())
}

fn listen_key_touch(
    shard: &impl Host,
    params: &Params<'_>,
    user: UserId,
    now_ms: u64,
    keep: bool,
) -> Result<Vec<u8>, HttpError> {
    let key = mandatory(params, "listenKey")?;
    if !shard.trading_mut().listen_key_touch(user, key, keep, now_ms) {
        return Err(HttpError::new(
            400,
            binance::INVALID_LISTEN_KEY,
            "This listenKey does not exist.",
        ));
    }
    Ok(b"{}".to_vec())
}

// ---- order JSON ----

fn write_order_fields(w: &mut JsonWriter, spec: &MarketSpec, view: &OrderView) {
    w.field_str("symbol", &spec.symbol)
        .field_uint("orderId", view.order_id)
        .field_int("orderListId", list_id(view.order_list_id));
    w.field_str(
        "clientOrderId",
        view.client_order_id.as_ref().map(ClientOrderId::as_str).unwrap_or(""),
    );
}

pub(crate) fn write_order_state(w: &mut JsonWriter, view: &OrderView) {
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
pub(crate) fn write_order(w: &mut JsonWriter, spec: &MarketSpec, view: &OrderView) {
    w.begin_object();
    write_order_fields(w, spec, view);
    write_order_state(w, view);
    w.field_decimal("stopPrice", view.stop_price.0)
        .field_decimal("icebergQty", view.iceberg_qty.0);
    write_trailing_delta(w, view);
    w.field_uint("time", view.time_ms)
        .field_uint("updateTime", view.update_time_ms);
    // A pending order of an order list is on no book yet.
    let pending = view.status == tradsys_engine::order::OrderStatus::PendingNew;
    w.field_bool(
        "isWorking",
        !pending && (!view.kind.is_stop() || view.status != tradsys_engine::order::OrderStatus::New),
    );
    match pending {
        true => w.field_int("workingTime", -1),
        false => w.field_uint("workingTime", view.time_ms),
    };
    w.field_str("selfTradePreventionMode", view.stp.as_str()).end_object();
}

fn write_new_order(
    w: &mut JsonWriter,
    spec: &MarketSpec,
    view: &OrderView,
    resp_type: RespType,
    fills: &[UserTrade],
    now_ms: u64,
    asset_names: &[String],
) {
    w.begin_object();
    write_order_fields(w, spec, view);
    w.field_uint("transactTime", now_ms);
    if resp_type != RespType::Ack {
        write_order_state(w, view);
        w.field_uint("workingTime", view.time_ms);
        if view.kind.is_stop() {
            w.field_decimal("stopPrice", view.stop_price.0);
        }
        write_iceberg_qty(w, view);
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

fn write_canceled(w: &mut JsonWriter, spec: &MarketSpec, view: &OrderView, cancel_id: &str, now_ms: u64) {
    w.begin_object().field_str("symbol", &spec.symbol);
    w.field_str(
        "origClientOrderId",
        view.client_order_id.as_ref().map(ClientOrderId::as_str).unwrap_or(""),
    );
    w.field_uint("orderId", view.order_id)
        .field_int("orderListId", list_id(view.order_list_id))
        .field_str("clientOrderId", cancel_id);
    w.field_uint("transactTime", now_ms);
    write_order_state(w, view);
    if view.kind.is_stop() {
        w.field_decimal("stopPrice", view.stop_price.0);
    }
    write_iceberg_qty(w, view);
    w.field_str("selfTradePreventionMode", view.stp.as_str()).end_object();
}

/// Binance's conditional fields: placement and cancel answers carry
/// `icebergQty` only for an iceberg order, and `trailingDelta` only for a
/// trailing stop.
pub(crate) fn write_iceberg_qty(w: &mut JsonWriter, view: &OrderView) {
    if view.iceberg_qty.0 > 0 {
        w.field_decimal("icebergQty", view.iceberg_qty.0);
    }
    write_trailing_delta(w, view);
}

fn write_trailing_delta(w: &mut JsonWriter, view: &OrderView) {
    if view.trailing_delta > 0 {
        w.field_uint("trailingDelta", u64::from(view.trailing_delta));
    }
}
