//! The history endpoints over every order ever acknowledged: GET order,
//! allOrders and myTrades, run on the user's shard.
//!
//! Three places hold a user's history: the engine's memory (open orders,
//! the newest finished orders and trades), the shard's backlog (rows not
//! yet in the store) and the history store. Memory is read last and wins
//! for an order in two places (its state there is the newest); the store
//! layer merges the backlog and the store the same way. Each place is
//! asked for the query's window, so the merged rows hold the answer's
//! whole window: no gap and no duplicate at the seams.
//!
//! Without a store, memory answers alone, as before. With a store that
//! does not answer, an order still in memory is found; a list needs the
//! store and gets -1001 with a message that says so.

use crate::api::host::Host;
use crate::api::params::{limit_param, market_param, order_ref, u64_param};
use crate::api::request::engine_error;
use crate::api::user::{write_order, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX};
use crate::binance;
use crate::http::{HttpError, Params};
use crate::json::JsonWriter;
use crate::store::convert::{order_view, user_trade};
use crate::store::shard::{OrderKey, OwnedOrdersQuery, OwnedTradesQuery};
use crate::store::{StoreError, Window};
use tradsys_engine::account::OrderRef;
use tradsys_engine::order::{MarketId, OrderView, UserId, UserTrade};
use tradsys_engine::EngineError;

/// -1001 when an older order or trade cannot be read now.
const MSG_HISTORY_UNAVAILABLE: &str =
    "History store unavailable: older orders and trades cannot be read now; order entry and open orders work. Please try again.";

fn store_error(e: StoreError) -> HttpError {
    let mut error = HttpError::new(503, binance::DISCONNECTED, MSG_HISTORY_UNAVAILABLE);
    if let StoreError::Corrupt(problem) = e {
        error = HttpError::new(500, binance::DISCONNECTED, format!("History store: {problem}"));
    }
    error
}

/// GET /api/v3/order: memory first, then the backlog and the store.
pub(crate) async fn query_order(shard: &impl Host, params: &Params<'_>, user: UserId) -> Result<Vec<u8>, HttpError> {
    let market = market_param(shard, params)?;
    let target = order_ref(params, "orderId", "origClientOrderId")?;
    {
        let trading = shard.trading();
        match trading.accounts().order(user, market, target) {
            Ok(view) => return Ok(order_json(shard, &view)),
            Err(EngineError::NoSuchOrder) => {}
            Err(e) => return Err(engine_error(e)),
        }
    }
    let Some(store) = shard.history() else {
        return Err(engine_error(EngineError::NoSuchOrder));
    };
    let symbol = shard.trading().spec(market).symbol.clone();
    let key = match target {
        OrderRef::Id(id) => OrderKey::Id(id),
        OrderRef::Client(client) => OrderKey::Client(client.as_str().to_string()),
    };
    let row = store
        .order_with_backlog(user, &symbol, &key)
        .await
        .map_err(store_error)?;
    let row = row.ok_or_else(|| engine_error(EngineError::NoSuchOrder))?;
    let view = order_view(&row, market).ok_or_else(|| corrupt("order", row.order_id))?;
    Ok(order_json(shard, &view))
}

fn order_json(shard: &impl Host, view: &OrderView) -> Vec<u8> {
    let mut w = JsonWriter::with_capacity(512);
    write_order(&mut w, shard.trading().spec(view.market), view);
    w.into_bytes()
}

fn corrupt(what: &str, id: u64) -> HttpError {
    store_error(StoreError::Corrupt(format!(
        "{what} {id} does not fit this server's markets"
    )))
}

/// GET /api/v3/allOrders.
pub(crate) async fn all_orders(shard: &impl Host, params: &Params<'_>, user: UserId) -> Result<Vec<u8>, HttpError> {
    let market = market_param(shard, params)?;
    let query = OwnedOrdersQuery {
        user,
        symbol: shard.trading().spec(market).symbol.clone(),
        from_id: u64_param(params, "orderId")?,
        start_ms: u64_param(params, "startTime")?,
        end_ms: u64_param(params, "endTime")?,
        limit: limit_param(params, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX)?,
    };
    let stored = match shard.history() {
        Some(store) => store.orders_with_backlog(&query).await.map_err(store_error)?,
        None => Vec::new(),
    };
    let trading = shard.trading();
    let keep = |v: &OrderView| {
        v.order_id >= query.from_id.unwrap_or(0)
            && v.time_ms >= query.start_ms.unwrap_or(0)
            && v.time_ms <= query.end_ms.unwrap_or(u64::MAX)
    };
    let mut views: Vec<OrderView> = trading.accounts().all_orders(user, market);
    views.retain(keep);
    views.sort_by_key(|v| v.order_id);
    let in_memory: Vec<u64> = views.iter().map(|v| v.order_id).collect();
    for row in &stored {
        if in_memory.binary_search(&row.order_id).is_err() {
            let view = order_view(row, market).ok_or_else(|| corrupt("order", row.order_id))?;
            views.push(view);
        }
    }
    views.sort_by_key(|v| v.order_id);
    let views = in_window(&views, query.borrowed().window(), query.limit);
    let mut w = JsonWriter::with_capacity(512 * views.len() + 2);
    w.begin_array();
    for view in views {
        write_order(&mut w, trading.spec(market), view);
    }
    w.end_array();
    Ok(w.into_bytes())
}

/// GET /api/v3/myTrades. With a store, pages come from the cache (L1,
/// and L2 in Redis) under the id of the user's newest trade in the market
/// that memory holds: a new trade always enters memory with a higher id
/// and memory forgets oldest first, so that id names one set of trades,
/// and a page of it never changes. Without a trade in memory there is
/// no such name, and the page is read each time.
pub(crate) async fn my_trades(shard: &impl Host, params: &Params<'_>, user: UserId) -> Result<Vec<u8>, HttpError> {
    let market = market_param(shard, params)?;
    let query = OwnedTradesQuery {
        user,
        symbol: shard.trading().spec(market).symbol.clone(),
        order_id: u64_param(params, "orderId")?,
        from_id: u64_param(params, "fromId")?,
        start_ms: u64_param(params, "startTime")?,
        end_ms: u64_param(params, "endTime")?,
        limit: limit_param(params, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX)?,
    };
    let newest = shard
        .trading()
        .accounts()
        .trades(user)
        .filter(|t| t.market == market)
        .map(|t| t.trade_id)
        .max();
    let (Some(version), Some(_)) = (newest, shard.history()) else {
        return trades_page(shard, market, &query).await;
    };
    let text = |value: Option<u64>| value.map_or_else(|| "-".to_string(), |v| v.to_string());
    let name = format!(
        "myTrades:{user}:{}:{}:{}:{}:{}:{}",
        query.symbol,
        text(query.order_id),
        text(query.from_id),
        text(query.start_ms),
        text(query.end_ms),
        query.limit
    );
    let cache = shard.cache();
    let page = cache
        .get_or_fill(&name, version, cache.history_ttl_ms(), || {
            trades_page(shard, market, &query)
        })
        .await?;
    Ok(page.to_vec())
}

/// A myTrades page from memory, the backlog and the store.
async fn trades_page(shard: &impl Host, market: MarketId, query: &OwnedTradesQuery) -> Result<Vec<u8>, HttpError> {
    let window = query.borrowed().window();
    let stored = match shard.history() {
        Some(store) => match store.trades_with_backlog(query).await {
            Ok(rows) => Some(rows),
            // The newest trades are all in memory: without the store, a
            // query for the newest few can still be answered exactly.
            Err(_) if window == Window::Newest => None,
            Err(e) => return Err(store_error(e)),
        },
        None => Some(Vec::new()),
    };
    let trading = shard.trading();
    let keep = |t: &UserTrade| {
        t.market == market
            && t.trade_id >= query.from_id.unwrap_or(0)
            && query.order_id.is_none_or(|id| t.order_id == id)
            && t.time_ms >= query.start_ms.unwrap_or(0)
            && t.time_ms <= query.end_ms.unwrap_or(u64::MAX)
    };
    let mut trades: Vec<UserTrade> = trading
        .accounts()
        .trades(query.user)
        .filter(|t| keep(t))
        .copied()
        .collect();
    trades.sort_by_key(|t| t.trade_id);
    match stored {
        Some(rows) => {
            let in_memory: Vec<u64> = trades.iter().map(|t| t.trade_id).collect();
            for row in &rows {
                if in_memory.binary_search(&row.trade_id).is_err() {
                    let trade = user_trade(&trading, row, market).ok_or_else(|| corrupt("trade", row.trade_id))?;
                    trades.push(trade);
                }
            }
            trades.sort_by_key(|t| t.trade_id);
        }
        None if trades.len() >= query.limit => {}
        None => return Err(store_error(StoreError::Unavailable)),
    }
    let trades = in_window(&trades, window, query.limit);
    let spec = trading.spec(market);
    let mut w = JsonWriter::with_capacity(256 * trades.len() + 2);
    w.begin_array();
    for t in trades {
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

/// The rows of a sorted list a query returns: from its start, the oldest
/// `limit` (`Oldest`), or the newest `limit` (`Newest`), oldest first.
fn in_window<T>(sorted: &[T], window: Window, limit: usize) -> &[T] {
    match window {
        Window::Oldest => &sorted[..sorted.len().min(limit)],
        Window::Newest => &sorted[sorted.len().saturating_sub(limit)..],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{OrdersQuery, TradesQuery};

    #[test]
    fn windows_take_the_oldest_or_the_newest() {
        let ids = [1, 2, 3, 4, 5];
        assert_eq!(in_window(&ids, Window::Oldest, 2), &[1, 2]);
        assert_eq!(in_window(&ids, Window::Newest, 2), &[4, 5]);
        assert_eq!(in_window(&ids, Window::Newest, 9), &ids);
    }

    #[test]
    fn queries_pick_their_window_as_binance_does() {
        let orders = |from_id, start_ms| OrdersQuery {
            user: 1,
            symbol: "BTCUSDT",
            from_id,
            start_ms,
            end_ms: None,
            limit: 10,
        };
        assert_eq!(orders(None, None).window(), Window::Newest);
        assert_eq!(orders(Some(3), None).window(), Window::Oldest);
        assert_eq!(orders(None, Some(3)).window(), Window::Oldest);
        let trades = TradesQuery {
            user: 1,
            symbol: "BTCUSDT",
            order_id: Some(4),
            from_id: None,
            start_ms: None,
            end_ms: None,
            limit: 10,
        };
        assert_eq!(trades.window(), Window::Oldest);
    }
}
