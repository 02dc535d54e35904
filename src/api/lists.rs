//! Order lists: `POST /api/v3/orderList/oco`, `/orderList/oto`,
//! `/orderList/otoco`, the legacy `POST /api/v3/order/oco`,
//! `DELETE /api/v3/orderList`, `GET /api/v3/orderList`,
//! `GET /api/v3/allOrderList` and `GET /api/v3/openOrderList`, with
//! Binance's parameters and answers (the WebSocket API's `orderList.*`
//! methods run the same code).
//!
//! Each order of a list is named by a prefix (`above`, `below`,
//! `working`, `pending`, `pendingAbove`, `pendingBelow`) and parsed like
//! an order of `POST /api/v3/order`; the account machine checks filters,
//! the list's shape and funds.

use crate::api::host::Host;
use crate::api::params::{
    client_id_param, decimal_param, enum_param, limit_param, malformed, mandatory, market_param, order_ref,
    refuse_not_taken, resp_type_sent, u64_param, RespType,
};
use crate::api::request::{engine_error, trading_error};
use crate::api::user::{engine_outcome, reference_price, write_iceberg_qty, write_order_state};
use crate::binance;
use crate::http::{HttpError, Params};
use crate::json::JsonWriter;
use crate::streams::list_id;
use tradsys_engine::account::{ListRef, OrderRef};
use tradsys_engine::market::MarketSpec;
use tradsys_engine::num::{Price, Qty};
use tradsys_engine::order::{
    ClientOrderId, ListKind, ListRequest, MarketId, OrderListView, OrderQty, OrderRequest, OrderStatus, OrderType,
    OrderView, Side, StpMode, TimeInForce, UserId,
};

/// Lists `GET /api/v3/allOrderList` returns by default and at most.
const ALL_LISTS_LIMIT_DEFAULT: usize = 500;
const ALL_LISTS_LIMIT_MAX: usize = 1000;

/// Binance's per-order parameters a list order takes (after its prefix)
/// that tradsys does not act on: refused, never ignored.
const LEG_PARAMS_NOT_TAKEN: [&str; 5] = [
    "StrategyId",
    "StrategyType",
    "PegPriceType",
    "PegOffsetType",
    "PegOffsetValue",
];

/// Refuses a request carrying `<prefix><name>` for a name tradsys does not
/// act on.
fn refuse_leg_params(params: &Params<'_>, prefix: &str) -> Result<(), HttpError> {
    let names: Vec<String> = LEG_PARAMS_NOT_TAKEN.iter().map(|n| format!("{prefix}{n}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    refuse_not_taken(params, &names)
}

/// Binance's -1102 for a mandatory parameter not sent.
fn missing(name: &str) -> HttpError {
    HttpError::new(
        400,
        binance::MANDATORY_PARAM_EMPTY_OR_MALFORMED,
        format!("Mandatory parameter '{name}' was not sent, was empty/null, or malformed."),
    )
}

fn side_param(params: &Params<'_>, name: &str) -> Result<Side, HttpError> {
    let side = enum_param(params, name, Side::parse, binance::INVALID_SIDE, "Invalid side.")?;
    side.ok_or_else(|| missing(name))
}

fn type_param(params: &Params<'_>, name: &str) -> Result<OrderType, HttpError> {
    let kind = enum_param(
        params,
        name,
        OrderType::parse,
        binance::INVALID_ORDER_TYPE,
        "Invalid orderType.",
    )?;
    kind.ok_or_else(|| missing(name))
}

fn qty_param(params: &Params<'_>, name: &str) -> Result<Qty, HttpError> {
    mandatory(params, name)?;
    Ok(Qty(decimal_param(params, name)?.unwrap_or(0)))
}

fn stp_param(params: &Params<'_>) -> Result<StpMode, HttpError> {
    let stp = enum_param(
        params,
        "selfTradePreventionMode",
        StpMode::parse,
        binance::ILLEGAL_CHARS,
        "Illegal characters found in parameter 'selfTradePreventionMode'.",
    )?;
    Ok(stp.unwrap_or(StpMode::None))
}

/// One order of a list from its prefixed parameters; `side` and `qty`
/// when the list sets them for all its orders.
fn leg(
    params: &Params<'_>,
    market: MarketId,
    prefix: &str,
    side: Option<Side>,
    qty: Option<Qty>,
) -> Result<OrderRequest, HttpError> {
    refuse_leg_params(params, prefix)?;
    let name = |suffix: &str| format!("{prefix}{suffix}");
    let side = match side {
        Some(side) => side,
        None => side_param(params, &name("Side"))?,
    };
    let qty = match qty {
        Some(qty) => qty,
        None => qty_param(params, &name("Quantity"))?,
    };
    let time_in_force = enum_param(
        params,
        &name("TimeInForce"),
        TimeInForce::parse,
        binance::INVALID_TIME_IN_FORCE,
        "Invalid timeInForce.",
    )?;
    let trailing = u64_param(params, &name("TrailingDelta"))?;
    Ok(OrderRequest {
        market,
        side,
        kind: type_param(params, &name("Type"))?,
        time_in_force,
        price: decimal_param(params, &name("Price"))?.map(Price),
        qty: OrderQty::Base(qty),
        stop_price: decimal_param(params, &name("StopPrice"))?.map(Price),
        client_order_id: client_id_param(params, &name("ClientOrderId"))?,
        stp: StpMode::None,
        iceberg_qty: decimal_param(params, &name("IcebergQty"))?.filter(|&q| q != 0).map(Qty),
        trailing_delta: trailing.map(|d| u32::try_from(d).unwrap_or(u32::MAX)),
    })
}

/// The list a placement request describes, checked for form only.
fn list_request(shard: &impl Host, params: &Params<'_>, kind: ListKind) -> Result<ListRequest, HttpError> {
    let market = market_param(shard, params)?;
    let mut orders = match kind {
        ListKind::Oco => {
            let side = side_param(params, "side")?;
            let qty = qty_param(params, "quantity")?;
            let above = leg(params, market, "above", Some(side), Some(qty))?;
            let below = leg(params, market, "below", Some(side), Some(qty))?;
            [above, below, below]
        }
        ListKind::Oto => {
            let working = leg(params, market, "working", None, None)?;
            let pending = leg(params, market, "pending", None, None)?;
            [working, pending, pending]
        }
        ListKind::Otoco => {
            let working = leg(params, market, "working", None, None)?;
            let side = side_param(params, "pendingSide")?;
            let qty = qty_param(params, "pendingQuantity")?;
            let above = leg(params, market, "pendingAbove", Some(side), Some(qty))?;
            let below = leg(params, market, "pendingBelow", Some(side), Some(qty))?;
            [working, above, below]
        }
    };
    let stp = stp_param(params)?;
    for order in &mut orders {
        order.stp = stp;
    }
    Ok(ListRequest {
        kind,
        list_client_order_id: list_client_id(shard, params, "listClientOrderId")?,
        orders,
    })
}

/// The legacy `POST /api/v3/order/oco`: a LIMIT_MAKER at `price` and a
/// STOP_LOSS (or, with `stopLimitPrice`, STOP_LOSS_LIMIT) at `stopPrice`,
/// above and below the market as the side wants them.
fn legacy_oco_request(shard: &impl Host, params: &Params<'_>) -> Result<ListRequest, HttpError> {
    let market = market_param(shard, params)?;
    refuse_not_taken(
        params,
        &[
            "limitStrategyId",
            "limitStrategyType",
            "stopStrategyId",
            "stopStrategyType",
        ],
    )?;
    let side = side_param(params, "side")?;
    let qty = OrderQty::Base(qty_param(params, "quantity")?);
    let stp = stp_param(params)?;
    let limit = OrderRequest {
        market,
        side,
        kind: OrderType::LimitMaker,
        time_in_force: None,
        price: Some(Price(decimal_param(params, "price")?.ok_or_else(|| missing("price"))?)),
        qty,
        stop_price: None,
        client_order_id: client_id_param(params, "limitClientOrderId")?,
        stp,
        iceberg_qty: decimal_param(params, "limitIcebergQty")?.filter(|&q| q != 0).map(Qty),
        trailing_delta: None,
    };
    mandatory(params, "stopPrice")?;
    let stop_limit = decimal_param(params, "stopLimitPrice")?.map(Price);
    let time_in_force = enum_param(
        params,
        "stopLimitTimeInForce",
        TimeInForce::parse,
        binance::INVALID_TIME_IN_FORCE,
        "Invalid timeInForce.",
    )?;
    let stop = OrderRequest {
        kind: match stop_limit {
            Some(_) => OrderType::StopLossLimit,
            None => OrderType::StopLoss,
        },
        time_in_force,
        price: stop_limit,
        stop_price: decimal_param(params, "stopPrice")?.map(Price),
        client_order_id: client_id_param(params, "stopClientOrderId")?,
        iceberg_qty: decimal_param(params, "stopIcebergQty")?.filter(|&q| q != 0).map(Qty),
        trailing_delta: u64_param(params, "trailingDelta")?.map(|d| u32::try_from(d).unwrap_or(u32::MAX)),
        ..limit
    };
    let (above, below) = match side {
        Side::Sell => (limit, stop),
        Side::Buy => (stop, limit),
    };
    Ok(ListRequest {
        kind: ListKind::Oco,
        list_client_order_id: list_client_id(shard, params, "listClientOrderId")?,
        orders: [above, below, below],
    })
}

/// A list's client id: the one sent, else one the server draws.
fn list_client_id(shard: &impl Host, params: &Params<'_>, name: &str) -> Result<ClientOrderId, HttpError> {
    Ok(client_id_param(params, name)?.unwrap_or_else(|| shard.next_client_order_id()))
}

/// Gives every order of a list a client id (drawn when not sent), so
/// that the journal and the answers carry the same ones.
fn with_client_ids(shard: &impl Host, mut request: ListRequest) -> ListRequest {
    for order in request.orders.iter_mut().take(request.kind.legs()) {
        if order.client_order_id.is_none() {
            order.client_order_id = Some(shard.next_client_order_id());
        }
    }
    request
}

/// A list's answer shows its orders in full unless asked otherwise.
fn list_resp_type(params: &Params<'_>) -> Result<RespType, HttpError> {
    Ok(resp_type_sent(params)?.unwrap_or(RespType::Full))
}

/// Places a list and answers with it and its orders.
pub(crate) async fn place(
    shard: &impl Host,
    params: &Params<'_>,
    user: UserId,
    now_ms: u64,
    kind: Option<ListKind>,
) -> Result<Vec<u8>, HttpError> {
    let request = match kind {
        Some(kind) => list_request(shard, params, kind)?,
        None => legacy_oco_request(shard, params)?,
    };
    let request = with_client_ids(shard, request);
    let resp_type = list_resp_type(params)?;
    // Sized against the market when an order placed at once needs it (a
    // trailing buy without a stop price).
    let first = &request.orders[0];
    let reference = reference_price(
        shard,
        &OrderRequest {
            kind: OrderType::Market,
            ..*first
        },
    )
    .await?;
    let market = first.market;
    let placed = shard.trading_mut().place_list(user, &request, reference, now_ms);
    shard.flush_engine();
    let (_, rx) = placed.map_err(trading_error)?;
    let view = engine_outcome(shard, market, rx).await?.map_err(engine_error)?;
    let trading = shard.trading();
    let spec = trading.spec(market);
    let orders = list_orders(shard, &view);
    let mut w = JsonWriter::with_capacity(512 + 768 * orders.len());
    write_list_head(&mut w, spec, &view, &orders, now_ms);
    w.key("orderReports").begin_array();
    for order in &orders {
        write_report(&mut w, spec, order, resp_type, now_ms);
        if resp_type == RespType::Full {
            write_fills(shard, &mut w, order);
        }
        w.end_object();
    }
    w.end_array().end_object();
    Ok(w.into_bytes())
}

/// The orders of a list as the account machine knows them now.
fn list_orders(shard: &impl Host, view: &OrderListView) -> Vec<OrderView> {
    let trading = shard.trading();
    view.order_ids()
        .iter()
        .filter_map(|&id| trading.accounts().order(view.user, view.market, OrderRef::Id(id)).ok())
        .collect()
}

/// The list object's fields up to its `orders` (the object left open).
fn write_list_head(
    w: &mut JsonWriter,
    spec: &MarketSpec,
    view: &OrderListView,
    orders: &[OrderView],
    transaction_ms: u64,
) {
    w.begin_object()
        .field_uint("orderListId", view.order_list_id)
        .field_str("contingencyType", view.kind.contingency().as_str())
        .field_str("listStatusType", view.status_type.as_str())
        .field_str("listOrderStatus", view.order_status.as_str())
        .field_str("listClientOrderId", view.list_client_order_id.as_str())
        .field_uint("transactionTime", transaction_ms)
        .field_str("symbol", &spec.symbol);
    w.key("orders").begin_array();
    for &id in view.order_ids() {
        let client_id = orders
            .iter()
            .find(|o| o.order_id == id)
            .map(|o| client(&o.client_order_id));
        w.begin_object()
            .field_str("symbol", &spec.symbol)
            .field_uint("orderId", id)
            .field_str("clientOrderId", client_id.unwrap_or(""))
            .end_object();
    }
    w.end_array();
}

/// One order report of a list answer (left open, for `fills`).
fn write_report(w: &mut JsonWriter, spec: &MarketSpec, view: &OrderView, resp_type: RespType, now_ms: u64) {
    w.begin_object()
        .field_str("symbol", &spec.symbol)
        .field_uint("orderId", view.order_id)
        .field_int("orderListId", list_id(view.order_list_id))
        .field_str("clientOrderId", client(&view.client_order_id))
        .field_uint("transactTime", now_ms);
    if resp_type == RespType::Ack {
        return;
    }
    write_order_state(w, view);
    if view.kind.is_stop() {
        w.field_decimal("stopPrice", view.stop_price.0);
    }
    write_working_time(w, view);
    write_iceberg_qty(w, view);
    w.field_str("selfTradePreventionMode", view.stp.as_str());
}

/// Binance's `workingTime`: -1 for an order not yet on the book (a
/// pending order, a held stop).
fn write_working_time(w: &mut JsonWriter, view: &OrderView) {
    let waiting = view.status == OrderStatus::PendingNew || (view.kind.is_stop() && view.status == OrderStatus::New);
    match waiting {
        true => w.field_int("workingTime", -1),
        false => w.field_uint("workingTime", view.time_ms),
    };
}

/// The trades of an order, as `fills` (FULL answers).
fn write_fills(shard: &impl Host, w: &mut JsonWriter, view: &OrderView) {
    let trading = shard.trading();
    let assets = trading.accounts().asset_names();
    w.key("fills").begin_array();
    for t in trading.accounts().trades(view.user) {
        if t.order_id != view.order_id {
            continue;
        }
        w.begin_object()
            .field_decimal("price", t.price.0)
            .field_decimal("qty", t.qty.0)
            .field_decimal("commission", t.commission.0)
            .field_str("commissionAsset", &assets[usize::from(t.commission_asset.0)])
            .field_uint("tradeId", t.trade_id)
            .end_object();
    }
    w.end_array();
}

fn client(id: &Option<ClientOrderId>) -> &str {
    id.as_ref().map_or("", ClientOrderId::as_str)
}

/// Which list a request names: `orderListId` or its client id.
fn list_ref(params: &Params<'_>, client_name: &str) -> Result<ListRef, HttpError> {
    Ok(match order_ref(params, "orderListId", client_name)? {
        OrderRef::Id(id) => ListRef::Id(id),
        OrderRef::Client(client) => ListRef::Client(client),
    })
}

/// `DELETE /api/v3/orderList`: cancels every open order of the list.
pub(crate) async fn cancel(
    shard: &impl Host,
    params: &Params<'_>,
    user: UserId,
    now_ms: u64,
) -> Result<Vec<u8>, HttpError> {
    let market = market_param(shard, params)?;
    let target = list_ref(params, "listClientOrderId")?;
    let cancel_id = client_id_param(params, "newClientOrderId")?;
    let cancel_id = cancel_id.unwrap_or_else(|| shard.next_client_order_id());
    let canceled = shard.trading_mut().cancel_list(user, market, target, now_ms);
    shard.flush_engine();
    let rx = canceled.map_err(trading_error)?;
    let view = engine_outcome(shard, market, rx).await?.map_err(engine_error)?;
    let orders = list_orders(shard, &view);
    let mut w = JsonWriter::with_capacity(512 + 768 * orders.len());
    write_canceled_list(&mut w, shard.trading().spec(market), &view, &orders, cancel_id, now_ms);
    Ok(w.into_bytes())
}

/// A canceled list as `DELETE /api/v3/orderList` and `DELETE
/// /api/v3/openOrders` answer it: the list and its orders as canceled.
pub(crate) fn write_canceled_list(
    w: &mut JsonWriter,
    spec: &MarketSpec,
    view: &OrderListView,
    orders: &[OrderView],
    cancel_id: ClientOrderId,
    now_ms: u64,
) {
    write_list_head(w, spec, view, orders, now_ms);
    w.key("orderReports").begin_array();
    for order in orders {
        w.begin_object()
            .field_str("symbol", &spec.symbol)
            .field_str("origClientOrderId", client(&order.client_order_id))
            .field_uint("orderId", order.order_id)
            .field_int("orderListId", list_id(order.order_list_id));
        w.field_str("clientOrderId", cancel_id.as_str())
            .field_uint("transactTime", now_ms);
        write_order_state(w, order);
        if order.kind.is_stop() {
            w.field_decimal("stopPrice", order.stop_price.0);
        }
        write_iceberg_qty(w, order);
        w.field_str("selfTradePreventionMode", order.stp.as_str()).end_object();
    }
    w.end_array().end_object();
}

/// The list an order canceled by `DELETE /api/v3/openOrders` belongs to,
/// with its orders as they ended, for that answer.
pub(crate) fn canceled_list(shard: &impl Host, user: UserId, list: u64) -> Option<(OrderListView, Vec<OrderView>)> {
    let view = shard.trading().order_list(user, ListRef::Id(list)).ok()?;
    let orders = list_orders(shard, &view);
    Some((view, orders))
}

/// A list as the query endpoints show it: no order reports.
fn write_list(w: &mut JsonWriter, spec: &MarketSpec, view: &OrderListView, orders: &[OrderView]) {
    write_list_head(w, spec, view, orders, view.time_ms);
    w.end_object();
}

/// `GET /api/v3/orderList`.
pub(crate) fn query(shard: &impl Host, params: &Params<'_>, user: UserId) -> Result<Vec<u8>, HttpError> {
    let target = list_ref(params, "origClientOrderId")?;
    let view = shard
        .trading()
        .order_list(user, target)
        .map_err(|_| HttpError::new(400, binance::NO_SUCH_ORDER, "Order list does not exist."))?;
    let spec = shard.trading().spec(view.market).clone();
    let mut w = JsonWriter::with_capacity(512);
    write_list(&mut w, &spec, &view, &list_orders(shard, &view));
    Ok(w.into_bytes())
}

/// `GET /api/v3/openOrderList`: the user's open lists, oldest first.
pub(crate) fn open(shard: &impl Host, user: UserId) -> Result<Vec<u8>, HttpError> {
    let views = shard.trading().accounts().open_order_lists(user);
    write_lists(shard, &views)
}

/// `GET /api/v3/allOrderList`: the user's lists this shard remembers,
/// oldest first, from `fromId` or within `startTime`..`endTime`.
pub(crate) fn all(shard: &impl Host, params: &Params<'_>, user: UserId) -> Result<Vec<u8>, HttpError> {
    let from_id = u64_param(params, "fromId")?;
    let start = u64_param(params, "startTime")?;
    let end = u64_param(params, "endTime")?;
    if from_id.is_some() && (start.is_some() || end.is_some()) {
        return Err(malformed("fromId"));
    }
    let limit = limit_param(params, ALL_LISTS_LIMIT_DEFAULT, ALL_LISTS_LIMIT_MAX)?;
    let mut views = shard.trading().accounts().all_order_lists(user);
    views.sort_unstable_by_key(|v| v.order_list_id);
    views.retain(|v| {
        from_id.is_none_or(|id| v.order_list_id >= id)
            && start.is_none_or(|s| v.time_ms >= s)
            && end.is_none_or(|e| v.time_ms <= e)
    });
    views.truncate(limit);
    write_lists(shard, &views)
}

fn write_lists(shard: &impl Host, views: &[OrderListView]) -> Result<Vec<u8>, HttpError> {
    let trading = shard.trading();
    let mut w = JsonWriter::with_capacity(64 + 384 * views.len());
    w.begin_array();
    for view in views {
        write_list(&mut w, trading.spec(view.market), view, &list_orders(shard, view));
    }
    w.end_array();
    Ok(w.into_bytes())
}
